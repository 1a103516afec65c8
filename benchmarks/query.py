"""Data from a new lab: the by-batch protocols, where the test cells come from batches no model saw.

Rows per direction: the paper's model without covariates, the model with batch covariates
(``batch_key="batch"``; the unknown test batch translated with the mean of the training batches' covariates),
and that model adapted to the test batch with ``map_query`` on the test cells' SOURCE modality only (their
target is never seen: the adapted encoder learns from the cells' own reconstruction, as scArches does), against
the training mean, kNN and kernel ridge fitted on the training batches; and the same with ``fine_tune=False``
(only the new batch's covariate vectors train). Every butterfly model uses ``FAST_SETTING``; rows are the mean ±
sd over ``--seeds``. Below each table, per model and direction, the metrics where a 95% paired-bootstrap
interval over test cells (model seed ``--seeds[0]``) of its difference from another row excludes 0. The
by-cell protocols' scores, for the gap, are those of ``results/accuracy.md``.

Protocols: ``cite-batch`` (CITE-seq starter: train on batch s1d1, test on s1d2) and ``snare-batch4`` (SNARE-seq
4-fold by its 12 libraries, fold 0).

    python benchmarks/query.py --data ../shared/data --protocols cite-batch --seeds 0 1 2
writes ``results/query.json`` and ``results/query.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import machine, write_results  # noqa: E402
from accuracy import COLUMNS, fitted, split_of, table  # noqa: E402
from butterfly import metrics  # noqa: E402
from butterfly.benchmark._evaluate import _translate_and_score  # noqa: E402

BASELINES = ("mean", "knn", "kernel-ridge")
MODELS = ("butterfly", "butterfly covariates", "butterfly map_query", "butterfly map_query covariates-only")


def _scores(model, first, second, label_key, runs):
    return _translate_and_score(
        model, first, second, label_key=label_key, seed=0, reference=None, latent=False, translate_options=None,
        scoring_runs=runs, layer=None, joint=False,
    )  # fmt: skip


def run(protocol: str, args) -> dict:
    first, second, modalities, test, train = split_of(protocol, args.data)
    label_key, kinds = "cell_type", {"atac": "atac", "rna": "other", "adt": "other"}
    directions = [f"{modalities[0]}->{modalities[1]}", f"{modalities[1]}->{modalities[0]}"]
    rows, translations, truths = [], {}, None

    def record(name, seed, seconds, scores, made, only=None):
        for direction in only or directions:
            target = direction.split("->")[1]
            row = {"model": name, "seed": seed, "direction": direction, "seconds": seconds}
            row.update({m: scores[direction].get(m, float("nan")) for m in COLUMNS[kinds[target]]})
            rows.append(row)
            if seed == args.seeds[0]:
                translations.setdefault(name, {})[direction] = made[direction].X
        print(f"{protocol}: {name} seed {seed} in {seconds:.0f} s", flush=True)

    for name in BASELINES:
        start = time.perf_counter()
        model = fitted(name, first[train], second[train], modalities, 0, None, label_key)
        scores, made, truths, _ = _scores(model, first[test], second[test], label_key, args.scoring_runs)
        record(name, 0, time.perf_counter() - start, scores, made)
    for seed in args.seeds:
        for name, batch_key in (("butterfly", None), ("butterfly covariates", "batch")):
            start = time.perf_counter()
            model = bf.Butterfly(first[train], second[train], modalities=modalities, batch_key=batch_key, seed=seed,
                                 device="cpu")  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the check's and the unknown batch's warnings
                model.fit(**bf.FAST_SETTING, progress=False)
                seconds = time.perf_counter() - start
                scores, made, truths, _ = _scores(
                    model, first[test], second[test], label_key, args.scoring_runs
                )
            record(name, seed, seconds, scores, made)
        for direction in directions:  # adapted to the test batch's source modality alone
            source = direction.split("->")[0]
            query = (first if source == modalities[0] else second)[test]
            for name, fine_tune in (
                ("butterfly map_query", True),
                ("butterfly map_query covariates-only", False),
            ):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    adapted = model.map_query(
                        query,
                        source,
                        epochs=args.query_epochs,
                        seed=seed,
                        fine_tune=fine_tune,
                        progress=False,
                    )
                    seconds = time.perf_counter() - start
                    scores, made, truths, _ = _scores(
                        adapted, first[test], second[test], label_key, args.scoring_runs
                    )
                record(name, seed, seconds, scores, made, only=[direction])
    comparisons = []
    labels = first[test].obs[label_key].to_numpy()
    for name in MODELS:
        for direction, pred in translations[name].items():
            target = direction.split("->")[1]
            for other in [*BASELINES, *(m for m in MODELS if m != name)]:
                result = metrics.paired_bootstrap(pred, translations[other][direction], truths[target],
                                                  target_kind=kinds[target], labels=labels, rounds=args.rounds)  # fmt: skip
                for metric, r in result.items():
                    comparisons.append({"setting": name.split(" ", 1)[-1] if " " in name else "plain",
                                        "model": name, "direction": direction, "versus": other, "metric": metric, **r})  # fmt: skip
    return {"protocol": protocol, "cells": {"train": len(train), "test": len(test)}, "rows": rows,
            "comparisons": comparisons}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="the folder holding snare_mcc/, ... (shared/data)"
    )
    parser.add_argument("--protocols", nargs="+", default=["cite-batch", "snare-batch4"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--query-epochs", type=int, default=20, help="map_query's fine-tuning epochs")
    parser.add_argument("--scoring-runs", type=int, default=1, help="Leiden runs averaged per AMI")
    parser.add_argument("--rounds", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="query")
    parser.add_argument("--report-only", action="store_true", help="rewrite the markdown from the saved JSON")
    args = parser.parse_args()
    if args.report_only:
        import json

        results = json.loads((args.out / f"{args.name}.json").read_text())
        text = (args.out / f"{args.name}.md").read_text()
        head = text[: text.index("## ")]
        body = [
            line
            for r in results["protocols"]
            for line in [f"## {r['protocol']}", "", *_table(r, results["seeds"])]
        ]
        write_results(args.out, args.name, results, head + "\n".join(body) + "\n")
        return
    info = machine()
    results = {"machine": info, "setting": dict(bf.FAST_SETTING), "seeds": args.seeds, "protocols": []}
    lines = [
        "# Translating cells of a batch no model saw",
        "",
        f"Written by `benchmarks/query.py` on {info.get('cpu', '?')} ({info.get('torch_threads', '?')} torch "
        f"threads). butterfly rows: `FAST_SETTING`, mean ± sd over model seeds {args.seeds}; map_query: "
        f"{args.query_epochs} epochs on the test batch's source modality, fine-tuning that modality's encoder and "
        "decoder (map_query) or only the new batch's covariate vectors (covariates-only). Below each table, per "
        "model: the metrics where it is better or worse than kNN, kernel ridge and butterfly without covariates, "
        f"by a 95% paired-bootstrap interval over test cells (model seed {args.seeds[0]}) that excludes 0.",
        "",
    ]
    for protocol in args.protocols:
        result = run(protocol, args)
        results["protocols"].append(result)
        lines += [f"## {protocol}", ""] + _table(result, args.seeds)
        write_results(args.out, args.name, results, "\n".join(lines) + "\n")


#: The rows each butterfly row is compared with, below each table.
VERSUS = ("knn", "kernel-ridge", "butterfly")


def _table(result: dict, seeds: list[int]) -> list[str]:
    """accuracy.table's layout, then per butterfly model and direction the metrics where it is better or
    worse than kNN, kernel ridge and the model without covariates, beyond the paired bootstrap's 95%."""
    import pandas as pd

    comparisons = pd.DataFrame(result["comparisons"])
    lines = table({**result, "comparisons": []}, seeds)
    errors = comparisons.metric.isin(["RMSE", "MAE"])  # lower is better
    comparisons["verdict"] = ""
    comparisons.loc[(comparisons.low > 0) & ~errors | (comparisons.high < 0) & errors, "verdict"] = "better"
    comparisons.loc[(comparisons.high < 0) & ~errors | (comparisons.low > 0) & errors, "verdict"] = "worse"
    for name in MODELS[1:]:
        for direction, part in comparisons[comparisons.model == name].groupby("direction", sort=False):
            said = []
            for versus in VERSUS:
                rows = part[(part.versus == versus) & (part.verdict != "")]
                for verdict in ("better", "worse"):
                    metrics_ = sorted(rows[rows.verdict == verdict].metric)
                    if metrics_:
                        said.append(f"{verdict} than {versus} on {', '.join(metrics_)}")
            lines.append(f"- {name}, {direction}: " + ("; ".join(said) or "no difference beyond noise from "
                                                        + ", ".join(VERSUS)))  # fmt: skip
    return lines + [""]


if __name__ == "__main__":
    main()
