"""Training data: preprocessed CSR matrices, the rows paired for training, validation split, minibatches.

Matrices stay sparse; each minibatch takes its rows with one fancy index per modality and densifies
only those rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..module._layers import SparseRows


@dataclass
class PairedRows:
    """Training pairs: pair ``k`` joins row ``rows[a][k]`` of modality a with row ``rows[b][k]`` of modality b."""

    rows: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        lengths = {len(r) for r in self.rows.values()}
        if len(lengths) != 1:
            raise ValueError(f"every modality needs one row per pair, got lengths {sorted(lengths)}.")

    def __len__(self) -> int:
        return len(next(iter(self.rows.values())))

    def mapped(self, cells: dict[str, np.ndarray]) -> PairedRows:
        """Translate local row numbers into rows of the full matrices: ``cells[name][local]``."""
        return PairedRows({name: np.asarray(cells[name])[r] for name, r in self.rows.items()})


def split_validation(
    n_pairs: int, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random split of pair indices into (train, validation); at least one validation pair when fraction > 0."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}.")
    order = rng.permutation(n_pairs)
    n_val = int(round(fraction * n_pairs))
    if fraction > 0:
        n_val = min(max(n_val, 1), n_pairs - 2)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _to_tensor(block: sp.csr_matrix, device: torch.device, feature_major: bool = False) -> torch.Tensor:
    """Dense float32 tensor of a CSR block; ``feature_major``: laid out column by column (``.t()`` contiguous),
    the layout the chromosome-blocked layers read and write fastest."""
    dense = block.toarray(order="F" if feature_major else "C").astype(np.float32, copy=False)
    return torch.from_numpy(dense).to(device, non_blocking=True)


def _to_sparse_rows(block: sp.csr_matrix, device: torch.device) -> SparseRows:
    """A CSR block as :class:`SparseRows` on ``device`` (for encoders' first layers; never densified)."""
    lengths = np.diff(block.indptr)
    parts = (np.repeat(np.arange(block.shape[0]), lengths), block.indices, block.indptr[:-1])
    rows, columns, offsets = (torch.from_numpy(a.astype(np.int64)).to(device) for a in parts)
    values = torch.from_numpy(block.data.astype(np.float32, copy=False)).to(device)
    return SparseRows(rows, columns, values, offsets, block.shape)


def _masked(block: sp.csr_matrix, rate: float, scale: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Zero each entry with probability ``rate`` (the input mask of scButterfly), scaling kept ones by ``scale``.

    Zeroing a zero changes nothing, so the mask is drawn for the stored non-zeros only: the same
    distribution as a dense mask, at a fraction of the cost.
    """
    out = block.copy()
    out.data = out.data * (rng.random(out.nnz) >= rate) * np.float32(scale)
    return out


def dense_rows(
    X: sp.csr_matrix, rows: np.ndarray, device: torch.device, feature_major: bool = False
) -> torch.Tensor:
    """Rows of a CSR matrix as a dense float32 tensor on ``device``."""
    block = X[rows] if sp.issparse(X) else sp.csr_matrix(np.asarray(X[rows]))
    return _to_tensor(block, device, feature_major)


def minibatches(
    matrices: dict[str, sp.csr_matrix],
    pairs: PairedRows,
    batch_size: int,
    device: torch.device,
    rng: np.random.Generator | None = None,
    mask_rates: dict[str, float] | None = None,
    mask_scaling: bool = False,
    feature_major: Collection[str] = (),
    sparse_inputs: Collection[str] = (),
    on_rows: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | SparseRows]]]:
    """Yield ``(clean, masked)`` dicts of ``{modality: dense batch}``; shuffled when ``rng`` is given.

    Each modality's rows are taken with one fancy index per minibatch; ``masked`` holds them with the
    modality's input mask applied (the same tensors as ``clean`` where the rate is 0). A last batch of one
    pair is dropped when shuffling (a single cell gives no batch statistics and a noisy step). Modalities
    named in ``feature_major`` are laid out column by column (see :func:`_to_tensor`); those named in
    ``sparse_inputs`` get their ``masked`` batch as :class:`~butterfly.module.SparseRows`. ``on_rows``, when
    given, is called with each minibatch's rows (per modality) just before it is yielded.
    """
    n = len(pairs)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    mask_rates = mask_rates or {}
    for start in range(0, n, batch_size):
        chosen = order[start : start + batch_size]
        if rng is not None and len(chosen) == 1 and n > 1:
            break
        clean, masked = {}, {}
        for name, rows in pairs.rows.items():
            block = matrices[name][rows[chosen]]
            layout = name in feature_major
            clean[name] = _to_tensor(block, device, layout)
            rate = mask_rates.get(name, 0.0)
            if rate > 0:
                scale = 1.0 / (1.0 - rate) if mask_scaling else 1.0
                block = _masked(block, rate, scale, rng)
            if name in sparse_inputs:
                masked[name] = _to_sparse_rows(block, device)
            elif rate > 0:
                masked[name] = _to_tensor(block, device, layout)
            else:
                masked[name] = clean[name]
        if on_rows is not None:
            on_rows({name: rows[chosen] for name, rows in pairs.rows.items()})
        yield clean, masked
