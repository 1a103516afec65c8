"""The :class:`Butterfly` model: pairing strategies, inference, save/load and its summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "ATAC_OUTPUTS": "_inference",
    "Butterfly": "_butterfly",
    "LATENT_KEY": "_inference",
    "TRUSTED_VALIDATION_R": "_summary",
    "VALIDATION_SCORE_KEY": "_inference",
    "read_model_config": "_persistence",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "ATAC_OUTPUTS",
    "Butterfly",
    "LATENT_KEY",
    "TRUSTED_VALIDATION_R",
    "VALIDATION_SCORE_KEY",
    "read_model_config",
]

if TYPE_CHECKING:
    from ._butterfly import Butterfly
    from ._inference import ATAC_OUTPUTS, LATENT_KEY, VALIDATION_SCORE_KEY
    from ._persistence import read_model_config
    from ._summary import TRUSTED_VALIDATION_R
