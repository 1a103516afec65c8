"""Data shipped with the package (no downloads)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "cite_bmmc_demo": "_shipped",
    "kang_pbmc_demo": "_shipped",
    "multiome_bmmc_demo": "_shipped",
    "snare_mcc_demo": "_shipped",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "cite_bmmc_demo",
    "kang_pbmc_demo",
    "multiome_bmmc_demo",
    "snare_mcc_demo",
]

if TYPE_CHECKING:
    from ._shipped import cite_bmmc_demo, kang_pbmc_demo, multiome_bmmc_demo, snare_mcc_demo
