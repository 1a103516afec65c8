"""Fitted, saveable preprocessing for each modality.

Each preprocessor is fitted on training cells (``fit``) and then applied unchanged to any cells
(``transform``), including cells the model has never seen. New data are aligned to the fitted features by
name: reordered, missing features zero-filled with a warning, and refused when fewer than
``MIN_FEATURE_OVERLAP`` (half) of the fitted features are present. Everything stays sparse (CSR);
nothing densifies a cells x features matrix. The fitted state is plain arrays plus a JSON-able dict
(see :meth:`Preprocessor.state`), never a pickle.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validation import (
    NORMALISED_ON_PURPOSE,
    ButterflyInputError,
    _preview,
    as_csr,
    check_nonempty_cells,
    check_unique_names,
    check_values,
    counts_in_raw,
    row_sums,
)
from ._genome import looks_like_peaks

#: Smallest fraction of the fitted features a new dataset must contain before ``transform`` accepts it.
MIN_FEATURE_OVERLAP = 0.5

_ORDER_FIX = (
    "Pass the datasets in the order of modalities=, e.g. Butterfly(rna, atac, modalities=('rna', 'atac'))."
)
_SOURCE_FIX = (
    "Check that source= names the modality these cells were measured in, and that paired cells come in the "
    "model's order of modalities=."
)

#: More proteins than any antibody panel holds: an "adt" dataset this wide is probably something else.
MAX_ADT_FEATURES = 1000


def align_features(
    X: sp.csr_matrix,
    names: pd.Index,
    reference: np.ndarray,
    *,
    what: str,
    min_overlap: float = MIN_FEATURE_OVERLAP,
    hint: str = "",
    var: pd.DataFrame | None = None,
) -> sp.csr_matrix:
    """Return ``X`` with its columns put in the order of ``reference``, matching by name.

    Features of ``reference`` missing from ``names`` become zero columns (with a warning naming how many);
    extra features are dropped. Raises :class:`ButterflyInputError` when fewer than ``min_overlap`` of the
    reference features are present (its message ends with ``hint``, and names a column of ``var``, the
    input's feature table, that holds the reference names).
    """
    names = pd.Index(names)
    if not names.is_unique:
        repeated = names[names.duplicated()].unique()
        raise ButterflyInputError(
            f"{len(repeated)} {what} feature name(s) appear more than once (e.g. {_preview(repeated)}), so their "
            "columns cannot be matched to the model's features. Make them unique, e.g. adata.var_names_make_unique(), "
            "or sum the repeated features' counts into one column."
        )
    if len(names) == len(reference) and np.array_equal(names.values.astype(str), reference.astype(str)):
        return X
    position = names.get_indexer(pd.Index(reference))
    present = position >= 0
    n_present = int(present.sum())
    if n_present < min_overlap * len(reference):
        upper = pd.Index(names.astype(str).str.upper())
        n_case = int((upper.get_indexer(pd.Index(reference.astype(str)).str.upper()) >= 0).sum())
        case = (
            f" {n_case} of them match when letter case is ignored: are the two from different species (mouse "
            "'Gapdh', human 'GAPDH')? A model translates cells of the species it was trained on."
            if n_case >= min_overlap * len(reference)
            else ""
        )
        column = _column_of_names(var, reference, min_overlap) if var is not None else None
        other_names = (
            f" The input's var[{column!r}] holds the fitted names: use it, e.g. adata = adata.copy(); "
            f"adata.var_names = adata.var[{column!r}].astype(str); adata.var_names_make_unique()."
            if column is not None
            else ""
        )
        raise ButterflyInputError(
            f"Only {n_present} of the {len(reference)} {what} features the model was fitted on are present in "
            f"the input (at least {min_overlap:.0%} are needed). Fitted features look like "
            f"{_preview(reference)}; the input's look like {_preview(names)}. Check that both use the same "
            f"kind of feature names (gene symbols vs Ensembl IDs, same genome build and peak set)."
            f"{other_names}{case}{hint}"
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


def _column_of_names(var: pd.DataFrame, reference: np.ndarray, min_overlap: float) -> str | None:
    """The first text column of ``var`` holding at least ``min_overlap`` of the ``reference`` names."""
    wanted = pd.Index(reference.astype(str))
    for column in var.columns:
        if _is_text(var[column]) and wanted.isin(var[column].astype(str)).sum() >= min_overlap * len(wanted):
            return str(column)
    return None


def _is_text(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(values.dtype)


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
    #: Columns of the output ``var`` the preprocessor computes itself (not carried from the training data).
    computed_columns: ClassVar[frozenset[str]] = frozenset()
    #: Appended to the error for new data whose features are mostly not the fitted ones.
    alignment_hint: ClassVar[str] = ""
    #: Appended to the error for new data that are not counts: another form ``transform`` accepts.
    other_input_hint: ClassVar[str] = ""

    def __init__(self) -> None:
        self.input_features_: np.ndarray | None = None  # fitted features new data are aligned to
        self.features_: np.ndarray | None = None  # features of the output
        #: Text columns of the training data's ``var`` for the output features (gene IDs, feature types...),
        #: carried into translated AnnData.
        self.feature_annotations_: dict[str, np.ndarray] = {}

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
        self.feature_annotations_ = _text_columns(adata.var, self.features_, skip=self.computed_columns)
        return self

    def transform(self, adata: ad.AnnData) -> ad.AnnData:
        """Apply the fitted transform to any cells; returns a new AnnData (obs copied)."""
        return self._transform_aligned(adata, self._align_by_name)

    def _transform_aligned(self, adata: ad.AnnData, align, convert=None, counts: bool = True) -> ad.AnnData:
        """:meth:`transform` with the input's columns put in the fitted features' order by ``align(X, adata)``
        and then converted by ``convert(aligned, adata)`` (default: the fitted transform). ``counts``: whether
        the input must be raw counts where the modality's are."""
        self._check_fitted()
        what = f"The {self.kind} data"
        X = self._checked_matrix(adata, what=what, check_cells=False, counts=counts)
        self._check_feature_kind(adata, what=what, fix=_SOURCE_FIX)
        # Feature names first: input with the wrong kind of names often has "empty" cells as well, and the
        # names are what the user has to fix.
        aligned = align(X, adata)
        check_nonempty_cells(X, adata.obs_names, what=what, paired=False)
        converted = (convert or self._transform)(aligned, adata)
        return ad.AnnData(X=converted, obs=adata.obs.copy(), var=self._output_var())

    def _align_by_name(self, X: sp.csr_matrix, adata: ad.AnnData) -> sp.csr_matrix:
        return align_features(
            X, self._input_names(adata), self.input_features_, what=self.kind, hint=self.alignment_hint,
            var=adata.var,
        )  # fmt: skip

    def fit_transform(self, adata: ad.AnnData) -> ad.AnnData:
        return self.fit(adata).transform(adata)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted state as (JSON-able config, named arrays). Restore with :func:`preprocessor_from_state`."""
        self._check_fitted()
        config, arrays = self._state()
        annotations = list(self.feature_annotations_)
        config = {"kind": self.kind, **config, "feature_annotations": annotations}
        arrays = {
            "input_features": self.input_features_.astype(str),
            "features": self.features_.astype(str),
            **arrays,
            # numbered, not named: a column name may hold any character
            **{f"annotation_{i}": self.feature_annotations_[c] for i, c in enumerate(annotations)},
        }
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Preprocessor:
        obj = cls(**config.get("params", {}))
        obj.input_features_ = np.asarray(arrays["input_features"]).astype(object)
        obj.features_ = np.asarray(arrays["features"]).astype(object)
        obj.feature_annotations_ = {
            column: np.asarray(arrays[f"annotation_{i}"]).astype(str)
            for i, column in enumerate(config.get("feature_annotations", []))  # none in files before them
        }
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
        """``var`` of translated AnnData: the output features with the training data's text annotations."""
        var = pd.DataFrame(index=pd.Index(self.features_.astype(str)))
        for column, values in self.feature_annotations_.items():
            var[column] = values
        return var

    # -- helpers ------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.features_ is None:
            raise RuntimeError(f"This {type(self).__name__} is not fitted yet; call fit(adata) first.")

    def _checked_matrix(
        self, adata: ad.AnnData, *, what: str, check_cells: bool = True, counts: bool = True
    ) -> sp.csr_matrix:
        if not isinstance(adata, ad.AnnData):
            raise ButterflyInputError(f"{what} must be an AnnData object, got {type(adata).__name__}.")
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise ButterflyInputError(f"{what} is empty ({adata.n_obs} cells x {adata.n_vars} features).")
        check_unique_names(adata, what=what)
        X = as_csr(adata.X)
        # fitting needs counts; new cells (no check_cells) may come in another form the modality accepts
        hint = NORMALISED_ON_PURPOSE if check_cells else self.other_input_hint
        hint = counts_in_raw(adata) + hint if self.requires_integer and counts else hint
        check_values(X, what=what, require_integer=self.requires_integer and counts, hint=hint)
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

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, _ = bf.datasets.snare_mcc_demo()
    >>> pre = bf.RNAPreprocessor(n_top_genes=500).fit(rna[:1500])
    >>> pre.transform(rna[1500:]).shape  # any cells, aligned to the fitted genes by name
    (500, 500)
    """

    kind = "rna"
    other_input_hint = (
        " Cells already log-normalised (scanpy's normalize_total, then log1p) translate as they are with the "
        "total they were scaled to: normalized_to=10000, say."
    )

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

            # only the normalised dispersions are read (the top genes are chosen below), so scanpy is not asked to
            # cut at n_top_genes: its cut fails with an IndexError when no gene's dispersion is defined
            table = sc.pp.highly_variable_genes(ad.AnnData(logged), flavor=self.hvg_flavor, inplace=False)
            mask = _top_dispersions(table["dispersions_norm"].to_numpy(dtype=np.float64), self.n_top_genes)
        self.highly_variable_ = mask
        self.features_ = self.input_features_[mask]

    def _transform(self, X: sp.csr_matrix, adata: ad.AnnData) -> sp.csr_matrix:
        logged = self._normalize(X)
        if self.highly_variable_.all():
            return logged
        return logged[:, np.flatnonzero(self.highly_variable_)]

    def transform(self, adata: ad.AnnData, *, normalized_to: float | None = None) -> ad.AnnData:
        """Apply the fitted transform to any cells; returns a new AnnData (obs copied).

        ``adata`` holds raw counts, or with ``normalized_to`` log-normalised values: ``log1p`` of counts
        scaled to ``normalized_to`` per cell (scanpy's ``normalize_total(target_sum=...)`` then ``log1p``), or
        another model's RNA translation (its ``uns["butterfly"]["normalized_to"]``). They are rescaled to the
        fitted total, ``log1p(expm1(x) * target_sum_ / normalized_to)``, and only the selected genes are
        needed: at least half of them, the rest read as zero. This equals the counts' transform when the input
        was normalised over the genes the model was fitted on, and is near it otherwise.
        """
        if normalized_to is None:
            return super().transform(adata)
        number = isinstance(normalized_to, numbers.Real) and not isinstance(normalized_to, bool)
        if not (number and np.isfinite(normalized_to) and normalized_to > 0):
            raise ButterflyInputError(
                f"normalized_to must be the positive total the cells were scaled to (e.g. 1e4), got "
                f"{normalized_to!r}."
            )
        return self._transform_aligned(
            adata, self._align_selected, lambda X, _: self._rescale(X, float(normalized_to)), counts=False
        )

    def _align_selected(self, X: sp.csr_matrix, adata: ad.AnnData) -> sp.csr_matrix:
        return align_features(
            X, self._input_names(adata), self.features_, what=self.kind, var=adata.var,
            hint=" A translation into RNA holds only the genes its model predicts: train this model on those "
            "genes, e.g. rna = rna[:, rna.var_names.isin(translated.var_names)].",
        )  # fmt: skip

    def _rescale(self, X: sp.csr_matrix, normalized_to: float) -> sp.csr_matrix:
        # No measured gene holds more than its cell's total, log1p(normalized_to); a translation might overshoot
        # it a little, but not e-fold.
        if X.nnz and np.all(X.data == np.round(X.data)):
            raise ButterflyInputError(
                "The rna data hold only whole numbers: these look like raw counts, not log-normalised values "
                f"(log1p of counts scaled to {normalized_to:g} per cell is almost never a whole number). Raw "
                "counts translate without normalized_to: leave normalized_to= out."
            )
        if X.nnz and X.data.max() > np.log1p(normalized_to) + 1:
            raise ButterflyInputError(
                f"The rna data hold values up to {X.data.max():g}, far above log1p({normalized_to:g}) = "
                f"{np.log1p(normalized_to):.3g}, the most a gene of a cell log-normalised to a total of "
                f"{normalized_to:g} can hold: these are not such values. Raw counts translate without "
                "normalized_to; log-normalised values need the total their cells were scaled to."
            )
        out = X.astype(np.float64)
        out.data = np.log1p(np.expm1(out.data) * (self.target_sum_ / normalized_to))
        return out.astype(np.float32)

    def _state(self):
        params = {"n_top_genes": self.n_top_genes, "hvg_flavor": self.hvg_flavor}
        return {"params": params, "target_sum": self.target_sum_}, {"highly_variable": self.highly_variable_}

    def _load_state(self, config, arrays):
        self.target_sum_ = float(config["target_sum"])
        self.highly_variable_ = np.asarray(arrays["highly_variable"], dtype=bool)


class ADTPreprocessor(Preprocessor):
    """Protein (ADT) counts: centred log-ratio per cell.

    ``clr(x)_j = log1p(x_j / g(x))`` with ``g(x) = exp(mean_j log1p(x_j))``: the geometric mean is taken with a
    pseudo-count of one, so zero counts are defined and stay zero. This is the CLR of Seurat
    (``NormalizeData(method="CLR", margin=2)``) and muon, the form the NeurIPS 2021 CITE-seq data use. It
    needs no fitted numbers beyond the protein panel, so new cells are transformed exactly like training
    cells.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd, butterfly as bf
    >>> counts = np.array([[10, 0, 250], [3, 7, 0]], dtype=np.float32)  # 2 cells, 3 proteins
    >>> adt = ad.AnnData(counts, var=pd.DataFrame(index=["CD3", "CD19", "CD14"]))
    >>> bf.ADTPreprocessor().fit_transform(adt).X.toarray().round(2)  # log1p(10 / 14.03) = 0.54
    array([[0.54, 0.  , 2.93],
           [0.67, 1.16, 0.  ]], dtype=float32)
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

    Examples
    --------
    >>> import scanpy as sc, butterfly as bf
    >>> rna, _ = bf.datasets.snare_mcc_demo()
    >>> logged = rna.copy()
    >>> sc.pp.normalize_total(logged, target_sum=1e4)
    >>> sc.pp.log1p(logged)
    >>> pre = bf.ExpressionPreprocessor().fit(logged)
    >>> bool((pre.transform(logged[::-1]).X != logged.X[::-1]).nnz == 0)  # used as given
    True
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


def _top_dispersions(dispersion_norm: np.ndarray, n: int) -> np.ndarray:
    """The genes whose normalised dispersion is at least the ``n``-th highest, genes without one (never
    expressed in the training cells) left out, as current scanpy chooses them. Some scanpy 1.10 releases
    also marked those genes (scverse/scanpy#3157; 1,145 genes for ``n=1000`` on 400 of the demo cells), so
    their ``highly_variable`` column is not used: the same cells give the same genes on any scanpy."""
    known = dispersion_norm[~np.isnan(dispersion_norm)]
    if known.size == 0:
        raise ButterflyInputError(
            "No gene varies in the RNA training cells: there are no variable genes to keep."
        )
    cutoff = np.sort(known)[::-1][min(n, known.size) - 1]
    return np.nan_to_num(dispersion_norm, nan=-np.inf) >= cutoff


def _text_columns(var: pd.DataFrame, features: np.ndarray, skip=frozenset()) -> dict[str, np.ndarray]:
    """The text (string or categorical) columns of ``var`` at ``features``, but those in ``skip``, as arrays of
    str. Numbers are left out: in a ``var`` they are mostly statistics of the training cells (means,
    dispersions)."""
    rows = var.index.get_indexer(pd.Index(features.astype(str)))
    if (rows < 0).any():  # output features not named as in var: no annotation to carry
        return {}
    return {
        column: var[column].iloc[rows].astype(str).to_numpy().astype(str)
        for column in var.columns
        if isinstance(column, str) and column not in skip and _is_text(var[column])
    }
