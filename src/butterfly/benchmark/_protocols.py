"""Cross-validation splits the paper evaluates with: by cell, by cell type (unseen types), by batch (unseen batches)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .._progress import progress_bar
from .._validation import ButterflyInputError


def folds_by_cell(n_cells: int, k: int = 5, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` random folds of cells: a list of (train, test) index arrays; every cell is tested exactly once.

    Examples
    --------
    >>> import butterfly as bf
    >>> folds = bf.benchmark.folds_by_cell(10, 5, seed=0)
    >>> [len(test) for _, test in folds]
    [2, 2, 2, 2, 2]
    >>> sorted(i for _, test in folds for i in test) == list(range(10))
    True
    """
    if not 2 <= k <= n_cells:
        raise ButterflyInputError(
            f"k= (the number of folds) must be between 2 and the number of cells ({n_cells}), got {k}."
        )
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
        raise ButterflyInputError(
            f"k= (the number of folds) must be between 2 and the number of {what} ({len(names)}), got {k}."
        )
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
    """``k`` folds by cell type: the test cell types are unseen in training (paper: 3 folds).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, _ = bf.datasets.snare_mcc_demo()
    >>> cell_types = rna.obs["cell_type"].to_numpy()
    >>> folds = bf.benchmark.folds_by_cell_type(cell_types, 3, seed=0)
    >>> [len(test) for _, test in folds]  # balanced in cells
    [667, 668, 665]
    >>> train, test = folds[0]
    >>> set(cell_types[train]) & set(cell_types[test])  # no test cell type is trained on
    set()
    """
    return folds_by_group(labels, k, seed=seed, what="cell types")


def folds_by_batch(batches: Sequence, k: int = 4, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds by batch: the test batches are unseen in training (paper: 4 folds).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, _ = bf.datasets.snare_mcc_demo()
    >>> folds = bf.benchmark.folds_by_batch(rna.obs["batch"], 4, seed=0)
    >>> [rna.obs["batch"].iloc[test].nunique() for _, test in folds]  # 12 batches, 3 per fold
    [3, 3, 3, 3]
    """
    return folds_by_group(batches, k, seed=seed, what="batches")


#: Models the harness knows: scButterfly-B/-T/-C (built-in or scvi-tools clusters) and the baselines
#: (:mod:`butterfly.benchmark`): the training mean, kNN, linear (ridge on SVD components) and kernel ridge.
BUTTERFLY_VARIANTS = {
    "butterfly": {"pairing": "measured"},
    "butterfly-T": {"pairing": "label"},
    "butterfly-C": {"pairing": "cluster"},
    "butterfly-C-scvi": {"pairing": "cluster", "cluster_backend": "scvi"},
}
BASELINES = ("mean", "knn", "linear", "kernel-ridge")
MODEL_NAMES = (*BUTTERFLY_VARIANTS, *BASELINES)
#: What ``butterfly benchmark`` and :func:`run_protocol` compare by default.
DEFAULT_MODELS = ("butterfly", *BASELINES)
AUGMENTATION = 3  # T and C train on 3x the cells (the measured pairs plus two shuffled rounds)


def _step_matched(options: dict) -> dict:
    """Epoch limits divided by the augmentation factor, so an augmented variant takes as many optimizer steps
    (and about as much time) as B does with ``options``."""
    scaled = dict(options)
    for key, default in (("pretrain_epochs", 100), ("epochs", 200), ("patience", 50)):
        scaled[key] = max(1, round(options.get(key, default) / AUGMENTATION))
    return scaled


def _fit(
    name: str,
    first,
    second,
    modalities,
    seed: int,
    fit_options: dict,
    *,
    label_key,
    match_steps,
    scvi_options,
):
    from ..model._butterfly import Butterfly
    from ._baselines import KernelRidgeTranslator, KNNTranslator, LinearTranslator, MeanTranslator

    if name in BUTTERFLY_VARIANTS:
        variant = dict(BUTTERFLY_VARIANTS[name])
        if variant.get("cluster_backend") == "scvi" and scvi_options:
            variant["cluster_options"] = scvi_options
        model = Butterfly(first, second, modalities=modalities, seed=seed, label_key=label_key, **variant)
        augmented = variant["pairing"] != "measured"
        model.fit(
            progress=False, **(_step_matched(fit_options) if augmented and match_steps else fit_options)
        )
        return model
    if name == "knn":
        return KNNTranslator(first, second, modalities=modalities, seed=seed)
    if name == "linear":
        return LinearTranslator(first, second, modalities=modalities, seed=seed)
    if name == "mean":
        return MeanTranslator(first, second, modalities=modalities, seed=seed)
    if name == "kernel-ridge":
        return KernelRidgeTranslator(first, second, modalities=modalities, seed=seed)
    raise ButterflyInputError(f"Unknown model {name!r}; choose from {list(MODEL_NAMES)}.")


def run_protocol(
    first,
    second,
    folds: list[tuple[np.ndarray, np.ndarray]],
    *,
    modalities: tuple[str, str] = ("rna", "atac"),
    models: Sequence[str] = DEFAULT_MODELS,
    label_key: str = "cell_type",
    seed: int = 0,
    fit_options: dict | None = None,
    match_steps: bool = False,
    progress: bool = True,
    after_fold=None,
    fold_numbers: Sequence[int] | None = None,
    scvi_options: dict | None = None,
    translate_samples: int = 0,
    scoring_runs: int = 1,
    joint: bool = False,
    compare: bool = True,
):
    """Train each model on each fold's training cells and score its translations of the test cells.

    Returns ``(scores, examples)``: a long table (fold, model, profile, metric, value; profile is
    ``"a->b"`` or ``"measured a"``) and, for the first fold, ``{"obs": test cells' obs, "profiles":
    {(model, "a->b") or ("measured", "b"): matrix}}`` for figures. Each model's training time is a row with
    profile ``"training"`` and metric ``"seconds"``.

    ``models`` are names from :data:`MODEL_NAMES`; ``fit_options`` go to :meth:`Butterfly.fit`. With
    ``match_steps`` the augmented variants (T, C) get a third of the epoch limits and patience, so they take
    as many optimizer steps as B on 3x the pairs; without it they train for the same epochs (3x the steps),
    as the paper does. ``after_fold``, if given, is called with the score table so far after every fold
    (to keep partial results of long runs). ``fold_numbers`` labels the folds in the table (default 0, 1, ...),
    e.g. the protocol's numbers when ``folds`` is a part of it. ``scvi_options`` go to the scvi-tools model
    of ``butterfly-C-scvi`` (e.g. ``{"max_epochs": 50}``). With ``translate_samples`` N, each butterfly model's
    translations are also scored as the mean over N latent draws (``translate(n_samples=N)``), as the model
    ``"<name> (N latent draws)"`` (the same trained model, so the same training seconds). With
    ``scoring_runs`` N, every clustering score is the mean over N clusterings (seeds ``seed`` to
    ``seed + N - 1``) instead of one run's. With ``joint``, each model's translations are also scored as
    the paper's integrative analysis (:func:`~butterfly.evaluate_translation`'s ``joint``). With ``compare``
    (default), ``examples["comparisons"]`` holds the first model against each other one on each fold's test
    cells: each metric's difference with a 95% interval from a paired bootstrap over the cells
    (:func:`~butterfly.metrics.paired_bootstrap`; columns :data:`COMPARISON_COLUMNS`).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> folds = bf.benchmark.folds_by_cell(400, 2, seed=0)
    >>> scores, examples = bf.benchmark.run_protocol(
    ...     rna[:400], atac[:400], folds[:1], models=["butterfly", "knn"],
    ...     fit_options={"pretrain_epochs": 1, "epochs": 1}, progress=False,
    ... )
    >>> ami = scores[scores["metric"] == "AMI"].set_index(["model", "profile"])["value"]
    >>> sorted(ami.index)  # doctest: +NORMALIZE_WHITESPACE
    [('butterfly', 'atac->rna'), ('butterfly', 'rna->atac'), ('knn', 'atac->rna'), ('knn', 'rna->atac'),
     ('measured', 'measured atac'), ('measured', 'measured rna')]
    >>> from butterfly.benchmark._report import summarize, summary_markdown
    >>> print(summary_markdown(summarize(scores)))  # mean ± sd over folds, one table per profile  # doctest: +SKIP
    """
    import pandas as pd

    from ..metrics._scores import paired_bootstrap
    from ._evaluate import _translate_and_score

    rows, examples, compared = [], {"obs": None, "profiles": {}}, []
    bar = progress_bar(total=len(folds) * len(models), desc="folds x models", disable=not progress)
    numbers = list(fold_numbers) if fold_numbers is not None else list(range(len(folds)))
    for position, (fold, (train, test)) in enumerate(zip(numbers, folds, strict=True)):
        fold_translations = {}
        for name in models:
            bar.set_postfix(fold=fold, model=name)
            start = time.perf_counter()
            model = _fit(
                name, first[train], second[train], modalities, seed, fit_options or {},
                label_key=label_key, match_steps=match_steps, scvi_options=scvi_options,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            scored = [(name, None)]
            if translate_samples and hasattr(model, "preprocessors"):  # a Butterfly, not a baseline
                draws = {"n_samples": translate_samples}
                scored.append((f"{name} ({translate_samples} latent draws)", draws))
            owner = model if hasattr(model, "preprocessors") else model._model
            kinds = {n: owner.preprocessors[n].kind for n in owner.names}
            for label, options in scored:
                results, translations, truths, labels = _translate_and_score(
                    model, first[test], second[test], label_key=label_key, seed=seed, reference=None,
                    latent=False, translate_options=options, scoring_runs=scoring_runs, layer=None, joint=joint,
                )  # fmt: skip
                fold_translations[label] = {d: t.X for d, t in translations.items()}
                rows.append({"fold": fold, "model": label, "profile": "training", "metric": "seconds",
                             "value": seconds})  # fmt: skip
                for profile, scores in results.items():
                    if profile.startswith("measured") and (name != models[0] or options):
                        continue  # the measured profiles do not depend on the model
                    rows += [
                        {"fold": fold, "model": "measured" if profile.startswith("measured") else label,
                         "profile": profile, "metric": m, "value": v}
                        for m, v in scores.items()
                    ]  # fmt: skip
            if position == 0:
                reference = model if hasattr(model, "preprocessors") else model._model
                names = reference.names
                data = dict(zip(names, (first[test], second[test]), strict=True))
                for source, target in (names, names[::-1]):
                    translated = model.translate(data[source], source=source, target=target, progress=False).X
                    examples["profiles"][name, f"{source}->{target}"] = translated
                    measured = reference.preprocessors[target].transform(data[target]).X
                    examples["profiles"]["measured", target] = measured
                examples["obs"] = first[test].obs.copy()
            bar.update(1)
        if compare and len(fold_translations) > 1:
            compared += _paired_comparisons(
                fold, fold_translations, truths, labels, kinds, seed, paired_bootstrap
            )
        if after_fold is not None:
            after_fold(pd.DataFrame(rows))
    bar.close()
    examples["comparisons"] = pd.DataFrame(compared, columns=COMPARISON_COLUMNS)
    return pd.DataFrame(rows), examples


#: The columns of ``examples["comparisons"]`` (:func:`run_protocol`): the first model (``model``) against each
#: other one (``versus``) on one fold's test cells, each metric's values, difference and 95% bootstrap interval.
COMPARISON_COLUMNS = ("fold", "model", "versus", "profile", "metric", "model_value", "versus_value",
                      "difference", "low", "high")  # fmt: skip


def _paired_comparisons(fold, translations, truths, labels, kinds, seed, paired_bootstrap) -> list[dict]:
    """The first model's translations against each other model's on one fold's test cells
    (:func:`~butterfly.metrics.paired_bootstrap`)."""
    reference, *others = list(translations)
    rows = []
    for direction, pred in translations[reference].items():
        target = direction.split("->")[1]
        kind = "atac" if kinds[target] == "atac" else "other"
        for other in others:
            result = paired_bootstrap(pred, translations[other][direction], truths[target], target_kind=kind,
                                      labels=labels, seed=seed)  # fmt: skip
            rows += [
                {"fold": fold, "model": reference, "versus": other, "profile": direction, "metric": metric,
                 "model_value": r["a"], "versus_value": r["b"], "difference": r["difference"], "low": r["low"],
                 "high": r["high"]}
                for metric, r in result.items()
            ]  # fmt: skip
    return rows
