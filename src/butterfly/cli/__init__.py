"""The ``butterfly`` command line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "main": "_main",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "main",
]

if TYPE_CHECKING:
    from ._main import main
