import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import butterfly as bf
from butterfly.cli._main import main
from butterfly.io._atomic import check_report_folder


@pytest.fixture
def files(multiome, tmp_path):
    rna, atac = multiome
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    return tmp_path


def test_train_then_translate(files, capsys):
    model_dir, out = files / "model", files / "pred.h5ad"
    code = main(["train", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(model_dir), "--pretrain-epochs", "2", "--epochs", "2", "--lr", "2e-3",
                 "--discriminator-lr", "1e-2", "--kl-warmup-epochs", "1"])  # fmt: skip
    assert code == 0 and (model_dir / "config.json").is_file()
    training = json.loads((model_dir / "config.json").read_text())["training"]
    assert (training["lr"], training["discriminator_lr"], training["kl_warmup_epochs"]) == (2e-3, 1e-2, 1)
    trained = capsys.readouterr().out
    assert "of 600 features translate with validation r above 0.3" in trained
    assert "integrative: 2 of 2 epochs, kept epoch" in trained  # the model's summary
    assert main(["info", str(model_dir)]) == 0
    info = capsys.readouterr().out
    assert info.startswith("butterfly model, trained") and "saved with: butterfly" in info
    assert "trained on: 500 rna, 500 atac cells; 400 training pairs, 100 validation pairs" in info
    assert main(["info", str(files)]) == 2
    assert "is not a saved butterfly model (no config.json)" in capsys.readouterr().err
    plot = files / "loss.png"
    assert main(["info", str(model_dir), "--plot", str(plot)]) == 0 and plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["info", str(model_dir), "--plot", str(plot)]) == 2  # the user's file is kept
    assert f"{plot} exists; pass --overwrite" in capsys.readouterr().err
    assert main(["info", str(model_dir), "--plot", str(plot), "--overwrite"]) == 0
    code = main(["translate", "--model", str(model_dir), "--input", str(files / "atac.h5ad"), "--source", "atac",
                 "--target", "rna", "--out", str(out)])  # fmt: skip
    assert code == 0
    pred = ad.read_h5ad(out)
    assert pred.n_obs == 500 and pred.n_vars == 600
    assert "wrote 500 cells x 600 rna features" in capsys.readouterr().out
    code = main(["translate", "--model", str(model_dir), "--input", str(files / "atac.h5ad"), "--source", "atac",
                 "--target", "rna", "--out", str(files / "overlap.h5ad"), "--peak-matching", "overlap"])  # fmt: skip
    assert code == 0  # the same peaks match by overlap as by coordinates
    np.testing.assert_array_equal(ad.read_h5ad(files / "overlap.h5ad").X, pred.X)
    again = ["translate", "--model", str(model_dir), "--input", str(files / "rna.h5ad"), "--source", "rna",
             "--target", "atac", "--out", str(out), "--atac-output", "binary", "--batch-size", "64"]  # fmt: skip
    assert main(again) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert ad.read_h5ad(out).n_vars == 600  # the earlier result is untouched
    assert main([*again, "--overwrite"]) == 0
    binary = ad.read_h5ad(out).X
    assert set(np.unique(binary)) == {0.0, 1.0} and 0 < binary.mean() < 0.5
    sampled = [*again[:-4], "--samples", "4", "--batch-size", "64", "--overwrite"]
    assert main(sampled) == 0
    expected = bf.Butterfly.load(model_dir).translate(
        ad.read_h5ad(files / "rna.h5ad"), source="rna", target="atac", n_samples=4, batch_size=64
    )
    np.testing.assert_array_equal(ad.read_h5ad(out).X, expected.X)
    # butterfly's warnings print as one line each, without a source path
    ad.read_h5ad(files / "rna.h5ad")[:, 100:].copy().write_h5ad(files / "partial.h5ad")
    partial = [*again[:4], str(files / "partial.h5ad"), *again[5:], "--overwrite"]
    assert main(partial) == 0
    err = capsys.readouterr().err
    assert "butterfly translate: warning: 100 of the 600 rna features" in err and ".py:" not in err


def test_counts_read_from_layers(files, capsys):
    """--first-layer / --second-layer / translate --layer read counts kept beside normalised values in X."""
    rna = ad.read_h5ad(files / "rna.h5ad")
    rna.layers["counts"], rna.X = rna.X, rna.X * 0.5
    rna.write_h5ad(files / "rna_layered.h5ad")
    train = ["train", "--first", str(files / "rna_layered.h5ad"), "--second", str(files / "atac.h5ad"),
             "--pretrain-epochs", "1", "--epochs", "1", "--seed", "4"]  # fmt: skip
    assert main([*train, "--out", str(files / "m0")]) == 2
    assert "non-integer" in capsys.readouterr().err
    assert main([*train, "--out", str(files / "m0"), "--second-layer", "counts"]) == 2
    assert (
        "atac.h5ad has no layers, so no layer 'counts': leave --second-layer unset" in capsys.readouterr().err
    )
    assert main([*train, "--out", str(files / "m1"), "--first-layer", "counts"]) == 0
    translate = ["translate", "--model", str(files / "m1"), "--input", str(files / "rna_layered.h5ad"),
                 "--source", "rna", "--target", "atac"]  # fmt: skip
    assert main([*translate, "--out", str(files / "p1.h5ad"), "--layer", "counts"]) == 0
    plain = bf.Butterfly.load(files / "m1").translate(rna, source="rna", target="atac", layer="counts")
    np.testing.assert_array_equal(ad.read_h5ad(files / "p1.h5ad").X, plain.X)
    assert main([*translate, "--out", str(files / "p2.h5ad"), "--layer", "count"]) == 2
    assert (
        "has no layer 'count'; its layers are 'counts'. Pass --layer one of them" in capsys.readouterr().err
    )


def test_shared_cells_keeps_the_cells_both_files_hold(files, capsys):
    atac = ad.read_h5ad(files / "atac.h5ad")
    atac[50:].copy().write_h5ad(files / "atac_450.h5ad")
    train = ["train", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac_450.h5ad"),
             "--pretrain-epochs", "1", "--epochs", "1", "--out", str(files / "m")]  # fmt: skip
    assert main(train) == 2
    assert "Keep the 450 shared cells with the flag --shared-cells" in capsys.readouterr().err
    assert main([*train, "--shared-cells", "--unpaired"]) == 2
    assert "--perturbation and --unpaired train on different cells" in capsys.readouterr().err
    assert main([*train, "--shared-cells"]) == 0
    assert "--shared-cells: 450 cells in both files (--first: 500, --second: 450)" in capsys.readouterr().out
    assert bf.Butterfly.load(files / "m").history_["phase"].nunique() == 3


def test_threads_apply_to_the_command_and_are_restored(files, capsys, monkeypatch):
    """--threads sets torch's thread count while the command runs (a cluster job's allocation), gives it
    back afterwards (main may run inside a Python session), and refuses a count below 1."""
    import torch

    from butterfly.cli import _main as cli

    before = torch.get_num_threads()
    seen = []
    run = cli._run_command
    monkeypatch.setattr(cli, "_run_command", lambda args: (seen.append(torch.get_num_threads()), run(args)))
    args = ["train", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
            "--out", str(files / "model"), "--pretrain-epochs", "1", "--epochs", "1", "--threads"]  # fmt: skip
    wanted = 1 if before != 1 else 2
    assert main([*args, str(wanted)]) == 0
    assert seen == [wanted] and torch.get_num_threads() == before
    assert main([*args, "0", "--overwrite"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
    assert torch.get_num_threads() == before


def test_fast_setting_and_explicit_flags(files, capsys):
    """--fast trains with FAST_SETTING; flags given explicitly override it; without --fast, the paper's defaults."""
    from butterfly import FAST_SETTING

    model_dir = files / "model"
    code = main(["train", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(model_dir), "--fast", "--pretrain-epochs", "2", "--epochs", "3"])  # fmt: skip
    assert code == 0
    config = json.loads((model_dir / "config.json").read_text())
    training = config["training"]
    assert {k: training[k] for k in FAST_SETTING} == {**FAST_SETTING, "pretrain_epochs": 2, "epochs": 3}
    assert set(config["batch_norm_recalibration"]) == {
        "validation_loss_before",
        "validation_loss_after",
        "kept",
    }
    printed = capsys.readouterr().out
    assert "BatchNorm statistics re-estimated: validation loss" in printed
    assert "\nsetting: FAST_SETTING with pretrain_epochs=2, epochs=3\n" in printed  # the model's summary
    code = main(["train", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(model_dir), "--overwrite", "--pretrain-epochs", "1", "--epochs", "1"])  # fmt: skip
    assert code == 0
    config = json.loads((model_dir / "config.json").read_text())
    paper = {
        "batch_size": 64,
        "lr": 1e-3,
        "patience": 50,
        "kl_warmup_epochs": 0,
        "recalibrate_batch_norm": False,
    }
    assert {k: config["training"][k] for k in paper} == paper and config["batch_norm_recalibration"] is None
    code = main(["train", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(model_dir), "--overwrite", "--fast", "--no-recalibrate-batch-norm",
                 "--weight-average-halflife", "2.5", "--pretrain-epochs", "1", "--epochs", "1",
                 "--no-cuda-graphs"])  # fmt: skip
    assert code == 0
    config = json.loads((model_dir / "config.json").read_text())
    assert (
        config["training"]["recalibrate_batch_norm"] is False and config["batch_norm_recalibration"] is None
    )
    assert config["training"]["weight_average_halflife"] == 2.5 and training["weight_average_halflife"] == 0
    assert config["training"]["cuda_graphs"] is False and training["cuda_graphs"] is True
    printed = capsys.readouterr().out
    assert "BatchNorm" not in printed
    assert (
        "\nsetting: FAST_SETTING with pretrain_epochs=1, epochs=1, recalibrate_batch_norm=False, " in printed
    )


def test_user_mistakes_give_one_line_errors(files, capsys):
    code = main(["translate", "--model", str(files / "missing"), "--input", str(files / "atac.h5ad"),
                 "--source", "atac", "--target", "rna", "--out", str(files / "x.h5ad")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "error: " in err and "Traceback" not in err and "not a saved butterfly model" in err
    atac = ad.read_h5ad(files / "atac.h5ad")
    atac[::-1].copy().write_h5ad(files / "reversed.h5ad")
    code = main(["train", "--first", str(files / "rna.h5ad"), "--second", str(files / "reversed.h5ad"),
                 "--out", str(files / "m2")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "different order" in err and "Traceback" not in err
    code = main(["train", "--first", str(files / "nope.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(files / "m3")])  # fmt: skip
    assert code == 2 and "no such file" in capsys.readouterr().err
    # a bad setting is refused before the data are read (the first file does not exist)
    code = main(["train", "--first", str(files / "nope.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(files / "m4"), "--batch-size", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--batch-size must be a whole number of at least 2, got 0" in err
    code = main(["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(files / "b"), "--lr", "-1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--lr must be a positive number, got -1.0" in err and not (files / "b").exists()
    code = main(["train", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(files / "m5"), "--modalities", "rna", "chromatin"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Unknown modality 'chromatin'" in err and "Traceback" not in err
    (files / "odd").mkdir()
    (files / "odd" / "config.json").write_text("{not json")
    code = main(["translate", "--model", str(files / "odd"), "--input", str(files / "atac.h5ad"),
                 "--source", "atac", "--target", "rna", "--out", str(files / "y.h5ad")])  # fmt: skip
    assert code == 2 and "is not a butterfly model" in capsys.readouterr().err
    from butterfly import Butterfly

    rna, atac = ad.read_h5ad(files / "rna.h5ad"), ad.read_h5ad(files / "atac.h5ad")
    Butterfly(rna, atac).save(files / "untrained")
    code = main(["translate", "--model", str(files / "untrained"), "--input", str(files / "atac.h5ad"),
                 "--source", "atac", "--target", "rna", "--out", str(files / "z.h5ad")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "not trained yet" in err and "Traceback" not in err
    (files / "garbage.h5ad").write_text("not an h5ad file")
    code = main(["train", "--first", str(files / "garbage.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(files / "m6")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "garbage.h5ad could not be read as an .h5ad file" in err and "write_h5ad" in err
    code = main(["train", "--first", str(files / "atac.h5ad"), "--second", str(files / "rna.h5ad"),
                 "--out", str(files / "m7")])  # fmt: skip
    err = capsys.readouterr().err
    assert (
        code == 2
        and "look like chromatin peaks" in err
        and "in the order of --modalities, e.g. --modalities rna atac" in err
    )
    code = main(["train", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--out", str(files), "--overwrite"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "is not a saved butterfly model, so it is not replaced" in err
    assert (files / "rna.h5ad").is_file()


def test_help_explains_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("train", "translate", "annotate", "evaluate", "benchmark", "info", "demo", "examples"):
        assert word in text
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"butterfly {bf.__version__}"


def test_benchmark_command_end_to_end(files, capsys):
    out = files / "bench"
    code = main(["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--protocol", "batch", "--folds", "2", "--models", "butterfly", "butterfly-T", "knn",
                 "--match-steps", "--pretrain-epochs", "2", "--epochs", "2", "--out", str(out)])  # fmt: skip
    assert code == 0
    for name in ("summary.md", "summary.json", "scores.csv", "metrics_boxplot.png", "report.html",
                 "tsne_rna_to_atac.png", "tsne_atac_to_rna.png"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "### rna->atac" in summary and "| knn |" in summary and "AUROC" in summary
    assert "| butterfly-T |" in summary and "### training" in summary  # training seconds per model
    assert not (out / "scores.partial.csv").exists()  # the per-fold checkpoint is removed at the end
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.split("<body>")[1]  # self-contained
    import pandas as pd

    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["fold"]) == {0, 1}
    assert set(scores["model"]) == {"butterfly", "butterfly-T", "knn", "measured"}


def test_benchmark_refuses_missing_label_column(files, capsys):
    code = main(["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
                 "--label-key", "celltype", "--out", str(files / "b")])  # fmt: skip
    assert code == 2 and "no column 'celltype'" in capsys.readouterr().err
    common = ["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
              "--models", "knn", "--out", str(files / "b")]  # fmt: skip
    assert main([*common, "--protocol", "batch", "--batch-key", "donor"]) == 2
    assert "no column 'donor' in .obs. Available columns: " in (err := capsys.readouterr().err)
    assert "Pass --batch-key one of them" in err
    assert main([*common, "--protocol", "cell_type", "--folds", "100"]) == 2
    assert "--folds (the number of folds) must be between 2 and the number of" in capsys.readouterr().err


def test_benchmark_only_folds_keeps_protocol_fold_numbers(files, capsys):
    import pandas as pd

    out = files / "bench_part"
    args = ["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
            "--folds", "3", "--models", "knn", "--out", str(out)]  # fmt: skip
    assert main([*args, "--only-folds", "2"]) == 0
    assert set(pd.read_csv(out / "scores.csv")["fold"]) == {2}
    assert main([*args, "--only-folds", "3"]) == 2
    assert "--only-folds [3]: the protocol has folds 0 to 2" in capsys.readouterr().err


def test_benchmark_merge_joins_separately_run_folds(files, capsys):
    import json

    import pandas as pd

    common = ["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
              "--folds", "3", "--models", "knn"]  # fmt: skip
    whole, part0, part12 = files / "whole", files / "part0", files / "part12"
    assert main([*common, "--out", str(whole)]) == 0
    assert main([*common, "--only-folds", "0", "--out", str(part0)]) == 0
    assert main([*common, "--only-folds", "1", "2", "--out", str(part12)]) == 0
    # a run of an earlier release did not record recalibrate_batch_norm, weight_average_halflife or
    # translate_samples (it had none of them): it still merges
    record = json.loads((part12 / "summary.json").read_text())
    assert record["settings"].pop("recalibrate_batch_norm") is False
    assert record["settings"].pop("weight_average_halflife") == 0
    assert record["settings"].pop("translate_samples") == 0
    assert record["settings"].pop("scoring_runs") == 1
    assert record["settings"].pop("joint") is False
    (part12 / "summary.json").write_text(json.dumps(record))
    merged = files / "merged"
    assert main(["benchmark-merge", str(part0), str(part12), "--out", str(merged)]) == 0
    key = ["fold", "model", "profile", "metric"]
    got = pd.read_csv(merged / "scores.csv").sort_values(key).reset_index(drop=True)
    want = pd.read_csv(whole / "scores.csv").sort_values(key).reset_index(drop=True)
    training = want["profile"] == "training"  # seconds differ from run to run; every score is the same
    pd.testing.assert_frame_equal(got[~training], want[~training])

    def table(folder):
        summary = pd.DataFrame(json.loads((folder / "summary.json").read_text())["summary"])
        return summary[summary["profile"] != "training"].reset_index(drop=True)

    pd.testing.assert_frame_equal(table(merged), table(whole))
    assert json.loads((merged / "summary.json").read_text())["settings"]["folds_run"] == [0, 1, 2]
    names = {p.name for p in merged.iterdir()}
    # figures of the same models are copied from the first run only
    assert "tsne_rna_to_atac_run0.png" in names
    assert "tsne_rna_to_atac_run1.png" not in names
    # the same fold of a model twice, and runs of another protocol, are refused with one-line errors
    capsys.readouterr()
    assert main(["benchmark-merge", str(part0), str(whole), "--out", str(files / "m2")]) == 2
    assert "'knn' has scores for fold 0 in more than one run" in capsys.readouterr().err
    other = files / "other"
    assert main([*common[:-4], "--folds", "2", "--models", "knn", "--out", str(other)]) == 0
    assert main(["benchmark-merge", str(part0), str(other), "--out", str(files / "m3")]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "folds: 3 vs 2" in err and "Traceback" not in err
    assert main(["benchmark-merge", str(files), "--out", str(files / "m4")]) == 2
    assert "not a butterfly benchmark folder" in capsys.readouterr().err


def test_benchmark_passes_scvi_epochs_to_the_scvi_backend(files, monkeypatch, capsys):
    """--scvi-epochs reaches MultiVI (faked here: the adapter itself is tested where scvi-tools is installed)."""
    import json
    import sys
    import types

    import numpy as np

    import butterfly.model._scvi as adapter

    seen = []

    def fake_clusters(raw, kinds, *, resolution, seed, **options):
        seen.append(options)
        return np.arange(raw[0].n_obs) % 4  # any grouping: the test is about the options

    monkeypatch.setitem(sys.modules, "scvi", types.ModuleType("scvi"))
    monkeypatch.setattr(adapter, "scvi_clusters", fake_clusters)
    out = files / "bench_scvi"
    args = ["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"), "--folds", "2",
            "--only-folds", "0", "--models", "butterfly-C-scvi", "--pretrain-epochs", "1", "--epochs", "1"]  # fmt: skip
    assert main([*args, "--scvi-epochs", "7", "--out", str(out)]) == 0
    assert seen == [{"max_epochs": 7}]
    assert json.loads((out / "summary.json").read_text())["settings"]["scvi_epochs"] == 7
    assert main([*args, "--scvi-epochs", "0", "--out", str(files / "b0")]) == 2
    assert "--scvi-epochs must be at least 1" in capsys.readouterr().err


def test_benchmark_scores_translations_averaged_over_latent_draws(files, capsys):
    import json

    import pandas as pd

    out = files / "bench_draws"
    args = ["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"), "--folds", "2",
            "--only-folds", "0", "--models", "butterfly", "knn", "--pretrain-epochs", "1", "--epochs", "2"]  # fmt: skip
    assert main([*args, "--translate-samples", "-1", "--out", str(out)]) == 2
    assert "--translate-samples must be at least 0, got -1" in capsys.readouterr().err
    assert main([*args, "--translate-samples", "3", "--out", str(out)]) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["model"]) == {"measured", "butterfly", "butterfly (3 latent draws)", "knn"}
    seconds = scores[scores["profile"] == "training"].set_index("model")["value"]
    assert seconds["butterfly"] == seconds["butterfly (3 latent draws)"]  # one model, translated two ways
    auroc = scores[(scores["profile"] == "rna->atac") & (scores["metric"] == "AUROC")].set_index("model")
    assert auroc.loc["butterfly", "value"] != auroc.loc["butterfly (3 latent draws)", "value"]
    assert json.loads((out / "summary.json").read_text())["settings"]["translate_samples"] == 3
    assert "butterfly (3 latent draws)" in (out / "summary.md").read_text()


def test_benchmark_can_average_clustering_over_scoring_runs(files, capsys):
    import json

    import pandas as pd

    args = ["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"), "--folds", "2",
            "--only-folds", "0", "--models", "knn"]  # fmt: skip
    assert main([*args, "--scoring-runs", "0", "--out", str(files / "runs0")]) == 2
    assert "--scoring-runs must be at least 1, got 0" in capsys.readouterr().err
    assert not (files / "runs0").exists()  # refused before any work
    assert main([*args, "--out", str(files / "runs1")]) == 0
    assert main([*args, "--scoring-runs", "3", "--out", str(files / "runs3")]) == 0
    one, three = (pd.read_csv(files / f / "scores.csv").set_index(["model", "profile", "metric"])["value"]
                  for f in ("runs1", "runs3"))  # fmt: skip
    assert one.loc["knn", "rna->atac", "AUROC"] == three.loc["knn", "rna->atac", "AUROC"]
    clustering = [(m, p, k) for m, p, k in one.index if k in ("AMI", "ARI", "NMI", "HOM")]
    assert any(one[i] != three[i] for i in clustering)  # a mean over three runs, not the first run's
    assert json.loads((files / "runs3" / "summary.json").read_text())["settings"]["scoring_runs"] == 3
    # runs scored differently do not merge into one table
    assert (
        main(["benchmark-merge", str(files / "runs1"), str(files / "runs3"), "--out", str(files / "m")]) == 2
    )
    assert "scoring_runs: 1 vs 3" in capsys.readouterr().err


def test_reports_refuse_a_folder_of_the_users(files, tmp_path, capsys):
    """Checked before any training: demo and benchmark do not write into a folder holding other files
    (it may hold a model/ or summary.md of the user's) without --overwrite; an earlier report is replaced."""
    from butterfly.benchmark import _demo as demo

    user = tmp_path / "project"
    user.mkdir()
    (user / "model").mkdir()
    (user / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(user)]) == 2
    err = capsys.readouterr().err
    assert "holds files this command did not write (e.g. 'notes.txt')" in err and "--overwrite" in err
    bench = ["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"),
             "--models", "knn", "--folds", "2", "--out", str(user)]  # fmt: skip
    assert main(bench) == 2 and "did not write (e.g. 'model', 'notes.txt')" in capsys.readouterr().err
    assert sorted(p.name for p in user.iterdir()) == ["model", "notes.txt"]
    (user / "notes.txt").unlink()
    check_report_folder(user, demo.REPORT_FILES, overwrite=False)  # only what a demo writes: accepted
    (user / "model" / "weights.txt").write_text("not a butterfly model")
    assert (
        main(["demo", "--out", str(user)]) == 2
    )  # a model/ that is not butterfly's: refused before training
    assert "not a saved butterfly model" in capsys.readouterr().err
    report = files / "bench"
    assert main([*bench[:-1], str(report)]) == 0
    assert main([*bench[:-1], str(report)]) == 0  # an earlier benchmark report is replaced
    assert main(["benchmark-merge", str(report), "--out", str(user)]) == 2


@pytest.mark.parametrize(
    ("argv", "left"),
    [
        (["train", "--first", "a.h5ad", "--second", "b.h5ad", "--out", "m"], "nothing was written to m"),
        (["benchmark", "--first", "a.h5ad", "--second", "b.h5ad", "--out", "b"], "scores are in b/scores.partial.csv"),
        (["evaluate", "--model", "m", "--first", "a.h5ad", "--second", "b.h5ad", "--out", "e"],
         "the report in e is incomplete"),
        (["info", "m"], "nothing was written"),
    ],
)  # fmt: skip
def test_ctrl_c_exits_130_and_says_what_was_written(argv, left, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("butterfly.cli._main._run", interrupted)
    assert main(argv) == 130
    error = capsys.readouterr().err
    assert error.startswith(f"butterfly {argv[0]}: interrupted;") and left in error
    assert "Traceback" not in error


def test_evaluate_scores_held_out_cells_and_writes_a_report(trained, snare_split, tmp_path, capsys):
    """``butterfly evaluate`` gives a saved model's evaluate_translation scores on held-out paired cells (the
    translated RNA clusters by cell type better than the measured ATAC it came from) and writes its report."""
    _, _, rna_test, atac_test = snare_split
    trained.save(tmp_path / "model")
    rna_test.write_h5ad(tmp_path / "rna.h5ad")
    atac_test.write_h5ad(tmp_path / "atac.h5ad")
    out = tmp_path / "scores"
    argv = ["evaluate", "--model", str(tmp_path / "model"), "--first", str(tmp_path / "rna.h5ad"),
            "--second", str(tmp_path / "atac.h5ad"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "scores.json").read_text())
    expected = bf.evaluate_translation(trained, rna_test, atac_test)
    assert sorted(summary["scores"]) == sorted(expected)
    for profile, scores in expected.items():
        assert summary["scores"][profile] == pytest.approx(scores, abs=1e-9)
    assert summary["scores"]["atac->rna"]["AMI"] > summary["scores"]["measured atac"]["AMI"] + 0.05
    assert summary["cells"] == 400 and summary["settings"]["model"] == str(tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == [
        "scores.json",
        "scores.md",
        "scores_by_label.csv",
        "scores_by_label.png",
        "tsne_atac.png",
        "tsne_rna.png",
    ]
    assert (out / "tsne_rna.png").read_bytes()[:4] == b"\x89PNG"
    assert "| atac->rna |" in (out / "scores.md").read_text()
    by_label = pd.read_csv(out / "scores_by_label.csv", index_col=0)
    types = rna_test.obs["cell_type"].value_counts()
    assert by_label["cells"].to_dict() == types.to_dict()  # every type, the most common first
    assert list(by_label.columns) == ["cells", "rna->atac auroc_per_cell", "atac->rna pearson_per_cell"]
    assert (by_label["rna->atac auroc_per_cell"] > 0.6).all()  # every type's peaks ranked above chance
    atac_to_rna = trained.translate(atac_test, source="atac", target="rna", progress=False)
    truth = trained.preprocessors["rna"].transform(rna_test).X
    per_cell = bf.metrics.cell_pearson(atac_to_rna.X, truth)
    weighted = (by_label["atac->rna pearson_per_cell"] * by_label["cells"]).sum() / by_label["cells"].sum()
    assert weighted == pytest.approx(np.nanmean(per_cell))
    assert f"| {types.index[0]} | {types.iloc[0]} |" in (out / "scores.md").read_text()
    assert "| atac->rna |" in printed and "scored 400 held-out cells; report in" in printed
    again = [*argv[:-1], str(tmp_path / "again"), "--no-plots", "--scoring-runs", "2", "--latent"]
    assert main(again) == 0  # options reach the scoring
    summary = json.loads((tmp_path / "again" / "scores.json").read_text())
    assert "rna latent" in summary["scores"] and summary["settings"]["scoring_runs"] == 2
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [
        "scores.json",
        "scores.md",
        "scores_by_label.csv",
    ]
    swapped = [*argv[:4], str(tmp_path / "atac.h5ad"), "--second", str(tmp_path / "rna.h5ad"), "--out",
               str(tmp_path / "swapped")]  # fmt: skip
    assert main(swapped) == 2
    assert "names the modality these cells were measured in" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "bad"), "--scoring-runs", "0"]) == 2
    assert "--scoring-runs at least 1" in capsys.readouterr().err


def test_demo_writes_its_report(tmp_path, capsys):
    """The main job end to end, shortened (2 + 5 epochs): every report file, and metrics that say what they
    measured (scores of both directions, the annotation, the genes the validation cells trust)."""
    out = tmp_path / "report"
    assert (
        main(["demo", "--out", str(out), "--pretrain-epochs", "2", "--epochs", "5", "--device", "cpu"]) == 0
    )
    from butterfly.benchmark import _demo as demo
    from butterfly.model import TRUSTED_VALIDATION_R

    assert {p.name for p in out.iterdir()} == set(demo.REPORT_FILES)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["train_cells"] == 1600 and summary["test_cells"] == 400
    assert {"rna->atac", "atac->rna", "measured rna"} <= set(summary["scores"])
    genes = summary["genes_by_validation_r"]
    assert genes["validation_r_above"] == TRUSTED_VALIDATION_R and 0 <= genes["genes_above"] <= 1677
    assert set(summary["integration"]) == {
        "measured RNA + measured ATAC", "measured RNA + translated ATAC", "translated RNA + measured ATAC"
    }  # fmt: skip
    # AMI is chance-adjusted: a 5-epoch model's translations score near 0, on either side of it
    assert all(-1 <= scores["AMI"] <= 1 for scores in summary["integration"].values())
    assert summary["integration"]["measured RNA + measured ATAC"]["AMI"] > 0.4  # measured: 0.53
    by_type = summary["scores_by_cell_type"]  # every test cell's type, each way
    assert sum(row["cells"] for row in by_type.values()) == 400 and len(by_type) > 15
    assert all(0 < row["rna->atac auroc_per_cell"] < 1 for row in by_type.values())
    assert "| cell type | cells | rna->atac auroc_per_cell |" in (out / "metrics.md").read_text()
    translated = ad.read_h5ad(out / "translated_rna_from_atac.h5ad")
    assert translated.shape == (400, 1677) and "predicted_cell_type" in translated.obs
    assert translated.obsm["X_butterfly_joint"].shape == (400, 60)
    assert ad.read_h5ad(out / "translated_atac_from_rna.h5ad").obsm["X_butterfly_joint"].shape == (400, 60)
    assert int((translated.var["validation_pearson"] > TRUSTED_VALIDATION_R).sum()) == genes["genes_above"]
    printed = capsys.readouterr().out
    assert "finished in" in printed and "accuracy" in printed and "joined (bf.integrate)" in printed
    assert bf.Butterfly.load(out / "model").is_trained_


def test_benchmark_scores_the_integrative_analysis(files):
    import json

    import pandas as pd

    out = files / "bench_joint"
    args = ["benchmark", "--first", str(files / "rna.h5ad"), "--second", str(files / "atac.h5ad"), "--folds", "2",
            "--only-folds", "0", "--models", "knn", "linear", "--joint", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    scores = pd.read_csv(out / "scores.csv")
    profiles = scores.groupby("profile")["model"].agg(set)
    assert profiles["measured rna + atac"] == {"measured"}
    assert profiles["rna + translated atac"] == profiles["atac + translated rna"] == {"knn", "linear"}
    joint = scores[scores["profile"].str.contains(r"\+")]
    assert set(joint["metric"]) == {"AMI", "ARI", "NMI", "HOM"} and joint["value"].between(-1, 1).all()
    assert json.loads((out / "summary.json").read_text())["settings"]["joint"] is True
    assert "rna + translated atac" in (out / "summary.md").read_text()
