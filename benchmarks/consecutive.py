"""Consecutive translation: proteins predicted from chromatin alone, through RNA (the paper's ATAC -> RNA -> ADT).

    python benchmarks/consecutive.py --multiome ../shared/data/multiome_bmmc_starter \
        --cite ../shared/data/cite_bmmc_neurips_starter [--folds 5] [--scoring-runs 10]

Two datasets of one tissue (human bone marrow, NeurIPS 2021): paired RNA+ATAC (Multiome) and paired
RNA+protein (CITE-seq); no cell has both ATAC and protein. In each of ``--folds`` folds of the Multiome cells,
a first model learns ATAC -> RNA on the other folds' cells; a second model learns RNA -> protein on all
CITE-seq cells, restricted to the genes the first model predicts. The held-out Multiome cells' ATAC is
translated to RNA and that RNA to proteins (the second model reads the first's translation as log-normalised
RNA by itself). Fold k trains both models with seed k (``bf.FAST_SETTING``).

No measured protein exists for these cells, so the proteins are scored by what is known of them:
- clustering (the paper's protocol, mean of ``--scoring-runs`` Leiden runs) against the Multiome cell types;
- marker contrasts: a protein's mean in the cell types that carry it minus its mean in the other cells
  (CLR units): CD3 in T cells, CD14 in CD14+ monocytes, CD19 in B cells, CD56 in NK cells;
- agreement with the proteins the second model predicts from the same cells' measured RNA ("direct").
The same chain of two kNN translators (20 neighbours, SVD 50) is scored alike, and so is the butterfly chain
fed its RNA without rescaling it to the second model's total (``normalized_to`` set to that total: what
passing the values as they are would do). Writes consecutive.json and .md into --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import machine, machine_line, mean_sd_table, write_results  # noqa: E402
from butterfly import metrics  # noqa: E402
from butterfly.benchmark._baselines import KNNTranslator  # noqa: E402
from butterfly.benchmark._protocols import folds_by_cell  # noqa: E402

MARKERS = {
    "CD3": ["CD4+ T naive", "CD4+ T activated", "CD8+ T"],
    "CD14": ["CD14+ Mono"],
    "CD19": ["Naive CD20+ B", "B1 B", "Transitional B"],
    "CD56": ["NK"],
}


def contrasts(proteins: ad.AnnData, cell_type: np.ndarray) -> dict[str, float]:
    out = {}
    for protein, types in MARKERS.items():
        level = np.asarray(proteins[:, protein].X).ravel()
        inside = np.isin(cell_type, types)
        out[protein] = float(level[inside].mean() - level[~inside].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--multiome", type=Path, required=True)
    parser.add_argument("--cite", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--scoring-runs", type=int, default=10)
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="consecutive")
    args = parser.parse_args()

    rna, atac = (ad.read_h5ad(args.multiome / f"{m}.h5ad") for m in ("rna", "atac"))
    cite_rna, adt = (ad.read_h5ad(args.cite / f"{m}.h5ad") for m in ("rna", "adt"))
    runs = args.scoring_runs
    rows = []
    for fold, (train, test) in enumerate(folds_by_cell(rna.n_obs, args.folds, seed=0)):
        start = time.perf_counter()
        first = bf.Butterfly(rna[train].copy(), atac[train].copy(), seed=fold)
        first.fit(**bf.FAST_SETTING, progress=False)
        genes = cite_rna.var_names.isin(first.preprocessors["rna"].features_)
        second = bf.Butterfly(cite_rna[:, genes].copy(), adt, modalities=("rna", "adt"), seed=fold)
        second.fit(**bf.FAST_SETTING, progress=False)
        seconds = time.perf_counter() - start
        knn_first = KNNTranslator(rna[train].copy(), atac[train].copy())
        knn_second = KNNTranslator(cite_rna[:, genes].copy(), adt, modalities=("rna", "adt"))

        cells_rna, cells_atac = rna[test].copy(), atac[test].copy()
        labels = cells_rna.obs[args.label_key].to_numpy()
        translated = first.translate(cells_atac, source="atac", target="rna", progress=False)
        knn_translated = knn_first.translate(cells_atac, source="atac", target="rna")
        profiles = {
            "measured ATAC": first.preprocessors["atac"].transform(cells_atac).X,
            "measured RNA": first.preprocessors["rna"].transform(cells_rna).X,
            "butterfly ATAC->RNA": translated.X,
            "butterfly ATAC->RNA->protein": second.translate(translated, source="rna", target="adt", progress=False),
            "butterfly ATAC->RNA->protein, not rescaled": second.translate(
                translated, source="rna", target="adt", progress=False,
                normalized_to=second.preprocessors["rna"].target_sum_,
            ),
            "butterfly RNA->protein (direct)": second.translate(cells_rna, source="rna", target="adt", progress=False),
            "kNN ATAC->RNA": knn_translated.X,
            "kNN ATAC->RNA->protein": knn_second.translate(knn_translated, source="rna", target="adt"),
            "kNN RNA->protein (direct)": knn_second.translate(cells_rna, source="rna", target="adt"),
        }  # fmt: skip
        direct = {
            "butterfly": profiles["butterfly RNA->protein (direct)"].X,
            "kNN": profiles["kNN RNA->protein (direct)"].X,
        }
        for name, profile in profiles.items():
            X = profile.X if isinstance(profile, ad.AnnData) else profile
            X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
            row = {"fold": fold, "profile": name, "cells": len(test), "training_seconds": seconds,
                   "AMI": metrics.cell_heterogeneity(X, labels, runs=runs)["AMI"]}  # fmt: skip
            if isinstance(profile, ad.AnnData):  # proteins
                row.update({f"{p} contrast": v for p, v in contrasts(profile, labels).items()})
                reference = direct[name.split()[0]]
                if "->RNA->" in name:
                    row["per-protein Pearson vs direct"] = metrics.pearson_per_feature(X, reference)
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)

    columns = ["AMI", *[f"{p} contrast" for p in MARKERS], "per-protein Pearson vs direct"]
    info = machine()
    lines = [
        f"# Consecutive translation: proteins from chromatin through RNA ({args.multiome.name} -> {args.cite.name})",
        "",
        f"{args.folds} folds of the {rna.n_obs} Multiome cells; the first model (ATAC -> RNA) trained on the other "
        f"folds, the second (RNA -> protein) on the {cite_rna.n_obs} CITE-seq cells' {int(genes.sum())} genes "
        f"that the first predicts; bf.FAST_SETTING, seed = fold. Mean ± sd over folds; AMI: mean of {runs} Leiden "
        "runs against the Multiome cell types; contrast: the protein's mean (CLR) in the cells of the types that "
        "carry it minus in the others.",
        "",
        *mean_sd_table(rows, "profile", columns),
        "",
        f"Training both models: {np.mean([r['training_seconds'] for r in rows]):.0f} s per fold. "
        + machine_line(info, torch.device("cpu")),
    ]
    results = {"multiome": args.multiome.name, "cite": args.cite.name, "folds": args.folds, "scoring_runs": runs,
               "shared_genes": int(genes.sum()), "rows": rows, "machine": info}  # fmt: skip
    write_results(args.out, args.name, results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
