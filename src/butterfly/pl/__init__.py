"""Figures, in the manner of ``scanpy.pl``: training curves, annotation, reliability, scores by label,
validation scores, perturbation and t-SNE panels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "plot_annotation": "_figures",
    "plot_history": "_figures",
    "plot_perturbation": "_figures",
    "plot_reliability": "_figures",
    "plot_scores_by_label": "_figures",
    "plot_tsne_panels": "_figures",
    "plot_validation_scores": "_figures",
    "tsne_embedding": "_figures",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "plot_annotation",
    "plot_history",
    "plot_perturbation",
    "plot_reliability",
    "plot_scores_by_label",
    "plot_tsne_panels",
    "plot_validation_scores",
    "tsne_embedding",
]

if TYPE_CHECKING:
    from ._figures import (
        plot_annotation,
        plot_history,
        plot_perturbation,
        plot_reliability,
        plot_scores_by_label,
        plot_tsne_panels,
        plot_validation_scores,
        tsne_embedding,
    )
