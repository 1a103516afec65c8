"""Helpers shared by the benchmark scripts: peak-memory sampling, machine description, result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """Samples the resident set size every few milliseconds; ``peak`` is the highest seen inside the block."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.start = rss_bytes()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def machine_line(info: dict, device: torch.device) -> str:
    """The "Machine: ..." line of a result table, naming the GPU when the figures were measured on one."""
    gpu = f", {info['cuda']}" if device.type == "cuda" else ""
    return f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}{gpu}."


def mean_sd_table(rows: list[dict], key: str, columns: list[str]) -> list[str]:
    """Markdown table lines, header first: one row per value of ``row[key]`` (in first-seen order) holding each
    column's mean ± sd over that value's rows (folds, seeds), blank where its rows lack the column."""
    lines = [f"| {key} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for value in dict.fromkeys(r[key] for r in rows):
        mine = [r for r in rows if r[key] == value]
        cells = [
            f"{np.mean([r[c] for r in mine]):.3f} ± {np.std([r[c] for r in mine], ddof=1) if len(mine) > 1 else 0:.3f}"
            if c in mine[0]
            else ""
            for c in columns
        ]
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return lines


def result_name(name: str, device: torch.device) -> str:
    """Result files of a GPU run are named apart from the CPU's: ``name_cuda``."""
    return name if device.type == "cpu" else f"{name}_{device.type}"


def write_results(out_dir: Path, name: str, results: dict, table: str) -> None:
    """Write ``name.json`` and ``name.md`` atomically into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(results, indent=2, default=float)), (".md", table)):
        target = out_dir / f"{name}{suffix}"
        tmp = target.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    print(table)


def issue_split(n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Issue 3's split, sorted (test, train) indices: test = the first 20% of RandomState(0).permutation."""
    order = np.random.RandomState(0).permutation(n_cells)
    n_test = int(round(0.2 * n_cells))
    return np.sort(order[:n_test]), np.sort(order[n_test:])


def split_parser(description: str) -> argparse.ArgumentParser:
    """Arguments of a benchmark of models trained on issue 3's split of one paired dataset: ``--data`` (a
    folder of ``<modality>.h5ad``), ``--modalities``, ``--seeds``, ``--out`` and ``--name``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--modalities", nargs=2, default=["rna", "atac"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None)
    return parser


def read_split(args: argparse.Namespace) -> tuple:
    """``(first, second, test, train)``: the two modalities of ``args.data`` and issue 3's split of their cells."""
    import anndata as ad

    first, second = (ad.read_h5ad(args.data / f"{m}.h5ad") for m in args.modalities)
    test, train = issue_split(first.n_obs)
    return first, second, test, train
