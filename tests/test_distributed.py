"""Training on several processes (torchrun, DistributedDataParallel), checked with two CPU processes (gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import butterfly as bf
from butterfly.train._data import PairedRows
from butterfly.train._trainer import Trainer

DATA = Path(__file__).parent / "data"
#: the data shipped with the package (bf.datasets), as files for the command line
SHIPPED = Path(bf.__file__).parent / "datasets" / "data"
pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without distributed"
)

SCRIPT = """
import sys

import anndata as ad
import torch

import butterfly as bf
from butterfly.train import _distributed as distributed

data, out = sys.argv[1], sys.argv[2]
rna, atac = bf.datasets.multiome_bmmc_demo()
model = bf.Butterfly(rna, atac, seed=0, device="cpu")
setting = {**bf.FAST_SETTING, "pretrain_epochs": 3, "epochs": 4, "batch_size": 64, "weight_average_halflife": 1}
model.fit(**setting, progress=False)
rank = distributed.rank_and_size()[0]
torch.save(model.network.state_dict(), f"{out}/state_{rank}.pt")
model.history_.to_csv(f"{out}/history_{rank}.csv", index=False)
distributed.leave()
"""


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # TMPDIR: torchrun's log folders go to the test's folder, not the system's temporary folder
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "TMPDIR": str(cwd)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_train_one_model(tmp_path):
    """Each process trains on its own share of the pairs; the gradients are averaged, so the two end with the
    same weights, BatchNorm statistics, validation losses and kept epochs (the fast setting with a weight
    average and the BatchNorm recalibration), and the losses fall."""
    (tmp_path / "fit.py").write_text(SCRIPT)
    run = _torchrun("fit.py", str(DATA), str(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    states = [torch.load(tmp_path / f"state_{rank}.pt") for rank in (0, 1)]
    for key, value in states[0].items():
        torch.testing.assert_close(value, states[1][key], rtol=0, atol=0)
    histories = [pd.read_csv(tmp_path / f"history_{rank}.csv") for rank in (0, 1)]
    columns = [c for c in histories[0].columns if c not in ("phase", "seconds")]
    np.testing.assert_array_equal(histories[0][columns].to_numpy(), histories[1][columns].to_numpy())
    history = histories[0]
    assert history.groupby("phase", sort=False).size().to_dict() == {
        "pretrain rna": 3, "pretrain atac": 3, "integrative": 4
    }  # fmt: skip
    for _, phase in history.groupby("phase"):
        assert phase["train_loss"].iloc[-1] < phase["train_loss"].iloc[0]


def test_cli_train_under_torchrun_saves_one_model(tmp_path):
    """``torchrun -m butterfly train``: process 0 prints and saves, the model records its two processes."""
    model = tmp_path / "model"
    run = _torchrun("-m", "butterfly", "train", "--first", str(SHIPPED / "multiome_bmmc_500_rna.h5ad"), "--second",
                    str(SHIPPED / "multiome_bmmc_500_atac.h5ad"), "--pretrain-epochs", "2", "--epochs", "2", "--device", "cpu",
                    "--out", str(model), cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("saved the trained model") == 1
    loaded = bf.Butterfly.load(model)
    assert loaded.training_data_["processes"] == 2 and len(loaded.history_) == 6
    assert (
        "400 training pairs, 100 validation pairs (early stopping); on 2 processes (torchrun)"
        in loaded.summary()
    )
    atac = bf.datasets.multiome_bmmc_demo()[1]
    translated = loaded.translate(atac, source="atac", target="rna", progress=False)
    assert (
        translated.shape == (500, 600) and np.isfinite(translated.X).all() and translated.X.std(0).max() > 0
    )


def test_each_process_takes_its_own_equal_share_of_every_epoch():
    """The shares of one epoch are disjoint and equal in size (every process runs as many steps), and the next
    epoch deals the pairs anew; one process trains on all pairs."""
    pairs = PairedRows({"rna": np.arange(103), "atac": np.arange(103) + 1000})
    trainers = []
    for rank in (0, 1, 2):
        trainer = Trainer.__new__(Trainer)
        trainer.rank, trainer.processes, trainer.shared_rng = rank, 3, np.random.default_rng(7)
        trainers.append(trainer)
    for _ in range(2):
        shares = [trainer._share(pairs) for trainer in trainers]
        rows = [share.rows["rna"] for share in shares]
        assert [len(r) for r in rows] == [34, 34, 34]
        assert len(np.unique(np.concatenate(rows))) == 102
        for share in shares:
            np.testing.assert_array_equal(share.rows["atac"], share.rows["rna"] + 1000)  # pairs kept together
    first, second = (t._share(pairs).rows["rna"] for t in (trainers[0], trainers[0]))
    assert not np.array_equal(first, second)


def test_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    from butterfly.train import _distributed as distributed

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert distributed.local_device(cuda) == cuda and not distributed.launched()  # one process: as given
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.launched() and distributed.local_device(cuda) == torch.device("cuda", 3)
    assert distributed.local_device(cpu) == cpu
    monkeypatch.setenv("RANK", "2")
    assert not distributed.is_main()  # before the group is joined, the launcher's rank says
