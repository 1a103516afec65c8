"""Reading paired data as instruments and portals write it: Cell Ranger .h5 matrices and MuData .h5mu files."""

import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import butterfly as bf
from butterfly import ButterflyInputError
from butterfly.cli._main import main
from butterfly.io import _readers
from butterfly.io._readers import read_10x_h5, read_h5mu, read_modality

DATA = Path(__file__).parent / "data"


def _write_cellranger_h5(path, rna: ad.AnnData, other: ad.AnnData, other_type: str = "Peaks") -> None:
    """The layout of Cell Ranger's filtered_feature_bc_matrix.h5 (format 3; ARC's with ``other_type`` Peaks,
    ``cellranger multi``'s with Antibody Capture): one features x barcodes CSC matrix of integer counts, each
    feature with an ID, a name and a feature type. A CRISPR guide feature is added (a type butterfly leaves
    out), and one gene symbol is given twice, as happens in real references."""
    guides = sp.csr_matrix(np.arange(rna.n_obs, dtype=np.float32).reshape(-1, 1) % 3)
    X = sp.hstack([rna.X, other.X, guides]).tocsr().astype(np.int32)
    names = [*rna.var_names[:-1], rna.var_names[0], *other.var_names, "guide-1"]
    ids = [*rna.var["gene_ids"], *other.var_names, "guide-1"]
    types = ["Gene Expression"] * rna.n_vars + [other_type] * other.n_vars + ["CRISPR Guide Capture"]
    with h5py.File(path, "w") as f:
        matrix = f.create_group("matrix")
        matrix["barcodes"] = np.array(rna.obs_names, dtype="S")
        matrix["data"], matrix["indices"], matrix["indptr"] = X.data, X.indices.astype(np.int64), X.indptr
        matrix["shape"] = np.array([X.shape[1], X.shape[0]], dtype=np.int32)
        features = matrix.create_group("features")
        features["id"], features["name"] = np.array(ids, dtype="S"), np.array(names, dtype="S")
        features["feature_type"] = np.array(types, dtype="S")
        features["genome"] = np.array(["GRCh38"] * len(types), dtype="S")


@pytest.fixture
def cellranger_h5(multiome, tmp_path):
    rna, atac = multiome
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    _write_cellranger_h5(path, rna, atac)
    return path


def test_cellranger_h5_splits_into_modalities_with_the_counts_as_written(cellranger_h5, multiome):
    rna, atac = multiome
    parts = read_10x_h5(cellranger_h5)
    assert sorted(parts) == ["atac", "rna"]  # the CRISPR guide is left out
    assert list(parts["rna"].obs_names) == list(parts["atac"].obs_names) == list(rna.obs_names)
    np.testing.assert_array_equal(parts["rna"].X.toarray(), rna.X.toarray())
    np.testing.assert_array_equal(parts["atac"].X.toarray(), atac.X.toarray())
    assert list(parts["atac"].var_names) == list(atac.var_names)
    assert parts["rna"].var_names.is_unique  # the symbol given twice got a suffix
    assert parts["rna"].var_names[-1] == f"{rna.var_names[0]}-1"
    assert list(parts["rna"].var["gene_ids"]) == list(rna.var["gene_ids"])


def test_cellranger_multi_h5_gives_the_proteins(cite, tmp_path):
    rna, adt = cite
    rna = rna.copy()
    rna.var["gene_ids"] = [f"ENSG{i:011d}" for i in range(rna.n_vars)]
    _write_cellranger_h5(tmp_path / "multi.h5", rna, adt, "Antibody Capture")
    assert sorted(read_10x_h5(tmp_path / "multi.h5")) == ["adt", "rna"]
    proteins = read_modality(tmp_path / "multi.h5", "adt", "adt")
    assert list(proteins.var_names) == list(adt.var_names)
    np.testing.assert_array_equal(proteins.X.toarray(), adt.X.toarray())


def test_h5mu_written_by_mudata_reads_with_anndata_alone(multiome):
    """tests/data/multiome_200.h5mu was written by mudata (benchmarks/make_fixtures.py), which the test
    environment does not install; its cell types sit in the MuData's own obs."""
    rna, atac = multiome
    parts = read_h5mu(DATA / "multiome_200.h5mu")
    assert sorted(parts) == ["atac", "rna"]
    np.testing.assert_array_equal(parts["rna"].X.toarray(), rna[:200].X.toarray())
    np.testing.assert_array_equal(parts["atac"].X.toarray(), atac[:200].X.toarray())
    assert list(parts["atac"].var_names) == list(atac.var_names)
    for part in parts.values():  # the global cell types reach each modality
        assert list(part.obs["cell_type"].astype(str)) == list(rna.obs["cell_type"][:200].astype(str))


def test_read_modality_finds_usual_names_and_explains_what_it_cannot_read(cellranger_h5, tmp_path):
    renamed = tmp_path / "renamed.h5mu"
    shutil.copy(DATA / "multiome_200.h5mu", renamed)
    with h5py.File(renamed, "r+") as f:
        f.move("mod/rna", "mod/gex")
        f.move("mod/atac", "mod/my_peaks")
    assert read_modality(renamed, "rna", "rna").n_vars == 600  # "gex" is an RNA name
    with pytest.raises(ButterflyInputError, match=r"no modality 'atac' \(it has 'gex', 'my_peaks'\)"):
        read_modality(renamed, "atac", "atac")
    with pytest.raises(ButterflyInputError, match="no 'Antibody Capture' features for modality 'adt'"):
        read_modality(cellranger_h5, "adt", "adt")
    with pytest.raises(
        ButterflyInputError, match="matrix of counts, but modality 'control' takes normalised"
    ):
        read_modality(cellranger_h5, "control", "expression")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["values"] = np.zeros(3)
    with pytest.raises(
        ButterflyInputError, match="could not be read as a Cell Ranger feature-barcode matrix"
    ):
        read_modality(tmp_path / "other.h5", "rna", "rna")
    with pytest.raises(ButterflyInputError, match="could not be read as a MuData .h5mu file"):
        read_modality(shutil.copy(tmp_path / "other.h5", tmp_path / "other.h5mu"), "rna", "rna")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_modality(tmp_path / "missing.h5mu", "rna", "rna")


def test_cli_trains_on_a_cellranger_h5_and_translates_from_an_h5mu(
    cellranger_h5, tmp_path, capsys, monkeypatch
):
    model_dir, out = tmp_path / "model", tmp_path / "pred.h5ad"
    reads = []
    monkeypatch.setattr(_readers, "read_10x_h5", lambda path: reads.append(path) or read_10x_h5(path))
    code = main(["train", "--first", str(cellranger_h5), "--second", str(cellranger_h5), "--out", str(model_dir),
                 "--pretrain-epochs", "1", "--epochs", "1", "--seed", "2"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert reads == [cellranger_h5]  # --first and --second name one file: it is read once
    model = bf.Butterfly.load(model_dir)
    assert model.preprocessors["rna"].input_features_.size == 600
    code = main(["translate", "--model", str(model_dir), "--input", str(DATA / "multiome_200.h5mu"),
                 "--source", "atac", "--target", "rna", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    atac = read_h5mu(DATA / "multiome_200.h5mu")["atac"]
    expected = model.translate(atac, source="atac", target="rna", progress=False)
    pred = ad.read_h5ad(out)
    np.testing.assert_array_equal(pred.X, expected.X)
    assert list(pred.obs_names) == list(atac.obs_names) and "cell_type" in pred.obs
    code = main(["translate", "--model", str(model_dir), "--input", str(cellranger_h5), "--source", "adt",
                 "--target", "rna", "--out", str(tmp_path / "x.h5ad")])  # fmt: skip
    assert code == 2 and "Unknown modality 'adt'" in capsys.readouterr().err
