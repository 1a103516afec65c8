"""scverse conventions: modalities named by a dict or a MuData, a MuData out for a MuData in, tools that write
into the data under ``key_added`` (``bf.tl``) and figures that take ``ax`` / ``show`` / ``save`` (``bf.pl``)."""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pytest

import butterfly as bf


def _mudata(**mods):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mudata's notes on joining obs
        return md.MuData({name: adata.copy() for name, adata in mods.items()})


@pytest.fixture(scope="module")
def demo():
    rna, atac = bf.datasets.snare_mcc_demo()
    return rna, atac


@pytest.fixture(scope="module")
def trained(demo):
    rna, atac = demo
    model = bf.Butterfly({"rna": rna[:1500], "atac": atac[:1500]}, seed=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(pretrain_epochs=2, epochs=2, progress=False)
    return model


def test_a_dict_or_a_mudata_of_modalities_builds_the_same_model_as_two_anndata(demo):
    rna, atac = demo
    pair = bf.Butterfly(rna[:400], atac[:400], modalities=("rna", "atac"), seed=0)  # issue 3's fixed call
    named = bf.Butterfly({"rna": rna[:400], "atac": atac[:400]}, seed=0)
    mudata = bf.Butterfly(_mudata(rna=rna[:400], atac=atac[:400]), seed=0)
    for model in (named, mudata):
        assert model.names == ("rna", "atac") and model.init_params_ == pair.init_params_
        for name in model.names:
            np.testing.assert_array_equal(model._matrices[name].toarray(), pair._matrices[name].toarray())
    assert bf.Butterfly({"atac": atac[:400], "rna": rna[:400]}, seed=0).names == (
        "atac",
        "rna",
    )  # the dict's order


def test_a_dict_that_is_not_two_modalities_is_refused(demo):
    rna, atac = demo
    with pytest.raises(bf.ButterflyInputError, match=r"holds 1 \(\['rna'\]\)"):
        bf.Butterfly({"rna": rna[:100]})
    with pytest.raises(bf.ButterflyInputError, match="maps modality names to AnnData"):
        bf.Butterfly({"rna": rna[:100], "atac": atac[:100].X})
    with pytest.raises(bf.ButterflyInputError, match="has no modality 'atac'"):
        bf.Butterfly({"rna": rna[:100], "peaks": atac[:100]}, modalities=("rna", "atac"))


def test_a_mudata_in_gives_a_mudata_out_with_the_translation_added(trained, demo):
    rna, atac = demo
    query = _mudata(rna=rna[1500:1600])
    out = trained.translate(query, source="rna", target="atac", progress=False)
    assert isinstance(out, md.MuData) and sorted(out.mod) == ["atac", "rna"]
    assert sorted(query.mod) == ["rna"]  # the user's MuData is not changed
    direct = trained.translate(rna[1500:1600], source="rna", target="atac", progress=False)
    np.testing.assert_array_equal(out["atac"].X, direct.X)
    assert list(out["atac"].var_names) == list(direct.var_names)
    both = trained.translate(_mudata(rna=rna[1500:1600], atac=atac[1500:1600]), source="rna", target="atac",
                             progress=False)  # fmt: skip
    assert sorted(both.mod) == ["atac", "atac_translated", "rna"]  # the measured ATAC is kept beside
    named = trained.translate(query, source="rna", target="atac", key_added="predicted", progress=False)
    assert sorted(named.mod) == ["predicted", "rna"]


def test_tools_write_into_the_data_under_key_added_or_return_a_copy(trained, demo):
    rna, atac = demo
    cells = atac[1500:1700].copy()
    expected = bf.annotate(
        trained, cells, "atac", reference=rna[:1500], progress=False
    )  # the functional form
    assert bf.tl.annotate(trained, cells, "atac", reference=rna[:1500], progress=False) is None
    assert list(cells.obs["butterfly_label"]) == list(expected["label"])
    np.testing.assert_array_equal(cells.obs["butterfly_label_margin"], expected["margin"])
    fresh = atac[1500:1700].copy()
    copied = bf.tl.annotate(trained, fresh, "atac", reference=rna[:1500], key_added="type", copy=True,
                            progress=False)  # fmt: skip
    assert "type" in copied.obs and "type" not in fresh.obs  # copy=True leaves the data alone
    query = _mudata(atac=atac[1500:1700])
    bf.tl.annotate(trained, query, "atac", reference=rna[:1500], progress=False)
    assert list(query["atac"].obs["butterfly_label"]) == list(expected["label"])

    measured = {"rna": rna[1500:1700].copy()}
    measured["atac"] = trained.translate(measured["rna"], source="rna", target="atac", progress=False)
    joint = bf.integrate(trained, measured)
    assert bf.tl.integrate(trained, measured) is None
    for adata in measured.values():
        np.testing.assert_array_equal(adata.obsm["X_butterfly_joint"], joint)
    mdata = _mudata(rna=rna[1500:1700], atac=atac[1500:1700])
    copy = bf.tl.integrate(trained, mdata, key_added="joint", copy=True)
    assert copy.obsm["joint"].shape == (200, joint.shape[1]) and "joint" not in mdata.obsm


def test_figures_take_ax_show_and_save(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")  # the test's own backend (the library never chooses one)
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(True))
    fig, ax = plt.subplots()
    drawn = bf.pl.plot_annotation(["B", "T", "T"], ["B", "T", "B"], ax=ax, save=tmp_path / "a.png", show=True)
    assert drawn is fig and ax.get_xlabel() == "predicted" and shown == [True]
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    rng = np.random.default_rng(0)
    p = rng.random((50, 10))
    curve = bf.metrics.reliability_curve(p, rng.random((50, 10)) < p)
    assert bf.pl.plot_reliability(curve, ax=ax).axes[0] is ax
    plt.close("all")
