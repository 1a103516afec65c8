"""A model in words: the text of :meth:`butterfly.Butterfly.summary` and ``butterfly info``."""

from __future__ import annotations

import numpy as np

from ..pp._accessibility import ATACPreprocessor
from ..train._settings import FAST_SETTING, TrainingConfig
from ._quality import summary_line

#: A feature whose validation Pearson r is above this is called trusted (summary, figures, the demo).
TRUSTED_VALIDATION_R = 0.3

_FEATURE_WORDS = {"rna": "genes", "expression": "genes", "adt": "proteins"}
_PAIRINGS = {
    "measured": "measured pairs (scButterfly-B)",
    "label": "measured pairs augmented within obs[{labels!r}] (scButterfly-T)",
    "cluster": "measured pairs augmented within Leiden clusters, {backend} embedding (scButterfly-C)",
    "unpaired": "unpaired cells, pairs drawn within obs[{labels!r}]",
    "transport": "control and stimulated cells paired by optimal transport within obs[{labels!r}]",
}


def describe_model(model) -> str:
    """The text of :meth:`butterfly.Butterfly.summary` (see there)."""

    def features(name: str) -> str:
        pre = model.preprocessors[name]
        if isinstance(pre, ATACPreprocessor):
            return f"{pre.n_features:,} peaks on {len(set(pre.chrom_))} chromosomes"
        return f"{pre.n_features:,} {_FEATURE_WORDS.get(model.specs[name].preprocessing, 'features')}"

    first, second = model.names
    state = "trained" if model.is_trained_ else "not trained"
    lines = [
        f"butterfly model, {state} (seed {model.seed}, device {model.device})",
        f"modalities: {first} ({features(first)}) <-> {second} ({features(second)})",
        "pairing: "
        + _PAIRINGS.get(model.pairing, model.pairing).format(
            labels=model.label_key, backend=model.cluster_backend
        ),
    ]
    data = model.training_data_
    if data:
        cells = ", ".join(f"{n:,} {name}" for name, n in data["cells"].items())
        lines.append(
            f"trained on: {cells} cells; {data['training_pairs']:,} training pairs, "
            f"{data['validation_pairs']:,} validation pairs (early stopping)"
            + (f"; on {data['processes']} processes (torchrun)" if data.get("processes", 1) > 1 else "")
        )
    config = model.training_config
    if config is not None:
        chosen = config.to_dict()
        # named after the nearer of the two settings butterfly documents, with what differs from it
        differences = {}
        for name, base in (("paper defaults", {}), ("FAST_SETTING", FAST_SETTING)):
            base = TrainingConfig(**base).to_dict()
            differences[name] = [f"{k}={v}" for k, v in chosen.items() if base[k] != v]
        name = min(differences, key=lambda n: len(differences[n]))
        changed = ", ".join(differences[name])
        lines.append(f"setting: {name}" + (f" with {changed}" if changed else ""))
    history = model.history_
    if history is not None and len(history):
        for phase, rows in history.groupby("phase", sort=False):
            limit = None
            if config is not None:
                limit = config.epochs if phase == "integrative" else config.pretrain_epochs
            ran = len(rows)
            best = int(rows["best_epoch"].iloc[-1])
            kept = rows[rows["epoch"] == best]
            text = f"{phase}: {ran}" + (f" of {limit}" if limit else "") + " epochs"
            if len(kept):
                # the early-stopping criterion: the validation cells' reconstruction (and translation) loss
                recon = float(kept["val_recon"].iloc[0])
                text += f", kept epoch {best} (validation reconstruction loss {recon:.4f})"
            if limit and ran < limit:
                text += ", stopped early"
            lines.append(text + f"; {float(rows['seconds'].sum()):.0f} s")
    recalibration = model.batch_norm_recalibration_
    if recalibration is not None:
        verdict = "kept" if recalibration["kept"] else "not kept: the training statistics stay"
        lines.append(
            f"BatchNorm statistics re-estimated: validation loss {recalibration['validation_loss_before']:.4f}"
            f" -> {recalibration['validation_loss_after']:.4f} ({verdict})"
        )
    lines += _validation_score_lines(model.validation_scores_ or {}, TRUSTED_VALIDATION_R)
    checks = getattr(model, "translation_check_", None) or {}
    if checks:
        lines.append("translation check on validation cells (does it follow the differences between cells?):")
        lines += [f"  {summary_line(direction, check)}" for direction, check in checks.items()]
    if model.saved_with_:
        lines.append("saved with: " + ", ".join(f"{k} {v}" for k, v in model.saved_with_.items()))
    return "\n".join(lines)


def _validation_score_lines(scores: dict[str, np.ndarray], threshold: float) -> list[str]:
    """One line per target modality: how many of its features translate with validation r above
    ``threshold``."""
    lines = []
    for target, values in scores.items():
        scored = values[~np.isnan(values)]
        if scored.size:
            lines.append(
                f"{target}: {int((scored > threshold).sum()):,} of {values.size:,} features translate with "
                f"validation r above {threshold} (median {np.median(scored):.3f}); each feature's r is "
                "var['validation_pearson'] of its translations"
            )
    return lines
