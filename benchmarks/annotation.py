"""Cell-type annotation of ATAC-only cells from a labelled RNA reference, the paper's protocol (its Fig. 4d-e).

    python benchmarks/annotation.py --data ../shared/data/snare_mcc [--folds 5] [--only-folds 0 1] [--pairing measured]

5 folds by cell (``protocols.folds_by_cell``, seed 0). In each fold the other folds' cells are split at random
into two halves: paired RNA+ATAC cells whose labels are not used (the translator trains on them:
``bf.FAST_SETTING``, seed = fold, ``--pairing`` as :class:`butterfly.Butterfly`), and RNA-only cells with
labels (the reference the classifier learns). The held-out fold's ATAC is annotated by ``bf.annotate``: a
linear SVM trained on the reference's RNA labels the ATAC translated to RNA. The same classifier labels the
translations of the kNN and linear translators (trained on the same paired half), and the held-out cells'
measured RNA (what the classifier reaches when RNA is measured). Scores: accuracy, Cohen's kappa, F1-macro,
F1-weighted against ``--label-key``; the most common reference label's scores for reference.
Writes annotation.json and .md into --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from sklearn.svm import LinearSVC

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import machine, machine_line, mean_sd_table, write_results  # noqa: E402
from butterfly import metrics  # noqa: E402
from butterfly.benchmark._baselines import KNNTranslator, LinearTranslator  # noqa: E402
from butterfly.benchmark._protocols import folds_by_cell  # noqa: E402

METRICS = ["accuracy", "kappa", "F1_macro", "F1_weighted"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", type=int, nargs="*", default=None)
    parser.add_argument("--pairing", default="measured", choices=["measured", "cluster"])
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="annotation")
    args = parser.parse_args()

    rna, atac = (ad.read_h5ad(args.data / f"{m}.h5ad") for m in ("rna", "atac"))
    labels = rna.obs[args.label_key].astype(str).to_numpy()
    rows = []
    for fold, (train, test) in enumerate(folds_by_cell(rna.n_obs, args.folds, seed=0)):
        if args.only_folds is not None and fold not in args.only_folds:
            continue
        halves = np.random.default_rng(fold).permutation(train)
        paired, reference = np.sort(halves[: len(halves) // 2]), np.sort(halves[len(halves) // 2 :])
        rna_paired, atac_paired = rna[paired].copy(), atac[paired].copy()
        start = time.perf_counter()
        model = bf.Butterfly(rna_paired, atac_paired, seed=fold, pairing=args.pairing)
        model.fit(**bf.FAST_SETTING, progress=False)
        seconds = time.perf_counter() - start
        cells, reference_rna = atac[test].copy(), rna[reference].copy()
        truth = labels[test]
        translators = {
            f"butterfly ({args.pairing} pairs) + SVM": model,
            "kNN translator + SVM": KNNTranslator(rna_paired, atac_paired),
            "linear translator + SVM": LinearTranslator(rna_paired, atac_paired),
        }
        predicted = {
            name: bf.annotate(translator, cells, "atac", reference_rna, args.label_key, progress=False)[
                "label"
            ]
            for name, translator in translators.items()
        }
        # the classifier on the held-out cells' measured RNA: bf.annotate's SVM, fed the truth's own modality
        pre = model.preprocessors["rna"]
        svm = LinearSVC(dual="auto", random_state=0).fit(pre.transform(reference_rna).X, labels[reference])
        predicted["measured RNA + SVM (reference)"] = svm.predict(pre.transform(rna[test]).X)
        common = pd.Series(labels[reference]).value_counts().index[0]
        predicted[f"most common label ({common})"] = np.full(len(test), common)
        for name, guess in predicted.items():
            scores = metrics.annotation_scores(np.asarray(guess).astype(str), truth)
            rows.append(
                {"fold": fold, "method": name, "cells": len(test), "training_seconds": seconds, **scores}
            )
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)

    folds, info = sorted({r["fold"] for r in rows}), machine()
    lines = [
        f"# Annotating ATAC-only cells from a labelled RNA reference ({args.data.name})",
        "",
        f"Folds {folds} of {args.folds} by cell; the other folds split into paired cells without labels (the "
        "translator's training) and labelled RNA-only cells (the SVM's reference). Mean ± sd over folds.",
        "",
        *mean_sd_table(rows, "method", METRICS),
        "",
        f"butterfly training: {np.mean([r['training_seconds'] for r in rows]):.0f} s per fold. "
        + machine_line(info, torch.device("cpu")),
    ]
    results = {
        "data": args.data.name,
        "folds": args.folds,
        "pairing": args.pairing,
        "rows": rows,
        "machine": info,
    }
    write_results(args.out, args.name, results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
