"""Data from a new lab: batch covariates (batch_key=), mapping a query of new batches onto a trained model
(map_query), from Python and the command line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import butterfly as bf
from butterfly.cli._main import main

REFERENCE = ["09A", "09B", "09C", "09D", "09E", "09F"]


@pytest.fixture(scope="module")
def demo():
    rna, atac = bf.datasets.snare_mcc_demo()
    known = rna.obs["batch"].isin(REFERENCE).to_numpy()
    return rna, atac, known


@pytest.fixture(scope="module")
def conditioned(demo):
    rna, atac, known = demo
    model = bf.Butterfly(rna[known], atac[known], batch_key="batch", seed=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(pretrain_epochs=3, epochs=4, progress=False)
    return model


def test_without_batch_key_the_network_is_the_papers(demo):
    """No covariates are built without batch_key; with them, every other weight starts the same."""
    rna, atac, known = demo
    plain = bf.Butterfly(rna[known], atac[known], seed=0, device="cpu")
    covariates = bf.Butterfly(rna[known], atac[known], batch_key="batch", seed=0, device="cpu")
    assert plain.network.covariates is None and plain.batch_categories_ is None
    plain_state, state = plain.network.state_dict(), covariates.network.state_dict()
    extra = set(state) - set(plain_state)
    assert extra and all(key.startswith("covariates.") for key in extra)
    for key, value in plain_state.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert covariates.batch_categories_ == REFERENCE
    assert all(
        float(p.detach().abs().sum()) == 0 for p in covariates.network.covariates.parameters()
    )  # start at 0


def test_covariates_train_and_translations_follow_the_batch(conditioned, demo):
    rna, _, known = demo
    shifts = conditioned.network.covariates.encoder_shift["rna"].weight.detach()
    assert float(shifts.abs().sum()) > 0  # the covariates learnt something
    cells = rna[known][::20]  # cells of every training batch
    options = {"source": "rna", "target": "atac", "atac_output": "tfidf", "progress": False}
    own = conditioned.translate(cells, **options)
    as_first = conditioned.translate(cells, **options, reference_batch="09A")
    same = cells.obs["batch"].astype(str).to_numpy() == "09A"
    assert 0 < same.sum() < len(same)
    # the encoder's covariate moves the latent, the decoder's the output; cells of 09A are unchanged
    assert np.abs(own.obsm["X_butterfly"][~same] - as_first.obsm["X_butterfly"][~same]).max() > 1e-3
    assert np.abs(own.X[~same] - as_first.X[~same]).max() > 1e-4
    np.testing.assert_allclose(own.X[same], as_first.X[same], rtol=1e-5, atol=1e-6)
    with pytest.raises(bf.ButterflyInputError, match="reference_batch='nope' is not a batch the model knows"):
        conditioned.translate(cells, source="rna", target="atac", reference_batch="nope")


def test_unknown_batches_and_a_missing_column_warn_and_use_the_mean(conditioned, demo):
    rna, _, known = demo
    new = rna[~known][:30]
    with pytest.warns(UserWarning, match=r"30 cells are of batches the model was not trained on.*map_query"):
        conditioned.translate(new, source="rna", target="atac", progress=False)
    bare = new.copy()
    del bare.obs["batch"]
    with pytest.warns(UserWarning, match=r"no obs\['batch'\].*mean of the 6 training batches"):
        a = conditioned.translate(bare, source="rna", target="atac", progress=False)
    with pytest.warns(UserWarning):
        b = conditioned.translate(new, source="rna", target="atac", progress=False)
    np.testing.assert_array_equal(a.X, b.X)  # both the training batches' mean


def test_batch_covariates_round_trip_through_save_and_load(conditioned, demo, tmp_path):
    rna, _, known = demo
    conditioned.save(tmp_path / "model")
    loaded = bf.Butterfly.load(tmp_path / "model", device="cpu")
    assert loaded.batch_categories_ == REFERENCE and loaded.init_params_["batch_key"] == "batch"
    cells = rna[known][:40]
    np.testing.assert_array_equal(
        loaded.translate(cells, source="rna", target="atac", progress=False).X,
        conditioned.translate(cells, source="rna", target="atac", progress=False).X,
    )


def test_map_query_adapts_a_copy_to_new_batches_of_one_modality(conditioned, demo, tmp_path):
    rna, atac, known = demo
    query = atac[~known]
    before = {k: v.clone() for k, v in conditioned.network.state_dict().items()}
    adapted = conditioned.map_query(query, "atac", epochs=3, progress=False)
    for key, value in conditioned.network.state_dict().items():  # the original is not changed
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert adapted.batch_categories_ == [*REFERENCE, "09G", "09H", "09I", "09J", "09K", "09L"]
    assert adapted.query_["new_batches"] == ["09G", "09H", "09I", "09J", "09K", "09L"]
    losses = adapted.query_history_["train_loss"].to_numpy()
    assert losses[-1] < losses[0]  # the fine-tuning lowers the query's own reconstruction loss
    state = adapted.network.state_dict()
    frozen = [
        k for k in before if k.startswith(("translator.", "encoders.rna", "decoders.rna", "discriminators."))
    ]
    for key in frozen:  # the shared translator and the other modality stay the reference's
        torch.testing.assert_close(state[key], before[key], rtol=0, atol=0)
    assert any(not torch.equal(state[k], before[k]) for k in before if k.startswith("encoders.atac"))
    for table in ("encoder_shift", "decoder_shift"):
        weight = state[f"covariates.{table}.atac.weight"]
        torch.testing.assert_close(weight[:6], before[f"covariates.{table}.atac.weight"], rtol=0, atol=0)
    translated = adapted.translate(query, source="atac", target="rna", progress=False)
    assert translated.shape == (query.n_obs, conditioned.preprocessors["rna"].n_features)
    assert np.isfinite(translated.X).all()
    adapted.save(tmp_path / "adapted")
    again = bf.Butterfly.load(tmp_path / "adapted", device="cpu")
    assert again.query_["new_batches"] == adapted.query_["new_batches"]
    np.testing.assert_array_equal(again.translate(query[:20], source="atac", target="rna", progress=False).X,
                                  translated.X[:20])  # fmt: skip


def test_map_query_refuses_what_it_cannot_do(conditioned, demo):
    rna, atac, known = demo
    with pytest.raises(bf.ButterflyInputError, match="Unknown modality 'adt'"):
        conditioned.map_query(atac[~known], "adt")
    with pytest.raises(bf.ButterflyInputError, match="holds only batches the model was trained on"):
        conditioned.map_query(atac[known], "atac", progress=False)
    bare = atac[~known].copy()
    del bare.obs["batch"]
    with pytest.raises(bf.ButterflyInputError, match="batch_key="):
        conditioned.map_query(bare, "atac", progress=False)
    with pytest.raises(bf.ButterflyInputError, match=r"Only \d+ of the \d+ atac features"):
        conditioned.map_query(atac[~known][:, :100], "atac", progress=False)  # features with little overlap
    plain = bf.Butterfly(rna[:300], atac[:300], seed=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain.fit(pretrain_epochs=1, epochs=1, progress=False)
    with pytest.raises(bf.ButterflyInputError, match="trained without them.*batch_key="):
        plain.map_query(atac[~known], "atac")


def test_the_command_line_trains_with_covariates_and_maps_a_query(demo, tmp_path, capsys):
    rna, atac, known = demo
    rna[known].write_h5ad(tmp_path / "rna.h5ad")
    atac[known].write_h5ad(tmp_path / "atac.h5ad")
    atac[~known].write_h5ad(tmp_path / "query.h5ad")
    code = main(["train", "--first", str(tmp_path / "rna.h5ad"), "--second", str(tmp_path / "atac.h5ad"),
                 "--batch-key", "batch", "--pretrain-epochs", "1", "--epochs", "2", "--out", str(tmp_path / "m")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    code = main(["map-query", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "query.h5ad"),
                 "--source", "atac", "--batch-key", "batch", "--epochs", "2", "--out", str(tmp_path / "m2")])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "of 6 new batches (09G, 09H" in out.out
    assert bf.Butterfly.load(tmp_path / "m2").query_["modality"] == "atac"
    code = main(["map-query", "--model", str(tmp_path / "m2"), "--input", str(tmp_path / "atac.h5ad"),
                 "--source", "atac", "--out", str(tmp_path / "m3")])  # fmt: skip
    assert code == 2 and "holds only batches the model was trained on" in capsys.readouterr().err


def test_map_query_without_fine_tuning_trains_only_the_new_batches_vectors(conditioned, demo):
    _, atac, known = demo
    before = conditioned.network.state_dict()
    adapted = conditioned.map_query(atac[~known], "atac", epochs=2, fine_tune=False, progress=False)
    state = adapted.network.state_dict()
    for key, value in before.items():
        if key.startswith("covariates."):
            torch.testing.assert_close(state[key][: value.shape[0]], value, rtol=0, atol=0)
        else:
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)  # every weight as it was
    new = state["covariates.encoder_shift.atac.weight"][6:]
    start = before["covariates.encoder_shift.atac.weight"].mean(dim=0)
    assert (new - start).abs().max() > 0  # the new batches' vectors moved from the known mean
    assert adapted.query_["fine_tune"] is False
