"""Fitted, saveable preprocessing of chromatin accessibility (ATAC) peaks, and the binarisation of
predicted counts. See :mod:`butterfly.pp` for the shared machinery (fit on training cells,
transform any cells, features aligned by name; peaks here by their coordinates)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validation import ButterflyInputError, _preview
from ._expression import MIN_FEATURE_OVERLAP, Preprocessor
from ._genome import PeakCoordinates, has_coordinate_columns, looks_like_peaks, overlap_matrix, parse_peaks


class ATACPreprocessor(Preprocessor):
    """ATAC counts: binarise, keep peaks open in enough training cells, TF-IDF, divide by the training max.

    TF = x / (row sum of the binarised cell over the kept peaks); IDF = log(1 + n / column sum), fitted on
    the training cells; the result is divided by its training maximum ``S`` so training values lie in
    [0, 1] (values of new cells above 1 are clipped to 1). Peaks are matched between datasets by their
    coordinates (``chr1:100-200``, ``chr1-100-200`` and ``chr1_100_200`` are the same peak), or by overlap
    (:meth:`transform` with ``peak_matching="overlap"``).

    Parameters
    ----------
    min_cell_fraction
        Keep peaks open in at least this fraction of training cells (paper: 0.005).

    Examples
    --------
    >>> import butterfly as bf
    >>> _, atac = bf.datasets.snare_mcc_demo()
    >>> pre = bf.ATACPreprocessor().fit(atac[:1500])
    >>> scaled = pre.transform(atac[1500:])  # peaks matched by their coordinates
    >>> scaled.shape, list(scaled.var.columns)
    ((500, 5578), ['chrom', 'start', 'end'])
    >>> bool(scaled.X.max() <= 1)
    True
    """

    kind = "atac"
    computed_columns = frozenset({"chrom", "start", "end"})
    alignment_hint = (
        " If the input's peaks were called apart from the training data's, match them by overlap: "
        "translate(..., peak_matching='overlap')."
    )

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
        return _unique_peak_names(adata)

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
        _unique_peak_names(adata)
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
        var = super()._output_var()
        var["chrom"], var["start"], var["end"] = self.chrom_.astype(str), self.start_, self.end_
        return var

    def transform(self, adata: ad.AnnData, *, peak_matching: str = "exact") -> ad.AnnData:
        """Apply the fitted transform to any cells; returns a new AnnData (obs copied).

        ``peak_matching="exact"`` matches the input's peaks to the fitted ones by coordinates. ``"overlap"``
        gives each fitted peak the counts of the input peaks that overlap it (by at least one base; ``chr1``
        and ``1`` are one chromosome), for peaks called apart from the training data's (another sample or
        peak caller), few of which match exactly.
        """
        if peak_matching == "exact":
            return super().transform(adata)
        if peak_matching != "overlap":
            raise ButterflyInputError(f"peak_matching must be 'exact' or 'overlap', got {peak_matching!r}.")
        return self._transform_aligned(adata, self._align_by_overlap)

    def _align_by_overlap(self, X: sp.csr_matrix, adata: ad.AnnData) -> sp.csr_matrix:
        fitted = PeakCoordinates(chrom=self.chrom_, start=self.start_, end=self.end_)
        overlaps = overlap_matrix(parse_peaks(adata.var), fitted)
        covered = int((overlaps.getnnz(axis=0) > 0).sum())
        if covered == 0:
            raise ButterflyInputError(
                f"None of the input's {adata.n_vars} peaks overlaps any of the model's {len(self.features_)} "
                f"peaks (input e.g. {_preview(adata.var_names)}; model e.g. {_preview(self.features_)}). "
                "Check that both use the same genome build (e.g. hg38 vs hg19)."
            )
        if covered < MIN_FEATURE_OVERLAP * len(self.features_):
            warnings.warn(
                f"Only {covered} of the model's {len(self.features_)} peaks overlap a peak of the input; the "
                "others are read as closed in every cell.",
                UserWarning,
                stacklevel=4,
            )
        aligned = (X @ overlaps).tocsr()
        aligned.sort_indices()
        return aligned

    def inverse_transform(self, values, library_size=None, *, copy: bool = True) -> np.ndarray:
        """Turn scaled TF-IDF values (e.g. predictions) back into counts (paper eq. 12).

        ``count[i, j] = value[i, j] * S / IDF[j] * library_size[i]``, where ``library_size`` is the number of
        open (kept) peaks of each cell. For cells whose ATAC was never measured, it defaults to the median
        of the training cells. Float32 values give float32 counts (half the memory), others float64;
        ``copy=False`` turns a dense array of that type into counts in place.

        Examples
        --------
        >>> import numpy as np, butterfly as bf
        >>> _, atac = bf.datasets.snare_mcc_demo()
        >>> pre = bf.ATACPreprocessor().fit(atac[:1500])
        >>> scaled = pre.transform(atac[1500:1503]).X.toarray()
        >>> counts = pre.inverse_transform(scaled, library_size=[126, 94, 47])  # the cells' open peaks
        >>> counts.shape, bool(np.all((counts > 0) == (scaled > 0)))
        ((3, 5578), True)
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

    Examples
    --------
    >>> import numpy as np
    >>> binarize_accessibility(np.array([[0.1, 2.0], [0.3, 0.2]]))
    array([[0., 1.],
           [1., 0.]], dtype=float32)
    """
    counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    if counts.ndim != 2:
        raise ButterflyInputError(
            f"binarize_accessibility needs a cells x peaks matrix, got shape {counts.shape}."
        )
    bad = int(np.count_nonzero(~np.isfinite(counts))) if counts.dtype.kind == "f" else 0
    if bad:
        raise ButterflyInputError(
            f"binarize_accessibility got {bad} NaN or infinite value(s): a mean over them is undefined, so "
            "every peak of their rows and columns would read as closed. Remove or impute them first."
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


def _unique_peak_names(adata: ad.AnnData) -> pd.Index:
    """The peaks' coordinate names (``chr1:100-200``), refusing two peaks at the same coordinates: their columns
    could not be told apart when cells are aligned to the model's peaks."""
    names = pd.Index(parse_peaks(adata.var).names)
    if names.is_unique:
        return names
    repeated = names[names.duplicated(keep=False)]
    first = repeated[0]
    holders = adata.var_names[np.flatnonzero(names == first)].tolist()
    raise ButterflyInputError(
        f"{names.duplicated().sum()} peak(s) repeat the coordinates of another under a different name: {first} is "
        f"{_preview(holders)}. Keep one of each, e.g. atac = atac[:, ~atac.var_names.isin({holders[1:]!r})], or "
        "sum such peaks' counts into one column first."
    )


#: Entries of validation cells x peaks the probability calibration is fitted on (a random subset beyond).
CALIBRATION_ENTRIES = 2_000_000
CALIBRATION_KNOTS = 201


def fit_open_calibration(estimate, opened, *, seed: int = 0) -> dict:
    """Fit the probability that a peak is open on validation cells, from ``estimate``, the uncalibrated chance
    (the ``"counts"`` form of the model's output: its scaled TF-IDF times ``S / IDF`` times the median open
    peaks, paper eq. 12), and ``opened``, whether each entry was measured open: isotonic regression of
    ``opened`` on ``log(estimate)`` (scikit-learn's, on at most :data:`CALIBRATION_ENTRIES` entries), kept as
    its values at :data:`CALIBRATION_KNOTS` quantiles of the log estimate and made strictly increasing by
    1e-7 a knot. Between knots it is linear, so a calibrated translation ranks peaks and cells as the estimate
    does (every AUROC the same, up to float32 rounding), and it inverts (:func:`uncalibrated`)."""
    from sklearn.isotonic import IsotonicRegression

    x = np.log(np.maximum(np.asarray(estimate, dtype=np.float64).ravel(), 1e-12))
    y = (np.asarray(opened).ravel() > 0).astype(np.float64)
    if x.size > CALIBRATION_ENTRIES:
        keep = np.random.default_rng(seed).choice(x.size, CALIBRATION_ENTRIES, replace=False)
        x, y = x[keep], y[keep]
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)
    knots = np.unique(np.quantile(x, np.linspace(0, 1, CALIBRATION_KNOTS)))
    values = np.minimum(np.maximum.accumulate(iso.predict(knots)) + 1e-7 * np.arange(knots.size), 1.0)
    return {"log_estimate": knots.tolist(), "probability": values.tolist(), "entries": int(x.size)}


def calibrated(estimate: np.ndarray, calibration: dict | None) -> np.ndarray:
    """The probability that each peak is open, from the uncalibrated ``estimate`` (float32): the fitted
    calibration (constant beyond its first and last knots), or without one (a model saved before butterfly
    calibrated) the estimate itself clipped to [0, 1]."""
    out = np.asarray(estimate, dtype=np.float32)
    if calibration is None:
        return np.clip(out, 0.0, 1.0, out=out)
    log_estimate = np.log(np.maximum(out, 1e-12))
    knots, values = np.asarray(calibration["log_estimate"]), np.asarray(calibration["probability"])
    return np.interp(log_estimate, knots, values).astype(np.float32)


def uncalibrated(probability: np.ndarray, calibration: dict | None) -> np.ndarray:
    """The inverse of :func:`calibrated`: the estimate a probability came from (float64)."""
    p = np.asarray(probability, dtype=np.float64)
    if calibration is None:
        return np.clip(p, 0.0, 1.0)
    knots, values = np.asarray(calibration["log_estimate"]), np.asarray(calibration["probability"])
    return np.exp(np.interp(p, values, knots))
