"""Adapter to scvi-tools for scButterfly-C's paper backend: MultiVI (RNA+ATAC) or totalVI (RNA+ADT) latents.

scvi-tools is an optional extra (``pip install butterfly-omics[scvi]``); nothing else in butterfly imports it.
"""

from __future__ import annotations

from .._validation import ButterflyInputError


def require_scvi():
    """Import scvi-tools or explain how to install it."""
    try:
        import scvi
    except ImportError as error:
        raise ButterflyInputError(
            "cluster_backend='scvi' needs scvi-tools, which is not installed. Install it with "
            "`pip install butterfly-omics[scvi]`, or use cluster_backend='builtin'."
        ) from error
    return scvi


def _counts(adata, min_fraction: float):
    """Raw counts as float32 CSR, keeping features detected in at least ``min_fraction`` of the cells."""
    import anndata as ad
    import numpy as np

    from .._validation import as_csr

    X = as_csr(adata.X).astype(np.float32)
    keep = np.asarray((X > 0).sum(axis=0)).ravel() >= max(1, min_fraction * X.shape[0])
    return ad.AnnData(X=X[:, keep], obs={"cell": np.asarray(adata.obs_names)})


def scvi_latent(raw, kinds, *, seed: int = 0, max_epochs: int | None = None, min_fraction: float = 0.01):
    """The joint latent of the paper's scButterfly-C: MultiVI for RNA+ATAC, totalVI for RNA+ADT.

    ``raw`` are the two modalities' AnnData of the same cells with raw counts, ``kinds`` their preprocessing
    kinds (``"rna"``, ``"atac"``, ``"adt"``). Features detected in fewer than ``min_fraction`` of the cells are
    dropped, as the scvi-tools tutorials do. The global random states are restored afterwards.
    """
    import random

    import numpy as np
    import torch

    scvi = require_scvi()
    by_kind = dict(zip(kinds, raw, strict=True))
    if set(by_kind) not in ({"rna", "atac"}, {"rna", "adt"}):
        raise ButterflyInputError(
            f"cluster_backend='scvi' supports RNA+ATAC (MultiVI) and RNA+ADT (totalVI), not {sorted(by_kind)}; "
            "use cluster_backend='builtin'."
        )
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            scvi.settings.seed = seed
            rna = _counts(by_kind["rna"], min_fraction)
            if "atac" in by_kind:
                from mudata import MuData

                data = MuData({"rna": rna, "atac": _counts(by_kind["atac"], min_fraction)})
                scvi.model.MULTIVI.setup_mudata(data, modalities={"rna_layer": "rna", "atac_layer": "atac"})
                model = scvi.model.MULTIVI(data, fully_paired=True)
            else:
                adt = by_kind["adt"]
                rna.obsm["protein_expression"] = np.asarray(
                    adt.X.toarray() if hasattr(adt.X, "toarray") else adt.X, dtype=np.float32
                )
                rna.uns["protein_names"] = np.asarray(adt.var_names)
                scvi.model.TOTALVI.setup_anndata(
                    rna,
                    protein_expression_obsm_key="protein_expression",
                    protein_names_uns_key="protein_names",
                )
                model = scvi.model.TOTALVI(rna)
            model.train(max_epochs=max_epochs)
            return np.asarray(model.get_latent_representation())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def scvi_clusters(raw, kinds, *, resolution: float = 3.0, seed: int = 0, **options):
    """Leiden clusters (resolution 3 in the paper) of :func:`scvi_latent` (``options`` go to it)."""
    from ._pairing import leiden_groups

    return leiden_groups(scvi_latent(raw, kinds, seed=seed, **options), resolution=resolution, seed=seed)
