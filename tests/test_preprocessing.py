import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import butterfly as bf
from butterfly import ButterflyInputError
from butterfly.pp._modalities import preprocessor_from_state

# A hand-made ATAC count matrix: 4 cells x 3 peaks (on two chromosomes).
ATAC_COUNTS = np.array([[2, 0, 1], [0, 1, 0], [1, 3, 1], [0, 0, 4]], dtype=np.float32)
PEAKS = ["chr1:10-20", "chr1:30-40", "chr2:5-9"]


def _adata(X, var_names, obs_prefix="c"):
    data = ad.AnnData(sp.csr_matrix(np.asarray(X, dtype=np.float32)))
    data.obs_names = [f"{obs_prefix}{i}" for i in range(data.n_obs)]
    data.var_names = var_names
    return data


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def test_tfidf_matches_hand_computation():
    out = bf.ATACPreprocessor(min_cell_fraction=0).fit_transform(_adata(ATAC_COUNTS, PEAKS))
    binary = (ATAC_COUNTS > 0).astype(float)
    expected = np.zeros_like(binary)
    n = binary.shape[0]
    for i in range(n):
        for j in range(3):
            tf = binary[i, j] / binary[i].sum()
            idf = np.log(1 + n / binary[:, j].sum())
            expected[i, j] = tf * idf
    expected /= expected.max()
    np.testing.assert_allclose(_dense(out.X), expected, rtol=1e-6)
    assert sp.issparse(out.X) and out.X.max() == pytest.approx(1.0)
    assert list(out.var["chrom"]) == ["chr1", "chr1", "chr2"]


def test_peak_filter_uses_training_cells():
    X = np.zeros((400, 3), dtype=np.float32)
    X[:, 0] = 1
    X[:2, 1] = 1  # 0.5% of 400 cells: kept
    X[:1, 2] = 1  # 0.25%: dropped
    pre = bf.ATACPreprocessor().fit(_adata(X, PEAKS))
    assert list(pre.features_) == PEAKS[:2]


def test_clr_matches_hand_computation():
    X = np.array([[1, 0, 3], [10, 5, 0]], dtype=np.float32)
    out = _dense(bf.ADTPreprocessor().fit_transform(_adata(X, ["CD3", "CD4", "CD19"])).X)
    for i in range(2):
        g = np.exp(np.mean(np.log1p(X[i])))
        np.testing.assert_allclose(out[i], np.log1p(X[i] / g), rtol=1e-6)
    assert out[0, 1] == 0 and out[1, 2] == 0  # zeros stay zero


def test_rna_normalisation_matches_hand_computation():
    X = np.array([[1, 3, 0], [4, 0, 4], [2, 2, 2]], dtype=np.float32)
    pre = bf.RNAPreprocessor().fit(_adata(X, ["a", "b", "c"]))
    target = np.median(X.sum(1))
    assert pre.target_sum_ == target == 6
    expected = np.log1p(X / X.sum(1, keepdims=True) * target)
    np.testing.assert_allclose(_dense(pre.transform(_adata(X, ["a", "b", "c"])).X), expected, rtol=1e-6)
    # New cells use the training target, not their own median.
    new = np.array([[10, 10, 0]], dtype=np.float32)
    np.testing.assert_allclose(
        _dense(pre.transform(_adata(new, ["a", "b", "c"])).X), np.log1p([[3, 3, 0]]), rtol=1e-6
    )


def test_rna_hvgs_chosen_on_training_cells(multiome):
    rna, _ = multiome
    train, test = rna[:300], rna[300:]
    pre = bf.RNAPreprocessor(n_top_genes=200).fit(train)
    assert pre.n_features == 200 and pre.highly_variable_.sum() == 200
    again = bf.RNAPreprocessor(n_top_genes=200).fit(train)
    assert np.array_equal(pre.features_, again.features_)
    other = bf.RNAPreprocessor(n_top_genes=200).fit(test)
    assert not np.array_equal(pre.features_, other.features_)  # the choice depends on the cells
    assert list(pre.transform(test).var_names) == list(pre.features_)


def test_rna_keeps_n_genes_and_never_an_unexpressed_one(snare):
    """Exactly ``n_top_genes`` genes, none of them unexpressed in the training cells: some scanpy 1.10
    releases marked the genes without a dispersion too (1,145 genes for 1,000 on these cells)."""
    from butterfly.pp._expression import _top_dispersions

    cells = snare[0][:400]
    pre = bf.RNAPreprocessor(n_top_genes=1000).fit(cells)
    expressed = np.asarray((cells.X > 0).sum(axis=0)).ravel() > 0
    assert pre.n_features == 1000 and (~expressed).sum() > 100
    assert not (cells.var_names.isin(pre.features_) & ~expressed).any()
    dispersions = np.array([np.nan, 1.0, 0.5, 0.5, -1.0])
    assert _top_dispersions(dispersions, 2).tolist() == [
        False,
        True,
        True,
        True,
        False,
    ]  # ties kept, as scanpy
    assert _top_dispersions(dispersions, 10).tolist() == [False, True, True, True, True]


@pytest.mark.parametrize("kind", ["rna", "atac", "adt"])
def test_fit_then_transform_equals_fit_transform_and_input_untouched(kind, multiome, cite):
    data = {"rna": multiome[0], "atac": multiome[1], "adt": cite[1]}[kind]
    before = data.X.copy()
    cls = {"rna": bf.RNAPreprocessor, "atac": bf.ATACPreprocessor, "adt": bf.ADTPreprocessor}[kind]
    a = cls().fit(data).transform(data)
    b = cls().fit_transform(data)
    assert sp.issparse(a.X) and a.X.dtype == np.float32
    assert (a.X != b.X).nnz == 0
    assert (data.X != before).nnz == 0  # the input is not modified
    assert list(a.obs_names) == list(data.obs_names)


@pytest.mark.parametrize("kind", ["rna", "atac", "adt"])
def test_feature_shuffled_input_gives_identical_output(kind, multiome, cite):
    data = {"rna": multiome[0], "atac": multiome[1], "adt": cite[1]}[kind]
    cls = {"rna": bf.RNAPreprocessor, "atac": bf.ATACPreprocessor, "adt": bf.ADTPreprocessor}[kind]
    pre = cls().fit(data)
    shuffled = data[:, np.random.RandomState(1).permutation(data.n_vars)].copy()
    assert (pre.transform(data).X != pre.transform(shuffled).X).nnz == 0


def test_atac_peaks_align_across_name_formats(multiome):
    _, atac = multiome
    pre = bf.ATACPreprocessor().fit(atac)
    renamed = atac.copy()
    renamed.var = pd.DataFrame(index=[n.replace(":", "_").replace("-", "_") for n in atac.var_names])
    assert (pre.transform(atac).X != pre.transform(renamed).X).nnz == 0


def test_missing_features_zero_filled_with_warning(cite):
    rna, _ = cite
    pre = bf.RNAPreprocessor(n_top_genes=500).fit(rna)
    dropped = rna[:, 100:].copy()  # 100 of the 1,000 fitted genes are gone
    with pytest.warns(UserWarning, match="100 of the 1000 rna features .* missing"):
        out = pre.transform(dropped)
    assert out.shape == (rna.n_obs, 500)
    missing_hvgs = np.isin(pre.features_, rna.var_names[:100])
    assert missing_hvgs.any() and out.X[:, np.flatnonzero(missing_hvgs)].nnz == 0


def test_too_few_shared_features_are_refused(cite):
    rna, _ = cite
    pre = bf.RNAPreprocessor().fit(rna)
    renamed = rna.copy()
    renamed.var_names = [f"ENSG{i:011d}" for i in range(rna.n_vars)]
    with pytest.raises(ButterflyInputError, match=r"Only 0 of the 1000 rna features.*at least 50%"):
        pre.transform(renamed)


def test_atac_inverse_recovers_binarised_counts(multiome):
    _, atac = multiome
    pre = bf.ATACPreprocessor().fit(atac)
    scaled = pre.transform(atac)
    binary = _dense(scaled.X) > 0
    library = binary.sum(1)
    counts = pre.inverse_transform(scaled.X, library_size=library)
    np.testing.assert_allclose(counts, binary.astype(float), atol=1e-5)
    # With no library size given, the training median is used.
    default = pre.inverse_transform(scaled.X)
    np.testing.assert_allclose(
        default[library > 0].max(1), (pre.median_open_peaks_ / library[library > 0]), rtol=1e-5
    )


def test_binarize_rule_on_hand_case():
    counts = np.array([[0.9, 0.1, 0.2], [0.1, 0.3, 0.8]])
    # row means 0.4 / 0.4; column means 0.5, 0.2, 0.5
    np.testing.assert_array_equal(bf.binarize_accessibility(counts), [[1, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize("kind", ["rna", "atac", "adt", "expression"])
def test_saved_state_reloads_to_identical_output(kind, multiome, cite, tmp_path):
    data = {"rna": multiome[0], "atac": multiome[1], "adt": cite[1], "expression": cite[1]}[kind]
    cls = {
        "rna": lambda: bf.RNAPreprocessor(n_top_genes=100),
        "atac": bf.ATACPreprocessor,
        "adt": bf.ADTPreprocessor,
        "expression": bf.ExpressionPreprocessor,
    }[kind]
    pre = cls().fit(data)
    config, arrays = pre.state()
    (tmp_path / "config.json").write_text(json.dumps(config))
    np.savez(tmp_path / "arrays.npz", **arrays)
    with np.load(tmp_path / "arrays.npz", allow_pickle=False) as stored:
        restored = preprocessor_from_state(json.loads((tmp_path / "config.json").read_text()), dict(stored))
    assert type(restored) is type(pre)
    assert (restored.transform(data).X != pre.transform(data).X).nnz == 0


def test_transform_before_fit_is_an_error(cite):
    with pytest.raises(RuntimeError, match="not fitted"):
        bf.ADTPreprocessor().transform(cite[1])


def test_atac_cells_without_kept_peaks_warn():
    X = np.zeros((400, 3), dtype=np.float32)
    X[:, 0] = 1
    X[:, 1] = 1
    pre = bf.ATACPreprocessor().fit(_adata(X, PEAKS))
    new = np.array([[0, 0, 3]], dtype=np.float32)  # only the unkept peak
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="no open peak"):
            pre.transform(_adata(new, PEAKS))


def test_explicitly_stored_zeros_are_closed_peaks():
    clean = _adata(ATAC_COUNTS, PEAKS)
    X = sp.csr_matrix(ATAC_COUNTS)
    X.data[0] = 0  # cell 0, peak 0 stored but zero
    stored = ad.AnnData(X, obs=clean.obs.copy(), var=clean.var.copy())
    expected_counts = ATAC_COUNTS.copy()
    expected_counts[0, 0] = 0
    pre = bf.ATACPreprocessor(min_cell_fraction=0).fit(_adata(expected_counts, PEAKS))
    assert sp.csr_matrix(stored.X).nnz == sp.csr_matrix(ATAC_COUNTS).nnz  # the zero is really stored
    fitted = bf.ATACPreprocessor(min_cell_fraction=0).fit(stored)
    assert fitted.scale_ == pre.scale_ and np.array_equal(fitted.idf_, pre.idf_)
    np.testing.assert_allclose(
        _dense(fitted.transform(stored).X), _dense(pre.transform(_adata(expected_counts, PEAKS)).X)
    )


def test_binarize_accessibility_in_chunks_and_in_place():
    rng = np.random.default_rng(0)
    counts = rng.gamma(0.5, 2.0, size=(50, 30)).astype(np.float32)
    expected = (counts > counts.mean(1, keepdims=True)) & (counts > counts.mean(0, keepdims=True))
    binary = bf.binarize_accessibility(counts, chunk=7)
    assert binary.dtype == np.float32 and binary is not counts
    np.testing.assert_array_equal(binary, expected)
    np.testing.assert_array_equal(bf.binarize_accessibility(sp.csr_matrix(counts)), expected)
    same = bf.binarize_accessibility(counts, copy=False, chunk=7)
    assert same is counts  # written over the counts, no second matrix
    np.testing.assert_array_equal(counts, expected)
    counts[3, 4] = np.nan
    with pytest.raises(ButterflyInputError, match="1 NaN or infinite"):
        bf.binarize_accessibility(counts)
