"""Torch modules of scButterfly. No AnnData, no numpy arrays in forward passes, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.01  # LeakyReLU slope a (paper: 0.01)


def block(n_in: int, n_out: int, *, dropout: float = 0.0, batch_norm: bool = False) -> nn.Sequential:
    """Linear -> [BatchNorm] -> LeakyReLU -> [Dropout]."""
    layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(nn.LeakyReLU(NEGATIVE_SLOPE))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class _Blocked(nn.Module):
    """Shared layout of the chromosome-blocked layers.

    Features (peaks) keep the user's order; ``codes[j]`` is the chromosome of feature ``j``. Internally
    each chromosome's features occupy one row of a ``[n_chromosomes, max_features]`` grid, padded with a
    dummy slot, so all chromosomes are processed by one batched matrix product instead of a Python loop.
    Padded weights start at zero and receive zero gradient, so the layer computes exactly the
    per-chromosome linear maps with no weights between chromosomes.
    """

    def __init__(self, codes: Sequence[int]) -> None:
        super().__init__()
        codes = torch.as_tensor(list(codes), dtype=torch.long)
        n_features = codes.numel()
        n_chrom = int(codes.max()) + 1
        counts = torch.bincount(codes, minlength=n_chrom)
        if (counts == 0).any():
            raise ValueError("Every chromosome code from 0 to max(codes) must have at least one feature.")
        self.n_features, self.n_chromosomes, self.width = n_features, n_chrom, int(counts.max())
        order = torch.argsort(codes, stable=True)
        rank = torch.empty_like(order)
        starts = torch.cumsum(counts, 0) - counts
        rank[order] = torch.arange(n_features) - starts[codes[order]]
        slot = codes * self.width + rank  # grid position of each feature
        # grid slot -> feature index (n_features = the zero padding column)
        gather = torch.full((n_chrom * self.width,), n_features, dtype=torch.long)
        gather[slot] = torch.arange(n_features)
        self.register_buffer("slot", slot, persistent=False)
        self.register_buffer("gather", gather, persistent=False)
        self.register_buffer("valid", (gather < n_features).view(n_chrom, self.width), persistent=False)
        self.register_buffer("counts", counts, persistent=False)


class ChromosomeBlockedEncoderLinear(_Blocked):
    """Map each chromosome's features to ``units`` outputs by its own linear layer; concatenate.

    Input ``[batch, n_features]`` (user order); output ``[batch, n_chromosomes * units]`` (chromosome order).
    """

    def __init__(self, codes: Sequence[int], units: int = 32) -> None:
        super().__init__(codes)
        self.units = units
        self.weight = nn.Parameter(torch.zeros(self.n_chromosomes, self.width, units))
        self.bias = nn.Parameter(torch.zeros(self.n_chromosomes, units))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # nn.Linear's default init per chromosome: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = its peaks.
        bound = (1.0 / self.counts.float().sqrt()).view(-1, 1, 1)
        self.weight.uniform_(-1, 1).mul_(bound).mul_(self.valid.unsqueeze(-1))
        self.bias.uniform_(-1, 1).mul_(bound.view(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.pad(x, (0, 1)).index_select(1, self.gather).view(x.shape[0], self.n_chromosomes, self.width)
        out = torch.einsum("bcw,cwu->bcu", grid, self.weight) + self.bias
        return out.reshape(x.shape[0], -1)


class ChromosomeBlockedDecoderLinear(_Blocked):
    """Map each chromosome's ``units`` inputs to that chromosome's features by its own linear layer.

    Input ``[batch, n_chromosomes * units]``; output ``[batch, n_features]`` in the user's feature order.
    """

    def __init__(self, codes: Sequence[int], units: int = 32) -> None:
        super().__init__(codes)
        self.units = units
        self.weight = nn.Parameter(torch.zeros(self.n_chromosomes, units, self.width))
        self.bias = nn.Parameter(torch.zeros(self.n_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.units)
        self.weight.uniform_(-bound, bound).mul_(self.valid.unsqueeze(1))
        self.bias.uniform_(-bound, bound)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # [chrom, width, batch] = W^T @ z^T per chromosome: the grid rows are then contiguous features, so
        # picking the real features is one row gather with no full-size transpose copies.
        zt = z.t().reshape(self.n_chromosomes, self.units, z.shape[0])
        grid = torch.bmm(self.weight.transpose(1, 2), zt)
        return grid.reshape(-1, z.shape[0]).index_select(0, self.slot).t() + self.bias

    def chromosome_weight(self, chromosome: int) -> torch.Tensor:
        """The ``[units, n_features_of_chromosome]`` weight of one chromosome, features in user order."""
        features = torch.nonzero(
            self.gather.view(self.n_chromosomes, self.width)[chromosome] < self.n_features
        )
        return self.weight[chromosome][:, features.ravel()]


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
        if codes is not None:
            first = ChromosomeBlockedEncoderLinear(codes, chromosome_units)
            layers.append(first)
            if batch_norm:
                layers.append(nn.BatchNorm1d(first.n_chromosomes * chromosome_units))
            layers += [nn.LeakyReLU(NEGATIVE_SLOPE), nn.Dropout(dropout)]
            widths = [first.n_chromosomes * chromosome_units, latent]
        else:
            widths = [n_features, *hidden, latent]
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(block(n_in, n_out, dropout=dropout, batch_norm=batch_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
