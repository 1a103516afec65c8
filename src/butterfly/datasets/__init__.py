"""Data shipped with the package (no downloads)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "snare_mcc_demo": "_shipped",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "snare_mcc_demo",
]

if TYPE_CHECKING:
    from ._shipped import snare_mcc_demo
