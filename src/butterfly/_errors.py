"""The errors butterfly raises for a user's mistake. No dependencies, so every layer (the torch-only
``butterfly.module`` included) can raise them."""

from __future__ import annotations


class ButterflyInputError(ValueError):
    """The data given to butterfly cannot be used as it is; the message says why and how to fix it."""


class ModelFileError(ButterflyInputError):
    """A saved model's folder cannot be read: a file is missing, cut short, edited into another shape, or of
    another model. The message names the file and the problem; ``path`` is the file."""

    def __init__(self, path, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


class NotTrainedError(ButterflyInputError, RuntimeError):
    """A model asked to translate before :meth:`~butterfly.Butterfly.fit` (a RuntimeError, as before, and a
    user mistake the CLI reports in one line)."""


class TrainingDivergedError(ButterflyInputError, RuntimeError):
    """Training reached a loss that is not a finite number (NaN or infinite), most often from a learning rate
    too high for the data. ``fit`` stops at once and keeps the weights of the best finite epoch; the message
    names the setting to change."""
