import numpy as np

import butterfly as bf


def test_tsne_panels_give_every_cell_type_its_own_colour_and_keep_the_panels_readable(cite):
    """41 cell types (the CITE-seq test cells): one colour each, a legend in columns, and each panel
    still about as wide as it is tall (a one-column legend squeezed them to a strip)."""
    rna, _ = cite
    labels = rna.obs["cell_type"].astype(str).to_numpy()
    profiles = bf.RNAPreprocessor(n_top_genes=200).fit_transform(rna).X
    fig = bf.pl.plot_tsne_panels({"measured": profiles, "again": profiles}, {"cell type": labels})
    n_types = len(set(labels))
    assert n_types > 40
    legend = fig.axes[-1].get_legend()
    colours = {tuple(np.round(handle.get_facecolor()[0], 4)) for handle in legend.legend_handles}
    assert len(legend.get_texts()) == n_types and len(colours) == n_types
    fig.canvas.draw()
    columns = {round(text.get_window_extent().x0) for text in legend.get_texts()}
    assert len(columns) == 3  # at most 18 types a column
    for ax in fig.axes:
        box = ax.get_window_extent()
        assert 0.8 < box.width / box.height < 1.6
    embedding = bf.pl.tsne_embedding(profiles)
    np.testing.assert_array_equal(embedding, bf.pl.tsne_embedding(profiles))  # seeded


def test_scores_by_label_figure_has_a_bar_per_label_and_a_panel_per_score(tmp_path):
    import pandas as pd
    import pytest

    table = pd.DataFrame(
        {
            "cells": [30, 2],
            "rna->atac auroc_per_cell": [0.7, np.nan],
            "atac->rna pearson_per_cell": [0.6, -0.2],
        },
        index=pd.Index(["T", "B"], name="label"),
    )
    fig = bf.pl.plot_scores_by_label(table, tmp_path / "by_label.png")
    assert (tmp_path / "by_label.png").read_bytes()[:4] == b"\x89PNG"
    auroc, pearson = fig.axes
    heights = {t.get_text(): t.get_position()[1] for t in auroc.get_yticklabels()}
    assert heights == {"T (30)": 1, "B (2)": 0}  # the most common label on top
    assert [p.get_width() for p in pearson.patches] == [0.6, -0.2]
    assert pearson.get_xlim()[0] == -0.2 and auroc.get_xlim() == (0.0, 1.0)
    assert pearson.lines[0].get_xdata()[0] == pytest.approx((30 * 0.6 - 2 * 0.2) / 32)  # cell-weighted
    with pytest.raises(bf.ButterflyInputError, match="'cells' column"):
        bf.pl.plot_scores_by_label(table.drop(columns="cells"))
