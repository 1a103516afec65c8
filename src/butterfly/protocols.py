"""Cross-validation splits the paper evaluates with: by cell, by cell type (unseen types), by batch (unseen batches)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._validation import ButterflyInputError


def folds_by_cell(n_cells: int, k: int = 5, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` random folds of cells: a list of (train, test) index arrays; every cell is tested exactly once."""
    if not 2 <= k <= n_cells:
        raise ButterflyInputError(f"k must be between 2 and the number of cells ({n_cells}), got {k}.")
    order = np.random.default_rng(seed).permutation(n_cells)
    return [(np.sort(np.setdiff1d(order, part)), np.sort(part)) for part in np.array_split(order, k)]


def folds_by_group(
    groups: Sequence, k: int, *, seed: int = 0, what: str = "group"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds that keep each group (cell type, batch) whole: no test group appears in its training fold.

    Groups are shuffled, then dealt to folds largest first, each to the fold with the fewest cells so far,
    so folds are balanced in cells.
    """
    groups = np.asarray(groups).astype(str)
    names, counts = np.unique(groups, return_counts=True)
    if not 2 <= k <= len(names):
        raise ButterflyInputError(f"k must be between 2 and the number of {what} ({len(names)}), got {k}.")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(names))
    order = shuffled[np.argsort(-counts[shuffled], kind="stable")]
    load = np.zeros(k, dtype=np.int64)
    assignment = {}
    for g in order:
        fold = int(np.argmin(load))
        assignment[names[g]] = fold
        load[fold] += counts[g]
    fold_of_cell = np.array([assignment[g] for g in groups])
    return [(np.flatnonzero(fold_of_cell != f), np.flatnonzero(fold_of_cell == f)) for f in range(k)]


def folds_by_cell_type(labels: Sequence, k: int = 3, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds by cell type: the test cell types are unseen in training (paper: 3 folds)."""
    return folds_by_group(labels, k, seed=seed, what="cell types")


def folds_by_batch(batches: Sequence, k: int = 4, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds by batch: the test batches are unseen in training (paper: 4 folds)."""
    return folds_by_group(batches, k, seed=seed, what="batches")
