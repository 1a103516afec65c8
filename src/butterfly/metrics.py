"""Scores of a translation: cell heterogeneity (clustering), numerical agreement, accessibility AUROC."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn import metrics as skm


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def leiden_clusters(X, *, n_pcs: int = 50, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """The paper's clustering: PCA to ``n_pcs`` (or fewer when the data are smaller), 15-nearest-neighbour
    graph, Leiden at ``resolution`` with the leidenalg implementation (scanpy ``flavor="leidenalg"``)."""
    import scanpy as sc

    data = ad.AnnData(X=_dense(X).astype(np.float32))
    n_comps = max(1, min(n_pcs, data.n_obs - 1, data.n_vars - 1))
    sc.pp.pca(data, n_comps=n_comps, random_state=seed)
    sc.pp.neighbors(data, use_rep="X_pca", random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sc.tl.leiden(data, resolution=resolution, flavor="leidenalg", random_state=seed, key_added="cluster")
    return data.obs["cluster"].to_numpy()


def clustering_scores(clusters, labels) -> dict[str, float]:
    """AMI, ARI, NMI and homogeneity of clusters against true labels."""
    labels, clusters = np.asarray(labels).astype(str), np.asarray(clusters).astype(str)
    return {
        "AMI": float(skm.adjusted_mutual_info_score(labels, clusters)),
        "ARI": float(skm.adjusted_rand_score(labels, clusters)),
        "NMI": float(skm.normalized_mutual_info_score(labels, clusters)),
        "HOM": float(skm.homogeneity_score(labels, clusters)),
    }


def cell_heterogeneity(
    X, labels, *, n_pcs: int = 50, resolution: float = 1.0, seed: int = 0
) -> dict[str, float]:
    """Cluster a profile matrix as the paper does and score the clusters against ``labels``."""
    return clustering_scores(leiden_clusters(X, n_pcs=n_pcs, resolution=resolution, seed=seed), labels)


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    denominator = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(0) / denominator
    return r[denominator > 0]


def pearson_per_feature(pred, truth) -> float:
    """Mean over features of the Pearson correlation across cells (features constant in either are skipped)."""
    return float(np.mean(_pearson_columns(_dense(pred).astype(np.float64), _dense(truth).astype(np.float64))))


def pearson_per_cell(pred, truth) -> float:
    """Mean over cells of the Pearson correlation across features."""
    return float(
        np.mean(_pearson_columns(_dense(pred).T.astype(np.float64), _dense(truth).T.astype(np.float64)))
    )


def auroc(pred, truth) -> float:
    """AUROC of predicted accessibility against the binarised measured accessibility, over all entries."""
    truth = (_dense(truth) > 0).ravel()
    return float(skm.roc_auc_score(truth, _dense(pred).ravel()))
