"""Scores of a translation: cell heterogeneity (clustering), numerical agreement, accessibility AUROC."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn import metrics as skm

from .._validation import ButterflyInputError


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _pair(pred, truth, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``pred`` and ``truth``, refused unless they have one shape (broadcasting would score silently
    the wrong entries against each other)."""
    pred, truth = _dense(pred), _dense(truth)
    if pred.shape != truth.shape:
        raise ButterflyInputError(
            f"Prediction and truth must be the same cells x features, got shapes {pred.shape} and {truth.shape}."
        )
    return (pred, truth) if dtype is None else (pred.astype(dtype), truth.astype(dtype))


def _check_labels(n_cells: int, labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n_cells,):
        raise ButterflyInputError(
            f"Give one label per cell: {n_cells} cells, labels of shape {labels.shape}."
        )
    return labels


def leiden_clusters(X, *, n_pcs: int = 50, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """The paper's clustering: PCA to ``n_pcs`` (or fewer when the data are smaller), 15-nearest-neighbour
    graph (exact), Leiden at ``resolution`` with the leidenalg implementation (scanpy ``flavor="leidenalg"``)."""
    import scanpy as sc

    data = ad.AnnData(X=_dense(X).astype(np.float32))
    n_comps = max(1, min(n_pcs, data.n_obs - 1, data.n_vars - 1))
    sc.pp.pca(data, n_comps=n_comps, random_state=seed)
    return leiden_on(data, "X_pca", resolution=resolution, seed=seed)


def leiden_on(data: ad.AnnData, use_rep: str, *, resolution: float, seed: int = 0) -> np.ndarray:
    """Leiden clusters (leidenalg) of the exact 15-nearest-neighbour graph of ``data.obsm[use_rep]``.

    Exact neighbours (sklearn) are identical to scanpy's default below 10,000 cells; above, scanpy's default
    (pynndescent) fails with current scipy ("'csr_array' object has no attribute 'getnnz'"). The neighbour
    graph's numba code can reset the OpenMP thread count that torch shares (to all cores); torch's count is
    restored afterwards, or training after scoring in the same process (one benchmark fold after another)
    oversubscribes the CPU and runs several times slower.
    """
    import scanpy as sc
    import torch

    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            # scanpy's own advice and inefficiencies, not the user's to act on: the neighbour graph's
            # assignment into a CSR matrix (a few cells at equal distances), FutureWarnings of defaults
            # passed explicitly, and scanpy 1.12 recommending igraph even when leidenalg (the paper's
            # protocol) is asked for by name
            warnings.simplefilter("ignore", sp.SparseEfficiencyWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", "The `igraph` implementation of leiden", UserWarning)
            sc.pp.neighbors(data, use_rep=use_rep, random_state=seed, transformer="sklearn")
            sc.tl.leiden(
                data, resolution=resolution, flavor="leidenalg", random_state=seed, key_added="cluster"
            )
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return data.obs["cluster"].to_numpy()


def clustering_scores(clusters, labels) -> dict[str, float]:
    """AMI, ARI, NMI and homogeneity of clusters against true labels.

    Examples
    --------
    >>> import butterfly as bf
    >>> bf.metrics.clustering_scores([0, 0, 1, 1], ["B", "B", "T", "T"])  # a relabelling scores 1
    {'AMI': 1.0, 'ARI': 1.0, 'NMI': 1.0, 'HOM': 1.0}
    """
    clusters = np.asarray(clusters).astype(str)
    labels = _check_labels(len(clusters), labels).astype(str)
    return {
        "AMI": float(skm.adjusted_mutual_info_score(labels, clusters)),
        "ARI": float(skm.adjusted_rand_score(labels, clusters)),
        "NMI": float(skm.normalized_mutual_info_score(labels, clusters)),
        "HOM": float(skm.homogeneity_score(labels, clusters)),
    }


def cell_heterogeneity(
    X, labels, *, n_pcs: int = 50, resolution: float = 1.0, seed: int = 0, runs: int = 1
) -> dict[str, float]:
    """Cluster a profile matrix as the paper does and score the clusters against ``labels``.

    ``runs`` > 1: cluster with the seeds ``seed, seed + 1, ...`` (PCA and Leiden) and return each score's
    mean over the runs. One Leiden run moves AMI by up to 0.02-0.03 on a few thousand cells (docs/guide.md), as
    much as the differences between methods that one run is often used to rank.

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> measured = bf.RNAPreprocessor().fit_transform(rna[:500]).X
    >>> scores = bf.metrics.cell_heterogeneity(measured, rna[:500].obs["cell_type"], runs=2)
    >>> sorted(scores), bool(scores["AMI"] > 0.4)
    (['AMI', 'ARI', 'HOM', 'NMI'], True)
    """
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
        raise ButterflyInputError(
            f"runs (clusterings to average) must be a whole number of at least 1, got {runs!r}."
        )
    _check_labels(X.shape[0], labels)
    per_run = [
        clustering_scores(leiden_clusters(X, n_pcs=n_pcs, resolution=resolution, seed=seed + i), labels)
        for i in range(int(runs))
    ]
    return {key: float(np.mean([scores[key] for scores in per_run])) for key in per_run[0]}


def _pearson_columns(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each column's Pearson r between ``pred`` and ``truth``: 0 where only the prediction is constant (no
    skill, such as a gene predicted as all zeros), left out where the truth is (nothing to predict)."""
    a = pred - pred.mean(0)
    b = truth - truth.mean(0)
    spread_a, spread_b = (a * a).sum(0), (b * b).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(spread_a > 0, (a * b).sum(0) / np.sqrt(spread_a * spread_b), 0.0)
    return r[spread_b > 0]


def feature_pearson(pred, truth, *, chunk: int = 4096) -> np.ndarray:
    """Pearson correlation across cells of each feature (column): NaN where ``truth`` is constant (nothing to
    predict), 0 where only ``pred`` is (no skill: a constant prediction, such as all zeros)."""
    pred, truth = _pair(pred, truth)
    out = np.full(pred.shape[1], np.nan)
    for start in range(0, pred.shape[1], chunk):
        a = pred[:, start : start + chunk].astype(np.float64)
        b = truth[:, start : start + chunk].astype(np.float64)
        a -= a.mean(0)
        b -= b.mean(0)
        spread = (b * b).sum(0)
        denominator = np.sqrt((a * a).sum(0) * spread)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(denominator > 0, (a * b).sum(0) / denominator, 0.0)
        out[start : start + chunk] = np.where(spread > 0, r, np.nan)
    return out


def _mean_or_nan(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def pearson_per_feature(pred, truth) -> float:
    """Mean over features of the Pearson correlation across cells: a feature predicted constant counts as 0 (no
    skill), one constant in the measured cells is skipped (NaN when all are). :func:`feature_pearson` gives each
    feature's.

    Examples
    --------
    >>> import numpy as np, butterfly as bf
    >>> truth = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
    >>> pred = np.array([[1.5, 0.0], [2.5, 0.0], [3.5, 0.0]])  # the first gene shifted, the second constant
    >>> bf.metrics.pearson_per_feature(pred, truth), bf.metrics.feature_pearson(pred, truth).tolist()
    (0.5, [1.0, 0.0])
    """
    return _mean_or_nan(_pearson_columns(*_pair(pred, truth, np.float64)))


def pearson_per_cell(pred, truth) -> float:
    """Mean over cells of the Pearson correlation across features (a constant prediction counts as 0)."""
    pred, truth = _pair(pred, truth, np.float64)
    return _mean_or_nan(_pearson_columns(pred.T, truth.T))


def auroc(pred, truth) -> float:
    """AUROC of predicted accessibility against the binarised measured accessibility, over all entries.

    Examples
    --------
    >>> import numpy as np, butterfly as bf
    >>> measured = np.array([[0, 2, 0], [1, 0, 0]])  # counts: open where above 0
    >>> bf.metrics.auroc(np.array([[0.1, 0.9, 0.2], [0.6, 0.3, 0.1]]), measured)
    1.0
    """
    pred, truth = _pair(pred, truth)
    return float(skm.roc_auc_score((truth > 0).ravel(), pred.ravel()))


def cell_pearson(pred, truth) -> np.ndarray:
    """Each cell's Pearson correlation across features between its prediction and its measured profile: NaN
    where the measured profile is constant, 0 where only the prediction is (:func:`feature_pearson` of the
    cells)."""
    pred, truth = _pair(pred, truth)
    return feature_pearson(pred.T, truth.T)


def cell_auroc(pred, truth, *, chunk: int = 256) -> np.ndarray:
    """Each cell's AUROC of predicted accessibility against its binarised measured peaks (open where above
    0): NaN for a cell with no open peak or no closed one.

    Examples
    --------
    >>> import numpy as np, butterfly as bf
    >>> measured = np.array([[0, 2, 0], [1, 0, 0], [0, 0, 0]])
    >>> bf.metrics.cell_auroc(np.array([[0.1, 0.9, 0.2], [0.2, 0.3, 0.1], [0.5, 0.5, 0.5]]), measured)
    array([1. , 0.5, nan])
    """
    from scipy.stats import rankdata

    pred, truth = _pair(pred, truth)
    out = np.full(pred.shape[0], np.nan)
    for start in range(0, pred.shape[0], chunk):
        ranks = rankdata(pred[start : start + chunk], axis=1)  # ties get average ranks, as roc_auc_score
        opened = truth[start : start + chunk] > 0
        n_open = opened.sum(1)
        n_closed = opened.shape[1] - n_open
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = ((ranks * opened).sum(1) - n_open * (n_open + 1) / 2) / (n_open * n_closed)
        out[start : start + chunk] = np.where((n_open > 0) & (n_closed > 0), auc, np.nan)
    return out


def _rank_columns(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=0)


def spearman_per_feature(pred, truth) -> float:
    """Mean over features of the Spearman correlation across cells (ties get average ranks; a feature predicted
    constant counts as 0, one constant in the measured cells is skipped)."""
    pred, truth = _pair(pred, truth)
    return _mean_or_nan(_pearson_columns(_rank_columns(pred), _rank_columns(truth)))


def spearman_per_cell(pred, truth) -> float:
    """Mean over cells of the Spearman correlation across features."""
    pred, truth = _pair(pred, truth)
    return _mean_or_nan(_pearson_columns(_rank_columns(pred.T), _rank_columns(truth.T)))


def rmse(pred, truth) -> float:
    """Root mean squared error over all entries (the NeurIPS 2021 predict-modality score)."""
    pred, truth = _pair(pred, truth, np.float64)
    diff = pred - truth
    return float(np.sqrt(np.mean(diff * diff)))


def auprc(pred, truth) -> float:
    """Average precision of predicted accessibility against the binarised measured accessibility."""
    pred, truth = _pair(pred, truth)
    return float(skm.average_precision_score((truth > 0).ravel(), pred.ravel()))


def annotation_scores(predicted, true) -> dict[str, float]:
    """Accuracy, Cohen's kappa, F1-macro and F1-weighted of predicted cell-type labels.

    Examples
    --------
    >>> import butterfly as bf
    >>> scores = bf.metrics.annotation_scores(["B", "T", "T", "NK"], ["B", "T", "NK", "NK"])
    >>> {key: round(value, 3) for key, value in scores.items()}
    {'accuracy': 0.75, 'kappa': 0.636, 'F1_macro': 0.778, 'F1_weighted': 0.75}
    """
    predicted = np.asarray(predicted).astype(str)
    true = _check_labels(len(predicted), true).astype(str)
    return {
        "accuracy": float(skm.accuracy_score(true, predicted)),
        "kappa": float(skm.cohen_kappa_score(true, predicted)),
        "F1_macro": float(skm.f1_score(true, predicted, average="macro")),
        "F1_weighted": float(skm.f1_score(true, predicted, average="weighted")),
    }


def _check_genes(genes, *matrices) -> None:
    """One gene name per column of every matrix (cells x genes, any number of cells)."""
    n_genes = len(genes)
    widths = [m.shape[1] if np.ndim(m) == 2 else None for m in matrices]
    if any(w != n_genes for w in widths):
        raise ButterflyInputError(
            f"Each matrix must be cells x the {n_genes} genes named, in their order; got widths {widths}."
        )


def gene_means(X) -> np.ndarray:
    """Mean of each column (gene) of a dense or sparse cells x genes matrix, as a flat array."""
    return np.asarray(X.mean(axis=0)).ravel()


def top_degs(control, stimulated, genes, n: int = 100) -> np.ndarray:
    """The ``n`` genes most up- or down-regulated in ``stimulated`` vs ``control`` (Wilcoxon rank-sum, as
    scanpy's ``rank_genes_groups(method="wilcoxon")`` ranks them, by score)."""
    import pandas as pd

    _check_genes(genes, control, stimulated)
    import scanpy as sc

    X = sp.vstack([sp.csr_matrix(control), sp.csr_matrix(stimulated)]).tocsr()
    data = ad.AnnData(X=X, var=pd.DataFrame(index=pd.Index(np.asarray(genes).astype(str))))
    data.obs["condition"] = pd.Categorical(
        ["control"] * control.shape[0] + ["stimulated"] * stimulated.shape[0]
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # log fold changes of negative means; unused here
        sc.tl.rank_genes_groups(
            data, "condition", groups=["stimulated"], reference="control", method="wilcoxon"
        )
    return np.asarray(data.uns["rank_genes_groups"]["names"]["stimulated"][:n]).astype(str)


def deg_overlap(control, real_stimulated, predicted_stimulated, genes, n: int = 100) -> int:
    """Number of genes shared by the top-``n`` DEGs of control vs real and of control vs predicted stimulated."""
    _check_genes(genes, control, real_stimulated, predicted_stimulated)
    real = top_degs(control, real_stimulated, genes, n)
    predicted = top_degs(control, predicted_stimulated, genes, n)
    return int(len(np.intersect1d(real, predicted)))


def deg_mean_r2(
    control, real_stimulated, predicted_stimulated, genes, *, n: int = 100, repeats: int = 100,
    fraction: float = 0.8, seed: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """R^2 of the mean expression of the top-``n`` real DEGs between predicted and real stimulated cells,
    over ``repeats`` resamplings (with replacement) of ``fraction`` of each; returns (mean, standard deviation)."""
    _check_genes(genes, control, real_stimulated, predicted_stimulated)
    degs = np.isin(np.asarray(genes).astype(str), top_degs(control, real_stimulated, genes, n))
    real = _dense(real_stimulated)[:, degs]
    pred = _dense(predicted_stimulated)[:, degs]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(repeats):
        r = real[rng.choice(len(real), int(fraction * len(real)), replace=True)].mean(0)
        p = pred[rng.choice(len(pred), int(fraction * len(pred)), replace=True)].mean(0)
        values.append(np.corrcoef(r, p)[0, 1] ** 2)
    return float(np.mean(values)), float(np.std(values))


def mae(pred, truth) -> float:
    """Mean absolute error over all entries."""
    pred, truth = _pair(pred, truth, np.float64)
    return float(np.mean(np.abs(pred - truth)))


def feature_auroc(pred, truth, *, chunk: int = 256) -> np.ndarray:
    """Each feature's (peak's) AUROC across cells of its predicted accessibility against the cells where it is
    measured open: NaN for a peak open in no cell or in every cell (:func:`cell_auroc` of the peaks)."""
    pred, truth = _pair(pred, truth)
    return cell_auroc(pred.T, truth.T, chunk=chunk)


def auroc_per_cell(pred, truth) -> float:
    """Mean over cells of each cell's AUROC across peaks (:func:`cell_auroc`): does the translation rank the
    peaks open in that cell above its closed ones? (The pooled :func:`auroc` mostly rewards how often a peak
    is open in any cell.)"""
    return _mean_or_nan(_finite(cell_auroc(pred, truth)))


def auroc_per_feature(pred, truth) -> float:
    """Mean over peaks of each peak's AUROC across cells (:func:`feature_auroc`): does the translation rank the
    cells where a peak is open above those where it is closed?"""
    return _mean_or_nan(_finite(feature_auroc(pred, truth)))


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


#: What :func:`paired_bootstrap` compares, by the kind of target.
BOOTSTRAP_METRICS = {
    "atac": ("AMI", "auroc_per_cell", "auroc_per_feature", "RMSE", "MAE"),
    "other": ("AMI", "pearson_per_cell", "pearson_per_feature", "spearman_per_cell", "spearman_per_feature",
              "RMSE", "MAE"),
}  # fmt: skip


def paired_bootstrap(
    pred_a, pred_b, truth, *, target_kind: str, labels=None, rounds: int = 200, seed: int = 0,
    level: float = 0.95, chunk: int = 2048,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Compare two translations of the same test cells: each metric of both, their difference ``a - b``, and a
    ``level`` interval of the difference from a paired bootstrap over cells (``rounds`` resamples of the cells
    with replacement, both translations scored on the same resample).

    The metrics (:data:`BOOTSTRAP_METRICS`) are those of :func:`~butterfly.benchmark.score_prediction`, on the
    target's normalised scale, with ATAC truth binarised (open where above 0): per-cell scores, RMSE and MAE are
    resampled exactly; per-feature Pearson from cell weights; per-feature Spearman from ranks taken on all the
    cells (the resample's own ranks would differ only in ties); per-peak AUROC from each open cell's placement
    among the closed ones on all cells (DeLong's placement values); AMI from each translation's Leiden
    clustering on all the cells against ``labels`` (skipped without ``labels``), the clusters held fixed.
    A difference whose interval lies above 0 is a win for ``a`` beyond the noise of which cells were tested.

    Examples
    --------
    >>> import numpy as np, butterfly as bf
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random((300, 40))
    >>> out = bf.metrics.paired_bootstrap(truth + rng.random((300, 40)), rng.random((300, 40)), truth,
    ...                                   target_kind="rna")
    >>> out["pearson_per_feature"]["low"] > 0.5, out["RMSE"]["high"] < 0.2
    (True, True)
    """
    from scipy.stats import rankdata

    pred_a, truth = _pair(pred_a, truth, np.float64)
    pred_b, _ = _pair(pred_b, truth, np.float64)
    n = truth.shape[0]
    atac = target_kind == "atac"
    if atac:
        truth = (truth > 0).astype(np.float64)
    rng = np.random.default_rng(seed)
    index = rng.integers(n, size=(rounds, n))
    weights = np.stack([np.bincount(row, minlength=n) for row in index]).astype(np.float64) / n
    weights = np.vstack([np.full((1, n), 1.0 / n), weights])  # row 0: every cell once (the point estimate)
    values: dict[str, dict[str, np.ndarray]] = {}

    def per_cell(name, score):
        values[name] = {
            key: weights @ np.nan_to_num(v) / (weights @ np.isfinite(v)) for key, v in score.items()
        }

    mse = {k: ((p - truth) ** 2).mean(1) for k, p in (("a", pred_a), ("b", pred_b))}
    values["RMSE"] = {k: np.sqrt(weights @ v) for k, v in mse.items()}
    values["MAE"] = {k: weights @ np.abs(p - truth).mean(1) for k, p in (("a", pred_a), ("b", pred_b))}
    if atac:
        per_cell("auroc_per_cell", {"a": cell_auroc(pred_a, truth), "b": cell_auroc(pred_b, truth)})
        values["auroc_per_feature"] = {k: _weighted_feature_auroc(p, truth, weights, chunk)
                                       for k, p in (("a", pred_a), ("b", pred_b))}  # fmt: skip
    else:
        per_cell("pearson_per_cell", {"a": cell_pearson(pred_a, truth), "b": cell_pearson(pred_b, truth)})
        ranked_truth_rows = rankdata(truth, axis=1)
        per_cell("spearman_per_cell", {k: cell_pearson(rankdata(p, axis=1), ranked_truth_rows)
                                       for k, p in (("a", pred_a), ("b", pred_b))})  # fmt: skip
        values["pearson_per_feature"] = {k: _weighted_feature_pearson(p, truth, weights, chunk)
                                         for k, p in (("a", pred_a), ("b", pred_b))}  # fmt: skip
        ranked_truth = rankdata(truth, axis=0)
        values["spearman_per_feature"] = {k: _weighted_feature_pearson(rankdata(p, axis=0), ranked_truth, weights, chunk)
                                          for k, p in (("a", pred_a), ("b", pred_b))}  # fmt: skip
    if labels is not None:
        labels = _check_labels(n, labels)
        clusters = {k: leiden_clusters(p, seed=seed) for k, p in (("a", pred_a), ("b", pred_b))}
        rows = np.vstack([np.arange(n)[None, :], index])
        values["AMI"] = {k: np.array([skm.adjusted_mutual_info_score(labels[r], c[r]) for r in rows])
                         for k, c in clusters.items()}  # fmt: skip
    order = [m for m in BOOTSTRAP_METRICS["atac" if atac else "other"] if m in values]
    out = {}
    for name in order:
        a, b = values[name]["a"], values[name]["b"]
        diff = a[1:] - b[1:]
        low, high = np.nanquantile(diff, [(1 - level) / 2, (1 + level) / 2])
        out[name] = {"a": float(a[0]), "b": float(b[0]), "difference": float(a[0] - b[0]),
                     "low": float(low), "high": float(high)}  # fmt: skip
    return out


def _weighted_feature_pearson(pred, truth, weights, chunk) -> np.ndarray:
    """For each row of cell ``weights`` (summing to 1), the mean over features of their weighted Pearson r
    (features constant in the truth left out, a constant prediction 0)."""
    total, count = np.zeros(weights.shape[0]), np.zeros(weights.shape[0])
    for start in range(0, truth.shape[1], chunk):
        p, t = pred[:, start : start + chunk], truth[:, start : start + chunk]
        mp, mt = weights @ p, weights @ t
        vp, vt = weights @ (p * p) - mp**2, weights @ (t * t) - mt**2
        cov = weights @ (p * t) - mp * mt
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(vp > 1e-12, cov / np.sqrt(np.maximum(vp, 1e-300) * np.maximum(vt, 1e-300)), 0.0)
        defined = vt > 1e-12
        total += np.where(defined, r, 0).sum(1)
        count += defined.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _weighted_feature_auroc(pred, opened, weights, chunk) -> np.ndarray:
    """For each row of cell ``weights``, the mean over peaks of their AUROC across cells, from each open cell's
    placement among the closed cells of all the cells (the fraction of closed cells it is predicted above, ties
    counting half), averaged over the open cells with their weights."""
    from scipy.stats import rankdata

    total, count = np.zeros(weights.shape[0]), np.zeros(weights.shape[0])
    for start in range(0, opened.shape[1], chunk):
        p, o = pred[:, start : start + chunk], opened[:, start : start + chunk]
        n_open = o.sum(0)
        n_closed = o.shape[0] - n_open
        ranks = rankdata(p, axis=0)  # among all cells
        open_ranks = rankdata(np.where(o > 0, p, -np.inf), axis=0)  # among the open cells (closed ones below)
        n_below_closed = ranks - (
            open_ranks - n_closed
        )  # closed cells below (ties: half), for each open cell
        with np.errstate(invalid="ignore", divide="ignore"):
            placement = np.where(o > 0, n_below_closed / n_closed, 0.0)
        opened_weight = weights @ o
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (weights @ placement) / opened_weight
        defined = (n_open > 0) & (n_closed > 0) & (opened_weight > 0)
        total += np.where(defined, auc, 0).sum(1)
        count += defined.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def reliability_curve(pred, truth, *, bins: int = 10):
    """How well predicted probabilities that peaks are open match how often they are: the entries (cells x
    peaks) split into ``bins`` groups of equal size by predicted value, and for each group the mean prediction
    beside the fraction measured open (above 0). A calibrated prediction lies on the diagonal.

    Examples
    --------
    >>> import numpy as np, butterfly as bf
    >>> rng = np.random.default_rng(0)
    >>> p = rng.random((200, 50))
    >>> curve = bf.metrics.reliability_curve(p, rng.random((200, 50)) < p, bins=5)  # calibrated by construction
    >>> bool(np.abs(curve["predicted"] - curve["observed"]).max() < 0.02)
    True
    """
    import pandas as pd

    pred, truth = _pair(pred, truth)
    pred, opened = pred.ravel().astype(np.float64), (truth.ravel() > 0)
    order = np.argsort(pred, kind="stable")
    groups = np.array_split(order, bins)
    return pd.DataFrame(
        {
            "predicted": [pred[g].mean() for g in groups],
            "observed": [opened[g].mean() for g in groups],
            "entries": [g.size for g in groups],
        }
    )
