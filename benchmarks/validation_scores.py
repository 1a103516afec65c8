"""Do a model's per-feature validation scores foretell how well each gene or protein translates on new cells?

    python benchmarks/validation_scores.py --data ../shared/data/cite_bmmc_neurips_starter --modalities rna adt --seeds 0 1 2 3 4
    python benchmarks/validation_scores.py --data ../shared/data/snare_mcc --modalities rna atac --seeds 0 1

Issue 3's split (test = the first 20% of ``RandomState(0).permutation``). Each model (``bf.FAST_SETTING``,
one per seed) trains on the rest, of which it holds out 20% for early stopping; at the end of ``fit`` it
scores each RNA or protein feature's translation on those validation cells (``validation_scores_``,
Pearson r across cells). This script translates the test cells and compares each feature's validation r
with its r on the test cells: their correlation over features, the test r of the features in the top
quartile of validation r against the rest, and the test r by bins of validation r. ATAC targets get no
per-peak scores (README). Writes <name>.json and .md into --out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import machine, machine_line, mean_sd_table, read_split, split_parser, write_results  # noqa: E402
from butterfly import metrics  # noqa: E402

BINS = [-1.0, 0.1, 0.3, 0.5, 0.7, 1.0]


def score_direction(model: bf.Butterfly, source: str, target: str, cells, measured) -> dict:
    """Validation r against test r of each target feature, for one translation direction."""
    out = model.translate(cells, source=source, target=target, progress=False)
    validation = out.var["validation_pearson"].to_numpy()
    test = metrics.feature_pearson(out.X, model.preprocessors[target].transform(measured).X)
    both = ~np.isnan(validation) & ~np.isnan(test)
    validation, test = validation[both], test[both]
    top = validation >= np.quantile(validation, 0.75)
    row = {
        "features": int(both.sum()),
        "validation r": float(validation.mean()),
        "test r": float(test.mean()),
        "correlation": float(np.corrcoef(validation, test)[0, 1]),
        "test r, top quartile": float(test[top].mean()),
        "test r, rest": float(test[~top].mean()),
    }
    for low, high in zip(BINS[:-1], BINS[1:], strict=True):
        inside = (validation > low) & (validation <= high)
        row[f"bin ({low}, {high}]"] = (
            {"features": int(inside.sum()), "test r": float(test[inside].mean())} if inside.any() else None
        )
    return row


def main() -> None:
    parser = split_parser(__doc__)
    args = parser.parse_args()
    first, second, test, train = read_split(args)
    data = dict(zip(args.modalities, (first, second), strict=True))
    rows = []
    for seed in args.seeds:
        model = bf.Butterfly(
            first[train].copy(), second[train].copy(), modalities=tuple(args.modalities), seed=seed
        )
        model.fit(**bf.FAST_SETTING, progress=False)
        for source, target in (args.modalities, args.modalities[::-1]):
            if target not in model.validation_scores_:
                continue
            row = score_direction(model, source, target, data[source][test], data[target][test])
            rows.append({"seed": seed, "translation": f"{source}->{target}", **row})
            print(rows[-1])

    columns = ["validation r", "test r", "correlation", "test r, top quartile", "test r, rest"]
    info = machine()
    lines = [
        f"# Per-feature validation scores against test cells: {args.data.name}",
        "",
        f"{machine_line(info, model.device)} "
        f"{len(train)} training cells (20% of them validation), {len(test)} test cells; `bf.FAST_SETTING`, "
        f"seeds {args.seeds}; mean ± sd over seeds.",
        "",
        *mean_sd_table(rows, "translation", columns),
        "",
        "Test r by validation r (features summed over seeds):",
        "",
        "| translation | validation r in | features | mean test r |",
        "|---|---|---|---|",
    ]
    for translation in dict.fromkeys(r["translation"] for r in rows):
        mine = [r for r in rows if r["translation"] == translation]
        for low, high in zip(BINS[:-1], BINS[1:], strict=True):
            cells = [r[f"bin ({low}, {high}]"] for r in mine if r[f"bin ({low}, {high}]"]]
            if cells:
                n = sum(c["features"] for c in cells)
                mean = sum(c["test r"] * c["features"] for c in cells) / n
                lines.append(f"| {translation} | ({low}, {high}] | {n} | {mean:.3f} |")
    name = args.name or f"validation_scores_{args.data.name}"
    write_results(
        args.out, name, {"data": str(args.data), "machine": info, "rows": rows}, "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
