"""Scores of a translation against measured cells: clustering, correlation, AUROC, errors, DEGs, and the
paired bootstrap for comparing two methods on the same cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "annotation_scores": "_scores",
    "auprc": "_scores",
    "auroc": "_scores",
    "auroc_per_cell": "_scores",
    "auroc_per_feature": "_scores",
    "cell_auroc": "_scores",
    "cell_heterogeneity": "_scores",
    "cell_pearson": "_scores",
    "clustering_scores": "_scores",
    "deg_mean_r2": "_scores",
    "deg_overlap": "_scores",
    "feature_auroc": "_scores",
    "feature_pearson": "_scores",
    "gene_means": "_scores",
    "leiden_clusters": "_scores",
    "leiden_on": "_scores",
    "mae": "_scores",
    "paired_bootstrap": "_scores",
    "pearson_per_cell": "_scores",
    "pearson_per_feature": "_scores",
    "reliability_curve": "_scores",
    "rmse": "_scores",
    "spearman_per_cell": "_scores",
    "spearman_per_feature": "_scores",
    "top_degs": "_scores",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "annotation_scores",
    "auprc",
    "auroc",
    "auroc_per_cell",
    "auroc_per_feature",
    "cell_auroc",
    "cell_heterogeneity",
    "cell_pearson",
    "clustering_scores",
    "deg_mean_r2",
    "deg_overlap",
    "feature_auroc",
    "feature_pearson",
    "gene_means",
    "leiden_clusters",
    "leiden_on",
    "mae",
    "paired_bootstrap",
    "pearson_per_cell",
    "pearson_per_feature",
    "reliability_curve",
    "rmse",
    "spearman_per_cell",
    "spearman_per_feature",
    "top_degs",
]

if TYPE_CHECKING:
    from ._scores import (
        annotation_scores,
        auprc,
        auroc,
        auroc_per_cell,
        auroc_per_feature,
        cell_auroc,
        cell_heterogeneity,
        cell_pearson,
        clustering_scores,
        deg_mean_r2,
        deg_overlap,
        feature_auroc,
        feature_pearson,
        gene_means,
        leiden_clusters,
        leiden_on,
        mae,
        paired_bootstrap,
        pearson_per_cell,
        pearson_per_feature,
        reliability_curve,
        rmse,
        spearman_per_cell,
        spearman_per_feature,
        top_degs,
    )
