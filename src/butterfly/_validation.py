"""Input checks shared by preprocessing and the model.

Every check raises :class:`ButterflyInputError` with a message that names the problem and the fix.
Nothing here modifies its input.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._errors import ButterflyInputError, ModelFileError, NotTrainedError, TrainingDivergedError  # noqa: F401


def _preview(names: Sequence, limit: int = 5) -> str:
    names = [str(n) for n in list(names)[:limit]]
    return ", ".join(repr(n) for n in names)


def check_keywords(given: Iterable[str], allowed: Iterable[str], *, where: str) -> None:
    """Refuse keyword arguments ``where`` does not take with Python's TypeError, naming a close match and
    the accepted names (a misspelt option would otherwise fail deep inside, or be ignored)."""
    allowed = sorted(allowed)
    unknown = [name for name in given if name not in allowed]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise TypeError(
        f"{where} got an unexpected keyword argument {name!r}.{hint} It takes: {', '.join(allowed)}."
    )


def check_whole_numbers(**minima: tuple) -> None:
    """Refuse any ``name=(value, least)`` whose value is not a whole number of at least ``least``."""
    for name, (value, least) in minima.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ButterflyInputError(f"{name} must be a whole number of at least {least}, got {value!r}.")


def as_csr(X, *, dtype=np.float32) -> sp.csr_matrix:
    """Return ``X`` as a canonical CSR matrix of ``dtype`` without changing the caller's object.

    Dense input is converted to CSR. Sparse input whose stored entries repeat a position (as a CSR built from
    COO triplets often has) or hold explicit zeros is summed and cleaned on a copy: per-entry transforms such
    as ``log1p`` and counts of open peaks read each position once. A canonical CSR input of the right dtype
    is returned as is (callers must treat it as read-only).
    """
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if X.dtype != dtype:
            _check_castable(X.data, dtype)
            X = X.astype(dtype)
        if not X.has_canonical_format or (X.nnz and not np.all(X.data)):
            X = X.copy()  # the caller's arrays may be shared by the conversion above
            X.sum_duplicates()  # also sorts the indices
            X.eliminate_zeros()
        return X
    if hasattr(X, "to_memory"):  # backed dataset
        X = X.to_memory()
        return as_csr(X, dtype=dtype)
    if X is None:
        raise ButterflyInputError(
            "adata.X is None: this AnnData holds no matrix in X. If the values sit in a layer, name it: "
            "layer='counts'."
        )
    values = np.asarray(X)
    if values.dtype == object:
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise ButterflyInputError(
                "adata.X holds values that are not numbers (an object array, e.g. text): give a numeric matrix."
            ) from None
    _check_castable(values, dtype)
    return sp.csr_matrix(values.astype(dtype, copy=False))


def _check_castable(values: np.ndarray, dtype) -> None:
    """Refuse values that ``dtype`` would change beyond rounding: complex numbers (their imaginary part would be
    dropped) and finite numbers beyond its range (they would become infinite)."""
    if np.iscomplexobj(values):
        raise ButterflyInputError(
            f"adata.X holds complex numbers ({values.dtype}); butterfly reads real counts or values. If the "
            "imaginary parts are all zero, pass the real part: adata.X = adata.X.real."
        )
    if values.size and np.issubdtype(values.dtype, np.floating) and np.issubdtype(dtype, np.floating):
        limit = np.finfo(dtype).max
        if np.finfo(values.dtype).max > limit:
            largest = np.max(np.abs(values), initial=0.0, where=np.isfinite(values))
            if largest > limit:
                raise ButterflyInputError(
                    f"adata.X holds values up to {largest:.3g}, beyond the largest {np.dtype(dtype).name} "
                    f"({limit:.3g}) butterfly computes in: these are not counts. Check how the matrix was made."
                )


#: The fix named when ``adata.X`` does not hold raw counts.
COUNTS_IN_A_LAYER = "If the raw counts sit in a layer, name it: layer='counts'."


NORMALISED_ON_PURPOSE = (
    " If the data are normalised on purpose, use the 'expression' modality, which takes them as given."
)


def check_values(X, *, what: str, require_integer: bool, hint: str = NORMALISED_ON_PURPOSE) -> None:
    """Refuse negative, NaN or infinite values, and non-integers where raw counts are expected (that error
    ends with ``hint``; by default, the modality that takes normalised data)."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size == 0:
        return
    if not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.isfinite(data).sum())
        raise ButterflyInputError(
            f"{what} contains {n_bad} NaN or infinite value(s). Remove or impute them before using butterfly "
            "(for example, to drop the features that hold them: "
            "adata = adata[:, np.isfinite(np.asarray(adata.X.sum(0))).ravel()])."
        )
    min_value = data.min()
    if min_value < 0:
        raise ButterflyInputError(
            f"{what} contains negative values (minimum {min_value:g}). butterfly expects raw, non-negative "
            f"counts, not scaled or centred data. {COUNTS_IN_A_LAYER}"
        )
    if require_integer:
        sample = data if data.size <= 5_000_000 else data[:: data.size // 5_000_000 + 1]
        if not np.all(sample == np.round(sample)):
            raise ButterflyInputError(
                f"{what} contains non-integer values, but raw counts are expected. {COUNTS_IN_A_LAYER}" + hint
            )


def counts_in_raw(adata: ad.AnnData) -> str:
    """A hint naming ``adata.raw`` when it holds whole numbers (scanpy users often keep the counts there)."""
    raw = getattr(adata, "raw", None)
    if raw is None:
        return ""
    data = as_csr(raw.X[: min(raw.n_obs, 200)]).data
    if data.size == 0 or not np.all(data == np.round(data)) or data.min() < 0:
        return ""
    return (
        " adata.raw holds whole numbers, probably the counts: pass adata.raw.to_adata() (its obs and all its "
        "genes)."
    )


def use_layer(adata: ad.AnnData, layer: str | None, *, what: str, option: str = "layer=") -> ad.AnnData:
    """``adata`` with ``adata.layers[layer]`` in place of ``X`` (the same matrix object, not a copy; ``obs`` and
    ``var`` copied), or ``adata`` itself when ``layer`` is None. ``adata`` is not modified. ``option``: how
    the user names the layer (a keyword argument or a CLI flag)."""
    if layer is None:
        return adata
    if not isinstance(layer, str):
        raise ButterflyInputError(
            f"{option} must name one of adata.layers (a string), or be None to read adata.X; got {layer!r}."
        )
    if layer not in adata.layers:
        found = [name for name in adata.layers if name is not None]  # anndata 0.13 lists X as None
        if not found:
            raise ButterflyInputError(
                f"{what} has no layers, so no layer {layer!r}: leave {option} unset to read adata.X."
            )
        raise ButterflyInputError(
            f"{what} has no layer {layer!r}; its layers are {_preview(found, 20)}. Pass {option} one of them, "
            "or leave it unset to read adata.X."
        )
    return ad.AnnData(X=adata.layers[layer], obs=adata.obs, var=adata.var)


def use_layers(datasets: Sequence[ad.AnnData], names: Sequence[str], layer) -> tuple[ad.AnnData, ...]:
    """:func:`use_layer` for each modality's dataset: ``layer`` is one name (or None) for all of them, or a
    dict ``{modality: layer}`` (modalities it leaves out keep ``X``)."""
    for data, name in zip(datasets, names, strict=True):
        if not isinstance(data, ad.AnnData):
            raise ButterflyInputError(
                f"The {name} data must be an AnnData, got {type(data).__name__}: wrap a matrix with its feature "
                "names, e.g. anndata.AnnData(X, var=pandas.DataFrame(index=names))."
            )
    if layer is None or isinstance(layer, str):
        having = [n for d, n in zip(datasets, names, strict=True) if layer in d.layers]
        if having and len(having) < len(names):  # one name reads both; say how to read one modality's
            lacking = next(n for n in names if n not in having)
            raise ButterflyInputError(
                f"The {lacking} data has no layer {layer!r}, which layer={layer!r} reads from both modalities. "
                f"To read it from the {having[0]} data only: layer={{{having[0]!r}: {layer!r}}}."
            )
        layers = dict.fromkeys(names, layer)
    elif isinstance(layer, dict):
        unknown = [key for key in layer if key not in names]
        if unknown:
            raise ButterflyInputError(
                f"layer names modality {unknown[0]!r}, but the modalities here are {list(names)}."
            )
        layers = {name: layer.get(name) for name in names}
    else:
        raise ButterflyInputError(
            "layer must be one layer name for both modalities (e.g. 'counts'), a dict naming a layer per "
            f"modality (e.g. {{{names[0]!r}: 'counts'}}), or None to use adata.X; got {layer!r}."
        )
    return tuple(
        use_layer(data, layers[name], what=f"The {name} data")
        for data, name in zip(datasets, names, strict=True)
    )


def row_sums(X) -> np.ndarray:
    return np.asarray(X.sum(axis=1)).ravel()


def check_nonempty_cells(X, obs_names: Sequence, *, what: str, paired: bool = True) -> None:
    """Refuse cells whose counts are all zero; ``paired``: the data is one side of paired training cells."""
    empty = np.flatnonzero(row_sums(X) == 0)
    if empty.size and empty.size == X.shape[0]:
        raise ButterflyInputError(
            f"{what} holds no counts at all: adata.X is all zeros in every cell. {COUNTS_IN_A_LAYER}"
        )
    if empty.size:
        raise ButterflyInputError(
            f"{what} has {empty.size} cell(s) with zero counts (for example {_preview(np.asarray(obs_names)[empty])}). "
            "Remove them first, e.g. sc.pp.filter_cells(adata, min_counts=1)"
            + (", and drop the same cells from the other modality." if paired else ".")
        )


def check_unique_names(adata: ad.AnnData, *, what: str) -> None:
    """Refuse duplicated cell or feature names, which would make alignment by name ambiguous."""
    for axis, names, fix in (
        ("cell", adata.obs_names, "adata.obs_names_make_unique()"),
        ("feature", adata.var_names, "adata.var_names_make_unique()"),
    ):
        duplicated = names[names.duplicated()]
        if len(duplicated):
            raise ButterflyInputError(
                f"{what} has {len(duplicated)} duplicated {axis} name(s) (for example {_preview(duplicated.unique())}). "
                f"Names must be unique so butterfly can align data by name; call {fix} or remove the duplicates."
            )


def check_label_key(adata: ad.AnnData, key: str, *, what: str, option: str = "label_key=") -> pd.Series:
    """Return ``adata.obs[key]``, refusing a missing column or missing labels. ``option``: how the user names
    the column (a keyword argument or a CLI flag)."""
    if key not in adata.obs.columns:
        raise ButterflyInputError(
            f"{what} has no column {key!r} in .obs. Available columns: {_preview(adata.obs.columns, 20)}. "
            f"Pass {option} one of them, or add the labels to adata.obs first."
        )
    labels = adata.obs[key]
    if labels.isna().any():
        raise ButterflyInputError(
            f"{what}.obs[{key!r}] has {int(labels.isna().sum())} missing label(s). Fill or drop those cells first."
        )
    return labels


def check_paired(
    first: ad.AnnData, second: ad.AnnData, names: tuple[str, str], *, align: str | None = None,
    unpaired: str = "Butterfly.unpaired(...)",
) -> None:  # fmt: skip
    """Refuse two modalities that do not list the same cells in the same order. ``align`` and ``unpaired``:
    how the user aligns them and trains on different cells (defaults: the Python API's; the CLI names its
    flags)."""
    a, b = names
    if first.n_obs == second.n_obs and np.array_equal(first.obs_names.values, second.obs_names.values):
        return
    align = align or f"{a}, {b} = butterfly.align_cells({a}, {b})"
    shared = first.obs_names.intersection(second.obs_names)
    if len(shared) == first.n_obs == second.n_obs:
        raise ButterflyInputError(
            f"The {a} and {b} data list the same cells in a different order. Align them by name first "
            f"with {align}."
        )
    only_first = first.obs_names.difference(second.obs_names)
    only_second = second.obs_names.difference(first.obs_names)
    hint = (
        f"Keep the {len(shared)} shared cells with {align}."
        if len(shared)
        else "No cell name is shared: if the two datasets come from different cells, train with "
        f"{unpaired}; if they are the same cells, give them the same obs_names."
    )
    raise ButterflyInputError(
        f"The {a} data ({first.n_obs} cells) and the {b} data ({second.n_obs} cells) are not the same cells: "
        f"{_only_in(only_first, a)}, {_only_in(only_second, b)}. {hint}"
    )


def _only_in(names: pd.Index, modality: str) -> str:
    if len(names) == 0:
        return f"none only in {modality}"
    return f"{len(names)} cell(s) only in {modality} (e.g. {_preview(names)})"


def align_cells(first: ad.AnnData, second: ad.AnnData) -> tuple[ad.AnnData, ad.AnnData]:
    """Return copies of two modalities restricted to their shared cells, in the order of ``first``.

    Examples
    --------
    >>> rna, atac = align_cells(rna, atac)  # doctest: +SKIP
    """
    for data, what in ((first, "first"), (second, "second")):
        if data.obs_names.duplicated().any():
            raise ButterflyInputError(
                f"The {what} dataset has duplicated cell names; call obs_names_make_unique() before aligning."
            )
    shared = first.obs_names[first.obs_names.isin(second.obs_names)]
    if len(shared) == 0:
        raise ButterflyInputError(
            "The two datasets share no cell names, so they cannot be aligned as paired cells. "
            "Use Butterfly.unpaired(...) for data measured on different cells."
        )
    return first[shared].copy(), second[shared].copy()


def modality_mapping(data) -> Mapping[str, ad.AnnData] | None:
    """The modalities of a MuData (``mdata.mod``) or of a dict of AnnData keyed by modality name; None for
    anything else."""
    if isinstance(data, ad.AnnData):
        return None
    if hasattr(data, "mod"):  # a MuData
        return data.mod
    if isinstance(data, Mapping):
        wrong = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, ad.AnnData)]
        if wrong:
            raise ButterflyInputError(
                f"A dict of modalities maps modality names to AnnData, e.g. {{'rna': rna, 'atac': atac}}; the "
                f"entry {wrong[0]!r} is not one."
            )
        return data
    return None


def default_modalities(first, second, modalities) -> tuple:
    """``modalities`` as given, or (when None) the keys of a dict of two modalities, or ('rna', 'atac')."""
    if modalities is not None:
        return modalities
    mapping = modality_mapping(first) if second is None else None
    if mapping is not None and not hasattr(first, "mod"):
        if len(mapping) != 2:
            raise ButterflyInputError(
                f"A dict of modalities holds the model's two, e.g. {{'rna': rna, 'atac': atac}}; this one holds "
                f"{len(mapping)} ({sorted(mapping)}). Pass modalities=(...) to choose two."
            )
        return tuple(mapping)
    return ("rna", "atac")


def split_modalities(first, second, names: tuple[str, str]) -> tuple[ad.AnnData, ad.AnnData]:
    """The two AnnData of a model: ``first`` and ``second`` themselves, or the modalities ``names`` of one
    MuData or one dict of AnnData (keyed by modality name) given as ``first``."""
    modalities = modality_mapping(first) if second is None else None
    if modalities is not None:
        missing = [n for n in names if n not in modalities]
        if missing:
            found = sorted(modalities)
            example = ", ".join(f"mdata.mod[{k!r}]" for k in found[:2])
            raise ButterflyInputError(
                f"The MuData has no modality {missing[0]!r}; it has {found}. Pass its two AnnData with their "
                f"kinds instead, e.g. Butterfly({example}, modalities={names!r})."
            )
        return modalities[names[0]], modalities[names[1]]
    for data, name in ((first, names[0]), (second, names[1])):
        if not isinstance(data, ad.AnnData):
            raise ButterflyInputError(
                f"The {name} data must be an AnnData (or pass one MuData), got {type(data).__name__}."
            )
    return first, second


def check_conditions(data: tuple[ad.AnnData, ad.AnnData], names: tuple[str, str]) -> None:
    """The two conditions of a perturbation model: the same genes, log-normalised (raw counts draw a warning)."""
    genes = [d.var_names for d in data]
    if not genes[0].sort_values().equals(genes[1].sort_values()):
        only = [genes[0].difference(genes[1]), genes[1].difference(genes[0])]
        raise ButterflyInputError(
            f"The {names[0]} and {names[1]} data must hold the same genes: {len(only[0])} are only in "
            f"{names[0]} (e.g. {_preview(only[0])}) and {len(only[1])} only in {names[1]} (e.g. "
            f"{_preview(only[1])}). Subset both to the shared genes, e.g. "
            "genes = control.var_names.intersection(stimulated.var_names)."
        )
    for adata, name in zip(data, names, strict=True):
        X = adata.X
        values = X.data if sp.issparse(X) else np.asarray(X).ravel()
        sample = values[:: max(1, values.size // 200_000)]
        if sample.size and np.all(sample == np.round(sample)) and sample.max() > 30:
            warnings.warn(
                f"The {name} data look like raw counts (whole numbers up to {sample.max():g}); the perturbation "
                "model takes log-normalised expression: run sc.pp.normalize_total and sc.pp.log1p first.",
                UserWarning,
                stacklevel=4,
            )


def check_model_options(seed, validation_fraction, dropout, batch_norm, discriminator_layers) -> None:
    """The options every kind of :class:`~butterfly.Butterfly` takes, refused when out of range."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ButterflyInputError(f"seed must be a whole number, got {seed!r}.")
    if not isinstance(validation_fraction, (int, float)) or not 0 < validation_fraction < 1:
        raise ButterflyInputError(
            f"validation_fraction is the share of training cells held out for early stopping (which needs "
            f"some), above 0 and below 1 (e.g. 0.2); got {validation_fraction!r}."
        )
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ButterflyInputError(f"dropout must be at least 0 and below 1 (paper: 0.1), got {dropout!r}.")
    if not isinstance(batch_norm, (bool, np.bool_)):
        raise ButterflyInputError(f"batch_norm must be True or False, got {batch_norm!r}.")
    if discriminator_layers not in (1, 2) or isinstance(discriminator_layers, bool):
        raise ButterflyInputError(
            f"discriminator_layers must be 2 (the paper's) or 1 (the authors' code), got {discriminator_layers!r}."
        )
