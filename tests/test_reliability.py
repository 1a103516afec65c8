"""Mistakes and accidents: a save killed at any step, damaged model files, settings that cannot train, and the
CLI's errors. Each test fails on the behaviour it guards against."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import butterfly as bf
from butterfly.cli._main import main
from butterfly.io import _atomic as _io


@pytest.fixture(scope="module")
def small(snare):
    """An untrained model of 300 shipped cells: saving and loading need no training."""
    rna, atac = snare
    return bf.Butterfly(rna[:300], atac[:300], seed=0, device="cpu")


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(Path(path) / "weights.pt", weights_only=True)


def _staging(folder: Path, name: str = "model") -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{name}.butterfly-"))


# -- 1. replacing a saved model --------------------------------------------------------------------------------
KILLED_SAVE = textwrap.dedent(
    """
    import os, pathlib, shutil, sys, tempfile
    import numpy as np, pandas as pd, torch
    import butterfly as bf
    from butterfly.io import _atomic as _io

    path, kill_at = sys.argv[1], int(sys.argv[2])
    model = bf.Butterfly.load(path, device="cpu")
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(1.0)  # the new model: every weight one more than the saved one's
    steps = [0]

    def killed_before(owner, name):
        real = getattr(owner, name)

        def step(*args, **kwargs):
            steps[0] += 1
            if steps[0] == kill_at:
                os._exit(9)  # as SIGKILL: no finally, no clean-up
            return real(*args, **kwargs)

        setattr(owner, name, step)

    for owner, name in [
        (tempfile, "mkdtemp"), (os, "chmod"), (pathlib.Path, "write_text"), (torch, "save"), (np, "savez"),
        (pd.DataFrame, "to_csv"), (os, "replace"), (shutil, "rmtree"), (_io, "exchange_paths"),
    ]:
        killed_before(owner, name)
    model.save(path, overwrite=True)
    print("steps", steps[0])
    """
)


def test_a_replacing_save_killed_at_any_step_leaves_a_loadable_model(small, tmp_path):
    """Killed before each of its file-system steps in turn, a save over an earlier model leaves at ``path`` the
    old model or the new one, whole, every time; the next save removes what the killed ones left, and a hidden
    folder butterfly did not write is kept."""
    path = tmp_path / "model"
    small.save(path)
    old = _weights(path)
    foreign = tmp_path / ".model.old"  # the name the previous release used for its backup
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    script = tmp_path / "killed_save.py"
    script.write_text(KILLED_SAVE)
    parameters = [name for name, _ in small.network.named_parameters()]
    outcomes = []
    for kill_at in range(1, 40):
        run = subprocess.run(
            [sys.executable, str(script), str(path), str(kill_at)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode in (0, 9), run.stderr
        loaded = bf.Butterfly.load(path, device="cpu")  # raises if the folder is not a whole model
        weights = {k: v for k, v in loaded.network.state_dict().items()}
        is_old = all(torch.equal(weights[k], old[k]) for k in old)
        is_new = all(torch.equal(weights[k], old[k] + 1) for k in parameters)
        assert is_old or is_new, f"killed before step {kill_at}: neither model"
        outcomes.append("new" if is_new and not is_old else "old")
        if run.returncode == 0:
            break
        old = {k: v.clone() for k, v in _weights(path).items()} if outcomes[-1] == "new" else old
    assert run.returncode == 0, "the save never finished"
    assert outcomes[-1] == "new" and outcomes.count("old") >= 8, outcomes  # every step before the swap tried
    assert (foreign / "notes.txt").read_text() == "mine"
    small.save(path, overwrite=True)  # removes the killed saves' leftovers
    assert _staging(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.old", "killed_save.py", "model"]


def test_leftovers_are_removed_only_when_butterfly_made_them_and_their_process_ended(small, tmp_path):
    path = tmp_path / "model"
    small.save(path)
    host = _io._host_tag()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    killed = tmp_path / f".model.butterfly-{host}-{dead_pid}-abc123"  # a killed save's half-written folder
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    (killed / "weights.pt").write_bytes(b"")
    live = tmp_path / f".model.butterfly-{host}-{os.getppid()}-abc123"  # a save running in another process
    live.mkdir()
    (live / "config.json").write_text("{}")
    theirs = (
        tmp_path / f".model.butterfly-{host}-{dead_pid}-zzz999"
    )  # the same form of name, a file of theirs
    theirs.mkdir()
    (theirs / "thesis.docx").write_text("years of work")
    other_target = tmp_path / f".other.butterfly-{host}-{dead_pid}-abc123"
    other_target.mkdir()
    small.save(path, overwrite=True)
    assert not killed.exists()
    assert live.exists() and theirs.exists() and other_target.exists()
    assert (theirs / "thesis.docx").read_text() == "years of work"


def test_a_replacing_save_swaps_in_one_step_and_falls_back_where_it_cannot(small, tmp_path, monkeypatch):
    path = tmp_path / "model"
    small.save(path)
    swaps = []
    real = _io.exchange_paths
    monkeypatch.setattr(_io, "exchange_paths", lambda a, b: swaps.append((a, b)) or real(a, b))
    small.save(path, overwrite=True)
    if sys.platform.startswith("linux"):
        assert len(swaps) == 1 and swaps[0][1] == path
    monkeypatch.setattr(_io, "_EXCHANGE", None)  # a system without an atomic swap
    small.save(path, overwrite=True)
    bf.Butterfly.load(path, device="cpu")
    assert _staging(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_folders_follow_the_umask(small, tmp_path, umask):
    old = os.umask(umask)
    try:
        small.save(tmp_path / "model")
    finally:
        os.umask(old)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "model" / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask


# -- 2, 3. how matrices are read --------------------------------------------------------------------------------
def test_log_normalised_input_of_whole_numbers_is_refused_as_counts(snare):
    """Raw counts given with normalized_to=, shallow cells included (small counts pass the range check)."""
    rna, atac = snare
    model = bf.Butterfly(rna[:300], atac[:300], seed=0, device="cpu")
    shallow = rna[300:340].copy()
    shallow.X = sp.csr_matrix(np.minimum(shallow.X.toarray(), 2))  # at most 2 counts a gene
    with pytest.raises(bf.ButterflyInputError, match="look like raw counts.*leave normalized_to= out"):
        model.preprocessors["rna"].transform(shallow, normalized_to=1e4)
    logged = shallow.copy()
    logged.X = sp.csr_matrix(np.log1p(shallow.X.toarray() / shallow.X.sum(1).A * 1e4))
    assert model.preprocessors["rna"].transform(logged, normalized_to=1e4).n_obs == 40


# -- 4. settings that cannot train, and training that diverges ------------------------------------------------
def test_settings_that_run_no_step_are_refused(snare):
    rna, atac = snare
    model = bf.Butterfly(rna[:200], atac[:200], seed=0, device="cpu")
    with pytest.raises(bf.ButterflyInputError, match="batch_size.*at least 2, got 1"):
        model.fit(pretrain_epochs=1, epochs=1, batch_size=1, progress=False)
    with pytest.raises(bf.ButterflyInputError, match="epochs=0 runs no integrative training"):
        model.fit(pretrain_epochs=1, epochs=0, progress=False)
    assert not model.is_trained_


def test_training_that_diverges_stops_with_the_setting_named_and_keeps_finite_weights(snare):
    rna, atac = snare
    model = bf.Butterfly(rna[:300], atac[:300], seed=0, device="cpu")
    start = {k: v.clone() for k, v in model.network.state_dict().items()}
    with pytest.raises(
        bf.TrainingDivergedError, match=r"diverged in pretrain rna epoch 0.*lower lr \(now 1e\+06\)"
    ):
        model.fit(pretrain_epochs=3, epochs=3, lr=1e6, progress=False)
    assert not model.is_trained_
    assert all(torch.isfinite(v).all() for v in model.network.state_dict().values() if v.is_floating_point())
    for name, value in model.network.state_dict().items():
        assert torch.equal(value, start[name]), name  # the phase's starting weights, the last finite ones
    assert len(model.history_) == 1 and not np.isfinite(model.history_["train_loss"].iloc[0])
    with pytest.raises(bf.NotTrainedError):
        model.translate(rna[:5], source="rna", target="atac")


def test_divergence_after_finished_integrative_epochs_keeps_the_best_of_them(snare, monkeypatch):
    from butterfly.train._trainer import Trainer

    rna, atac = snare
    model = bf.Butterfly(rna[:300], atac[:300], seed=0, device="cpu")
    real = Trainer._validate_integrative
    calls = [0]

    def fails_third(self, epoch=None):
        calls[0] += 1
        out = real(self, epoch)
        return {k: float("nan") for k in out} if calls[0] == 3 else out

    monkeypatch.setattr(Trainer, "_validate_integrative", fails_third)
    with pytest.raises(bf.TrainingDivergedError, match="integrative epoch 2.*weights of epoch [01]"):
        model.fit(pretrain_epochs=1, epochs=5, kl_warmup_epochs=0, progress=False)
    assert model.is_trained_
    out = model.translate(rna[:20], source="rna", target="atac", progress=False)
    assert np.isfinite(out.X).all()


# -- 5. latent needs a trained model -----------------------------------------------------------------------------
def test_latent_of_an_untrained_model_is_refused(small, snare):
    with pytest.raises(bf.NotTrainedError, match="call fit"):
        small.latent(snare[1][:10], "atac", progress=False)


# -- 6. model files ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "", "x\\y", "c:d", "tab\there"])
def test_modality_names_that_cannot_name_a_file_are_refused_where_they_enter(snare, name, tmp_path):
    import dataclasses

    rna, atac = snare
    with pytest.raises(bf.ButterflyInputError, match="modality name"):
        bf.Butterfly(rna[:50], atac[:50], modalities=(dataclasses.replace(bf.pp.RNA, name=name), "atac"))
    with pytest.raises(bf.ButterflyInputError, match="names must be two condition names|modality name"):
        bf.Butterfly.perturbation(rna[:50], rna[50:100], names=(name, "stimulated"))


def test_a_config_whose_modality_name_leaves_the_folder_is_refused(small, tmp_path):
    path = tmp_path / "model"
    small.save(path)
    outside = tmp_path / "preprocessing_escape.json"
    outside.write_text("{}")
    config = json.loads((path / "config.json").read_text())
    config["init_params"]["modalities"][0]["name"] = "../preprocessing_escape"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(bf.ModelFileError, match=r"config.json: .*modality name"):
        bf.Butterfly.load(path, device="cpu")


def _damage(path: Path, how: str) -> None:
    config = json.loads((path / "config.json").read_text())
    if how == "empty weights":
        (path / "weights.pt").write_bytes(b"")
    elif how == "cut weights":
        data = (path / "weights.pt").read_bytes()
        (path / "weights.pt").write_bytes(data[: len(data) // 2])
    elif how == "missing key":
        del config["init_params"]
    elif how == "wrong type":
        config["init_params"]["seed"] = "zero"
    elif how == "wrong flag type":
        config["is_trained"] = "yes"
    elif how == "missing preprocessing":
        (path / "preprocessing_atac.npz").unlink()
    elif how == "garbled preprocessing":
        (path / "preprocessing_rna.npz").write_bytes(b"not a zip at all")
    elif how == "weights of another model":
        other = path.parent / "other"
        rna, atac = bf.datasets.snare_mcc_demo()
        bf.Butterfly(rna[:300], atac[:300], seed=0, modalities=(bf.pp.RNA, "atac"), dropout=0.1,
                     device="cpu", batch_norm=False).save(other)  # fmt: skip
        (path / "weights.pt").write_bytes((other / "weights.pt").read_bytes())
    (path / "config.json").write_text(json.dumps(config))


DAMAGE = {
    "empty weights": r"weights.pt: empty \(0 bytes\)",
    "cut weights": r"weights.pt: damaged or cut short",
    "missing key": r"config.json: the key 'init_params' is missing",
    "wrong type": r"config.json: its constructor arguments .* not valid \(seed must be a whole number, got 'zero'",
    "wrong flag type": r"config.json: 'is_trained' must be true or false, got 'yes'",
    "missing preprocessing": r"preprocessing_atac.npz: missing",
    "garbled preprocessing": r"preprocessing_rna.npz: cannot be read",
    "weights of another model": r"weights.pt: these weights do not fit the network",
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_each_damaged_model_file_gives_one_error_naming_the_file(small, tmp_path, how, capsys):
    path = tmp_path / "model"
    small.save(path)
    _damage(path, how)
    with pytest.raises(bf.ModelFileError, match=DAMAGE[how]) as caught:
        bf.Butterfly.load(path, device="cpu")
    assert caught.value.path.parent == path
    assert main(["info", str(path)]) == 2  # the CLI: one paragraph, no traceback
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "butterfly info: error:" in err


def test_damaged_optional_files_warn_and_the_model_loads(snare, tmp_path):
    rna, atac = snare
    model = bf.Butterfly(rna[:300], atac[:300], seed=0, device="cpu")
    model.fit(pretrain_epochs=1, epochs=1, progress=False)
    path = tmp_path / "model"
    model.save(path)
    (path / "history.csv").write_bytes(b'"unclosed,\x00\xff\n1,2,3,4\n')
    (path / "validation_scores.npz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="could not be read.*loads without it") as record:
        loaded = bf.Butterfly.load(path, device="cpu")
    assert len(record) == 2
    assert loaded.history_ is None and loaded.validation_scores_ is None and loaded.is_trained_
    a = model.translate(rna[300:320], source="rna", target="atac", progress=False).X
    b = loaded.translate(rna[300:320], source="rna", target="atac", progress=False).X
    np.testing.assert_array_equal(a, b)


# -- 7. the CLI never shows a traceback unless asked ----------------------------------------------------------
def test_cli_errors_are_one_paragraph_and_debug_shows_the_traceback(small, tmp_path, capsys, monkeypatch):
    import pickle

    path = tmp_path / "model"
    small.save(path)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (path / "weights.pt").write_bytes(pickle.dumps(Exploit()))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refused: it holds Python objects besides tensors" in err and "Traceback" not in err
    with pytest.raises(bf.ModelFileError):
        main(["info", str(path), "--debug"])
    with pytest.raises(bf.ModelFileError):
        main(["--debug", "info", str(path)])
    monkeypatch.setenv("BUTTERFLY_DEBUG", "1")
    with pytest.raises(bf.ModelFileError):
        main(["info", str(path)])
    monkeypatch.delenv("BUTTERFLY_DEBUG")
    import butterfly.cli._main as cli

    def broken(args):
        raise ZeroDivisionError("division by zero")  # an error that is nobody's input

    monkeypatch.setattr(cli, "_run", broken)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError: division by zero" in err and "--debug" in err and "Traceback" not in err


# -- 8. three inputs that ended in a Python error ---------------------------------------------------------------
def test_two_peaks_at_the_same_coordinates_are_named(snare):
    rna, atac = snare
    atac = atac[:200].copy()
    atac.var.iloc[1] = atac.var.iloc[0]
    atac.var_names = [atac.var_names[0].replace(":", "_"), *atac.var_names[1:]]
    with pytest.raises(
        bf.ButterflyInputError, match="repeat the coordinates of another under a different name"
    ):
        bf.Butterfly(rna[:200], atac)


def test_an_anndata_without_x_points_at_layer(snare):
    rna, atac = snare
    no_x = ad.AnnData(obs=rna.obs[:200], var=rna.var, layers={"counts": rna.X[:200]})
    assert no_x.X is None
    with pytest.raises(bf.ButterflyInputError, match="adata.X is None.*layer='counts'"):
        bf.Butterfly(no_x, atac[:200])
    assert bf.Butterfly(no_x, atac[:200], layer={"rna": "counts"}).preprocessors["rna"].n_features > 0


def test_annotate_with_an_empty_reference_is_refused(snare):
    rna, atac = snare
    model = bf.Butterfly(rna[:300], atac[:300], seed=0, device="cpu")
    model.fit(pretrain_epochs=1, epochs=1, progress=False)
    with pytest.raises(bf.ButterflyInputError, match="reference holds 0 cells"):
        bf.annotate(model, atac[300:320], "atac", reference=rna[:0], progress=False)
