"""The network of a two-modality translator: encoders, the shared translator, decoders and discriminators
(built from the layers of :mod:`butterfly.module`), its losses, and the device it runs on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ButterflyInputError
from ._layers import (
    NEGATIVE_SLOPE,
    ChromosomeBlockedDecoderLinear,
    ChromosomeBlockedEncoderLinear,
    Dropout,
    SparseRows,
    _Blocked,
    block,
)


class ModalitySpec(Protocol):
    """What the network reads of a modality's description (:class:`butterfly.pp.ModalitySpec` has it): its
    name, hidden widths, output activation and reconstruction loss."""

    name: str
    hidden: tuple[int, ...]
    output: str
    loss: str


#: Rows per generator of the latent draws that ``translate(n_samples=N)`` averages over (``latent_noise``).
DRAW_BLOCK = 256


class Encoder(nn.Module):
    """Input features -> 128-d embedding. ``codes`` given: chromosome-blocked first layer (ATAC)."""

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int],
        latent: int = 128,
        *,
        codes: Sequence[int] | None = None,
        chromosome_units: int = 32,
        dropout: float = 0.1,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        first_block = True
        if codes is not None:
            first = ChromosomeBlockedEncoderLinear(codes, chromosome_units)
            layers.append(first)
            if batch_norm:
                layers.append(nn.BatchNorm1d(first.n_chromosomes * chromosome_units))
            layers += [nn.LeakyReLU(NEGATIVE_SLOPE), Dropout(dropout)]
            widths = [first.n_chromosomes * chromosome_units, latent]
            first_block = False
        else:
            widths = [n_features, *hidden, latent]
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(
                block(n_in, n_out, dropout=dropout, batch_norm=batch_norm, sparse_input=first_block)
            )
            first_block = False
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor | SparseRows) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """128-d embedding -> features, mirroring the encoder. Returns pre-activation values (logits for ATAC)."""

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int],
        latent: int = 128,
        *,
        codes: Sequence[int] | None = None,
        chromosome_units: int = 32,
        dropout: float = 0.1,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if codes is not None:
            last = ChromosomeBlockedDecoderLinear(codes, chromosome_units)
            widths = [latent, last.n_chromosomes * chromosome_units]
        else:
            last = nn.Linear(([latent, *hidden][-1]), n_features)
            widths = [latent, *hidden]
        layers = [
            block(a, b, dropout=dropout, batch_norm=batch_norm)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        ]
        self.net = nn.Sequential(*layers, last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Translator(nn.Module):
    """The variational translator T.

    For each modality: a mean block and a log-variance block (Linear + LeakyReLU, 128-d). From a latent
    sample, one output block per target modality gives that modality's embedding. The output blocks are
    shared by both inputs: T(a->b) and T(b->b) use the same "to-b" block.
    """

    def __init__(
        self, names: Sequence[str], embedding: int = 128, latent: int = 128, *, batch_norm: bool = False
    ):
        super().__init__()
        self.latent = latent
        self.mean = nn.ModuleDict({n: block(embedding, latent, batch_norm=batch_norm) for n in names})
        self.logvar = nn.ModuleDict({n: block(embedding, latent, batch_norm=batch_norm) for n in names})
        self.heads = nn.ModuleDict({n: block(latent, embedding, batch_norm=batch_norm) for n in names})

    def encode(self, h: torch.Tensor, source: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean[source](h), self.logvar[source](h)

    @staticmethod
    def sample(
        mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(logvar / 2) * eps

    def forward(self, z: torch.Tensor, target: str) -> torch.Tensor:
        return self.heads[target](z)


class Discriminator(nn.Module):
    """Linear(128, 128) -> LeakyReLU -> Linear(128, 1); returns logits (the Sigmoid lives in the loss)."""

    def __init__(self, embedding: int = 128, hidden: int = 128, *, layers: int = 2) -> None:
        super().__init__()
        if layers == 2:
            self.net = nn.Sequential(
                nn.Linear(embedding, hidden), nn.LeakyReLU(NEGATIVE_SLOPE), nn.Linear(hidden, 1)
            )
        elif layers == 1:  # the authors' code
            self.net = nn.Linear(embedding, 1)
        else:
            raise ValueError(f"discriminator layers must be 1 or 2, got {layers}.")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(-1)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)).

    ``"mean"`` averages over cells and latent dimensions (paper eq. 4 as the authors' code computes it);
    ``"sum"`` sums over latent dimensions and averages over cells (the textbook per-cell ELBO term).
    """
    mean, logvar = mean.float(), logvar.float()  # float32 also under bfloat16 autocast
    terms = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp())
    if reduction == "mean":
        return terms.mean()
    if reduction == "sum":
        return terms.sum(dim=1).mean()
    raise ValueError(f"kl reduction must be 'mean' or 'sum', got {reduction!r}.")


def activate(spec: ModalitySpec, raw: torch.Tensor) -> torch.Tensor:
    """The decoder's output activation of a modality, applied to its pre-activation values."""
    if spec.output == "sigmoid":
        return torch.sigmoid(raw)
    if spec.output == "leaky_relu":
        return F.leaky_relu(raw, 0.01)
    return raw


class _BCEWithLogits(torch.autograd.Function):
    """Mean binary cross-entropy on logits, ``mean(softplus(x) - x * y)``: the same value as
    ``F.binary_cross_entropy_with_logits`` in two passes over ``x`` (no ``log_sigmoid`` buffer) and a
    backward of ``sigmoid(x) - y``; forward + backward 1.6x faster on 256 x 5,377 ATAC logits on a CPU."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, target)
        cross = torch.dot(logits.reshape(-1), target.reshape(-1))
        return (F.softplus(logits).sum() - cross) / logits.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, target = ctx.saved_tensors
        return torch.sigmoid(logits).sub_(target).mul_(grad / logits.numel()), None


def reconstruction_loss(spec: ModalitySpec, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A modality's reconstruction loss (BCE on logits or MSE after the activation), averaged."""
    raw = raw.float()  # losses in float32 also under bfloat16 autocast
    if raw.dim() == 2 and raw.t().is_contiguous() and target.t().is_contiguous():
        # both feature-major: the same mean over the contiguous transposes runs about 2x faster
        raw, target = raw.t(), target.t()
    if spec.loss == "bce":
        return _BCEWithLogits.apply(raw, target.to(raw.dtype))
    return F.mse_loss(activate(spec, raw), target)


class BatchCovariates(nn.Module):
    """Batch covariates of both modalities' encoders and decoders, as scVI and totalVI condition theirs.

    For each modality, a learnt 128-d vector per batch is added to the encoder's output (the input of the
    translator's mean and log-variance blocks) and to the decoder's input: the same as concatenating the
    batch's one-hot to those layers' inputs (a one-hot times a weight matrix is one of its columns). The
    vectors start at zero, so an untrained model is the model without covariates. ``codes`` holds, per
    modality, the batch of each row of the current minibatch (set by the training loop and by inference);
    a code equal to the number of batches stands for a batch the model does not know, and takes the mean
    of the known batches' vectors. With ``codes`` None the covariates are not applied.
    """

    def __init__(self, names: Sequence[str], n_batches: int, width: int = 128) -> None:
        super().__init__()
        self.n_batches = int(n_batches)
        self.encoder_shift = nn.ModuleDict({n: nn.Embedding(n_batches, width) for n in names})
        self.decoder_shift = nn.ModuleDict({n: nn.Embedding(n_batches, width) for n in names})
        for table in (*self.encoder_shift.values(), *self.decoder_shift.values()):
            nn.init.zeros_(table.weight)
        self.codes: dict[str, torch.Tensor] | None = None

    def shift(self, table: nn.Embedding, name: str, rows: int) -> torch.Tensor | None:
        if self.codes is None or name not in self.codes:
            return None
        codes = self.codes[name]
        if codes.shape[0] != rows:
            raise ValueError(f"{rows} rows but batch codes for {codes.shape[0]}")
        weight = torch.cat([table.weight, table.weight.mean(dim=0, keepdim=True)])
        return weight[codes]

    def grow(self, n_batches: int) -> None:
        """Room for ``n_batches`` batches: the known batches' vectors kept, new ones at the known mean."""
        for tables in (self.encoder_shift, self.decoder_shift):
            for name, table in list(tables.items()):
                old = table.weight.data
                new = nn.Embedding(n_batches, old.shape[1]).to(old.device)
                new.weight.data[: old.shape[0]] = old
                new.weight.data[old.shape[0] :] = old.mean(dim=0, keepdim=True)
                tables[name] = new
        self.n_batches = int(n_batches)


class _ShiftOutput:
    """Forward hook of an encoder: its output plus the rows' batch vectors. An object, not a closure, so that
    a deep copy of the network (``map_query``) gets hooks that read the copy's covariates."""

    def __init__(self, covariates: BatchCovariates, name: str) -> None:
        self.covariates, self.name = covariates, name

    def __call__(self, module, inputs, output):
        shift = self.covariates.shift(self.covariates.encoder_shift[self.name], self.name, output.shape[0])
        return output if shift is None else output + shift.to(output.dtype)


class _ShiftInput(_ShiftOutput):
    """Forward pre-hook of a decoder: its input plus the rows' batch vectors."""

    def __call__(self, module, inputs):
        z = inputs[0]
        shift = self.covariates.shift(self.covariates.decoder_shift[self.name], self.name, z.shape[0])
        return None if shift is None else (z + shift.to(z.dtype), *inputs[1:])


class TranslatorNetwork(nn.Module):
    """Encoders, decoders, the shared translator and the discriminators for two modalities."""

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        n_features: dict[str, int],
        chromosome_codes: dict[str, list[int] | None],
        *,
        dropout: float = 0.1,
        batch_norm: bool = False,
        discriminator_layers: int = 2,
        n_batches: int = 0,
    ) -> None:
        super().__init__()
        self.specs = {s.name: s for s in specs}
        self.names = [s.name for s in specs]
        kwargs = {"dropout": dropout, "batch_norm": batch_norm}
        self.encoders = nn.ModuleDict(
            {
                s.name: Encoder(n_features[s.name], s.hidden, codes=chromosome_codes.get(s.name), **kwargs)
                for s in specs
            }
        )
        self.decoders = nn.ModuleDict(
            {
                s.name: Decoder(n_features[s.name], s.hidden, codes=chromosome_codes.get(s.name), **kwargs)
                for s in specs
            }
        )
        self.translator = Translator(self.names, batch_norm=batch_norm)
        self.discriminators = nn.ModuleDict(
            {n: Discriminator(layers=discriminator_layers) for n in self.names}
        )
        # chromosome-blocked modalities read and write feature-major tensors fastest
        self.feature_major = frozenset(n for n, c in chromosome_codes.items() if c is not None)
        #: batch covariates (BatchCovariates), or None for the paper's model; built last, so that the
        #: other weights draw the same random numbers with or without them
        self.covariates = BatchCovariates(self.names, n_batches) if n_batches else None
        if self.covariates is not None:
            for name in self.names:
                self.encoders[name].register_forward_hook(_ShiftOutput(self.covariates, name))
                self.decoders[name].register_forward_pre_hook(_ShiftInput(self.covariates, name))

    @contextlib.contextmanager
    def batches(self, codes: dict[str, torch.Tensor] | None) -> Iterator[None]:
        """Within: the batch covariates read ``codes`` (per modality, each row's batch); a no-op for a
        network without covariates."""
        if self.covariates is None:
            yield
            return
        before, self.covariates.codes = self.covariates.codes, codes
        try:
            yield
        finally:
            self.covariates.codes = before

    def chromosome_orders(self) -> dict[str, np.ndarray]:
        """Column order that groups each chromosome-blocked modality's features by chromosome (the layers'
        row order), for the modalities whose features are not so grouped already."""
        orders = {}
        for name in self.feature_major:
            first = next(m for m in self.encoders[name].modules() if isinstance(m, _Blocked))
            if not first.sorted_already:
                orders[name] = first.order.cpu().numpy()
        return orders

    @contextlib.contextmanager
    def chromosome_io(self) -> Iterator[None]:
        """Within: the chromosome-blocked layers read and write features in chromosome order (the columns
        of :meth:`chromosome_orders`), which saves a row gather per layer and pass, forward and backward."""
        layers = [m for m in self.modules() if isinstance(m, _Blocked)]
        for layer in layers:
            layer.chromosome_io = True
        try:
            yield
        finally:
            for layer in layers:
                layer.chromosome_io = False

    def generator_parameters(self) -> list[nn.Parameter]:
        covariates = [] if self.covariates is None else list(self.covariates.parameters())
        return [*self.encoders.parameters(), *self.decoders.parameters(), *self.translator.parameters(),
                *covariates]  # fmt: skip

    def modality_parameters(self, name: str) -> list[nn.Parameter]:
        t = self.translator
        parts = [self.encoders[name], self.decoders[name], t.mean[name], t.logvar[name], t.heads[name]]
        if self.covariates is not None:
            parts += [self.covariates.encoder_shift[name], self.covariates.decoder_shift[name]]
        return [p for part in parts for p in part.parameters()]

    def activate(self, name: str, raw: torch.Tensor) -> torch.Tensor:
        return activate(self.specs[name], raw)

    def reconstruction_loss(self, name: str, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(self.specs[name], raw, target)

    @torch.no_grad()
    def latent_mean(self, x: torch.Tensor, source: str) -> torch.Tensor:
        return self.translator.encode(self.encoders[source](x), source)[0]

    @torch.no_grad()
    def translate(
        self, x: torch.Tensor, source: str, target: str, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Translation without mask or dropout: returns (output, latent mean). The output is decoded from the
        latent mean, or, given standard-normal ``noise`` of shape (draws, cells, latent), the mean of the
        outputs decoded from the latent draws ``mean + exp(logvar / 2) * noise[i]``."""
        mean, logvar = self.translator.encode(self.encoders[source](x), source)
        if noise is None:
            return self.activate(target, self.decoders[target](self.translator(mean, target))), mean
        total, scale = None, torch.exp(logvar / 2)
        for eps in noise.to(mean.dtype):
            out = self.activate(target, self.decoders[target](self.translator(mean + scale * eps, target)))
            total = out if total is None else total.add_(out)
        return total.div_(len(noise)), mean


def latent_noise(
    seed: int, start: int, stop: int, n_samples: int, latent: int, device: torch.device,
    blocks: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Standard-normal draws, shape (n_samples, stop - start, latent), for rows ``start:stop`` of a translation.

    Each block of ``DRAW_BLOCK`` rows draws from a generator of its own, seeded by ``seed`` and the block's
    number, so a row's draws depend on the seed and the row's position alone, not on the batch it is
    translated in. ``blocks`` (a dict kept across calls for consecutive batches) holds the drawn blocks, so
    that batches smaller than a block do not draw it again; blocks before ``start`` are dropped from it."""
    blocks = {} if blocks is None else blocks
    for number in [n for n in blocks if n < start // DRAW_BLOCK]:
        del blocks[number]
    parts = []
    for number in range(start // DRAW_BLOCK, (stop - 1) // DRAW_BLOCK + 1):
        if number not in blocks:
            generator = torch.Generator(device=device)
            state = np.random.SeedSequence([seed % (1 << 64), number]).generate_state(1, np.uint64)[0]
            generator.manual_seed(int(state))
            blocks[number] = torch.randn((n_samples, DRAW_BLOCK, latent), generator=generator, device=device)
        first = number * DRAW_BLOCK
        parts.append(blocks[number][:, max(start, first) - first : min(stop, first + DRAW_BLOCK) - first])
    return torch.cat(parts, 1)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ButterflyInputError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (a torch device), got {device!r}."
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise ButterflyInputError(
            f"device={str(device)!r}: butterfly runs on 'cpu' or 'cuda' (NVIDIA GPUs) only; other torch devices "
            "(Apple's 'mps', 'xpu', ...) are untested. Use device='cpu'."
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ButterflyInputError(
            f"device={str(device)!r} was requested but torch sees no CUDA GPU; use device='auto' or 'cpu'."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ButterflyInputError(
            f"device={str(device)!r} was requested but torch sees {torch.cuda.device_count()} CUDA GPU(s), "
            f"numbered from 0; use 'cuda:0' to 'cuda:{torch.cuda.device_count() - 1}'."
        )
    return device
