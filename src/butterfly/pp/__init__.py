"""Fitted preprocessing per modality (RNA, ATAC, protein, expression), the modality descriptions and
peak coordinates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "ADT": "_modalities",
    "ADTPreprocessor": "_expression",
    "ATAC": "_modalities",
    "ATACPreprocessor": "_accessibility",
    "EXPRESSION": "_modalities",
    "ExpressionPreprocessor": "_expression",
    "ModalitySpec": "_modalities",
    "PRESETS": "_modalities",
    "PeakCoordinates": "_genome",
    "Preprocessor": "_expression",
    "RNA": "_modalities",
    "RNAPreprocessor": "_expression",
    "align_features": "_expression",
    "binarize_accessibility": "_accessibility",
    "calibrated": "_accessibility",
    "get_modality": "_modalities",
    "overlap_matrix": "_genome",
    "parse_peaks": "_genome",
    "uncalibrated": "_accessibility",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "ADT",
    "ADTPreprocessor",
    "ATAC",
    "ATACPreprocessor",
    "EXPRESSION",
    "ExpressionPreprocessor",
    "ModalitySpec",
    "PRESETS",
    "PeakCoordinates",
    "Preprocessor",
    "RNA",
    "RNAPreprocessor",
    "align_features",
    "binarize_accessibility",
    "calibrated",
    "get_modality",
    "overlap_matrix",
    "parse_peaks",
    "uncalibrated",
]

if TYPE_CHECKING:
    from ._accessibility import ATACPreprocessor, binarize_accessibility, calibrated, uncalibrated
    from ._expression import (
        ADTPreprocessor,
        ExpressionPreprocessor,
        Preprocessor,
        RNAPreprocessor,
        align_features,
    )
    from ._genome import PeakCoordinates, overlap_matrix, parse_peaks
    from ._modalities import ADT, ATAC, EXPRESSION, PRESETS, RNA, ModalitySpec, get_modality
