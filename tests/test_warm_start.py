"""Training that continues: a saved model, loaded with paired cells, trains further from its weights with its
fitted preprocessing kept, from Python and from the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import butterfly as bf
from butterfly.cli._main import main


@pytest.fixture(scope="module")
def saved(snare, tmp_path_factory):
    rna, atac = snare
    model = bf.Butterfly(rna[:1200], atac[:1200], seed=0, device="cpu")
    with pytest.warns(UserWarning):  # four epochs are too few for the check to pass: it says so
        model.fit(pretrain_epochs=2, epochs=4, progress=False)
    path = tmp_path_factory.mktemp("warm") / "model"
    model.save(path)
    return model, path


def test_a_loaded_model_continues_from_its_weights_with_its_preprocessing(saved, snare):
    model, path = saved
    rna, atac = snare
    with pytest.raises(bf.ButterflyInputError, match=r"Butterfly.load\(path, first=rna, second=atac\)"):
        bf.Butterfly.load(path, device="cpu").fit(pretrain_epochs=0, epochs=1, progress=False)
    shallow = rna[:1200].copy()
    shallow.X = shallow.X.multiply(0.5).floor().tocsr()  # other depths: the fitted normalisation stays
    shallow = shallow[shallow.X.sum(1).A1 > 0].copy()
    cells = shallow.obs_names
    loaded = bf.Butterfly.load(path, device="cpu", first=shallow, second=atac[cells])
    for name in ("rna", "atac"):
        assert list(loaded.preprocessors[name].features_) == list(model.preprocessors[name].features_)
    assert loaded.preprocessors["rna"].target_sum_ == model.preprocessors["rna"].target_sum_
    np.testing.assert_array_equal(
        loaded._matrices["rna"].toarray(), model.preprocessors["rna"].transform(shallow).X.toarray()
    )
    start = {k: v.clone() for k, v in loaded.network.state_dict().items()}
    for k, v in model.network.state_dict().items():
        assert torch.equal(start[k], v), k  # the saved weights, not a new initialisation
    fresh = bf.Butterfly(shallow, atac[cells], seed=0, device="cpu")
    with pytest.warns(UserWarning):
        fresh_history = fresh.fit(pretrain_epochs=0, epochs=2, progress=False)
        history = loaded.fit(pretrain_epochs=0, epochs=2, progress=False)
    warm, cold = history["train_recon"].iloc[0], fresh_history["train_recon"].iloc[0]
    assert warm < 0.9 * cold  # it starts where the saved model was, far below a new model's first epoch
    assert any(not torch.equal(start[k], v) for k, v in loaded.network.state_dict().items())
    assert loaded.is_trained_ and loaded.translate(rna[1500:1510], source="rna", target="atac").n_obs == 10


def test_unpaired_models_say_they_cannot_continue(snare, tmp_path):
    rna, atac = snare
    model = bf.Butterfly.unpaired(rna[:300], atac[300:600], label_key="cell_type", seed=0, device="cpu")
    model.save(tmp_path / "model")
    with pytest.raises(bf.ButterflyInputError, match="pairing='unpaired' cannot yet continue training"):
        bf.Butterfly.load(tmp_path / "model", first=rna[:300], second=atac[:300])


def test_label_pairing_and_cluster_resolution_round_trip(snare, tmp_path):
    rna, atac = snare
    model = bf.Butterfly(
        rna[:400], atac[:400], pairing="cluster", cluster_resolution=1.5, seed=0, device="cpu"
    )
    model.save(tmp_path / "model")
    assert bf.Butterfly.load(tmp_path / "model").cluster_resolution == 1.5
    labelled = bf.Butterfly(rna[:400], atac[:400], pairing="label", seed=0, device="cpu")
    labelled.save(tmp_path / "labelled")
    again = bf.Butterfly.load(tmp_path / "labelled", first=rna[:400], second=atac[:400])
    np.testing.assert_array_equal(again._labels, rna[:400].obs["cell_type"].to_numpy())


def test_cli_train_from_model_continues_and_keeps_the_original(saved, snare, tmp_path, capsys):
    model, path = saved
    rna, atac = snare
    rna[:1200].write_h5ad(tmp_path / "rna.h5ad")
    atac[:1200].write_h5ad(tmp_path / "atac.h5ad")
    before = (path / "weights.pt").read_bytes()
    code = main(["train", "--from-model", str(path), "--first", str(tmp_path / "rna.h5ad"), "--second",
                 str(tmp_path / "atac.h5ad"), "--pretrain-epochs", "0", "--epochs", "1", "--out",
                 str(tmp_path / "continued")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (path / "weights.pt").read_bytes() == before
    continued = bf.Butterfly.load(tmp_path / "continued", device="cpu")
    assert len(continued.history_) == 1 and continued.history_["phase"].iloc[0] == "integrative"
    assert any(
        not torch.equal(v, model.network.state_dict()[k]) for k, v in continued.network.state_dict().items()
    )
