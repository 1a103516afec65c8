"""Score a trained model on held-out paired cells, both directions, the way the paper does."""

from __future__ import annotations

import anndata as ad

from . import metrics
from .model import Butterfly


def evaluate_translation(
    model: Butterfly, first: ad.AnnData, second: ad.AnnData, *, label_key: str = "cell_type", seed: int = 0
) -> dict[str, dict[str, float]]:
    """Translate held-out paired cells both ways and score each translation against the measured profiles.

    For every direction ``source->target``: clustering of the translated profiles (AMI, ARI, NMI, HOM vs
    ``label_key``), and numerical agreement with the measured target as the model preprocesses it:
    per-feature and per-cell Pearson for RNA/ADT/expression, AUROC against the binarised peaks for ATAC.
    The measured profiles of each modality are clustered too (``measured <name>``), as a reference.
    """
    data = dict(zip(model.names, (first, second), strict=True))
    labels = first.obs[label_key].to_numpy()
    results: dict[str, dict[str, float]] = {}
    truth = {name: model.preprocessors[name].transform(data[name]).X for name in model.names}
    for name in model.names:
        results[f"measured {name}"] = metrics.cell_heterogeneity(truth[name], labels, seed=seed)
    for source, target in (model.names, model.names[::-1]):
        pred = model.translate(data[source], source=source, target=target).X
        scores = metrics.cell_heterogeneity(pred, labels, seed=seed)
        if model.specs[target].preprocessing == "atac":
            scores["AUROC"] = metrics.auroc(pred, truth[target])
        else:
            scores["pearson_per_feature"] = metrics.pearson_per_feature(pred, truth[target])
            scores["pearson_per_cell"] = metrics.pearson_per_cell(pred, truth[target])
        results[f"{source}->{target}"] = scores
    return results


def scores_table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table of :func:`evaluate_translation` results."""
    columns = list(dict.fromkeys(k for scores in results.values() for k in scores))
    lines = ["| profile | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, scores in results.items():
        cells = [f"{scores[c]:.3f}" if c in scores else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
