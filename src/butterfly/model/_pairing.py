"""Who is paired with whom for training.

Each strategy turns training cells into :class:`~butterfly.train.PairedRows`: pair ``k`` joins row
``rows[a][k]`` of the first modality with row ``rows[b][k]`` of the second.

- measured pairs (scButterfly-B): each cell with itself;
- by label (scButterfly-T) and by cluster (scButterfly-C): the measured pairs plus, for two rounds, within
  each group, the second modality of shuffled cells paired with the first modality of un-shuffled cells
  (3x the cells);
- unpaired: cells of two different sets matched at random within shared labels, in proportion to the
  labels' average share of both sets;
- by optimal transport (perturbation response): each cell of the first set (e.g. control) matched with the
  cell of the second set (e.g. stimulated) of the same label to which the exact optimal transport plan
  between the two sets' cells of that label sends most of its mass.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import ButterflyInputError, _preview
from ..train._data import PairedRows


def measured_pairs(n_cells: int, names: tuple[str, str]) -> PairedRows:
    """Each cell paired with itself."""
    rows = np.arange(n_cells)
    return PairedRows({names[0]: rows, names[1]: rows.copy()})


def pairs_within_groups(groups, names: tuple[str, str], *, rounds: int = 2, seed: int = 0) -> PairedRows:
    """Measured pairs plus ``rounds`` synthetic copies shuffled within each group (scButterfly-T / -C).

    In each round and group, the first modality of the cells in their own order is paired with the second
    modality of a random permutation of the same cells, so no pair crosses a group and the training set
    has ``(1 + rounds)`` times as many pairs.
    """
    groups = np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    n = len(groups)
    first, second = [np.arange(n)], [np.arange(n)]
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for _ in range(rounds):
        shuffled = np.arange(n)
        for cells in members:
            shuffled[cells] = rng.permutation(cells)
        first.append(np.arange(n))
        second.append(shuffled)
    return PairedRows({names[0]: np.concatenate(first), names[1]: np.concatenate(second)})


def _shared_labels(first_labels, second_labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both sets' labels as strings and the labels they share; refuses sets that share none."""
    first_labels, second_labels = np.asarray(first_labels).astype(str), np.asarray(second_labels).astype(str)
    shared = np.intersect1d(first_labels, second_labels)
    if shared.size == 0:
        raise ButterflyInputError(
            "The two sets of cells share no label, so no cells can be matched. Check that label_key names the "
            f"same annotation on both sides (first: {_preview(sorted(set(first_labels)))}; second: "
            f"{_preview(sorted(set(second_labels)))})."
        )
    return first_labels, second_labels, shared


def unpaired_sampling_sizes(first_labels, second_labels) -> dict[str, int]:
    """How many pairs to draw per shared label for unpaired training (paper eq. 13).

    Label ``i`` gets ``s_i = (s_i^a + s_i^b) / sum_k (s_k^a + s_k^b)`` over the shared labels, where ``s^a``
    and ``s^b`` are the label's proportions in each set, and ``round(s_i * (n_a + n_b) / 2)`` pairs.
    """
    first_labels, second_labels, shared = _shared_labels(first_labels, second_labels)
    n_a, n_b = len(first_labels), len(second_labels)
    share = {g: np.mean(first_labels == g) + np.mean(second_labels == g) for g in shared}
    total = sum(share.values())
    return {g: int(round(share[g] / total * (n_a + n_b) / 2)) for g in shared}


def unpaired_pairs(first_labels, second_labels, names: tuple[str, str], *, seed: int = 0) -> PairedRows:
    """Random pairs of a first-set cell and a second-set cell of the same label, sized by
    :func:`unpaired_sampling_sizes`."""
    first_labels, second_labels = np.asarray(first_labels).astype(str), np.asarray(second_labels).astype(str)
    rng = np.random.default_rng(seed)
    first, second = [], []
    for label, size in unpaired_sampling_sizes(first_labels, second_labels).items():
        first.append(rng.choice(np.flatnonzero(first_labels == label), size=size, replace=True))
        second.append(rng.choice(np.flatnonzero(second_labels == label), size=size, replace=True))
    return PairedRows({names[0]: np.concatenate(first), names[1]: np.concatenate(second)})


def transport_matches(
    first, second, first_labels, second_labels, *, n_components: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Match cells of two sets (same features, same order) by optimal transport within shared labels.

    The paper's pairing for perturbation response: per label, the cells of both sets are embedded together
    by PCA (``n_components``, fewer when the label has fewer cells), the cost is the Euclidean distance
    between a first-set and a second-set cell, both sets weigh uniformly, and the exact optimal transport
    plan (Earth Mover's Distance, POT's network simplex) is computed; each first-set cell is matched with
    the second-set cell it sends most mass to. Labels on one side only give no match.

    Returns ``(first_rows, second_rows)``: every first-set cell of a shared label, in row order, and its
    match. The plan holds one number per (first, second) cell pair of a label, so a label with ``n`` and
    ``m`` cells needs ``8 n m`` bytes (0.8 GB for 10,000 x 10,000).
    """
    import ot
    from sklearn.decomposition import PCA

    if first.shape[1] != second.shape[1]:
        raise ValueError(f"both sets need the same features; got {first.shape[1]} and {second.shape[1]}.")
    first_labels, second_labels, shared = _shared_labels(first_labels, second_labels)
    first_rows, second_rows = [], []
    for label in shared:
        rows_a, rows_b = np.flatnonzero(first_labels == label), np.flatnonzero(second_labels == label)
        X = (
            sp.vstack([sp.csr_matrix(first[rows_a]), sp.csr_matrix(second[rows_b])])
            .tocsr()
            .astype(np.float64)
        )
        k = min(n_components, min(X.shape) - 1)
        if k >= 1:  # ARPACK on the sparse rows, centred implicitly: nothing is densified
            embedded = PCA(n_components=k, svd_solver="arpack", random_state=seed).fit_transform(X)
        else:  # a single feature: the data are their own embedding
            embedded = X.toarray()
        cost = ot.dist(embedded[: len(rows_a)], embedded[len(rows_a) :], metric="euclidean")
        weights_a = np.full(len(rows_a), 1.0 / len(rows_a))
        weights_b = np.full(len(rows_b), 1.0 / len(rows_b))
        plan, log = ot.emd(weights_a, weights_b, cost, numItermax=max(100_000, 50 * cost.size), log=True)
        if log.get("warning"):
            raise RuntimeError(f"Optimal transport for label {label!r} did not converge: {log['warning']}")
        first_rows.append(rows_a)
        second_rows.append(rows_b[plan.argmax(axis=1)])
    first_rows, second_rows = np.concatenate(first_rows), np.concatenate(second_rows)
    order = np.argsort(first_rows, kind="stable")
    return first_rows[order], second_rows[order]


def joint_embedding(matrices, kinds, *, n_components: int = 30, seed: int = 0) -> np.ndarray:
    """A fast joint embedding of paired cells: a truncated SVD per modality, blocks scaled to equal weight.

    ATAC blocks are LSI (SVD of the TF-IDF matrix) without their first component, which mostly follows
    sequencing depth; RNA/ADT blocks are the leading SVD components of the log-normalised / CLR data.
    Each block is divided by its total standard deviation, so every modality counts the same.
    """
    from sklearn.decomposition import TruncatedSVD

    blocks = []
    for X, kind in zip(matrices, kinds, strict=True):
        skip = 1 if kind == "atac" else 0
        k = max(2, min(n_components + skip, min(X.shape) - 1))
        comps = TruncatedSVD(n_components=k, random_state=seed).fit_transform(X)[:, skip:]
        comps = comps - comps.mean(0)
        blocks.append(comps / max(np.sqrt((comps**2).sum(1).mean()), 1e-12))
    return np.hstack(blocks)


def leiden_groups(embedding: np.ndarray, *, resolution: float = 3.0, seed: int = 0) -> np.ndarray:
    """Leiden clusters (leidenalg, exact 15-neighbour graph) of an embedding, as strings."""
    import anndata as ad

    from ..metrics._scores import leiden_on

    data = ad.AnnData(X=np.zeros((embedding.shape[0], 1), dtype=np.float32))
    data.obsm["X_joint"] = embedding
    return leiden_on(data, "X_joint", resolution=resolution, seed=seed)  # category names: str


def joint_clusters(
    matrices, kinds, *, resolution: float = 3.0, seed: int = 0, n_components: int = 30
) -> np.ndarray:
    """Leiden clusters of :func:`joint_embedding` (scButterfly-C's labels with the built-in backend)."""
    embedding = joint_embedding(matrices, kinds, n_components=n_components, seed=seed)
    return leiden_groups(embedding, resolution=resolution, seed=seed)
