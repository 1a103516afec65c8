"""Peak coordinates: parse them from var columns or names, order chromosomes naturally, group peaks."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validation import ButterflyInputError, _preview

# chrom, then start and end separated by ':' '-' or '_' (chrom itself may contain '_' or '.', e.g. chrUn_GL000220v1)
_PEAK_NAME = re.compile(r"^(?P<chrom>.+)[:\-_](?P<start>\d+)[\-_](?P<end>\d+)$")

_CHROM_COLUMNS = ("chrom", "chr", "chromosome", "seqnames", "seqname", "Chromosome")
_START_COLUMNS = ("start", "chromStart", "start_position", "Start")
_END_COLUMNS = ("end", "chromEnd", "end_position", "End")


@dataclass(frozen=True)
class PeakCoordinates:
    """Chromosome, start and end of each peak, in the input order."""

    chrom: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @property
    def names(self) -> np.ndarray:
        """Canonical ``chrom:start-end`` names, used to align peaks between datasets."""
        return np.array([f"{c}:{s}-{e}" for c, s, e in zip(self.chrom, self.start, self.end, strict=True)])


def _first_column(var: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in var.columns), None)


def has_coordinate_columns(var: pd.DataFrame) -> bool:
    """Whether ``var`` has chromosome, start and end columns (under any of the accepted names)."""
    return all(_first_column(var, c) for c in (_CHROM_COLUMNS, _START_COLUMNS, _END_COLUMNS))


def looks_like_peaks(names) -> bool:
    """Whether most names read as genomic intervals (``chr1:100-200`` and the like)."""
    names = pd.Index(names)
    names = names[:: len(names) // 10_000 + 1].astype(str)  # an even sample decides as well as all
    return len(names) > 0 and bool(names.str.match(_PEAK_NAME).mean() > 0.5)


def parse_peaks(var) -> PeakCoordinates:
    """Read peak coordinates from ``var`` columns (chrom/start/end or aliases) or from the var names.

    ``var``: an AnnData's ``var`` (or the AnnData), or the peak names themselves. Names may be
    ``chr1:100-200``, ``chr1-100-200`` or ``chr1_100_200``.

    Examples
    --------
    >>> import pandas as pd
    >>> peaks = parse_peaks(pd.DataFrame(index=["chr1:100-200", "chr2-50-80"]))
    >>> list(peaks.chrom), peaks.start.tolist(), peaks.end.tolist()
    (['chr1', 'chr2'], [100, 50], [200, 80])
    >>> parse_peaks(["chrX_5_10"]).names.tolist()
    ['chrX:5-10']
    """
    if hasattr(var, "var_names"):  # an AnnData
        var = var.var
    elif not isinstance(var, pd.DataFrame):  # the names
        var = pd.DataFrame(index=pd.Index(var))
    chrom_col, start_col, end_col = (
        _first_column(var, _CHROM_COLUMNS),
        _first_column(var, _START_COLUMNS),
        _first_column(var, _END_COLUMNS),
    )
    if chrom_col and start_col and end_col:
        try:
            start = var[start_col].to_numpy().astype(np.int64)
            end = var[end_col].to_numpy().astype(np.int64)
        except (TypeError, ValueError) as err:
            raise ButterflyInputError(
                f"Peak columns {start_col!r}/{end_col!r} must hold whole numbers: {err}"
            ) from None
        chrom = var[chrom_col].astype(str).to_numpy()
        return _checked(PeakCoordinates(chrom=chrom.astype(object), start=start, end=end), var.index)

    names = var.index.astype(str)
    parts = names.str.extract(_PEAK_NAME)
    bad = parts["chrom"].isna().to_numpy()
    if bad.any():
        raise ButterflyInputError(
            f"{int(bad.sum())} of {len(names)} peak name(s) could not be read as coordinates, for example "
            f"{_preview(names[bad])}. Name peaks 'chr1:100-200' (or chr1-100-200, chr1_100_200), or add var "
            "columns 'chrom', 'start' and 'end'."
        )
    return _checked(
        PeakCoordinates(
            chrom=parts["chrom"].to_numpy().astype(object),
            start=parts["start"].to_numpy().astype(np.int64),
            end=parts["end"].to_numpy().astype(np.int64),
        ),
        names,
    )


def _checked(coords: PeakCoordinates, names) -> PeakCoordinates:
    """Refuse peaks that end before they start (swapped columns, or names that are not intervals)."""
    bad = coords.end < coords.start
    if bad.any():
        raise ButterflyInputError(
            f"{int(bad.sum())} peak(s) end before they start, for example {_preview(np.asarray(names)[bad])}. "
            "Check that start and end are not swapped."
        )
    return coords


def _bare_chromosomes(chrom) -> np.ndarray:
    """Chromosome names without a leading 'chr' (UCSC's chr1 and Ensembl's 1 are one chromosome)."""
    return (
        pd.Index(np.asarray(chrom, dtype=object))
        .astype(str)
        .str.replace(r"^chr", "", case=False, regex=True)
        .to_numpy()
    )


def overlap_matrix(query: PeakCoordinates, reference: PeakCoordinates) -> sp.csr_matrix:
    """``(query peaks x reference peaks)`` matrix of ones where two peaks overlap by at least one base.

    Intervals are half-open (BED's ``[start, end)``); chromosomes match with or without a 'chr' prefix. Per
    chromosome, the reference peaks are sorted by start once and each query peak's candidates found by
    binary search, so the work grows with the number of peaks and of overlaps, not their product.

    Examples
    --------
    >>> import pandas as pd
    >>> called = parse_peaks(pd.DataFrame(index=["chr1:90-150", "chr1:400-420", "2:10-30"]))
    >>> model = parse_peaks(pd.DataFrame(index=["chr1:100-200", "chr1:140-300", "chr2:0-20"]))
    >>> overlap_matrix(called, model).toarray()
    array([[1., 1., 0.],
           [0., 0., 0.],
           [0., 0., 1.]], dtype=float32)
    """
    query_chrom, reference_chrom = _bare_chromosomes(query.chrom), _bare_chromosomes(reference.chrom)
    rows, columns = [], []
    for chrom in np.intersect1d(query_chrom, reference_chrom):
        q = np.flatnonzero(query_chrom == chrom)
        r = np.flatnonzero(reference_chrom == chrom)
        r = r[np.argsort(reference.start[r], kind="stable")]
        # candidates: reference peaks starting before the query ends, from the first whose running maximum
        # end passes the query's start (the running maximum keeps the search valid for nested peaks)
        first = np.searchsorted(np.maximum.accumulate(reference.end[r]), query.start[q], side="right")
        last = np.searchsorted(reference.start[r], query.end[q], side="left")
        n = np.maximum(last - first, 0)
        pair_query = np.repeat(q, n)
        pair_reference = r[np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(first, n)]
        overlapping = reference.end[pair_reference] > query.start[pair_query]
        rows.append(pair_query[overlapping])
        columns.append(pair_reference[overlapping])
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    columns = np.concatenate(columns) if columns else np.zeros(0, np.int64)
    shape = (len(query.start), len(reference.start))
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, columns)), shape=shape)


def chromosome_sort_key(name: str) -> tuple:
    """Natural order: chr1, chr2, ..., chr10, ..., chrX, chrY, then any other contig alphabetically."""
    bare = re.sub(r"^chr", "", str(name), flags=re.IGNORECASE)
    if bare.isdigit():
        return (0, int(bare), "")
    if bare.upper() == "X":
        return (1, 0, "")
    if bare.upper() == "Y":
        return (1, 1, "")
    return (2, 0, str(name))


def group_by_chromosome(chrom: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Return the chromosomes in natural order and, for each peak, the index of its chromosome in that list."""
    chromosomes = sorted(pd.unique(np.asarray(chrom, dtype=object)), key=chromosome_sort_key)
    codes = pd.Index(chromosomes).get_indexer(np.asarray(chrom, dtype=object))
    return [str(c) for c in chromosomes], codes.astype(np.int64)


def chromosome_order(codes: np.ndarray) -> np.ndarray:
    """The permutation that groups peaks by chromosome (stable within a chromosome).

    ``x[:, order]`` is grouped; ``grouped[:, np.argsort(order)]`` is back in the user's order.
    """
    return np.argsort(codes, kind="stable")
