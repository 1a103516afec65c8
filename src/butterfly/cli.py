"""Command line: ``butterfly train | translate | benchmark | benchmark-merge | demo``. Thin: parses arguments and calls the API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._io import write_text_atomic
from .protocols import MODEL_NAMES
from .settings import FAST_SETTING, TrainingConfig

EXAMPLES = """examples:
  butterfly demo --out butterfly_demo
  butterfly train --first rna.h5ad --second atac.h5ad --modalities rna atac --out my_model
  butterfly train --first rna.h5ad --second atac.h5ad --fast --out my_model   # minutes, not the paper's hour
  butterfly translate --model my_model --input new_atac.h5ad --source atac --target rna --out predicted_rna.h5ad
  butterfly translate --model my_model --input rna_only.h5ad --source rna --target atac --joint --out atac.h5ad
  butterfly info my_model   # what a saved model is and how it was trained
  butterfly train --first arc/filtered_feature_bc_matrix.h5 --second arc/filtered_feature_bc_matrix.h5 --fast --out m
  butterfly train --first multiome.h5mu --second multiome.h5mu --first-layer counts --fast --out m
  butterfly train --first control.h5ad --second stimulated.h5ad --perturbation --fast --out ifnb_model
  butterfly translate --model ifnb_model --input control_b_cells.h5ad --source control --target stimulated --out pred.h5ad
  butterfly benchmark --first rna.h5ad --second atac.h5ad --protocol batch --folds 4 --out bench_batch
  butterfly benchmark-merge bench_folds01 bench_folds23 --out bench_batch   # folds run separately
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="butterfly",
        description="Single-cell cross-modality translation (scButterfly): train on paired cells, then predict "
        "a missing modality (RNA, ATAC or protein) for any cells.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"butterfly {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a translator on paired cells",
        description="Train a translator on two .h5ad files holding the same cells (raw counts). --first and "
        "--second may also name one MuData .h5mu file (its modalities named as --modalities, or rna/gex, "
        "atac/peaks, prot/adt) or one Cell Ranger .h5 matrix (ARC, multi: its Gene Expression, Peaks and "
        "Antibody Capture features).",
    )
    train.add_argument(
        "--first", required=True, type=Path, help="h5ad of the first modality (e.g. RNA counts)"
    )
    train.add_argument(
        "--second", required=True, type=Path, help="h5ad of the second modality (e.g. ATAC counts)"
    )
    train.add_argument(
        "--modalities", nargs=2, default=["rna", "atac"], metavar=("FIRST", "SECOND"),
        help="kinds of the two files: rna, atac, adt or expression (default: rna atac)",
    )  # fmt: skip
    _add_layer_options(train)
    train.add_argument("--variant", choices=["B", "T", "C"], default="B",
                       help="B: measured pairs; T: pairs augmented within cell types (--label-key); "
                       "C: augmented within clusters of a joint embedding (default B)")  # fmt: skip
    train.add_argument("--cluster-backend", choices=["builtin", "scvi"], default="builtin",
                       help="C's joint embedding: builtin (SVD/LSI, seconds) or scvi (MultiVI/totalVI; needs "
                       "pip install butterfly-omics[scvi])")  # fmt: skip
    train.add_argument("--scvi-epochs", type=int, default=None, metavar="N",
                       help="--cluster-backend scvi: cap MultiVI/totalVI training at N epochs (scvi-tools' "
                       "default: 500, with early stopping)")  # fmt: skip
    train.add_argument("--unpaired", action="store_true",
                       help="the two files hold different cells; pair them by shared --label-key labels")  # fmt: skip
    train.add_argument("--perturbation", action="store_true",
                       help="--first holds control and --second stimulated cells (log-normalised expression of the "
                       "same genes, different cells): learn the response, pairing cells by optimal transport within "
                       "--label-key cell types; then translate --source control --target stimulated")  # fmt: skip
    train.add_argument(
        "--label-key",
        default="cell_type",
        help="obs column of cell types for T, --unpaired and --perturbation",
    )
    train.add_argument("--out", required=True, type=Path, help="folder to save the trained model in")
    train.add_argument("--fast", action="store_true",
                       help="the recommended fast setting instead of the paper's defaults: batch 256, learning "
                       "rates 2e-3 / 1e-2, KL warm-up 15, up to 30 + 150 epochs, patience 15, BatchNorm statistics "
                       "recalibrated (under 3 minutes for 8,000 cells on two CPU cores); flags given explicitly "
                       "still apply")  # fmt: skip
    train.add_argument("--pretrain-epochs", type=int, default=None,
                       help="max epochs of pretraining (default 100; --fast: 30)")  # fmt: skip
    train.add_argument("--epochs", type=int, default=None,
                       help="max epochs of integrative training (default 200; --fast: 150)")  # fmt: skip
    train.add_argument("--patience", type=int, default=None,
                       help="early-stopping patience (default 50; --fast: 15)")  # fmt: skip
    train.add_argument(
        "--batch-size", type=int, default=None, help="minibatch size (default 64; --fast: 256)"
    )
    train.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                       help="bfloat16: faster training on CPUs with AVX-512 BF16 and recent GPUs (default float32)")  # fmt: skip
    _add_optimizer_options(train, fast_defaults=True)
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_device_options(train)
    train.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    translate = commands.add_parser(
        "translate",
        help="predict one modality from another with a trained model",
        description="Translate cells measured in SOURCE into TARGET with a model saved by 'butterfly train'.",
    )
    translate.add_argument("--model", required=True, type=Path, help="folder of a trained model")
    translate.add_argument(
        "--input", required=True, type=Path,
        help="h5ad of the cells, in the source modality (or an .h5mu or Cell Ranger .h5 holding it)",
    )  # fmt: skip
    translate.add_argument(
        "--layer", default=None, metavar="NAME",
        help="read --input's data from its layer NAME (e.g. counts) instead of X",
    )  # fmt: skip
    translate.add_argument(
        "--peak-matching", choices=["exact", "overlap"], default="exact",
        help="ATAC input: match peaks to the model's by coordinates (default) or by overlap, for peaks called "
        "apart from the training data's",
    )  # fmt: skip
    translate.add_argument(
        "--normalized-to", type=float, default=None, metavar="TOTAL",
        help="RNA input already log-normalised, not counts: the total its cells were scaled to before log1p "
        "(e.g. 10000). Not needed for another model's RNA translation, which says its own",
    )  # fmt: skip
    translate.add_argument("--source", required=True, help="modality of --input (e.g. atac)")
    translate.add_argument("--target", required=True, help="modality to predict (e.g. rna)")
    translate.add_argument("--out", required=True, type=Path, help="h5ad file to write the prediction to")
    translate.add_argument(
        "--atac-output", default="probability", choices=["probability", "counts", "binary"],
        help="for an ATAC target: model output, recovered counts, or binarised peaks (default probability)",
    )  # fmt: skip
    translate.add_argument(
        "--samples", type=int, default=0, metavar="N",
        help="average the outputs decoded from N draws of each cell's latent (default 0: decode the latent "
        "mean, as the paper); N times the decoding. Coarser ATAC clusters: better or worse by training setting "
        "(README)",
    )  # fmt: skip
    translate.add_argument(
        "--joint", action="store_true",
        help="also store in the output's obsm['X_butterfly_joint'] one embedding of each cell's measured input "
        "and its translation, to cluster or plot as paired cells (bf.integrate); the output is then held in "
        "memory, not written batch by batch",
    )  # fmt: skip
    _add_device_options(translate)
    translate.add_argument(
        "--batch-size", type=int, default=1024, help="cells per forward pass (default 1024)"
    )
    translate.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    annotate = commands.add_parser(
        "annotate",
        help="label cells measured in one modality with a reference labelled in the other",
        description="Cell types of cells measured in SOURCE (e.g. ATAC only), from reference cells measured in "
        "the model's other modality and labelled (e.g. an RNA atlas): the cells are translated, and a linear "
        "SVM trained on the reference labels them. Writes a CSV: cell, label, margin (small margins: the "
        "classifier hesitated between two types).",
    )
    annotate.add_argument("--model", required=True, type=Path, help="folder of a trained model")
    annotate.add_argument(
        "--input", required=True, type=Path, help="h5ad of the cells to label (or .h5mu, .h5)"
    )
    annotate.add_argument("--source", required=True, help="modality of --input (e.g. atac)")
    annotate.add_argument(
        "--reference", required=True, type=Path,
        help="h5ad of labelled cells measured in the model's other modality, raw counts",
    )  # fmt: skip
    annotate.add_argument(
        "--label-key", default="cell_type", help="reference obs column of labels (default cell_type)"
    )
    annotate.add_argument("--out", required=True, type=Path, help="CSV file to write the labels to")
    annotate.add_argument("--layer", default=None, metavar="NAME", help="read --input from its layer NAME")
    annotate.add_argument(
        "--reference-layer", default=None, metavar="NAME", help="read --reference from its layer NAME"
    )
    annotate.add_argument("--peak-matching", choices=["exact", "overlap"], default="exact",
                          help="ATAC input: match peaks by coordinates (default) or by overlap")  # fmt: skip
    _add_device_options(annotate)
    annotate.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    bench = commands.add_parser(
        "benchmark",
        help="cross-validate butterfly and baselines on paired cells, write tables, figures and an HTML report",
        description="Run chosen models over a cross-validation protocol (by cell, by cell type: test types unseen, "
        "or by batch: test batches unseen) and write summary.md/.json, scores.csv, figures and report.html.",
    )
    bench.add_argument("--first", required=True, type=Path, help="h5ad of the first modality (raw counts)")
    bench.add_argument("--second", required=True, type=Path, help="h5ad of the second modality (raw counts)")
    _add_layer_options(bench)
    bench.add_argument("--modalities", nargs=2, default=["rna", "atac"], metavar=("FIRST", "SECOND"),
                       help="kinds of the two files (default: rna atac)")  # fmt: skip
    bench.add_argument("--protocol", choices=["cell", "cell_type", "batch"], default="cell",
                       help="what the folds split: cells (default), cell types, or batches")  # fmt: skip
    bench.add_argument(
        "--folds", type=int, default=None, help="number of folds (default 5 / 3 / 4 by protocol)"
    )
    bench.add_argument(
        "--only-folds", type=int, nargs="+", default=None, metavar="I",
        help="run only these folds (0-based) of the protocol, e.g. to spread one protocol over machines; "
        "scores keep the protocol's fold numbers",
    )  # fmt: skip
    bench.add_argument(
        "--models",
        nargs="+",
        default=["butterfly", "knn", "linear"],
        metavar="MODEL",
        choices=list(MODEL_NAMES),
        help="models to compare: butterfly (scButterfly-B), butterfly-T (pairs augmented within cell types), "
        "butterfly-C (within clusters; -C-scvi: clusters of MultiVI/totalVI, needs the scvi extra), knn, "
        "linear (default: butterfly knn linear)",
    )
    bench.add_argument(
        "--match-steps", action="store_true",
        help="give butterfly-T/-C a third of the epochs and patience, so they take as many optimizer steps as "
        "B on their 3x training pairs (default: same epochs, as the paper)",
    )  # fmt: skip
    bench.add_argument("--scvi-epochs", type=int, default=None, metavar="N",
                       help="butterfly-C-scvi: cap MultiVI/totalVI training at N epochs (scvi-tools' default: "
                       "500, with early stopping)")  # fmt: skip
    bench.add_argument(
        "--translate-samples", type=int, default=0, metavar="N",
        help="also score each butterfly model's translations averaged over N latent draws (translate "
        "--samples N), as a model of its own (default 0: only the latent mean's)",
    )  # fmt: skip
    bench.add_argument(
        "--scoring-runs", type=int, default=1, metavar="N",
        help="score each clustering as the mean over N Leiden runs (seeds --seed to --seed + N - 1); one run "
        "moves AMI by up to 0.02-0.03 (default 1, as the paper)",
    )  # fmt: skip
    bench.add_argument(
        "--joint", action="store_true",
        help="also score the paper's integrative analysis: each test modality measured, joined with its "
        "translation into the other (bf.integrate), and both measured, clustered",
    )  # fmt: skip
    bench.add_argument(
        "--label-key", default="cell_type", help="obs column of cell types (default cell_type)"
    )
    bench.add_argument("--batch-key", default="batch", help="obs column of batches (default batch)")
    bench.add_argument("--pretrain-epochs", type=int, default=100, help="butterfly: max pretraining epochs")
    bench.add_argument("--epochs", type=int, default=200, help="butterfly: max integrative epochs")
    bench.add_argument("--batch-size", type=int, default=64, help="butterfly: minibatch size (default 64)")
    bench.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                       help="butterfly: training precision (default float32)")  # fmt: skip
    _add_optimizer_options(bench, "butterfly: ")
    bench.add_argument(
        "--patience", type=int, default=50, help="butterfly: early-stopping patience (default 50)"
    )
    bench.add_argument("--seed", type=int, default=0, help="random seed of folds and models (default 0)")
    bench.add_argument("--out", required=True, type=Path, help="folder for the results")
    bench.add_argument("--overwrite", action="store_true", help=_REPORT_OVERWRITE_HELP)

    _add_device_options(bench, device=False)

    merge = commands.add_parser(
        "benchmark-merge",
        help="merge benchmark runs of one protocol (e.g. folds run separately with --only-folds) into one report",
        description="Merge the result folders of several `butterfly benchmark` runs of the same protocol and "
        "budget (folds or models run separately) into one summary, box plots and report.html.",
    )
    merge.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="result folders of benchmark runs")
    merge.add_argument("--out", required=True, type=Path, help="folder for the merged results")
    merge.add_argument("--overwrite", action="store_true", help=_REPORT_OVERWRITE_HELP)
    merge.add_argument("--title", default=None, help="report title (default: from the first run)")

    info = commands.add_parser(
        "info",
        help="describe a saved model: modalities, training cells and setting, epochs, validation scores",
        description="Print what a saved model is and how it was trained: its modalities and features, the "
        "cells and setting it trained on, each phase's epochs and validation loss, how many features "
        "translate well on its validation cells, and the versions it was saved with. Reads no data.",
    )
    info.add_argument("model", type=Path, metavar="MODEL", help="a model folder written by butterfly train")
    info.add_argument(
        "--plot", type=Path, default=None, metavar="PNG",
        help="also draw the model's training and validation loss curves into this image",
    )  # fmt: skip
    info.add_argument("--overwrite", action="store_true", help="replace --plot if it exists")

    demo = commands.add_parser(
        "demo",
        help="train and translate on the SNARE-seq cells shipped with butterfly, write a report",
        description="Train RNA<->ATAC on 1,600 shipped SNARE-seq cells, translate 400 held-out cells both ways, "
        "label their cell types from their ATAC alone, and write metrics, t-SNE plots, loss curves and the model "
        "to --out.",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("butterfly_demo"), help="report folder (default butterfly_demo)"
    )
    demo.add_argument(
        "--pretrain-epochs", type=int, default=100, help="max epochs of pretraining (default 100)"
    )
    demo.add_argument(
        "--epochs", type=int, default=200, help="max epochs of integrative training (default 200)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_device_options(demo)
    demo.add_argument("--overwrite", action="store_true", help=_REPORT_OVERWRITE_HELP)
    return parser


def _add_device_options(parser: argparse.ArgumentParser, device: bool = True) -> None:
    if device:
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="CPU threads to compute with (default: torch's, one per core or OMP_NUM_THREADS); on a shared "
        "machine or a cluster node, the cores you were given",
    )  # fmt: skip


def _limit_threads(threads: int | None) -> tuple[int, int | None] | None:
    """``--threads``: torch's threads, and numba's (scanpy's neighbour graph) where numba is installed.
    Returns the counts before, for :func:`_restore_threads` (``main`` may run inside a Python session)."""
    if threads is None:
        return None
    from ._validation import ButterflyInputError

    if threads < 1:
        raise ButterflyInputError(f"--threads must be at least 1, got {threads}.")
    import torch

    before = (torch.get_num_threads(), _numba_threads(threads))
    torch.set_num_threads(threads)  # after numba's, which can reset the OpenMP count torch shares
    return before


def _numba_threads(threads: int | None) -> int | None:
    """Set numba's thread count (capped at its pool) where numba is installed; returns the count before."""
    try:
        import numba
    except ImportError:
        return None
    before = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return before


def _restore_threads(before: tuple[int, int | None] | None) -> None:
    if before is None:
        return
    import torch

    _numba_threads(before[1])
    torch.set_num_threads(before[0])


_REPORT_OVERWRITE_HELP = "write into --out even if it holds files other than an earlier report of this kind"


def _add_layer_options(parser: argparse.ArgumentParser) -> None:
    for which in ("first", "second"):
        parser.add_argument(
            f"--{which}-layer", default=None, metavar="NAME",
            help=f"read --{which}'s data from its layer NAME (e.g. counts) instead of X",
        )  # fmt: skip
    parser.add_argument(
        "--shared-cells", action="store_true",
        help="keep only the cells both files hold (matched by name, in --first's order), e.g. the modalities "
        "of an .h5mu that were filtered apart; by default cells that differ are refused",
    )  # fmt: skip


def _add_optimizer_options(
    parser: argparse.ArgumentParser, prefix: str = "", *, fast_defaults: bool = False
) -> None:
    """``fast_defaults``: the options default to None, filled in by :func:`_training_options` from the paper's
    defaults or, with ``--fast``, from ``FAST_SETTING``."""
    paper = TrainingConfig()

    def default(key: str, what: str) -> tuple[object, str]:
        if not fast_defaults:
            return getattr(paper, key), f"{what} (default {getattr(paper, key)})"
        return None, f"{what} (default {getattr(paper, key)}; --fast: {FAST_SETTING[key]})"

    value, text = default("lr", f"{prefix}Adam learning rate")
    parser.add_argument("--lr", type=float, default=value, help=text)
    value, text = default("discriminator_lr", f"{prefix}SGD learning rate of the discriminators")
    parser.add_argument("--discriminator-lr", type=float, default=value, help=text)
    value, text = default(
        "kl_warmup_epochs",
        f"{prefix}raise the KL weight linearly over the first N epochs of each phase, as the authors' code "
        "does with 50 (0: the paper's text)",
    )
    parser.add_argument("--kl-warmup-epochs", type=int, default=value, metavar="N", help=text)
    text = (
        f"{prefix}after training, re-estimate the BatchNorm statistics as translation runs the network, kept "
        "only if they lower the validation loss (default off" + ("; --fast: on)" if fast_defaults else ")")
    )
    parser.add_argument("--recalibrate-batch-norm", action=argparse.BooleanOptionalAction, default=None,
                        help=text)  # fmt: skip
    parser.add_argument("--weight-average-halflife", type=float, default=0.0, metavar="EPOCHS",
                        help=f"{prefix}validate, early-stop on and keep a moving average of the weights in the "
                        "integrative phase, with this half-life in epochs (default 0: off; it trades RNA->ATAC "
                        "clustering for per-gene and per-protein agreement, README)")  # fmt: skip


def _training_options(args: argparse.Namespace) -> dict:
    """``butterfly train``'s fit() arguments: flags given explicitly, else --fast's or the paper's defaults."""
    base = FAST_SETTING if args.fast else {}
    paper = TrainingConfig()
    options = {}
    for key in FAST_SETTING:  # the options --fast sets
        given = getattr(args, key)
        options[key] = given if given is not None else base.get(key, getattr(paper, key))
    return {**options, "precision": args.precision, "weight_average_halflife": args.weight_average_halflife}


def _optimizer_options(args: argparse.Namespace) -> dict:
    return {"lr": args.lr, "discriminator_lr": args.discriminator_lr, "kl_warmup_epochs": args.kl_warmup_epochs,
            "precision": args.precision, "recalibrate_batch_norm": bool(args.recalibrate_batch_norm),
            "weight_average_halflife": args.weight_average_halflife}  # fmt: skip


def _scvi_options(args: argparse.Namespace) -> dict | None:
    if args.scvi_epochs is None:
        return None
    if args.scvi_epochs < 1:
        from ._validation import ButterflyInputError

        raise ButterflyInputError(f"--scvi-epochs must be at least 1, got {args.scvi_epochs}.")
    return {"max_epochs": args.scvi_epochs}


def _read(path: Path, name: str, kind: str, layer: str | None = None, option: str = "--layer"):
    """Modality ``name`` (preprocessing ``kind``) of an .h5ad, .h5mu or Cell Ranger .h5 file
    (:func:`butterfly.readers.read_modality`), with ``layers[layer]`` as its X when ``layer`` names one."""
    from ._validation import use_layer
    from .readers import read_modality

    return use_layer(read_modality(path, name, kind), layer, what=str(path), option=option)


def _read_pair(args: argparse.Namespace, names: tuple[str, str], paired: bool = True):
    """``--first`` and ``--second`` as modalities ``names``, each from its ``--first-layer`` /
    ``--second-layer`` if given. ``paired``: the same cells, kept to those both hold with ``--shared-cells``
    and refused when they differ without it."""
    from . import modalities
    from ._validation import align_cells, check_paired, use_layer
    from .readers import read_modalities, read_modality

    kinds = (
        ["expression"] * 2
        if getattr(args, "perturbation", False)
        else [modalities.get(n).preprocessing for n in names]
    )
    if (
        args.first.resolve() == args.second.resolve()
    ):  # both modalities of one .h5mu or Cell Ranger .h5: read once
        first, second = read_modalities(args.first, list(zip(names, kinds, strict=True)))
    else:
        first, second = (
            read_modality(args.first, names[0], kinds[0]),
            read_modality(args.second, names[1], kinds[1]),
        )
    first = use_layer(first, args.first_layer, what=str(args.first), option="--first-layer")
    second = use_layer(second, args.second_layer, what=str(args.second), option="--second-layer")
    if paired and args.shared_cells:
        n_cells = first.n_obs, second.n_obs
        first, second = align_cells(first, second)
        print(
            f"--shared-cells: {first.n_obs} cells in both files (--first: {n_cells[0]}, --second: {n_cells[1]})"
        )
    if paired:
        check_paired(first, second, names, align="the flag --shared-cells", unpaired="--unpaired")
    return first, second


def _run(args: argparse.Namespace) -> None:
    threads = _limit_threads(getattr(args, "threads", None))
    try:
        _run_command(args)
    finally:
        _restore_threads(threads)


def _run_command(args: argparse.Namespace) -> None:
    from ._validation import ButterflyInputError
    from .model import Butterfly
    from .persistence import check_save_target
    from .translation import check_names

    if args.command == "train":
        if args.perturbation and (args.unpaired or args.variant != "B"):
            raise ButterflyInputError(
                "--perturbation pairs control and stimulated cells by optimal transport; it does not combine "
                "with --unpaired or --variant T/C."
            )
        check_save_target(args.out, overwrite=args.overwrite)  # before hours of training, not after
        options = _training_options(args)
        TrainingConfig(**options)  # refuses a bad setting before the data are read
        names = ("control", "stimulated") if args.perturbation else tuple(args.modalities)
        if args.shared_cells and (args.perturbation or args.unpaired):
            raise ButterflyInputError(
                "--shared-cells keeps the cells two files share; --perturbation and --unpaired train on "
                "different cells, so they take all of each file."
            )
        first, second = _read_pair(args, names, paired=not (args.perturbation or args.unpaired))
        common = {"modalities": tuple(args.modalities), "seed": args.seed, "device": args.device}
        if args.perturbation:
            model = Butterfly.perturbation(
                first, second, label_key=args.label_key, seed=args.seed, device=args.device
            )
        elif args.unpaired:
            model = Butterfly.unpaired(first, second, label_key=args.label_key, **common)
        else:
            pairing = {"B": "measured", "T": "label", "C": "cluster"}[args.variant]
            model = Butterfly(
                first, second, pairing=pairing, label_key=args.label_key, cluster_backend=args.cluster_backend,
                cluster_options=_scvi_options(args) if args.cluster_backend == "scvi" else None,
                **common,
            )  # fmt: skip
        print(model)
        model.fit(**options)
        print(model.summary())
        model.save(args.out, overwrite=args.overwrite)
        print(f"saved the trained model to {args.out}")
    elif args.command == "translate":
        if args.out.exists() and not args.overwrite:
            raise FileExistsError(
                f"{args.out} exists; pass --overwrite to replace it, or choose another --out."
            )
        model = Butterfly.load(args.model, device=args.device)
        check_names(model, args.source, args.target)
        cells = _read(args.input, args.source, model.specs[args.source].preprocessing, args.layer)
        options = dict(
            source=args.source, target=args.target, peak_matching=args.peak_matching,
            normalized_to=args.normalized_to, n_samples=args.samples, batch_size=args.batch_size,
        )  # fmt: skip
        if args.joint:
            from ._io import write_h5ad_atomic
            from .integration import JOINT_KEY, integrate
            from .translation import atac_form

            pred = model.translate(cells, **options)
            joint = integrate(
                model, {args.source: cells, args.target: pred}, peak_matching=args.peak_matching,
                normalized_to=args.normalized_to,
            )  # fmt: skip
            if args.atac_output != "probability":  # the same decoding, in the asked form
                pred.X = atac_form(model.preprocessors[args.target], pred.X, args.atac_output)
                pred.uns["butterfly"]["output"] = args.atac_output
            pred.obsm[JOINT_KEY] = joint
            write_h5ad_atomic(pred, args.out)
        else:  # batch by batch into the file: the output never sits in memory, however many cells
            model.translate_to_h5ad(cells, args.out, atac_output=args.atac_output, **options)
        n_features = model.preprocessors[args.target].n_features
        joint = " and their joint embedding in obsm['X_butterfly_joint']" if args.joint else ""
        print(f"wrote {cells.n_obs} cells x {n_features} {args.target} features{joint} to {args.out}")
    elif args.command == "annotate":
        from . import annotation

        if args.out.exists() and not args.overwrite:
            raise FileExistsError(
                f"{args.out} exists; pass --overwrite to replace it, or choose another --out."
            )
        model = Butterfly.load(args.model, device=args.device)
        target = next((name for name in model.names if name != args.source), args.source)
        check_names(model, args.source, target)
        cells = _read(args.input, args.source, model.specs[args.source].preprocessing)
        reference = _read(args.reference, target, model.specs[target].preprocessing)
        labels = annotation.annotate(
            model, cells, args.source, reference, args.label_key, layer=args.layer,
            reference_layer=args.reference_layer, peak_matching=args.peak_matching,
        )  # fmt: skip
        write_text_atomic(args.out, labels.to_csv(index_label="cell"))
        counts = labels["label"].value_counts()
        counts = counts[counts > 0]
        shown = ", ".join(f"{label} {n}" for label, n in counts.head(8).items())
        more = ", ..." if len(counts) > 8 else ""
        print(f"annotated {len(labels)} cells into {len(counts)} types ({shown}{more}) in {args.out}")
    elif args.command == "benchmark":
        from . import protocols, report
        from ._io import check_report_folder
        from ._validation import ButterflyInputError, check_label_key

        first, second = _read_pair(args, tuple(args.modalities))
        what = f"The {args.modalities[0]} data"
        check_label_key(first, args.label_key, what=what, option="--label-key")
        if args.protocol == "cell":
            folds = protocols.folds_by_cell(first.n_obs, args.folds or 5, seed=args.seed)
        else:
            key = args.label_key if args.protocol == "cell_type" else args.batch_key
            flag = "--label-key" if args.protocol == "cell_type" else "--batch-key"
            groups = check_label_key(first, key, what=what, option=flag)
            make = protocols.folds_by_cell_type if args.protocol == "cell_type" else protocols.folds_by_batch
            folds = make(
                groups.to_numpy(), args.folds or (3 if args.protocol == "cell_type" else 4), seed=args.seed
            )
        fold_ids = list(range(len(folds)))
        if args.only_folds is not None:
            unknown = sorted(set(args.only_folds) - set(fold_ids))
            if unknown:
                raise ButterflyInputError(
                    f"--only-folds {unknown}: the protocol has folds 0 to {len(folds) - 1}."
                )
            fold_ids = sorted(set(args.only_folds))
        fit_options = {
            "pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs, "batch_size": args.batch_size,
            "patience": args.patience, **_optimizer_options(args),
        }  # fmt: skip
        TrainingConfig(**fit_options)  # refuses a bad setting before any fold runs
        if args.translate_samples < 0:
            raise ButterflyInputError(
                f"--translate-samples must be at least 0, got {args.translate_samples}."
            )
        if args.scoring_runs < 1:
            raise ButterflyInputError(f"--scoring-runs must be at least 1, got {args.scoring_runs}.")
        check_report_folder(args.out, report.BENCHMARK_FILES, overwrite=args.overwrite)
        args.out.mkdir(parents=True, exist_ok=True)
        scores, examples = protocols.run_protocol(
            first, second, [folds[i] for i in fold_ids], fold_numbers=fold_ids,
            modalities=tuple(args.modalities), models=args.models,
            label_key=args.label_key, seed=args.seed, fit_options=fit_options, match_steps=args.match_steps,
            scvi_options=_scvi_options(args), translate_samples=args.translate_samples,
            scoring_runs=args.scoring_runs, joint=args.joint,
            after_fold=lambda partial: write_text_atomic(
                args.out / "scores.partial.csv", partial.to_csv(index=False)
            ),
        )  # fmt: skip
        (args.out / "scores.partial.csv").unlink(missing_ok=True)
        title = (
            f"{args.first.stem} + {args.second.stem}: {len(folds)}-fold by {args.protocol.replace('_', ' ')}"
        )
        settings = {
            "protocol": args.protocol, "folds": len(folds), "folds_run": fold_ids, "models": args.models,
            "match_steps": args.match_steps, "seed": args.seed, "translate_samples": args.translate_samples,
            "scoring_runs": args.scoring_runs, "joint": args.joint, **fit_options,
        }  # fmt: skip
        if args.scvi_epochs is not None:
            settings["scvi_epochs"] = args.scvi_epochs
        paths = report.write_benchmark_report(
            args.out,
            scores,
            examples,
            title=title,
            colour_keys=(args.label_key, args.batch_key),
            settings=settings,
        )
        print(paths["summary"].read_text())
        print(f"report: {paths['html']}")
    elif args.command == "benchmark-merge":
        from .report import merge_benchmarks

        paths = merge_benchmarks(args.runs, args.out, title=args.title, overwrite=args.overwrite)
        print(paths["summary"].read_text())
        print(f"report: {paths['html']}")
    elif args.command == "info":
        if args.plot is not None and args.plot.exists() and not args.overwrite:
            raise FileExistsError(
                f"{args.plot} exists; pass --overwrite to replace it, or choose another --plot."
            )
        model = Butterfly.load(args.model, device="cpu")
        print(model.summary())
        if args.plot is not None:
            if model.history_ is None:
                raise ButterflyInputError(f"{args.model} holds no training history to plot (not trained).")
            from .report import plot_history

            plot_history(model.history_, args.plot)
            print(f"loss curves: {args.plot}")
    elif args.command == "demo":
        from .demo import run_demo
        from .evaluate import scores_table

        summary = run_demo(
            args.out,
            pretrain_epochs=args.pretrain_epochs,
            epochs=args.epochs,
            seed=args.seed,
            device=args.device,
            overwrite=args.overwrite,
        )
        print(scores_table(summary["scores"]))
        annotation = summary["atac_cells_annotated_from_rna"]
        print(
            f"cell types of the held-out cells from their ATAC alone: accuracy {annotation['accuracy']:.3f}, "
            f"Cohen's kappa {annotation['kappa']:.3f}"
        )
        genes = summary["genes_by_validation_r"]
        if genes["test_r_of_genes_above"] is not None:
            print(
                f"{genes['genes_above']} genes translate from ATAC with validation r above "
                f"{genes['validation_r_above']}: test-cell r {genes['test_r_of_genes_above']:.3f}, the other "
                f"genes' {genes['test_r_of_other_genes']:.3f}"
            )
        joined = ", ".join(f"{name} {scores['AMI']:.3f}" for name, scores in summary["integration"].items())
        print(f"the held-out cells' modalities joined (bf.integrate), AMI: {joined}")
        print(f"finished in {summary['total_seconds']:.0f} s; report in {args.out}/")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import warnings

    from ._validation import ButterflyInputError

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        # butterfly's own warnings speak to the user: one line, no source path
        if filename.startswith(_PACKAGE_DIR):
            print(f"butterfly {args.command}: warning: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        default_show, warnings.showwarning = warnings.showwarning, show
        # fit's note on Ctrl-C speaks of model.history_ and model.fit(); the CLI says what it left instead
        warnings.filterwarnings("ignore", message="Training was interrupted")
        try:
            _run(args)
        except (ButterflyInputError, OSError) as err:  # user mistakes: bad data, missing or unreadable files
            print(f"butterfly {args.command}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C: files are written whole or not at all; say what is there
            print(f"butterfly {args.command}: interrupted; {_interrupted(args)}", file=sys.stderr)
            return 130
    return 0


def _interrupted(args) -> str:
    """What an interrupted command left in its output."""
    if args.command == "benchmark":
        return f"the finished folds' scores are in {Path(args.out) / 'scores.partial.csv'} (if any finished)"
    if args.command in ("demo", "benchmark-merge"):
        return (
            f"the report in {args.out} is incomplete (files written whole, some perhaps from an earlier run)"
        )
    return f"nothing was written to {args.out}"


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


if __name__ == "__main__":
    sys.exit(main())
