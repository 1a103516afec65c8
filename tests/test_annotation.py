"""Cell types of ATAC-only cells from a labelled RNA reference, through translation (SPEC section 5)."""

import numpy as np
import pandas as pd
import pytest

import butterfly as bf
from butterfly import ButterflyInputError, metrics
from butterfly.benchmark._baselines import KNNTranslator
from butterfly.cli._main import main


def test_atac_cells_are_annotated_from_an_rna_reference(trained, snare_split):
    """Held-out SNARE-seq cells' ATAC, labelled by an SVM trained on the training cells' RNA: well above the
    most common type's share (0.23) and above the same classifier on kNN's translations (at seed 0: accuracy
    0.41 against 0.22, kappa 0.28 against 0.04; the SVM on the cells' measured RNA reaches 0.69)."""
    rna, atac, _, test_atac = snare_split
    labels = bf.annotate(trained, test_atac, "atac", reference=rna, progress=False)
    assert list(labels.index) == list(test_atac.obs_names)
    assert set(labels["label"].cat.categories) == set(rna.obs["cell_type"].astype(str))
    assert (labels["margin"] >= 0).all() and labels["margin"].std() > 0
    truth = test_atac.obs["cell_type"].astype(str)
    scores = metrics.annotation_scores(labels["label"], truth)
    assert scores["accuracy"] > 0.33 and scores["kappa"] > 0.2, scores
    knn = bf.annotate(KNNTranslator(rna, snare_split[1]), test_atac, "atac", reference=rna)
    knn_scores = metrics.annotation_scores(knn["label"], truth)
    assert scores["accuracy"] > knn_scores["accuracy"] + 0.1 and scores["kappa"] > knn_scores["kappa"] + 0.1
    hesitant = labels["margin"] < labels["margin"].median()  # the margin says which calls to trust
    assert (labels["label"] == truth)[~hesitant].mean() > (labels["label"] == truth)[hesitant].mean()


def test_annotation_refuses_what_it_cannot_use(trained, snare_split):
    rna, _, _, test_atac = snare_split
    with pytest.raises(ButterflyInputError, match=r"no column 'celltype'.*label_key="):
        bf.annotate(trained, test_atac, "atac", reference=rna, label_key="celltype")
    one_type = rna[:50].copy()
    one_type.obs["cell_type"] = "E2Rasgrf2"
    with pytest.raises(ButterflyInputError, match="one label only .* at least two"):
        bf.annotate(trained, test_atac, "atac", reference=one_type)
    unlabelled = rna[:50].copy()
    unlabelled.obs["cell_type"] = pd.Series([None] * 50, index=unlabelled.obs_names, dtype=object)
    with pytest.raises(ButterflyInputError, match="50 missing label"):
        bf.annotate(trained, test_atac, "atac", reference=unlabelled)
    with pytest.raises(ButterflyInputError, match="Unknown modality 'adt'"):
        bf.annotate(trained, test_atac, "adt", reference=rna)
    with pytest.raises(ButterflyInputError, match="source and target must differ"):
        bf.annotate(trained, test_atac, "atac", reference=rna, target="atac")
    labelled_atac = test_atac.copy()
    labelled_atac.obs["cell_type"] = snare_split[2].obs["cell_type"].to_numpy()
    with pytest.raises(
        ButterflyInputError, match=r"rna reference's .* look like chromatin peaks.*reference="
    ):
        bf.annotate(trained, test_atac, "atac", reference=labelled_atac)  # the reference must be RNA
    with pytest.raises(bf.NotTrainedError):
        bf.annotate(bf.Butterfly(rna, snare_split[1]), test_atac, "atac", reference=rna)


def test_cli_annotate_writes_labels(trained, snare_split, tmp_path, capsys):
    rna, _, _, test_atac = snare_split
    trained.save(tmp_path / "model")
    rna.write_h5ad(tmp_path / "reference.h5ad")
    test_atac.write_h5ad(tmp_path / "atac.h5ad")
    out = tmp_path / "labels.csv"
    command = ["annotate", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "atac.h5ad"),
               "--source", "atac", "--reference", str(tmp_path / "reference.h5ad"), "--out", str(out)]  # fmt: skip
    assert main(command) == 0
    written = pd.read_csv(out, index_col=0)
    expected = bf.annotate(trained, test_atac, "atac", reference=rna, progress=False)
    assert list(written.index) == list(test_atac.obs_names)
    assert list(written["label"]) == list(expected["label"])
    np.testing.assert_allclose(written["margin"], expected["margin"], rtol=1e-5)
    printed = capsys.readouterr().out
    assert f"annotated {test_atac.n_obs} cells" in printed and "E2Rasgrf2" in printed
    assert main(command) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*command[:-4], "--reference", str(tmp_path / "reference.h5ad"), "--label-key", "type",
                 "--out", str(tmp_path / "other.csv")]) == 2  # fmt: skip
    assert "no column 'type'" in capsys.readouterr().err and not (tmp_path / "other.csv").exists()


def test_annotation_figure_shows_each_types_labels(tmp_path):
    true = ["a"] * 6 + ["b"] * 3 + ["c"]
    predicted = ["a"] * 4 + ["b", "d"] + ["b"] * 3 + ["a"]
    figure = bf.pl.plot_annotation(true, predicted, tmp_path / "annotation.png")
    assert (tmp_path / "annotation.png").stat().st_size > 5_000
    shares = figure.confusion
    assert list(shares.index) == ["a", "b", "c"] and list(shares.columns) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(shares.loc["a"], [4 / 6, 1 / 6, 0, 1 / 6])
    np.testing.assert_allclose(shares.loc["c"], [1, 0, 0, 0])
    np.testing.assert_allclose(shares.sum(axis=1), 1)
    assert figure.axes[0].get_title() == "10 cells, accuracy 0.70"
    with pytest.raises(ButterflyInputError, match="one true and one predicted label per cell"):
        bf.pl.plot_annotation(true, predicted[:-1])
