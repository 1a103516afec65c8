"""Peak memory and time of translating many cells, for each ATAC output form.

    python benchmarks/translate_memory.py --data ../shared/data/snare_mcc --copies 4

Trains a throwaway model briefly (memory does not depend on how well it is trained), then, in a fresh
process per output form and method (``translate`` in memory, ``translate_to_h5ad`` into a file), translates
the data's RNA cells (``--copies`` stacked copies of them) into ATAC and records the peak resident memory
above what the process held before, next to the size of the output itself. Writes <name>.json and .md into --out (default name translate_memory).
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import PeakMemory, machine, write_results  # noqa: E402

FORMS = ("probability", "counts", "binary")


def child(args: argparse.Namespace) -> None:
    """One translation in this process; prints a JSON line."""
    import anndata as ad
    import torch

    import butterfly as bf

    torch.set_num_threads(args.threads)
    rna = ad.read_h5ad(args.data / "rna.h5ad")
    if args.copies > 1:
        rna = ad.concat([rna] * args.copies, index_unique="-")
    model = bf.Butterfly.load(args.model, device="cpu")
    # releases before translate(progress=...) take no such argument
    quiet = {"progress": False} if "progress" in inspect.signature(model.translate).parameters else {}
    to_file = args.method == "translate_to_h5ad"
    with PeakMemory() as mem, tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if to_file:
            model.translate_to_h5ad(rna, Path(tmp) / "out.h5ad", source="rna", target="atac", atac_output=args.child,
                                    progress=False)  # fmt: skip
            shape = ad.read_h5ad(Path(tmp) / "out.h5ad", backed="r").shape
        else:
            shape = model.translate(rna, source="rna", target="atac", atac_output=args.child, **quiet).shape
        seconds = time.perf_counter() - start
    print(json.dumps({"method": args.method, "output": args.child, "cells": shape[0], "peaks": shape[1],
                      "seconds": round(seconds, 2), "output_gb": round(shape[0] * shape[1] * 4 / 1e9, 3),
                      "peak_rise_gb": round((mem.peak - mem.start) / 1e9, 3)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with rna.h5ad and atac.h5ad")
    parser.add_argument("--copies", type=int, default=4, help="stack this many copies of the cells")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="translate_memory", help="result file name (without extension)")
    parser.add_argument("--child", choices=FORMS, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="translate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import anndata as ad

    import butterfly as bf

    rna, atac = (ad.read_h5ad(args.data / f"{m}.h5ad") for m in ("rna", "atac"))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = bf.Butterfly(rna[:2000].copy(), atac[:2000].copy(), modalities=("rna", "atac"), seed=0)
        model.fit(pretrain_epochs=1, epochs=1, progress=False)
        model.save(Path(tmp) / "model")
        methods = ["translate"] + (
            ["translate_to_h5ad"] if hasattr(bf.Butterfly, "translate_to_h5ad") else []
        )
        for method in methods:
            for form in FORMS:
                command = [sys.executable, __file__, "--data", str(args.data), "--copies", str(args.copies),
                           "--threads", str(args.threads), "--child", form, "--model", str(Path(tmp) / "model"),
                           "--method", method]  # fmt: skip
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(runs[-1])
    info = machine()
    lines = [f"# Translating {runs[0]['cells']:,} cells from RNA to {runs[0]['peaks']:,} ATAC peaks", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {args.threads} threads, torch {info['torch']}.", "",
             "| method | output | output GB | peak memory above the input and model, GB | seconds |",
             "|---|---|---|---|---|"]  # fmt: skip
    for run in runs:
        lines.append(f"| {run.get('method', 'translate')} | {run['output']} | {run['output_gb']} | "
                     f"{run['peak_rise_gb']} | {run['seconds']} |")  # fmt: skip
    write_results(args.out, args.name, {"data": args.data.name, "copies": args.copies,
                                                 "machine": info, "runs": runs}, "\n".join(lines) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
