"""Integrative analysis with a translated modality (the paper's Fig. 4b and 4c): do cells measured in one
modality, joined with their translation into the other, separate cell types as well as cells measured in both?

    python benchmarks/integration.py --data ../shared/data/snare_mcc --modalities rna atac --seeds 0 1 2
    python benchmarks/integration.py --data ../shared/data/cite_bmmc_neurips_starter --modalities rna adt --seeds 0 1 2

Issue 3's split (test = the first 20% of ``RandomState(0).permutation``); one model per seed
(``bf.FAST_SETTING``) trained on the rest. Every embedding is ``bf.integrate``'s: a truncated SVD per
modality (30 components; LSI for ATAC), blocks scaled to equal weight; one modality alone is its own block.
Each is clustered by Leiden (resolution 1, 15 neighbours) and scored by AMI and ARI against ``cell_type``,
the mean over ``--scoring-runs`` runs (SVD and Leiden seeded 0, 1, ...).

- Test cells (Fig. 4b): each modality measured alone; both measured; one measured with the other translated
  from it; both translated (each from the other measured one).
- Test cells, for comparison: each modality measured, joined with the kNN translator's translation of it
  (20 nearest training cells in the source's SVD space; embedded the same way).
- Training cells (Fig. 4c, "data enhancement": the model translates the cells it was trained on): the
  same embeddings, one or both modalities replaced by their translations.

Writes <name>.json and .md into --out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import machine, machine_line, mean_sd_table, read_split, split_parser, write_results  # noqa: E402
from butterfly import metrics  # noqa: E402
from butterfly.benchmark._baselines import KNNTranslator  # noqa: E402
from butterfly.model._pairing import joint_embedding, leiden_groups  # noqa: E402


def cluster_scores(embed, labels: np.ndarray, runs: int) -> dict[str, float]:
    """AMI and ARI of Leiden clusters of ``embed(seed)``, the mean over ``runs`` seeds."""
    scores = [
        metrics.clustering_scores(leiden_groups(embed(seed), resolution=1.0, seed=seed), labels)
        for seed in range(runs)
    ]
    return {key: float(np.mean([s[key] for s in scores])) for key in ("AMI", "ARI")}


def score_knn(knn, model: bf.Butterfly, measured: dict[str, ad.AnnData], runs: int) -> dict:
    """Each measured modality joined with its translation by the kNN translator, embedded as ``bf.integrate``
    embeds a model's translation (kNN's output lies in the same preprocessed space)."""
    a, b = model.names
    labels = measured[a].obs["cell_type"].astype(str).to_numpy()
    kinds = [model.specs[name].preprocessing for name in (a, b)]
    rows = {}
    for kept, other in ((a, b), (b, a)):
        blocks = {
            kept: model.preprocessors[kept].transform(measured[kept]).X,
            other: knn.translate(measured[kept], source=kept, target=other).X,
        }

        def joint(seed, blocks=blocks):
            return joint_embedding([blocks[a], blocks[b]], kinds, n_components=30, seed=seed)

        combo = " + ".join(f"measured {n}" if n == kept else f"kNN-translated {n}" for n in (a, b))
        rows[combo] = cluster_scores(joint, labels, runs)
    return rows


def score_cells(model: bf.Butterfly, measured: dict[str, ad.AnnData], runs: int) -> dict:
    """Scores of the embeddings of one set of cells, measured in both of the model's modalities."""
    a, b = model.names
    labels = measured[a].obs["cell_type"].astype(str).to_numpy()
    translated = {
        a: model.translate(measured[b], source=b, target=a, progress=False),
        b: model.translate(measured[a], source=a, target=b, progress=False),
    }
    combos = {
        f"measured {a} + measured {b}": (measured[a], measured[b]),
        f"measured {a} + translated {b}": (measured[a], translated[b]),
        f"translated {a} + measured {b}": (translated[a], measured[b]),
        f"translated {a} + translated {b}": (translated[a], translated[b]),
    }
    rows = {}
    for name in (a, b):
        X = model.preprocessors[name].transform(measured[name]).X
        kind = model.specs[name].preprocessing

        def alone(seed, X=X, kind=kind):
            return joint_embedding([X], [kind], n_components=30, seed=seed)

        rows[f"measured {name} alone"] = cluster_scores(alone, labels, runs)
    for combo, (first, second) in combos.items():

        def joint(seed, first=first, second=second):
            return bf.integrate(model, {a: first, b: second}, seed=seed)

        rows[combo] = cluster_scores(joint, labels, runs)
    return rows


def main() -> None:
    parser = split_parser(__doc__)
    parser.add_argument("--scoring-runs", type=int, default=3)
    args = parser.parse_args()
    first, second, test, train = read_split(args)
    rows = []
    for seed in args.seeds:
        model = bf.Butterfly(
            first[train].copy(), second[train].copy(), modalities=tuple(args.modalities), seed=seed
        )
        model.fit(**bf.FAST_SETTING, progress=False)
        for cells, part in ((test, "test"), (train, "training")):
            measured = dict(zip(args.modalities, (first[cells], second[cells]), strict=True))
            for combo, scores in score_cells(model, measured, args.scoring_runs).items():
                rows.append({"seed": seed, "cells": part, "embedding": f"{part}: {combo}", **scores})
                print(rows[-1], flush=True)
    # the kNN translator (20 neighbours, SVD 50; no seed to vary) for comparison, on the test cells
    knn = KNNTranslator(first[train].copy(), second[train].copy(), modalities=tuple(args.modalities))
    measured = dict(zip(args.modalities, (first[test], second[test]), strict=True))
    for combo, scores in score_knn(knn, model, measured, args.scoring_runs).items():
        rows.append({"seed": "kNN", "cells": "test", "embedding": f"test: {combo}", **scores})
        print(rows[-1], flush=True)

    info = machine()
    lines = [
        f"# Integrative analysis with a translated modality: {args.data.name}",
        "",
        f"{machine_line(info, model.device)} {len(train)} training cells (20% of them validation), "
        f"{len(test)} test cells; `bf.FAST_SETTING`, seeds {args.seeds}; each score the mean of "
        f"{args.scoring_runs} Leiden runs (resolution 1) of `bf.integrate`'s embedding; mean ± sd over seeds.",
        "",
        *mean_sd_table(rows, "embedding", ["AMI", "ARI"]),
    ]
    name = args.name or f"integration_{args.data.name}"
    write_results(
        args.out, name, {"data": str(args.data), "machine": info, "rows": rows}, "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
