"""Tools on a trained model, in the manner of ``scanpy.tl``: label cells from a reference, a joint
embedding of two modalities."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "JOINT_KEY": "_integrate",
    "annotate": "_annotate",
    "integrate": "_integrate",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "JOINT_KEY",
    "annotate",
    "integrate",
]

if TYPE_CHECKING:
    from ._annotate import annotate
    from ._integrate import JOINT_KEY, integrate
