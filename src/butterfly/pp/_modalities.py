"""Modality specs: everything that differs between RNA, ATAC, protein and normalised expression.

A model is configured by two specs; the networks, loops and API are the same for every pair.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .._validation import ButterflyInputError
from ._accessibility import ATACPreprocessor
from ._expression import ADTPreprocessor, ExpressionPreprocessor, Preprocessor, RNAPreprocessor

_PREPROCESSORS: dict[str, type[Preprocessor]] = {
    "rna": RNAPreprocessor,
    "atac": ATACPreprocessor,
    "adt": ADTPreprocessor,
    "expression": ExpressionPreprocessor,
}


def check_modality_name(name) -> None:
    """Refuse a modality name that cannot name files in a model folder (``preprocessing_{name}.json``): it must
    be a non-empty string without path separators, control characters or a leading dot (``..``)."""
    bad = (
        not isinstance(name, str)
        or not name.strip()
        or name.startswith(".")
        or any(ch in name for ch in "/\\:")
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
        or len(name) > 100
    )
    if bad:
        raise ButterflyInputError(
            f"A modality name must be a short, non-empty string of letters, digits and '_', '-', '.' or spaces, "
            f"not starting with '.', without '/', '\\' or ':' (it names files in a saved model); got {name!r}. "
            "Use e.g. 'rna', 'atac', 'adt' or 'control'."
        )


def preprocessor_from_state(config: dict[str, Any], arrays: dict[str, Any]) -> Preprocessor:
    """Restore a fitted preprocessor saved with :meth:`~butterfly.pp.Preprocessor.state`."""
    kind = config.get("kind")
    if kind not in _PREPROCESSORS:
        raise ValueError(f"Unknown preprocessor kind {kind!r}; known: {sorted(_PREPROCESSORS)}.")
    return _PREPROCESSORS[kind].from_state(config, arrays)


@dataclass(frozen=True)
class ModalitySpec:
    """How one modality is preprocessed, encoded, decoded and scored.

    Parameters
    ----------
    name
        Key of the modality in the model (``"rna"``, ``"atac"``, ``"adt"``, or e.g. ``"control"``).
    preprocessing
        Preprocessor kind: ``"rna"``, ``"atac"``, ``"adt"`` or ``"expression"`` (used as given).
    preprocessing_params
        Keyword arguments of the preprocessor (e.g. ``{"n_top_genes": 3000}``).
    loss
        Reconstruction loss: ``"mse"`` or ``"bce"``.
    output
        Decoder output activation: ``"leaky_relu"``, ``"sigmoid"`` or ``"linear"``.
    hidden
        Hidden widths of the dense encoder before the 128-d embedding (decoder mirrors them).
    chromosome_blocked
        First encoder layer and last decoder layer split by chromosome (ATAC).
    mask_rate
        Fraction of input entries zeroed during training.
    kl_weight
        Weight of this modality's KL term; ``None`` means ``20 / n_features`` (paper).
    recon_weight
        Weight of this modality's reconstruction and translation losses in integrative training.

    Examples
    --------
    The presets are ``RNA``, ``ATAC``, ``ADT`` and ``EXPRESSION``; a variant is a copy with fields replaced:

    >>> import dataclasses, butterfly as bf
    >>> bf.pp.ATAC.loss, bf.pp.ATAC.mask_rate, bf.pp.ATAC.chromosome_blocked
    ('bce', 0.3, True)
    >>> rna_1000 = dataclasses.replace(bf.pp.RNA, preprocessing_params={"n_top_genes": 1000})
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:400], atac[:400], modalities=(rna_1000, "atac"))
    >>> model.preprocessors["rna"].n_features
    1000
    """

    name: str
    preprocessing: str
    loss: str
    output: str
    hidden: tuple[int, ...] = (256,)
    chromosome_blocked: bool = False
    mask_rate: float = 0.0
    kl_weight: float | None = None
    recon_weight: float = 1.0
    preprocessing_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_modality_name(self.name)
        if self.preprocessing not in _PREPROCESSORS:
            raise ValueError(
                f"preprocessing must be one of {sorted(_PREPROCESSORS)}, got {self.preprocessing!r}."
            )
        if self.loss not in ("mse", "bce"):
            raise ValueError(f"loss must be 'mse' or 'bce', got {self.loss!r}.")
        if self.output not in ("leaky_relu", "sigmoid", "linear"):
            raise ValueError(f"output must be 'leaky_relu', 'sigmoid' or 'linear', got {self.output!r}.")
        if self.loss == "bce" and self.output != "sigmoid":
            raise ValueError("a 'bce' loss needs a 'sigmoid' output.")
        if not 0 <= self.mask_rate < 1:
            raise ValueError(f"mask_rate must be in [0, 1), got {self.mask_rate}.")

    def make_preprocessor(self) -> Preprocessor:
        return _PREPROCESSORS[self.preprocessing](**self.preprocessing_params)

    def kl_weight_for(self, n_features: int) -> float:
        return self.kl_weight if self.kl_weight is not None else 20.0 / n_features

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModalitySpec:
        return cls(**{**data, "hidden": tuple(data.get("hidden", ()))})


RNA = ModalitySpec(
    "rna", "rna", loss="mse", output="leaky_relu", hidden=(256,), mask_rate=0.5, recon_weight=1.0
)
ATAC = ModalitySpec(
    "atac",
    "atac",
    loss="bce",
    output="sigmoid",
    hidden=(),
    chromosome_blocked=True,
    mask_rate=0.3,
    recon_weight=2.0,
)
ADT = ModalitySpec(
    "adt", "adt", loss="mse", output="leaky_relu", hidden=(128,), mask_rate=0.0, kl_weight=1 / 150
)
EXPRESSION = ModalitySpec(
    "expression", "expression", loss="mse", output="leaky_relu", hidden=(256,), mask_rate=0.5
)

PRESETS = {spec.name: spec for spec in (RNA, ATAC, ADT, EXPRESSION)}


def get_modality(modality: str | ModalitySpec) -> ModalitySpec:
    """Return the preset spec for a name (``"rna"``, ``"atac"``, ``"adt"``, ``"expression"``; ``"protein"``
    and ``"cite"`` name ``"adt"``) or a spec as is.

    Examples
    --------
    >>> import butterfly as bf
    >>> spec = bf.pp.get_modality("protein")
    >>> spec.name, spec.hidden, spec.mask_rate
    ('adt', (128,), 0.0)
    """
    if isinstance(modality, ModalitySpec):
        return modality
    key = str(modality).lower()
    if key in ("protein", "cite"):
        key = "adt"
    if key not in PRESETS:
        raise ButterflyInputError(
            f"Unknown modality {modality!r}. Use one of {sorted(PRESETS)}, or a ModalitySpec, e.g. "
            "dataclasses.replace(butterfly.pp.EXPRESSION, name='control')."
        )
    return PRESETS[key]
