"""The benchmark scripts drive the trainer's internals to count work; these tests keep them in step with it
(a new argument of ``Trainer._loop`` once broke ``epoch_speed.py`` without any test noticing)."""

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

import butterfly as bf
from butterfly.benchmark._baselines import KNNTranslator
from butterfly.benchmark._evaluate import evaluate_translation
from butterfly.module import _network as network
from butterfly.module._layers import Dropout
from butterfly.train import _trainer as training

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import epoch_speed
    import translate_quality

    return epoch_speed, translate_quality


def test_epoch_flops_count_every_phase_in_proportion_to_cells(scripts, snare):
    epoch_speed, _ = scripts
    original = training.Trainer._loop
    counts = []
    for copies in (1, 2):  # the same 500 cells once and twice: the same features, twice the cells
        rna, atac = (
            ad.concat([data[:500]] * copies, merge="same", keys=range(copies), index_unique="-")
            for data in snare
        )
        counts.append(epoch_speed.phase_flops(rna, atac, 50, torch.device("cpu")))
    assert training.Trainer._loop is original  # put back after counting
    assert set(counts[0]) == {"pretrain rna", "pretrain atac", "integrative"}
    for phase in counts[0]:
        assert counts[0][phase] > 0
        # 400 and 800 training cells in full batches of 50, dense inputs: twice the cells, twice the work
        # (integrative: up to the discriminator terms of steps whose adversarial gate is closed, skipped on
        # a CPU, a fraction of a percent each)
        tolerance = 0.01 if phase == "integrative" else 1e-6
        assert counts[1][phase] / counts[0][phase] == pytest.approx(2.0, rel=tolerance)
    # the integrative step runs both encoders, all four translator paths and both decoders, then the
    # discriminators: more than the two pretraining phases together
    assert counts[0]["integrative"] > counts[0]["pretrain rna"] + counts[0]["pretrain atac"]


def test_step_gflop_counts_the_dense_integrative_step(scripts, snare):
    _, translate_quality = scripts
    rna, atac = snare
    model = bf.Butterfly(rna[:300], atac[:300], modalities=("rna", "atac"), seed=0)
    small, large = (translate_quality.step_gflop(model, b) for b in (32, 64))
    assert small > 0
    assert large / small == pytest.approx(2.0, rel=0.01)  # every product is linear in the batch
    assert all(p.grad is None for p in model.network.parameters())  # the count leaves no gradients behind
    assert np.isfinite(large)


def test_elementwise_bound_frees_exactly_the_named_passes_and_puts_them_back(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import elementwise_bound

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 30, generator=gen, requires_grad=True)
    target = (torch.rand(8, 30, generator=gen) < 0.3).float()
    x = torch.randn(8, 30, generator=gen)
    drop = Dropout(0.5).train()

    def bce_and_grad():
        logits.grad = None
        loss = network._BCEWithLogits.apply(logits, target)
        loss.backward()
        return float(loss.detach()), logits.grad.clone()

    loss, grad = bce_and_grad()
    assert loss > 0
    expected = (torch.sigmoid(logits) - target) / logits.numel()
    torch.testing.assert_close(grad, expected.detach())
    with elementwise_bound.free_passes(softplus=True, dropout=False):
        free_loss, free_grad = bce_and_grad()
        assert not torch.equal(drop(x), x)  # dropout untouched
    assert free_loss == 0.0
    torch.testing.assert_close(free_grad, grad)  # the gradient is the same: only the value is free
    with elementwise_bound.free_passes(softplus=False, dropout=True):
        assert torch.equal(drop(x), x)
        assert bce_and_grad()[0] == pytest.approx(loss)
    # both put back
    assert bce_and_grad()[0] == pytest.approx(loss)
    assert not torch.equal(drop(x), x)


def test_scoring_seeds_seed_zero_is_the_figure_evaluate_translation_gives(monkeypatch, snare):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import scoring_seeds

    rna, atac = snare
    train, test = np.arange(300), np.arange(300, 450)
    knn = KNNTranslator(rna[train], atac[train], modalities=("rna", "atac"))
    labels = rna.obs["cell_type"].to_numpy()[test]
    profiles = scoring_seeds.translations(knn, rna[test], atac[test], ("rna", "atac"))
    scores = scoring_seeds.score_over_seeds(profiles, labels, [0, 1, 2])
    expected = evaluate_translation(knn, rna[test], atac[test], seed=0)
    for direction in ("rna->atac", "atac->rna"):
        assert scores[direction]["AMI"][0] == pytest.approx(expected[direction]["AMI"], abs=1e-4)
        assert scores[direction]["ARI"][0] == pytest.approx(expected[direction]["ARI"], abs=1e-4)
        assert len(scores[direction]["AMI"]) == 3
    # another scoring seed is another Leiden run: some score moves
    assert any(len(set(scores[d][k])) > 1 for d in scores for k in scoring_seeds.CLUSTER_SCORES)


def test_scoring_seeds_merge_joins_models_and_summarises_them(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import json

    import scoring_seeds

    def part(seed, ami):
        scores = {"AMI": [ami, ami + 0.02], "ARI": [0.3, 0.3], "NMI": [0.5, 0.5], "HOM": [0.5, 0.5]}
        knn = {d: {**scores, "AMI": [0.55, 0.57]} for d in ("rna->atac", "atac->rna")}
        measured = {"measured rna": {**scores, "AMI": [0.6, 0.6]}}
        return {
            "data": "d", "modalities": ["rna", "atac"], "n_train": 8, "n_test": 2, "setting": {},
            "score_seeds": [0, 1], "machine": {"cpu": "c", "cores": 2, "torch": "t"},
            "models": {f"butterfly seed {seed}": {"model_seed": seed}},
            "scores": {"measured": measured, "kNN": knn,
                       f"butterfly seed {seed}": {d: scores for d in ("rna->atac", "atac->rna")}},
        }  # fmt: skip

    paths = []
    for seed, ami in ((0, 0.55), (1, 0.57)):
        paths.append(tmp_path / f"{seed}.json")
        paths[-1].write_text(json.dumps(part(seed, ami)))
    merged = scoring_seeds.merge(paths)
    assert set(merged["models"]) == {"butterfly seed 0", "butterfly seed 1"}
    text = scoring_seeds.table(merged)
    # model means 0.56 and 0.58 against kNN's 0.56: both reach it; their mean is 0.57
    assert "**0.570 ± 0.010** (2 of 2 reach kNN's 0.560)" in text
    other = part(2, 0.5)
    other["scores"]["kNN"]["rna->atac"]["AMI"] = [0.1, 0.1]
    paths.append(tmp_path / "2.json")
    paths[-1].write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="kNN scores differ"):
        scoring_seeds.merge(paths)


def test_fit_scale_runs_small_and_reports_sparse_memory(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import json
    import sys

    import fit_scale

    args = ["fit_scale.py", "--cells", "600", "--genes", "300", "--peaks", "2000", "--threads", "1",
            "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", args)
    threads = torch.get_num_threads()
    try:
        fit_scale.main()
    finally:
        torch.set_num_threads(threads)  # the script sets torch's threads; later tests train on the default
    result = json.loads((tmp_path / "fit_scale.json").read_text())
    steps = [s["step"] for s in result["steps"]]
    assert (
        steps[0].startswith("Butterfly") and steps[1].startswith("fit") and steps[2].startswith("translate")
    )
    assert all(s["seconds"] >= 0 and s["peak_rss_gb"] > 0 for s in result["steps"])
    assert set(result["seconds_per_epoch"]) == {"pretrain rna", "pretrain atac", "integrative"}
    # every peak drawn in 3% of cells passes the 0.5% filter; the model keeps them as CSR, far below dense
    assert result["model_features"]["atac"] > 1900
    assert result["model_csr_gb"]["atac"] < result["dense_gb"]["atac"] / 10


def test_validation_scores_script_compares_each_feature_with_its_test_cells(monkeypatch, cite):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import validation_scores

    rna, adt = cite
    model = bf.Butterfly(rna[:400], adt[:400], modalities=("rna", "adt"), seed=0, device="cpu")
    model.fit(pretrain_epochs=2, epochs=3, progress=False)
    row = validation_scores.score_direction(model, "rna", "adt", rna[400:], adt[400:])
    assert row["features"] == 134 and -1 <= row["correlation"] <= 1
    bins = [v for k, v in row.items() if k.startswith("bin") and v]
    assert sum(b["features"] for b in bins) == row["features"]
    assert row["validation r"] == pytest.approx(np.nanmean(model.validation_scores_["adt"]))


def test_integration_script_scores_every_embedding(monkeypatch, cite):
    """Its rows: each measured modality alone is the model's preprocessing reduced as ``bf.integrate``
    reduces one block; kNN's translations are joined the same way as the model's."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import integration

    rna, adt = cite
    model = bf.Butterfly(rna[:400], adt[:400], modalities=("rna", "adt"), seed=0, device="cpu")
    model.fit(pretrain_epochs=2, epochs=3, progress=False)
    measured = {"rna": rna[400:], "adt": adt[400:]}
    rows = integration.score_cells(model, measured, runs=1)
    assert list(rows) == [
        "measured rna alone", "measured adt alone", "measured rna + measured adt",
        "measured rna + translated adt", "translated rna + measured adt", "translated rna + translated adt",
    ]  # fmt: skip
    assert all(-1 <= r["AMI"] <= 1 and -1 <= r["ARI"] <= 1 for r in rows.values())  # chance-adjusted
    assert rows["measured adt alone"]["AMI"] > 0.3  # 200 bone-marrow cells: proteins separate cell types
    knn = KNNTranslator(rna[:400], adt[:400], modalities=("rna", "adt"))
    knn_rows = integration.score_knn(knn, model, measured, runs=1)
    assert list(knn_rows) == ["measured rna + kNN-translated adt", "kNN-translated rna + measured adt"]
