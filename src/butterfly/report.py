"""Figures: loss curves and t-SNE panels of measured vs translated profiles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    if os.environ.get("MPLBACKEND") is None and matplotlib.get_backend().lower() not in (
        "agg",
        "module://matplotlib_inline.backend_inline",
    ):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: pd.DataFrame, path: str | os.PathLike | None = None):
    """Training and validation loss per epoch for each phase; returns the figure (saved when ``path`` given)."""
    plt = _pyplot()
    phases = list(dict.fromkeys(history["phase"]))
    fig, axes = plt.subplots(1, len(phases), figsize=(4.2 * len(phases), 3.4), squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=True):
        part = history[history["phase"] == phase]
        ax.plot(part["epoch"], part["train_loss"], label="train")
        ax.plot(part["epoch"], part["val_loss"], label="validation")
        best = part["best_epoch"].iloc[0] if "best_epoch" in part else None
        if best is not None and best >= 0:
            ax.axvline(best, color="grey", ls=":", lw=1, label=f"best (epoch {best})")
        ax.set_title(phase)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def tsne_embedding(X, *, n_pcs: int = 50, seed: int = 0) -> np.ndarray:
    """PCA to ``n_pcs`` then t-SNE to two dimensions (the paper's visualisation)."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    dense = X.toarray() if sp.issparse(X) else np.asarray(X)
    n_comps = max(2, min(n_pcs, dense.shape[0] - 1, dense.shape[1] - 1))
    reduced = PCA(n_components=n_comps, random_state=seed).fit_transform(dense.astype(np.float32))
    perplexity = min(30.0, max(5.0, (dense.shape[0] - 1) / 3.5))
    return TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity).fit_transform(reduced)


def plot_tsne_panels(
    profiles: dict[str, object], labels, path: str | os.PathLike | None = None, *, title: str = ""
):
    """One t-SNE panel per profile matrix (e.g. measured and translated), cells coloured by ``labels``."""
    plt = _pyplot()
    labels = np.asarray(labels).astype(str)
    categories = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(categories) > 10 else "tab10")
    colours = {c: cmap(i % cmap.N) for i, c in enumerate(categories)}
    fig, axes = plt.subplots(1, len(profiles), figsize=(4.6 * len(profiles) + 2.2, 4.4), squeeze=False)
    for ax, (name, X) in zip(axes[0], profiles.items(), strict=True):
        xy = tsne_embedding(X)
        for c in categories:
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=colours[c], label=c, linewidths=0)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path), dpi=120)
    return fig
