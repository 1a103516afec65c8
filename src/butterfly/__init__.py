"""butterfly: single-cell cross-modality translation with dual-aligned variational autoencoders (scButterfly)."""

from . import datasets, preprocessing
from ._validation import ButterflyInputError, align_cells
from .genome import parse_peaks
from .preprocessing import (
    ADTPreprocessor,
    ATACPreprocessor,
    ExpressionPreprocessor,
    RNAPreprocessor,
    binarize_accessibility,
)

__version__ = "0.1.0"

__all__ = [
    "ADTPreprocessor",
    "ATACPreprocessor",
    "ButterflyInputError",
    "ExpressionPreprocessor",
    "RNAPreprocessor",
    "align_cells",
    "binarize_accessibility",
    "datasets",
    "parse_peaks",
    "preprocessing",
]
