"""The check that says when a translation failed: on real paired cells it passes, on the same cells with their
pairing shuffled it warns, and what it reports survives save and load."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import butterfly as bf
from butterfly.model import _quality as quality


def test_a_trained_snare_model_passes_the_check(trained):
    checks = trained.translation_check_
    assert set(checks) == {"rna->atac", "atac->rna"}
    rna_to_atac = checks["rna->atac"]
    assert rna_to_atac["verdict"] != "fails"
    assert rna_to_atac["model interval"][0] > 0  # above the training mean's 0
    assert rna_to_atac["cells"] == 320  # the validation cells of 1,600 (20%)
    assert "translation check on validation cells" in trained.summary()
    assert "FAILED" not in trained.summary().split("translation check")[1].split("\n")[1]


def test_shuffled_pairs_warn_that_the_translation_failed(snare):
    """The same real cells with one modality's order shuffled: nothing can be learnt, and fit says so."""
    rna, atac = snare[0][:800], snare[1][:800].copy()
    atac = atac[np.random.default_rng(0).permutation(atac.n_obs)].copy()
    atac.obs_names = rna.obs_names
    model = bf.Butterfly(rna, atac, seed=0, device="cpu")
    with pytest.warns(UserWarning, match=r"The rna->atac translation does not tell the cells apart"):
        model.fit(pretrain_epochs=3, epochs=8, progress=False)
    assert model.translation_check_["rna->atac"]["verdict"] == "fails"
    assert model.translation_check_["atac->rna"]["verdict"] == "fails"
    assert "FAILED: no better than the training mean" in model.summary()


def test_the_check_is_saved_and_shown_by_info(trained, tmp_path, capsys):
    trained.save(tmp_path / "model")
    loaded = bf.Butterfly.load(tmp_path / "model", device="cpu")
    assert loaded.translation_check_ == trained.translation_check_
    from butterfly.cli._main import main

    assert main(["info", str(tmp_path / "model")]) == 0
    assert "rna->atac: cell matching, AUROC" in capsys.readouterr().out


def test_cell_matching_is_zero_for_one_shared_prediction_and_high_for_faithful_ones(snare):
    """On real ATAC and RNA profiles: the mean profile scores exactly 0, measured profiles with a little noise
    score far above 0, and the score matrix agrees with scikit-learn's AUROC and numpy's r cell by cell."""
    from sklearn.metrics import roc_auc_score

    rna, atac = snare[0][:60], snare[1][:60]
    for kind, X in (("atac", atac.X.toarray()), ("rna", np.log1p(rna.X.toarray()))):
        rng = np.random.default_rng(0)
        mean = np.tile(X.mean(0), (X.shape[0], 1))
        assert np.nanmax(np.abs(quality.cell_specificity(mean, X, kind))) < 1e-9
        faithful = X + 0.1 * rng.random(X.shape)
        value, low, high = quality.interval(quality.cell_specificity(faithful, X, kind))
        assert low > 0.1 and low <= value <= high
        scores = quality.score_matrix(faithful, X, kind)
        i, j = 3, 7
        expected = (
            roc_auc_score(X[i] > 0, faithful[j]) if kind == "atac" else np.corrcoef(X[i], faithful[j])[0, 1]
        )
        assert scores[i, j] == pytest.approx(expected, abs=1e-9)


def test_interval_covers_the_mean_of_known_draws():
    rng = np.random.default_rng(1)
    values = rng.normal(0.3, 1.0, size=400)
    value, low, high = quality.interval(values)
    assert low < 0.3 < high and high - low < 0.25 and value == pytest.approx(values.mean())


def test_the_check_keeps_out_of_the_way_of_models_without_measured_validation_pairs(snare):
    rna, atac = snare
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bf.Butterfly.unpaired(rna[:300], atac[300:600], label_key="cell_type", seed=0, device="cpu")
        model.fit(pretrain_epochs=1, epochs=1, progress=False)
    assert model.translation_check_ is None
    assert "translation check" not in model.summary()


def test_translated_peaks_are_calibrated_probabilities_on_held_out_cells(trained, snare_split, tmp_path):
    """The default ATAC output is the probability that a peak is open: on the 400 test cells (never seen in
    training or calibration) each tenth of the entries, by prediction, is open about as often as predicted;
    ranks are those of the "counts" estimate; the calibration survives save and load; integrate reads it."""
    _, _, rna_test, atac_test = snare_split
    opened = trained.preprocessors["atac"].transform(atac_test).X.toarray() > 0
    probability = trained.translate(rna_test, source="rna", target="atac", progress=False)
    assert probability.uns["butterfly"]["output"] == "probability"
    curve = bf.metrics.reliability_curve(probability.X, opened)
    assert np.abs(curve["predicted"] - curve["observed"]).max() < 0.004  # about 1.2% of entries are open
    assert abs(probability.X.mean() - opened.mean()) < 0.1 * opened.mean()
    tfidf = trained.translate(rna_test, source="rna", target="atac", atac_output="tfidf", progress=False).X
    assert tfidf.mean() < 0.5 * opened.mean()  # the decoder's own scale: not a probability
    counts = trained.translate(rna_test, source="rna", target="atac", atac_output="counts", progress=False).X
    for score in (bf.metrics.auroc_per_cell, bf.metrics.auroc):
        assert score(probability.X, opened) == pytest.approx(score(counts, opened), abs=1e-4)
    trained.save(tmp_path / "model")
    loaded = bf.Butterfly.load(tmp_path / "model", device="cpu")
    again = loaded.translate(rna_test, source="rna", target="atac", progress=False).X
    np.testing.assert_array_equal(again, probability.X)
    joined = bf.integrate(trained, {"rna": rna_test, "atac": probability})
    joined_tfidf = bf.integrate(
        trained, {"rna": rna_test, "atac": trained.translate(rna_test, source="rna", target="atac",
                                                             atac_output="tfidf", progress=False)}
    )  # fmt: skip
    np.testing.assert_allclose(joined, joined_tfidf, atol=5e-3 * np.abs(joined_tfidf).max())
    path = tmp_path / "translated.h5ad"
    trained.translate_to_h5ad(rna_test, path, source="rna", target="atac", progress=False)
    import anndata as ad

    np.testing.assert_allclose(ad.read_h5ad(path).X, probability.X, rtol=1e-6, atol=1e-9)


def test_models_saved_without_a_calibration_give_the_clipped_estimate(trained, snare_split, tmp_path):
    import json

    _, _, rna_test, _ = snare_split
    trained.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    del config["atac_calibration"]  # as a model saved by an earlier release
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    old = bf.Butterfly.load(tmp_path / "model", device="cpu")
    counts = old.translate(rna_test, source="rna", target="atac", atac_output="counts", progress=False).X
    probability = old.translate(rna_test, source="rna", target="atac", progress=False).X
    np.testing.assert_allclose(probability, np.clip(counts, 0, 1), rtol=1e-6)
