"""Seconds per training epoch of each phase against the floating-point floor of this machine.

    python benchmarks/epoch_speed.py --data ../shared/data/snare_mcc

Trains on the translate_quality split's 8,247 training cells (of which 20% are held out for validation, as
in every fit) for a few epochs per phase and reports the median epoch time after the first. The floating-point
work of one epoch of each phase is counted by torch's FlopCounterMode with dense inputs (training steps only;
validation is forward passes on 20% of the cells and is timed but not counted); the timed runs read sparse
inputs as training does by default, so they do less than the counted work. The floor is that work at the GEMM rate of
this machine, measured here on the model's own matrix shapes, and also at the issue's reference figure of
150 GFLOP/s for the two cores. Writes epoch_speed.json and epoch_speed.md into --out.

On a GPU (``--device cuda``, written as epoch_speed_cuda.*) the thread counts do not apply, and
``--blocked-forms split batched`` times the chromosome-blocked layers' two forms side by side (batched is the
default there), and ``--cuda-graphs off on`` times eager training steps against steps replayed from CUDA graphs
(``TrainingConfig.cuda_graphs``, on by default there).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import issue_split, machine, machine_line, result_name, write_results  # noqa: E402
from butterfly.module._layers import ChromosomeBlockedDecoderLinear, ChromosomeBlockedEncoderLinear  # noqa: E402
from butterfly.train import _trainer as training  # noqa: E402

REFERENCE_GFLOPS = 150.0  # the issue's single-precision GEMM figure for this machine's two cores


def gemm_gflops(threads: int, batch: int, device: torch.device, repeats: int = 30) -> float:
    """Single-precision GEMM rate on the network's largest shapes (forward and both backward products)."""
    torch.set_num_threads(threads)
    shapes = [(batch, 1677, 256), (batch, 256, 1677), (256, batch, 1677), (batch, 640, 128)]
    flop, seconds = 0.0, 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        for _ in range(3):
            a @ b
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        seconds += time.perf_counter() - start
        flop += 2.0 * m * k * n * repeats
    return flop / seconds / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_blocked_form(model: bf.Butterfly, form: str) -> None:
    """Force the chromosome-blocked layers' form: "split" (per chromosome), "batched", or "auto" (default)."""
    for module in model.network.modules():
        if isinstance(module, ChromosomeBlockedEncoderLinear | ChromosomeBlockedDecoderLinear):
            module.batched = {"auto": None, "split": False, "batched": True}[form]


def phase_flops(rna: ad.AnnData, atac: ad.AnnData, batch: int, device: torch.device) -> dict[str, float]:
    """GFLOP of one epoch's training steps per phase (one epoch of each, counted)."""
    counted: dict[str, float] = {}
    original = training.Trainer._loop

    def counting_loop(self, phase, max_epochs, run_epoch, validate, average=None):
        def run_counted(epoch):
            with FlopCounterMode(display=False) as counter:
                stats = run_epoch(epoch)
            counted[phase] = counter.get_total_flops() / 1e9
            return stats

        return original(self, phase, 1, run_counted, validate, average)

    training.Trainer._loop = counting_loop
    try:
        model = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=0, device=str(device))
        # dense inputs: count the dense model's work (the floor), not the less the sparse first layers do;
        # eager steps: a replayed CUDA graph runs past torch's operator counting
        model.fit(1, 1, batch_size=batch, progress=False, sparse_inputs=False, cuda_graphs=False)
    finally:
        training.Trainer._loop = original
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per phase; the first is not timed")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--blocked-forms", nargs="+", default=["auto"], choices=["auto", "split", "batched"])
    parser.add_argument("--cuda-graphs", nargs="+", default=["on"], choices=["on", "off"],
                        help="on a GPU: training steps replayed from CUDA graphs (on, the default) or eager")  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        args.threads = [torch.get_num_threads()]  # the CPU only feeds the GPU

    rna, atac = (ad.read_h5ad(args.data / f"{m}.h5ad") for m in ("rna", "atac"))
    train = issue_split(rna.n_obs)[1]
    rna, atac = rna[train].copy(), atac[train].copy()

    rows = []
    for batch in args.batch_sizes:
        torch.set_num_threads(max(args.threads))
        flops = phase_flops(rna, atac, batch, device)
        for threads in args.threads:
            gemm = gemm_gflops(threads, batch, device)
            runs = [(p, f, g) for p in args.precisions for f in args.blocked_forms for g in args.cuda_graphs]
            for precision, form, graphs in runs:
                torch.set_num_threads(threads)
                model = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=0, device=str(device))
                set_blocked_form(model, form)
                history = model.fit(args.epochs, args.epochs, batch_size=batch, precision=precision,
                                    progress=False, cuda_graphs=graphs == "on")  # fmt: skip
                for phase, part in history.groupby("phase", sort=False):
                    seconds = float(part["seconds"].iloc[1:].median())
                    rows.append({
                        "phase": phase, "batch_size": batch, "threads": threads, "precision": precision,
                        "blocked_form": form, "cuda_graphs": graphs,
                        "seconds_per_epoch": round(seconds, 3), "gflop_per_epoch": round(flops[phase], 1),
                        "gflops_per_second": round(flops[phase] / seconds, 1),
                        "gemm_gflops": round(gemm, 1),
                        "x_floor_measured_gemm": round(seconds / (flops[phase] / gemm), 2),
                        "x_floor_reference": round(seconds / (flops[phase] / REFERENCE_GFLOPS), 2),
                    })  # fmt: skip
                    print(rows[-1])

    results = {"data": args.data.name, "n_train_cells": int(len(train)), "machine": machine(), "rows": rows,
               "device": str(device), "reference_gflops": REFERENCE_GFLOPS}  # fmt: skip
    on = results["machine"]["cuda"] if device.type == "cuda" else "CPU"
    lines = [
        f"# Seconds per training epoch on {args.data.name} ({len(train)} cells, 80% trained on), {on}",
        "",
        "x floor: epoch time over the time the counted work takes at the GEMM rate (measured here on the model's "
        f"shapes, at that thread count) and at the issue's reference {REFERENCE_GFLOPS:.0f} GFLOP/s.",
        "",
        "| phase | batch | threads | precision | blocked form | CUDA graphs | s / epoch | GFLOP / epoch | GFLOP/s "
        "| GEMM GFLOP/s | x floor (GEMM) | x floor (150) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['phase']} | {r['batch_size']} | {r['threads']} | {r['precision']} | {r['blocked_form']} | "
        f"{r['cuda_graphs'] if device.type == 'cuda' else '-'} | {r['seconds_per_epoch']:.3f} | "
        f"{r['gflop_per_epoch']:.1f} | {r['gflops_per_second']:.1f} | {r['gemm_gflops']:.1f} | "
        f"{r['x_floor_measured_gemm']:.2f} | {r['x_floor_reference']:.2f} |"
        for r in rows
    ]
    lines += ["", machine_line(results["machine"], device)]
    write_results(args.out, result_name("epoch_speed", device), results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
