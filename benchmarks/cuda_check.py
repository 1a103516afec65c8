"""Checks of the GPU path that the CPU-only test suite cannot make, and its figures.

    python benchmarks/cuda_check.py [--device cuda] [--out DIR] [--parts graphs layers fit]

1. Both forms of the chromosome-blocked layers on the device against a per-chromosome loop of the same
   weights in float64 on the CPU: outputs and weight gradients; sparse encoder input against dense.
2. A short fit of the shipped SNARE-seq cells on the device: the model lands there, the losses are finite
   (each phase's first and last reconstruction loss recorded), the held-out cells' translations are
   clustered against cell types, and a saved model loaded on the CPU translates as the device did.
3. Reproducibility on the device: the same seed twice (GPU kernels with atomics sum in a varying order).
4. A bfloat16 fit on the device.
5. The options added since: a fit with the weight average and BatchNorm recalibration (the average's tensors
   stay on the device), and translations averaged over latent draws from a device generator (reproducible,
   probabilities, not the latent mean's, the same in batches of any size and from translate_to_h5ad).
6. Training steps replayed from CUDA graphs (the default on a GPU) against eager steps: the same losses
   epoch by epoch and the same translations, against the spread of two eager runs; how many steps replayed.

Writes cuda_check.json and cuda_check.md into --out (with the device type in the name when it is not cuda;
a run of some of the parts, 1 = layers, 2-5 = fit, 6 = graphs, is named after them: cuda_check_graphs.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anndata
import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).parent))
import butterfly as bf  # noqa: E402
from _common import machine, machine_line, write_results  # noqa: E402
from butterfly import metrics
from butterfly.datasets import _shipped as datasets
from butterfly.module._layers import ChromosomeBlockedDecoderLinear, ChromosomeBlockedEncoderLinear  # noqa: E402
from butterfly.train import _trainer as training  # noqa: E402
from butterfly.train._data import _to_sparse_rows  # noqa: E402


def loop_reference(layer, x: torch.Tensor, codes: np.ndarray, encoder: bool) -> torch.Tensor:
    """The layer's function as one float64 product per chromosome on the CPU (peaks in the user's order)."""
    outputs = []
    bias = layer.bias.detach().double().cpu() if encoder else layer.feature_bias().detach().double().cpu()
    out = torch.zeros(x.shape[0], len(codes), dtype=torch.float64) if not encoder else None
    for c in range(int(codes.max()) + 1):
        w = layer.chromosome_weight(c).detach().double().cpu()  # [n_c, units]
        cols = np.flatnonzero(codes == c)
        if encoder:
            outputs.append(x[:, cols] @ w + bias[c])
        else:
            units = w.shape[1]
            out[:, cols] = x[:, c * units : (c + 1) * units] @ w.T + bias[cols]
    return torch.cat(outputs, 1) if encoder else out


def layer_checks(device: torch.device) -> dict:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 20, size=3000)  # interleaved chromosomes: the layers must reorder
    results = {}
    for encoder, cls in ((True, ChromosomeBlockedEncoderLinear), (False, ChromosomeBlockedDecoderLinear)):
        x = (
            (torch.rand(64, 3000) < 0.02).double()
            if encoder
            else torch.randn(64, 20 * 32, dtype=torch.float64)
        )
        for form in (False, True):
            layer = cls(codes.tolist(), 32)
            layer.batched = form
            expected = loop_reference(layer, x, codes, encoder)
            layer.to(device)
            xd = x.float().to(device)
            out = layer(xd)
            out.pow(2).sum().backward()
            grad = layer.weight.grad.detach().double().cpu().clone()
            # the same gradient from float64 autograd on the CPU, through the layer's own CPU form
            layer64 = cls(codes.tolist(), 32).double()
            layer64.load_state_dict({k: v.double().cpu() for k, v in layer.state_dict().items()})
            layer64(x).pow(2).sum().backward()
            name = f"{'encoder' if encoder else 'decoder'}, {'batched' if form else 'per chromosome'}"
            results[name] = {
                "max_abs_output_difference": float((out.detach().double().cpu() - expected).abs().max()),
                "max_abs_weight_grad_difference": float((grad - layer64.weight.grad).abs().max()),
                "max_abs_output": float(expected.abs().max()),
            }
    layer = ChromosomeBlockedEncoderLinear(codes.tolist(), 32).to(device)
    x = (torch.rand(64, 3000) < 0.02).float()
    sparse = _to_sparse_rows(sp.csr_matrix(x.numpy()), device)
    results["encoder, sparse rows vs dense"] = {
        "max_abs_output_difference": float((layer(sparse) - layer(x.to(device))).abs().max())
    }
    return results


def finite(history) -> bool:
    return bool(np.isfinite(history[["train_loss", "val_loss"]].to_numpy(float)).all())


def fit_checks(device: torch.device, epochs: tuple[int, int]) -> dict:
    rna, atac = datasets.snare_mcc_demo()
    order = np.random.RandomState(0).permutation(rna.n_obs)
    test, train = np.sort(order[:400]), np.sort(order[400:])
    labels = rna[test].obs["cell_type"].to_numpy()
    results: dict = {}

    def fit(precision="float32", **options):
        model = bf.Butterfly(rna[train], atac[train], modalities=("rna", "atac"), seed=0, device=str(device))
        start = time.perf_counter()
        history = model.fit(*epochs, batch_size=64, progress=False, precision=precision, **options)
        return model, history, time.perf_counter() - start

    model, history, seconds = fit()
    results["model_device"] = str(next(model.network.parameters()).device)
    results["train_seconds"] = round(seconds, 1)
    results["losses_finite"] = finite(history)
    falls = {}
    for phase, part in history.groupby("phase", sort=False):
        falls[phase] = [
            round(float(part["train_recon"].iloc[0]), 4),
            round(float(part["train_recon"].iloc[-1]), 4),
        ]
    results["train_recon_first_last"] = falls
    rna_pred = model.translate(atac[test], source="atac", target="rna")
    atac_pred = model.translate(rna[test], source="rna", target="atac")
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "m")
        on_cpu = bf.Butterfly.load(Path(tmp) / "m", device="cpu")
    results["saved on device, loaded on cpu: max abs difference of atac->rna"] = float(
        np.abs(on_cpu.translate(atac[test], source="atac", target="rna").X - rna_pred.X).max()
    )
    again, _, _ = fit()
    results["same seed twice: max abs difference of atac->rna"] = float(
        np.abs(again.translate(atac[test], source="atac", target="rna").X - rna_pred.X).max()
    )
    bf16, history16, seconds16 = fit("bfloat16")
    results["bfloat16 train_seconds"] = round(seconds16, 1)
    results["bfloat16 losses finite"] = finite(history16)
    pred16 = bf16.translate(atac[test], source="atac", target="rna")
    averaged, history_avg, seconds_avg = fit(weight_average_halflife=10.0, recalibrate_batch_norm=True)
    results["weight average + recalibration train_seconds"] = round(seconds_avg, 1)
    results["weight average + recalibration losses finite"] = finite(history_avg)
    results["weight average + recalibration parameters on"] = sorted(
        {str(t.device) for t in averaged.network.state_dict().values()}
    )
    draws = averaged.translate(rna[test], source="rna", target="atac", n_samples=10)
    mean_pred = averaged.translate(rna[test], source="rna", target="atac")
    results["10 draws: max abs difference, same call twice"] = float(
        np.abs(averaged.translate(rna[test], source="rna", target="atac", n_samples=10).X - draws.X).max()
    )
    results["10 draws: range"] = [round(float(draws.X.min()), 4), round(float(draws.X.max()), 4)]
    results["10 draws: mean abs difference from the latent mean's"] = float(
        np.abs(draws.X - mean_pred.X).mean()
    )
    with tempfile.TemporaryDirectory() as tmp:
        averaged.translate_to_h5ad(
            rna[test], Path(tmp) / "t.h5ad", source="rna", target="atac", n_samples=10, batch_size=128,
            progress=False,
        )  # fmt: skip
        on_disk = anndata.read_h5ad(Path(tmp) / "t.h5ad").X
        on_disk = on_disk.toarray() if sp.issparse(on_disk) else on_disk
    in_batches = averaged.translate(rna[test], source="rna", target="atac", n_samples=10, batch_size=128)
    for name, X in (("translate", in_batches.X), ("translate_to_h5ad", on_disk)):
        results[f"10 draws: max abs difference, {name} in batches of 128 vs one batch"] = float(
            np.abs(X - draws.X).max()
        )
    # clustering last: it needs scanpy and leidenalg, which a bare GPU machine may lack
    profiles = {
        "atac->rna": rna_pred.X,
        "rna->atac": atac_pred.X,
        "measured atac": model.preprocessors["atac"].transform(atac[test]).X,
        "bfloat16 atac->rna": pred16.X,
        "weight average + recalibration rna->atac": mean_pred.X,
        "weight average + recalibration rna->atac, 10 draws": draws.X,
    }
    for name, X in profiles.items():
        try:
            results[f"AMI {name}"] = round(
                metrics.clustering_scores(metrics.leiden_clusters(X), labels)["AMI"], 3
            )
        except ImportError as error:
            results[f"AMI {name}"] = f"not scored: {error}"
    return results


def graph_checks(device: torch.device, epochs: tuple[int, int] = (3, 4)) -> dict:
    """CUDA-graph training against eager training from one seed, dense inputs both (what graphs train on).

    Batches of 200 on the demo's 1,600 training cells (1,280 training pairs): six full batches an epoch,
    replayed after the first three steps of a phase, and a last one of 80 cells run eagerly.
    """
    rna, atac = datasets.snare_mcc_demo()
    order = np.random.RandomState(0).permutation(rna.n_obs)
    test, train = np.sort(order[:400]), np.sort(order[400:])
    steps: list = []

    class Counted(training.GraphedStep):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            steps.append(self)

    def fit(graphs: bool):
        model = bf.Butterfly(rna[train], atac[train], modalities=("rna", "atac"), seed=0, device=str(device))
        start = time.perf_counter()
        history = model.fit(*epochs, batch_size=200, patience=100, kl_warmup_epochs=2, progress=False,
                            sparse_inputs=False, cuda_graphs=graphs)  # fmt: skip
        seconds = time.perf_counter() - start
        pred = {
            "atac->rna": model.translate(atac[test], source="atac", target="rna").X,
            "rna->atac": model.translate(rna[test], source="rna", target="atac").X,
        }
        return history, pred, seconds

    original, training.GraphedStep = training.GraphedStep, Counted
    try:
        eager, eager_pred, eager_seconds = fit(False)
        again, again_pred, _ = fit(False)
        graphed, graphed_pred, graphed_seconds = fit(True)
    finally:
        training.GraphedStep = original
    columns = ["train_loss", "train_recon", "val_loss", "val_recon"]

    def largest(a, b) -> float:
        return float(np.nanmax(np.abs(a[columns].to_numpy(float) - b[columns].to_numpy(float))))

    results = {
        "epochs (pretraining, integrative)": list(epochs),
        "graphed steps: phases, eager steps, replays": [
            len(steps), [s.eager_steps for s in steps], [s.replays for s in steps]
        ],
        "eager vs eager: max abs difference of the epochs' losses": largest(eager, again),
        "eager vs graphs: max abs difference of the epochs' losses": largest(eager, graphed),
        "eager train_recon of the last epoch, per phase": eager.groupby("phase", sort=False)["train_recon"].last().round(5).to_dict(),
        "graphs train_recon of the last epoch, per phase": graphed.groupby("phase", sort=False)["train_recon"].last().round(5).to_dict(),
        "eager seconds / graphs seconds": [round(eager_seconds, 1), round(graphed_seconds, 1)],
    }  # fmt: skip
    for name in eager_pred:
        results[f"eager vs eager: max abs difference of {name}"] = float(
            np.abs(eager_pred[name] - again_pred[name]).max()
        )
        results[f"eager vs graphs: max abs difference of {name}"] = float(
            np.abs(eager_pred[name] - graphed_pred[name]).max()
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--epochs", type=int, nargs=2, default=[15, 50], help="pretraining and integrative epochs"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--parts", nargs="+", default=["graphs", "layers", "fit"],
                        choices=["graphs", "layers", "fit"])  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {"machine": machine(), "device": str(device), "layers": {}, "fit": {}, "graphs": {}}
    if "graphs" in args.parts:
        results["graphs"] = graph_checks(device)
        print(results["graphs"], flush=True)
    if "layers" in args.parts:
        results["layers"] = layer_checks(device)
        print(results["layers"], flush=True)
    if "fit" in args.parts:
        results["fit"] = fit_checks(device, tuple(args.epochs))
    lines = [f"# GPU path checks on {results['machine']['cuda'] or 'CPU'} ({device})"]
    if results["layers"]:
        lines += ["", "## Chromosome-blocked layers against a float64 per-chromosome loop (float32 on the device)",
                  "", "| layer, form | max abs output difference | max abs weight-gradient difference |",
                  "|---|---|---|"]  # fmt: skip
        for name, r in results["layers"].items():
            lines.append(f"| {name} | {r['max_abs_output_difference']:.1e} | "
                         f"{r.get('max_abs_weight_grad_difference', float('nan')):.1e} |")  # fmt: skip
    sections = (
        ("fit", f"Fit of the shipped 1,600 + 400 SNARE-seq cells, {args.epochs[0]} + {args.epochs[1]} epochs, "
                "batch 64"),
        ("graphs", "Training steps replayed from CUDA graphs against eager steps (demo cells, batch 200)"),
    )  # fmt: skip
    for part, title in sections:
        if results[part]:
            lines += ["", f"## {title}", "", "| check | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in results[part].items()]
    lines += ["", machine_line(results["machine"], device)]
    # a run of some of the parts is named after them: it leaves the full check's results alone
    name = (
        "cuda_check"
        if set(args.parts) == {"graphs", "layers", "fit"}
        else "cuda_check_" + "_".join(args.parts)
    )
    name += "" if device.type == "cuda" else f"_{device.type}"
    write_results(args.out, name, results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
