"""The demo: train on the shipped SNARE-seq cells, translate held-out cells both ways, write a report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..datasets import _shipped as datasets
from ..io._atomic import check_report_folder, write_h5ad_atomic, write_text_atomic
from ..metrics import _scores as metrics
from ..model import TRUSTED_VALIDATION_R, Butterfly
from ..model._pairing import leiden_groups
from ..model._persistence import check_save_target
from ..pl import _figures as report
from ..tl._annotate import annotate
from ..tl._integrate import JOINT_KEY, integrate
from ._evaluate import _joined_scores_by_label, evaluate_translation, scores_table


def _maybe(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


#: Everything the demo writes into its report folder.
REPORT_FILES = frozenset(
    {
        "metrics.json",
        "metrics.md",
        "tsne_rna.png",
        "tsne_atac.png",
        "tsne_joint.png",
        "loss_curves.png",
        "annotation.png",
        "validation_scores.png",
        "scores_by_label.png",
        "translated_rna_from_atac.h5ad",
        "translated_atac_from_rna.h5ad",
        "model",
    }
)


def run_demo(
    out: str | os.PathLike = "butterfly_demo",
    *,
    pretrain_epochs: int = 100,
    epochs: int = 200,
    patience: int = 50,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Train RNA<->ATAC on 80% of the 2,000 shipped SNARE-seq cells and report on the other 20%.

    Writes into ``out``: ``metrics.json`` and ``metrics.md`` (clustering of measured and translated test
    cells, and of the latent each translation starts from, against the author cell types; per-gene Pearson
    for ATAC->RNA; AUROC for RNA->ATAC; the test cells' cell types from their ATAC alone, labelled by
    :func:`~butterfly.annotate` from the training cells' RNA; clustering of each measured modality joined
    with its translation into the other, :func:`~butterfly.integrate`),
    ``tsne_rna.png`` and ``tsne_atac.png`` (measured vs translated, coloured by cell type), ``tsne_joint.png``
    (both modalities measured, and each measured one joined with its translation),
    ``loss_curves.png``, ``annotation.png`` (how the test cells of each type were labelled),
    ``validation_scores.png`` (each gene's validation r for ATAC->RNA, and the best genes),
    ``scores_by_label.png`` (each cell type's mean per-cell score each way, also in the metrics), the translated
    test cells (``translated_*.h5ad``) and the trained model (``model/``).
    A folder holding only an earlier demo's report is replaced; one holding anything else is refused unless
    ``overwrite=True`` (its other files are left alone either way).
    """
    out = Path(out)
    check_report_folder(out, REPORT_FILES, overwrite=overwrite)
    check_save_target(out / "model", overwrite=True)  # an earlier demo's model, or none: before training
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rna, atac = datasets.snare_mcc_demo()
    order = np.random.RandomState(seed).permutation(rna.n_obs)
    n_test = rna.n_obs // 5
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])

    model = Butterfly(rna[train], atac[train], modalities=("rna", "atac"), seed=seed, device=device)
    history = model.fit(pretrain_epochs=pretrain_epochs, epochs=epochs, patience=patience, progress=progress)
    train_seconds = time.perf_counter() - started

    results = evaluate_translation(
        model, rna[test], atac[test], label_key="cell_type", seed=seed, latent=True
    )
    rna_pred = model.translate(atac[test], source="atac", target="rna")
    atac_pred = model.translate(rna[test], source="rna", target="atac")
    labels = rna[test].obs["cell_type"].to_numpy()
    # cell types from ATAC alone, learnt from the training cells' RNA labels (kept with the translation)
    annotated = annotate(model, atac[test], "atac", reference=rna[train], progress=False)
    rna_pred.obs["predicted_cell_type"] = annotated["label"].to_numpy()
    rna_pred.obs["prediction_margin"] = annotated["margin"].to_numpy()
    annotation = metrics.annotation_scores(annotated["label"].astype(str), labels.astype(str))
    measured = {
        name: model.preprocessors[name].transform(d[test]).X for name, d in (("rna", rna), ("atac", atac))
    }
    # the genes the validation cells say translate well, and how they fare on the test cells
    validation_r = rna_pred.var["validation_pearson"].to_numpy()
    test_r = metrics.feature_pearson(rna_pred.X, measured["rna"])
    above = validation_r > TRUSTED_VALIDATION_R
    below = (validation_r <= TRUSTED_VALIDATION_R) & ~np.isnan(test_r)
    trusted = {
        "validation_r_above": TRUSTED_VALIDATION_R,
        "genes_above": int(above.sum()),
        "test_r_of_genes_above": float(np.nanmean(test_r[above])) if above.any() else None,
        "test_r_of_other_genes": float(np.nanmean(test_r[below])),
    }
    # each measured modality joined with its translation into the other (kept with the translation)
    joined = {
        "measured RNA + measured ATAC": integrate(model, {"rna": rna[test], "atac": atac[test]}, seed=seed),
        "measured RNA + translated ATAC": integrate(model, {"rna": rna[test], "atac": atac_pred}, seed=seed),
        "translated RNA + measured ATAC": integrate(model, {"rna": rna_pred, "atac": atac[test]}, seed=seed),
    }
    atac_pred.obsm[JOINT_KEY] = joined["measured RNA + translated ATAC"]
    rna_pred.obsm[JOINT_KEY] = joined["translated RNA + measured ATAC"]
    integration = {
        name: metrics.clustering_scores(leiden_groups(embedding, resolution=1.0, seed=seed), labels)
        for name, embedding in joined.items()
    }
    report.plot_tsne_panels(
        {"measured RNA": measured["rna"], "RNA translated from ATAC": rna_pred.X},
        {"cell type": labels},
        out / "tsne_rna.png",
    )
    report.plot_tsne_panels(
        {"measured ATAC": measured["atac"], "ATAC translated from RNA": atac_pred.X},
        {"cell type": labels},
        out / "tsne_atac.png",
    )
    report.plot_tsne_panels(joined, {"cell type": labels}, out / "tsne_joint.png")
    report.plot_history(history, out / "loss_curves.png")
    report.plot_annotation(labels, annotated["label"], out / "annotation.png")
    report.plot_validation_scores(rna_pred, save=out / "validation_scores.png")
    by_label = _joined_scores_by_label(
        model, {"rna->atac": atac_pred, "atac->rna": rna_pred}, measured, labels
    )
    report.plot_scores_by_label(by_label, out / "scores_by_label.png")
    write_h5ad_atomic(rna_pred, out / "translated_rna_from_atac.h5ad")
    write_h5ad_atomic(atac_pred, out / "translated_atac_from_rna.h5ad")
    model.save(out / "model", overwrite=True)

    summary = {
        "data": "SNARE-seq mouse cortex, 2,000 cells shipped with butterfly",
        "train_cells": int(len(train)),
        "test_cells": int(len(test)),
        "epochs_run": {
            phase: int(part["epoch"].max() + 1) for phase, part in history.groupby("phase", sort=False)
        },
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "scores": results,
        "atac_cells_annotated_from_rna": annotation,
        "genes_by_validation_r": trusted,
        "integration": integration,
        "scores_by_cell_type": by_label.to_dict("index"),
    }
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2))
    table = scores_table(results)
    write_text_atomic(
        out / "metrics.md",
        f"# butterfly demo: RNA <-> ATAC on {len(test)} held-out SNARE-seq cells\n\n"
        f"Trained on {len(train)} cells in {train_seconds:.0f} s.\n\n{table}\n"
        "Cell types of the test cells from their ATAC alone (translated to RNA, labelled by an SVM trained on "
        "the training cells' RNA; `obs['predicted_cell_type']` of translated_rna_from_atac.h5ad):\n\n"
        + scores_table({"ATAC annotated from RNA": annotation})
        + f"\n{trusted['genes_above']} genes translate from ATAC with validation r above {TRUSTED_VALIDATION_R} "
        "(`var['validation_pearson']`, scored on the validation cells held out of training); on the test "
        f"cells their translations reach r {_maybe(trusted['test_r_of_genes_above'])}, the other genes' "
        f"{_maybe(trusted['test_r_of_other_genes'])}.\n\n"
        "Each measured modality joined with its translation into the other (`bf.integrate`, "
        f"`obsm['{JOINT_KEY}']` of the translated files), clustered (Leiden, resolution 1):\n\n"
        + scores_table(integration)
        + "\nEach cell type's test cells and the mean of their per-cell scores (`scores_by_label.png`):\n\n"
        + scores_table(by_label.to_dict("index"), first_column="cell type", whole=("cells",)),
    )
    return summary
