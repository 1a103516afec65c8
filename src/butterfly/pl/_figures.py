"""Figures: loss curves,
t-SNE panels of measured vs translated profiles, cell-type annotation, per-feature validation scores,
predicted perturbation responses. The benchmark's report folder is written by ``benchmark_report.py``."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .._validation import ButterflyInputError
from ..io._atomic import save_figure_atomic
from ..model._summary import TRUSTED_VALIDATION_R


def _pyplot():
    """matplotlib's pyplot, with whatever backend the user has (library code never switches it: the command
    line chooses Agg for itself, see :func:`butterfly.cli.main`)."""
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, save, show: bool, *, dpi: int):
    """Save ``fig`` to ``save`` (atomically) when given, show it when asked; returns it."""
    if save is not None:
        save_figure_atomic(fig, save, dpi=dpi)
    if show:
        _pyplot().show()
    return fig


def plot_history(history: pd.DataFrame, save: str | os.PathLike | None = None, *, show: bool = False):
    """Training and validation loss per epoch for each phase, the kept (best) epoch marked; returns the
    figure (saved to ``save`` when given, shown with ``show=True``). ``butterfly info MODEL --plot PNG`` draws it for a saved model.

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:400], atac[:400], seed=0)
    >>> history = model.fit(pretrain_epochs=3, epochs=3, progress=False)
    >>> fig = bf.pl.plot_history(history)  # or plot_history(history, "loss.png")
    >>> [ax.get_title() for ax in fig.axes]
    ['pretrain rna', 'pretrain atac', 'integrative']
    """
    needed = {"phase", "epoch", "train_loss", "val_loss"}
    if not isinstance(history, pd.DataFrame) or not needed <= set(history.columns) or history.empty:
        raise ButterflyInputError(
            "plot_history needs the loss history that fit() returns (also model.history_), a DataFrame with "
            f"columns {sorted(needed)} and one row per epoch; got {type(history).__name__}"
            + (f" with {len(history)} rows." if isinstance(history, pd.DataFrame) else ".")
        )
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
        values = pd.concat([part["train_loss"], part["val_loss"]])
        if values.min() > 0 and values.max() / values.min() > 10:
            ax.set_yscale("log")
        ax.set_title(phase)
        ax.set_xlabel("epoch")
        ax.set_ylabel("reconstruction + KL")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, save, show, dpi=120)


def plot_annotation(true, predicted, save: str | os.PathLike | None = None, *, ax=None, show: bool = False):
    """How cells of each true type were labelled (:func:`~butterfly.annotate`'s ``label``): a heatmap whose
    row for a type holds the shares of its cells given each label, rows summing to 1, types ordered by size.
    Returns the figure (saved to ``save`` when given, shown with ``show=True``); ``fig.confusion`` holds the table.

    Examples
    --------
    >>> import butterfly as bf
    >>> true = ["B", "B", "T", "T", "T", "NK"]
    >>> fig = bf.pl.plot_annotation(true, ["B", "T", "T", "T", "NK", "NK"])
    >>> fig.confusion.loc["T"].round(2).to_dict()
    {'T': 0.67, 'B': 0.0, 'NK': 0.33}
    """
    true, predicted = np.asarray(true).astype(str), np.asarray(predicted).astype(str)
    if true.shape != predicted.shape or true.ndim != 1 or true.size == 0:
        raise ButterflyInputError(
            f"plot_annotation needs one true and one predicted label per cell; got {true.size} and "
            f"{predicted.size} labels."
        )
    rows = pd.Series(true).value_counts().index
    columns = list(rows) + sorted(set(predicted) - set(rows))
    table = pd.crosstab(pd.Series(true, name="true"), pd.Series(predicted, name="predicted"))
    table = table.reindex(index=rows, columns=columns, fill_value=0)
    shares = table.div(table.sum(axis=1), axis=0)
    plt = _pyplot()
    size = 2.5 + 0.32 * len(columns)
    if ax is None:
        fig, ax = plt.subplots(figsize=(size + 1.2, 2.2 + 0.3 * len(rows)))
    else:
        fig = ax.figure
    image = ax.imshow(shares.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [f"{t} ({n})" for t, n in table.sum(axis=1).items()], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (cells)")
    accuracy = float((true == predicted).mean())
    ax.set_title(f"{len(true)} cells, accuracy {accuracy:.2f}", fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the type's cells")
    fig.tight_layout()
    fig.confusion = shares
    return _finish(fig, save, show, dpi=120)


def plot_reliability(
    curve: pd.DataFrame, save: str | os.PathLike | None = None, *, ax=None, show: bool = False
):
    """The reliability curve of predicted peak probabilities (:func:`~butterfly.metrics.reliability_curve`):
    mean prediction against the fraction measured open in each group, the diagonal dashed. Returns the figure
    (saved to ``save`` when given, shown with ``show=True``); draws into ``ax`` when given.

    Examples
    --------
    >>> import numpy as np, butterfly as bf
    >>> rng = np.random.default_rng(0)
    >>> p = rng.random((100, 20))
    >>> fig = bf.pl.plot_reliability(bf.metrics.reliability_curve(p, rng.random((100, 20)) < p))
    >>> fig.axes[0].get_xlabel()
    'predicted probability that the peak is open'
    """
    if not {"predicted", "observed"} <= set(curve.columns) or curve.empty:
        raise ButterflyInputError("plot_reliability needs bf.metrics.reliability_curve's table.")
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4))
    else:
        fig = ax.figure
    top = float(max(curve["predicted"].max(), curve["observed"].max())) * 1.05
    ax.plot([0, top], [0, top], "--", color="grey", lw=1)
    ax.plot(curve["predicted"], curve["observed"], "o-", color="C0")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted probability that the peak is open")
    ax.set_ylabel("fraction measured open")
    ax.set_title("calibration of translated peaks")
    fig.tight_layout()
    return _finish(fig, save, show, dpi=120)


def plot_scores_by_label(table: pd.DataFrame, save: str | os.PathLike | None = None, *, show: bool = False):
    """Which cell types translate well: one panel of horizontal bars per score column of ``table``
    (:func:`~butterfly.benchmark.scores_by_label`, or ``scores_by_label.csv`` of ``butterfly evaluate``,
    which has one column per translation), a bar per label with its number of cells, the cells' overall
    mean dashed. Returns the figure (saved to ``save`` when given, shown with ``show=True``).

    Examples
    --------
    >>> import numpy as np, butterfly as bf
    >>> truth = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    >>> table = bf.benchmark.scores_by_label(truth, truth, ["B", "T", "B"], target_kind="rna")
    >>> len(bf.pl.plot_scores_by_label(table).axes)
    1
    """
    scores = [c for c in table.columns if c != "cells"]
    if "cells" not in table.columns or not scores or table.empty:
        raise ButterflyInputError(
            "plot_scores_by_label needs a table of labels with a 'cells' column and at least one score column "
            "(bf.benchmark.scores_by_label)."
        )
    plt = _pyplot()
    rows = range(len(table))[::-1]  # the most common label on top
    fig, axes = plt.subplots(
        1, len(scores), figsize=(2.0 + 3.2 * len(scores), 1.2 + 0.2 * len(table)), sharey=True, squeeze=False
    )
    for ax, column in zip(axes[0], scores, strict=True):
        values = table[column].to_numpy(dtype=float)
        ax.barh(rows, values, color="C0")
        scored = np.isfinite(values)
        if scored.any():  # the cell-weighted mean over the labels with a score
            ax.axvline(np.average(values[scored], weights=table["cells"][scored]), linestyle="--", color="C3")
        ax.set_xlabel(column.replace("_", " "), fontsize=8)
        ax.set_xlim(min(0.0, values[scored].min(initial=0.0)), 1.0)
    axes[0][0].set_yticks(list(rows), [f"{label} ({n})" for label, n in table["cells"].items()], fontsize=7)
    fig.suptitle("mean per-cell score of each label's cells (cells); dashed: all cells", fontsize=9)
    fig.tight_layout()
    return _finish(fig, save, show, dpi=120)


def plot_validation_scores(
    translated, *, top: int = 20, save: str | os.PathLike | None = None, show: bool = False
):
    """Which translated features to trust: the validation r of each gene or protein of a translation
    (``var["validation_pearson"]``, see :meth:`~butterfly.Butterfly.fit`) as a histogram, the model's
    threshold for a feature that translates well marked, and the ``top`` best-scored features. Returns the
    figure (saved to ``save`` when given, shown with ``show=True``); ``fig.scores`` holds the scores, best first.

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:400], atac[:400], seed=0)
    >>> history = model.fit(pretrain_epochs=2, epochs=2, progress=False)
    >>> translated = model.translate(atac[1900:], source="atac", target="rna", progress=False)
    >>> fig = bf.pl.plot_validation_scores(translated, top=10)
    >>> len(fig.scores) <= translated.n_vars, bool(fig.scores.is_monotonic_decreasing)
    (True, True)
    """
    from ..model._inference import VALIDATION_SCORE_KEY

    if VALIDATION_SCORE_KEY not in getattr(translated, "var", {}):
        raise ButterflyInputError(
            f"plot_validation_scores needs a translation with var[{VALIDATION_SCORE_KEY!r}]: translations into "
            "RNA or protein by a model trained on measured pairs carry it (ATAC targets, unpaired and "
            "perturbation models have none)."
        )
    scores = translated.var[VALIDATION_SCORE_KEY].dropna().sort_values(ascending=False)
    if scores.empty:
        raise ButterflyInputError("Every validation score is NaN: no feature varied in the validation cells.")
    best = scores.iloc[:top][::-1]
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, max(3.2, 1.2 + 0.16 * len(best))))
    left.hist(scores.to_numpy(), bins=40, color="0.55")
    left.axvline(TRUSTED_VALIDATION_R, linestyle="--", color="C3")
    above = int((scores > TRUSTED_VALIDATION_R).sum())
    left.set_title(f"{above} of {len(scores)} features above r {TRUSTED_VALIDATION_R}", fontsize=9)
    left.set_xlabel("Pearson r on the validation cells")
    left.set_ylabel("features")
    right.barh(range(len(best)), best.to_numpy(), color="C0")
    right.set_yticks(range(len(best)), best.index, fontsize=7)
    right.set_xlabel("Pearson r on the validation cells")
    right.set_title(f"the {len(best)} best translated", fontsize=9)
    fig.tight_layout()
    fig.scores = scores
    return _finish(fig, save, show, dpi=120)


def plot_perturbation(
    control,
    stimulated,
    predicted,
    *,
    n_degs: int = 100,
    save: str | os.PathLike | None = None,
    show: bool = False,
):
    """Mean expression of each gene in predicted against measured stimulated cells, and in the control cells
    against the measured stimulated ones (no response), the top ``n_degs`` measured DEGs (control vs
    stimulated, Wilcoxon) in colour with the R^2 of their means (as :func:`butterfly.evaluate_perturbation`,
    without resampling). Takes three AnnData, aligned by gene name to ``predicted`` (the output of
    ``translate``); returns the figure (saved to ``save`` when given, shown with ``show=True``).

    Examples
    --------
    With ``model``, ``control`` and ``stimulated`` as in :meth:`butterfly.Butterfly.perturbation`:

    >>> held_out = control[control.obs["cell_type"] == "CD4T"]  # doctest: +SKIP
    >>> predicted = model.translate(held_out, source="control", target="stimulated")  # doctest: +SKIP
    >>> measured = stimulated[stimulated.obs["cell_type"] == "CD4T"]  # doctest: +SKIP
    >>> fig = bf.pl.plot_perturbation(held_out, measured, predicted, save="cd4t_response.png")  # doctest: +SKIP
    """
    from ..metrics import _scores as metrics

    genes = pd.Index(predicted.var_names)
    frames = {"control": control, "measured stimulated": stimulated}
    for what, data in frames.items():
        missing = genes.difference(data.var_names)
        if len(missing):
            raise ButterflyInputError(
                f"The {what} cells lack {len(missing)} of the predicted genes (e.g. {list(missing[:3])}); pass "
                "cells measured on the genes the model predicts."
            )
    ctrl, real = (data[:, genes].X for data in frames.values())
    degs = np.isin(genes.astype(str), metrics.top_degs(ctrl, real, genes, n_degs))
    means = {
        name: metrics.gene_means(X)
        for name, X in (("control", ctrl), ("real", real), ("predicted", predicted.X))
    }
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4), sharex=True, sharey=True)
    for ax, name in zip(axes, ("predicted", "control"), strict=True):
        r2 = np.corrcoef(means["real"][degs], means[name][degs])[0, 1] ** 2
        ax.scatter(means["real"][~degs], means[name][~degs], s=3, c="lightgrey", label="other genes")
        ax.scatter(means["real"][degs], means[name][degs], s=8, c="tab:red", label=f"top {n_degs} DEGs")
        top = max(means["real"].max(), means[name].max())
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":")
        label = "predicted stimulated" if name == "predicted" else "control (no response)"
        ax.set_title(f"{label}: R^2 (DEGs) = {r2:.3f}", fontsize=10)
        ax.set_xlabel("measured stimulated, mean expression")
        ax.set_ylabel(f"{label}, mean expression")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _finish(fig, save, show, dpi=120)


def tsne_embedding(X, *, n_pcs: int = 50, seed: int = 0) -> np.ndarray:
    """PCA to ``n_pcs`` then t-SNE to two dimensions (the paper's visualisation), for a cells x features
    matrix, dense or sparse; seeded, so the same cells give the same picture.

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, _ = bf.datasets.snare_mcc_demo()
    >>> bf.pl.tsne_embedding(rna[:200].X).shape
    (200, 2)
    """
    import scipy.sparse as sp
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    dense = X.toarray() if sp.issparse(X) else np.asarray(X)
    n_comps = max(2, min(n_pcs, dense.shape[0] - 1, dense.shape[1] - 1))
    reduced = PCA(n_components=n_comps, random_state=seed).fit_transform(dense.astype(np.float32))
    perplexity = min(30.0, max(5.0, (dense.shape[0] - 1) / 3.5))
    return TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity).fit_transform(reduced)


def plot_tsne_panels(
    profiles: dict[str, object],
    colourings,
    save: str | os.PathLike | None = None,
    *,
    title: str = "",
    show: bool = False,
):
    """One t-SNE column per profile matrix (e.g. measured and translated); one row per colouring.

    ``colourings`` is a label array (one row) or ``{name: labels}`` (e.g. cell type and batch). Each
    embedding is computed once and drawn in every row. Returns the figure (saved to ``save`` when given, shown with ``show=True``).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:1500], atac[:1500], seed=0)
    >>> history = model.fit(pretrain_epochs=2, epochs=2, progress=False)
    >>> cells = rna[1800:]
    >>> translated = model.translate(atac[1800:], source="atac", target="rna", progress=False)
    >>> profiles = {"measured RNA": model.preprocessors["rna"].transform(cells).X, "RNA from ATAC": translated.X}
    >>> fig = bf.pl.plot_tsne_panels(profiles, {"cell type": cells.obs["cell_type"]})
    >>> [ax.get_title() for ax in fig.axes]
    ['measured RNA', 'RNA from ATAC']
    """
    if not isinstance(colourings, dict):
        colourings = {"": colourings}
    sizes = {name: X.shape[0] for name, X in profiles.items()}
    sizes.update({f"labels {name!r}": len(labels) for name, labels in colourings.items()})
    if len(set(sizes.values())) > 1:
        raise ButterflyInputError(
            f"Every profile and label array must hold the same cells; got cell counts {sizes}."
        )
    plt = _pyplot()
    embeddings = {name: tsne_embedding(X) for name, X in profiles.items()}
    n_rows, n_cols = len(colourings), len(profiles)
    # legends of at most 18 entries per column, so that 40 cell types still leave the panels their room
    legend_columns = max(-(-len(set(np.asarray(labels).astype(str))) // 18) for labels in colourings.values())
    size = (4.6 * n_cols + 2.4 * legend_columns, 4.3 * n_rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=size, squeeze=False)
    for row, (colour_name, labels) in enumerate(colourings.items()):
        labels = np.asarray(labels).astype(str)
        categories = sorted(set(labels))
        palettes = (
            ["tab10"] if len(categories) <= 10 else ["tab20", "tab20b", "tab20c"]
        )  # 60 distinct colours
        palette = [plt.get_cmap(name)(i) for name in palettes for i in range(plt.get_cmap(name).N)]
        colours = {c: palette[i % len(palette)] for i, c in enumerate(categories)}
        for ax, (name, xy) in zip(axes[row], embeddings.items(), strict=True):
            for c in categories:
                sel = labels == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=colours[c], label=c, linewidths=0)
            ax.set_title(name if row == 0 else "")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(colour_name)
        axes[row, -1].legend(
            markerscale=3,
            fontsize=7,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
            ncol=-(-len(categories) // 18),
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, save, show, dpi=110)
