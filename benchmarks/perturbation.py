"""Perturbation response, the paper's out-of-sample protocol: hold out one cell type, predict its response.

    python benchmarks/perturbation.py --data ../shared/data/pt_pbmc_kang

For each cell type of the Kang IFN-beta PBMC data (scGen's file: log-normalised expression, 6,998 genes,
control and stimulated cells), the stimulated cells of that type are left out, a perturbation model is
trained on every control cell and the other types' stimulated cells (:meth:`Butterfly.perturbation`:
optimal-transport pairs within cell types), and the held-out type's control cells are translated to the
stimulated condition. They are scored against the measured stimulated cells of that type with
:func:`butterfly.evaluate_perturbation`: top-100 DEG overlap and R^2 of the top-100 DEGs' mean expression
(mean over 100 resamplings of 80%), plus R^2 of all genes' means. Compared with the control cells as they
are (no response), with the mean-shift baseline (the training cells' average response added to every
cell) and, with --scgen-seeds, with scGen's method re-implemented (:class:`butterfly.baselines.LatentArithmetic`);
`--settings` with no value leaves butterfly out. Writes perturbation.json and perturbation.md into --out, and for the first model seed of each setting
one figure per held-out type (`bf.pl.plot_perturbation`: predicted and control mean expression against
the measured stimulated cells'). `--merge RUN.json ...` joins runs of other seeds or methods into one
table, with each method's mean over its seeds per held-out type.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import PeakMemory, machine, machine_line, write_results  # noqa: E402
from butterfly.benchmark._baselines import LatentArithmetic, MeanShiftPerturbation  # noqa: E402

SETTINGS = {"fast": dict(bf.FAST_SETTING), "paper": {}}
SCGEN = "scGen-style (latent arithmetic)"
SCORES = ("DEG_overlap_top100", "R2_DEG_means", "R2_all_gene_means")


def hold_out(data: ad.AnnData, cell_type: str, args) -> dict:
    """Scores of every method for one held-out cell type."""
    condition = data.obs[args.condition_key]
    control = data[(condition == args.control).to_numpy()].copy()
    stimulated = data[(condition == args.stimulated).to_numpy()].copy()
    train_stimulated = stimulated[(stimulated.obs[args.label_key] != cell_type).to_numpy()].copy()
    test_control = control[(control.obs[args.label_key] == cell_type).to_numpy()].copy()
    test_stimulated = stimulated[(stimulated.obs[args.label_key] == cell_type).to_numpy()].copy()
    rows: dict[str, dict] = {}
    baseline = MeanShiftPerturbation(control, train_stimulated, label_key=args.label_key)
    scores = bf.evaluate_perturbation(baseline, test_control, test_stimulated)
    rows["control (no response)"] = scores["control (no response)"]
    rows["mean shift"] = scores["predicted"]
    for setting in args.settings:
        for seed in args.model_seeds:
            model = bf.Butterfly.perturbation(control, train_stimulated, label_key=args.label_key, seed=seed)
            start = time.perf_counter()
            with PeakMemory() as memory:
                history = model.fit(**SETTINGS[setting], progress=False)
            seconds = time.perf_counter() - start
            scores = bf.evaluate_perturbation(model, test_control, test_stimulated)["predicted"]
            scores.update(
                train_seconds=seconds,
                peak_memory_gb=(memory.peak - memory.start) / 1e9,
                integrative_epochs=int((history["phase"] == "integrative").sum()),
            )
            rows[f"butterfly ({setting}, seed {seed})"] = scores
            if seed == args.model_seeds[0]:  # one figure per type and setting: predicted vs measured means
                predicted = model.translate(
                    test_control, source="control", target="stimulated", progress=False
                )
                figure = args.out / f"{args.name}_{setting}_{cell_type.replace('+', 'plus')}.png"
                args.out.mkdir(parents=True, exist_ok=True)
                bf.pl.plot_perturbation(test_control, test_stimulated, predicted, save=figure)
            print(f"{cell_type}: butterfly {setting} seed {seed}: {scores}", flush=True)
    for seed in args.scgen_seeds:
        model = LatentArithmetic(control, train_stimulated, label_key=args.label_key, seed=seed)
        start = time.perf_counter()
        with PeakMemory() as memory:
            history = model.fit(progress=False)
        scores = bf.evaluate_perturbation(model, test_control, test_stimulated)["predicted"]
        scores.update(
            train_seconds=time.perf_counter() - start,
            peak_memory_gb=(memory.peak - memory.start) / 1e9,
            epochs=len(history),
        )
        rows[f"{SCGEN[:-1]}, seed {seed})"] = scores
        print(f"{cell_type}: {SCGEN} seed {seed}: {scores}", flush=True)
    return {"n_control": test_control.n_obs, "n_stimulated": test_stimulated.n_obs, "scores": rows}


def method_rows(scores: dict[str, dict], method: str) -> list[dict]:
    """One held-out type's score rows of ``method``: the row of that name, or one per seed of a model."""
    return [v for row, v in scores.items() if row == method or row.startswith(method[:-1] + ", seed")]


def summarise(per_type: dict[str, dict], settings, scgen: bool) -> dict[str, dict[str, float]]:
    """Mean over held-out types of each method (the models': over their seeds too)."""
    methods = ["control (no response)", "mean shift"] + [f"butterfly ({s})" for s in settings]
    methods += [SCGEN] if scgen else []
    summary = {}
    for method in methods:
        rows = [v for result in per_type.values() for v in method_rows(result["scores"], method)]
        summary[method] = {score: float(np.mean([v[score] for v in rows])) for score in SCORES}
    return summary


def merge(paths: list[Path]) -> dict:
    """One result from runs of other seeds or methods on the same data (the baselines' rows must agree)."""
    parts = [json.loads(p.read_text()) for p in paths]
    merged = {**parts[0], "per_type": {}, "settings": [], "model_seeds": {}, "scgen_seeds": []}
    for path, part in zip(paths, parts, strict=True):
        if part["data"] != merged["data"] or part["per_type"].keys() != parts[0]["per_type"].keys():
            raise SystemExit(f"cannot merge {path}: other data or held-out types")
        for setting in part["settings"]:
            if setting not in merged["settings"]:
                merged["settings"].append(setting)
            merged["model_seeds"].setdefault(setting, []).extend(part["model_seeds"])
        merged["scgen_seeds"] += part.get("scgen_seeds", [])
        for cell_type, result in part["per_type"].items():
            into = merged["per_type"].setdefault(cell_type, {**result, "scores": {}})
            for row, scores in result["scores"].items():
                if row in ("control (no response)", "mean shift") and row in into["scores"]:
                    if into["scores"][row] != scores:  # deterministic: every run must agree
                        raise SystemExit(f"cannot merge {path}: its {row!r} scores for {cell_type} differ")
                elif row in into["scores"]:
                    raise SystemExit(f"cannot merge {path}: {row!r} for {cell_type} is in two runs")
                into["scores"][row] = scores
    merged["mean_over_types"] = summarise(merged["per_type"], merged["settings"], bool(merged["scgen_seeds"]))
    merged["merged_from"] = [p.name for p in paths]
    return merged


def table(results: dict) -> str:
    """Markdown: every row per held-out type, each method's mean over its seeds per type, then over types."""
    per_type, summary = results["per_type"], results["mean_over_types"]
    model_rows = [
        r for r in next(iter(per_type.values()))["scores"] if r.startswith(("butterfly", SCGEN[:-1]))
    ]
    lines = [
        f"# Perturbation response, one cell type held out at a time ({results['data']})",
        "",
        "Scores of the held-out type's predicted stimulated cells against its measured ones: top-100 DEG",
        "overlap (Wilcoxon, control vs stimulated), R^2 of the top-100 measured DEGs' mean expression (mean",
        "of 100 resamplings of 80%), R^2 of all genes' means.",
        "",
        "| held-out type (control / stimulated cells) | method | DEG overlap | R^2 DEG means | R^2 all genes |"
        + " train s |",
        "|---|---|---|---|---|---|",
    ]
    for cell_type, result in per_type.items():
        for row in ["control (no response)", "mean shift", *model_rows]:
            s = result["scores"][row]
            seconds = f"{s['train_seconds']:.0f}" if "train_seconds" in s else ""
            lines.append(
                f"| {cell_type} ({result['n_control']} / {result['n_stimulated']}) | {row} | "
                f"{s['DEG_overlap_top100']:.0f} | {s['R2_DEG_means']:.3f} | {s['R2_all_gene_means']:.3f} | {seconds} |"
            )
    methods = [m for m in summary if m not in ("control (no response)", "mean shift")]
    first_type = next(iter(per_type.values()))["scores"]
    if any(len(method_rows(first_type, m)) > 1 for m in methods):
        lines += ["", "Per held-out type, each model's mean over its seeds (DEG overlap / R^2 DEG means):", "",
                  "| held-out type | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]  # fmt: skip
        for cell_type, result in per_type.items():
            cells = []
            for method in methods:
                rows = method_rows(result["scores"], method)
                deg = np.mean([v["DEG_overlap_top100"] for v in rows])
                r2 = np.mean([v["R2_DEG_means"] for v in rows])
                cells.append(f"{deg:.1f} / {r2:.3f} ({len(rows)} seed{'s' if len(rows) > 1 else ''})")
            lines.append(f"| {cell_type} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean over the held-out types:",
        "",
        "| method | DEG overlap | R^2 DEG means | R^2 all genes |",
    ]
    lines += ["|---|---|---|---|"]
    for method, s in summary.items():
        lines.append(
            f"| {method} | {s['DEG_overlap_top100']:.1f} | {s['R2_DEG_means']:.3f} | {s['R2_all_gene_means']:.3f} |"
        )
    if "merged_from" in results:
        lines += ["", "Merged from: " + ", ".join(results["merged_from"]) + "."]
    lines += ["", machine_line(results["machine"], torch.device("cpu"))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="folder holding perturb.h5ad")
    parser.add_argument(
        "--merge", type=Path, nargs="+", metavar="JSON",
        help="instead of training: join these runs (other seeds or methods, same data) into --name",
    )  # fmt: skip
    parser.add_argument("--cell-types", nargs="+", help="held-out types (default: every type)")
    parser.add_argument(
        "--settings",
        nargs="*",
        choices=sorted(SETTINGS),
        default=["fast"],
        help="butterfly's (none: skip it)",
    )
    parser.add_argument("--model-seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--scgen-seeds", nargs="*", type=int, default=[],
        help="also train the scGen-style baseline (butterfly.baselines.LatentArithmetic) with these seeds",
    )  # fmt: skip
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--condition-key", default="condition")
    parser.add_argument("--control", default="control")
    parser.add_argument("--stimulated", default="stimulated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="perturbation")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.merge:
        merged = merge(args.merge)
        write_results(args.out, args.name, merged, table(merged))
        return
    if args.data is None:
        parser.error("--data is required (or --merge)")
    torch.set_num_threads(args.threads)

    data = ad.read_h5ad(args.data / "perturb.h5ad")
    cell_types = args.cell_types or sorted(data.obs[args.label_key].unique().astype(str))
    per_type = {cell_type: hold_out(data, cell_type, args) for cell_type in cell_types}
    results = {
        "data": args.data.name, "settings": args.settings, "model_seeds": args.model_seeds,
        "scgen_seeds": args.scgen_seeds, "per_type": per_type,
        "mean_over_types": summarise(per_type, args.settings, bool(args.scgen_seeds)), "machine": machine(),
    }  # fmt: skip
    write_results(args.out, args.name, results, table(results))


if __name__ == "__main__":
    main()
