"""Torch layers of scButterfly: sparse-input and chromosome-blocked linear layers, dropout, the dense block.
The networks built from them are in :mod:`butterfly.module`. No AnnData, no numpy arrays in forward passes,
no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.01  # LeakyReLU slope a (paper: 0.01)


def _cpu_autocast_enabled() -> bool:
    """Whether CPU autocast is on. ``torch.is_autocast_enabled("cpu")`` takes a device only from torch 2.4;
    earlier releases (the supported ones start at 2.1) name it ``is_autocast_cpu_enabled``."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled()


@dataclass(frozen=True)
class SparseRows:
    """A minibatch of sparse rows (CSR): entry ``k`` is ``values[k]`` at row ``rows[k]``, column ``columns[k]``;
    row ``i``'s entries start at ``offsets[i]``. Encoders' first layers read it without densifying."""

    rows: torch.Tensor
    columns: torch.Tensor
    values: torch.Tensor
    offsets: torch.Tensor
    shape: tuple[int, int]

    def dense(self) -> torch.Tensor:
        out = torch.zeros(self.shape, dtype=self.values.dtype, device=self.values.device)
        return out.index_put_((self.rows, self.columns), self.values, accumulate=True)


class InputLinear(nn.Module):
    """A linear layer that also takes :class:`SparseRows`: then only the stored entries are multiplied (an
    embedding-bag sum of weight rows).

    The weight is stored input-major, ``weight[j]`` holding input feature ``j``'s ``out_features`` weights
    (the transpose of ``nn.Linear.weight``, as the chromosome-blocked layers store theirs), so neither the
    sparse product nor its backward pass copies the weight into another layout: the embedding bag reads its
    rows and returns their gradient in place. It is initialised as ``nn.Linear`` is, from the same draws.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        reference = nn.Linear(self.in_features, self.out_features, device=self.weight.device)
        self.weight.copy_(reference.weight.t())
        self.bias.copy_(reference.bias)

    def forward(self, x: torch.Tensor | SparseRows) -> torch.Tensor:
        if not isinstance(x, SparseRows):
            return torch.addmm(self.bias, x, self.weight)
        out = F.embedding_bag(x.columns, self.weight, x.offsets, mode="sum", per_sample_weights=x.values)
        return out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features} (weight stored input-major)"


class Dropout(nn.Dropout):
    """``nn.Dropout`` (inverted: kept units scaled by ``1 / (1 - p)``) with its mask drawn as ``rand >= p``.

    Same distribution, drawn from the same global torch generator; on a CPU, forward + backward take 40% less
    time than torch's Bernoulli sampler on the network's 256 x 640 activations. Not in place.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return torch.zeros_like(x)
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def block(
    n_in: int, n_out: int, *, dropout: float = 0.0, batch_norm: bool = False, sparse_input: bool = False
) -> nn.Sequential:
    """Linear -> [BatchNorm] -> LeakyReLU -> [Dropout]. ``sparse_input``: the Linear also takes SparseRows."""
    layers: list[nn.Module] = [InputLinear(n_in, n_out) if sparse_input else nn.Linear(n_in, n_out)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(nn.LeakyReLU(NEGATIVE_SLOPE))
    if dropout > 0:
        layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


CHUNK_WIDTH = 128  # features per block of the chromosome-blocked layers' batched matrix product


def _gather_rows(source: torch.Tensor, index: torch.Tensor, blank: torch.Tensor) -> torch.Tensor:
    out = source.index_select(0, index)
    if blank.numel():
        out.index_fill_(0, blank, 0)
    return out


class _RowGather(torch.autograd.Function):
    """Rows of ``source`` picked by ``index``, rows ``blank`` of the result set to zero.

    ``index`` never picks a row twice, so the backward pass is a gather too (``inverse``, with the rows that
    were not picked in ``inverse_blank``), not the zero-fill and scatter-add of ``index_select``'s backward.
    """

    @staticmethod
    def forward(ctx, source, index, blank, inverse, inverse_blank):
        ctx.save_for_backward(inverse, inverse_blank)
        return _gather_rows(source, index, blank)

    @staticmethod
    def backward(ctx, grad):
        inverse, inverse_blank = ctx.saved_tensors
        return _gather_rows(grad, inverse, inverse_blank), None, None, None, None


class _Blocked(nn.Module):
    """Shared layout of the chromosome-blocked layers.

    Features (peaks) come in the user's order; ``codes[j]`` is the chromosome of feature ``j``. Weights are
    stored one row of ``units`` per feature, rows sorted by chromosome (stable, so each chromosome's rows keep
    the user's order): chromosome ``c`` owns rows ``starts[c]:starts[c] + counts[c]``. Two ways compute the
    same per-chromosome linear maps, with no weights between chromosomes:

    - ``batched=False`` (the default on CPU in float32): one matrix product per chromosome on those row
      slices, between one row gather into chromosome order and one back. On a CPU, 20-odd GEMMs of a few
      hundred rows run at full speed and this is the fastest form measured (``benchmarks/blocked_linear.py``).
    - ``batched=True`` (the default on GPUs and under bfloat16 autocast): each chromosome is cut into chunks
      of at most ``chunk_width`` rows, padded with zero rows, and all chunks go through one batched product:
      one kernel launch (and one cast) instead of dozens.

    The row gathers run backward as gathers too (:class:`_RowGather`), never as zero-fill and scatter-add.

    With ``chromosome_io`` set (training does so, see :meth:`TranslatorNetwork.chromosome_io`), inputs and
    outputs come in chromosome order instead of the user's: no row gathers at all.
    """

    def __init__(self, codes: Sequence[int], units: int, chunk_width: int = CHUNK_WIDTH) -> None:
        super().__init__()
        codes = torch.as_tensor(list(codes), dtype=torch.long)
        n_features = codes.numel()
        n_chrom = int(codes.max()) + 1
        counts = torch.bincount(codes, minlength=n_chrom)
        if (counts == 0).any():
            raise ValueError("Every chromosome code from 0 to max(codes) must have at least one feature.")
        self.n_features, self.n_chromosomes, self.units = n_features, n_chrom, units
        self.batched: bool | None = None  # None: per chromosome on CPUs in float32, else batched
        self.chromosome_io = False  # True: features in and out in chromosome order, not the user's
        order = torch.argsort(codes, stable=True)  # sorted row -> user feature
        position = torch.empty_like(order)
        position[order] = torch.arange(n_features)  # user feature -> sorted row
        self.sorted_already = bool(torch.equal(order, torch.arange(n_features)))  # grouped by chromosome
        self.starts = (torch.cumsum(counts, 0) - counts).tolist()
        self.sizes = counts.tolist()
        # chunks of the batched form: slot -> sorted row (-1: padding)
        chunk_width = min(chunk_width, int(counts.max()))
        slot_row, chunk_chromosome = [], []
        for c, (first, size) in enumerate(zip(self.starts, self.sizes, strict=True)):
            for begin in range(first, first + size, chunk_width):
                part = list(range(begin, min(begin + chunk_width, first + size)))
                slot_row += part + [-1] * (chunk_width - len(part))
                chunk_chromosome.append(c)
        slot_row = torch.tensor(slot_row)
        present = slot_row >= 0
        row_slot = torch.empty(n_features, dtype=torch.long)
        row_slot[slot_row[present]] = torch.nonzero(present).ravel()
        self.n_chunks, self.chunk_width = len(chunk_chromosome), chunk_width
        none = torch.zeros(0, dtype=torch.long)
        buffers = {
            "codes": codes,
            "sorted_codes": codes[order],
            "counts": counts,
            "order": order,
            "position": position,
            "none": none,
            "chunk_chromosome": torch.tensor(chunk_chromosome),
            "slot_row": torch.where(present, slot_row, 0),
            "slot_blank": torch.nonzero(~present).ravel(),
            "row_slot": row_slot,
            # the same chunk grid indexed by user feature
            "slot_feature": torch.where(present, order[slot_row.clamp(min=0)], 0),
            "feature_slot": row_slot[position],
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    def use_batched(self, tensor: torch.Tensor) -> bool:
        if self.batched is not None:
            return self.batched
        # under bfloat16 autocast the per-chromosome form casts every slice apart; batched then wins on CPU too
        return tensor.device.type != "cpu" or _cpu_autocast_enabled()

    def in_chromosome_order(self) -> bool:
        """Whether inputs and outputs are in chromosome order (then user and sorted rows are the same)."""
        return self.sorted_already or self.chromosome_io

    def sorted_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``[n_features, ...]`` in user order -> chromosome-sorted order."""
        if self.in_chromosome_order():
            return rows
        return _RowGather.apply(rows, self.order, self.none, self.position, self.none)

    def user_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``[n_features, ...]`` in chromosome-sorted order -> user order."""
        if self.in_chromosome_order():
            return rows
        return _RowGather.apply(rows, self.position, self.none, self.order, self.none)

    def chunks(self, rows: torch.Tensor, *, user_order: bool = False) -> torch.Tensor:
        """``[n_features, ...]`` (sorted order, or user order) -> ``[n_chunks, chunk_width, ...]``, padding 0."""
        user_order = user_order and not self.in_chromosome_order()
        index, inverse = (
            (self.slot_feature, self.feature_slot) if user_order else (self.slot_row, self.row_slot)
        )
        grid = _RowGather.apply(rows, index, self.slot_blank, inverse, self.none)
        return grid.view(self.n_chunks, self.chunk_width, *rows.shape[1:])

    def chunks_to_user_rows(self, grid: torch.Tensor) -> torch.Tensor:
        """``[n_chunks, chunk_width, ...]`` -> ``[n_features, ...]`` in user order."""
        rows = grid.reshape(self.n_chunks * self.chunk_width, *grid.shape[2:])
        if self.in_chromosome_order():
            return _RowGather.apply(rows, self.row_slot, self.none, self.slot_row, self.slot_blank)
        return _RowGather.apply(rows, self.feature_slot, self.none, self.slot_feature, self.slot_blank)

    def chromosome_slices(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The sorted-order rows of each chromosome (views; one split, whose backward is one concatenation)."""
        return torch.split(rows, self.sizes)

    def chromosome_weight(self, chromosome: int) -> torch.Tensor:
        """The ``[n_features_of_chromosome, units]`` weight rows of one chromosome, features in user order."""
        return self.weight[self.starts[chromosome] : self.starts[chromosome] + self.sizes[chromosome]]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Format 1 stored one zero-padded [chromosome, width, units] grid: keep such files loadable.
        key = prefix + "weight"
        if key in state_dict and state_dict[key].dim() == 3:
            self._convert_format_1(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _padded_grid_rows(self, width: int) -> torch.Tensor:
        """Row of each sorted row in format 1's ``[chromosome * width]`` grid: chromosome, then rank in it."""
        starts = torch.tensor(self.starts, device=self.counts.device)
        rank = torch.arange(self.n_features, device=starts.device) - torch.repeat_interleave(
            starts, self.counts
        )
        return self.codes[self.order] * width + rank

    def _convert_format_1(self, state_dict, prefix) -> None:
        raise NotImplementedError


class ChromosomeBlockedEncoderLinear(_Blocked):
    """Map each chromosome's features to ``units`` outputs by its own linear layer; concatenate.

    Input ``[batch, n_features]`` (user order) or :class:`SparseRows`; output
    ``[batch, n_chromosomes * units]`` (chromosome order). Dense input is read fastest feature-major
    (``x.t()`` contiguous), as training minibatches are.
    """

    def __init__(self, codes: Sequence[int], units: int = 32, chunk_width: int = CHUNK_WIDTH) -> None:
        super().__init__(codes, units, chunk_width)
        self.weight = nn.Parameter(torch.empty(self.n_features, units))  # rows in chromosome order
        self.bias = nn.Parameter(torch.empty(self.n_chromosomes, units))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # nn.Linear's default init per chromosome: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = its features.
        bound = 1.0 / self.counts.float().sqrt()
        self.weight.uniform_(-1, 1).mul_(bound[self.codes[self.order]].unsqueeze(1))
        self.bias.uniform_(-1, 1).mul_(bound.unsqueeze(1))

    def forward(self, x: torch.Tensor | SparseRows) -> torch.Tensor:
        if isinstance(x, SparseRows):
            return self._forward_sparse(x)
        batch = x.shape[0]
        if self.use_batched(x):
            inputs = self.chunks(x.t(), user_order=True)  # [chunks, width, batch]
            out = torch.bmm(self.chunks(self.weight).transpose(1, 2), inputs)  # [chunks, units, batch]
            if self.n_chunks > self.n_chromosomes:  # sum the chunks of each chromosome
                zeros = out.new_zeros(self.n_chromosomes, self.units, batch)
                out = zeros.index_add(0, self.chunk_chromosome, out)
            out = out.view(self.n_chromosomes * self.units, batch)
        else:
            inputs = self.sorted_rows(x.t())  # [features, batch], chromosome order
            parts = zip(self.chromosome_slices(self.weight), self.chromosome_slices(inputs), strict=True)
            out = torch.cat([weight.t() @ rows for weight, rows in parts])  # [chromosomes * units, batch]
        return out.t() + self.bias.view(-1)

    def _forward_sparse(self, x: SparseRows) -> torch.Tensor:
        """Sum of each stored entry times its feature's weight row into its (cell, chromosome) output.

        A gather and a scatter-add, both backward too: no sort, 2-3x faster forward + backward than an
        embedding bag per (cell, chromosome), whose bags must first be sorted."""
        if self.in_chromosome_order():
            codes, rows = self.sorted_codes[x.columns], x.columns
        else:
            codes, rows = self.codes[x.columns], self.position[x.columns]
        bags = x.rows * self.n_chromosomes + codes
        terms = self.weight.index_select(0, rows) * x.values.unsqueeze(1)
        out = terms.new_zeros(x.shape[0] * self.n_chromosomes, self.units).index_add_(0, bags, terms)
        return out.view(x.shape[0], -1) + self.bias.view(-1)

    def _convert_format_1(self, state_dict, prefix) -> None:
        grid = state_dict[prefix + "weight"]  # [chromosome, width, units]
        state_dict[prefix + "weight"] = grid.reshape(-1, grid.shape[2])[self._padded_grid_rows(grid.shape[1])]


class _PerChromosomeDecode(torch.autograd.Function):
    """``[features, batch]`` rows, chromosome order: ``bias + weight_c @ z_c.T`` per chromosome ``c``.

    Each product writes its rows of the output in place, forward and backward, instead of a concatenation
    of separate products (which copies the largest tensor of the network once more each way). Computes in
    ``z``'s dtype (as autocast would), returns gradients in the parameters' dtypes.
    """

    @staticmethod
    def forward(ctx, z, weight, bias, sizes):
        ctx.dtypes = weight.dtype, bias.dtype
        weight, bias = weight.to(z.dtype), bias.to(z.dtype)
        ctx.save_for_backward(z, weight)
        ctx.sizes = sizes
        units = z.shape[1] // len(sizes)
        out = z.new_empty(weight.shape[0], z.shape[0])
        parts = zip(weight.split(sizes), bias.split(sizes), z.t().split(units), out.split(sizes), strict=True)
        for weight_c, bias_c, z_c, out_c in parts:
            torch.addmm(bias_c.unsqueeze(1), weight_c, z_c, out=out_c)
        return out

    @staticmethod
    def backward(ctx, grad):
        z, weight = ctx.saved_tensors
        sizes, units = ctx.sizes, z.shape[1] // len(ctx.sizes)
        grad = grad.to(z.dtype).contiguous()
        need_z, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_z = z.new_empty(z.shape[1], z.shape[0]) if need_z else None
        grad_weight = torch.empty_like(weight) if need_weight else None
        none = [None] * len(sizes)
        parts = zip(
            grad.split(sizes), weight.split(sizes), z.t().split(units),
            grad_z.split(units) if need_z else none, grad_weight.split(sizes) if need_weight else none,
            strict=True,
        )  # fmt: skip
        for grad_c, weight_c, z_c, grad_z_c, grad_weight_c in parts:
            if need_z:
                torch.mm(weight_c.t(), grad_c, out=grad_z_c)
            if need_weight:
                torch.mm(grad_c, z_c.t(), out=grad_weight_c)
        return (
            grad_z.t() if need_z else None,
            grad_weight.to(ctx.dtypes[0]) if need_weight else None,
            grad.sum(dim=1).to(ctx.dtypes[1]) if need_bias else None,
            None,
        )


class ChromosomeBlockedDecoderLinear(_Blocked):
    """Map each chromosome's ``units`` inputs to that chromosome's features by its own linear layer.

    Input ``[batch, n_chromosomes * units]``; output ``[batch, n_features]`` in the user's feature order,
    feature-major in memory (its ``.t()`` is contiguous).
    """

    def __init__(self, codes: Sequence[int], units: int = 32, chunk_width: int = CHUNK_WIDTH) -> None:
        super().__init__(codes, units, chunk_width)
        self.weight = nn.Parameter(torch.empty(self.n_features, units))  # rows in chromosome order
        self.bias = nn.Parameter(torch.empty(self.n_features))  # chromosome order
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.units)
        self.weight.uniform_(-bound, bound)
        self.bias.uniform_(-bound, bound)

    def feature_bias(self) -> torch.Tensor:
        """The bias of each feature, user order."""
        return self.bias[self.position]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[0]
        if self.use_batched(z):
            inputs = z.view(batch, self.n_chromosomes, self.units).index_select(1, self.chunk_chromosome)
            # [chunks, width, batch] = bias + W @ z per chunk, the bias added inside the batched product
            bias = self.chunks(self.bias.unsqueeze(1))
            grid = torch.baddbmm(bias, self.chunks(self.weight), inputs.permute(1, 2, 0))
            return self.chunks_to_user_rows(grid).t()
        rows = _PerChromosomeDecode.apply(z, self.weight, self.bias, self.sizes)  # [features, batch], sorted
        return self.user_rows(rows).t()  # -> user order, transposed

    def _convert_format_1(self, state_dict, prefix) -> None:
        grid = state_dict[prefix + "weight"]  # [chromosome, units, width]
        rows = grid.transpose(1, 2).reshape(-1, grid.shape[1])
        state_dict[prefix + "weight"] = rows[self._padded_grid_rows(grid.shape[2])]
        state_dict[prefix + "bias"] = state_dict[prefix + "bias"][self.order]  # format 1: user order
