"""Can the validation cells choose between decoding the latent mean and averaging latent draws?

    python benchmarks/validation_draws.py --data ../shared/data/snare_mcc --setting fast --model-seeds 0 1 2 3
    python benchmarks/validation_draws.py --data ../shared/data/snare_mcc --setting paper --model-seeds 0 1

Trains on the translate_quality split's training cells (its test cells are never read) and, on the 20% of
them that the model holds out for early stopping, scores each translation decoded from the latent mean
(``n = 0``) and averaged over ``n`` latent draws (``translate(n_samples=n)``): the reconstruction loss the
model trains on (BCE for ATAC targets, MSE otherwise; computed on the decoder's output before the 1e-4
cut-off) and the paper's clustering protocol against ``--label-key``. A criterion that could pick the
translation for a user's model would have to agree with what the test cells say (README, Headline figures).
Writes validation_draws_<setting>.json and .md into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import issue_split, machine, write_results  # noqa: E402
from butterfly import metrics  # noqa: E402
from butterfly.module._network import latent_noise  # noqa: E402
from butterfly.train._data import dense_rows  # noqa: E402

FITS = {"fast": dict(bf.FAST_SETTING), "paper": {}}


def translation_loss(model: bf.Butterfly, cells: np.ndarray, source: str, target: str, n: int) -> float:
    """The target's reconstruction loss of the translations of training rows ``cells`` (validation cells)."""
    net = model.network
    x = dense_rows(model._matrices[source], cells, model.device, source in net.feature_major)
    truth = torch.as_tensor(model._matrices[target][cells].toarray())
    noise = latent_noise(model.seed, 0, len(cells), n, net.translator.latent, model.device) if n else None
    pred = net.translate(x, source, target, noise)[0].cpu()
    if model.specs[target].preprocessing == "atac":
        p = pred.clamp(1e-7, 1 - 1e-7)
        return float(-(truth * p.log() + (1 - truth) * (1 - p).log()).mean())
    return float(((pred - truth) ** 2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--modalities", nargs=2, default=["rna", "atac"])
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--setting", choices=sorted(FITS), default="fast")
    parser.add_argument("--model-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 3, 10, 30])
    parser.add_argument("--clustered-samples", type=int, default=10, help="draws whose clustering is scored")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    first, second = (ad.read_h5ad(args.data / f"{m}.h5ad") for m in args.modalities)
    train = issue_split(first.n_obs)[1]
    first, second = first[train].copy(), second[train].copy()
    a, b = args.modalities
    runs = []
    for seed in args.model_seeds:
        model = bf.Butterfly(first, second, modalities=(a, b), seed=seed)
        model.fit(**{"progress": False, **FITS[args.setting]})
        cells = model._training_pairs()[1].rows[a]  # the held-out validation cells, rows of the training data
        labels = first.obs[args.label_key].to_numpy()[cells]
        run = {"model_seed": seed, "n_validation": int(len(cells)), "directions": {}}
        for source, target in ((a, b), (b, a)):
            scores = {
                "loss": {n: translation_loss(model, cells, source, target, n) for n in [0, *args.samples]}
            }
            data = (first if source == a else second)[cells]
            for n in (0, args.clustered_samples):
                pred = model.translate(data, source=source, target=target, n_samples=n, progress=False).X
                scores[f"clusters n={n}"] = metrics.cell_heterogeneity(pred, labels, seed=0)
            run["directions"][f"{source}->{target}"] = scores
        runs.append(run)
        print(run)

    k = args.clustered_samples
    lines = [f"# Latent mean or averaged draws, judged on validation cells ({args.data.name}, {args.setting} setting)",
             "", f"Machine: {machine()['cpu']}. Loss: the target's reconstruction loss (BCE / MSE) of the translations; "
             f"n = number of latent draws averaged (0: decoded from the latent mean).", "",
             "| seed | translation | loss n=0 | " + " | ".join(f"n={n}" for n in args.samples)
             + f" | AMI n=0 | AMI n={k} | ARI n=0 | ARI n={k} |",
             "|---" * (6 + len(args.samples)) + "|"]  # fmt: skip
    for run in runs:
        for direction, s in run["directions"].items():
            lines.append(
                f"| {run['model_seed']} | {direction} | {s['loss'][0]:.6f} | "
                + " | ".join(f"{s['loss'][n]:.6f}" for n in args.samples)
                + f" | {s['clusters n=0']['AMI']:.3f} | {s[f'clusters n={k}']['AMI']:.3f}"
                f" | {s['clusters n=0']['ARI']:.3f} | {s[f'clusters n={k}']['ARI']:.3f} |"
            )
    results = {"data": args.data.name, "setting": args.setting, "fit": FITS[args.setting], "machine": machine(),
               "runs": runs}  # fmt: skip
    write_results(args.out, args.name or f"validation_draws_{args.setting}", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
