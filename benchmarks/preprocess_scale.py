"""Time and peak memory of fitted preprocessing on a large sparse matrix (default 50,000 x 200,000, 2% dense).

    python benchmarks/preprocess_scale.py [--cells 50000 --features 200000 --density 0.02] [--out benchmarks/results]

ATAC: fit (binarise, peak filter, IDF, scale) and transform of all cells. RNA: fit (depth normalisation,
log1p, 3,000 HVGs) and transform. Writes preprocess_scale.json and .md. Peak memory is the resident set
size sampled during each step, next to the size of the input matrix itself.
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
from _common import PeakMemory, machine, write_results  # noqa: E402


def random_counts(n_cells: int, n_features: int, density: float, seed: int = 0) -> sp.csr_matrix:
    """A CSR count matrix with exactly ``density`` of its entries set (values 1-4, like ATAC), built row-blockwise."""
    rng = np.random.default_rng(seed)
    # One column drawn in each of `per_row` equal strata: sorted and duplicate-free by construction.
    per_row = int(round(density * n_features))
    width = n_features // per_row
    offsets = (np.arange(per_row, dtype=np.int32) * width)[None, :]
    indices = np.empty(n_cells * per_row, dtype=np.int32)
    block = 5_000
    for start in range(0, n_cells, block):
        stop = min(start + block, n_cells)
        cols = offsets + rng.integers(0, width, size=(stop - start, per_row), dtype=np.int32)
        indices[start * per_row : stop * per_row] = cols.ravel()
    data = rng.integers(1, 5, size=indices.size).astype(np.float32)
    indptr = np.arange(0, (n_cells + 1) * per_row, per_row, dtype=np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_features))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=200_000)
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    t0 = time.perf_counter()
    X = random_counts(args.cells, args.features, args.density)
    input_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    print(
        f"generated {X.shape} with {X.nnz:,} non-zeros ({input_bytes / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f}s"
    )
    chrom = np.repeat([f"chr{i}" for i in range(1, 21)], -(-args.features // 20))[: args.features]
    start = np.arange(args.features) * 1000
    var = pd.DataFrame({"chrom": chrom, "start": start, "end": start + 500})
    var.index = [f"{c}:{s}-{s + 500}" for c, s in zip(chrom, start, strict=True)]
    adata = ad.AnnData(X, var=var)
    adata.obs_names = [f"cell{i}" for i in range(args.cells)]

    rows = []
    for name, pre in (("atac", bf.ATACPreprocessor()), ("rna", bf.RNAPreprocessor())):
        for step in ("fit", "transform"):
            with PeakMemory() as mem:
                t = time.perf_counter()
                out = pre.fit(adata) if step == "fit" else pre.transform(adata)
                seconds = time.perf_counter() - t
            extra = "" if step == "fit" else f"{out.n_vars:,} features out, sparse={sp.issparse(out.X)}"
            rows.append(
                {
                    "modality": name,
                    "step": step,
                    "seconds": round(seconds, 2),
                    "peak_rss_gb": round(mem.peak / 1e9, 2),
                    "added_over_start_gb": round((mem.peak - mem.start) / 1e9, 2),
                    "note": extra,
                }
            )
            print(rows[-1])
            del out

    results = {
        "shape": [args.cells, args.features],
        "density": args.density,
        "nnz": int(X.nnz),
        "input_gb": input_bytes / 1e9,
        "machine": machine(),
        "rows": rows,
    }
    table = [
        f"# Preprocessing at scale: {args.cells:,} x {args.features:,} sparse, {args.density:.0%} dense "
        f"({X.nnz:,} non-zeros, input {input_bytes / 1e9:.2f} GB as CSR)",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores.",
        "",
        "| modality | step | seconds | peak RSS (GB) | added over start (GB) | note |",
        "|---|---|---|---|---|---|",
    ]
    table += [
        f"| {r['modality']} | {r['step']} | {r['seconds']} | {r['peak_rss_gb']} | {r['added_over_start_gb']} | {r['note']} |"
        for r in rows
    ]
    write_results(args.out, "preprocess_scale", results, "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
