import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import butterfly as bf
from butterfly import ButterflyInputError
from butterfly._validation import check_label_key, check_paired


def _counts(n=6, m=4, seed=0):
    X = np.random.RandomState(seed).poisson(2.0, size=(n, m)).astype(np.float32) + 1
    data = ad.AnnData(sp.csr_matrix(X))
    data.obs_names = [f"c{i}" for i in range(n)]
    data.var_names = [f"g{j}" for j in range(m)]
    return data


def test_mismatched_cells_offer_alignment():
    a, b = _counts(), _counts()
    b.obs_names = [f"x{i}" for i in range(b.n_obs)]
    with pytest.raises(ButterflyInputError, match="not the same cells.*No cell name is shared"):
        check_paired(a, b, ("rna", "atac"))
    c = a[::-1].copy()
    with pytest.raises(ButterflyInputError, match=r"different order.*align_cells"):
        check_paired(a, c, ("rna", "atac"))
    aligned_a, aligned_c = bf.align_cells(a, c)
    check_paired(aligned_a, aligned_c, ("rna", "atac"))
    assert list(aligned_c.obs_names) == list(a.obs_names)


def test_partially_shared_cells_name_counts():
    a, b = _counts(), _counts()[:4].copy()
    with pytest.raises(ButterflyInputError, match=r"2 cell\(s\) only in rna.*Keep the 4 shared cells"):
        check_paired(a, b, ("rna", "atac"))


@pytest.mark.parametrize(
    "value, message",
    [
        (-1.0, "negative values"),
        (np.nan, "NaN or infinite"),
        (np.inf, "NaN or infinite"),
        (0.5, "non-integer"),
    ],
)
def test_bad_values_are_refused(value, message):
    data = _counts()
    X = data.X.toarray()
    X[1, 2] = value
    data.X = sp.csr_matrix(X)
    with pytest.raises(ButterflyInputError, match=message):
        bf.RNAPreprocessor().fit(data)


def test_expression_accepts_non_integers_but_not_negatives():
    data = _counts()
    data.X = data.X * 0.5
    assert bf.ExpressionPreprocessor().fit_transform(data).shape == data.shape
    data.X = data.X * -1
    with pytest.raises(ButterflyInputError, match="negative"):
        bf.ExpressionPreprocessor().fit(data)


def test_empty_cells_are_refused():
    data = _counts()
    X = data.X.toarray()
    X[3] = 0
    data.X = sp.csr_matrix(X)
    with pytest.raises(ButterflyInputError, match=r"1 cell\(s\) with zero counts.*'c3'.*filter_cells"):
        bf.ADTPreprocessor().fit(data)
    fitted = bf.ADTPreprocessor().fit(_counts())
    # new cells to translate have no other modality to drop them from
    with pytest.raises(ButterflyInputError, match=r"zero counts.*min_counts=1\)\.$"):
        fitted.transform(data)
    data.layers["counts"], data.X = data.X, sp.csr_matrix(data.shape, dtype=np.float32)
    with pytest.raises(ButterflyInputError, match=r"no counts at all.*name it: layer='counts'"):
        bf.ADTPreprocessor().fit(data)


@pytest.mark.parametrize("axis", ["obs", "var"])
def test_duplicated_names_are_refused(axis):
    data = _counts()
    names = list(getattr(data, f"{axis}_names"))
    names[1] = names[0]
    setattr(data, f"{axis}_names", names)
    with pytest.raises(ButterflyInputError, match="duplicated"):
        bf.RNAPreprocessor().fit(data)


def test_too_few_peaks_after_filtering():
    data = _counts(n=400, m=3)
    data.var_names = ["chr1:1-10", "chr1:20-30", "chr2:1-10"]
    X = np.zeros((400, 3), dtype=np.float32)
    X[:, 0] = 1
    X[0, 1] = 1  # open in 1 / 400 cells: below 0.5%
    data.X = sp.csr_matrix(X)
    with pytest.raises(ButterflyInputError, match=r"Only 1 of 3 peaks.*lower min_cell_fraction"):
        bf.ATACPreprocessor().fit(data)


def test_missing_label_column():
    data = _counts()
    data.obs["cell_type"] = "T"
    with pytest.raises(ButterflyInputError, match=r"no column 'celltype'.*'cell_type'"):
        check_label_key(data, "celltype", what="The RNA data")
    assert (check_label_key(data, "cell_type", what="x") == "T").all()


def test_non_anndata_input():
    with pytest.raises(ButterflyInputError, match="must be an AnnData"):
        bf.RNAPreprocessor().fit(np.ones((3, 3)))


def test_modalities_passed_in_the_wrong_order_are_named(multiome):
    rna, atac = multiome
    with pytest.raises(
        ButterflyInputError, match=r"rna training data's feature names look like chromatin peaks"
    ):
        bf.Butterfly(atac, rna, modalities=("rna", "atac"))
    with pytest.raises(ButterflyInputError, match=r"adt training data's .* look like chromatin peaks"):
        bf.ADTPreprocessor().fit(atac)
    with pytest.raises(ButterflyInputError, match=r"do not look like chromatin peaks.*order of modalities="):
        bf.ATACPreprocessor().fit(rna)


def test_genes_given_as_proteins_warn(snare):
    rna = snare[0]
    assert rna.n_vars > 1000
    with pytest.warns(UserWarning, match=r"antibody panels hold tens to a few hundred.*'rna' modality"):
        bf.ADTPreprocessor().fit(rna)


def test_wrong_feature_names_are_reported_before_empty_cells(snare):
    rna, atac = snare
    pre = bf.RNAPreprocessor().fit(rna)
    few = rna[:50, :3]  # most of these cells have no counts in three genes
    assert (np.asarray(few.X.sum(axis=1)).ravel() == 0).any()
    with pytest.raises(ButterflyInputError, match="Only 3 of the .* rna features"):
        pre.transform(few)


def test_one_sided_cell_mismatch_reads_well():
    a = _counts()
    with pytest.raises(ButterflyInputError, match=r"2 cell\(s\) only in rna .*, none only in atac\."):
        check_paired(a, a[:4].copy(), ("rna", "atac"))


def test_translating_from_the_wrong_source_names_the_flag(multiome):
    rna, atac = multiome
    pre = {"rna": bf.RNAPreprocessor().fit(rna), "atac": bf.ATACPreprocessor().fit(atac)}
    with pytest.raises(ButterflyInputError, match=r"rna data's feature names look like .*Check that source="):
        pre["rna"].transform(atac)
    with pytest.raises(ButterflyInputError, match=r"do not look like chromatin peaks.*Check that source="):
        pre["atac"].transform(rna)


def test_helpers_name_a_wrong_shape(snare):
    import pandas as pd

    atac = snare[1]
    pre = bf.ATACPreprocessor().fit(atac[:300])
    values = pre.transform(atac[:20]).X.toarray()
    with pytest.raises(ButterflyInputError, match=r"cells x the \d+ fitted peaks .* got shape \(20, 100\)"):
        pre.inverse_transform(values[:, :100])
    with pytest.raises(ButterflyInputError, match="cells x peaks matrix, got shape"):
        bf.binarize_accessibility(values[0])
    with pytest.raises(ButterflyInputError, match="loss history that fit\\(\\) returns"):
        bf.pl.plot_history(pd.DataFrame())
    with pytest.raises(ButterflyInputError, match="same cells; got cell counts"):
        bf.pl.plot_tsne_panels({"measured": values}, {"cell type": ["x"] * 19})
    with pytest.raises(ButterflyInputError, match="end before they start.*'chr1:100-50'"):
        bf.parse_peaks(pd.DataFrame(index=["chr1:10-20", "chr1:100-50"]))


def test_expression_kind_accepts_region_named_features():
    """The peak-name check guards rna and adt; 'expression' takes data as given, whatever its feature names."""
    data = _counts(m=3)
    data.var_names = ["chr1:1-10", "chr1:20-30", "chr2:1-5"]
    assert bf.ExpressionPreprocessor().fit_transform(data).shape == data.shape
    with pytest.raises(ButterflyInputError, match="look like chromatin peaks"):
        bf.RNAPreprocessor().fit(data)
