"""The tools in the manner of ``scanpy.tl``: they write their result into the data under ``key_added`` and
return nothing, or a changed copy with ``copy=True``. ``bf.annotate`` and ``bf.integrate`` are their
functional forms, which return the result and leave the data alone."""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._validation import ButterflyInputError
from . import _annotate, _integrate

#: Where :func:`annotate` writes each cell's label (and ``f"{key}_margin"``, the classifier's margin).
LABEL_KEY = "butterfly_label"


def _is_mudata(data) -> bool:
    return hasattr(data, "mod") and not isinstance(data, ad.AnnData)


def annotate(
    model,
    adata,
    source: str,
    reference: ad.AnnData,
    label_key: str = "cell_type",
    *,
    key_added: str = LABEL_KEY,
    copy: bool = False,
    **options: Any,
):
    """Label cells measured in ``source`` from ``reference`` cells measured in the other modality, as
    :func:`butterfly.annotate` does (see there for the method and ``options``), and write the labels into
    ``obs[key_added]`` and the margins into ``obs[f"{key_added}_margin"]`` of ``adata`` (of
    ``adata.mod[source]`` for a MuData).

    Returns
    -------
    None, or with ``copy=True`` a copy of ``adata`` holding the labels (``adata`` is then not changed).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:1500], atac[:1500], seed=0)
    >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
    >>> cells = atac[1500:].copy()
    >>> bf.tl.annotate(model, cells, "atac", reference=rna[:1500], progress=False)
    >>> cells.obs["butterfly_label"].shape
    (500,)
    """
    labels = _annotate.annotate(model, adata, source, reference, label_key, **options)
    result = adata.copy() if copy else adata
    cells = result.mod[source] if _is_mudata(result) else result
    cells.obs[key_added] = labels["label"].to_numpy()
    cells.obs[f"{key_added}_margin"] = labels["margin"].to_numpy()
    return result if copy else None


def integrate(model, data, *, key_added: str = _integrate.JOINT_KEY, copy: bool = False, **options: Any):
    """The joint embedding of the same cells in a model's two modalities (:func:`butterfly.integrate`, see
    there for the method and ``options``), written into ``obsm[key_added]``: of a MuData holding the two
    modalities, or of both AnnData of a dict ``{name: adata}``.

    Returns
    -------
    None, or with ``copy=True`` a copy of ``data`` holding the embedding (``data`` is then not changed).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna[:1500], atac[:1500], seed=0)
    >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
    >>> cells = {"rna": rna[1500:].copy()}
    >>> cells["atac"] = model.translate(cells["rna"], source="rna", target="atac", progress=False)
    >>> bf.tl.integrate(model, cells)
    >>> cells["rna"].obsm["X_butterfly_joint"].shape
    (500, 60)
    """
    if _is_mudata(data):
        modalities = dict(data.mod)
    elif isinstance(data, dict):
        modalities = dict(data)
    else:
        raise ButterflyInputError(
            f"integrate takes a MuData or a dict {{name: AnnData}} of the model's two modalities, got "
            f"{type(data).__name__}."
        )
    names = [n for n in getattr(model, "names", ()) if n in modalities]
    embedding = _integrate.integrate(
        model, {n: modalities[n] for n in names} if names else modalities, **options
    )
    if _is_mudata(data):
        result = data.copy() if copy else data
        cells = modalities[names[0]].obs_names if names else data.obs_names
        frame = pd.DataFrame(embedding, index=cells).reindex(result.obs_names)
        result.obsm[key_added] = frame.to_numpy(dtype=np.float32)
    else:
        result = {n: a.copy() for n, a in data.items()} if copy else data
        for name in names:
            result[name].obsm[key_added] = embedding
    return result if copy else None
