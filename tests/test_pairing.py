import sys

import numpy as np
import pytest

import butterfly as bf
from butterfly import ButterflyInputError
from butterfly.model._pairing import pairs_within_groups, unpaired_pairs, unpaired_sampling_sizes

NAMES = ("rna", "atac")


def test_label_pairs_stay_within_labels_and_triple_the_cells(snare):
    rna, _ = snare
    labels = rna.obs["cell_type"].astype(str).to_numpy()
    pairs = pairs_within_groups(labels, NAMES, seed=0)
    assert len(pairs) == 3 * rna.n_obs
    first, second = pairs.rows["rna"], pairs.rows["atac"]
    assert np.array_equal(labels[first], labels[second])  # no pair crosses a label
    assert np.array_equal(first[: rna.n_obs], second[: rna.n_obs])  # the measured pairs come first
    for r in (1, 2):  # each round is a within-label permutation: every cell used once per modality
        block = slice(r * rna.n_obs, (r + 1) * rna.n_obs)
        assert np.array_equal(np.sort(second[block]), np.arange(rna.n_obs))
    assert (first[rna.n_obs :] != second[rna.n_obs :]).mean() > 0.5  # really shuffled


def test_pairs_are_reproducible_by_seed():
    groups = np.repeat(["a", "b", "c"], 30)
    one, two = pairs_within_groups(groups, NAMES, seed=4), pairs_within_groups(groups, NAMES, seed=4)
    assert np.array_equal(one.rows["atac"], two.rows["atac"])
    assert not np.array_equal(one.rows["atac"], pairs_within_groups(groups, NAMES, seed=5).rows["atac"])


def test_cluster_pairs_stay_within_clusters(snare):
    rna, atac = snare
    model = bf.Butterfly(rna, atac, pairing="cluster", seed=0, device="cpu")
    train, validation = model._training_pairs()
    clusters = model.training_groups_
    assert len(model.training_cells_) == len(clusters)
    assert len(train) == 3 * len(clusters) and len(set(clusters)) > 10
    # map rows back to positions among the training cells to read their clusters
    cells = np.unique(train.rows["rna"])
    position = {c: i for i, c in enumerate(cells)}
    first = clusters[[position[c] for c in train.rows["rna"]]]
    second = clusters[[position[c] for c in train.rows["atac"]]]
    assert np.array_equal(first, second)
    assert not set(validation.rows["rna"]) & set(cells)  # validation cells never enter training pairs


def test_unpaired_sampling_sizes_hand_case():
    # first: a 6, b 2 (s^a = .75, .25); second: a 1, b 2, c 1 (s^b = .25, .5, .25); shared a, b
    first = ["a"] * 6 + ["b"] * 2
    second = ["a", "b", "b", "c"]
    sizes = unpaired_sampling_sizes(first, second)
    share_a, share_b = 0.75 + 0.25, 0.25 + 0.5
    n = (8 + 4) / 2
    assert sizes == {
        "a": round(share_a / (share_a + share_b) * n),
        "b": round(share_b / (share_a + share_b) * n),
    }
    pairs = unpaired_pairs(first, second, NAMES, seed=0)
    assert len(pairs) == sum(sizes.values())
    assert np.array_equal(np.asarray(first)[pairs.rows["rna"]], np.asarray(second)[pairs.rows["atac"]])
    assert "c" not in set(np.asarray(second)[pairs.rows["atac"]])


def test_unpaired_without_shared_labels_is_refused():
    with pytest.raises(ButterflyInputError, match="share no label"):
        unpaired_sampling_sizes(["a", "b"], ["c"])


def test_label_pairing_needs_the_label_column(multiome):
    rna, atac = multiome
    with pytest.raises(ButterflyInputError, match="no column 'celltype'"):
        bf.Butterfly(rna, atac, pairing="label", label_key="celltype")
    with pytest.raises(ButterflyInputError, match="pairing must be one of"):
        bf.Butterfly(rna, atac, pairing="type")


def test_variant_t_and_unpaired_train_end_to_end(multiome):
    rna, atac = multiome
    model = bf.Butterfly(rna, atac, pairing="label", seed=0, device="cpu")
    history = model.fit(pretrain_epochs=2, epochs=2, progress=False)
    assert np.isfinite(history["val_loss"]).all()
    half = rna.n_obs // 2
    unpaired = bf.Butterfly.unpaired(rna[:half].copy(), atac[half:].copy(), seed=0, device="cpu")
    unpaired.fit(pretrain_epochs=2, epochs=2, progress=False)
    # every cell of each side can be translated, including labels the other side lacks
    out = unpaired.translate(atac[half:], source="atac", target="rna")
    assert out.shape == (rna.n_obs - half, rna.n_vars) and np.isfinite(out.X).all()
    # per-gene validation scores need measured pairs: T's validation cells are, unpaired ones are not
    assert model.validation_scores_["rna"].shape == (rna.n_vars,) and unpaired.validation_scores_ is None
    assert "validation_pearson" not in out.var


def test_unknown_cluster_backend_is_refused(multiome):
    with pytest.raises(ButterflyInputError, match="cluster_backend must be one of"):
        bf.Butterfly(*multiome, pairing="cluster", cluster_backend="wnn")


def test_scvi_backend_without_scvi_tools_says_how_to_install(multiome, monkeypatch):
    monkeypatch.setitem(sys.modules, "scvi", None)  # makes `import scvi` fail as if not installed
    with pytest.raises(ButterflyInputError, match=r"pip install butterfly-omics\[scvi\]"):
        bf.Butterfly(*multiome, pairing="cluster", cluster_backend="scvi")


@pytest.mark.parametrize("data", ["multiome", "cite"])
def test_scvi_backend_clusters_and_pairs(data, request):
    """MultiVI (RNA+ATAC) / totalVI (RNA+ADT) latents, clustered; C pairs then stay within those clusters."""
    pytest.importorskip("scvi", reason="the scvi extra is not installed")
    from butterfly.model._pairing import leiden_groups
    from butterfly.model._scvi import scvi_latent

    first, second = request.getfixturevalue(data)
    kinds = ["rna", "atac" if data == "multiome" else "adt"]
    state = np.random.get_state()[1].copy()
    latent = scvi_latent([first, second], kinds, seed=0, max_epochs=3)
    assert latent.shape[0] == first.n_obs and np.isfinite(latent).all()
    assert np.array_equal(np.random.get_state()[1], state)  # the user's global RNG is restored
    again = scvi_latent([first, second], kinds, seed=0, max_epochs=3)
    np.testing.assert_allclose(latent, again, atol=1e-5)  # seeded
    clusters = leiden_groups(latent, resolution=3.0)
    assert len(set(clusters)) > 5
    pairs = pairs_within_groups(clusters, ("rna", kinds[1]), seed=0)
    assert len(pairs) == 3 * first.n_obs
    assert np.array_equal(clusters[pairs.rows["rna"]], clusters[pairs.rows[kinds[1]]])
