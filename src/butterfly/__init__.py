"""butterfly: single-cell cross-modality translation with dual-aligned variational autoencoders (scButterfly)."""

from . import datasets, evaluate, metrics, modalities, preprocessing, protocols, readers, report
from ._validation import ButterflyInputError, NotTrainedError, align_cells
from .accessibility import ATACPreprocessor, binarize_accessibility
from .annotation import annotate
from .evaluate import evaluate_perturbation, evaluate_translation
from .genome import parse_peaks
from .integration import integrate
from .model import Butterfly
from .preprocessing import ADTPreprocessor, ExpressionPreprocessor, RNAPreprocessor
from .settings import FAST_SETTING

__version__ = "0.1.0"

__all__ = [
    "ADTPreprocessor",
    "FAST_SETTING",
    "Butterfly",
    "ATACPreprocessor",
    "ButterflyInputError",
    "ExpressionPreprocessor",
    "NotTrainedError",
    "RNAPreprocessor",
    "align_cells",
    "annotate",
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
    "readers",
    "report",
]
