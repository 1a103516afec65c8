"""Command line: ``butterfly train | translate | annotate | evaluate | benchmark | benchmark-merge | info | demo``.

Thin: one function per command reads the files, calls the API and says what it wrote; the flags are in
``_cli_parser.py``."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from ..io._atomic import write_text_atomic
from ..train._settings import FAST_SETTING, TrainingConfig
from ._parser import build_parser


def _limit_threads(threads: int | None) -> tuple[int, int | None] | None:
    """``--threads``: torch's threads, and numba's (scanpy's neighbour graph) where numba is installed.
    Returns the counts before, for :func:`_restore_threads` (``main`` may run inside a Python session)."""
    if threads is None:
        return None
    from .._validation import ButterflyInputError

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


def _training_options(args: argparse.Namespace) -> dict:
    """``butterfly train``'s fit() arguments: flags given explicitly, else --fast's or the paper's defaults."""
    base = FAST_SETTING if args.fast else {}
    paper = TrainingConfig()
    options = {}
    for key in FAST_SETTING:  # the options --fast sets
        given = getattr(args, key)
        options[key] = given if given is not None else base.get(key, getattr(paper, key))
    return {**options, "precision": args.precision, "weight_average_halflife": args.weight_average_halflife,
            "cuda_graphs": args.cuda_graphs}  # fmt: skip


def _optimizer_options(args: argparse.Namespace) -> dict:
    return {"lr": args.lr, "discriminator_lr": args.discriminator_lr, "kl_warmup_epochs": args.kl_warmup_epochs,
            "precision": args.precision, "recalibrate_batch_norm": bool(args.recalibrate_batch_norm),
            "weight_average_halflife": args.weight_average_halflife}  # fmt: skip


def _scvi_options(args: argparse.Namespace) -> dict | None:
    if args.scvi_epochs is None:
        return None
    if args.scvi_epochs < 1:
        from .._validation import ButterflyInputError

        raise ButterflyInputError(f"--scvi-epochs must be at least 1, got {args.scvi_epochs}.")
    return {"max_epochs": args.scvi_epochs}


def _read(path: Path, name: str, kind: str, layer: str | None = None, option: str = "--layer"):
    """Modality ``name`` (preprocessing ``kind``) of an .h5ad, .h5mu or Cell Ranger .h5 file
    (:func:`butterfly.io.read_modality`), with ``layers[layer]`` as its X when ``layer`` names one."""
    from .._validation import use_layer
    from ..io._readers import read_modality

    return use_layer(read_modality(path, name, kind), layer, what=str(path), option=option)


def _read_pair(args: argparse.Namespace, names: tuple[str, str], paired: bool = True, kinds=None):
    """``--first`` and ``--second`` as modalities ``names`` (of preprocessing ``kinds``, by default those the
    names' presets have), each from its ``--first-layer`` / ``--second-layer`` if given. ``paired``: the same
    cells, kept to those both hold with ``--shared-cells`` and refused when they differ without it."""
    from .._validation import align_cells, check_paired, use_layer
    from ..io._readers import read_modalities, read_modality
    from ..pp import _modalities as modalities

    if kinds is None:
        kinds = (
            ["expression"] * 2
            if getattr(args, "perturbation", False)
            else [modalities.get_modality(n).preprocessing for n in names]
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
    COMMANDS[args.command](args)


def _refuse_existing(path: Path, overwrite: bool, option: str = "--out") -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it, or choose another {option}.")


def _load_model(args: argparse.Namespace, target: str | None = None):
    """The model of ``--model`` on ``--device``, refused before any cells are read when it has no modality
    ``--source`` (or ``target``)."""
    from ..model._butterfly import Butterfly
    from ..model._inference import check_names

    model = Butterfly.load(args.model, device=args.device)
    check_names(model, args.source, target)
    return model


def _train(args: argparse.Namespace) -> None:
    from .._validation import ButterflyInputError
    from ..model._butterfly import Butterfly
    from ..model._persistence import check_save_target
    from ..train._distributed import is_main, leave

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
    kinds = None
    if args.from_model is not None:  # the model's own modalities, whatever --modalities says
        from ..model._persistence import read_model_config, saved_modalities

        if args.perturbation or args.unpaired:
            raise ButterflyInputError(
                "--from-model continues a model trained on paired cells; it does not combine with "
                "--perturbation or --unpaired."
            )
        saved = saved_modalities(read_model_config(args.from_model))
        names, kinds = tuple(m["name"] for m in saved), [m["preprocessing"] for m in saved]
    first, second = _read_pair(args, names, paired=not (args.perturbation or args.unpaired), kinds=kinds)
    common = {"modalities": tuple(args.modalities), "seed": args.seed, "device": args.device}
    if args.from_model is not None:
        model = Butterfly.load(args.from_model, device=args.device, first=first, second=second)
    elif args.perturbation:
        model = Butterfly.perturbation(
            first, second, label_key=args.label_key, seed=args.seed, device=args.device
        )
    elif args.unpaired:
        model = Butterfly.unpaired(first, second, label_key=args.label_key, **common)
    else:
        pairing = {"B": "measured", "T": "label", "C": "cluster"}[args.variant]
        model = Butterfly(
            first, second, pairing=pairing, label_key=args.label_key, batch_key=args.batch_key,
            cluster_backend=args.cluster_backend,
            cluster_options=_scvi_options(args) if args.cluster_backend == "scvi" else None,
            **common,
        )  # fmt: skip
    main_process = is_main()  # of several started by torchrun, only process 0 prints and saves
    if main_process:
        print(model)
    model.fit(**options)
    if main_process:
        print(model.summary())
        model.save(args.out, overwrite=args.overwrite)
        print(f"saved the trained model to {args.out}")
    leave()


def _translate(args: argparse.Namespace) -> None:
    _refuse_existing(args.out, args.overwrite)
    model = _load_model(args, args.target)
    cells = _read(args.input, args.source, model.specs[args.source].preprocessing, args.layer)
    options = dict(
        source=args.source, target=args.target, peak_matching=args.peak_matching,
        normalized_to=args.normalized_to, n_samples=args.samples, batch_size=args.batch_size,
        reference_batch=args.reference_batch,
    )  # fmt: skip
    if args.joint:
        from ..io._atomic import write_h5ad_atomic
        from ..model._inference import atac_form
        from ..tl._integrate import JOINT_KEY, integrate

        pred = model.translate(cells, **options, atac_output="tfidf")  # the model's space
        joint = integrate(
            model, {args.source: cells, args.target: pred}, peak_matching=args.peak_matching,
            normalized_to=args.normalized_to,
        )  # fmt: skip
        calibration = (model.atac_calibration_ or {}).get(args.target)  # the same decoding, in the asked form
        pred.X = atac_form(
            model.preprocessors[args.target], pred.X, args.atac_output, calibration=calibration
        )
        pred.uns["butterfly"]["output"] = args.atac_output
        pred.obsm[JOINT_KEY] = joint
        write_h5ad_atomic(pred, args.out)
    else:  # batch by batch into the file: the output never sits in memory, however many cells
        model.translate_to_h5ad(cells, args.out, atac_output=args.atac_output, **options)
    n_features = model.preprocessors[args.target].n_features
    joint = " and their joint embedding in obsm['X_butterfly_joint']" if args.joint else ""
    print(f"wrote {cells.n_obs} cells x {n_features} {args.target} features{joint} to {args.out}")


def _map_query(args: argparse.Namespace) -> None:
    from ..model._persistence import check_save_target

    check_save_target(args.out, overwrite=args.overwrite)
    model = _load_model(args)
    cells = _read(args.input, args.source, model.specs[args.source].preprocessing, args.layer)
    adapted = model.map_query(
        cells, args.source, batch_key=args.batch_key, epochs=args.epochs, seed=args.seed
    )
    adapted.save(args.out, overwrite=args.overwrite)
    query = adapted.query_
    print(f"adapted the model to {query['cells']} {args.source} cells of {len(query['new_batches'])} new "
          f"batches ({', '.join(query['new_batches'][:5])}); saved it to {args.out}")  # fmt: skip


def _annotate(args: argparse.Namespace) -> None:
    from ..tl import _annotate as annotation

    _refuse_existing(args.out, args.overwrite)
    model = _load_model(args)
    target = next(name for name in model.names if name != args.source)
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


def _evaluate(args: argparse.Namespace) -> None:
    from ..benchmark._evaluate import evaluation_report, scores_table
    from ..model._butterfly import Butterfly

    if args.samples < 0 or args.scoring_runs < 1:
        from .._validation import ButterflyInputError

        raise ButterflyInputError(
            f"--samples must be at least 0 and --scoring-runs at least 1; got {args.samples} and {args.scoring_runs}."
        )
    model = Butterfly.load(args.model, device=args.device)
    kinds = [model.specs[name].preprocessing for name in model.names]
    first, second = _read_pair(args, model.names, kinds=kinds)
    summary = evaluation_report(
        model, first, second, args.out, label_key=args.label_key, seed=args.seed,
        scoring_runs=args.scoring_runs, n_samples=args.samples, joint=args.joint, latent=args.latent,
        plots=not args.no_plots, overwrite=args.overwrite,
        about={"model": str(args.model), "first": str(args.first), "second": str(args.second)},
    )  # fmt: skip
    print(scores_table(summary["scores"]))
    print(f"scored {summary['cells']} held-out cells; report in {args.out}/")


def _benchmark_folds(args: argparse.Namespace, first) -> tuple[list, list[int]]:
    """The protocol's folds of the cells of ``first``, and the numbers of those ``--only-folds`` runs."""
    from .._validation import ButterflyInputError, check_label_key
    from ..benchmark import _protocols as protocols

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
    return folds, fold_ids


def _benchmark(args: argparse.Namespace) -> None:
    from .._validation import ButterflyInputError
    from ..benchmark import _protocols as protocols
    from ..benchmark import _report as benchmark_report
    from ..io._atomic import check_report_folder

    fit_options = {
        "pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs, "batch_size": args.batch_size,
        "patience": args.patience, **_optimizer_options(args),
    }  # fmt: skip
    TrainingConfig(**fit_options)  # refuses a bad setting before the data are read
    if args.translate_samples < 0:
        raise ButterflyInputError(f"--translate-samples must be at least 0, got {args.translate_samples}.")
    if args.scoring_runs < 1:
        raise ButterflyInputError(f"--scoring-runs must be at least 1, got {args.scoring_runs}.")
    first, second = _read_pair(args, tuple(args.modalities))
    folds, fold_ids = _benchmark_folds(args, first)
    check_report_folder(args.out, benchmark_report.BENCHMARK_FILES, overwrite=args.overwrite)
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
    title = f"{args.first.stem} + {args.second.stem}: {len(folds)}-fold by {args.protocol.replace('_', ' ')}"
    settings = {
        "protocol": args.protocol, "folds": len(folds), "folds_run": fold_ids, "models": args.models,
        "match_steps": args.match_steps, "seed": args.seed, "translate_samples": args.translate_samples,
        "scoring_runs": args.scoring_runs, "joint": args.joint, **fit_options,
    }  # fmt: skip
    if args.scvi_epochs is not None:
        settings["scvi_epochs"] = args.scvi_epochs
    paths = benchmark_report.write_benchmark_report(
        args.out,
        scores,
        examples,
        title=title,
        colour_keys=(args.label_key, args.batch_key),
        settings=settings,
    )
    print(paths["summary"].read_text())
    print(f"report: {paths['html']}")


def _benchmark_merge(args: argparse.Namespace) -> None:
    from ..benchmark._report import merge_benchmarks

    paths = merge_benchmarks(args.runs, args.out, title=args.title, overwrite=args.overwrite)
    print(paths["summary"].read_text())
    print(f"report: {paths['html']}")


def _info(args: argparse.Namespace) -> None:
    from .._validation import ButterflyInputError
    from ..model._butterfly import Butterfly

    if args.plot is not None:
        _refuse_existing(args.plot, args.overwrite, "--plot")
    model = Butterfly.load(args.model, device="cpu")
    print(model.summary())
    if args.plot is not None:
        if model.history_ is None:
            raise ButterflyInputError(f"{args.model} holds no training history to plot (not trained).")
        from ..pl._figures import plot_history

        plot_history(model.history_, args.plot)
        print(f"loss curves: {args.plot}")


def _demo(args: argparse.Namespace) -> None:
    from ..benchmark._demo import run_demo
    from ..benchmark._evaluate import scores_table

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


COMMANDS = {
    "train": _train,
    "translate": _translate,
    "map-query": _map_query,
    "annotate": _annotate,
    "evaluate": _evaluate,
    "benchmark": _benchmark,
    "benchmark-merge": _benchmark_merge,
    "info": _info,
    "demo": _demo,
}


def main(argv: list[str] | None = None) -> int:
    # a command-line tool draws into files: no window, whatever display there is (the library itself never
    # chooses a backend; a user's MPLBACKEND is kept)
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = build_parser().parse_args(argv)
    import warnings

    from .._validation import ButterflyInputError

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
        except KeyboardInterrupt:  # Ctrl-C: files are written whole or not at all; say what is there
            print(f"butterfly {args.command}: interrupted; {_interrupted(args)}", file=sys.stderr)
            return 130
        except Exception as err:  # never a traceback unless asked for: one paragraph, a non-zero exit
            if _debugging(args):
                raise
            print(
                f"butterfly {args.command}: error: {_error_message(err, ButterflyInputError)}",
                file=sys.stderr,
            )
            return 2 if isinstance(err, (ButterflyInputError, OSError)) else 1
    return 0


def _debugging(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("BUTTERFLY_DEBUG", "") not in ("", "0")


def _error_message(err: Exception, user_error: type) -> str:
    """One paragraph for an error: a user's mistake (bad data, a missing or unreadable file) as butterfly
    worded it; anything else with its type, and how to see more."""
    text = as_flags(" ".join(str(err).split())) or type(err).__name__
    if isinstance(err, (user_error, OSError)):
        return text
    return (
        f"{type(err).__name__}: {text} (not a problem butterfly recognises in the input; rerun with --debug, or "
        "BUTTERFLY_DEBUG=1, to see where it happened, and report it if it looks like a bug)."
    )


#: Python arguments whose command-line options are not simply ``--name-with-dashes``.
_FLAG_OF = {
    "layer": "--first-layer / --second-layer / --layer",
    "k": "--folds",
    "adata": "--input",
}
_CALL = re.compile(r"\b(?:[A-Za-z_][\w.]*)\(((?:[^()]|\([^()]*\))*)\)")
_ARGUMENT = re.compile(
    r"\b([a-z][a-z0-9_]*)=(\('[^)]*\)|'[^']*'|\"[^\"]*\"|[^\s,;:()]+[^\s,;:()'.]|[^\s,;:()'.])?"
)


def as_flags(text: str) -> str:
    """A library message, its Python arguments (``overwrite=True``, ``lr=0.0002``, ``fit(lr=0.0002)``,
    ``label_key=``) spoken as this command line's options (``--overwrite``, ``--lr 0.0002``, ``--label-key``).
    The library speaks Python; each interface translates for itself."""
    flags = _flags()

    def flag(name: str) -> str | None:
        if name in _FLAG_OF:
            return _FLAG_OF[name]
        option = "--" + name.replace("_", "-")
        return option if option in flags else None

    def argument(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        negated = "--no-" + name.replace("_", "-")
        if value == "False" and negated in flags:
            return negated
        option = flag(name)
        if option is None or value == "False":
            return match.group(0)
        if value is None or value == "True":
            return option
        if value.startswith("("):  # a tuple of strings: the values, space-separated
            value = " ".join(v.strip(" '\"") for v in value.strip("()").split(","))
        return f"{option} {value.strip(chr(39) + chr(34))}"

    def call(match: re.Match) -> str:
        # a call with keyword arguments the command line has: those options alone
        translated = [argument(m) for m in _ARGUMENT.finditer(match.group(1))]
        kept = [t for t in translated if t.startswith("--")]
        return " ".join(kept) if kept else match.group(0)

    return _ARGUMENT.sub(argument, _CALL.sub(call, text))


def _flags() -> set[str]:
    """Every option of every command."""
    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            found.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    return found


def _interrupted(args) -> str:
    """What an interrupted command left in its output."""
    if args.command == "benchmark":
        return f"the finished folds' scores are in {Path(args.out) / 'scores.partial.csv'} (if any finished)"
    if args.command in ("demo", "benchmark-merge", "evaluate"):
        return (
            f"the report in {args.out} is incomplete (files written whole, some perhaps from an earlier run)"
        )
    if args.command == "info":
        return "nothing was written" + (f" to {args.plot}" if args.plot is not None else "")
    return f"nothing was written to {args.out}"


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


if __name__ == "__main__":
    sys.exit(main())
