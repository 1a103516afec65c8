"""Reading modalities from ``.h5ad``, ``.h5mu`` and 10x ``.h5`` files, and writing files atomically."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "read_10x_h5": "_readers",
    "read_h5mu": "_readers",
    "read_modalities": "_readers",
    "read_modality": "_readers",
    "write_h5ad_atomic": "_atomic",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "read_10x_h5",
    "read_h5mu",
    "read_modalities",
    "read_modality",
    "write_h5ad_atomic",
]

if TYPE_CHECKING:
    from ._atomic import write_h5ad_atomic
    from ._readers import read_10x_h5, read_h5mu, read_modalities, read_modality
