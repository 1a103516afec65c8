"""The field's yardsticks, every dataset and direction: the training mean, kNN, linear and kernel ridge against
butterfly at the paper's setting and at the recommended one (``FAST_SETTING``), on the same test cells.

Columns: AMI of the translations' clustering (Leiden, the paper's protocol), per-cell and per-feature Pearson
(RNA, protein) or AUROC (peaks, against the measured open ones), RMSE (log-normalised RNA, CLR protein, binarised
peaks; ATAC scored on the model's scaled TF-IDF output, the space the baselines predict in). Each butterfly row
is the mean ± sd over ``--seeds`` model seeds. Each cell where butterfly's 95% interval of its difference from a
baseline (a paired bootstrap over the test cells, :func:`butterfly.metrics.paired_bootstrap`, model seed
``--seeds[0]``) lies below 0 is marked ``(below <baseline>)``; for RMSE, lower is better.

Protocols (``--protocols``):
- ``snare-split``: SNARE-seq, the first 20% of RandomState(0).permutation as test cells (issue 3's split);
- ``snare-cell5`` / ``snare-batch4``: SNARE-seq 5-fold by cell / 4-fold by its 12 libraries (fold 0 of each);
- ``multiome-random``: Multiome starter, a random 20% of cells as test;
- ``cite-random`` / ``cite-batch``: CITE-seq starter, a random 20% / train on batch s1d1, test on s1d2.

    python benchmarks/accuracy.py --data ../shared/data --protocols cite-random cite-batch multiome-random \\
        --seeds 0 1 2 --name accuracy
writes ``results/<name>.json`` and ``results/<name>.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import issue_split, machine, write_results  # noqa: E402
from butterfly import metrics
from butterfly.benchmark import _protocols as protocols  # noqa: E402
from butterfly.benchmark._evaluate import _translate_and_score  # noqa: E402

BASELINES = ("mean", "knn", "linear", "kernel-ridge")
COLUMNS = {"atac": ("AMI", "auroc_per_cell", "auroc_per_feature", "RMSE"),
           "other": ("AMI", "pearson_per_cell", "pearson_per_feature", "RMSE")}  # fmt: skip
HEADERS = {"auroc_per_cell": "AUROC/cell", "auroc_per_feature": "AUROC/peak", "pearson_per_cell": "r/cell",
           "pearson_per_feature": "r/feature"}  # fmt: skip
SETTINGS = {"paper": {}, "recommended": dict(bf.FAST_SETTING)}


def split_of(protocol: str, data: Path):
    """``(first, second, modalities, test, train)`` of a protocol."""
    if protocol.startswith("snare"):
        folder, modalities = data / "snare_mcc", ("rna", "atac")
    elif protocol.startswith("multiome"):
        folder, modalities = data / "multiome_bmmc_starter", ("rna", "atac")
    else:
        folder, modalities = data / "cite_bmmc_neurips_starter", ("rna", "adt")
    first, second = (ad.read_h5ad(folder / f"{m}.h5ad") for m in modalities)
    n = first.n_obs
    if protocol in ("snare-split", "multiome-random", "cite-random"):
        test, train = issue_split(n)
    elif protocol == "snare-cell5":
        train, test = protocols.folds_by_cell(n, 5, seed=0)[0]
    elif protocol == "snare-batch4":
        train, test = protocols.folds_by_batch(first.obs["batch"].to_numpy(), 4, seed=0)[0]
    elif protocol == "cite-batch":
        batch = first.obs["batch"].astype(str).to_numpy()
        train, test = np.flatnonzero(batch == "s1d1"), np.flatnonzero(batch == "s1d2")
    else:
        raise SystemExit(f"unknown protocol {protocol!r}")
    return first, second, modalities, np.sort(test), np.sort(train)


def fitted(name: str, first, second, modalities, seed: int, setting: str | None, label_key: str):
    if name in BASELINES:
        return protocols._fit(name, first, second, modalities, seed, {}, label_key=label_key, match_steps=False,
                              scvi_options=None)  # fmt: skip
    model = bf.Butterfly(first, second, modalities=modalities, seed=seed, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the translation check's warnings are kept in the model
        model.fit(**SETTINGS[setting], progress=False)
    return model


def run(protocol: str, args) -> dict:
    first, second, modalities, test, train = split_of(protocol, args.data)
    label_key = "cell_type"
    kinds = {"atac": "atac", "rna": "other", "adt": "other"}
    rows, translations, truths, checks = [], {}, None, {}
    runs = [(b, 0, None) for b in BASELINES] + [
        (f"butterfly {setting}", seed, setting) for setting in args.settings for seed in args.seeds
    ]
    for name, seed, setting in runs:
        start = time.perf_counter()
        model = fitted(name.split()[0], first[train], second[train], modalities, seed, setting, label_key)
        seconds = time.perf_counter() - start
        scores, made, truths, labels = _translate_and_score(
            model, first[test], second[test], label_key=label_key, seed=0, reference=None, latent=False,
            translate_options=None, scoring_runs=args.scoring_runs, layer=None, joint=False,
        )  # fmt: skip
        for direction in (f"{modalities[0]}->{modalities[1]}", f"{modalities[1]}->{modalities[0]}"):
            target = direction.split("->")[1]
            row = {"model": name, "seed": seed, "direction": direction, "seconds": seconds}
            row.update({m: scores[direction].get(m, float("nan")) for m in COLUMNS[kinds[target]]})
            rows.append(row)
        if seed == args.seeds[0]:
            translations[name] = {d: t.X for d, t in made.items()}
        if setting is not None and getattr(model, "translation_check_", None):
            checks.setdefault(name, []).append({d: c["verdict"] for d, c in model.translation_check_.items()})
        print(f"{protocol}: {name} seed {seed} in {seconds:.0f} s", flush=True)
    comparisons = []
    for setting in args.settings:
        ours = translations[f"butterfly {setting}"]
        for direction, pred in ours.items():
            target = direction.split("->")[1]
            for baseline in BASELINES:
                result = metrics.paired_bootstrap(
                    pred, translations[baseline][direction], truths[target], target_kind=kinds[target],
                    labels=first[test].obs[label_key].to_numpy(), rounds=args.rounds,
                )  # fmt: skip
                for metric, r in result.items():
                    comparisons.append({"setting": setting, "direction": direction, "versus": baseline,
                                        "metric": metric, **r})  # fmt: skip
    return {"protocol": protocol, "cells": {"train": len(train), "test": len(test)}, "rows": rows,
            "comparisons": comparisons, "translation_check": checks}  # fmt: skip


def table(result: dict, seeds: list[int]) -> list[str]:
    import pandas as pd

    rows, comparisons = pd.DataFrame(result["rows"]), pd.DataFrame(result["comparisons"])
    lines = []
    for direction, part in rows.groupby("direction", sort=False):
        kind = "atac" if direction.endswith("atac") else "other"
        columns = COLUMNS[kind]
        lines += [f"**{direction}** ({result['cells']['train']} training / {result['cells']['test']} test cells)", "",
                  "| model | " + " | ".join(HEADERS.get(c, c) for c in columns) + " | seconds |",
                  "|---|" + "---|" * (len(columns) + 1)]  # fmt: skip
        for name, runs in part.groupby("model", sort=False):
            cells = []
            for column in columns:
                values = runs[column].to_numpy(dtype=float)
                text = f"{values.mean():.3f}" + (f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else "")
                if name.startswith("butterfly") and len(comparisons):
                    setting = name.split()[1]
                    mine = comparisons[(comparisons["setting"] == setting) & (comparisons["direction"] == direction)
                                       & (comparisons["metric"] == column)]  # fmt: skip
                    worse = mine[(mine["low"] > 0) if column == "RMSE" else (mine["high"] < 0)][
                        "versus"
                    ].tolist()
                    if worse:
                        text += f" (below {', '.join(worse)})"
                cells.append(text)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {runs['seconds'].mean():.0f} |")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="the folder holding snare_mcc/, ... (shared/data)"
    )
    parser.add_argument("--protocols", nargs="+", default=["cite-random", "cite-batch", "multiome-random",
                                                            "snare-split", "snare-cell5", "snare-batch4"])  # fmt: skip
    parser.add_argument("--settings", nargs="+", default=["paper", "recommended"], choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scoring-runs", type=int, default=1, help="Leiden runs averaged per AMI")
    parser.add_argument("--rounds", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="accuracy")
    args = parser.parse_args()
    info = machine()
    results = {"machine": info, "settings": {k: dict(v) for k, v in SETTINGS.items()}, "seeds": args.seeds,
               "protocols": []}  # fmt: skip
    lines = [
        "# Accuracy on the field's yardsticks",
        "",
        f"Written by `benchmarks/accuracy.py` on {info.get('cpu', '?')} ({info.get('torch_threads', '?')} torch threads). "
        f"butterfly rows: mean ± sd over model seeds {args.seeds}; baselines are deterministic. "
        "(below X): butterfly's 95% paired-bootstrap interval of its difference from baseline X lies below 0 "
        "(for RMSE, above). ATAC is scored on the model's scaled TF-IDF output against binarised peaks.",
        "",
    ]
    for protocol in args.protocols:
        result = run(protocol, args)
        results["protocols"].append(result)
        lines += [f"## {protocol}", ""] + table(result, args.seeds)
        write_results(args.out, args.name, results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
