"""Training: the settings (:class:`TrainingConfig`, ``FAST_SETTING``), the three-phase loop, minibatch
sampling, several processes (torchrun) and CUDA graphs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "FAST_SETTING": "_settings",
    "PairedRows": "_data",
    "Trainer": "_trainer",
    "TrainingConfig": "_settings",
    "split_validation": "_data",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "FAST_SETTING",
    "PairedRows",
    "Trainer",
    "TrainingConfig",
    "split_validation",
]

if TYPE_CHECKING:
    from ._data import PairedRows, split_validation
    from ._settings import FAST_SETTING, TrainingConfig
    from ._trainer import Trainer
