"""Speed of the chromosome-blocked layers against a loop of per-chromosome nn.Linear modules (the reference
implementation's way): forward, the model's BCE loss, backward, with the same function checked first.
butterfly's layers run per chromosome on row slices on a CPU (their default there) or as one batched
product over chromosome chunks (their default on GPUs); its encoder is also timed on the sparse rows its
training loop feeds it. Peaks are grouped by chromosome, as in SNARE-seq and most peak files.

    python benchmarks/blocked_linear.py [--peaks 5860 --chromosomes 20 --batches 64 256] [--device cuda]

On a GPU the results are written as blocked_linear_cuda.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, machine_line, result_name, write_results  # noqa: E402
from butterfly.module._layers import ChromosomeBlockedDecoderLinear, ChromosomeBlockedEncoderLinear  # noqa: E402
from butterfly.module._network import reconstruction_loss  # noqa: E402
from butterfly.pp import _modalities as modalities  # noqa: E402
from butterfly.train._data import _to_sparse_rows  # noqa: E402


class LoopEncoder(nn.Module):
    """Reference: split the (chromosome-sorted) input and run one nn.Linear per chromosome."""

    def __init__(self, sizes, units):
        super().__init__()
        self.sizes = sizes
        self.layers = nn.ModuleList(nn.Linear(s, units) for s in sizes)

    def forward(self, x):
        return torch.cat(
            [layer(part) for layer, part in zip(self.layers, torch.split(x, self.sizes, 1), strict=True)], 1
        )


class LoopDecoder(nn.Module):
    def __init__(self, sizes, units):
        super().__init__()
        self.units = units
        self.layers = nn.ModuleList(nn.Linear(units, s) for s in sizes)

    def forward(self, z):
        return torch.cat(
            [layer(part) for layer, part in zip(self.layers, torch.split(z, self.units, 1), strict=True)], 1
        )


def timed(fns: dict, repeats: int, rounds: int = 7, device: torch.device | None = None) -> dict:
    """Milliseconds per call of each function: the median over ``rounds`` in which all run in turn, so that
    a slow spell of the machine hits every implementation alike. On a GPU each round waits for its kernels."""

    def sync():
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns.values():
        for _ in range(5):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            sync()
            samples[name].append((time.perf_counter() - start) / repeats * 1e3)
    return {name: float(np.median(values)) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peaks", type=int, default=5860, help="default: the SNARE-seq demo's kept peaks")
    parser.add_argument("--chromosomes", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30, help="calls per timing round (7 rounds)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rng = np.random.default_rng(0)
    # uneven chromosome sizes, like a genome's (largest about 2.5x the smallest)
    weights = np.linspace(2.5, 1.0, args.chromosomes)
    codes = np.sort(rng.choice(args.chromosomes, size=args.peaks, p=weights / weights.sum()))
    sizes = np.bincount(codes, minlength=args.chromosomes).tolist()

    enc = ChromosomeBlockedEncoderLinear(codes.tolist(), args.units)
    loop_enc = LoopEncoder(sizes, args.units)
    dec = ChromosomeBlockedDecoderLinear(codes.tolist(), args.units)
    loop_dec = LoopDecoder(sizes, args.units)
    enc.batched = dec.batched = False  # the per-chromosome (CPU) form, whatever the device
    with torch.no_grad():  # same weights, to prove the two compute the same function
        for c, (enc_c, dec_c) in enumerate(zip(loop_enc.layers, loop_dec.layers, strict=True)):
            enc_c.weight.copy_(enc.chromosome_weight(c).T)
            enc_c.bias.copy_(enc.bias[c])
            dec_c.weight.copy_(dec.chromosome_weight(c))
            dec_c.bias.copy_(dec.feature_bias()[codes == c])
    for layer in (enc, loop_enc, dec, loop_dec):
        layer.to(device)

    def step(layer, inp, target):
        """Forward, the model's ATAC loss against ``target`` (BCE on logits), backward."""

        def run():
            out = layer(inp)
            reconstruction_loss(modalities.ATAC, out, target[:, : out.shape[1]]).backward()

        return run

    rows = []
    for batch in args.batches:
        # binary inputs and targets with 1% ones, like SNARE-seq peaks
        x = (torch.rand(batch, args.peaks) < 0.01).float()
        x_sparse = _to_sparse_rows(sp.csr_matrix(x.numpy()), device)
        x = x.to(device)
        z = torch.randn(batch, args.chromosomes * args.units, device=device)
        target = (torch.rand(batch, args.peaks) < 0.01).float().to(device)
        feature_major = {"x": x.t().contiguous().t(), "target": target.t().contiguous().t()}
        for name, ours, loop, inp, our_inp, sparse_inp in (
            ("encoder", enc, loop_enc, x, feature_major["x"], x_sparse),
            ("decoder", dec, loop_dec, z, z, None),
        ):
            batched = copy.deepcopy(ours)
            batched.batched = True
            inputs = {"ms": (ours, our_inp), "batched_ms": (batched, our_inp)}
            if sparse_inp is not None:
                inputs["sparse_ms"] = (ours, sparse_inp)
            with torch.no_grad():
                difference = max(float((layer(i) - loop(inp)).abs().max()) for layer, i in inputs.values())
            fns = {"loop_ms": step(loop, inp, target)}
            fns.update({key: step(layer, i, feature_major["target"]) for key, (layer, i) in inputs.items()})
            row = {
                "layer": name,
                "batch": batch,
                "max_abs_difference": difference,
                **timed(fns, args.repeats, device=device),
            }
            rows.append(row)
    results = {
        "peaks": args.peaks,
        "chromosomes": args.chromosomes,
        "machine": machine(),
        "device": str(device),
        "rows": rows,
    }
    on = (
        f"{results['machine']['cuda']}"
        if device.type == "cuda"
        else f"{torch.get_num_threads()} CPU thread(s)"
    )
    table = [f"# Chromosome-blocked layers: {args.peaks} peaks on {args.chromosomes} chromosomes, forward + loss + "
             f"backward, {on}", "",
             "Inputs and targets are binary with 1% ones. Times in ms, speed-up over the loop in brackets. The loop "
             "gets dense input; butterfly dense feature-major input (as training minibatches are), or sparse rows.", "",
             "| layer | batch | reference loop | butterfly, CPU form | butterfly, batched (GPU) form | "
             "butterfly, sparse input | max abs difference |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        cells = [
            f"{r[key]:.3f} ({r['loop_ms'] / r[key]:.2f}x)" if key in r else "-"
            for key in ("ms", "batched_ms", "sparse_ms")
        ]
        table.append(
            f"| {r['layer']} | {r['batch']} | {r['loop_ms']:.3f} | {' | '.join(cells)} | {r['max_abs_difference']:.1e} |"
        )
    table += ["", machine_line(results["machine"], device)]
    write_results(args.out, result_name("blocked_linear", device), results, "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
