"""Small real datasets shipped inside the package (no download at run time)."""

from __future__ import annotations

from importlib import resources

import anndata as ad


def snare_mcc_demo() -> tuple[ad.AnnData, ad.AnnData]:
    """2,000 paired cells of SNARE-seq adult mouse cortex (Chen et al. 2019, GEO GSE126074; the paper's MCC).

    Returns RNA (1,677 genes, raw counts) and ATAC (25,734 peaks, raw counts, ``chrom``/``start``/``end`` in
    ``var``), listing the same cells in the same order, with ``obs['cell_type']`` (author clusters),
    ``obs['cell_type_coarse']`` and ``obs['batch']`` (SNARE-seq library).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> rna.n_obs == atac.n_obs == 2000
    True
    """
    folder = resources.files("butterfly.datasets") / "data"
    with resources.as_file(folder / "snare_mcc_2k_rna.h5ad") as path:
        rna = ad.read_h5ad(path)
    with resources.as_file(folder / "snare_mcc_2k_atac.h5ad") as path:
        atac = ad.read_h5ad(path)
    return rna, atac
