"""Cell-type annotation through translation: label cells measured in one modality with a reference labelled
in the other (the paper's scATAC annotation: translate ATAC to RNA, then classify it with an SVM trained on
labelled RNA cells)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .._validation import ButterflyInputError, check_label_key
from ..model._butterfly import Butterfly
from ..model._inference import check_names, check_translation, source_cells


def annotate(
    model,
    adata: ad.AnnData,
    source: str,
    reference: ad.AnnData,
    label_key: str = "cell_type",
    *,
    target: str | None = None,
    layer: str | None = None,
    reference_layer: str | None = None,
    peak_matching: str = "exact",
    batch_size: int = 1024,
    progress: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Cell types of cells measured in ``source``, learnt from ``reference`` cells measured in ``target``.

    A linear support vector machine (scikit-learn's ``LinearSVC``, the classifier the paper takes from Abdelaal
    et al.'s benchmark of cell annotation) learns ``reference.obs[label_key]`` from the reference cells in
    the model's preprocessed ``target`` space (log-normalised selected genes for RNA); the cells are
    translated from ``source`` to ``target`` and classified. The reference need not be paired with anything:
    an RNA atlas labels ATAC-only cells.

    Parameters
    ----------
    model
        A trained :class:`~butterfly.Butterfly`, or a baseline with the same ``translate`` (kNN, linear).
    adata
        The cells to annotate, measured in ``source`` (an AnnData, or a MuData holding ``source``).
    reference
        Labelled cells measured in ``target``, raw counts as the model was trained on.
    target
        The reference's modality; by default the model's other one.
    layer, reference_layer
        Read ``adata`` / ``reference`` from that layer instead of ``X``.
    peak_matching, batch_size, progress
        As :meth:`Butterfly.translate`.
    seed
        Seeds the classifier's solver.

    Returns
    -------
    A DataFrame indexed by ``adata.obs_names``: ``label`` (a reference label) and ``margin``, how far the
    chosen label's decision value stands above the next one's (small: the classifier hesitated between two
    types; with two labels, the absolute decision value).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:1500], atac[:1500], seed=0)
    >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
    >>> labels = bf.annotate(model, atac[1500:], "atac", reference=rna[:1500], progress=False)
    >>> list(labels.columns), len(labels)
    (['label', 'margin'], 500)
    """
    from sklearn.svm import LinearSVC

    owner = model if isinstance(model, Butterfly) else model._model
    target = target or next((name for name in owner.names if name != source), source)
    check_names(owner, source, target)
    if hasattr(adata, "mod") and not isinstance(adata, ad.AnnData):  # a MuData: its cells measured in source
        if source not in adata.mod:
            raise ButterflyInputError(f"The MuData has no modality {source!r} (it has {sorted(adata.mod)}).")
        adata = adata.mod[source]
    if owner is model:
        check_translation(model, source, target, "probability")  # trained, before the classifier is
    elif layer is not None or peak_matching != "exact":
        raise ButterflyInputError(
            "layer= and peak_matching= are a butterfly model's options; a baseline reads adata.X as it is."
        )
    if not isinstance(reference, ad.AnnData) or reference.n_obs == 0:
        size = (
            "0 cells"
            if isinstance(reference, ad.AnnData)
            else f"a {type(reference).__name__}, not an AnnData"
        )
        raise ButterflyInputError(
            f"The {target} reference holds {size}: give labelled cells measured in {target} (reference="
            "), at least two cell types of them."
        )
    labels = check_label_key(reference, label_key, what=f"The {target} reference").astype(str).to_numpy()
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ButterflyInputError(
            f"The {target} reference has one label only ({classes[0]!r} in .obs[{label_key!r}]): a classifier "
            "needs at least two cell types to tell apart."
        )
    cells, options = source_cells(owner, reference, target, reference_layer)
    owner.preprocessors[target]._check_feature_kind(
        cells, what=f"The {target} reference",
        fix=f"The reference= holds labelled cells measured in {target}, the modality the "
        f"cells are translated into; the cells to label go in adata=.",
    )  # fmt: skip
    profiles = owner.preprocessors[target].transform(cells, **options).X
    classifier = LinearSVC(dual="auto", random_state=seed).fit(profiles, labels)  # auto: the default from 1.5
    translated = model.translate(
        adata, source=source, target=target, progress=progress,
        **({"layer": layer, "peak_matching": peak_matching, "batch_size": batch_size, "atac_output": "tfidf"}
           if owner is model else {}),  # the reference's space: the model's scaled TF-IDF for ATAC
    )  # fmt: skip
    decision = classifier.decision_function(translated.X)
    if decision.ndim == 1:  # two labels: the sign picks one
        chosen, margin = (decision > 0).astype(int), np.abs(decision)
    else:
        top = np.sort(decision, axis=1)
        chosen, margin = decision.argmax(axis=1), top[:, -1] - top[:, -2]
    return pd.DataFrame(
        {"label": pd.Categorical(classifier.classes_[chosen], categories=classes), "margin": margin},
        index=translated.obs_names.copy(),
    )
