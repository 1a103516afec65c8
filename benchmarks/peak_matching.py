"""How much an ATAC->RNA translation loses when the input's peaks were called apart from the model's.

    python benchmarks/peak_matching.py --data ../shared/data/snare_mcc [--model DIR] [--scoring-runs 10]

A model trained on the translate_quality split's training cells (``bf.FAST_SETTING``, ``--model-seed``; or
``--model DIR``, one saved from that split) translates the test cells' real ATAC counts to RNA, first with
the peaks as measured (``peak_matching="exact"``), then with the same counts re-described as other peak
callings would give them, matched by ``peak_matching="overlap"``:

- shifted: every peak moved by one base, chromosome names without 'chr' (nothing lost: a check);
- merged within 1 kb / 5 kb: peaks closer than that joined into one (a coarser caller; counts summed);
- widened by 500 bp: each peak extended 500 bp both ways and overlapping ones joined;
- 1/2 or 1/4 of the peaks: a random share kept (a shallower caller; the model's other peaks read closed).

Scores against the test cells' measured RNA (the model's log-normalised genes): clustering as the paper
(AMI, ARI; mean over ``--scoring-runs`` Leiden runs) and per-gene Pearson, plus clustering of the latent.
Writes peak_matching.json and .md into --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import issue_split, machine, write_results  # noqa: E402
from butterfly import metrics  # noqa: E402
from butterfly.benchmark._evaluate import score_prediction  # noqa: E402


def _peak_table(atac: ad.AnnData) -> pd.DataFrame:
    peaks = bf.parse_peaks(atac.var)
    return pd.DataFrame({"chrom": peaks.chrom.astype(str), "start": peaks.start, "end": peaks.end})


def _as_anndata(
    atac: ad.AnnData, table: pd.DataFrame, X: sp.csr_matrix, drop_chr: bool = False
) -> ad.AnnData:
    chrom = table["chrom"].str.replace(r"^chr", "", regex=True) if drop_chr else table["chrom"]
    names = [f"{c}:{s}-{e}" for c, s, e in zip(chrom, table["start"], table["end"], strict=True)]
    return ad.AnnData(X=X.tocsr(), obs=atac.obs.copy(), var=pd.DataFrame(index=names))


def merged(atac: ad.AnnData, gap: int, widen: int = 0) -> ad.AnnData:
    """Peaks widened by ``widen`` bases each way, then those less than ``gap`` bases apart joined; the counts
    of joined peaks summed."""
    table = _peak_table(atac)
    table["start"] = (table["start"] - widen).clip(lower=0)
    table["end"] = table["end"] + widen
    group = np.empty(len(table), dtype=np.int64)
    n_groups = 0
    for _, part in table.groupby("chrom", sort=False):
        part = part.sort_values("start")
        reach = np.maximum.accumulate(part["end"].to_numpy())  # nested peaks join the one holding them
        starts_group = np.r_[True, part["start"].to_numpy()[1:] - reach[:-1] >= gap]
        group[part.index.to_numpy()] = n_groups + np.cumsum(starts_group) - 1
        n_groups += int(starts_group.sum())
    joining = sp.csr_matrix(
        (np.ones(len(table)), (np.arange(len(table)), group)), shape=(len(table), n_groups)
    )
    joined = table.groupby(group).agg(chrom=("chrom", "first"), start=("start", "min"), end=("end", "max"))
    return _as_anndata(atac, joined, atac.X @ joining)


def shifted(atac: ad.AnnData) -> ad.AnnData:
    table = _peak_table(atac)
    table["start"] += 1
    table["end"] += 1
    return _as_anndata(atac, table, sp.csr_matrix(atac.X), drop_chr=True)


def subset(atac: ad.AnnData, share: float, seed: int = 0) -> ad.AnnData:
    keep = np.sort(np.random.default_rng(seed).choice(atac.n_vars, int(share * atac.n_vars), replace=False))
    return atac[:, keep].copy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument(
        "--model", type=Path, default=None, help="a model saved from the same split (skips training)"
    )
    parser.add_argument("--model-seed", type=int, default=0)
    parser.add_argument("--scoring-runs", type=int, default=10)
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="peak_matching")
    args = parser.parse_args()

    rna, atac = (ad.read_h5ad(args.data / f"{m}.h5ad") for m in ("rna", "atac"))
    test, train = issue_split(rna.n_obs)
    if args.model is not None:
        model, training_seconds = bf.Butterfly.load(args.model), None
    else:
        model = bf.Butterfly(rna[train].copy(), atac[train].copy(), seed=args.model_seed)
        start = time.perf_counter()
        model.fit(**bf.FAST_SETTING, progress=False)
        training_seconds = time.perf_counter() - start
    rna_test, atac_test = rna[test].copy(), atac[test].copy()
    # cells without counts in a re-called peak set would be refused: keep those every variant can read
    variants = {
        "as measured (exact)": atac_test,
        "shifted by 1 base, no 'chr'": shifted(atac_test),
        "merged within 1 kb": merged(atac_test, 1_000),
        "merged within 5 kb": merged(atac_test, 5_000),
        "widened by 500 bp, overlapping joined": merged(atac_test, 1, widen=500),
        "1/2 of the peaks": subset(atac_test, 0.5),
        "1/4 of the peaks": subset(atac_test, 0.25),
    }
    readable = np.ones(len(test), dtype=bool)
    for cells in variants.values():
        readable &= np.asarray(cells.X.sum(axis=1)).ravel() > 0
    truth = model.preprocessors["rna"].transform(rna_test[readable]).X
    labels = rna_test.obs[args.label_key].to_numpy()[readable]
    fitted = bf.parse_peaks(pd.DataFrame(index=model.preprocessors["atac"].input_features_))

    rows = []
    for name, cells in variants.items():
        cells = cells[readable].copy()
        matching = "exact" if name.endswith("(exact)") else "overlap"
        covered = len(model.preprocessors["atac"].features_)
        if matching == "overlap":
            covered = int((bf.pp.overlap_matrix(bf.parse_peaks(cells.var), fitted).getnnz(axis=0) > 0).sum())
        translated = model.translate(
            cells, source="atac", target="rna", peak_matching=matching, progress=False
        )
        scores = score_prediction(
            translated.X, truth, labels, target_kind="rna", scoring_runs=args.scoring_runs
        )
        latent = metrics.cell_heterogeneity(translated.obsm["X_butterfly"], labels, runs=args.scoring_runs)
        rows.append({
            "variant": name, "matching": matching, "input_peaks": int(cells.n_vars), "model_peaks_covered": covered,
            "AMI": scores["AMI"], "ARI": scores["ARI"], "pearson_per_gene": scores["pearson_per_feature"],
            "latent_AMI": latent["AMI"],
        })  # fmt: skip
        print(rows[-1])

    n_model = len(model.preprocessors["atac"].features_)
    lines = [
        f"# ATAC->RNA from peaks called apart from the model's ({args.data.name}, {int(readable.sum())} test cells)",
        "",
        f"Model: {'loaded from ' + str(args.model) if args.model else 'bf.FAST_SETTING, seed ' + str(args.model_seed)}"
        f" ({n_model} peaks). Clustering: mean of {args.scoring_runs} Leiden runs.",
        "",
        "| input peaks | matching | peaks | model peaks covered | AMI | ARI | per-gene Pearson | latent AMI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['matching']} | {r['input_peaks']} | {r['model_peaks_covered']} "
        f"({r['model_peaks_covered'] / n_model:.0%}) | {r['AMI']:.3f} | {r['ARI']:.3f} | "
        f"{r['pearson_per_gene']:.3f} | {r['latent_AMI']:.3f} |"
        for r in rows
    ]
    info = machine()
    lines += ["", f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}."]
    results = {"data": args.data.name, "n_test_cells": int(readable.sum()), "model_peaks": n_model,
               "training_seconds": training_seconds, "scoring_runs": args.scoring_runs, "rows": rows,
               "machine": info}  # fmt: skip
    write_results(args.out, args.name, results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
