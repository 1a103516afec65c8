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
one figure per held-out type (`bf.report.plot_perturbation`: predicted and control mean expression against
the measured stimulated cells').
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import PeakMemory, machine, machine_line, write_results  # noqa: E402
from butterfly.baselines import LatentArithmetic, MeanShiftPerturbation  # noqa: E402

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
                bf.report.plot_perturbation(test_control, test_stimulated, predicted, path=figure)
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


def summarise(per_type: dict[str, dict], args) -> dict[str, dict[str, float]]:
    """Mean over held-out types of each method (butterfly: over its seeds too)."""
    methods = ["control (no response)", "mean shift"] + [f"butterfly ({s})" for s in args.settings]
    methods += [SCGEN] if args.scgen_seeds else []
    summary = {}
    for method in methods:
        values = {score: [] for score in SCORES}
        for result in per_type.values():
            for row, scores in result["scores"].items():
                if row == method or row.startswith(method[:-1] + ", seed"):
                    for score in SCORES:
                        values[score].append(scores[score])
        summary[method] = {s: float(np.mean(v)) for s, v in values.items()}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder holding perturb.h5ad")
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
    torch.set_num_threads(args.threads)

    data = ad.read_h5ad(args.data / "perturb.h5ad")
    cell_types = args.cell_types or sorted(data.obs[args.label_key].unique().astype(str))
    per_type = {cell_type: hold_out(data, cell_type, args) for cell_type in cell_types}
    summary = summarise(per_type, args)
    results = {
        "data": args.data.name, "settings": args.settings, "model_seeds": args.model_seeds,
        "scgen_seeds": args.scgen_seeds,
        "per_type": per_type, "mean_over_types": summary, "machine": machine(),
    }  # fmt: skip

    model_rows = [
        r for r in next(iter(per_type.values()))["scores"] if r.startswith(("butterfly", SCGEN[:-1]))
    ]
    lines = [
        f"# Perturbation response, one cell type held out at a time ({args.data.name})",
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
    lines += ["", machine_line(results["machine"], torch.device("cpu"))]
    write_results(args.out, args.name, results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
