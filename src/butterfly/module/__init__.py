"""The torch layer: the networks (encoders, translator, decoders, discriminators), their layers and losses.
It imports torch and numpy only: no AnnData, no pandas."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

#: Each public name and the module that defines it.
_EXPORTS = {
    "ChromosomeBlockedDecoderLinear": "_layers",
    "ChromosomeBlockedEncoderLinear": "_layers",
    "Decoder": "_network",
    "Discriminator": "_network",
    "Encoder": "_network",
    "InputLinear": "_layers",
    "SparseRows": "_layers",
    "Translator": "_network",
    "TranslatorNetwork": "_network",
    "resolve_device": "_network",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "ChromosomeBlockedDecoderLinear",
    "ChromosomeBlockedEncoderLinear",
    "Decoder",
    "Discriminator",
    "Encoder",
    "InputLinear",
    "SparseRows",
    "Translator",
    "TranslatorNetwork",
    "resolve_device",
]

if TYPE_CHECKING:
    from ._layers import (
        ChromosomeBlockedDecoderLinear,
        ChromosomeBlockedEncoderLinear,
        InputLinear,
        SparseRows,
    )
    from ._network import Decoder, Discriminator, Encoder, Translator, TranslatorNetwork, resolve_device
