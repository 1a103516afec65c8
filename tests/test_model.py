import pickle
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import butterfly as bf
from butterfly import ButterflyInputError, metrics
from butterfly.module._network import DRAW_BLOCK, latent_noise
from butterfly.train._trainer import Trainer


def test_losses_fall(trained):
    history = trained.history_
    for phase in ("pretrain rna", "pretrain atac", "integrative"):
        part = history[history["phase"] == phase]
        assert part["val_recon"].min() < 0.9 * part["val_recon"].iloc[0], phase
        assert part["train_recon"].iloc[-3:].mean() < part["train_recon"].iloc[0], phase


def test_training_leaves_the_blocked_layers_in_user_order(trained):
    from butterfly.module._layers import _Blocked

    layers = [m for m in trained.network.modules() if isinstance(m, _Blocked)]
    assert len(layers) == 2 and not any(layer.chromosome_io for layer in layers)
    # the shipped peaks interleave chromosomes, so training did run on reordered columns
    assert not layers[0].sorted_already and "atac" in trained.network.chromosome_orders()


def test_validation_records_each_translation_term(trained):
    part = trained.history_[trained.history_["phase"] == "integrative"]
    terms = part[["val_rna_to_rna", "val_atac_to_rna", "val_atac_to_atac", "val_rna_to_atac"]]
    assert np.isfinite(terms.to_numpy()).all()
    # the stopping criterion is their weighted sum (w_rna = 1, w_atac = 2)
    weighted = (
        terms["val_rna_to_rna"]
        + terms["val_atac_to_rna"]
        + 2 * (terms["val_atac_to_atac"] + terms["val_rna_to_atac"])
    )
    np.testing.assert_allclose(weighted, part["val_recon"], rtol=1e-5)


def test_atac_to_rna_recovers_cell_types_better_than_measured_atac(trained, snare_split):
    _, _, rna_test, atac_test = snare_split
    labels = rna_test.obs["cell_type"].to_numpy()
    translated = trained.translate(atac_test, source="atac", target="rna")
    measured_atac = trained.preprocessors["atac"].transform(atac_test).X
    ami_translated = metrics.cell_heterogeneity(translated.X, labels)["AMI"]
    ami_measured = metrics.cell_heterogeneity(measured_atac, labels)["AMI"]
    # Measured SNARE-seq ATAC barely separates cell types (AMI ~0.01 here); a 20-nearest-neighbour translator
    # reaches 0.07 on this split, and this short training 0.13-0.19. The translation must clearly beat both.
    assert ami_translated > ami_measured + 0.08
    assert ami_translated > 0.10


def test_translate_output_layout(trained, snare_split):
    _, _, rna_test, atac_test = snare_split
    out = trained.translate(atac_test, source="atac", target="rna")
    assert out.shape == (atac_test.n_obs, rna_test.n_vars)
    assert list(out.var_names) == list(rna_test.var_names)  # all 1,677 genes are HVGs here, original order
    assert list(out.obs_names) == list(atac_test.obs_names) and "cell_type" in out.obs
    assert out.obsm["X_butterfly"].shape == (atac_test.n_obs, 128)
    assert np.all(out.X[(out.X > 0)] >= 1e-4)  # small values zeroed
    atac_out = trained.translate(rna_test, source="rna", target="atac")
    assert list(atac_out.var_names) == list(trained.preprocessors["atac"].features_)
    assert {"chrom", "start", "end"} <= set(atac_out.var.columns)
    assert np.all((atac_out.X >= 0) & (atac_out.X <= 1))


def test_translated_rna_is_analysed_as_measured_rna(trained, snare_split):
    """scanpy takes translated RNA as log-normalised (as sc.pp.log1p marks it), and the marker genes it finds
    per cell type (of 5 or more cells) in the translation (Wilcoxon, top 50) overlap those of the measured
    RNA far above chance (50 x 50 / 1,677 genes = 1.5 per type)."""
    import warnings

    import scanpy as sc

    _, _, rna_test, atac_test = snare_split
    translated = trained.translate(atac_test, source="atac", target="rna", progress=False)
    assert translated.uns["log1p"] == {"base": None}  # what sc.pp.log1p leaves, and scanpy reads
    measured = trained.preprocessors["rna"].transform(rna_test)
    cell_types = rna_test.obs["cell_type"].astype(str)
    common = cell_types.isin(cell_types.value_counts().index[cell_types.value_counts() >= 5]).to_numpy()
    translated, measured = translated[common].copy(), measured[common].copy()
    overlaps = []
    for data in (translated, measured):
        data.obs["cell_type"] = pd.Categorical(cell_types[common].to_numpy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scanpy's notes on fragmented frames and small groups
            sc.tl.rank_genes_groups(data, "cell_type", method="wilcoxon", n_genes=50)
    for cell_type in translated.obs["cell_type"].cat.categories:
        top = [set(d.uns["rank_genes_groups"]["names"][cell_type]) for d in (translated, measured)]
        overlaps.append(len(top[0] & top[1]))
    print("marker overlap per type", overlaps)
    assert np.mean(overlaps) > 6


def test_atac_counts_and_binary_outputs(trained, snare_split):
    _, _, rna_test, atac_test = snare_split
    prob = trained.translate(
        rna_test[:50], source="rna", target="atac", atac_output="tfidf"
    ).X  # the decoder's
    counts = trained.translate(rna_test[:50], source="rna", target="atac", atac_output="counts").X
    pre = trained.preprocessors["atac"]
    np.testing.assert_allclose(counts, pre.inverse_transform(prob), rtol=1e-5)
    assert counts.dtype == np.float32
    np.testing.assert_allclose(counts, pre.inverse_transform(prob.astype(np.float64)), rtol=1e-5)
    with pytest.raises(ButterflyInputError, match="one finite, non-negative open-peak count per cell"):
        trained.translate(
            rna_test[:50], source="rna", target="atac", atac_output="counts", library_size=[1.0, 2.0]
        )
    binary = trained.translate(rna_test[:50], source="rna", target="atac", atac_output="binary").X
    np.testing.assert_array_equal(binary, bf.binarize_accessibility(counts))
    with pytest.raises(ButterflyInputError, match="applies to an ATAC target"):
        trained.translate(atac_test[:5].copy(), source="atac", target="rna", atac_output="counts")


@pytest.mark.parametrize("form", ["probability", "counts", "binary"])
def test_translate_to_h5ad_writes_what_translate_returns(trained, snare_split, tmp_path, form):
    _, _, rna_test, _ = snare_split
    expected = trained.translate(rna_test, source="rna", target="atac", atac_output=form, batch_size=37)
    path = tmp_path / "out.h5ad"
    trained.translate_to_h5ad(rna_test, path, source="rna", target="atac", atac_output=form, batch_size=37)
    written = ad.read_h5ad(path)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    assert isinstance(written.X, np.ndarray) and written.X.dtype == np.float32
    np.testing.assert_array_equal(written.X, expected.X)
    # Another batch size gives the same values to float32 rounding, not always bit for bit: products of
    # other shapes put other elements in the tails of vectorised loops (seen: 1 value in 2.4 million, 1 ulp)
    other = trained.translate(rna_test, source="rna", target="atac", atac_output=form)
    if form == "binary":  # a 1-ulp difference could flip a value sitting on its threshold
        assert np.mean(written.X != other.X) < 1e-5
    else:
        np.testing.assert_allclose(written.X, other.X, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(written.obsm["X_butterfly"], expected.obsm["X_butterfly"])
    # (h5ad stores string columns as categories)
    pd.testing.assert_frame_equal(written.var.astype(str), expected.var.astype(str))
    pd.testing.assert_frame_equal(written.obs.astype(str), expected.obs.astype(str))
    assert written.uns["butterfly"]["output"] == form


def test_latent_noise_blocks():
    """Draws are per row: any split of the rows gives the same draws; kept blocks are reused, then dropped."""
    cpu, whole = torch.device("cpu"), latent_noise(3, 0, 600, 2, 4, torch.device("cpu"))
    assert whole.shape == (2, 600, 4) and abs(float(whole.std()) - 1) < 0.05
    blocks: dict = {}
    parts = [latent_noise(3, a, min(a + 7, 600), 2, 4, cpu, blocks) for a in range(0, 600, 7)]
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=0, atol=0)
    assert sorted(blocks) == [599 // DRAW_BLOCK]  # earlier blocks dropped as the batches moved past them
    torch.testing.assert_close(latent_noise(3, 250, 260, 2, 4, cpu), whole[:, 250:260], rtol=0, atol=0)
    assert not torch.equal(latent_noise(4, 0, 600, 2, 4, cpu), whole)  # another seed, other draws


def test_translations_averaged_over_latent_draws(trained, snare_split, tmp_path):
    _, _, rna_test, _ = snare_split
    cells = rna_test[:120]
    mean = trained.translate(cells, source="rna", target="atac", atac_output="tfidf", n_samples=0).X
    np.testing.assert_array_equal(
        mean, trained.translate(cells, source="rna", target="atac", atac_output="tfidf").X
    )
    sampled = trained.translate(
        cells, source="rna", target="atac", atac_output="tfidf", n_samples=8, batch_size=50
    )
    again = trained.translate(
        cells, source="rna", target="atac", atac_output="tfidf", n_samples=8, batch_size=50
    )
    np.testing.assert_array_equal(sampled.X, again.X)  # seeded by the model's seed
    np.testing.assert_array_equal(sampled.obsm["X_butterfly"], again.obsm["X_butterfly"])
    assert sampled.X.shape == mean.shape and (sampled.X >= 0).all() and (sampled.X <= 1).all()
    # by hand: the mean of 8 outputs decoded from mean + sd * noise, with each row's noise from latent_noise
    net = trained.network
    x = torch.as_tensor(trained.preprocessors["rna"].transform(cells).X.toarray())
    mean_z, logvar = net.translator.encode(net.encoders["rna"](x), "rna")
    noise = latent_noise(trained.seed, 0, 120, 8, net.translator.latent, torch.device("cpu"))
    decoded = [net.activate("atac", net.decoders["atac"](net.translator(mean_z + (logvar / 2).exp() * e, "atac")))
               for e in noise]  # fmt: skip
    expected = torch.stack(decoded).mean(0).detach()
    expected[expected < 1e-4] = 0
    np.testing.assert_allclose(sampled.X, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(sampled.X - mean).mean() > 1e-4  # the draws move the output
    # a row's draws do not depend on the batch it is translated in (blocks of DRAW_BLOCK rows, crossed here)
    assert DRAW_BLOCK < 120 * 3
    many = ad.concat([cells, cells, cells], index_unique="-")
    big = trained.translate(many, source="rna", target="atac", atac_output="tfidf", n_samples=8).X
    for batch_size in (7, 256, 300):
        np.testing.assert_allclose(
            trained.translate(many, source="rna", target="atac", atac_output="tfidf", n_samples=8, batch_size=batch_size).X, big,
            rtol=1e-5, atol=1e-6,
        )  # fmt: skip
    np.testing.assert_allclose(big[:120], sampled.X, rtol=1e-5, atol=1e-6)
    assert np.abs(big[120:240] - big[:120]).mean() > 1e-4  # other rows, other draws
    path = tmp_path / "sampled.h5ad"
    trained.translate_to_h5ad(
        many, path, source="rna", target="atac", atac_output="tfidf", n_samples=8, batch_size=33
    )
    np.testing.assert_allclose(ad.read_h5ad(path).X, big, rtol=1e-5, atol=1e-6)
    with pytest.raises(ButterflyInputError, match="n_samples must be a whole number of at least 0, got -1"):
        trained.translate(cells, source="rna", target="atac", atac_output="tfidf", n_samples=-1)


def test_feature_shuffled_input_gives_same_translation(trained, snare_split):
    _, _, rna_test, atac_test = snare_split
    shuffled = atac_test[:, np.random.RandomState(3).permutation(atac_test.n_vars)].copy()
    a = trained.translate(atac_test, source="atac", target="rna").X
    b = trained.translate(shuffled, source="atac", target="rna").X
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip_is_exact(trained, snare_split, tmp_path):
    _, _, rna_test, atac_test = snare_split
    trained.save(tmp_path / "model")
    loaded = bf.Butterfly.load(tmp_path / "model", device="cpu")
    for source, target, data in (("atac", "rna", atac_test), ("rna", "atac", rna_test)):
        np.testing.assert_array_equal(
            trained.translate(data, source=source, target=target).X,
            loaded.translate(data, source=source, target=target).X,
        )
    assert loaded.history_ is not None and len(loaded.history_) == len(trained.history_)
    assert list(loaded.validation_scores_) == ["rna"]  # per-gene; ATAC targets get no per-peak score
    np.testing.assert_array_equal(loaded.validation_scores_["rna"], trained.validation_scores_["rna"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        trained.save(tmp_path / "model")
    trained.save(tmp_path / "model", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folders left behind


def test_summary_says_what_the_model_trained_on_and_survives_saving(trained, snare_split, tmp_path):
    """The cells, the setting and each phase's epochs as the history has them; the same text after loading,
    with the versions the model was saved with."""
    rna, _, _, _ = snare_split
    text = trained.summary()
    lines = text.splitlines()
    assert lines[1] == "modalities: rna (1,677 genes) <-> atac (5,997 peaks on 20 chromosomes)"
    assert lines[2] == "pairing: measured pairs (scButterfly-B)"
    train, validation = trained.training_data_["training_pairs"], trained.training_data_["validation_pairs"]
    assert train + validation == rna.n_obs == 1600 and validation == 320  # validation_fraction 0.2
    assert f"trained on: 1,600 rna, 1,600 atac cells; {train:,} training pairs, 320 validation pairs" in text
    assert "\nsetting: paper defaults with pretrain_epochs=15, epochs=50\n" in text
    history = trained.history_
    for phase in ("pretrain rna", "pretrain atac", "integrative"):
        rows = history[history["phase"] == phase]
        best = int(rows["best_epoch"].iloc[-1])
        loss = float(rows.loc[rows["epoch"] == best, "val_recon"].iloc[0])  # the early-stopping criterion
        limit = 50 if phase == "integrative" else 15
        assert (
            f"{phase}: {len(rows)} of {limit} epochs, kept epoch {best} (validation reconstruction loss {loss:.4f})"
            in text
        )
    assert "rna: " in text and "features translate with validation r above 0.3" in text
    assert "saved with" not in text  # built here, not loaded
    with warnings.catch_warnings():  # the versions are read the way no release deprecates (anndata 0.13)
        warnings.simplefilter("error", FutureWarning)
        trained.save(tmp_path / "model")
    loaded = bf.Butterfly.load(tmp_path / "model", device="cpu")
    assert loaded.training_data_ == trained.training_data_
    assert loaded.summary().startswith(text)
    versions = loaded.summary().splitlines()[-1]
    assert versions.startswith("saved with: butterfly ") and f"torch {torch.__version__}" in versions
    untrained = bf.Butterfly(rna[:50], snare_split[1][:50], seed=0).summary()
    assert untrained.startswith("butterfly model, not trained") and "epochs" not in untrained


def test_overwrite_replaces_only_a_saved_model(trained, tmp_path):
    """Saving replaces the folder, so a folder of the user's is never deleted, even with overwrite=True."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.h5ad").write_text("the user's data")
    with pytest.raises(bf.ButterflyInputError, match="not a saved butterfly model, so it is not replaced"):
        trained.save(project, overwrite=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(bf.ButterflyInputError, match="not a saved butterfly model"):
        trained.save(tmp_path / "notes.txt", overwrite=True)
    assert (project / "data.h5ad").read_text() == "the user's data" and (tmp_path / "notes.txt").is_file()
    (tmp_path / "empty").mkdir()
    trained.save(tmp_path / "empty")  # an empty folder is filled without overwrite
    assert (tmp_path / "empty" / "config.json").is_file()


def test_version_2_model_files_still_load(trained, snare_split, tmp_path):
    """Format 2 stored the encoders' input layers as nn.Linear's [out, in] weight; loading transposes them."""
    import json

    import torch

    _, _, rna_test, atac_test = snare_split
    trained.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["version"] = 2
    params = config.pop("init_params")  # before format 4, the constructor's arguments had keys of their own
    config.update(
        {key: params[key] for key in ("modalities", "seed", "validation_fraction", "pairing", "label_key")}
    )
    config["network"] = {key: params[key] for key in ("dropout", "batch_norm", "discriminator_layers")}
    config.update(cluster_backend=params["cluster_backend"], cluster_options=params["cluster_options"])
    del config["training_data"], config["saved_with"]  # absent from files saved before butterfly kept them
    del config["training"]["cuda_graphs"]  # a setting added after the file was saved: its default
    config["training"]["a_later_setting"] = 1  # one this release does not know: left out
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    state = torch.load(tmp_path / "model" / "weights.pt", weights_only=True)
    key = "encoders.rna.net.0.0.weight"
    assert state[key].shape == (1677, 256)  # input-major since format 3
    state[key] = state[key].t().contiguous()
    torch.save(state, tmp_path / "model" / "weights.pt")
    (tmp_path / "model" / "validation_scores.npz").unlink()  # models saved before them have no scores
    loaded = bf.Butterfly.load(tmp_path / "model", device="cpu")
    assert {**loaded.init_params_, "device": "auto"} == {**trained.init_params_, "device": "auto"}
    np.testing.assert_array_equal(
        trained.translate(rna_test, source="rna", target="atac").X,
        loaded.translate(rna_test, source="rna", target="atac").X,
    )
    assert loaded.validation_scores_ is None
    assert loaded.training_config == trained.training_config
    assert "validation_pearson" not in loaded.translate(atac_test, source="atac", target="rna").var
    summary = loaded.summary()  # says what the file holds, and no more
    assert (
        "integrative: 50 of 50 epochs" in summary
        and "trained on" not in summary
        and "saved with" not in summary
    )


def test_model_file_cannot_run_code_on_load(trained, tmp_path):
    trained.save(tmp_path / "model")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "model" / "weights.pt").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(
        bf.ModelFileError, match="weights.pt: refused: it holds Python objects besides tensors"
    ):
        bf.Butterfly.load(tmp_path / "model", device="cpu")
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:.*have no open peak among the model's")  # cells of the 1,000-peak subset
def test_peaks_called_apart_are_matched_by_overlap(trained, snare_split):
    """The test cells' real peaks as another peak calling might give them: moved by a base, one in ten split
    in two halves, Ensembl's chromosome names, and peaks the model lacks. Matched by coordinates they are
    refused with the fix named; matched by overlap they translate as the original peaks do."""
    _, _, _, atac = snare_split
    peaks = bf.parse_peaks(atac.var)
    split = np.arange(atac.n_vars) % 10 == 0
    middle = (peaks.start + peaks.end) // 2
    chrom = np.array([c.removeprefix("chr") for c in peaks.chrom])
    starts = np.concatenate([peaks.start, middle[split]]) + 1
    ends = np.concatenate([np.where(split, middle, peaks.end), peaks.end[split]]) + 1
    names = [
        f"{c}:{s}-{e}" for c, s, e in zip(np.concatenate([chrom, chrom[split]]), starts, ends, strict=True)
    ]
    names += ["1:1-50", "2:7-60"]  # before any peak of the model
    X = sp.hstack([atac.X, atac.X[:, np.flatnonzero(split)], sp.csr_matrix((atac.n_obs, 2))]).tocsr()
    called = ad.AnnData(X=X, obs=atac.obs.copy(), var=pd.DataFrame(index=names))
    with pytest.raises(ButterflyInputError, match="Only 0 of .* peak_matching='overlap'"):
        trained.translate(called, source="atac", target="rna")
    expected = trained.translate(atac, source="atac", target="rna", progress=False)
    got = trained.translate(called, source="atac", target="rna", peak_matching="overlap", progress=False)
    np.testing.assert_array_equal(got.X, expected.X)
    assert list(got.obs_names) == list(atac.obs_names)
    with pytest.warns(UserWarning, match=r"Only \d+ of the model's \d+ peaks overlap a peak of the input"):
        few = called[:, :1000]
        trained.latent(few[np.asarray(few.X.sum(axis=1)).ravel() > 0], "atac", peak_matching="overlap")
    elsewhere = called.copy()
    elsewhere.var_names = [
        f"{n.split(':')[0]}:{i * 1000 + 10**9}-{i * 1000 + 10**9 + 500}" for i, n in enumerate(names)
    ]
    with pytest.raises(ButterflyInputError, match="None of the input's .* overlaps .* same genome build"):
        trained.latent(elsewhere, "atac", peak_matching="overlap")
    with pytest.raises(ButterflyInputError, match="the rna modality has no peaks"):
        trained.translate(atac, source="rna", target="atac", peak_matching="overlap")


def test_no_overlapping_features_is_refused(trained, snare_split):
    _, _, rna_test, _ = snare_split
    renamed = rna_test.copy()
    renamed.var_names = [f"gene{i}" for i in range(renamed.n_vars)]
    with pytest.raises(ButterflyInputError, match=r"Only 0 of the 1677 rna features"):
        trained.translate(renamed, source="rna", target="atac")
    renamed.var["symbol"] = rna_test.var_names.to_numpy()  # symbols in a column, IDs as names (10x style)
    with pytest.raises(ButterflyInputError, match=r"var\['symbol'\] holds the fitted names: use it"):
        trained.translate(renamed, source="rna", target="atac")
    human_style = rna_test.copy()  # the mouse genes as a human dataset would name them
    human_style.var_names = human_style.var_names.str.upper()
    with pytest.raises(ButterflyInputError, match=r"1677 of them match when letter case is ignored.*species"):
        trained.translate(human_style, source="rna", target="atac")


def test_unknown_modality_names(trained, snare_split):
    with pytest.raises(ButterflyInputError, match="knows \\['rna', 'atac'\\]"):
        trained.translate(snare_split[2], source="protein", target="rna")


def test_same_seed_reproduces_training_and_inputs_untouched(multiome):
    rna, atac = multiome
    before = rna.X.copy(), atac.X.copy(), rna.obs.copy()
    outputs = []
    for _ in range(2):
        model = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=7, device="cpu")
        model.fit(pretrain_epochs=2, epochs=2, progress=False)
        outputs.append(model.translate(atac, source="atac", target="rna").X)
    np.testing.assert_array_equal(outputs[0], outputs[1])
    other = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=8, device="cpu")
    other.fit(pretrain_epochs=2, epochs=2, progress=False)
    assert not np.array_equal(outputs[0], other.translate(atac, source="atac", target="rna").X)
    assert (rna.X != before[0]).nnz == 0 and (atac.X != before[1]).nnz == 0
    assert rna.obs.equals(before[2])


def test_backed_anndata_trains_and_translates_as_in_memory(multiome, tmp_path):
    """AnnData opened with ``backed="r"`` (its X left on disk): the same model and translations."""
    rna, atac = multiome
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    backed = [ad.read_h5ad(tmp_path / f"{name}.h5ad", backed="r") for name in ("rna", "atac")]
    outputs = []
    for data in (backed, (rna, atac)):
        model = bf.Butterfly(*data, seed=0, device="cpu")
        model.fit(pretrain_epochs=1, epochs=1, progress=False)
        outputs.append(model.translate(data[1], source="atac", target="rna", progress=False).X)
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert outputs[0].shape == (500, 600)


def test_closed_adversarial_gate_trains_as_no_adversarial_term(multiome):
    """A gate that never opens gives exactly the training without the adversarial term (weight 0); the
    paper's always-on term changes it. The history records how often the gate let the term through."""
    rna, atac = multiome

    def run(**options):
        model = bf.Butterfly(rna, atac, seed=3, device="cpu")
        history = model.fit(pretrain_epochs=1, epochs=2, progress=False, **options)
        applied = history.loc[history["phase"] == "integrative", "train_adversarial_applied"].to_numpy()
        return model.translate(atac, source="atac", target="rna").X, applied

    closed, closed_applied = run(adversarial_gate=-1.0)
    without, _ = run(adversarial_gate=None, adversarial_weight=0.0)
    always, always_applied = run(adversarial_gate=None)
    np.testing.assert_array_equal(closed, without)
    assert not np.array_equal(closed, always)
    assert (closed_applied == 0).all() and (always_applied == 1).all()


def test_weight_average_is_an_exponential_moving_average():
    from butterfly.train._trainer import _WeightAverage

    layer = torch.nn.Linear(3, 2)
    start = layer.weight.detach().clone()
    average = _WeightAverage(layer, halflife_steps=2.0)
    with torch.no_grad():
        layer.weight.add_(1.0)
    average.update()
    average.update()  # two steps of a two-step half-life: half of the way to the new weights
    live = {k: v.clone() for k, v in layer.state_dict().items()}
    with average.swapped():
        torch.testing.assert_close(layer.weight.detach(), start + 0.5)
    for name, value in layer.state_dict().items():
        assert torch.equal(value, live[name]), name  # the trained weights are back, bit for bit


def test_weight_averaging_keeps_the_average_and_trains_as_without(multiome):
    """With a weight average the weights train exactly as without it (same training losses), while
    validation, early stopping and the weights kept at the end are the average's."""
    rna, atac = multiome
    runs = {}
    for halflife in (0.0, 1.0):
        model = bf.Butterfly(rna, atac, seed=0, device="cpu")
        history = model.fit(pretrain_epochs=1, epochs=4, progress=False, weight_average_halflife=halflife)
        runs[halflife] = model, history[history["phase"] == "integrative"]
    (plain, plain_history), (averaged, averaged_history) = runs[0.0], runs[1.0]
    np.testing.assert_array_equal(plain_history["train_loss"], averaged_history["train_loss"])
    assert not np.array_equal(plain_history["val_recon"], averaged_history["val_recon"])
    best = averaged_history["best_epoch"].iloc[0]
    recorded = averaged_history.loc[averaged_history["epoch"] == best, "val_recon"].item()
    trainer = averaged._trainer(*averaged._training_pairs(), progress=False)
    with averaged.network.chromosome_io(), torch.no_grad():
        averaged.network.eval()
        assert trainer._validate_integrative()["recon"] == pytest.approx(recorded, rel=1e-6)
    assert not np.array_equal(
        plain.translate(atac, source="atac", target="rna").X,
        averaged.translate(atac, source="atac", target="rna").X,
    )


def test_bfloat16_training_learns_and_stays_close_to_float32(multiome):
    rna, atac = multiome
    runs = {}
    for precision in ("float32", "bfloat16"):
        model = bf.Butterfly(rna, atac, seed=0, device="cpu")
        history = model.fit(pretrain_epochs=6, epochs=3, progress=False, precision=precision)
        pretrain = history[history["phase"] == "pretrain rna"]["val_recon"].to_numpy()
        assert np.isfinite(history["val_loss"]).all() and pretrain[-1] < pretrain[0]
        runs[precision] = model.translate(atac, source="atac", target="rna").X
    assert runs["bfloat16"].dtype == np.float32
    # bfloat16 keeps ~3 significant digits; after a few epochs the translations still agree closely
    correlation = np.corrcoef(runs["float32"].ravel(), runs["bfloat16"].ravel())[0, 1]
    assert correlation > 0.95
    with pytest.raises(ValueError, match=r"precision= must be"):
        bf.Butterfly(rna, atac, seed=0, device="cpu").fit(pretrain_epochs=1, epochs=1, precision="fp8")


def test_global_torch_rng_is_left_alone(multiome):
    rna, atac = multiome
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    bf.Butterfly(rna, atac, seed=0, device="cpu").fit(pretrain_epochs=1, epochs=1, progress=False)
    torch.testing.assert_close(torch.rand(3), expected)


def test_rna_adt_pair_trains_and_translates(cite):
    rna, adt = cite
    model = bf.Butterfly(rna, adt, modalities=("rna", "adt"), seed=0, device="cpu")
    assert model.specs["adt"].kl_weight == pytest.approx(1 / 150)
    history = model.fit(pretrain_epochs=5, epochs=5, progress=False)
    assert np.isfinite(history["val_loss"]).all()
    out = model.translate(rna[:20], source="rna", target="adt")
    assert out.shape == (20, 134) and list(out.var_names) == list(adt.var_names)


def _cite_split(cite):
    """The CITE-seq fixture split as translate_quality.py splits it: 480 training cells, 120 held out."""
    rna, adt = cite
    order = np.random.RandomState(0).permutation(rna.n_obs)
    test, train = np.sort(order[:120]), np.sort(order[120:])
    return rna[train].copy(), adt[train].copy(), rna[test].copy(), adt[test].copy()


@pytest.fixture(scope="module")
def cite_fast(cite):
    """``FAST_SETTING`` (with its BatchNorm recalibration) on the 480 training cells of :func:`_cite_split`."""
    rna, adt, _, _ = _cite_split(cite)
    model = bf.Butterfly(rna, adt, modalities=("rna", "adt"), seed=0, device="cpu")
    model.fit(**bf.FAST_SETTING, progress=False)
    return model


def test_validation_scores_say_which_features_translate_well(cite_fast, cite):
    """Each protein's (gene's) Pearson r on the 96 validation cells, held out of training, foretells its r on
    the 120 test cells: the two correlate at 0.92 for proteins and 0.87 for genes here, and the proteins in
    the validation scores' top quartile reach r 0.87 on the test cells against 0.62 for the rest (genes:
    0.67 against 0.20)."""
    _, _, rna_test, adt_test = _cite_split(cite)
    for source, target, cells, measured in (
        ("rna", "adt", rna_test, adt_test),
        ("adt", "rna", adt_test, rna_test),
    ):
        out = cite_fast.translate(cells, source=source, target=target, progress=False)
        validation = out.var["validation_pearson"].to_numpy()
        np.testing.assert_array_equal(validation, cite_fast.validation_scores_[target])
        test = metrics.feature_pearson(out.X, cite_fast.preprocessors[target].transform(measured).X)
        both = ~np.isnan(validation) & ~np.isnan(test)
        assert both.sum() > 0.9 * out.n_vars
        assert np.corrcoef(validation[both], test[both])[0, 1] > 0.75
        top = validation >= np.nanpercentile(validation, 75)
        assert np.nanmean(test[top]) > np.nanmean(test[~top]) + 0.2


def test_batch_norm_recalibration_lowers_validation_loss_and_lifts_rna_to_adt(cite, cite_fast, tmp_path):
    """On 480 CITE-seq cells (two steps per epoch at batch 256) the moving averages of training lag the
    weights, and the RNA input mask shifts the first layer's statistics; statistics re-estimated as
    translation runs lower the validation loss (0.743 -> 0.686 here) and lift the held-out cells' per-protein
    Pearson (0.639 -> 0.670). Everything but the BatchNorm statistics is the same training."""
    rna, adt, rna_test, adt_test = _cite_split(cite)
    model = bf.Butterfly(rna, adt, modalities=("rna", "adt"), seed=0, device="cpu")
    model.fit(**{**bf.FAST_SETTING, "recalibrate_batch_norm": False}, progress=False)
    models = {False: model, True: cite_fast}
    assert models[False].batch_norm_recalibration_ is None
    record = models[True].batch_norm_recalibration_
    assert record["kept"] and record["validation_loss_after"] < 0.97 * record["validation_loss_before"]
    before, after = (dict(models[r].network.named_buffers()) for r in (False, True))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("running_var"))
    trained_alike = zip(
        models[False].network.named_parameters(), models[True].network.parameters(), strict=True
    )
    for (name, p), q in trained_alike:
        assert torch.equal(p, q), name  # the same training
    truth = models[True].preprocessors["adt"].transform(adt_test).X
    pearson = {
        r: metrics.pearson_per_feature(m.translate(rna_test, source="rna", target="adt").X, truth)
        for r, m in models.items()
    }
    assert pearson[True] > pearson[False] + 0.01
    # the same statistics afterwards, on the model trained without: no second training
    assert models[False].recalibrate_batch_norm() == record
    for name, value in models[False].network.named_buffers():
        assert torch.equal(value, after[name]), name
    for target in ("rna", "adt"):  # scored again with the new statistics
        np.testing.assert_array_equal(
            models[False].validation_scores_[target], cite_fast.validation_scores_[target]
        )
    models[True].save(tmp_path / "m")
    loaded = bf.Butterfly.load(tmp_path / "m")
    assert loaded.batch_norm_recalibration_ == record
    again = loaded.translate(rna_test, source="rna", target="adt").X
    np.testing.assert_array_equal(again, models[True].translate(rna_test, source="rna", target="adt").X)
    with pytest.raises(RuntimeError, match=r"without training cells; load it with them to recalibrate"):
        loaded.recalibrate_batch_norm()
    with pytest.raises(bf.NotTrainedError):
        bf.Butterfly(rna, adt, modalities=("rna", "adt"), seed=0).recalibrate_batch_norm()


def test_batch_norm_recalibration_is_undone_when_validation_disagrees(multiome, monkeypatch):
    from butterfly.train._trainer import Trainer

    rna, atac = multiome
    model = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=0, device="cpu")
    model.fit(pretrain_epochs=1, epochs=2, progress=False)
    stats = {k: v.clone() for k, v in model.network.named_buffers()}
    losses = iter([1.0, 2.0])  # worse after re-estimation
    monkeypatch.setattr(Trainer, "_validate_integrative", lambda self, epoch=None: {"recon": next(losses)})
    model.fit(pretrain_epochs=0, epochs=0, progress=False, recalibrate_batch_norm=True)
    assert model.batch_norm_recalibration_ == {
        "validation_loss_before": 1.0, "validation_loss_after": 2.0, "kept": False
    }  # fmt: skip
    for name, value in model.network.named_buffers():
        assert torch.equal(value, stats[name]), name
    monkeypatch.undo()
    plain = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=0, device="cpu", batch_norm=False)
    plain.fit(pretrain_epochs=1, epochs=1, progress=False, recalibrate_batch_norm=True)
    assert plain.batch_norm_recalibration_ is None  # nothing to re-estimate


def test_mudata_like_input(multiome):
    rna, atac = multiome

    class FakeMuData:
        mod = {"rna": rna, "atac": atac}

    model = bf.Butterfly(FakeMuData(), modalities=("rna", "atac"))
    assert model.preprocessors["atac"].n_features > 0
    with pytest.raises(ButterflyInputError, match="no modality 'adt'"):
        bf.Butterfly(FakeMuData(), modalities=("rna", "adt"))
    FakeMuData.mod = {"gex": rna, "peaks": atac}
    fix = r"Butterfly\(mdata.mod\['gex'\], mdata.mod\['peaks'\], modalities=\('rna', 'atac'\)\)"
    with pytest.raises(ButterflyInputError, match=fix):
        bf.Butterfly(FakeMuData(), modalities=("rna", "atac"))


def test_translate_takes_the_source_modality_of_a_mudata(trained, snare_split):
    _, _, rna, atac = snare_split

    import mudata

    class FakeMuData:
        mod = {"rna": rna, "atac": atac}

    expected = trained.translate(atac, source="atac", target="rna", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mudata's notes on joining obs
        both = mudata.MuData({"rna": rna.copy(), "atac": atac.copy()})
        got = trained.translate(both, source="atac", target="rna", progress=False)["rna_translated"]
    np.testing.assert_array_equal(got.X, expected.X)
    pd.testing.assert_frame_equal(got.obs, atac.obs)
    np.testing.assert_array_equal(
        trained.latent(FakeMuData(), "rna", progress=False), trained.latent(rna, "rna")
    )
    FakeMuData.mod = {"gex": rna}
    with pytest.raises(ButterflyInputError, match=r"The MuData has no modality 'rna' \(it has \['gex'\]\)"):
        trained.translate(FakeMuData(), source="rna", target="atac")


def test_translate_refuses_a_bare_matrix(trained, snare_split):
    matrix = snare_split[3].X
    with pytest.raises(ButterflyInputError, match=r"must be an AnnData \(or a MuData\), got csr_matrix"):
        trained.translate(matrix, source="atac", target="rna")
    with pytest.raises(
        ButterflyInputError, match=r"anndata\.AnnData\(X, var=pandas\.DataFrame\(index=names\)\)"
    ):
        trained.latent(matrix, source="atac")


def test_mismatched_cells_refused_at_construction(multiome):
    rna, atac = multiome
    with pytest.raises(ButterflyInputError, match="different order"):
        bf.Butterfly(rna, atac[::-1].copy())
    with pytest.raises(ButterflyInputError, match="two different modalities"):
        bf.Butterfly(rna, rna, modalities=("rna", "rna"))
    with pytest.raises(ButterflyInputError, match=r"modalities must be a pair.*got 'rna'"):
        bf.Butterfly(rna, atac, modalities="rna")  # not read as the modalities 'r', 'n', 'a'


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"batch_size": 0}, "batch_size= must be a whole number of at least 2, got 0"),
        ({"epochs": 2.5}, "epochs= must be a whole number of at least 0, got 2.5"),
        ({"patience": 0}, "patience= must be a whole number of at least 1"),
        ({"lr": float("nan")}, "lr= must be a positive number, got nan"),
        ({"discriminator_lr": 0}, "discriminator_lr= must be a positive number"),
        ({"adversarial_weight": -1}, "adversarial_weight= must be a number of at least 0"),
        ({"adversarial_gate": float("inf")}, "adversarial_gate= must be None or a finite number"),
        ({"kl_reduction": "max"}, "kl_reduction= must be 'mean' or 'sum'"),
        (
            {"weight_average_halflife": -1},
            "weight_average_halflife= must be a number of at least 0",
        ),
        (
            {"recalibrate_batch_norm": "yes"},
            "recalibrate_batch_norm= must be True or",
        ),
    ],
)
def test_bad_training_settings_are_refused_before_training(multiome, option, message):
    rna, atac = multiome
    model = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=0)
    with pytest.raises(ButterflyInputError) as err:
        model.fit(**{"pretrain_epochs": 1, "epochs": 1, **option}, progress=False)
    assert message in str(err.value)
    assert not model.is_trained_ and model.history_ is None


def test_a_misspelt_training_option_is_named_with_its_likely_fix(multiome):
    rna, atac = multiome
    model = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=0)
    with pytest.raises(
        TypeError, match="unexpected keyword argument 'kl_warmup'. Did you mean 'kl_warmup_epochs'"
    ):
        model.fit(kl_warmup=3, progress=False)
    with pytest.raises(TypeError, match=r"'learning_rate'\. It takes: adversarial_gate, .*\blr\b"):
        model.fit(learning_rate=1e-3, progress=False)
    assert not model.is_trained_ and model.history_ is None
    with pytest.raises(
        TypeError, match="cluster_options \\(builtin backend\\) got an unexpected keyword argument 'n_comps'"
    ):
        bf.Butterfly(rna, atac, pairing="cluster", cluster_options={"n_comps": 20})


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"validation_fraction": 1.5}, "validation_fraction is the share of training cells held out"),
        ({"validation_fraction": 0}, "early stopping \\(which needs some\\), above 0"),
        ({"dropout": 1.0}, "dropout must be at least 0 and below 1"),
        ({"seed": "a"}, "seed must be a whole number"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"device": "mps"}, "device='mps': butterfly runs on 'cpu' or 'cuda' .* Use device='cpu'"),
        ({"device": "meta"}, "device='meta': butterfly runs on 'cpu' or 'cuda'"),
        ({"discriminator_layers": 5}, "discriminator_layers must be 2 .* or 1"),
        ({"batch_norm": "no"}, "batch_norm must be True or False"),
        ({"pairing": "cluster", "cluster_resolution": 0}, "cluster_resolution .* must be a positive number"),
    ],
)
def test_bad_model_options_are_refused(multiome, option, message):
    rna, atac = multiome
    with pytest.raises(ButterflyInputError, match=message):
        bf.Butterfly(rna, atac, modalities=("rna", "atac"), **option)


def test_too_few_cells_are_refused_by_fit(snare):
    rna, atac = snare
    model = bf.Butterfly(rna[:2], atac[:2], seed=0)
    with pytest.raises(ButterflyInputError, match="2 paired cells are too few to train on: .* at least 3"):
        model.fit(pretrain_epochs=1, epochs=1, progress=False)


def test_translate_refuses_a_bad_batch_size(trained, snare_split):
    _, _, rna_test, _ = snare_split
    with pytest.raises(ButterflyInputError, match="batch_size must be a whole number of at least 1, got 0"):
        trained.translate(rna_test, source="rna", target="atac", batch_size=0)


def test_untrained_model_refuses_to_translate(multiome):
    rna, atac = multiome
    with pytest.raises(RuntimeError, match="call fit"):
        bf.Butterfly(rna, atac).translate(atac, source="atac", target="rna")


def test_load_refuses_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved butterfly model"):
        bf.Butterfly.load(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ButterflyInputError, match="not a butterfly model"):
        bf.Butterfly.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ButterflyInputError, match="config.json: not JSON"):
        bf.Butterfly.load(tmp_path)


def test_new_cells_with_missing_genes_translate_with_warning(trained, snare_split):
    _, _, rna_test, _ = snare_split
    partial = rna_test[:, 200:].copy()
    with pytest.warns(UserWarning, match="200 of the 1677 rna features"):
        out = trained.translate(partial, source="rna", target="atac")
    assert out.shape[0] == partial.n_obs and np.isfinite(out.X).all()
    assert isinstance(out, ad.AnnData)


def test_loss_means_are_cell_weighted_and_read_once():
    from butterfly.train._trainer import _Means

    means = _Means("loss", "recon")
    batches = [(64, 1.5, 0.5), (64, 2.5, 1.0), (10, 4.0, 3.0)]  # the last minibatch is smaller
    for size, loss, recon in batches:
        means.add(size, torch.tensor(loss), torch.tensor(recon, dtype=torch.bfloat16))
    sizes = np.array([b[0] for b in batches])
    expected = {
        k: float(np.average([b[i + 1] for b in batches], weights=sizes))
        for i, k in enumerate(("loss", "recon"))
    }
    assert means.result() == pytest.approx(expected, abs=1e-12)
    assert means.n == 138
    assert _Means("loss").result() == {"loss": 0.0}  # no minibatch (an empty validation split)


def test_early_stopping_waits_for_the_kl_warm_up_to_end(multiome):
    """Within the warm-up the KL term is lighter than the objective trained for, so reconstruction is better
    than it will be: those epochs are not kept as the best and do not spend the patience."""
    from butterfly.train._trainer import _EarlyStopping

    module = torch.nn.Linear(2, 2)
    stopper = _EarlyStopping(module, patience=2, first_epoch=3)
    losses = [0.1, 0.2, 0.3, 0.5, 0.4, 0.45, 0.46]  # best in the warm-up, later ones worse
    stops = [stopper.step(loss, epoch) for epoch, loss in enumerate(losses)]
    assert stops == [False] * 6 + [True] and stopper.best_epoch == 4 and stopper.best == 0.4
    rna, atac = multiome
    model = bf.Butterfly(rna, atac, seed=0, device="cpu")
    history = model.fit(pretrain_epochs=6, epochs=8, patience=1, kl_warmup_epochs=4, progress=False)
    for phase, part in history.groupby("phase"):
        assert part["best_epoch"].iloc[0] >= 4 and len(part) >= 5, phase
    short = model.fit(pretrain_epochs=2, epochs=2, patience=1, kl_warmup_epochs=4, progress=False)
    assert (short["best_epoch"] == 1).all()  # fewer epochs than the warm-up: the last one is kept


def test_evaluation_clusters_the_latent_each_translation_starts_from(trained, snare_split):
    from butterfly.benchmark._baselines import KNNTranslator
    from butterfly.benchmark._evaluate import evaluate_translation

    rna, atac, rna_test, atac_test = snare_split
    results = evaluate_translation(trained, rna_test, atac_test, latent=True)
    profiles = {"measured rna", "measured atac", "rna->atac", "atac->rna"}
    assert set(results) == profiles | {"rna latent", "atac latent"}
    labels = rna_test.obs["cell_type"].to_numpy()
    latent = trained.latent(rna_test, "rna")
    expected = metrics.cell_heterogeneity(latent, labels)
    assert results["rna latent"] == pytest.approx(expected)
    # The RNA latent keeps most of the measured RNA's cell-type structure (AMI 0.48 vs 0.57 here), more than
    # the ATAC profiles decoded from it (0.37); the ATAC latent far less (0.17)
    assert results["rna latent"]["AMI"] > 0.7 * results["measured rna"]["AMI"]
    assert results["rna latent"]["AMI"] > results["rna->atac"]["AMI"]
    assert results["atac latent"]["AMI"] < results["rna latent"]["AMI"]
    assert "rna latent" not in evaluate_translation(trained, rna_test, atac_test)  # opt-in
    knn = KNNTranslator(rna, atac, modalities=("rna", "atac"))
    assert set(evaluate_translation(knn, rna_test, atac_test, latent=True)) == profiles  # no latent


def test_evaluation_can_average_clustering_scores_over_runs(snare_split):
    from butterfly.benchmark._baselines import KNNTranslator
    from butterfly.benchmark._evaluate import evaluate_translation

    rna, atac, rna_test, atac_test = snare_split
    knn = KNNTranslator(rna, atac, modalities=("rna", "atac"))
    runs = [evaluate_translation(knn, rna_test, atac_test, seed=s) for s in (0, 1)]
    averaged = evaluate_translation(knn, rna_test, atac_test, seed=0, scoring_runs=2)
    assert set(averaged) == set(runs[0])
    for profile, scores in averaged.items():
        for metric, value in scores.items():
            if metric in ("AMI", "ARI", "NMI", "HOM"):  # clustering: the mean of the two runs
                assert value == pytest.approx((runs[0][profile][metric] + runs[1][profile][metric]) / 2)
            else:  # AUROC, Pearson...: no clustering, unchanged
                assert value == runs[0][profile][metric]


def test_evaluation_refuses_unpaired_cells_and_bad_labels(trained, snare_split):
    """Scoring one cell's translation against another cell's profile would be a silent wrong answer."""
    _, _, rna_test, atac_test = snare_split
    with pytest.raises(ButterflyInputError, match="not the same cells"):
        bf.evaluate_translation(trained, rna_test[:100], atac_test[50:150])
    with pytest.raises(ButterflyInputError, match="different order"):
        bf.evaluate_translation(trained, rna_test, atac_test[::-1])
    with pytest.raises(ButterflyInputError, match=r"no column 'celltype'"):
        bf.evaluate_translation(trained, rna_test, atac_test, label_key="celltype")
    unlabelled = rna_test.copy()
    unlabelled.obs["cell_type"] = unlabelled.obs["cell_type"].astype(object)
    unlabelled.obs.iloc[0, unlabelled.obs.columns.get_loc("cell_type")] = None
    with pytest.raises(ButterflyInputError, match="1 missing label"):
        bf.evaluate_translation(trained, unlabelled, atac_test)
    with pytest.raises(ButterflyInputError, match="The atac data must be an AnnData, got csr_matrix"):
        bf.evaluate_translation(trained, rna_test, atac_test.X)


def test_a_gpu_number_beyond_the_machine_is_refused(monkeypatch):
    """Checked without a GPU: torch is told it has one."""
    import torch

    from butterfly.module._network import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ButterflyInputError, match=r"'cuda:3' was requested but torch sees 1 CUDA GPU\(s\)"):
        resolve_device("cuda:3")


def test_numpy_typed_options_save(multiome, tmp_path):
    """Options given as numpy scalars (from a config array, say) are stored as JSON numbers and booleans."""
    rna, atac = multiome
    options = {"batch_norm": np.bool_(True), "discriminator_layers": np.int64(2), "dropout": np.float64(0.1)}
    model = bf.Butterfly(
        rna, atac, seed=np.int64(3), validation_fraction=np.float64(0.2), cluster_options={"n": np.int64(5)},
        **options,
    )  # fmt: skip
    model.save(tmp_path / "model")
    loaded = bf.Butterfly.load(tmp_path / "model")
    assert loaded.network_options == {"dropout": 0.1, "batch_norm": True, "discriminator_layers": 2}
    assert (loaded.seed, loaded.validation_fraction, loaded.cluster_options) == (3, 0.2, {"n": 5})
    model.fit(pretrain_epochs=np.int64(1), epochs=np.int64(1), lr=np.float32(1e-3), progress=False)
    model.save(tmp_path / "model", overwrite=True)
    config = bf.Butterfly.load(tmp_path / "model").training_config
    assert (config.pretrain_epochs, config.epochs, config.lr) == (1, 1, pytest.approx(1e-3))


def test_training_and_translating_leave_the_users_data_as_it_was(multiome):
    rna, atac = (data.copy() for data in multiome)
    before = {name: data.copy() for name, data in (("rna", rna), ("atac", atac))}
    model = bf.Butterfly(rna, atac, seed=0)
    model.fit(pretrain_epochs=1, epochs=1, progress=False)
    model.translate(rna, source="rna", target="atac", atac_output="binary", progress=False)
    model.translate(atac, source="atac", target="rna", progress=False)
    bf.evaluate_translation(model, rna, atac)
    for name, data in (("rna", rna), ("atac", atac)):
        old = before[name]
        assert (data.X != old.X).nnz == 0 and data.X.dtype == old.X.dtype
        pd.testing.assert_frame_equal(data.obs, old.obs)
        pd.testing.assert_frame_equal(data.var, old.var)
        assert set(data.uns) == set(old.uns) and set(data.obsm) == set(old.obsm)
        assert set(data.layers) == set(old.layers)


def test_counts_in_a_layer_train_and_translate_as_counts_in_x(multiome, tmp_path):
    """scanpy's usual layout, normalised values in X and the counts in layers["counts"]: naming the layer gives
    the model and the translations that the counts in X give, and the user's X stays as it was."""
    rna, atac = multiome
    layered = rna.copy()
    layered.layers["counts"] = layered.X.copy()
    layered.X = layered.X * 0.37  # not counts
    before = layered.X.copy()
    with pytest.raises(ButterflyInputError, match="non-integer.*name it: layer='counts'"):
        bf.Butterfly(layered, atac, seed=3)
    with pytest.raises(
        ButterflyInputError, match=r"no layer 'counts', which .* both .* layer=\{'rna': 'counts'\}"
    ):
        bf.Butterfly(layered, atac, layer="counts", seed=3)  # one name is read from both
    with pytest.raises(ButterflyInputError, match="The atac data has no layers, so no layer 'counts'"):
        bf.Butterfly(layered, atac, layer={"atac": "counts"}, seed=3)
    with pytest.raises(ButterflyInputError, match=r"layer names modality 'adt'.*\['rna', 'atac'\]"):
        bf.Butterfly(layered, atac, layer={"adt": "counts"}, seed=3)
    models = []
    for first, layer in ((rna, None), (layered, {"rna": "counts"})):
        model = bf.Butterfly(first, atac, layer=layer, seed=3, device="cpu")
        model.fit(pretrain_epochs=2, epochs=2, progress=False)
        models.append(model)
    expected = models[0].translate(rna, source="rna", target="atac", progress=False)
    got = models[1].translate(layered, source="rna", target="atac", layer="counts", progress=False)
    np.testing.assert_array_equal(got.X, expected.X)
    pd.testing.assert_frame_equal(got.obs, layered.obs)
    models[1].translate_to_h5ad(layered, tmp_path / "atac.h5ad", source="rna", target="atac", layer="counts",
                                progress=False)  # fmt: skip
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "atac.h5ad").X, expected.X)
    np.testing.assert_array_equal(models[1].latent(layered, "rna", layer="counts", progress=False),
                                  expected.obsm["X_butterfly"])  # fmt: skip
    with pytest.raises(ButterflyInputError, match=r"has no layer 'raw'; its layers are 'counts'"):
        models[1].translate(layered, source="rna", target="atac", layer="raw")
    scores = bf.evaluate_translation(models[1], layered, atac, layer={"rna": "counts"})
    assert scores == bf.evaluate_translation(models[1], rna, atac)
    unpaired = bf.Butterfly.unpaired(layered, atac, layer={"rna": "counts"})
    np.testing.assert_array_equal(
        unpaired.preprocessors["rna"].features_, models[0].preprocessors["rna"].features_
    )
    # anndata 0.13 lists X among the layers, as None
    assert (layered.X != before).nnz == 0 and set(layered.layers) - {None} == {"counts"}


def test_counts_kept_in_raw_are_named(multiome):
    """scanpy's other habit, counts in adata.raw and normalised values in X: the refusal names adata.raw."""
    import scanpy as sc

    rna, atac = multiome
    logged = rna.copy()
    logged.raw = rna.copy()
    sc.pp.normalize_total(logged)
    sc.pp.log1p(logged)
    with pytest.raises(
        ButterflyInputError, match=r"non-integer.*adata\.raw holds whole numbers.*raw\.to_adata\(\)"
    ):
        bf.Butterfly(logged, atac)
    np.testing.assert_array_equal(
        bf.Butterfly(logged.raw.to_adata(), atac).preprocessors["rna"].features_,
        bf.Butterfly(rna, atac).preprocessors["rna"].features_,
    )
    logged.raw = logged  # raw holding normalised values too: no such hint
    with pytest.raises(ButterflyInputError, match="non-integer") as refusal:
        bf.Butterfly(logged, atac)
    assert "adata.raw" not in str(refusal.value)


def test_translations_carry_the_training_features_annotations(multiome, tmp_path):
    """Text columns of the training data's var (gene IDs, feature types) reach the translated AnnData, also
    from a saved model; numbers, mostly statistics of the training cells, do not (butterfly's own per-gene
    validation scores come last)."""
    rna, atac = multiome
    rna = rna.copy()
    rna.var["feature_types"] = pd.Categorical(["Gene Expression"] * rna.n_vars)
    rna.var["mean_counts"] = 1.5
    model = bf.Butterfly(rna, atac, seed=0)
    model.fit(pretrain_epochs=1, epochs=1, progress=False)
    genes = model.translate(atac, source="atac", target="rna", progress=False)
    assert list(genes.var.columns) == ["gene_ids", "feature_types", "validation_pearson"]
    assert list(genes.var["gene_ids"]) == list(rna.var.loc[genes.var_names, "gene_ids"])
    model.save(tmp_path / "model")
    again = bf.Butterfly.load(tmp_path / "model").translate(atac, source="atac", target="rna", progress=False)
    pd.testing.assert_frame_equal(again.var, genes.var)
    peaks = model.translate(rna, source="rna", target="atac", progress=False).var
    assert list(peaks.columns) == ["chrom", "start", "end"]
    assert list(peaks["start"]) == list(atac.var.loc[peaks.index, "start"])


def test_progress_bars_into_a_log_update_at_most_every_half_minute(multiome, capsys):
    """With standard error a file (capsys: not a terminal, as in a batch job's log), a fit writes each
    phase's bar when it starts and when it ends, not once per epoch (one copy of the bar each)."""
    rna, atac = multiome
    bf.Butterfly(rna, atac, seed=0, device="cpu").fit(pretrain_epochs=6, epochs=8)
    log = capsys.readouterr().err
    for phase in ("pretrain rna", "pretrain atac", "integrative"):
        assert 1 <= log.count(f"{phase}:") <= 2, (phase, log.count(f"{phase}:"))


def _interrupt_on_call(monkeypatch, number: int, before=None) -> None:
    """Make the ``number``-th integrative validation pass of the next fit raise KeyboardInterrupt (Ctrl-C);
    ``before(trainer)`` runs on the call before it."""
    validate, calls = Trainer._validate_integrative, []

    def patched(self, epoch=None):
        calls.append(epoch)
        if len(calls) == number:
            raise KeyboardInterrupt
        if len(calls) == number - 1 and before is not None:
            before(self)
        return validate(self, epoch)

    monkeypatch.setattr(Trainer, "_validate_integrative", patched)


def test_interrupted_fit_keeps_the_best_weights_and_the_history(multiome, monkeypatch):
    rna, atac = multiome
    model = bf.Butterfly(rna, atac, seed=0)
    _interrupt_on_call(monkeypatch, 4)
    with (
        pytest.raises(KeyboardInterrupt),
        pytest.warns(
            UserWarning,
            match=r"interrupted during integrative epoch 3\. The model translates with the weights of epoch",
        ),
    ):
        model.fit(pretrain_epochs=2, epochs=10, progress=False)
    monkeypatch.undo()
    history = model.history_
    assert model.is_trained_
    assert history["phase"].tolist() == ["pretrain rna"] * 2 + ["pretrain atac"] * 2 + ["integrative"] * 3
    integrative = history[history["phase"] == "integrative"].set_index("epoch")
    best = integrative["best_epoch"].iloc[0]
    assert best == integrative["val_recon"].idxmin()
    # the weights in the model are the best epoch's: its validation loss, recomputed
    trainer = model._trainer(*model._training_pairs(), progress=False)
    with model.network.chromosome_io(), torch.no_grad():
        assert trainer._validate_integrative()["recon"] == pytest.approx(
            integrative.loc[best, "val_recon"], rel=1e-6
        )
    assert not model.network.training and model.validation_scores_ is None
    out = model.translate(atac[:50], source="atac", target="rna", progress=False)
    assert out.shape == (50, rna.n_vars) and "validation_pearson" not in out.var


def test_interrupted_batch_norm_recalibration_leaves_the_statistics_as_trained(multiome, monkeypatch):
    rna, atac = multiome
    model = bf.Butterfly(rna, atac, seed=0)
    trained = {}

    def keep_statistics(trainer):
        trained.update({k: v.clone() for k, v in model.network.state_dict().items() if "running" in k})

    # two integrative epochs, then recalibration validates before (call 3) and after (call 4) re-estimating
    _interrupt_on_call(monkeypatch, 4, before=keep_statistics)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="during BatchNorm recalibration"):
        model.fit(pretrain_epochs=1, epochs=2, progress=False, recalibrate_batch_norm=True)
    state = model.network.state_dict()
    assert trained and all(torch.equal(state[k], v) for k, v in trained.items())
    assert model.is_trained_ and model.batch_norm_recalibration_ is None


def test_interrupted_pretraining_leaves_a_new_model_unable_to_translate(multiome, monkeypatch):
    rna, atac = multiome
    model = bf.Butterfly(rna, atac, seed=0)
    monkeypatch.setattr(Trainer, "integrate", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with (
        pytest.raises(KeyboardInterrupt),
        pytest.warns(UserWarning, match=r"during pretrain atac\. The translator had not started training"),
    ):
        model.fit(pretrain_epochs=1, epochs=2, progress=False)
    assert not model.is_trained_ and len(model.history_) == 2


def test_validation_scores_plot_sorts_features_and_refuses_translations_without_scores(
    trained, snare_split, tmp_path
):
    _, _, rna_test, atac_test = snare_split
    genes = trained.translate(atac_test, source="atac", target="rna", progress=False)
    figure = bf.pl.plot_validation_scores(genes, top=10, save=tmp_path / "scores.png")
    scores = genes.var["validation_pearson"].dropna()
    assert (tmp_path / "scores.png").stat().st_size > 0
    assert list(figure.scores.index[:10]) == list(scores.sort_values(ascending=False).index[:10])
    assert len(figure.scores) == len(scores) and figure.scores.is_monotonic_decreasing
    peaks = trained.translate(rna_test, source="rna", target="atac", progress=False)
    with pytest.raises(ButterflyInputError, match=r"var\['validation_pearson'\].*ATAC targets"):
        bf.pl.plot_validation_scores(peaks)


def test_validation_scores_use_cells_spread_over_the_data():
    from butterfly.model._butterfly import _spread_subset
    from butterfly.train._data import PairedRows

    pairs = PairedRows({"rna": np.arange(0, 10_000, 2), "atac": np.arange(1, 10_001, 2)})
    subset = _spread_subset(pairs, 2000)
    assert len(subset) == 2000 and subset.rows["rna"][0] == 0 and subset.rows["rna"][-1] == 9998
    np.testing.assert_array_equal(subset.rows["atac"], subset.rows["rna"] + 1)  # pairs stay pairs
    assert np.all(np.diff(subset.rows["rna"]) > 0) and np.ptp(np.diff(subset.rows["rna"])) <= 2
    assert _spread_subset(pairs, 6000) is pairs
