"""butterfly: single-cell cross-modality translation with dual-aligned variational autoencoders (scButterfly).

The names below are imported on first use, so that ``import butterfly`` and ``butterfly --help`` do not wait
for torch and scanpy (seconds) before they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_EXPORTS = {
    "ADTPreprocessor": "preprocessing",
    "ATACPreprocessor": "accessibility",
    "Butterfly": "model",
    "ButterflyInputError": "_validation",
    "ExpressionPreprocessor": "preprocessing",
    "FAST_SETTING": "settings",
    "ModelFileError": "_validation",
    "NotTrainedError": "_validation",
    "TrainingDivergedError": "_validation",
    "RNAPreprocessor": "preprocessing",
    "align_cells": "_validation",
    "annotate": "annotation",
    "binarize_accessibility": "accessibility",
    "evaluate_perturbation": "evaluate",
    "evaluate_translation": "evaluate",
    "integrate": "integration",
    "parse_peaks": "genome",
}
_SUBMODULES = (
    "baselines",
    "datasets",
    "evaluate",
    "metrics",
    "modalities",
    "preprocessing",
    "protocols",
    "quality",
    "readers",
    "report",
)

__all__ = [
    "ADTPreprocessor",
    "ATACPreprocessor",
    "Butterfly",
    "ButterflyInputError",
    "ExpressionPreprocessor",
    "FAST_SETTING",
    "ModelFileError",
    "NotTrainedError",
    "RNAPreprocessor",
    "TrainingDivergedError",
    "align_cells",
    "annotate",
    "baselines",
    "binarize_accessibility",
    "datasets",
    "evaluate",
    "evaluate_perturbation",
    "evaluate_translation",
    "integrate",
    "metrics",
    "modalities",
    "parse_peaks",
    "preprocessing",
    "protocols",
    "quality",
    "readers",
    "report",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'butterfly' has no attribute {name!r}")
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what editors and type checkers see
    from . import (
        baselines,
        datasets,
        evaluate,
        metrics,
        modalities,
        preprocessing,
        protocols,
        quality,
        readers,
        report,
    )
    from ._validation import (
        ButterflyInputError,
        ModelFileError,
        NotTrainedError,
        TrainingDivergedError,
        align_cells,
    )
    from .accessibility import ATACPreprocessor, binarize_accessibility
    from .annotation import annotate
    from .evaluate import evaluate_perturbation, evaluate_translation
    from .genome import parse_peaks
    from .integration import integrate
    from .model import Butterfly
    from .preprocessing import ADTPreprocessor, ExpressionPreprocessor, RNAPreprocessor
    from .settings import FAST_SETTING
