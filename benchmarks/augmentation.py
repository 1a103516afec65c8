"""scButterfly-C's two clustering backends, and unpaired vs paired training, on SNARE-seq.

    python benchmarks/augmentation.py backends --data ../shared/data/snare_mcc   # needs the scvi extra
    python benchmarks/augmentation.py unpaired --data ../shared/data/snare_mcc
    python benchmarks/augmentation.py multivi-epochs --data ../shared/data/snare_mcc --epochs 50 150 400

backends: on the translate_quality split (test = first 20% of RandomState(0).permutation), cluster the
training cells with each backend (built-in SVD/LSI embedding; MultiVI from scvi-tools), time it, score the
clusters against the cell types, then train scButterfly-C on each and score the test cells' translations;
scButterfly-B at the same budget is in the cross-validation tables.

unpaired: split the cells into two random halves (RandomState(0)); train on the RNA of one half and the ATAC
of the other (no cell measured twice), and, for comparison, paired on both modalities of all cells. Score the
translations of all cells, and of the cells whose target modality the unpaired model never saw.

multivi-epochs: how well C's MultiVI clusters match the cell types after 50, 150, 400 training epochs (time,
clusters, AMI/ARI at Leiden resolution 1 and 3). Epochs already in the results file are kept.

Both use the cross-validation tables' budget (BUDGET, also written into the results): batch 256, learning
rates 2e-3 / 1e-2, at most 30 + 60 epochs, patience 15; the augmented C trains on 3x the pairs for a third
of the epochs (equal steps).
Writes augmentation_<experiment>.json and .md into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import PeakMemory, issue_split, machine, write_results  # noqa: E402
from butterfly.benchmark._evaluate import evaluate_translation  # noqa: E402
from butterfly.benchmark._protocols import _step_matched  # noqa: E402

BUDGET = {"pretrain_epochs": 30, "epochs": 60, "patience": 15, "batch_size": 256, "lr": 2e-3,
          "discriminator_lr": 1e-2}  # fmt: skip


MULTIVI_EPOCHS = 50  # scvi-tools' default is 500: about 45 min on this machine's CPU for 6,600 cells


def _train(model: bf.Butterfly, options: dict) -> dict:
    with PeakMemory() as mem:
        start = time.perf_counter()
        history = model.fit(progress=False, **options)
        seconds = time.perf_counter() - start
    return {"train_seconds": round(seconds, 1), "peak_rss_gb": round(mem.peak / 1e9, 2),
            "epochs_run": history.groupby("phase", sort=False).size().to_dict()}  # fmt: skip


def backends(rna: ad.AnnData, atac: ad.AnnData, label_key: str, save) -> dict:
    test, train = issue_split(rna.n_obs)
    runs = {}
    # scButterfly-B on the same budget is in the 5-fold tables (snare_5fold_by_cell); not repeated here.
    # MultiVI first: the slower, paper's backend is the one a stopped run should not lose
    for name, kwargs in (("C, MultiVI", {"pairing": "cluster", "cluster_backend": "scvi",
                                         "cluster_options": {"max_epochs": MULTIVI_EPOCHS}}),
                         ("C, built-in", {"pairing": "cluster", "cluster_backend": "builtin"})):  # fmt: skip
        print(name, flush=True)
        model = bf.Butterfly(rna[train], atac[train], seed=0, **kwargs)
        run = _train(model, _step_matched(BUDGET))
        # the clusters cover the model's training cells (its validation cells excluded), in order
        truth = rna.obs[label_key].to_numpy()[train][model.training_cells_]
        groups = model.training_groups_
        run["clustering"] = {
            "seconds": round(model.cluster_seconds_, 1), "clusters": int(len(set(groups))),
            "AMI vs cell type": adjusted_mutual_info_score(truth, groups),
            "ARI vs cell type": adjusted_rand_score(truth, groups),
        }  # fmt: skip
        run["scores"] = evaluate_translation(model, rna[test], atac[test], label_key=label_key)
        runs[name] = run
        save(
            {"n_train": int(len(train)), "n_test": int(len(test)), "runs": runs}
        )  # kept if a later run fails
    return {"n_train": int(len(train)), "n_test": int(len(test)), "runs": runs}


def unpaired(rna: ad.AnnData, atac: ad.AnnData, label_key: str, save) -> dict:
    order = np.random.RandomState(0).permutation(rna.n_obs)
    half_a, half_b = np.sort(order[: rna.n_obs // 2]), np.sort(order[rna.n_obs // 2 :])
    models = {
        "unpaired (RNA of half A, ATAC of half B)": bf.Butterfly.unpaired(
            rna[half_a], atac[half_b], label_key=label_key, seed=0
        ),
        "paired (both modalities of all cells)": bf.Butterfly(rna, atac, seed=0),
    }
    runs = {}
    for name, model in models.items():
        print(name, flush=True)
        run = _train(model, BUDGET)
        every = evaluate_translation(model, rna, atac, label_key=label_key)
        on_a = evaluate_translation(model, rna[half_a], atac[half_a], label_key=label_key)
        on_b = evaluate_translation(model, rna[half_b], atac[half_b], label_key=label_key)
        run["scores, all cells"] = every
        run["scores, target unseen by the unpaired model"] = {
            "rna->atac (half A)": on_a["rna->atac"], "atac->rna (half B)": on_b["atac->rna"],
        }  # fmt: skip
        runs[name] = run
        save({"n_half_a": int(len(half_a)), "n_half_b": int(len(half_b)), "runs": runs})
    return {"n_half_a": int(len(half_a)), "n_half_b": int(len(half_b)), "runs": runs}


def multivi_epochs(
    rna: ad.AnnData, atac: ad.AnnData, label_key: str, save, epochs: list[int], previous: dict
):
    """Quality of C's MultiVI clusters vs MultiVI training epochs, on the translate_quality training split.

    Runs already in ``previous`` (an earlier results file) are kept, so epochs can be added one at a time."""
    from butterfly.model._pairing import leiden_groups
    from butterfly.model._scvi import scvi_latent

    train = issue_split(rna.n_obs)[1]
    truth = rna.obs[label_key].to_numpy()[train]
    runs = dict(previous.get("runs", {}))
    for n in epochs:
        print(f"MultiVI, {n} epochs", flush=True)
        start = time.perf_counter()
        latent = scvi_latent([rna[train], atac[train]], ["rna", "atac"], seed=0, max_epochs=n)
        run = {"multivi_seconds": round(time.perf_counter() - start, 1)}
        for resolution in (1.0, 3.0):
            groups = leiden_groups(latent, resolution=resolution, seed=0)
            run[f"resolution {resolution:g}"] = {
                "clusters": int(len(set(groups))), "AMI vs cell type": adjusted_mutual_info_score(truth, groups),
                "ARI vs cell type": adjusted_rand_score(truth, groups),
            }  # fmt: skip
        runs[str(n)] = run
        save({"n_train": int(len(train)), "runs": runs})
    return {"n_train": int(len(train)), "runs": runs}


def _markdown(experiment: str, results: dict) -> str:
    m = results["machine"]
    lines = [f"# augmentation.py {experiment} on {results['data']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}. "
             f"Budget: {BUDGET} (C: a third of the epochs on 3x pairs).", ""]  # fmt: skip
    if experiment == "multivi-epochs":
        lines += [f"MultiVI latent of the {results['n_train']} training cells of the translate_quality split, "
                  "clustered by Leiden; AMI/ARI against the cell types.", "",
                  "| MultiVI epochs | seconds | clusters (res 1) | AMI (res 1) | clusters (res 3) | AMI (res 3) | ARI (res 3) |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for n, run in sorted(results["runs"].items(), key=lambda item: int(item[0])):
            r1, r3 = run["resolution 1"], run["resolution 3"]
            lines.append(f"| {n} | {run['multivi_seconds']} | {r1['clusters']} | {r1['AMI vs cell type']:.3f} | "
                         f"{r3['clusters']} | {r3['AMI vs cell type']:.3f} | {r3['ARI vs cell type']:.3f} |")  # fmt: skip
        return "\n".join(lines) + "\n"
    for name, run in results["runs"].items():
        lines.append(f"## {name}")
        lines.append("")
        lines.append(
            f"training {run['train_seconds']} s, peak RSS {run['peak_rss_gb']} GB, epochs {run['epochs_run']}"
        )
        if "clustering" in run:
            c = run["clustering"]
            lines.append(f"clustering: {c['seconds']} s, {c['clusters']} clusters, "
                         f"AMI {c['AMI vs cell type']:.3f} / ARI {c['ARI vs cell type']:.3f} vs cell type")  # fmt: skip
        lines.append("")
        for key in [k for k in run if k.startswith("scores")]:
            lines += [
                f"| {key} | AMI | ARI | NMI | HOM | Pearson (gene) / AUROC |",
                "|---|---|---|---|---|---|",
            ]
            for profile, s in run[key].items():
                numeric = s.get("pearson_per_feature", s.get("AUROC", float("nan")))
                lines.append(f"| {profile} | {s['AMI']:.3f} | {s['ARI']:.3f} | {s['NMI']:.3f} | {s['HOM']:.3f} | {numeric:.3f} |")  # fmt: skip
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", choices=["backends", "unpaired", "multivi-epochs"])
    parser.add_argument("--epochs", type=int, nargs="+", default=[50, 150, 400],
                        help="multivi-epochs: MultiVI training epochs to try")  # fmt: skip
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--prefix", default="", help="file names are <prefix>rna.h5ad, <prefix>atac.h5ad")
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--smoke", action="store_true", help="3 epochs per phase, to check the script runs")
    args = parser.parse_args()
    if args.smoke:
        BUDGET.update(pretrain_epochs=3, epochs=3)
        global MULTIVI_EPOCHS
        MULTIVI_EPOCHS = 3
    rna, atac = (ad.read_h5ad(args.data / f"{args.prefix}{m}.h5ad") for m in ("rna", "atac"))
    name = f"augmentation_{args.experiment.replace('-', '_')}"
    if args.experiment == "multivi-epochs":
        earlier = args.out / f"{name}.json"
        previous = json.loads(earlier.read_text()) if earlier.is_file() else {}

        def run(rna, atac, label_key, save):
            return multivi_epochs(rna, atac, label_key, save, args.epochs, previous)
    else:
        run = backends if args.experiment == "backends" else unpaired

    def save(body: dict) -> None:
        results = {"data": args.data.name, "machine": machine(), "budget": BUDGET, **body}
        write_results(args.out, name, results, _markdown(args.experiment, results))

    save(run(rna, atac, args.label_key, save))


if __name__ == "__main__":
    main()
