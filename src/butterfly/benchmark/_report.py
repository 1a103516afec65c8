"""The report folder of ``butterfly benchmark`` and ``benchmark-merge``: the score tables, their summary
(JSON and markdown), the metric box plots, the t-SNE panels of example folds and one HTML page."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import ButterflyInputError
from ..io._atomic import check_report_folder, copy_file_atomic, save_figure_atomic, write_text_atomic
from ..pl._figures import _pyplot, plot_tsne_panels

CLUSTERING_METRICS = ("AMI", "ARI", "NMI", "HOM")


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and number of folds per (profile, model, metric) of a long score table."""
    grouped = scores.groupby(["profile", "model", "metric"], sort=False)["value"]
    return grouped.agg(mean="mean", std="std", folds="count").reset_index()


def summary_markdown(summary: pd.DataFrame) -> str:
    """One markdown table per profile: models as rows, metrics as columns, ``mean ± sd`` over folds."""
    lines = []
    for profile, part in summary.groupby("profile", sort=False):
        metrics = list(dict.fromkeys(part["metric"]))
        lines += [
            f"### {profile}",
            "",
            "| model | " + " | ".join(metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        for model, rows in part.groupby("model", sort=False):
            values = rows.set_index("metric")
            cells = []
            for m in metrics:
                if m not in values.index:
                    cells.append("")
                    continue
                mean, std = values.loc[m, "mean"], values.loc[m, "std"]
                cells.append(f"{mean:.3f}" + (f" ± {std:.3f}" if np.isfinite(std) else ""))
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_metric_boxes(
    scores: pd.DataFrame, path: str | os.PathLike | None = None, metrics=CLUSTERING_METRICS
):
    """Box plots of clustering metrics across folds: one panel per translation direction, one box per model."""
    plt = _pyplot()
    directions = [p for p in dict.fromkeys(scores["profile"]) if "->" in p]
    fig, axes = plt.subplots(1, len(directions), figsize=(5.5 * len(directions), 3.8), squeeze=False)
    for ax, direction in zip(axes[0], directions, strict=True):
        part = scores[(scores["profile"] == direction) & scores["metric"].isin(metrics)]
        models = list(dict.fromkeys(part["model"]))
        width = 0.8 / max(len(models), 1)
        for i, model in enumerate(models):
            data = [
                part[(part["model"] == model) & (part["metric"] == m)]["value"].to_numpy() for m in metrics
            ]
            positions = np.arange(len(metrics)) + (i - (len(models) - 1) / 2) * width
            boxes = ax.boxplot(
                data, positions=positions, widths=width * 0.9, patch_artist=True, manage_ticks=False
            )
            for box in boxes["boxes"]:
                box.set_facecolor(plt.get_cmap("tab10")(i))
            ax.plot([], [], color=plt.get_cmap("tab10")(i), lw=6, label=model)
        ax.set_xticks(np.arange(len(metrics)), metrics)
        ax.set_title(direction)
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure_atomic(fig, path, dpi=110)
    return fig


def write_html(
    path: str | os.PathLike, title: str, markdown_tables: str, images: dict[str, str | os.PathLike]
) -> None:
    """A self-contained HTML page (images embedded as base64; opens with no network) of tables and figures."""
    import base64
    import html

    body = [f"<h1>{html.escape(title)}</h1>"]
    table_lines: list[str] = []
    for line in markdown_tables.splitlines() + [""]:
        if line.startswith("|"):
            table_lines.append(line)
            continue
        if table_lines:
            rows = [r.strip("|").split("|") for r in table_lines if not set(r) <= set("|-")]
            head, *rest = rows
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>")
            body += [
                "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rest
            ]
            body.append("</table>")
            table_lines = []
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    for caption, image in images.items():
        data = base64.b64encode(Path(image).read_bytes()).decode()
        body.append(
            f"<figure><img src='data:image/png;base64,{data}' style='max-width:100%'><figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    style = "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
    write_text_atomic(path, page)


#: Every file ``butterfly benchmark`` and ``benchmark-merge`` write into their --out (names or patterns).
BENCHMARK_FILES = (
    "scores.csv",
    "comparisons.csv",
    "scores.partial.csv",
    "summary.json",
    "summary.md",
    "metrics_boxplot.png",
    "tsne_*.png",  # a merge's copies too (tsne_..._run1.png)
    "report.html",
)


def comparisons_markdown(comparisons: pd.DataFrame) -> str:
    """A markdown table of paired comparisons (:func:`~butterfly.benchmark.run_protocol`'s
    ``examples["comparisons"]``): for each direction, metric and baseline, the first model's difference from the
    baseline, mean over folds, and the 95% bootstrap interval (one fold) or in how many folds the interval lay
    above and below 0. **below** marks a baseline the model is worse than beyond the noise (lower is better
    for RMSE and MAE, so there a positive difference is the loss)."""
    lines = [
        "## Paired comparisons over test cells",
        "",
        f"{comparisons['model'].iloc[0]} minus each baseline, on the same test cells; 95% intervals from a "
        "paired bootstrap over the cells (200 resamples). For RMSE and MAE lower is better.",
        "",
        "| direction | metric | versus | difference | interval | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for (profile, metric, versus), rows in comparisons.groupby(["profile", "metric", "versus"], sort=False):
        lower_better = metric in ("RMSE", "MAE")
        worse = (rows["low"] > 0) if lower_better else (rows["high"] < 0)
        better = (rows["high"] < 0) if lower_better else (rows["low"] > 0)
        if len(rows) == 1:
            interval = f"[{rows['low'].iloc[0]:+.3f}, {rows['high'].iloc[0]:+.3f}]"
        else:
            interval = f"{int(better.sum())} of {len(rows)} folds above, {int(worse.sum())} below"
        verdict = "**below**" if worse.all() else "above" if better.all() else "tie or mixed"
        lines.append(
            f"| {profile} | {metric} | {versus} | {rows['difference'].mean():+.3f} | {interval} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def write_benchmark_report(
    out: str | os.PathLike,
    scores: pd.DataFrame,
    examples: dict,
    *,
    title: str,
    colour_keys: tuple[str, ...] = ("cell_type", "batch"),
    settings: dict | None = None,
    extra_images: dict[str, Path] | None = None,
) -> dict[str, Path]:
    """Write a benchmark's results into ``out``: ``scores.csv`` (every fold), ``summary.json`` and
    ``summary.md`` (mean ± sd), ``metrics_boxplot.png``, one t-SNE figure per direction (first fold: measured
    target vs each model's translation, coloured by each of ``colour_keys`` present) and ``report.html``."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(scores)
    write_text_atomic(out / "scores.csv", scores.to_csv(index=False))
    records = {"title": title, "settings": settings or {}, "summary": summary.to_dict(orient="records")}
    write_text_atomic(out / "summary.json", json.dumps(records, indent=2, default=float))
    comparisons = examples.get("comparisons")
    text = (
        f"# {title}\n\n"
        + (f"Settings: {json.dumps(settings)}\n\n" if settings else "")
        + summary_markdown(summary)
    )
    if comparisons is not None and len(comparisons):
        write_text_atomic(out / "comparisons.csv", comparisons.to_csv(index=False))
        text += "\n" + comparisons_markdown(comparisons)
    write_text_atomic(out / "summary.md", text)
    plot_metric_boxes(scores, out / "metrics_boxplot.png")
    images = {"Clustering metrics across folds": out / "metrics_boxplot.png"}
    obs, profiles_by_key = examples["obs"], examples["profiles"]
    colourings = {k: obs[k].to_numpy() for k in colour_keys if obs is not None and k in obs}
    directions = list(dict.fromkeys(d for _, d in profiles_by_key if "->" in d))
    for direction in directions:
        target = direction.split("->")[1]
        profiles = {f"measured {target}": profiles_by_key["measured", target]}
        profiles.update(
            {f"{model}: {direction}": X for (model, d), X in profiles_by_key.items() if d == direction}
        )
        path = out / f"tsne_{direction.replace('->', '_to_')}.png"
        plot_tsne_panels(profiles, colourings, path)
        images[f"t-SNE of test cells (first fold), {direction}"] = path
    _pyplot().close("all")
    images.update(extra_images or {})
    write_html(out / "report.html", title, text, images)
    return {"summary": out / "summary.md", "html": out / "report.html"}


#: Settings that may differ between runs merged into one table: which folds and models each ran.
_PER_RUN_SETTINGS = ("folds_run", "models", "match_steps", "scvi_epochs", "note", "merged_from", "runs")
#: Values of settings that runs from before the setting was recorded used (the defaults of the time).
_SETTING_DEFAULTS = {
    "precision": "float32",
    "seed": 0,
    "kl_warmup_epochs": 0,
    "recalibrate_batch_norm": False,
    "weight_average_halflife": 0.0,
    "translate_samples": 0,
    "scoring_runs": 1,
    "joint": False,
}


def merge_benchmarks(
    runs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    title: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Merge the results of several ``butterfly benchmark`` runs of one protocol into one report.

    Use it when a protocol's folds or models were run separately (``--only-folds``, several machines, or
    one model at a time). Each run folder needs ``scores.csv`` (or, for a stopped run, ``scores.partial.csv``)
    and ``summary.json``. The runs must share the protocol, the number of folds, the seed and the training
    budget, or the merged table would compare unlike things; which folds and models each ran may differ.
    A model's score on a fold may appear in one run only. The measured profiles' scores ("measured" rows)
    are the same data scored again, so the first run's are kept. The t-SNE figures of each run that brings
    models not shown by an earlier run's figures are copied in. ``out`` holding files other than a benchmark
    report's is refused unless ``overwrite``.
    """
    import json

    if not runs:
        raise ButterflyInputError("Give at least one benchmark run folder to merge.")
    out = Path(out)
    tables, settings_list, titles = [], [], []
    for run in map(Path, runs):
        scores_path = next(
            (run / n for n in ("scores.csv", "scores.partial.csv") if (run / n).is_file()), None
        )
        if scores_path is None or not (run / "summary.json").is_file():
            raise ButterflyInputError(
                f"{run} is not a butterfly benchmark folder: it needs scores.csv (or scores.partial.csv) and "
                "summary.json, as `butterfly benchmark --out` writes them."
            )
        record = json.loads((run / "summary.json").read_text())
        tables.append(pd.read_csv(scores_path))
        settings_list.append({**_SETTING_DEFAULTS, **record.get("settings", {})})
        titles.append(record.get("title", ""))
    common = {k: v for k, v in settings_list[0].items() if k not in _PER_RUN_SETTINGS}
    for run, settings in zip(runs[1:], settings_list[1:], strict=True):
        shared = {k: v for k, v in settings.items() if k not in _PER_RUN_SETTINGS}
        differing = sorted(k for k in set(common) | set(shared) if common.get(k) != shared.get(k))
        if differing:
            details = ", ".join(f"{k}: {common.get(k)!r} vs {shared.get(k)!r}" for k in differing)
            raise ButterflyInputError(
                f"{run} was run with other settings than {runs[0]} ({details}); only runs of the same "
                "protocol and budget can share a table."
            )
    scores = pd.concat(tables, ignore_index=True)
    key = ["fold", "model", "profile", "metric"]
    repeated = scores[scores.duplicated(key, keep=False) & (scores["model"] != "measured")]
    if len(repeated):
        first = repeated.iloc[0]
        raise ButterflyInputError(
            f"Model {first['model']!r} has scores for fold {first['fold']} in more than one run; merge runs "
            "whose (fold, model) pairs do not overlap."
        )
    scores = scores.drop_duplicates(key, keep="first")
    folds = sorted(int(f) for f in scores["fold"].unique())
    merged = {
        **common,
        "folds_run": folds,
        "models": [m for m in dict.fromkeys(scores["model"]) if m != "measured"],
        "runs": [
            {
                "folder": str(run),
                **{k: s.get(k) for k in ("folds_run", "models", "match_steps", "scvi_epochs") if k in s},
            }
            for run, s in zip(runs, settings_list, strict=True)
        ],
    }
    if title is None:
        base = titles[0].split(", folds")[0]
        n_folds = common.get("folds")
        title = (
            base if n_folds is not None and len(folds) == n_folds else f"{base}, folds {folds} of {n_folds}"
        )
    check_report_folder(out, BENCHMARK_FILES, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    images, shown = {}, set()
    for i, (run, settings) in enumerate(zip(map(Path, runs), settings_list, strict=True)):
        models = set(settings.get("models") or [])
        if models and models <= shown:
            continue  # an earlier run's figures already show these models
        shown |= models
        for image in sorted(run.glob("tsne_*.png")):
            copy = out / f"{image.stem}_run{i}.png"
            if image.resolve() != copy.resolve():
                copy_file_atomic(image, copy)
            images[f"t-SNE from {run.name} ({image.stem.removeprefix('tsne_').replace('_to_', '->')})"] = copy
    return write_benchmark_report(
        out, scores, {"obs": None, "profiles": {}}, title=title, settings=merged,
        extra_images=images,
    )  # fmt: skip
