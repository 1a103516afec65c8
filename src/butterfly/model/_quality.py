"""Did a translation work? Each direction's translations of the validation cells, held out of training, are
scored by how much better a cell's own translation matches its measured profile than the other cells'
translations do: ``S(pred_i, truth_i) - mean over j != i of S(pred_j, truth_i)``, with ``S`` the cell's AUROC of
predicted against measured open peaks (ATAC) or its Pearson r across features (RNA, protein). Predicting every
cell as the mean training profile scores exactly 0 on it, whatever the data: it carries nothing about the cell.
kNN, the mean of each cell's 20 nearest training cells in the source's SVD space, is the simple predictor to
beat. ``fit`` runs the check and warns when a direction's score is not above 0 (its 95% interval from a
bootstrap over cells reaches 0); ``summary()`` shows it.

The cell's own score ``S(pred_i, truth_i)`` alone is not used: it rewards the profile all cells share, so the
training mean itself scores high on it (per-cell AUROC 0.69 on the shipped SNARE-seq cells, above a briefly
trained model's 0.61). Per-feature scores across cells are too noisy for ATAC, whose peaks are open in a few
cells each."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

#: Resamples of the validation cells in the bootstrap; most validation cells scored (spread over them).
BOOTSTRAP_ROUNDS = 1000
MATCHING_CELLS = 500
KNN_NEIGHBOURS = 20
KNN_COMPONENTS = 50


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def score_matrix(pred, truth, target_kind: str) -> np.ndarray:
    """``M[i, j] = S(pred_j, truth_i)`` for all pairs of cells: each cell's measured profile scored against every
    cell's prediction (AUROC over peaks for ATAC, Pearson r over features otherwise; NaN where undefined)."""
    pred, truth = _dense(pred).astype(np.float64), _dense(truth).astype(np.float64)
    n_features = truth.shape[1]
    if target_kind == "atac":
        ranks = rankdata(pred, axis=1)  # ties share their mean rank, as roc_auc_score
        opened = (truth > 0).astype(np.float64)
        n_open = opened.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = (opened @ ranks.T - n_open * (n_open + 1) / 2) / (n_open * (n_features - n_open))
        scores[((n_open == 0) | (n_open == n_features)).ravel()] = np.nan
        return scores

    def standardised(X):
        centred = X - X.mean(1, keepdims=True)
        norm = np.linalg.norm(centred, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(norm > 0, centred / norm, np.nan)

    zt, zp = standardised(truth), standardised(pred)
    scores = zt @ np.nan_to_num(zp).T
    scores[:, np.isnan(zp[:, 0])] = 0.0  # a constant prediction: r taken as 0
    scores[np.isnan(zt[:, 0])] = np.nan
    return scores


def cell_specificity(pred, truth, target_kind: str) -> np.ndarray:
    """Each cell's ``S(pred_i, truth_i) - mean over j != i of S(pred_j, truth_i)`` (:func:`score_matrix`): how
    much better its own translation matches it than other cells' translations do. 0 for every cell when all
    predictions are the same.

    Examples
    --------
    >>> import numpy as np
    >>> from butterfly.model._quality import cell_specificity
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random((50, 20))
    >>> bool(np.abs(cell_specificity(np.tile(truth.mean(0), (50, 1)), truth, "rna")).max() < 1e-12)  # the mean
    True
    >>> bool(cell_specificity(truth + 0.1 * rng.random((50, 20)), truth, "rna").mean() > 0.5)
    True
    """
    scores = score_matrix(pred, truth, target_kind)
    n = scores.shape[0]
    own = np.diag(scores).copy()
    others = (np.nansum(scores, axis=1) - np.nan_to_num(own)) / max(n - 1, 1)
    return own - others


def interval(values: np.ndarray, *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0, level: float = 0.95):
    """The mean of ``values`` (NaN left out) and the central ``level`` interval of its bootstrap over them."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(values.size, size=(rounds, values.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(values.mean()), float(low), float(high)


def knn_prediction(train_source, train_target, source, *, seed: int = 0) -> np.ndarray:
    """The mean target profile of each ``source`` cell's nearest training cells, found in the training source's
    truncated SVD (:data:`KNN_COMPONENTS` components, :data:`KNN_NEIGHBOURS` neighbours)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.neighbors import NearestNeighbors

    n_components = max(1, min(KNN_COMPONENTS, train_source.shape[1] - 1, train_source.shape[0] - 1))
    svd = TruncatedSVD(n_components=n_components, random_state=seed).fit(train_source)
    k = min(KNN_NEIGHBOURS, train_source.shape[0])
    index = NearestNeighbors(n_neighbors=k).fit(svd.transform(train_source))
    _, neighbours = index.kneighbors(svd.transform(source))
    return neighbour_mean(neighbours, train_target)


def neighbour_mean(neighbours: np.ndarray, train_target) -> np.ndarray:
    """Each row's mean of the ``train_target`` rows its ``neighbours`` (cells x k indices) name (float32)."""
    target = train_target.tocsr() if sp.issparse(train_target) else np.asarray(train_target)
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k)
    averaging = sp.csr_matrix(
        (np.full(rows.size, 1.0 / k), (rows, neighbours.ravel())), shape=(n, target.shape[0])
    )
    return _dense(averaging @ target).astype(np.float32)


def check_direction(
    pred, truth, train_source, train_target, source, *, target_kind: str, seed: int = 0
) -> dict:
    """One direction's check on validation cells (at most :data:`MATCHING_CELLS`, spread over them): the mean
    :func:`cell_specificity` of the model's translations and of kNN's, with 95% bootstrap intervals over cells,
    and the paired difference between them. ``verdict``: ``"fails"`` when the model's interval reaches 0, the
    training mean's score (its translations do not tell the cells apart), ``"below kNN"`` when the interval of
    the difference from kNN lies below 0, else ``"ok"``."""
    truth, pred = _dense(truth), _dense(pred)
    if truth.shape[0] > MATCHING_CELLS:
        rows = np.linspace(0, truth.shape[0] - 1, MATCHING_CELLS).round().astype(int)
        truth, pred, source = truth[rows], pred[rows], source[rows]
    knn = knn_prediction(train_source, train_target, source, seed=seed)
    model_cells = cell_specificity(pred, truth, target_kind)
    knn_cells = cell_specificity(knn, truth, target_kind)
    model, low, high = interval(model_cells, seed=seed)
    neighbours, knn_low, knn_high = interval(knn_cells, seed=seed)
    diff, diff_low, diff_high = interval(model_cells - knn_cells, seed=seed)
    verdict = "fails" if not low > 0 else "below kNN" if diff_high < 0 else "ok"
    return {
        "score": "cell matching, " + ("AUROC" if target_kind == "atac" else "Pearson"),
        "cells": int(truth.shape[0]),
        "model": model,
        "model interval": [low, high],
        "kNN": neighbours,
        "kNN interval": [knn_low, knn_high],
        "model - kNN": diff,
        "model - kNN interval": [diff_low, diff_high],
        "verdict": verdict,
    }


def warning_text(direction: str, check: dict) -> str | None:
    """The one-sentence warning ``fit`` gives for a direction that failed, or None."""
    if check["verdict"] != "fails":
        return None
    low, high = check["model interval"]
    knn = f" and kNN's {check['kNN']:.3f}" if check["kNN interval"][0] > 0 else ""
    return (
        f"The {direction} translation does not tell the cells apart: on {check['cells']} validation cells, a cell's "
        f"own translation matches it no better than other cells' translations do ({check['score']} "
        f"{check['model']:+.3f}, 95% interval {low:+.3f} to {high:+.3f}; predicting every cell as the mean "
        f"training profile scores 0{knn}). Check that the two modalities hold the same cells in the same order, "
        "then try more epochs or more training cells."
    )


def summary_line(direction: str, check: dict) -> str:
    """One line of ``summary()``: the model's validation score beside kNN's (the training mean's is 0)."""
    note = {
        "fails": "  <- FAILED: no better than the training mean",
        "below kNN": "  <- kNN does better",
        "ok": "",
    }
    low, high = check["model interval"]
    return (
        f"{direction}: {check['score']} {check['model']:+.3f} [{low:+.3f}, {high:+.3f}] (kNN {check['kNN']:+.3f}, "
        f"training mean 0; {check['cells']} validation cells){note[check['verdict']]}"
    )
