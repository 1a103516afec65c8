"""How much do the clustering scores move with the scoring's own seed (PCA and Leiden), for butterfly and kNN?

    python benchmarks/scoring_seeds.py --data ../shared/data/snare_mcc --model-seeds 0 1 --score-seeds 0 1 2 3 4 5 6 7 8 9

translate_quality.py scores every model with one scoring seed (0): one PCA and one Leiden run per
translation. This script trains models on the translate_quality split (``--setting fast``:
``bf.FAST_SETTING``; ``paper``: the paper's defaults; one model per ``--model-seed``), translates the test
cells once each way (from the latent mean, averaged over ``--translate-samples`` latent draws, and into ATAC
in the paper's other output forms with ``--atac-outputs``), and
clusters each translation, the kNN translator's and the measured profiles with every scoring seed. A comparison of butterfly with kNN then rests on many Leiden
runs of both instead of one. Scoring seed 0 gives translate_quality.py's figures. Writes <name>.json and
<name>.md into --out.
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
from _common import issue_split, machine, machine_line, write_results  # noqa: E402
from butterfly import metrics  # noqa: E402
from butterfly.benchmark._baselines import KNNTranslator  # noqa: E402

CLUSTER_SCORES = ("AMI", "ARI", "NMI", "HOM")
SETTINGS = {"fast": dict(bf.FAST_SETTING), "paper": {}}


def _options(setting: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "paper defaults"


def translations(
    model, first: ad.AnnData, second: ad.AnnData, names, atac_output: str | None = None, **options
) -> dict[str, np.ndarray]:
    """``{"a->b": translated X}`` for both directions; with ``atac_output``, only the direction into ATAC,
    in that output form (``translate(atac_output=...)``)."""
    data = dict(zip(names, (first, second), strict=True))
    out = {}
    for source, target in (names, names[::-1]):
        if atac_output is not None:
            if target != "atac":
                continue
            options = {**options, "atac_output": atac_output}
        out[f"{source}->{target}"] = model.translate(data[source], source=source, target=target, progress=False,
                                                     **options).X  # fmt: skip
    return out


def score_over_seeds(
    profiles: dict[str, np.ndarray], labels: np.ndarray, seeds
) -> dict[str, dict[str, list]]:
    """``{profile: {score: [value per scoring seed]}}``."""
    scores = {}
    for name, X in profiles.items():
        per_seed = [metrics.cell_heterogeneity(X, labels, seed=s) for s in seeds]
        scores[name] = {k: [round(float(p[k]), 4) for p in per_seed] for k in CLUSTER_SCORES}
    return scores


def _mean_sd(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std())


def table(results: dict) -> str:
    """Markdown: each set of profiles over the scoring seeds, then butterfly's models summarised."""
    names = results["modalities"]
    runs, n_seeds = results["scores"], len(results["score_seeds"])
    lines = [
        f"# Clustering scores over {n_seeds} scoring seeds ({results['data']}, "
        f"{results['n_train']} train / {results['n_test']} test cells)",
        "",
        "Each row: mean ± sd over the scoring seeds (PCA + Leiden) of one set of profiles, then [min, max]; "
        f"seed 0 is translate_quality.py's figure. butterfly: fit({_options(results['setting'])}). Summary rows: "
        "the mean over "
        "models of each model's mean over the scoring seeds, ± sd over models, and how many models' means "
        "reach kNN's.",
        "",
    ]
    kinds: dict[str, list[str]] = {}  # "butterfly" / "butterfly, N draws": its models' rows
    for key, info in results["models"].items():
        label = f"butterfly, {info['n_samples']} draws" if info.get("n_samples") else "butterfly"
        if info.get("atac_output"):
            label = f"butterfly, ATAC as {info['atac_output']}"
        kinds.setdefault(label, []).append(key)
    for direction in (f"{names[0]}->{names[1]}", f"{names[1]}->{names[0]}"):
        lines += [f"## {direction}", "", "| profiles | AMI | ARI | AMI at seed 0 |", "|---|---|---|---|"]
        for run, scores in runs.items():
            if run == "measured" or direction not in scores:
                continue
            ami, ari = (np.asarray(scores[direction][k]) for k in ("AMI", "ARI"))
            lines.append(f"| {run} | {ami.mean():.3f} ± {ami.std():.3f} [{ami.min():.3f}, {ami.max():.3f}] | "
                         f"{ari.mean():.3f} ± {ari.std():.3f} | {ami[0]:.3f} |")  # fmt: skip
        knn_ami = _mean_sd(runs["kNN"][direction]["AMI"])[0]
        for label, keys in kinds.items():
            keys = [k for k in keys if direction in runs[k]]
            if not keys:
                continue
            per_model = [_mean_sd(runs[k][direction]["AMI"])[0] for k in keys]
            per_model_ari = [_mean_sd(runs[k][direction]["ARI"])[0] for k in keys]
            at_zero = [runs[k][direction]["AMI"][0] for k in keys]
            (m, sd), (m_ari, sd_ari) = _mean_sd(per_model), _mean_sd(per_model_ari)
            reach = sum(v >= knn_ami for v in per_model)
            lines.append(f"| **{label}, {len(keys)} models** | **{m:.3f} ± {sd:.3f}** ({reach} of {len(keys)} "
                         f"reach kNN's {knn_ami:.3f}) | {m_ari:.3f} ± {sd_ari:.3f} | "
                         f"{np.mean(at_zero):.3f} |")  # fmt: skip
        lines.append("")
    lines += ["## measured profiles", "", "| profiles | AMI | ARI |", "|---|---|---|"]
    for name, scores in runs["measured"].items():
        (ami, ami_sd), (ari, ari_sd) = _mean_sd(scores["AMI"]), _mean_sd(scores["ARI"])
        lines.append(f"| {name} | {ami:.3f} ± {ami_sd:.3f} | {ari:.3f} ± {ari_sd:.3f} |")
    lines += ["", machine_line(results["machine"], torch.device(results.get("device", "cpu")))]
    return "\n".join(lines) + "\n"


def merge(paths: list[Path]) -> dict:
    """One result from runs of other model seeds on the same data, split and scoring seeds."""
    parts = [json.loads(p.read_text()) for p in paths]
    merged = {**parts[0], "models": {}, "scores": dict(parts[0]["scores"])}
    for part in parts:
        for key in ("data", "modalities", "n_train", "n_test", "setting", "score_seeds"):
            if part[key] != merged[key]:
                raise SystemExit(f"cannot merge: {key} differs ({part[key]!r} vs {merged[key]!r})")
        for key in ("measured", "kNN"):  # deterministic given the split and seeds: must agree
            if part["scores"][key] != merged["scores"][key]:
                raise SystemExit(f"cannot merge: the {key} scores differ between runs")
        merged["models"].update(part["models"])
        merged["scores"].update(part["scores"])
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="folder of one h5ad per modality")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="instead of training: join these runs (other model seeds) into --name",
    )
    parser.add_argument("--modalities", nargs=2, default=["rna", "atac"])
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="fast",
                        help="fast: bf.FAST_SETTING; paper: the paper's defaults")  # fmt: skip
    parser.add_argument("--model-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--score-seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--translate-samples", type=int, default=10, help="0: the latent mean only")
    parser.add_argument(
        "--atac-outputs", nargs="+", default=[], choices=["counts", "binary"],
        help="also score each model's translations into ATAC in these output forms (the paper's recovered "
        "counts, eq. 12, and their binarisation), from the latent mean",
    )  # fmt: skip
    parser.add_argument("--name", default=None, help="result file name (default scoring_seeds_<data folder>)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.merge:
        merged = merge(args.merge)
        write_results(args.out, args.name or f"scoring_seeds_{merged['data']}", merged, table(merged))
        return
    if args.data is None:
        parser.error("--data is required (or --merge)")

    first, second = (ad.read_h5ad(args.data / f"{m}.h5ad") for m in args.modalities)
    test, train = issue_split(first.n_obs)
    names = tuple(args.modalities)
    labels = first.obs[args.label_key].to_numpy()[test]

    knn = KNNTranslator(first[train], second[train], modalities=names)
    reference = knn._model  # preprocessing fitted on the training cells, as evaluate_translation does
    measured = {f"measured {n}": reference.preprocessors[n].transform(d[test]).X
                for n, d in zip(names, (first, second), strict=True)}  # fmt: skip
    runs = {
        "measured": score_over_seeds(measured, labels, args.score_seeds),
        "kNN": score_over_seeds(
            translations(knn, first[test], second[test], names), labels, args.score_seeds
        ),
    }
    models = {}
    for model_seed in args.model_seeds:
        start = time.perf_counter()
        model = bf.Butterfly(first[train], second[train], modalities=names, seed=model_seed)
        model.fit(**SETTINGS[args.setting], progress=False)
        seconds = round(time.perf_counter() - start, 1)
        kinds = {f"butterfly seed {model_seed}": {}}
        if args.translate_samples:
            kinds[f"butterfly seed {model_seed}, {args.translate_samples} draws"] = {
                "n_samples": args.translate_samples
            }
        for form in args.atac_outputs:
            kinds[f"butterfly seed {model_seed}, ATAC as {form}"] = {"atac_output": form}
        for key, options in kinds.items():
            runs[key] = score_over_seeds(translations(model, first[test], second[test], names, **options),
                                         labels, args.score_seeds)  # fmt: skip
            models[key] = {"model_seed": model_seed, "train_seconds": seconds, **options}
        print(f"model seed {model_seed}: trained in {seconds} s", flush=True)

    results = {
        "data": args.data.name, "modalities": list(names), "n_train": int(len(train)), "n_test": int(len(test)),
        "setting": dict(SETTINGS[args.setting]), "score_seeds": args.score_seeds, "models": models, "scores": runs,
        "threads": torch.get_num_threads(), "machine": machine(), "device": str(model.device),
    }  # fmt: skip
    write_results(args.out, args.name or f"scoring_seeds_{args.data.name}", results, table(results))


if __name__ == "__main__":
    main()
