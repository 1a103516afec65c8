"""Log-normalised RNA as input, and consecutive translation (the paper's ATAC -> RNA -> protein)."""

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import butterfly as bf
from butterfly import ButterflyInputError
from butterfly.cli._main import main

T_CELLS = ["CD4+ T naive", "CD4+ T activated", "CD8+ T"]


def test_log_normalised_rna_translates_as_its_counts(multiome):
    """Cells log-normalised by scanpy to any total give the translation and latent their counts give; the
    ways to get it wrong are named."""
    rna, atac = multiome
    model = bf.Butterfly(rna, atac, seed=0, device="cpu")
    model.fit(pretrain_epochs=2, epochs=2, progress=False)
    logged = rna.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    before = logged.X.copy()
    expected = model.translate(rna, source="rna", target="atac", progress=False)
    got = model.translate(logged, source="rna", target="atac", normalized_to=1e4, progress=False)
    np.testing.assert_allclose(got.X, expected.X, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        model.latent(logged, "rna", normalized_to=1e4, progress=False), expected.obsm["X_butterfly"],
        rtol=1e-4, atol=1e-5,
    )  # fmt: skip
    assert (logged.X != before).nnz == 0  # the user's values stay as they were
    with pytest.raises(ButterflyInputError, match=r"non-integer.*log-normalised.*normalized_to=10000"):
        model.translate(logged, source="rna", target="atac")
    with pytest.raises(
        ButterflyInputError, match=r"only whole numbers: these look like raw counts.*leave normalized_to= out"
    ):
        model.translate(rna, source="rna", target="atac", normalized_to=1e4)
    inflated = logged.copy()  # log-normalised to a far larger total than the one named
    inflated.X = inflated.X * 3
    with pytest.raises(
        ButterflyInputError, match=r"values up to .* far above log1p\(10000\).*without normalized_to"
    ):
        model.translate(inflated, source="rna", target="atac", normalized_to=1e4)
    with pytest.raises(ButterflyInputError, match="the atac modality is not RNA counts."):
        model.translate(atac, source="atac", target="rna", normalized_to=1e4)
    again = model.translate(
        logged, source="rna", target="atac", normalized_to=np.float32(1e4), progress=False
    )
    np.testing.assert_array_equal(again.X, got.X)  # numpy numbers are numbers
    for bad in (0, -1.0, float("nan"), "1e4", True):
        with pytest.raises(ButterflyInputError, match="normalized_to must be the positive total"):
            model.translate(logged, source="rna", target="atac", normalized_to=bad)


@pytest.fixture(scope="module")
def chain(multiome, cite):
    """ATAC -> RNA with a model of 400 Multiome cells, then RNA -> protein with a model of the CITE-seq cells
    (another dataset of the same tissue) trained on the genes the first model predicts (100 of them here)."""
    rna, atac = multiome
    order = np.random.RandomState(0).permutation(rna.n_obs)
    test, train = np.sort(order[:100]), np.sort(order[100:])
    first = bf.Butterfly(rna[train], atac[train], seed=0, device="cpu")
    first.fit(**bf.FAST_SETTING, progress=False)
    cite_rna, adt = cite
    genes = cite_rna.var_names.isin(first.preprocessors["rna"].features_)
    second = bf.Butterfly(cite_rna[:, genes], adt, modalities=("rna", "adt"), seed=0, device="cpu")
    second.fit(**bf.FAST_SETTING, progress=False)
    return first, second, atac[test].copy()


def test_translations_chain_from_chromatin_to_proteins(chain, tmp_path):
    """ATAC of cells never seen, translated to RNA and that to proteins: the RNA translation is read as
    log-normalised by itself, and the proteins predicted from chromatin alone mark T cells and monocytes
    (CLR units; model seeds 0-3 gave CD3 0.39-0.68 and CD14 0.28-0.52 above the other cells)."""
    first, second, atac = chain
    rna = first.translate(atac, source="atac", target="rna", progress=False)
    assert rna.uns["butterfly"]["normalized_to"] == first.preprocessors["rna"].target_sum_
    proteins = second.translate(rna, source="rna", target="adt", progress=False)
    assert proteins.shape == (100, 134) and "CD3" in proteins.var_names
    assert list(proteins.obs_names) == list(atac.obs_names)
    # the values alone, as another tool would hand them on
    plain = ad.AnnData(rna.X.copy(), obs=rna.obs, var=rna.var)
    with pytest.raises(ButterflyInputError, match="normalized_to"):
        second.translate(plain, source="rna", target="adt")
    by_hand = second.translate(
        plain, source="rna", target="adt", normalized_to=float(rna.uns["butterfly"]["normalized_to"]),
        progress=False,
    )  # fmt: skip
    np.testing.assert_array_equal(by_hand.X, proteins.X)
    cell_type = atac.obs["cell_type"].to_numpy()
    for protein, types in (("CD3", T_CELLS), ("CD14", ["CD14+ Mono"])):
        level = proteins[:, protein].X.ravel()
        inside = np.isin(cell_type, types)
        assert level[inside].mean() - level[~inside].mean() > 0.15, protein

    # the same chain through files and the CLI
    first.save(tmp_path / "first")
    second.save(tmp_path / "second")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    steps = [
        ("first", "atac.h5ad", "atac", "rna", "rna.h5ad"),
        ("second", "rna.h5ad", "rna", "adt", "adt.h5ad"),
    ]
    for model, source_file, source, target, out in steps:
        code = main(["translate", "--model", str(tmp_path / model), "--input", str(tmp_path / source_file),
                     "--source", source, "--target", target, "--out", str(tmp_path / out)])  # fmt: skip
        assert code == 0
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "adt.h5ad").X, proteins.X)


def test_a_second_model_that_needs_genes_the_first_does_not_predict_says_how_to_train_it(chain, cite):
    first, _, atac = chain
    rna = first.translate(atac, source="atac", target="rna", progress=False)
    on_all_genes = bf.RNAPreprocessor().fit(cite[0])  # 1,000 genes, 100 of them predicted by the first model
    with pytest.raises(
        ButterflyInputError, match=r"Only 100 of the 1000 rna .*rna.var_names.isin\(translated"
    ):
        on_all_genes.transform(rna, normalized_to=float(rna.uns["butterfly"]["normalized_to"]))
