"""Benchmarking: evaluation against measured cells, the protocols (folds by cell, cell type, batch), the
baselines (kNN, linear, training mean, kernel ridge, perturbation baselines), the benchmark report and the
demo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "BASELINES": "_protocols",
    "DEFAULT_MODELS": "_protocols",
    "KERNEL_RIDGE_SETTINGS": "_baselines",
    "KNNTranslator": "_baselines",
    "KernelRidgeTranslator": "_baselines",
    "LatentArithmetic": "_baselines",
    "LinearTranslator": "_baselines",
    "MODEL_NAMES": "_protocols",
    "MeanShiftPerturbation": "_baselines",
    "MeanTranslator": "_baselines",
    "evaluate_perturbation": "_evaluate",
    "evaluate_translation": "_evaluate",
    "evaluation_report": "_evaluate",
    "folds_by_batch": "_protocols",
    "folds_by_cell": "_protocols",
    "folds_by_cell_type": "_protocols",
    "folds_by_group": "_protocols",
    "merge_benchmarks": "_report",
    "run_demo": "_demo",
    "run_protocol": "_protocols",
    "score_prediction": "_evaluate",
    "scores_by_label": "_evaluate",
    "scores_table": "_evaluate",
    "summarize": "_report",
    "write_benchmark_report": "_report",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "BASELINES",
    "DEFAULT_MODELS",
    "KERNEL_RIDGE_SETTINGS",
    "KNNTranslator",
    "KernelRidgeTranslator",
    "LatentArithmetic",
    "LinearTranslator",
    "MODEL_NAMES",
    "MeanShiftPerturbation",
    "MeanTranslator",
    "evaluate_perturbation",
    "evaluate_translation",
    "evaluation_report",
    "folds_by_batch",
    "folds_by_cell",
    "folds_by_cell_type",
    "folds_by_group",
    "merge_benchmarks",
    "run_demo",
    "run_protocol",
    "score_prediction",
    "scores_by_label",
    "scores_table",
    "summarize",
    "write_benchmark_report",
]

if TYPE_CHECKING:
    from ._baselines import (
        KERNEL_RIDGE_SETTINGS,
        KernelRidgeTranslator,
        KNNTranslator,
        LatentArithmetic,
        LinearTranslator,
        MeanShiftPerturbation,
        MeanTranslator,
    )
    from ._demo import run_demo
    from ._evaluate import (
        evaluate_perturbation,
        evaluate_translation,
        evaluation_report,
        score_prediction,
        scores_by_label,
        scores_table,
    )
    from ._protocols import (
        BASELINES,
        DEFAULT_MODELS,
        MODEL_NAMES,
        folds_by_batch,
        folds_by_cell,
        folds_by_cell_type,
        folds_by_group,
        run_protocol,
    )
    from ._report import merge_benchmarks, summarize, write_benchmark_report
