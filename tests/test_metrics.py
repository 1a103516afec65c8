import warnings

import numpy as np
import pytest

from butterfly import ButterflyInputError, metrics


def test_clustering_scores_hand_case():
    labels = ["a", "a", "b", "b"]
    assert metrics.clustering_scores([0, 0, 1, 1], labels) == pytest.approx(
        {"AMI": 1, "ARI": 1, "NMI": 1, "HOM": 1}
    )
    # one cluster for everything: no information, perfectly complete but not homogeneous
    scores = metrics.clustering_scores([0, 0, 0, 0], labels)
    assert scores["ARI"] == 0 and scores["HOM"] == 0 and scores["NMI"] == 0


def test_leiden_recovers_well_separated_groups():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(3, 20))
    X = np.vstack([c + rng.normal(size=(60, 20)) for c in centres])
    labels = np.repeat(["x", "y", "z"], 60)
    with warnings.catch_warnings():  # leidenalg is the paper's protocol: no advice to switch (scanpy 1.12)
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("error", FutureWarning)
        assert metrics.cell_heterogeneity(X, labels)["ARI"] > 0.9


def test_cell_heterogeneity_over_several_runs_is_the_mean_of_single_runs():
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 0.5, size=(6, 20))  # overlapping groups: Leiden's seed matters
    X = np.vstack([c + rng.normal(size=(50, 20)) for c in centres])
    labels = np.repeat(np.arange(6), 50)
    single = [metrics.cell_heterogeneity(X, labels, seed=s) for s in (3, 4, 5)]
    averaged = metrics.cell_heterogeneity(X, labels, seed=3, runs=3)
    assert averaged == pytest.approx({k: np.mean([r[k] for r in single]) for k in single[0]}, abs=1e-12)
    assert metrics.cell_heterogeneity(X, labels, seed=3, runs=1) == single[0]  # one run: as before
    assert len({r["ARI"] for r in single}) > 1  # the runs differ, so the mean is not one of them
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ButterflyInputError, match="runs"):
            metrics.cell_heterogeneity(X, labels, runs=bad)


def test_leiden_scores_more_than_ten_thousand_cells():
    # scanpy's default approximate neighbours fail on >= 10,000 cells with current scipy; ours are exact
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 20, size=(30, 10))
    X = np.vstack([c + rng.normal(size=(340, 10)) for c in centres])
    labels = np.repeat(np.arange(30), 340)
    assert metrics.cell_heterogeneity(X, labels, n_pcs=10)["ARI"] > 0.95


def test_clustering_leaves_torch_thread_count_alone():
    # scanpy's neighbour graph (numba) reset the OpenMP thread count torch shares, so the folds after the first
    # in a benchmark process trained with all cores on top of other processes, 3-6x slower. Thread state is
    # process-wide, so this runs in a fresh interpreter with one torch thread.
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, torch\n"
        "from butterfly import metrics\n"
        "before = torch.get_num_threads()\n"
        "metrics.leiden_clusters(np.random.default_rng(0).random((300, 20)))\n"
        "print(before, torch.get_num_threads())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_correlations_and_rmse_hand_case():
    truth = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 7.0]])
    pred = np.array([[2.0, 4.0, 6.0], [1.0, 2.0, 3.5]])
    # per cell: both rows are exact linear rescalings -> Pearson 1
    assert metrics.pearson_per_cell(pred, truth) == pytest.approx(1.0)
    # per feature (2 cells each): every column is anti-correlated -> -1
    assert metrics.pearson_per_feature(pred, truth) == pytest.approx(-1.0)
    assert metrics.spearman_per_cell(np.array([[1, 5, 9.0]]), np.array([[1, 2, 3.0]])) == pytest.approx(1.0)
    assert metrics.rmse(pred, truth) == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)))
    # a feature constant in the truth is skipped (its correlation is undefined); all constant gives NaN
    varied = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    assert metrics.pearson_per_feature(
        np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 5.0]]), varied
    ) == pytest.approx(1.0)
    assert np.isnan(metrics.pearson_per_feature(varied, np.ones((3, 2))))
    # a feature predicted constant where the truth varies has no skill: 0, not left out (which would flatter a
    # model that predicts its hard genes as all zeros)
    truth = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 0.0]])
    flat = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    for score in (metrics.pearson_per_feature, metrics.spearman_per_feature):
        assert score(flat, truth) == pytest.approx(0.5)
    assert metrics.pearson_per_cell(np.ones((2, 3)), np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])) == 0.0


def test_auroc_and_auprc_hand_case():
    truth = np.array([[1, 0], [0, 1]])
    assert metrics.auroc(np.array([[0.9, 0.1], [0.2, 0.8]]), truth) == 1.0
    assert metrics.auroc(np.array([[0.1, 0.9], [0.8, 0.2]]), truth) == 0.0
    # ranking 1 (pos), 0.6 (neg), 0.5 (pos), 0.1 (neg): precision at the positives 1 and 2/3
    assert metrics.auprc(np.array([[1.0, 0.6], [0.1, 0.5]]), truth) == pytest.approx((1 + 2 / 3) / 2)


def test_per_cell_scores_match_their_definitions():
    """Each cell's AUROC is scikit-learn's on that cell's row (ties included); each cell's Pearson r is
    numpy's, and their mean is pearson_per_cell's."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pred = rng.random((40, 200))
    pred[:, :30] = 0.5  # ties
    truth = (rng.random((40, 200)) < 0.1) * rng.integers(1, 4, (40, 200))
    truth[3] = 0  # no open peak: no AUROC
    per_cell = metrics.cell_auroc(pred, truth, chunk=7)  # rows in several chunks
    assert np.isnan(per_cell[3])
    expected = [roc_auc_score(truth[i] > 0, pred[i]) for i in range(40) if i != 3]
    np.testing.assert_allclose(np.delete(per_cell, 3), expected, atol=1e-12)

    values = rng.random((40, 50))
    r = metrics.cell_pearson(pred[:, :50], values)
    np.testing.assert_allclose(r, [np.corrcoef(pred[i, :50], values[i])[0, 1] for i in range(40)], atol=1e-12)
    assert r.mean() == pytest.approx(metrics.pearson_per_cell(pred[:, :50], values))


def test_annotation_scores_hand_case():
    scores = metrics.annotation_scores(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert scores["accuracy"] == 0.75
    # kappa: p_o = 0.75, p_e = 0.5*0.25 + 0.5*0.75 = 0.5 -> 0.5
    assert scores["kappa"] == pytest.approx(0.5)
    # F1(a) = 2/3, F1(b) = 0.8
    assert scores["F1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert scores["F1_weighted"] == pytest.approx(0.25 * 2 / 3 + 0.75 * 0.8)


def test_perturbation_metrics_on_a_planted_response():
    rng = np.random.default_rng(0)
    genes = np.array([f"g{i}" for i in range(300)])
    control = rng.poisson(1.0, size=(80, 300)).astype(float)
    stimulated = rng.poisson(1.0, size=(80, 300)).astype(float)
    stimulated[:, :100] += 4  # the first 100 genes respond
    assert metrics.deg_overlap(control, stimulated, stimulated.copy(), genes) == 100
    shuffled = stimulated[:, rng.permutation(300)]
    assert metrics.deg_overlap(control, stimulated, shuffled, genes) < 60
    mean, std = metrics.deg_mean_r2(
        control, stimulated, stimulated + rng.normal(0, 0.01, stimulated.shape), genes, repeats=20
    )
    assert 0 <= mean <= 1 and std >= 0


@pytest.mark.parametrize(
    "score",
    [
        metrics.pearson_per_feature,
        metrics.pearson_per_cell,
        metrics.spearman_per_feature,
        metrics.spearman_per_cell,
        metrics.rmse,
        metrics.auroc,
        metrics.auprc,
    ],
)
def test_scores_refuse_prediction_and_truth_of_different_shapes(score):
    """(cells, features) against (cells, 1) would broadcast and score silently."""
    rng = np.random.default_rng(0)
    pred, truth = rng.random((30, 8)), (rng.random((30, 8)) > 0.5).astype(float)
    assert np.isfinite(score(pred, truth))
    for wrong in (truth[:, :1], truth[:20], truth.T):
        with pytest.raises(ButterflyInputError, match="same cells x features"):
            score(pred, wrong)


def test_clustering_and_annotation_need_one_label_per_cell():
    with pytest.raises(ButterflyInputError, match="one label per cell: 4 cells"):
        metrics.clustering_scores(["0", "0", "1", "1"], ["a", "b", "a"])
    with pytest.raises(ButterflyInputError, match="one label per cell: 10 cells"):
        metrics.cell_heterogeneity(np.ones((10, 3)), ["a"] * 9)
    with pytest.raises(ButterflyInputError, match="one label per cell"):
        metrics.annotation_scores(["a", "b"], ["a"])


def test_perturbation_scores_need_one_gene_name_per_column():
    rng = np.random.default_rng(0)
    control, stimulated = rng.poisson(1, (30, 12)).astype(float), rng.poisson(1, (25, 12)).astype(float)
    genes = [f"g{i}" for i in range(12)]
    with pytest.raises(ButterflyInputError, match="cells x the 10 genes named"):
        metrics.deg_overlap(control, stimulated, stimulated, genes[:10], n=5)
    with pytest.raises(ButterflyInputError, match=r"got widths \[12, 12, 8\]"):
        metrics.deg_mean_r2(control, stimulated, stimulated[:, :8], genes, n=5, repeats=2)


def test_feature_pearson_per_column_hand_cases():
    rng = np.random.default_rng(0)
    pred, truth = rng.random((40, 9)), rng.random((40, 9))
    truth[:, 2] = 1.0  # nothing to predict: NaN
    pred[:, 5] = 0.0  # a constant prediction has no skill: 0
    r = metrics.feature_pearson(pred, truth, chunk=4)  # columns in chunks, as for many genes
    expected = [np.corrcoef(pred[:, j], truth[:, j])[0, 1] if j not in (2, 5) else np.nan for j in range(9)]
    expected[5] = 0.0
    np.testing.assert_allclose(r, expected, rtol=1e-12)
