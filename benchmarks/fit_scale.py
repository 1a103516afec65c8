"""Memory and time of building and training a model on many cells: does the data stay sparse until the minibatch?

    python benchmarks/fit_scale.py [--cells 50000 --genes 20000 --peaks 100000] [--out benchmarks/results]

Synthetic counts (the sizes matter here, not the biology; quality is measured on real data elsewhere): RNA
``--cells`` x ``--genes`` at ``--rna-density``, ATAC ``--cells`` x ``--peaks`` on 20 chromosomes at
``--atac-density``. Steps, each with its time and its peak resident memory above the process before it:
``Butterfly(rna, atac)`` (fitted preprocessing, CSR copies of both modalities), then ``fit`` with
``--epochs`` epoch of each phase at ``--batch-size``, then ``translate`` of 10,000 cells RNA -> ATAC. A
dense copy of either input would cost ``cells x features x 4`` bytes (printed alongside). Writes fit_scale.json
and .md.
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

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import PeakMemory, machine, machine_line, write_results  # noqa: E402
from preprocess_scale import random_counts  # noqa: E402


def csr_gb(X) -> float:
    return (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 1e9


def synthetic(cells: int, genes: int, peaks: int, rna_density: float, atac_density: float):
    rna = ad.AnnData(random_counts(cells, genes, rna_density, seed=1))
    rna.var_names = [f"gene{i}" for i in range(genes)]
    atac = ad.AnnData(random_counts(cells, peaks, atac_density, seed=2))
    chrom = np.repeat([f"chr{i}" for i in range(1, 21)], -(-peaks // 20))[:peaks]
    start = np.arange(peaks) * 1000
    atac.var_names = [f"{c}:{s}-{s + 500}" for c, s in zip(chrom, start, strict=True)]
    atac.var = pd.DataFrame(index=atac.var_names)
    rna.obs_names = atac.obs_names = [f"cell{i}" for i in range(cells)]
    return rna, atac


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=50_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--peaks", type=int, default=100_000)
    parser.add_argument("--rna-density", type=float, default=0.1)
    parser.add_argument("--atac-density", type=float, default=0.03)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each phase")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rna, atac = synthetic(args.cells, args.genes, args.peaks, args.rna_density, args.atac_density)
    inputs = {"rna": csr_gb(rna.X), "atac": csr_gb(atac.X)}
    dense = {"rna": args.cells * args.genes * 4 / 1e9, "atac": args.cells * args.peaks * 4 / 1e9}
    print(f"inputs (CSR): {inputs} GB; dense they would be {dense} GB", flush=True)

    steps = []

    def step(name, run):
        with PeakMemory() as mem:
            start = time.perf_counter()
            out = run()
            seconds = time.perf_counter() - start
        steps.append({"step": name, "seconds": round(seconds, 1), "added_gb": round((mem.peak - mem.start) / 1e9, 2),
                      "peak_rss_gb": round(mem.peak / 1e9, 2)})  # fmt: skip
        print(steps[-1], flush=True)
        return out

    model = step("Butterfly(rna, atac): preprocessing", lambda: bf.Butterfly(rna, atac, seed=0))
    kept = {n: csr_gb(X) for n, X in model._matrices.items()}
    features = {n: X.shape[1] for n, X in model._matrices.items()}
    history = step(
        f"fit: {args.epochs} epoch(s) of each phase, batch {args.batch_size}",
        lambda: model.fit(args.epochs, args.epochs, batch_size=args.batch_size, progress=False),
    )
    phases = {
        p: round(float(part["seconds"].median()), 1) for p, part in history.groupby("phase", sort=False)
    }
    n_translate = min(10_000, args.cells)
    out = step(f"translate {n_translate:,} cells RNA -> ATAC",
               lambda: model.translate(rna[:n_translate], source="rna", target="atac", progress=False))  # fmt: skip
    assert out.shape == (n_translate, features["atac"])

    results = {
        "cells": args.cells, "genes": args.genes, "peaks": args.peaks, "rna_density": args.rna_density,
        "atac_density": args.atac_density, "batch_size": args.batch_size, "threads": args.threads,
        "input_csr_gb": inputs, "dense_gb": dense, "model_features": features, "model_csr_gb": kept,
        "steps": steps, "seconds_per_epoch": phases, "machine": machine(),
    }  # fmt: skip
    lines = [
        f"# Building and training on {args.cells:,} cells: RNA {args.genes:,} genes ({args.rna_density:.0%} non-zero), "
        f"ATAC {args.peaks:,} peaks ({args.atac_density:.0%})",
        "",
        f"Inputs as CSR: RNA {inputs['rna']:.2f} GB, ATAC {inputs['atac']:.2f} GB (dense: {dense['rna']:.1f} and "
        f"{dense['atac']:.1f} GB). The model keeps {features['rna']:,} genes and {features['atac']:,} peaks, as CSR: "
        f"{kept['rna']:.2f} and {kept['atac']:.2f} GB.",
        "",
        "| step | seconds | peak memory above the process before it (GB) | peak RSS (GB) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s['step']} | {s['seconds']} | {s['added_gb']} | {s['peak_rss_gb']} |" for s in steps]
    lines += ["", "Seconds per epoch: " + ", ".join(f"{p} {s} s" for p, s in phases.items()) + ".", ""]
    lines += [machine_line(results["machine"], torch.device("cpu"))]
    write_results(args.out, "fit_scale", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
