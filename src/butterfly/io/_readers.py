"""Paired data as it comes from the instrument or a portal, one AnnData per modality: Cell Ranger's
feature-barcode matrices (``.h5``: ARC for 10x Multiome, ``cellranger multi`` for CITE-seq) and MuData files
(``.h5mu``, read with mudata)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad

from .._validation import ButterflyInputError, _preview

#: Cell Ranger's feature type of each kind of modality.
FEATURE_TYPES = {"rna": "Gene Expression", "atac": "Peaks", "adt": "Antibody Capture"}
#: Names MuData files commonly give each kind of modality (muon's are rna, atac and prot).
MUDATA_NAMES = {
    "rna": ("rna", "gex", "expression"),
    "atac": ("atac", "peaks", "chromatin"),
    "adt": ("adt", "prot", "protein", "proteins", "cite"),
}


def read_10x_h5(path: str | os.PathLike) -> dict[str, ad.AnnData]:
    """Every modality of a Cell Ranger feature-barcode matrix (``filtered_feature_bc_matrix.h5``).

    Returns ``{"rna": ..., "atac": ..., "adt": ...}`` for the feature types the file holds ("Gene
    Expression", "Peaks", "Antibody Capture"), each an AnnData of raw counts for the same cells in the same
    order, ready for :class:`~butterfly.Butterfly`. Gene symbols are made unique (``var_names_make_unique``,
    as scanpy's reader of 10x folders does; the Ensembl IDs stay in ``var['gene_ids']``); peaks keep their
    ``chr:start-end`` names. Other feature types (CRISPR guides, custom) are left out.

    Examples
    --------
    >>> import butterfly as bf
    >>> data = bf.io.read_10x_h5("filtered_feature_bc_matrix.h5")  # doctest: +SKIP
    >>> model = bf.Butterfly(data["rna"], data["atac"], modalities=("rna", "atac"))  # doctest: +SKIP
    """
    import scanpy as sc

    path = Path(path)
    _check_file(path)
    with warnings.catch_warnings():  # duplicated gene symbols, made unique below
        warnings.filterwarnings("ignore", message=".*names are not unique", category=UserWarning)
        try:
            adata = sc.read_10x_h5(path, gex_only=False)
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as err:
            raise ButterflyInputError(
                f"{path} could not be read as a Cell Ranger feature-barcode matrix .h5 ({err}). Give the "
                "filtered_feature_bc_matrix.h5 of Cell Ranger (ARC / multi / count), or an .h5ad file."
            ) from None
        if "feature_types" not in adata.var:  # Cell Ranger 2's format holds gene expression only
            adata.var_names_make_unique()
            return {"rna": adata}
        types = adata.var["feature_types"].astype(str)
        parts = {}
        for kind, feature_type in FEATURE_TYPES.items():
            chosen = (types == feature_type).to_numpy()
            if chosen.any():
                parts[kind] = adata[:, chosen].copy()
        if "rna" in parts:
            parts["rna"].var_names_make_unique()
    if not parts:
        raise ButterflyInputError(
            f"{path} holds no feature type butterfly reads ({', '.join(FEATURE_TYPES.values())}); it has "
            f"{_preview(types.unique())}."
        )
    return parts


def read_h5mu(path: str | os.PathLike) -> dict[str, ad.AnnData]:
    """Every modality of a MuData file (``.h5mu``, read with mudata), keyed by its name.

    Cell annotations a MuData keeps in its global ``obs`` (cell types, clusters) are added to the ``obs`` of
    each modality that lacks a column of that name; columns named ``<modality>:<column>`` (copies of a
    modality's own) are not.

    Examples
    --------
    >>> import butterfly as bf
    >>> data = bf.io.read_h5mu("multiome.h5mu")  # doctest: +SKIP
    >>> model = bf.Butterfly(data["rna"], data["atac"], modalities=("rna", "atac"))  # doctest: +SKIP
    """
    import mudata

    path = Path(path)
    _check_file(path)
    try:
        with (
            warnings.catch_warnings()
        ):  # mudata's notes on joining the modalities' obs: not the user's concern
            warnings.simplefilter("ignore")
            mdata = mudata.read_h5mu(path)
        parts = dict(mdata.mod)
        shared = mdata.obs
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as err:
        raise ButterflyInputError(
            f"{path} could not be read as a MuData .h5mu file ({err}). Write it with mdata.write(path), or "
            "save each modality as an .h5ad file (mdata.mod['rna'].write_h5ad(...))."
        ) from None
    global_columns = [c for c in shared.columns if str(c).split(":", 1)[0] not in parts]
    for adata in parts.values():
        for column in global_columns:
            if column not in adata.obs:
                adata.obs[column] = shared[column].reindex(adata.obs_names).to_numpy()
    return parts


def read_modality(path: str | os.PathLike, name: str, kind: str) -> ad.AnnData:
    """The AnnData of modality ``name`` (of preprocessing kind ``kind``: rna, atac, adt, expression) in a file.

    ``.h5ad``: the file itself. ``.h5mu``: the modality called ``name``, or else the one whose name is usual
    for ``kind`` (``rna``/``gex``, ``atac``/``peaks``, ``prot``/``adt``...). A Cell Ranger ``.h5``: the
    features of ``kind``'s feature type. The CLI reads ``--first``, ``--second`` and ``--input`` so.

    Examples
    --------
    >>> import tempfile, butterfly as bf
    >>> rna, _ = bf.datasets.snare_mcc_demo()
    >>> folder = tempfile.TemporaryDirectory()
    >>> rna.write_h5ad(f"{folder.name}/rna.h5ad")
    >>> bf.io.read_modality(f"{folder.name}/rna.h5ad", "rna", "rna").shape
    (2000, 1677)
    >>> folder.cleanup()
    >>> atac = bf.io.read_modality("multiome.h5mu", "atac", "atac")  # its "atac" or "peaks"  # doctest: +SKIP
    """
    return read_modalities(path, [(name, kind)])[0]


def read_modalities(path: str | os.PathLike, wanted: Sequence[tuple[str, str]]) -> list[ad.AnnData]:
    """:func:`read_modality` of each ``(name, kind)`` in ``wanted``, reading the file once (both modalities of
    one ``.h5mu`` or Cell Ranger ``.h5``).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.io.read_modalities(  # doctest: +SKIP
    ...     "filtered_feature_bc_matrix.h5", [("rna", "rna"), ("atac", "atac")]
    ... )
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".h5mu":
        parts = read_h5mu(path)
        return [_named_part(parts, path, name, kind) for name, kind in wanted]
    if suffix == ".h5":
        for name, kind in wanted:  # before reading a large file
            if kind not in FEATURE_TYPES:
                raise ButterflyInputError(
                    f"{path} is a Cell Ranger matrix of counts, but modality {name!r} takes normalised "
                    "values; normalise it with scanpy first and pass an .h5ad file."
                )
        parts = read_10x_h5(path)
        missing = [(name, kind) for name, kind in wanted if kind not in parts]
        if missing:
            name, kind = missing[0]
            raise ButterflyInputError(
                f"{path} holds no {FEATURE_TYPES[kind]!r} features for modality {name!r}; it holds "
                f"{_preview(FEATURE_TYPES[k] for k in parts)}."
            )
        return [parts[kind] for _, kind in wanted]
    _check_file(path)
    try:
        adata = ad.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise ButterflyInputError(
            f"{path} could not be read as an .h5ad file ({err}). Save the data with adata.write_h5ad(path), or "
            "give a Cell Ranger .h5 or a MuData .h5mu file."
        ) from None
    return [adata if i == 0 else adata.copy() for i in range(len(wanted))]


def _named_part(parts: dict[str, ad.AnnData], path: Path, name: str, kind: str) -> ad.AnnData:
    """The modality of a MuData called ``name``, or else the only one named as usual for ``kind``."""
    if name in parts:
        return parts[name]
    usual = [m for m in parts if m.lower() in MUDATA_NAMES.get(kind, ())]
    if len(usual) == 1:
        return parts[usual[0]]
    raise ButterflyInputError(
        f"{path} has no modality {name!r} (it has {_preview(sorted(parts))}). Save the one you mean as an "
        f".h5ad file (mdata.mod[...].write_h5ad(path)) and pass that file instead."
    )


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
