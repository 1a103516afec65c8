"""Fitted, saveable preprocessing for each modality.

Each preprocessor is fitted on training cells (``fit``) and then applied unchanged to any cells
(``transform``), including cells the model has never seen. New data are aligned to the fitted features by
name: reordered, missing features zero-filled with a warning, and refused when fewer than
``MIN_FEATURE_OVERLAP`` (half) of the fitted features are present. Everything stays sparse (CSR);
nothing densifies a cells x features matrix. The fitted state is plain arrays plus a JSON-able dict
(see :meth:`Preprocessor.state`), never a pickle.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._validation import (
    ButterflyInputError,
    _preview,
    as_csr,
    check_nonempty_cells,
    check_unique_names,
    check_values,
    row_sums,
)
from .genome import has_coordinate_columns, looks_like_peaks, parse_peaks

#: Smallest fraction of the fitted features a new dataset must contain before ``transform`` accepts it.
MIN_FEATURE_OVERLAP = 0.5

_ORDER_FIX = (
    "Pass the datasets in the order of `modalities`, e.g. Butterfly(rna, atac, modalities=('rna', 'atac')) "
    "(CLI: --first and --second in the order of --modalities)."
)
_SOURCE_FIX = "Check that `source` (CLI: --source) names the modality these cells were measured in."

#: More proteins than any antibody panel holds: an "adt" dataset this wide is probably something else.
MAX_ADT_FEATURES = 1000


def align_features(
    X: sp.csr_matrix,
    names: pd.Index,
    reference: np.ndarray,
    *,
    what: str,
    min_overlap: float = MIN_FEATURE_OVERLAP,
) -> sp.csr_matrix:
    """Return ``X`` with its columns put in the order of ``reference``, matching by name.

    Features of ``reference`` missing from ``names`` become zero columns (with a warning naming how many);
    extra features are dropped. Raises :class:`ButterflyInputError` when fewer than ``min_overlap`` of the
    reference features are present.
    """
    names = pd.Index(names)
    if len(names) == len(reference) and np.array_equal(names.values.astype(str), reference.astype(str)):
        return X
    position = names.get_indexer(pd.Index(reference))
    present = position >= 0
    n_present = int(present.sum())
    if n_present < min_overlap * len(reference):
        raise ButterflyInputError(
            f"Only {n_present} of the {len(reference)} {what} features the model was fitted on are present in "
            f"the input (at least {min_overlap:.0%} are needed). Fitted features look like "
            f"{_preview(reference)}; the input's look like {_preview(names)}. Check that both use the same "
            "kind of feature names (gene symbols vs Ensembl IDs, same genome build and peak set)."
        )
    if n_present < len(reference):
        warnings.warn(
            f"{len(reference) - n_present} of the {len(reference)} {what} features the model was fitted on are "
            f"missing from the input (e.g. {_preview(reference[~present])}); they are filled with zeros.",
            UserWarning,
            stacklevel=3,
        )
    # One sparse product moves every present column to its reference position.
    selector = sp.csr_matrix(
        (np.ones(n_present, dtype=X.dtype), (position[present], np.flatnonzero(present))),
        shape=(X.shape[1], len(reference)),
    )
    aligned = (X @ selector).tocsr()
    aligned.sort_indices()  # canonical order, so results do not depend on the input's column order
    return aligned


def _scale_rows(X: sp.csr_matrix, factors: np.ndarray) -> sp.csr_matrix:
    """Multiply each row of a CSR matrix by a factor, returning a new matrix."""
    out = X.copy()
    out.data = out.data * np.repeat(factors.astype(out.dtype), np.diff(out.indptr))
    return out


class Preprocessor:
    """Base class: fit on training cells, transform any cells, save and restore the fitted state."""

    #: Name of the modality this preprocessor serves.
    kind: ClassVar[str] = ""
    #: Whether the input must be raw integer counts.
    requires_integer: ClassVar[bool] = True

    def __init__(self) -> None:
        self.input_features_: np.ndarray | None = None  # fitted features new data are aligned to
        self.features_: np.ndarray | None = None  # features of the output

    # -- public API ---------------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.features_ is not None

    @property
    def n_features(self) -> int:
        self._check_fitted()
        return len(self.features_)

    def fit(self, adata: ad.AnnData) -> Preprocessor:
        """Fit on training cells. ``adata`` is not modified."""
        what = f"The {self.kind} training data"
        X = self._checked_matrix(adata, what=what)
        self._check_feature_kind(adata, what=what, fix=_ORDER_FIX)
        self._fit(X, adata)
        return self

    def transform(self, adata: ad.AnnData) -> ad.AnnData:
        """Apply the fitted transform to any cells; returns a new AnnData (obs copied)."""
        self._check_fitted()
        what = f"The {self.kind} data"
        X = self._checked_matrix(adata, what=what, check_cells=False)
        self._check_feature_kind(adata, what=what, fix=_SOURCE_FIX)
        # Feature names first: input with the wrong kind of names often has "empty" cells as well, and the
        # names are what the user has to fix.
        aligned = align_features(X, self._input_names(adata), self.input_features_, what=self.kind)
        check_nonempty_cells(X, adata.obs_names, what=what)
        X = aligned
        out = ad.AnnData(X=self._transform(X, adata), obs=adata.obs.copy(), var=self._output_var())
        return out

    def fit_transform(self, adata: ad.AnnData) -> ad.AnnData:
        return self.fit(adata).transform(adata)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted state as (JSON-able config, named arrays). Restore with :func:`preprocessor_from_state`."""
        self._check_fitted()
        config, arrays = self._state()
        config = {"kind": self.kind, **config}
        arrays = {
            "input_features": self.input_features_.astype(str),
            "features": self.features_.astype(str),
            **arrays,
        }
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Preprocessor:
        obj = cls(**config.get("params", {}))
        obj.input_features_ = np.asarray(arrays["input_features"]).astype(object)
        obj.features_ = np.asarray(arrays["features"]).astype(object)
        obj._load_state(config, arrays)
        return obj

    # -- hooks for subclasses -----------------------------------------------------------------------------
    def _fit(self, X: sp.csr_matrix, adata: ad.AnnData) -> None:
        raise NotImplementedError

    def _transform(self, X: sp.csr_matrix, adata: ad.AnnData) -> sp.csr_matrix:
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"params": {}}, {}

    def _load_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        pass

    def _input_names(self, adata: ad.AnnData) -> pd.Index:
        return adata.var_names

    def _check_feature_kind(self, adata: ad.AnnData, *, what: str, fix: str) -> None:
        """Refuse peaks given as genes or proteins (two datasets passed in the wrong order, say)."""
        if looks_like_peaks(adata.var_names):
            raise ButterflyInputError(
                f"{what}'s feature names look like chromatin peaks (e.g. {_preview(adata.var_names)}), not "
                f"{self.kind} features. {fix}"
            )

    def _output_var(self) -> pd.DataFrame:
        return pd.DataFrame(index=pd.Index(self.features_.astype(str)))

    # -- helpers ------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.features_ is None:
            raise RuntimeError(f"This {type(self).__name__} is not fitted yet; call fit(adata) first.")

    def _checked_matrix(self, adata: ad.AnnData, *, what: str, check_cells: bool = True) -> sp.csr_matrix:
        if not isinstance(adata, ad.AnnData):
            raise ButterflyInputError(f"{what} must be an AnnData object, got {type(adata).__name__}.")
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise ButterflyInputError(f"{what} is empty ({adata.n_obs} cells x {adata.n_vars} features).")
        check_unique_names(adata, what=what)
        X = as_csr(adata.X)
        check_values(X, what=what, require_integer=self.requires_integer)
        if check_cells:
            check_nonempty_cells(X, adata.obs_names, what=what)
        return X


class RNAPreprocessor(Preprocessor):
    """RNA counts: depth-normalise to the training median, log1p, keep the top highly variable genes.

    Genes are chosen with scanpy's ``flavor="seurat"`` dispersion ranking on the log-normalised training
    cells, the method the scButterfly authors used, and one that needs no extra dependency (``seurat_v3``
    needs scikit-misc). When there are no more genes than ``n_top_genes``, all genes are kept.
    New cells are aligned to all the fitted genes before their totals are taken, so their depth is measured
    on the same genes as the training cells'.

    Parameters
    ----------
    n_top_genes
        Number of highly variable genes to keep (paper: 3000).
    hvg_flavor
        scanpy ``highly_variable_genes`` flavor working on log data (``"seurat"`` or ``"cell_ranger"``).
    """

    kind = "rna"

    def __init__(self, n_top_genes: int = 3000, hvg_flavor: str = "seurat") -> None:
        super().__init__()
        if n_top_genes < 1:
            raise ValueError(f"n_top_genes must be positive, got {n_top_genes}.")
        self.n_top_genes = n_top_genes
        self.hvg_flavor = hvg_flavor
        self.target_sum_: float | None = None
        self.highly_variable_: np.ndarray | None = None

    def _normalize(self, X: sp.csr_matrix) -> sp.csr_matrix:
        totals = row_sums(X)
        if np.any(totals == 0):
            raise ButterflyInputError(
                f"{int(np.sum(totals == 0))} cell(s) have zero counts over the genes the model was fitted on; "
                "remove them or check that the gene names match the training data."
            )
        out = _scale_rows(X, self.target_sum_ / totals)
        np.log1p(out.data, out=out.data)
        return out

    def _fit(self, X: sp.csr_matrix, adata: ad.AnnData) -> None:
        self.input_features_ = adata.var_names.to_numpy().astype(object)
        self.target_sum_ = float(np.median(row_sums(X)))
        logged = self._normalize(X)
        if X.shape[1] <= self.n_top_genes:
            mask = np.ones(X.shape[1], dtype=bool)
        else:
            import scanpy as sc

            table = sc.pp.highly_variable_genes(
                ad.AnnData(logged), flavor=self.hvg_flavor, n_top_genes=self.n_top_genes, inplace=False
            )
            mask = table["highly_variable"].to_numpy(dtype=bool)
        self.highly_variable_ = mask
        self.features_ = self.input_features_[mask]

    def _transform(self, X: sp.csr_matrix, adata: ad.AnnData) -> sp.csr_matrix:
        logged = self._normalize(X)
        if self.highly_variable_.all():
            return logged
        return logged[:, np.flatnonzero(self.highly_variable_)]

    def _state(self):
        params = {"n_top_genes": self.n_top_genes, "hvg_flavor": self.hvg_flavor}
        return {"params": params, "target_sum": self.target_sum_}, {"highly_variable": self.highly_variable_}

    def _load_state(self, config, arrays):
        self.target_sum_ = float(config["target_sum"])
        self.highly_variable_ = np.asarray(arrays["highly_variable"], dtype=bool)


class ATACPreprocessor(Preprocessor):
    """ATAC counts: binarise, keep peaks open in enough training cells, TF-IDF, divide by the training max.

    TF = x / (row sum of the binarised cell over the kept peaks); IDF = log(1 + n / column sum), fitted on
    the training cells; the result is divided by its training maximum ``S`` so training values lie in
    [0, 1] (values of new cells above 1 are clipped to 1). Peaks are matched between datasets by their
    coordinates (``chr1:100-200``, ``chr1-100-200`` and ``chr1_100_200`` are the same peak).

    Parameters
    ----------
    min_cell_fraction
        Keep peaks open in at least this fraction of training cells (paper: 0.005).
    """

    kind = "atac"

    def __init__(self, min_cell_fraction: float = 0.005) -> None:
        super().__init__()
        if not 0 <= min_cell_fraction < 1:
            raise ValueError(f"min_cell_fraction must be in [0, 1), got {min_cell_fraction}.")
        self.min_cell_fraction = min_cell_fraction
        self.idf_: np.ndarray | None = None
        self.scale_: float | None = None
        self.median_open_peaks_: float | None = None
        self.chrom_: np.ndarray | None = None
        self.start_: np.ndarray | None = None
        self.end_: np.ndarray | None = None

    def _input_names(self, adata: ad.AnnData) -> pd.Index:
        return pd.Index(parse_peaks(adata.var).names)

    def _check_feature_kind(self, adata: ad.AnnData, *, what: str, fix: str) -> None:
        if not looks_like_peaks(adata.var_names) and not has_coordinate_columns(adata.var):
            raise ButterflyInputError(
                f"{what}'s feature names do not look like chromatin peaks (e.g. {_preview(adata.var_names)}) "
                f"and var has no 'chrom', 'start' and 'end' columns. {fix} "
                "If they are peaks, name them 'chr1:100-200' or add those var columns."
            )

    @staticmethod
    def _open_entries(X: sp.csr_matrix) -> np.ndarray | None:
        """Mask of stored entries that are open (> 0), or None when all are (the usual case)."""
        open_ = X.data > 0
        return None if open_.all() else open_

    @staticmethod
    def _per_row(values: np.ndarray, X: sp.csr_matrix, reduce=np.add) -> np.ndarray:
        """Reduce per-entry values within each row (rows without stored entries give 0)."""
        out = np.zeros(X.shape[0], dtype=values.dtype)
        filled = np.diff(X.indptr) > 0
        if values.size:
            out[filled] = reduce.reduceat(values, X.indptr[:-1][filled])
        return out

    def _fit(self, X: sp.csr_matrix, adata: ad.AnnData) -> None:
        # Works on the CSR arrays directly: no copy of the cells x peaks matrix is made.
        coords = parse_peaks(adata.var)
        n_cells = X.shape[0]
        open_ = self._open_entries(X)
        columns = X.indices if open_ is None else X.indices[open_]
        open_in = np.bincount(columns, minlength=X.shape[1])
        keep = (open_in >= self.min_cell_fraction * n_cells) & (open_in > 0)
        if keep.sum() < 2:
            raise ButterflyInputError(
                f"Only {int(keep.sum())} of {X.shape[1]} peaks are open in at least {self.min_cell_fraction:.2%} "
                f"of the {n_cells} training cells. Use more cells, or lower min_cell_fraction."
            )
        kept = np.flatnonzero(keep)
        # Aligned by coordinates; reported under the user's own peak names.
        self.input_features_ = coords.names[kept].astype(object)
        self.features_ = adata.var_names.to_numpy()[kept].astype(object)
        self.chrom_ = np.asarray(coords.chrom)[kept].astype(object)
        self.start_, self.end_ = coords.start[kept], coords.end[kept]
        self.idf_ = np.log1p(n_cells / open_in[kept]).astype(np.float64)
        entry_idf = np.zeros(X.shape[1], dtype=np.float32)
        entry_idf[kept] = self.idf_
        entry_idf = entry_idf[X.indices]  # IDF of each stored entry (0 for dropped peaks)
        if open_ is not None:
            entry_idf[~open_] = 0
        open_peaks = self._per_row((entry_idf > 0).astype(np.int32), X)
        self.median_open_peaks_ = float(np.median(open_peaks))
        # S = max over cells of (largest IDF among the cell's open peaks) / (its number of open peaks)
        largest = self._per_row(entry_idf, X, np.maximum)
        self.scale_ = float(np.max(largest[open_peaks > 0] / open_peaks[open_peaks > 0]))

    def _transform(self, X: sp.csr_matrix, adata: ad.AnnData) -> sp.csr_matrix:
        open_ = self._open_entries(X)
        if open_ is not None:
            X = sp.csr_matrix(
                (
                    X.data[open_],
                    X.indices[open_],
                    np.r_[0, np.cumsum(self._per_row(open_.astype(np.int64), X))],
                ),
                shape=X.shape,
            )
        open_peaks = np.diff(X.indptr)
        n_closed = int(np.sum(open_peaks == 0))
        if n_closed:
            warnings.warn(
                f"{n_closed} cell(s) have no open peak among the model's {len(self.features_)} peaks; "
                "their input is all zeros, so their translation carries no cell-specific information.",
                UserWarning,
                stacklevel=3,
            )
        # value = TF * IDF / S = (1 / open peaks of the cell) * IDF[peak] / S, built straight from the index arrays
        scaled_idf = (self.idf_ / self.scale_).astype(np.float32)
        inverse_open = (1.0 / np.maximum(open_peaks, 1)).astype(np.float32)
        data = scaled_idf[X.indices]
        data *= np.repeat(inverse_open, open_peaks)
        np.minimum(data, 1.0, out=data)
        out = sp.csr_matrix((data, X.indices.copy(), X.indptr.copy()), shape=X.shape)
        out.sort_indices()
        return out

    def _output_var(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"chrom": self.chrom_.astype(str), "start": self.start_, "end": self.end_},
            index=pd.Index(self.features_.astype(str)),
        )

    def inverse_transform(self, values, library_size=None, *, copy: bool = True) -> np.ndarray:
        """Turn scaled TF-IDF values (e.g. predictions) back into counts (paper eq. 12).

        ``count[i, j] = value[i, j] * S / IDF[j] * library_size[i]``, where ``library_size`` is the number of
        open (kept) peaks of each cell. For cells whose ATAC was never measured, it defaults to the median
        of the training cells. Float32 values give float32 counts (half the memory), others float64;
        ``copy=False`` turns a dense array of that type into counts in place.
        """
        self._check_fitted()
        values = values.toarray() if sp.issparse(values) else np.asarray(values)
        if values.ndim != 2 or values.shape[1] != self.n_features:
            raise ButterflyInputError(
                f"inverse_transform needs cells x the {self.n_features} fitted peaks (in their order, as "
                f"translate returns them), got shape {values.shape}."
            )
        dtype = np.float32 if values.dtype == np.float32 else np.float64
        library_size = self.library_sizes(values.shape[0], library_size)
        counts = values.astype(dtype, copy=copy)  # the products below work in place on it
        counts *= (self.scale_ / self.idf_).astype(dtype)[None, :]
        counts *= library_size.astype(dtype)[:, None]
        return counts

    def library_sizes(self, n_cells: int, library_size=None) -> np.ndarray:
        """Open-peak counts of ``n_cells`` cells for :meth:`inverse_transform`: ``library_size`` checked, or the
        training median for every cell."""
        self._check_fitted()
        if library_size is None:
            return np.full(n_cells, self.median_open_peaks_)
        library_size = np.asarray(library_size, dtype=np.float64).reshape(-1)
        if library_size.shape != (n_cells,) or not (np.isfinite(library_size) & (library_size >= 0)).all():
            raise ButterflyInputError(
                f"library_size needs one finite, non-negative open-peak count per cell ({n_cells} cells); got "
                f"{library_size.size} value(s), from {library_size.min(initial=np.inf)} to "
                f"{library_size.max(initial=-np.inf)}."
            )
        return library_size

    def _state(self):
        config = {
            "params": {"min_cell_fraction": self.min_cell_fraction},
            "scale": self.scale_,
            "median_open_peaks": self.median_open_peaks_,
        }
        arrays = {"idf": self.idf_, "chrom": self.chrom_.astype(str), "start": self.start_, "end": self.end_}
        return config, arrays

    def _load_state(self, config, arrays):
        self.scale_ = float(config["scale"])
        self.median_open_peaks_ = float(config["median_open_peaks"])
        self.idf_ = np.asarray(arrays["idf"], dtype=np.float64)
        self.chrom_ = np.asarray(arrays["chrom"]).astype(object)
        self.start_ = np.asarray(arrays["start"], dtype=np.int64)
        self.end_ = np.asarray(arrays["end"], dtype=np.int64)


def binarize_accessibility(counts, *, copy: bool = True, chunk: int = 4096) -> np.ndarray:
    """Binarise predicted ATAC counts: 1 where a value exceeds both its row mean and its column mean.

    Returns float32 0/1 values; ``copy=False`` writes them into a dense float32 ``counts`` itself. Rows are
    compared ``chunk`` at a time, so no whole-matrix temporaries are made.
    """
    counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    if counts.ndim != 2:
        raise ButterflyInputError(
            f"binarize_accessibility needs a cells x peaks matrix, got shape {counts.shape}."
        )
    col_mean = counts.mean(axis=0, dtype=np.float64)
    in_place = not copy and counts.dtype == np.float32 and counts.flags.writeable
    binary = counts if in_place else np.empty(counts.shape, np.float32)
    for start in range(0, counts.shape[0], chunk):
        rows = slice(start, start + chunk)
        binary[rows] = binary_block(counts[rows], col_mean)
    return binary


def binary_block(block: np.ndarray, col_mean: np.ndarray) -> np.ndarray:
    """:func:`binarize_accessibility` of whole rows, given the column means of all rows (float64)."""
    return (block > block.mean(axis=1, keepdims=True, dtype=np.float64)) & (block > col_mean)


class ADTPreprocessor(Preprocessor):
    """Protein (ADT) counts: centred log-ratio per cell.

    ``clr(x)_j = log1p(x_j / g(x))`` with ``g(x) = exp(mean_j log1p(x_j))``: the geometric mean is taken with a
    pseudo-count of one, so zero counts are defined and stay zero. This is the CLR of Seurat
    (``NormalizeData(method="CLR", margin=2)``) and muon, the form the NeurIPS 2021 CITE-seq data use. It
    needs no fitted numbers beyond the protein panel, so new cells are transformed exactly like training
    cells.
    """

    kind = "adt"

    def _fit(self, X: sp.csr_matrix, adata: ad.AnnData) -> None:
        if adata.n_vars > MAX_ADT_FEATURES:
            warnings.warn(
                f"The adt training data has {adata.n_vars} features; antibody panels hold tens to a few "
                "hundred proteins. If these are genes, use the 'rna' modality.",
                UserWarning,
                stacklevel=4,
            )
        self.input_features_ = adata.var_names.to_numpy().astype(object)
        self.features_ = self.input_features_

    def _transform(self, X: sp.csr_matrix, adata: ad.AnnData) -> sp.csr_matrix:
        logged = X.copy()
        np.log1p(logged.data, out=logged.data)
        geometric_mean = np.exp(row_sums(logged) / X.shape[1])
        out = _scale_rows(X, 1.0 / geometric_mean)
        np.log1p(out.data, out=out.data)
        return out


class ExpressionPreprocessor(Preprocessor):
    """Already-normalised expression (e.g. the log-normalised Kang/scGen perturbation data), used as given.

    Values must be finite and non-negative; features are aligned by name.
    """

    kind = "expression"
    requires_integer = False

    def _check_feature_kind(self, adata: ad.AnnData, *, what: str, fix: str) -> None:
        """Any features, region-named ones included: this kind is the generic 'use as given' path."""

    def _fit(self, X: sp.csr_matrix, adata: ad.AnnData) -> None:
        self.input_features_ = adata.var_names.to_numpy().astype(object)
        self.features_ = self.input_features_

    def _transform(self, X: sp.csr_matrix, adata: ad.AnnData) -> sp.csr_matrix:
        return X


_KINDS: dict[str, type[Preprocessor]] = {
    cls.kind: cls for cls in (RNAPreprocessor, ATACPreprocessor, ADTPreprocessor, ExpressionPreprocessor)
}


def preprocessor_from_state(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Preprocessor:
    """Restore a fitted preprocessor saved with :meth:`Preprocessor.state`."""
    kind = config.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"Unknown preprocessor kind {kind!r}; known: {sorted(_KINDS)}.")
    return _KINDS[kind].from_state(config, arrays)
