"""The argument parser of ``butterfly``'s commands: every flag and its help text (``cli.py`` runs them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..benchmark._protocols import DEFAULT_MODELS, MODEL_NAMES
from ..train._settings import FAST_SETTING, TrainingConfig

EXAMPLES = """examples:
  butterfly demo --out butterfly_demo
  butterfly train --first rna.h5ad --second atac.h5ad --modalities rna atac --out my_model
  butterfly train --first rna.h5ad --second atac.h5ad --fast --out my_model   # minutes, not the paper's hour
  butterfly translate --model my_model --input new_atac.h5ad --source atac --target rna --out predicted_rna.h5ad
  butterfly translate --model my_model --input rna_only.h5ad --source rna --target atac --joint --out atac.h5ad
  butterfly info my_model   # what a saved model is and how it was trained
  butterfly evaluate --model my_model --first heldout_rna.h5ad --second heldout_atac.h5ad --out my_model_scores
  butterfly train --first arc/filtered_feature_bc_matrix.h5 --second arc/filtered_feature_bc_matrix.h5 --fast --out m
  butterfly train --first multiome.h5mu --second multiome.h5mu --first-layer counts --fast --out m
  butterfly train --first control.h5ad --second stimulated.h5ad --perturbation --fast --out ifnb_model
  butterfly translate --model ifnb_model --input control_b_cells.h5ad --source control --target stimulated --out pred.h5ad
  butterfly benchmark --first rna.h5ad --second atac.h5ad --protocol batch --folds 4 --out bench_batch
  butterfly benchmark-merge bench_folds01 bench_folds23 --out bench_batch   # folds run separately
"""


DEBUG_HELP = "on an error, show Python's traceback too (also: environment variable BUTTERFLY_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="butterfly",
        description="Single-cell cross-modality translation (scButterfly): train on paired cells, then predict "
        "a missing modality (RNA, ATAC or protein) for any cells.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"butterfly {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a translator on paired cells",
        description="Train a translator on two .h5ad files holding the same cells (raw counts). --first and "
        "--second may also name one MuData .h5mu file (its modalities named as --modalities, or rna/gex, "
        "atac/peaks, prot/adt) or one Cell Ranger .h5 matrix (ARC, multi: its Gene Expression, Peaks and "
        "Antibody Capture features). On several GPUs: torchrun --standalone --nproc_per_node=N -m butterfly "
        "train ... (data-parallel; --batch-size is per GPU).",
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
    train.add_argument(
        "--from-model", type=Path, default=None, metavar="MODEL",
        help="continue training this saved model (its weights and fitted preprocessing) on the paired cells of "
        "--first/--second, the same or new ones; its modalities and variant are kept (--modalities and "
        "--variant are not read)",
    )  # fmt: skip
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
    train.add_argument("--batch-key", default=None, metavar="COLUMN",
                       help="obs column of the cells' batches (samples, donors, libraries): the encoders and decoders "
                       "are conditioned on it (batch covariates); paired cells only")  # fmt: skip
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
    train.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                       help="on a GPU, run every training step eagerly instead of replaying it from a CUDA graph "
                       "(the default there, 3-6x faster; ignored on a CPU)")  # fmt: skip
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
        "--atac-output", default="probability", choices=["probability", "tfidf", "counts", "binary"],
        help="for an ATAC target: the calibrated probability that each peak is open, the model's own scaled "
        "TF-IDF output, recovered counts, or binarised peaks (default probability)",
    )  # fmt: skip
    translate.add_argument(
        "--samples", type=int, default=0, metavar="N",
        help="average the outputs decoded from N draws of each cell's latent (default 0: decode the latent "
        "mean, as the paper); N times the decoding. Coarser ATAC clusters: better or worse by training setting "
        "(docs/guide.md)",
    )  # fmt: skip
    translate.add_argument(
        "--joint", action="store_true",
        help="also store in the output's obsm['X_butterfly_joint'] one embedding of each cell's measured input "
        "and its translation, to cluster or plot as paired cells (bf.integrate); the output is then held in "
        "memory, not written batch by batch",
    )  # fmt: skip
    translate.add_argument("--reference-batch", default=None, metavar="BATCH",
                           help="a model with batch covariates: translate every cell as of this training batch "
                           "(default: each cell's own batch where the model knows it, else the training batches' "
                           "mean)")  # fmt: skip
    _add_device_options(translate)
    translate.add_argument(
        "--batch-size", type=int, default=1024, help="cells per forward pass (default 1024)"
    )
    translate.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    query = commands.add_parser(
        "map-query",
        help="adapt a model with batch covariates to new batches measured in one modality",
        description="Fine-tune a model trained with --batch-key on cells of new batches measured in SOURCE only "
        "(their encoder, decoder and new batch covariates; the translator and the other modality stay frozen) and "
        "save the adapted model; then 'butterfly translate --model OUT' translates them.",
    )  # fmt: skip
    query.add_argument("--model", required=True, type=Path, help="folder of a model trained with --batch-key")
    query.add_argument("--input", required=True, type=Path,
                       help="h5ad of the query cells, measured in --source (or an .h5mu or Cell Ranger .h5)")  # fmt: skip
    query.add_argument("--source", required=True, help="the modality the query was measured in")
    query.add_argument("--batch-key", default=None, metavar="COLUMN",
                       help="the query's obs column of batches (default: the model's batch key)")  # fmt: skip
    query.add_argument("--layer", default=None, metavar="NAME", help="read --input from its layer NAME")
    query.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs (default 20)")
    query.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    query.add_argument("--out", required=True, type=Path, help="folder to save the adapted model in")
    _add_device_options(query)
    query.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

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

    evaluate = commands.add_parser(
        "evaluate",
        help="score a trained model on held-out paired cells: scores overall and per cell type, t-SNE figures",
        description="Translate held-out cells measured in both of a model's modalities each way and score the "
        "translations the paper's way (clustering against cell types; per-gene Pearson, Spearman and RMSE for "
        "RNA and protein, AUROC and AUPRC for ATAC), beside the clustering of the measured profiles. Writes "
        "scores.json, scores.md, one t-SNE figure per modality (measured beside translated) and, per cell type, "
        "the mean per-cell score each way (scores_by_label.csv and .png: which types translate well) into --out.",
    )
    evaluate.add_argument("--model", required=True, type=Path, help="folder of a trained model")
    evaluate.add_argument(
        "--first", required=True, type=Path,
        help="h5ad of the held-out cells in the model's first modality (or an .h5mu or Cell Ranger .h5)",
    )  # fmt: skip
    evaluate.add_argument(
        "--second", required=True, type=Path, help="h5ad of the same cells in the model's second modality"
    )
    _add_layer_options(evaluate)
    evaluate.add_argument(
        "--label-key", default="cell_type", help="--first's obs column of cell types (default cell_type)"
    )
    evaluate.add_argument("--scoring-runs", type=int, default=1, metavar="N",
                          help="each clustering score is the mean of N Leiden runs (default 1)")  # fmt: skip
    evaluate.add_argument("--samples", type=int, default=0, metavar="N",
                          help="translate with N latent draws per cell, as translate --samples (default 0)")  # fmt: skip
    evaluate.add_argument("--joint", action="store_true",
                          help="also score each measured modality joined with its translation (bf.integrate)")  # fmt: skip
    evaluate.add_argument("--latent", action="store_true",
                          help="also cluster the latent each translation starts from")  # fmt: skip
    evaluate.add_argument(
        "--no-plots", action="store_true", help="skip the t-SNE figures (minutes on many cells)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the PCA and Leiden runs (default 0)")
    evaluate.add_argument("--out", required=True, type=Path, help="folder to write the report into")
    _add_device_options(evaluate)
    evaluate.add_argument("--overwrite", action="store_true", help=_REPORT_OVERWRITE_HELP)

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
        default=list(DEFAULT_MODELS),
        metavar="MODEL",
        choices=list(MODEL_NAMES),
        help="models to compare: butterfly (scButterfly-B), butterfly-T (pairs augmented within cell types), "
        "butterfly-C (within clusters; -C-scvi: clusters of MultiVI/totalVI, needs the scvi extra), and the "
        "baselines mean (every cell the training mean), knn, linear, kernel-ridge (RBF kernel ridge on SVD "
        f"components) (default: {' '.join(DEFAULT_MODELS)})",
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
    for sub in commands.choices.values():  # --debug after the command too (default kept from before it)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _add_device_options(parser: argparse.ArgumentParser, device: bool = True) -> None:
    if device:
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="CPU threads to compute with (default: torch's, one per core or OMP_NUM_THREADS); on a shared "
        "machine or a cluster node, the cores you were given",
    )  # fmt: skip


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
                        "clustering for per-gene and per-protein agreement, docs/guide.md)")  # fmt: skip
