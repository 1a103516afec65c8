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
    return _read("snare_mcc_2k_rna.h5ad"), _read("snare_mcc_2k_atac.h5ad")


def _read(name: str) -> ad.AnnData:
    with resources.as_file(resources.files("butterfly.datasets") / "data" / name) as path:
        return ad.read_h5ad(path)


def cite_bmmc_demo() -> tuple[ad.AnnData, ad.AnnData]:
    """600 CITE-seq cells of human bone marrow (the NeurIPS 2021 multimodal benchmark, OpenProblems): RNA
    (1,000 genes) and surface proteins (134 antibodies), raw counts, the same cells in the same order, with
    ``obs['cell_type']``, ``obs['batch']`` (donor and site) and ``obs['is_train']`` (the benchmark's split).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, adt = bf.datasets.cite_bmmc_demo()
    >>> rna.shape, adt.shape
    ((600, 1000), (600, 134))
    """
    return _read("cite_bmmc_600_rna.h5ad"), _read("cite_bmmc_600_adt.h5ad")


def multiome_bmmc_demo() -> tuple[ad.AnnData, ad.AnnData]:
    """500 10x Multiome cells of human bone marrow (the NeurIPS 2021 multimodal benchmark): RNA (600 genes) and
    ATAC (600 peaks), raw counts, the same cells in the same order, with ``obs['cell_type']`` and ``obs['batch']``.

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.multiome_bmmc_demo()
    >>> rna.n_obs == atac.n_obs == 500
    True
    """
    return _read("multiome_bmmc_500_rna.h5ad"), _read("multiome_bmmc_500_atac.h5ad")


def kang_pbmc_demo() -> ad.AnnData:
    """1,000 PBMCs of Kang et al. 2018, control and interferon-beta stimulated (scGen's split), log-normalised
    expression of 1,000 variable genes, with ``obs['condition']`` (``control`` / ``stimulated``) and
    ``obs['cell_type']``.

    Examples
    --------
    >>> import butterfly as bf
    >>> pbmc = bf.datasets.kang_pbmc_demo()
    >>> sorted(pbmc.obs["condition"].unique())
    ['control', 'stimulated']
    """
    return _read("kang_pbmc_1k.h5ad")
