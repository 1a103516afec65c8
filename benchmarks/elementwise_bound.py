"""How close to the FLOP floor could ATAC pretraining get if its two costliest elementwise passes were free?

    python benchmarks/elementwise_bound.py --data ../shared/data/snare_mcc

A bound, not a speed-up: ATAC pretraining epochs (batch 256, the translate_quality split's training cells)
are timed with the BCE loss's forward value (softplus over every logit) replaced by a constant zero, with
the hidden layers' dropout replaced by the identity, with both, and as they are. The gradient of the loss is
unchanged (its backward pass, ``sigmoid(x) - y``, still runs); the dropout-free runs train another function.
The four variants alternate in one process, round after round, so that the machine's drift from run to run
touches each alike; each round's figure is the median epoch after the first. Writes elementwise_bound.json
and .md into --out.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import issue_split, machine, machine_line, write_results  # noqa: E402
from butterfly.module import _layers as bnn  # noqa: E402
from butterfly.module import _network as network  # noqa: E402
from epoch_speed import REFERENCE_GFLOPS, phase_flops  # noqa: E402

PHASE = "pretrain atac"
VARIANTS = {  # name: (softplus free, dropout free)
    "as trained": (False, False),
    "softplus free": (True, False),
    "dropout free": (False, True),
    "both free": (True, True),
}


def _zero_forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    ctx.save_for_backward(logits, target)
    return logits.new_zeros(())


def _identity(self, x: torch.Tensor) -> torch.Tensor:
    return x


@contextlib.contextmanager
def free_passes(softplus: bool, dropout: bool) -> Iterator[None]:
    """Within: the BCE's forward value is a constant zero (its backward unchanged) and/or butterfly's dropout
    is the identity; both put back on leaving."""
    bce, drop = network._BCEWithLogits.forward, bnn.Dropout.forward
    try:
        if softplus:
            network._BCEWithLogits.forward = staticmethod(_zero_forward)
        if dropout:
            bnn.Dropout.forward = _identity
        yield
    finally:
        network._BCEWithLogits.forward, bnn.Dropout.forward = staticmethod(bce), drop


def time_variant(rna, atac, softplus_free: bool, dropout_free: bool, epochs: int, batch: int) -> float:
    """Median ATAC pretraining epoch (after the first) with the chosen passes made free."""
    with free_passes(softplus_free, dropout_free):
        model = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=0)
        history = model.fit(epochs, 1, batch_size=batch, progress=False)
    return float(history[history["phase"] == PHASE]["seconds"].iloc[1:].median())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=4, help="the first is reported but not summarised")
    parser.add_argument("--epochs", type=int, default=6, help="ATAC pretraining epochs per run")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rna, atac = (ad.read_h5ad(args.data / f"{m}.h5ad") for m in ("rna", "atac"))
    train = issue_split(rna.n_obs)[1]
    rna, atac = rna[train].copy(), atac[train].copy()
    floor = phase_flops(rna, atac, args.batch_size, torch.device("cpu"))[PHASE] / REFERENCE_GFLOPS

    rounds = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, (softplus_free, dropout_free) in VARIANTS.items():
            seconds = time_variant(rna, atac, softplus_free, dropout_free, args.epochs, args.batch_size)
            rounds[name].append(round(seconds, 3))
            print(f"round {r}: {name}: {seconds:.3f} s", flush=True)
    kept = {name: values[1:] if len(values) > 1 else values for name, values in rounds.items()}
    summary = {name: float(np.median(values)) for name, values in kept.items()}
    results = {
        "data": args.data.name, "phase": PHASE, "batch_size": args.batch_size, "threads": args.threads,
        "floor_seconds": floor, "reference_gflops": REFERENCE_GFLOPS, "rounds": rounds,
        "median_after_first_round": summary, "machine": machine(),
    }  # fmt: skip
    lines = [
        f"# ATAC pretraining epoch with elementwise passes made free ({args.data.name}, batch {args.batch_size}, "
        f"{args.threads} threads)",
        "",
        f"Floor: the counted work at {REFERENCE_GFLOPS:.0f} GFLOP/s = {floor:.3f} s. Each round runs the four "
        "variants in turn; the summary is the median of the rounds after the first.",
        "",
        "| variant | s / epoch, each round | median (rounds 2+) | x floor |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {' / '.join(f'{v:.3f}' for v in rounds[name])} | {summary[name]:.3f} | "
        f"{summary[name] / floor:.2f} |"
        for name in VARIANTS
    ]
    lines += ["", machine_line(results["machine"], torch.device("cpu"))]
    write_results(args.out, "elementwise_bound", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
