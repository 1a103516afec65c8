"""Translation quality, training time and memory of butterfly vs a kNN translator on a fixed split.

    python benchmarks/translate_quality.py --data ../shared/data/snare_mcc --modalities rna atac
    python benchmarks/translate_quality.py --data ../shared/data/cite_bmmc_neurips_starter --modalities rna adt

The data folder holds one h5ad per modality (named after it). Split: test = the first 20% of
numpy.random.RandomState(0).permutation(n_cells); the rest train (of which the model holds out a random 20%
for early stopping). Test cells are scored as the paper does (PCA 50, neighbours, Leiden resolution 1 with
leidenalg; AMI/ARI/NMI/HOM vs --label-key), plus per-gene Pearson (RNA/ADT targets, against the
log-normalised / CLR truth) and AUROC (ATAC targets, against the binarised truth). Writes
<name>.json and <name>.md into --out.
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
from _common import PeakMemory, issue_split, machine, write_results  # noqa: E402
from butterfly.benchmark._baselines import KNNTranslator, LinearTranslator  # noqa: E402
from butterfly.benchmark._evaluate import evaluate_translation  # noqa: E402

_FAST = {"batch_size": 256, "lr": 2e-3, "discriminator_lr": 1e-2, "patience": 20}
_BUDGET = {**_FAST, "pretrain_epochs": 30, "epochs": 60, "patience": 15}
SETTINGS = {
    # the paper's defaults
    "paper": {},
    # the paper's defaults with the authors' code's KL warm-up (50 epochs of each phase)
    "paper-kl-warmup": {"kl_warmup_epochs": 50},
    # bf.FAST_SETTING, the recommended setting (the RESULTS table's first row): the budget with KL warm-up, up to
    # 150 integrative epochs, BatchNorm statistics recalibrated
    "recommended": dict(bf.FAST_SETTING),
    # NOT bf.FAST_SETTING (the name predates it): larger batches for fewer, cheaper steps, learning rate scaled
    # with the batch, the paper's epochs
    "fast": _FAST,
    # the same with bfloat16 autocast (CPUs with AVX-512 BF16 / AMX, recent GPUs)
    "fast-bf16": {**_FAST, "precision": "bfloat16"},
    # the cross-validation tables' budget: at most 30 + 60 epochs, patience 15, otherwise "fast"
    "budget": _BUDGET,
    "budget-bf16": {**_BUDGET, "precision": "bfloat16"},
    # the budget with the authors' code's deviations from the paper's text (README), one at a time and all:
    # KL warm-up over half of each phase (the authors: 50 of 100/200 epochs), inverted-dropout masking,
    # a one-layer discriminator
    "budget-kl-warmup": {**_BUDGET, "kl_warmup_epochs": 15},
    "budget-mask-scaling": {**_BUDGET, "mask_scaling": True},
    "budget-1-layer-discriminator": {**_BUDGET, "discriminator_layers": 1},
    "budget-authors-code": {
        **_BUDGET,
        "kl_warmup_epochs": 15,
        "mask_scaling": True,
        "discriminator_layers": 1,
    },
}
NETWORK_OPTIONS = ("discriminator_layers", "batch_norm", "dropout")  # Butterfly(...) arguments, not fit(...)


def step_gflop(model: bf.Butterfly, batch_size: int) -> float:
    """Floating-point operations of one integrative training step (forward + backward), counted by torch on
    dense inputs (the dense model's work, whatever the sparse first layers save)."""
    from torch.utils.flop_counter import FlopCounterMode

    from butterfly.train._data import PairedRows
    from butterfly.train._settings import TrainingConfig
    from butterfly.train._trainer import Trainer

    rows = np.arange(batch_size)
    pairs = PairedRows({n: rows for n in model.names})
    trainer = Trainer(model.network, model._matrices, pairs, pairs, TrainingConfig(batch_size=batch_size, sparse_inputs=False),
                      device=model.device, seed=0, progress=False)  # fmt: skip
    batch, masked = next(trainer._batches(model._matrices, pairs))
    with FlopCounterMode(display=False) as counter:
        h, stats, emb = trainer._forward_all(masked, sample=True)
        recon, kl, _ = trainer._generator_terms(batch, stats, emb, 0)
        loss = (
            recon
            + kl
            - trainer._discriminator_loss(h, emb, (torch.ones(batch_size, device=model.device),) * 2)
        )
        loss.backward()
    model.network.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--modalities", nargs=2, default=["rna", "atac"])
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument(
        "--settings", nargs="*", default=["paper"], choices=sorted(SETTINGS),
        help="recommended: bf.FAST_SETTING; paper: the paper's defaults; fast: an older setting (not "
        "bf.FAST_SETTING); budget*: the cross-validation budget and its variants (default paper)",
    )  # fmt: skip
    parser.add_argument("--pretrain-epochs", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the scoring (Leiden) and, by default, the model"
    )
    parser.add_argument("--model-seed", type=int, default=None, help="seed of the model (default: --seed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override one option of every setting, e.g. --set lr=0.004 (repeatable; recorded in the results)",
    )  # fmt: skip
    parser.add_argument(
        "--translate-samples", type=int, default=0, metavar="N",
        help="also score each trained model's translations averaged over N latent draws (translate(n_samples=N)), "
        "as a run of its own",
    )  # fmt: skip
    parser.add_argument(
        "--scoring-runs", type=int, default=1, metavar="N",
        help="each clustering score the mean over N Leiden runs (seeds --seed to --seed + N - 1; default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--name", default=None, help="result file name (default translate_quality_<data folder>)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    model_seed = args.seed if args.model_seed is None else args.model_seed

    first, second = (ad.read_h5ad(args.data / f"{m}.h5ad") for m in args.modalities)
    test, train = issue_split(first.n_obs)
    a, b = args.modalities
    print(
        f"{args.data.name}: {len(train)} train, {len(test)} test cells; {a} {first.n_vars}, {b} {second.n_vars} features"
    )

    runs = {}
    for name, cls in (("kNN (k=20, SVD 50)", KNNTranslator), ("linear (ridge on SVD 64)", LinearTranslator)):
        t = time.perf_counter()
        baseline = cls(first[train], second[train], modalities=tuple(args.modalities))
        fit_seconds = time.perf_counter() - t
        scores = evaluate_translation(baseline, first[test], second[test], label_key=args.label_key, seed=args.seed,
                                      scoring_runs=args.scoring_runs)  # fmt: skip
        runs[name] = {"scores": scores, "train_seconds": fit_seconds}

    overrides = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)  # numbers and booleans (true/false) as JSON
    for setting in args.settings:
        options = {**SETTINGS[setting], **overrides}
        batch_size = options.pop("batch_size", 64)
        patience = options.pop("patience", 50)
        pretrain_epochs = options.pop("pretrain_epochs", args.pretrain_epochs)
        epochs = options.pop("epochs", args.epochs)
        network = {k: options.pop(k) for k in NETWORK_OPTIONS if k in options}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with PeakMemory() as mem:
            t = time.perf_counter()
            model = bf.Butterfly(first[train], second[train], modalities=tuple(args.modalities), seed=model_seed,
                                 device=args.device, **network)  # fmt: skip
            history = model.fit(pretrain_epochs, epochs, patience, batch_size, progress=False, **options)
            train_seconds = time.perf_counter() - t
        scores = evaluate_translation(model, first[test], second[test], label_key=args.label_key, seed=args.seed,
                                      latent=True, scoring_runs=args.scoring_runs)  # fmt: skip
        phases = {}
        gflop = step_gflop(model, batch_size)
        for phase, part in history.groupby("phase", sort=False):
            steps = int(np.ceil(len(train) * (1 - model.validation_fraction) / batch_size))
            seconds = float(part["seconds"].median())
            best = int(part["best_epoch"].iloc[0])
            phases[phase] = {"epochs_run": int(len(part)), "best_epoch": best, "seconds_per_epoch": round(seconds, 3),
                             # the early-stopping criterion at the restored epoch: a model choice made on
                             # validation cells, never on test cells
                             "best_val_recon": float(part.loc[part["epoch"] == best, "val_recon"].iloc[0])}  # fmt: skip
            if phase == "integrative":
                phases[phase]["gflop_per_epoch"] = round(gflop * steps, 1)
                phases[phase]["gflops_per_second"] = round(gflop * steps / seconds, 1)
        runs[f"butterfly ({setting})"] = {
            "model_seed": model_seed,
            "settings": {
                "pretrain_epochs": pretrain_epochs,
                "epochs": epochs,
                "batch_size": batch_size,
                "patience": patience,
                **network,
                **options,
            },
            "scores": scores,
            "train_seconds": round(train_seconds, 1),
            "peak_rss_gb": round(mem.peak / 1e9, 2),
            "phases": phases,
            "device": str(model.device),
        }
        if model.batch_norm_recalibration_ is not None:
            runs[f"butterfly ({setting})"]["batch_norm_recalibration"] = model.batch_norm_recalibration_
        if model.device.type == "cuda":
            runs[f"butterfly ({setting})"]["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        print(runs[f"butterfly ({setting})"])
        if args.translate_samples:
            sampled = dict(runs[f"butterfly ({setting})"])  # the same model, translated another way
            sampled["settings"] = {**sampled["settings"], "translate_samples": args.translate_samples}
            sampled["scores"] = evaluate_translation(
                model, first[test], second[test], label_key=args.label_key, seed=args.seed, latent=True,
                translate_options={"n_samples": args.translate_samples}, scoring_runs=args.scoring_runs,
            )  # fmt: skip
            runs[f"butterfly ({setting}), {args.translate_samples} latent draws"] = sampled

    results = {"data": str(args.data.name), "modalities": args.modalities, "n_train": int(len(train)),
               "n_test": int(len(test)), "label_key": args.label_key, "scoring_runs": args.scoring_runs,
               "machine": machine(), "runs": runs}  # fmt: skip
    directions = [f"{a}->{b}", f"{b}->{a}"]
    lines = [f"# Translation quality on {args.data.name} ({len(train)} train / {len(test)} test cells)", "",
             f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, torch {results['machine']['torch']}"
             + (f"; butterfly trained on {results['machine']['cuda']}." if any(
                 r.get("device", "cpu").startswith("cuda") for r in runs.values()) else "."), ""]  # fmt: skip
    if args.scoring_runs > 1:
        lines += [f"Clustering scores: means over {args.scoring_runs} Leiden runs (seeds {args.seed} to "
                  f"{args.seed + args.scoring_runs - 1}).", ""]  # fmt: skip
    for direction in directions:
        target = direction.split("->")[1]
        # ATAC: AUROC against the binarised truth; RNA/ADT: Pearson and Spearman per feature and per cell
        extra = ["AUROC"] if target == "atac" else ["pearson_per_feature", "pearson_per_cell",
                                                    "spearman_per_feature", "spearman_per_cell"]  # fmt: skip
        lines += [
            f"## {direction}",
            "",
            f"| method | AMI | ARI | NMI | HOM | {' | '.join(extra)} | train s | peak GB |",
            "|---" * (7 + len(extra)) + "|",
        ]
        for name, run in runs.items():
            s = run["scores"][direction]
            lines.append(f"| {name} | {s['AMI']:.3f} | {s['ARI']:.3f} | {s['NMI']:.3f} | {s['HOM']:.3f} | "
                         + " | ".join(f"{s[key]:.3f}" for key in extra)
                         + f" | {run['train_seconds']:.0f} | {run.get('peak_rss_gb', '')} |")  # fmt: skip
        lines.append("")
    for name, run in runs.items():
        if "phases" in run:
            lines.append(f"{name}: " + "; ".join(
                f"{p}: {v['epochs_run']} epochs (best {v['best_epoch']}), {v['seconds_per_epoch']} s/epoch"
                + (f", {v['gflops_per_second']} GFLOP/s" if "gflops_per_second" in v else "")
                for p, v in run["phases"].items())
                + (f"; peak GPU memory {run['peak_gpu_gb']} GB" if "peak_gpu_gb" in run else ""))  # fmt: skip
            lines.append("")
    measured = runs[next(k for k in runs if k.startswith("butterfly"))]["scores"] if len(runs) > 1 else {}
    for key in (f"measured {a}", f"measured {b}"):
        if key in measured:
            lines.append(
                f"Clustering the {key}: AMI {measured[key]['AMI']:.3f}, ARI {measured[key]['ARI']:.3f}."
            )
    for name, run in runs.items():  # the latent each translation starts from, same protocol
        for key in (f"{a} latent", f"{b} latent"):
            if key in run["scores"]:
                s = run["scores"][key]
                lines.append(f"Clustering {name}'s {key}: AMI {s['AMI']:.3f}, ARI {s['ARI']:.3f}.")
    write_results(
        args.out, args.name or f"translate_quality_{args.data.name}", results, "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
