"""Spread over model seeds of translate_quality runs, against the authors' figures of issue #3.

    python benchmarks/seed_spread.py RESULT.json ... --name translate_quality_snare_mcc_seeds

Each RESULT.json is written by ``translate_quality.py --model-seed N --name ...`` (same split and scoring
seed; only the model's seed differs). Runs of one setting are grouped (runs of one setting name with
different options, e.g. ``--set lr=...``, form one group per option value); for every figure the table gives the
mean, standard deviation, range, how many seeds reach the authors' figure (SNARE-seq only) and the kNN
translator's figure on the same split.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

# The authors' scButterfly-B (100/100/200 epochs) on this split and machine, as issue #3 states them.
AUTHORS = {
    "snare_mcc": {
        "atac->rna": {"AMI": 0.262, "ARI": 0.102, "pearson_per_feature": 0.113},
        "rna->atac": {"AMI": 0.486, "ARI": 0.200, "AUROC": 0.697},
    }
}

FIGURES = (
    "AMI",
    "ARI",
    "pearson_per_feature",
    "pearson_per_cell",
    "spearman_per_feature",
    "spearman_per_cell",
    "AUROC",
)


def split_by_options(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Split each setting's runs by the options that differ between them (named in the group's title)."""
    groups: dict[str, list[dict]] = {}
    for name, group in runs.items():
        keys = sorted({k for r in group for k in r.get("settings", {})})
        differing = [k for k in keys if len({json.dumps(r.get("settings", {}).get(k)) for r in group}) > 1]
        for run in group:
            label = ", ".join(f"{k}={run.get('settings', {}).get(k)}" for k in differing)
            groups.setdefault(f"{name} {label}".strip(), []).append(run)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--name", required=True, help="output file name (without extension)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    runs: dict[str, list[dict]] = defaultdict(list)
    data, knn = None, {}
    for path in args.results:
        result = json.loads(path.read_text())
        data = data or result["data"]
        if result["data"] != data:
            sys.exit(f"error: {path} is on {result['data']}, the others on {data}.")
        for name, run in result["runs"].items():
            if name.startswith("butterfly"):
                runs[name].append(run)
            elif name.startswith("kNN"):
                knn = run["scores"]  # deterministic: the same in every file
    runs = split_by_options(runs)
    authors = AUTHORS.get(data, {})
    summary: dict[str, dict] = {}
    lines = [f"# Spread over model seeds on {data}", ""]
    for name, group in runs.items():
        seeds = sorted(r.get("model_seed", 0) for r in group)  # runs before --model-seed: seed 0
        summary[name] = {"seeds": seeds, "train_seconds": [r["train_seconds"] for r in group], "figures": {}}
        lines += [f"## {name}: seeds {seeds}", "", "| direction | figure | mean ± sd | min - max | authors | seeds reaching it | kNN |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for direction in group[0]["scores"]:
            if "->" not in direction and not direction.endswith(" latent"):  # translations, their latents
                continue
            for figure in FIGURES:
                if figure not in group[0]["scores"][direction]:
                    continue
                values = np.array([r["scores"][direction][figure] for r in group])
                reference = authors.get(direction, {}).get(figure)
                reached = int((values >= reference).sum()) if reference is not None else None
                summary[name]["figures"][f"{direction} {figure}"] = {
                    "values": values.round(4).tolist(), "mean": float(values.mean()),
                    "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "authors": reference, "seeds_reaching_authors": reached,
                }  # fmt: skip
                entry = summary[name]["figures"][f"{direction} {figure}"]
                lines.append(
                    f"| {direction} | {figure} | {entry['mean']:.3f} ± {entry['sd']:.3f} | "
                    f"{values.min():.3f} - {values.max():.3f} | {reference if reference is not None else ''} | "
                    f"{'' if reached is None else f'{reached} of {len(values)}'} | "
                    + (f"{knn[direction][figure]:.3f} |" if figure in knn.get(direction, {}) else " |")
                )
        seconds = summary[name]["train_seconds"]
        lines += ["", f"Training seconds: {min(seconds):.0f} - {max(seconds):.0f}."]
        # the early-stopping criterion: how to choose between settings without test cells
        criterion = [r["phases"]["integrative"].get("best_val_recon") for r in group]
        if None not in criterion:
            summary[name]["integrative_best_val_recon"] = criterion
            lines.append(f"Validation reconstruction loss at the restored integrative epoch (lower is better; "
                         f"validation cells only): {np.mean(criterion):.5f} ± {np.std(criterion, ddof=1) if len(criterion) > 1 else 0:.5f}.")  # fmt: skip
        records = [r["batch_norm_recalibration"] for r in group if r.get("batch_norm_recalibration")]
        if records:
            summary[name]["batch_norm_recalibration"] = records
            after = [
                r["validation_loss_after"] if r["kept"] else r["validation_loss_before"] for r in records
            ]
            lines.append(f"BatchNorm statistics recalibrated (`recalibrate_batch_norm=True`): kept in "
                         f"{sum(r['kept'] for r in records)} of {len(records)} seeds; validation loss of the final "
                         f"model {np.mean(after):.5f} ± {np.std(after, ddof=1) if len(after) > 1 else 0:.5f}.")  # fmt: skip
        lines.append("")
    write_results(args.out, args.name, {"data": data, "runs": summary}, "\n".join(lines))


if __name__ == "__main__":
    main()
