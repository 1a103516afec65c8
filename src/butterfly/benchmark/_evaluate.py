"""Score translations the way the paper does, for one held-out set or over cross-validation folds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._progress import progress_bar
from .._validation import ButterflyInputError, check_label_key, check_paired, check_whole_numbers, use_layers
from ..metrics import _scores as metrics
from ..model._butterfly import Butterfly
from ..model._inference import LATENT_KEY


def score_prediction(
    pred, truth, labels, *, target_kind: str, seed: int = 0, scoring_runs: int = 1
) -> dict[str, float]:
    """Scores of one translation against the measured target (both in the model's preprocessed space).

    Always: clustering of the prediction (AMI, ARI, NMI, HOM vs ``labels``; with ``scoring_runs`` N, the
    mean over N clusterings seeded ``seed`` to ``seed + N - 1``). For an ATAC target, against the binarised
    measured peaks (open where above 0): pooled AUROC and AUPRC over all entries, the mean per-cell AUROC
    (across a cell's peaks) and per-peak AUROC (across cells), RMSE and MAE. Otherwise: per-feature and per-cell
    Pearson and Spearman, RMSE and MAE, on the target's normalised scale (log-normalised RNA, CLR proteins).
    :func:`~butterfly.metrics.paired_bootstrap` compares two translations on these metrics with intervals.

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:1500], atac[:1500], seed=0)
    >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
    >>> truth = model.preprocessors["rna"].transform(rna[1500:]).X  # measured, in the model's space
    >>> pred = model.translate(atac[1500:], source="atac", target="rna", progress=False).X
    >>> scores = bf.benchmark.score_prediction(pred, truth, rna[1500:].obs["cell_type"], target_kind="rna")
    >>> sorted(scores)  # doctest: +NORMALIZE_WHITESPACE
    ['AMI', 'ARI', 'HOM', 'MAE', 'NMI', 'RMSE', 'pearson_per_cell', 'pearson_per_feature', 'spearman_per_cell',
     'spearman_per_feature']
    >>> bf.benchmark.score_prediction(truth, truth, rna[1500:].obs["cell_type"], target_kind="rna")["RMSE"]
    0.0
    """
    scores = metrics.cell_heterogeneity(pred, labels, seed=seed, runs=scoring_runs)
    if target_kind == "atac":
        opened = (metrics._dense(truth) > 0).astype(np.float32)
        scores["AUROC"] = metrics.auroc(pred, truth)
        scores["AUPRC"] = metrics.auprc(pred, truth)
        scores["auroc_per_cell"] = metrics.auroc_per_cell(pred, truth)
        scores["auroc_per_feature"] = metrics.auroc_per_feature(pred, truth)
        scores["RMSE"] = metrics.rmse(pred, opened)
        scores["MAE"] = metrics.mae(pred, opened)
    else:
        scores["pearson_per_feature"] = metrics.pearson_per_feature(pred, truth)
        scores["pearson_per_cell"] = metrics.pearson_per_cell(pred, truth)
        scores["spearman_per_feature"] = metrics.spearman_per_feature(pred, truth)
        scores["spearman_per_cell"] = metrics.spearman_per_cell(pred, truth)
        scores["RMSE"] = metrics.rmse(pred, truth)
        scores["MAE"] = metrics.mae(pred, truth)
    return scores


def scores_by_label(pred, truth, labels, *, target_kind: str) -> pd.DataFrame:
    """How well the cells of each label (cell type) are translated: their number and the mean of their
    per-cell scores against the measured target (both in the model's preprocessed space), Pearson r
    across features for RNA, protein and expression targets (:func:`~butterfly.metrics.cell_pearson`),
    AUROC against the binarised peaks for ATAC (:func:`~butterfly.metrics.cell_auroc`). One row per
    label, the most common first; cells without a score (a constant measured profile) are left out of the
    mean. A cell's Pearson r across genes rewards the profile all cells share, so it is high for every
    type; compare the types with each other: a type far below the rest is translated worse.

    Examples
    --------
    >>> import numpy as np, butterfly as bf
    >>> truth = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    >>> pred = np.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0], [2.0, 0.0, 1.0]])
    >>> table = bf.benchmark.scores_by_label(pred, truth, ["B", "T", "B"], target_kind="rna")
    >>> table["cells"].to_dict(), table["pearson_per_cell"].round(3).to_dict()
    ({'B': 2, 'T': 1}, {'B': 1.0, 'T': -0.655})
    """
    labels = metrics._check_labels(np.shape(pred)[0], labels)
    if target_kind == "atac":
        column, per_cell = "auroc_per_cell", metrics.cell_auroc(pred, truth)
    else:
        column, per_cell = "pearson_per_cell", metrics.cell_pearson(pred, truth)
    frame = pd.DataFrame({"label": labels, column: per_cell})
    table = frame.groupby("label", observed=True, sort=True)[column].agg(["size", "mean"])
    table.columns = ["cells", column]
    return table.sort_values("cells", ascending=False, kind="stable")


def _joint_scores(matrices: dict, kinds: dict, labels, seed: int, runs: int) -> dict[str, float]:
    """Clustering scores of :func:`~butterfly.integrate`'s embedding of ``matrices`` (both modalities, in the
    model's space), the mean over ``runs`` embeddings and clusterings seeded ``seed``, ``seed + 1``, ..."""
    from ..model._pairing import joint_embedding, leiden_groups

    per_run = []
    for run_seed in range(seed, seed + runs):
        embedding = joint_embedding(list(matrices.values()), [kinds[n] for n in matrices], seed=run_seed)
        clusters = leiden_groups(embedding.astype(np.float32), resolution=1.0, seed=run_seed)
        per_run.append(metrics.clustering_scores(clusters, labels))
    return {key: float(np.mean([scores[key] for scores in per_run])) for key in per_run[0]}


def evaluate_translation(
    model, first: ad.AnnData, second: ad.AnnData, *, label_key: str = "cell_type", seed: int = 0,
    reference: Butterfly | None = None, latent: bool = False, translate_options: dict | None = None,
    scoring_runs: int = 1, layer: str | dict[str, str | None] | None = None, joint: bool = False,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Translate held-out paired cells both ways and score each translation against the measured profiles.

    Parameters
    ----------
    model
        A trained :class:`~butterfly.Butterfly`, or a baseline with the same ``translate``
        (:mod:`butterfly.benchmark`).
    first, second
        The held-out cells, measured in both of the model's modalities (in its order), the same cells in the
        same order.
    label_key
        The ``obs`` column of ``first`` holding the cell types the clusterings are scored against.
    seed
        Seed of the PCA and Leiden runs.
    reference
        The model whose preprocessing puts the measured truths in its space (default: ``model`` itself, or
        a baseline's own preprocessing).
    latent
        Also cluster the latent means each translation returns (``obsm["X_butterfly"]``) as
        ``"<source> latent"``: does the cell-type structure a translated profile lacks already miss from
        the latent, or is it lost in decoding?
    translate_options
        Keyword arguments of ``model.translate`` (e.g. ``{"n_samples": 10}``).
    scoring_runs
        Every clustering score is the mean over this many clusterings (PCA and Leiden seeded ``seed`` to
        ``seed + scoring_runs - 1``) instead of one run's.
    layer
        Where the counts are, as for :class:`~butterfly.Butterfly`.
    joint
        Also score the paper's integrative analysis: each modality measured, joined with its translation
        into the other (``"<source> + translated <target>"``), and both measured (``"measured <a> + <b>"``),
        embedded as :func:`~butterfly.integrate` embeds them and clustered (Leiden at resolution 1 on the
        embedding; the SVD seeded as the clustering).

    Returns
    -------
    dict
        Scores by profile: ``"<source>-><target>"`` for each translation (:func:`score_prediction`: AMI,
        ARI, NMI, homogeneity, and AUROC/AUPRC for ATAC or Pearson, Spearman and RMSE otherwise), and
        ``"measured <name>"``, the clustering of each measured modality, as a reference.
        :func:`scores_table` prints them.

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:1500], atac[:1500], seed=0)
    >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
    >>> scores = bf.evaluate_translation(model, rna[1500:], atac[1500:])  # held-out paired cells
    >>> sorted(scores)
    ['atac->rna', 'measured atac', 'measured rna', 'rna->atac']
    >>> sorted(scores["rna->atac"])  # doctest: +NORMALIZE_WHITESPACE
    ['AMI', 'ARI', 'AUPRC', 'AUROC', 'HOM', 'MAE', 'NMI', 'RMSE', 'auroc_per_cell', 'auroc_per_feature']
    """
    return _translate_and_score(
        model, first, second, label_key=label_key, seed=seed, reference=reference, latent=latent,
        translate_options=translate_options, scoring_runs=scoring_runs, layer=layer, joint=joint,
    )[0]  # fmt: skip


def _translate_and_score(
    model,
    first,
    second,
    *,
    label_key,
    seed,
    reference,
    latent,
    translate_options,
    scoring_runs,
    layer,
    joint,
    tick=None,
) -> tuple[dict[str, dict[str, float]], dict[str, ad.AnnData], dict, np.ndarray]:
    """:func:`evaluate_translation`'s scores, the translations it scored (``"a->b"``: AnnData), the measured
    profiles in the model's space (by modality) and the labels. ``tick(step)``, if given, is called as each of
    its :data:`SCORING_STEPS` steps (a clustering of a measured modality, a direction) is done."""
    tick = tick or (lambda step: None)
    reference = reference or (model if isinstance(model, Butterfly) else model._model)
    names = reference.names
    first, second = use_layers((first, second), names, layer)
    check_paired(first, second, names)  # scoring one cell's translation against another's profile is silent
    labels = check_label_key(first, label_key, what=f"The {names[0]} data").to_numpy()
    data = dict(zip(names, (first, second), strict=True))
    results: dict[str, dict[str, float]] = {}
    translations: dict[str, ad.AnnData] = {}
    truth = {name: reference.preprocessors[name].transform(data[name]).X for name in names}
    for name in names:
        results[f"measured {name}"] = metrics.cell_heterogeneity(
            truth[name], labels, seed=seed, runs=scoring_runs
        )
        tick(f"measured {name} clustered")
    kinds = {name: reference.specs[name].preprocessing for name in names}
    if joint:
        results[f"measured {names[0]} + {names[1]}"] = _joint_scores(truth, kinds, labels, seed, scoring_runs)
    for source, target in (names, names[::-1]):
        options = dict(translate_options or {})
        if isinstance(model, Butterfly) and kinds[target] == "atac":  # scored in the model's space, as the
            options.setdefault("atac_output", "tfidf")  # baselines' outputs are
        translated = model.translate(data[source], source=source, target=target, progress=False, **options)
        translations[f"{source}->{target}"] = translated
        kind = kinds[target]
        if joint:
            joined = {name: truth[name] if name == source else translated.X for name in names}
            results[f"{source} + translated {target}"] = _joint_scores(
                joined, kinds, labels, seed, scoring_runs
            )
        results[f"{source}->{target}"] = score_prediction(
            translated.X, truth[target], labels, target_kind=kind, seed=seed, scoring_runs=scoring_runs
        )
        if latent and LATENT_KEY in translated.obsm:
            results[f"{source} latent"] = metrics.cell_heterogeneity(
                translated.obsm[LATENT_KEY], labels, seed=seed, runs=scoring_runs
            )
        tick(f"{source}->{target} translated and scored")
    return results, translations, truth, labels


#: Steps :func:`_translate_and_score` reports to its ``tick``: two measured clusterings, two directions.
SCORING_STEPS = 4


#: Everything :func:`evaluation_report` (``butterfly evaluate``) writes into its folder.
EVALUATION_FILES = ("scores.json", "scores.md", "scores_by_label.csv", "scores_by_label.png", "tsne_*.png")


def evaluation_report(
    model: Butterfly, first: ad.AnnData, second: ad.AnnData, out: str | os.PathLike, *,
    label_key: str = "cell_type", seed: int = 0, scoring_runs: int = 1, n_samples: int = 0,
    layer: str | dict[str, str | None] | None = None, joint: bool = False, latent: bool = False,
    plots: bool = True, overwrite: bool = False, about: dict | None = None, progress: bool = True,
) -> dict:  # fmt: skip
    """:func:`evaluate_translation` of a trained model on held-out paired cells, written as a report folder.

    Writes into ``out``: ``scores.json`` (the scores and the settings that made them), ``scores.md`` (a
    markdown table of them, then one of each label's), ``scores_by_label.csv`` (for each label, its cells
    and their mean per-cell score in each direction, :func:`scores_by_label`) and, with ``plots``,
    ``scores_by_label.png`` (:func:`~butterfly.pl.plot_scores_by_label`) and one t-SNE figure per
    modality, ``tsne_<name>.png``: the measured profiles beside those translated into that modality,
    coloured by ``obs[label_key]``.
    ``butterfly evaluate`` runs it. A folder holding only an earlier evaluation is replaced; one holding
    anything else is refused unless ``overwrite=True``.

    Parameters
    ----------
    model
        A trained :class:`~butterfly.Butterfly` (paired, unpaired, -T or -C alike; for a perturbation
        model, whose conditions are different cells, use :func:`evaluate_perturbation`).
    first, second
        The held-out cells, measured in both of the model's modalities in its order, the same cells in the
        same order.
    out
        The report folder.
    label_key, seed, scoring_runs, layer, joint, latent
        As for :func:`evaluate_translation`.
    n_samples
        Translate with ``n_samples`` latent draws per cell (:meth:`~butterfly.Butterfly.translate`); 0
        decodes the latent mean.
    plots
        Draw the t-SNE figures (minutes for tens of thousands of cells).
    about
        Extra entries for ``scores.json``'s settings (the CLI records the model's folder and the files).
    progress
        A progress bar over the steps (clusterings, translations, figures), each named as it finishes.

    Returns
    -------
    dict
        What ``scores.json`` holds: ``"scores"`` (as :func:`evaluate_translation` returns them), ``"cells"``
        and ``"settings"``.

    Examples
    --------
    >>> import tempfile, butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:1500], atac[:1500], seed=0)
    >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
    >>> folder = tempfile.TemporaryDirectory()
    >>> summary = bf.benchmark.evaluation_report(model, rna[1500:], atac[1500:], folder.name, plots=False)
    >>> sorted(summary["scores"]), summary["cells"]
    (['atac->rna', 'measured atac', 'measured rna', 'rna->atac'], 500)
    >>> folder.cleanup()
    """
    from ..io._atomic import check_report_folder, write_text_atomic

    if getattr(model, "pairing", None) == "transport":
        raise ButterflyInputError(
            "This is a perturbation model: its two conditions are different cells, so there are no paired cells "
            "to score its translations against. Use bf.evaluate_perturbation(model, control, stimulated)."
        )
    check_whole_numbers(n_samples=(n_samples, 0), scoring_runs=(scoring_runs, 1))
    out = Path(out)
    check_report_folder(out, EVALUATION_FILES, overwrite=overwrite)
    bar = progress_bar(total=SCORING_STEPS + 1 + (3 if plots else 0), desc="evaluate", disable=not progress)

    def tick(step: str) -> None:
        bar.set_postfix_str(step, refresh=False)
        bar.update(1)

    results, translations, measured, labels = _translate_and_score(
        model, first, second, label_key=label_key, seed=seed, reference=None, latent=latent,
        translate_options={"n_samples": n_samples} if n_samples else None, scoring_runs=scoring_runs,
        layer=layer, joint=joint, tick=tick,
    )  # fmt: skip
    by_label = _joined_scores_by_label(model, translations, measured, labels)
    tick("scores by cell type")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "scores_by_label.csv", by_label.to_csv())
    if plots:
        from ..pl._figures import plot_scores_by_label, plot_tsne_panels

        plot_scores_by_label(by_label, out / "scores_by_label.png")
        tick("scores by cell type drawn")
        for name, translated in translations.items():
            source, target = name.split("->")
            plot_tsne_panels(
                {f"measured {target}": measured[target], f"{target} translated from {source}": translated.X},
                {label_key: labels}, out / f"tsne_{target}.png",
            )  # fmt: skip
            tick(f"t-SNE of {target} drawn")
    bar.close()
    settings = {
        "label_key": label_key, "seed": seed, "scoring_runs": scoring_runs, "n_samples": n_samples,
        "joint": joint, "latent": latent, **(about or {}),
    }  # fmt: skip
    summary = {"scores": results, "cells": int(len(labels)), "settings": settings}
    write_text_atomic(out / "scores.json", json.dumps(summary, indent=2))
    a, b = model.names
    write_text_atomic(
        out / "scores.md",
        f"# butterfly evaluation: {a} <-> {b} on {len(labels)} held-out cells\n\n"
        f"Clustering (PCA, neighbours, Leiden at resolution 1) against `obs['{label_key}']`"
        + (f", the mean of {scoring_runs} runs" if scoring_runs > 1 else "")
        + "; measured profiles as the reference.\n\n"
        + scores_table(results)
        + f"\n## By `obs['{label_key}']`\n\nEach label's cells and the mean of their per-cell scores.\n\n"
        + scores_table(by_label.to_dict("index"), first_column=label_key, whole=("cells",)),
    )
    return summary


def _joined_scores_by_label(model, translations: dict, measured: dict, labels) -> pd.DataFrame:
    """:func:`scores_by_label` of each translation, side by side: ``cells``, then ``"<a->b> <score>"``."""
    joined = None
    for name, translated in translations.items():
        target = name.split("->")[1]
        kind = model.specs[target].preprocessing
        table = scores_by_label(translated.X, measured[target], labels, target_kind=kind)
        scores = table.drop(columns="cells").add_prefix(f"{name} ")
        joined = table[["cells"]].join(scores) if joined is None else joined.join(scores)
    return joined


def evaluate_perturbation(
    model,
    control: ad.AnnData,
    stimulated: ad.AnnData,
    *,
    n_degs: int = 100,
    repeats: int = 100,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Score a predicted perturbation response the paper's way.

    Parameters
    ----------
    model
        A :meth:`Butterfly.perturbation <butterfly.Butterfly.perturbation>` model, or a baseline with its
        ``translate`` (:mod:`butterfly.benchmark`).
    control
        Control cells (for example of a cell type held out of training), translated to the stimulated
        condition by ``model``.
    stimulated
        Measured stimulated cells of the same type: other cells, compared as a population.
    n_degs
        How many of the top differentially expressed genes (control vs stimulated, Wilcoxon) to compare.
    repeats
        Resamplings of 80% of each population for the R^2 of the DEG means (paper: 100).
    seed
        Seed of the resampling.

    Returns
    -------
    dict
        Scores of ``"predicted"`` and, as the reference of no response at all, ``"control (no response)"``:
        the number of genes shared by the top ``n_degs`` DEGs of control vs measured and of control vs
        predicted stimulated; the R^2 of the mean expression of the top ``n_degs`` measured DEGs between
        predicted and measured stimulated cells, mean and sd over the resamplings; and the R^2 of every
        gene's mean.

    Examples
    --------
    With ``model``, ``control`` and ``stimulated`` as in :meth:`butterfly.Butterfly.perturbation` (CD4 T
    cells held out of training):

    >>> cd4t = control[control.obs["cell_type"] == "CD4T"]  # doctest: +SKIP
    >>> measured = stimulated[stimulated.obs["cell_type"] == "CD4T"]  # doctest: +SKIP
    >>> scores = bf.evaluate_perturbation(model, cd4t, measured)  # doctest: +SKIP
    >>> print(bf.benchmark.scores_table(scores))  # doctest: +SKIP
    """
    reference = model if isinstance(model, Butterfly) else model._model
    source, target = reference.names
    genes = reference.preprocessors[target].features_
    ctrl = reference.preprocessors[target].transform(control).X  # the control cells in the target's genes
    real = reference.preprocessors[target].transform(stimulated).X
    predicted = model.translate(control, source=source, target=target, progress=False).X
    results = {}
    for row, pred in (("predicted", predicted), ("control (no response)", ctrl)):
        r2, r2_sd = metrics.deg_mean_r2(ctrl, real, pred, genes, n=n_degs, repeats=repeats, seed=seed)
        all_genes = np.corrcoef(metrics.gene_means(real), metrics.gene_means(pred))[0, 1] ** 2
        results[row] = {
            f"DEG_overlap_top{n_degs}": float(metrics.deg_overlap(ctrl, real, pred, genes, n=n_degs)),
            "R2_DEG_means": r2,
            "R2_DEG_means_sd": r2_sd,
            "R2_all_gene_means": float(all_genes),
        }
    return results


def scores_table(
    results: dict[str, dict[str, float]], *, first_column: str = "profile", whole: tuple[str, ...] = ()
) -> str:
    """A markdown table of :func:`evaluate_translation` (or :func:`evaluate_perturbation`) results: one row
    per profile, one column per score, three decimals (``whole``: columns of counts, no decimals).

    Examples
    --------
    >>> import butterfly as bf
    >>> print(bf.benchmark.scores_table({"atac->rna": {"AMI": 0.2761, "ARI": 0.121}, "measured rna": {"AMI": 0.59}}))
    | profile | AMI | ARI |
    |---|---|---|
    | atac->rna | 0.276 | 0.121 |
    | measured rna | 0.590 |  |
    <BLANKLINE>
    """
    columns = list(dict.fromkeys(k for scores in results.values() for k in scores))
    lines = [f"| {first_column} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, scores in results.items():
        cells = [
            (f"{scores[c]:.0f}" if c in whole else f"{scores[c]:.3f}") if c in scores else "" for c in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
