"""Tools on a trained model, in the manner of ``scanpy.tl`` (they write into the data under ``key_added``;
``copy=True`` returns a changed copy): label cells from a reference, a joint embedding of two modalities."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "JOINT_KEY": "_integrate",
    "LABEL_KEY": "_tools",
    "annotate": "_tools",
    "integrate": "_tools",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "JOINT_KEY",
    "LABEL_KEY",
    "annotate",
    "integrate",
]

if TYPE_CHECKING:
    from ._integrate import JOINT_KEY
    from ._tools import LABEL_KEY, annotate, integrate
