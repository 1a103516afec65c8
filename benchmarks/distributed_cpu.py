"""Data-parallel training (torchrun, DistributedDataParallel) against one process, on the shipped SNARE-seq cells.

Each run fits the fast setting (short epochs limits, patience off) and reports the fit's seconds, the median
epoch of each phase and the last validation reconstruction loss. Compared:
- one process with all the threads, batch B;
- P processes of one thread each, batch B / P each (the same cells per step as one process at B);
- P processes of one thread each, batch B each (P times the cells per step, as one process at P x B),
  and one process at P x B beside it.

    python benchmarks/distributed_cpu.py [--processes 2] [--batch-size 256] [--rounds 2]

Writes results/distributed_cpu.json and .md. On a CPU the processes share its cores with nothing gained
from parallel work the threads did not already do; the point is that P processes at B / P train as one
process at B does (same steps, same validation loss up to sampling), which is what the README tells users.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine, write_results

FIT = """
import json, sys, time
import torch
import butterfly as bf
from butterfly.train import _distributed as distributed

rna, atac = bf.datasets.snare_mcc_demo()
model = bf.Butterfly(rna, atac, seed=0, device="cpu")
start = time.perf_counter()
setting = {**bf.FAST_SETTING, "pretrain_epochs": 5, "epochs": 10, "patience": 50, "batch_size": int(sys.argv[1])}
history = model.fit(**setting, progress=False)
seconds = time.perf_counter() - start
if distributed.rank_and_size()[0] == 0:
    epochs = history.groupby("phase", sort=False)["seconds"].median().round(3).to_dict()
    print(json.dumps({"fit_seconds": round(seconds, 2), "median_epoch_seconds": epochs,
                      "last_val_recon": float(history["val_recon"].iloc[-1])}))
distributed.leave()
"""


def run(script: Path, processes: int, threads: int, batch_size: int) -> dict:
    # TMPDIR: torchrun's log folders go beside the script, into the folder removed at the end
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "GLOO_SOCKET_IFNAME": "lo",
        "TMPDIR": str(script.parent),
    }
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    done = subprocess.run([*launcher, str(script), str(batch_size)], env=env, capture_output=True, text=True,
                          check=True)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"processes": processes, "threads_each": threads, "batch_size_each": batch_size,
            "cells_per_step": processes * batch_size, **result}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    p, b = args.processes, args.batch_size
    configurations = [(1, p, b), (p, 1, b // p), (p, 1, b), (1, p, b * p)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "fit.py"
        script.write_text(FIT)
        for round_ in range(args.rounds):  # alternating, so that a busier minute falls on every configuration
            for processes, threads, batch_size in configurations:
                rows.append({"round": round_, **run(script, processes, threads, batch_size)})
    lines = [
        "| processes x threads | batch each | cells per step | fit (s) | integrative epoch (s) | ATAC pretraining "
        "epoch (s) | last validation recon |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        epochs = row["median_epoch_seconds"]
        lines.append(
            f"| {row['processes']} x {row['threads_each']} | {row['batch_size_each']} | {row['cells_per_step']} | "
            f"{row['fit_seconds']:.1f} | {epochs['integrative']:.3f} | {epochs['pretrain atac']:.3f} | "
            f"{row['last_val_recon']:.4f} |"
        )
    info = machine()
    table = f"# Data-parallel training on the CPU ({info.get('cpu', '')})\n\n" + "\n".join(lines) + "\n"
    write_results(args.out, "distributed_cpu", {"machine": info, "runs": rows}, table)


if __name__ == "__main__":
    main()
