"""butterfly: single-cell cross-modality translation with dual-aligned variational autoencoders (scButterfly).

The package is laid out by layer, each importing only those below it:

- :mod:`butterfly.pp`: fitted preprocessing per modality, modality descriptions, peak coordinates;
- :mod:`butterfly.module`: the torch networks, layers and losses (torch only);
- :mod:`butterfly.train`: training settings, the training loop, minibatches, torchrun, CUDA graphs;
- :mod:`butterfly.model`: the :class:`Butterfly` model (pairing, inference, save/load, summary);
- :mod:`butterfly.tl` and :mod:`butterfly.pl`: tools and figures on a trained model, as in scanpy;
- :mod:`butterfly.metrics`, :mod:`butterfly.benchmark`: scores, evaluation, protocols, baselines;
- :mod:`butterfly.io`, :mod:`butterfly.datasets`, :mod:`butterfly.cli`: files, shipped data, the command line.

The names below are imported on first use, so that ``import butterfly`` and ``butterfly --help`` do not wait
for torch and scanpy (seconds) before they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: Each public top-level name and the subpackage or module that defines it.
_EXPORTS = {
    "ADTPreprocessor": "pp",
    "ATACPreprocessor": "pp",
    "Butterfly": "model",
    "ButterflyInputError": "_errors",
    "ExpressionPreprocessor": "pp",
    "FAST_SETTING": "train",
    "ModelFileError": "_errors",
    "NotTrainedError": "_errors",
    "TrainingDivergedError": "_errors",
    "RNAPreprocessor": "pp",
    "TrainingConfig": "train",
    "align_cells": "_validation",
    "annotate": "tl._annotate",
    "binarize_accessibility": "pp",
    "evaluate_perturbation": "benchmark",
    "evaluate_translation": "benchmark",
    "integrate": "tl._integrate",
    "parse_peaks": "pp",
}
_SUBMODULES = ("benchmark", "cli", "datasets", "io", "metrics", "model", "module", "pl", "pp", "tl", "train")

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
    "TrainingConfig",
    "TrainingDivergedError",
    "__version__",
    "align_cells",
    "annotate",
    "benchmark",
    "binarize_accessibility",
    "cli",
    "datasets",
    "evaluate_perturbation",
    "evaluate_translation",
    "integrate",
    "io",
    "metrics",
    "model",
    "module",
    "parse_peaks",
    "pl",
    "pp",
    "tl",
    "train",
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
    from . import benchmark, cli, datasets, io, metrics, model, module, pl, pp, tl, train
    from ._errors import ButterflyInputError, ModelFileError, NotTrainedError, TrainingDivergedError
    from ._validation import align_cells
    from .benchmark import evaluate_perturbation, evaluate_translation
    from .model import Butterfly
    from .pp import (
        ADTPreprocessor,
        ATACPreprocessor,
        ExpressionPreprocessor,
        RNAPreprocessor,
        binarize_accessibility,
        parse_peaks,
    )
    from .tl._annotate import annotate
    from .tl._integrate import integrate
    from .train import FAST_SETTING, TrainingConfig
