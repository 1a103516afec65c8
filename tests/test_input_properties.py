"""Property-based tests of the input checks: malformed AnnData of every kind (dtypes, sparse formats, duplicate
stored entries, explicit zeros, NaN/inf, negative values, empty axes, repeated or odd names) given to each
modality's preprocessing and to the model. Each either works, with results equal to those of the same values
as a clean dense matrix, or is refused with a ButterflyInputError; the input is never changed."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import butterfly as bf

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
# (anndata itself refuses COO in X)
FORMATS = ("dense", "csr", "csc", "csr_duplicates", "csr_explicit_zeros", "csr_unsorted")
pytestmark = [
    pytest.mark.filterwarnings("ignore:(Observation|Variable) names are not unique:UserWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]


def _as_format(values: np.ndarray, form: str, rng: np.random.Generator):
    """``values`` stored as ``form``; the duplicate form splits each entry in two stored entries at the same
    place, the explicit-zero form stores zeros, the unsorted form reverses each row's indices."""
    if form == "csr_duplicates" and values.dtype.kind in "bc":  # booleans and complex numbers do not split
        form = "csr"
    if form == "dense":
        return values
    if form in ("csr", "csc"):
        return {"csr": sp.csr_matrix, "csc": sp.csc_matrix}[form](values)
    coo = sp.coo_matrix(values)
    rows, cols, data = coo.row, coo.col, coo.data
    if form == "csr_duplicates":
        part = (
            np.floor(data / 2)
            if np.issubdtype(values.dtype, np.integer) or np.all(data == np.round(data))
            else data / 2
        )
        rows, cols = np.concatenate([rows, rows]), np.concatenate([cols, cols])
        data = np.concatenate([part, data - part]).astype(values.dtype)
    elif form == "csr_explicit_zeros":
        zr, zc = np.nonzero(values == 0)
        take = rng.random(zr.size) < 0.3
        rows, cols = np.concatenate([rows, zr[take]]), np.concatenate([cols, zc[take]])
        data = np.concatenate([data, np.zeros(int(take.sum()), values.dtype)])
    if form in ("csr_duplicates", "csr_explicit_zeros"):
        order = np.lexsort((cols, rows))
        rows, cols, data = rows[order], cols[order], data[order]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=values.shape[0]))])
        return sp.csr_matrix((data, cols, indptr), shape=values.shape)  # kept as stored, not summed
    out = sp.csr_matrix(values)
    for r in range(out.shape[0]):
        lo, hi = out.indptr[r], out.indptr[r + 1]
        out.indices[lo:hi], out.data[lo:hi] = out.indices[lo:hi][::-1].copy(), out.data[lo:hi][::-1].copy()
    out.has_sorted_indices = False
    return out


@st.composite
def counts(draw, *, min_cells=0, max_cells=40, min_features=0, max_features=30, kind="rna"):
    """A cells x features AnnData of counts in one of many storage forms, sometimes with a flaw."""
    shape = draw(st.sampled_from(["usual"] * 8 + ["no cells", "no features"]))
    n_obs = draw(st.integers(max(min_cells, 3), max_cells)) if min_cells <= 3 <= max_cells else min_cells
    n_vars = draw(st.integers(max(min_features, 4), max_features))
    n_obs, n_vars = (
        (min_cells, n_vars)
        if shape == "no cells"
        else (n_obs, min_features)
        if shape == "no features"
        else (n_obs, n_vars)
    )
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    values = rng.poisson(draw(st.sampled_from([0.2, 0.5, 3.0])), size=(n_obs, n_vars)).astype(np.float64)
    if n_vars:
        values[np.arange(n_obs), rng.integers(n_vars, size=n_obs)] += (
            1  # no empty cell unless drawn as a flaw
        )
    flaw = draw(
        st.sampled_from(
            ["none"] * 6 + ["nan", "inf", "negative", "fraction", "empty_cell", "huge", "beyond_float32"]
        )
    )
    if n_obs and n_vars and flaw != "none":
        r, c = rng.integers(n_obs), rng.integers(n_vars)
        if flaw == "empty_cell":
            values[r] = 0
        else:
            flaws = {"nan": np.nan, "inf": np.inf, "negative": -1.0, "fraction": 0.5, "huge": 1e12}
            values[r, c] = {**flaws, "beyond_float32": 1e39}[flaw]
    dtype = draw(
        st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint16, np.bool_, np.complex64])
    )
    if dtype == np.bool_ and np.any((values != 0) & (values != 1)):
        dtype = np.float64
    if np.issubdtype(dtype, np.integer):
        if (
            not np.all(np.isfinite(values))
            or np.any(values != np.round(values))
            or values.max(initial=0) > 6e4
        ):
            dtype = np.float64  # such values cannot be integers
        elif np.any(values < 0) and dtype == np.uint16:
            dtype = np.int32
    values = values.astype(dtype)
    X = _as_format(values, draw(st.sampled_from(FORMATS)), rng)
    if kind == "atac":
        names = [f"chr{1 + i % 3}:{1000 * (i // 3) + 1}-{1000 * (i // 3) + 500}" for i in range(n_vars)]
    else:
        names = [f"G{i}" for i in range(n_vars)]
    name_flaw = draw(st.sampled_from(["none"] * 8 + ["repeated", "numeric", "empty"]))
    if n_vars >= 2 and name_flaw == "repeated":
        names[1] = names[0]
    elif n_vars and name_flaw == "empty":
        names[0] = ""
    var = pd.DataFrame(
        index=pd.Index(names, dtype=object) if name_flaw != "numeric" else pd.RangeIndex(n_vars).astype(str)
    )
    obs_names = [f"c{i}" for i in range(n_obs)]
    if n_obs >= 2 and draw(st.sampled_from([False] * 9 + [True])):
        obs_names[1] = obs_names[0]
    return ad.AnnData(X=X, obs=pd.DataFrame(index=obs_names), var=var)


def _dense_twin(adata: ad.AnnData) -> ad.AnnData:
    """The same values as a clean float64 dense matrix (duplicates summed): what every form must equal."""
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    return ad.AnnData(X=X.astype(np.float64), obs=adata.obs.copy(), var=adata.var.copy())


def _snapshot(adata: ad.AnnData):
    X = adata.X
    if sp.issparse(X):
        parts = [getattr(X, a).copy() for a in ("data", "indices", "indptr", "row", "col") if hasattr(X, a)]
        return type(X), X.dtype, parts, adata.obs.copy(), adata.var.copy()
    return type(X), X.dtype, [np.array(X, copy=True)], adata.obs.copy(), adata.var.copy()


def _assert_unchanged(adata: ad.AnnData, before) -> None:
    kind, dtype, parts, obs, var = before
    X = adata.X
    assert type(X) is kind and X.dtype == dtype
    now = (
        [getattr(X, a) for a in ("data", "indices", "indptr", "row", "col") if hasattr(X, a)]
        if sp.issparse(X)
        else [X]
    )
    for a, b in zip(parts, now, strict=True):
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(adata.obs, obs)
    pd.testing.assert_frame_equal(adata.var, var)


PREPROCESSORS = {
    "rna": lambda: bf.RNAPreprocessor(n_top_genes=10),
    "adt": bf.ADTPreprocessor,
    "expression": bf.ExpressionPreprocessor,
    "atac": lambda: bf.ATACPreprocessor(min_cell_fraction=0.0),
}


@pytest.mark.parametrize("kind", sorted(PREPROCESSORS))
@SETTINGS
@given(data=st.data())
def test_preprocessing_takes_any_storage_form_or_refuses_by_name(kind, data):
    adata = data.draw(counts(kind=kind))
    before = _snapshot(adata)
    try:
        out = PREPROCESSORS[kind]().fit_transform(adata)
    except bf.ButterflyInputError:
        _assert_unchanged(adata, before)
        return
    _assert_unchanged(adata, before)
    result = out.X.toarray() if sp.issparse(out.X) else np.asarray(out.X)
    assert np.all(np.isfinite(result))
    twin = PREPROCESSORS[kind]().fit_transform(_dense_twin(adata))  # the same values, stored plainly
    assert list(out.var_names) == list(twin.var_names)
    np.testing.assert_allclose(
        result, twin.X.toarray() if sp.issparse(twin.X) else twin.X, rtol=1e-5, atol=1e-6
    )


@SETTINGS
@given(data=st.data())
def test_model_construction_takes_any_storage_form_or_refuses_by_name(data):
    rna = data.draw(counts(min_cells=0, max_cells=30, kind="rna"))
    atac = data.draw(counts(min_cells=rna.n_obs, max_cells=rna.n_obs, kind="atac"))
    atac.obs_names = rna.obs_names
    before = _snapshot(rna), _snapshot(atac)
    try:
        model = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=0, device="cpu")
    except bf.ButterflyInputError:
        pass
    else:
        assert all(np.all(np.isfinite(X.data)) for X in model._matrices.values())
    _assert_unchanged(rna, before[0])
    _assert_unchanged(atac, before[1])


@SETTINGS
@given(name=st.text(min_size=0, max_size=12))
def test_modality_names_either_name_a_file_in_the_folder_or_are_refused(name):
    import dataclasses
    from pathlib import PurePath

    try:
        spec = dataclasses.replace(bf.pp.EXPRESSION, name=name)
    except bf.ButterflyInputError:
        return
    parts = PurePath(f"preprocessing_{spec.name}.json").parts
    assert len(parts) == 1 and not spec.name.startswith(".") and "\x00" not in spec.name


def test_duplicate_stored_entries_read_as_their_sum_and_the_input_is_kept(snare):
    """COO-built CSR with each count split over two stored entries: the same model inputs as the summed
    matrix (RNA log1p per position, ATAC's open-peak counts), and the user's matrix is not summed in place."""
    rna, atac = snare[0][:300], snare[1][:300]

    def split(adata):
        coo = adata.X.tocoo()
        half = np.floor(coo.data / 2)
        keep = half > 0  # counts of 1 stay one entry; larger counts are stored twice, summing to the count
        rows = np.concatenate([coo.row, coo.row[keep]])
        cols = np.concatenate([coo.col, coo.col[keep]])
        data = np.concatenate([coo.data - np.where(keep, half, 0), half[keep]]).astype(np.float32)
        order = np.lexsort((cols, rows))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=adata.n_obs))])
        X = sp.csr_matrix((data[order], cols[order], indptr), shape=adata.shape)
        assert not X.has_canonical_format and X.nnz > adata.X.nnz
        return ad.AnnData(X=X, obs=adata.obs, var=adata.var)

    rna_split, atac_split = split(rna), split(atac)
    stored = copy.deepcopy((rna_split.X.data, rna_split.X.indices, atac_split.X.data))
    plain = bf.Butterfly(rna, atac, seed=0, device="cpu")
    duplicated = bf.Butterfly(rna_split, atac_split, seed=0, device="cpu")
    for name in ("rna", "atac"):
        assert list(plain.preprocessors[name].features_) == list(duplicated.preprocessors[name].features_)
        np.testing.assert_array_equal(plain._matrices[name].toarray(), duplicated._matrices[name].toarray())
    for before, after in zip(stored, (rna_split.X.data, rna_split.X.indices, atac_split.X.data), strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.fixture(scope="module")
def short_model(snare):
    rna, atac = snare
    model = bf.Butterfly(rna[:300], atac[:300], seed=0, device="cpu")
    model.fit(pretrain_epochs=1, epochs=1, progress=False)
    return model


@st.composite
def real_cells(draw, adata: ad.AnnData):
    """Some of ``adata``'s cells in another storage form and dtype, perhaps with a flaw in values or names."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    rows = np.sort(rng.choice(adata.n_obs, size=draw(st.integers(1, 25)), replace=False))
    cols = np.sort(
        rng.choice(
            adata.n_vars, size=int(adata.n_vars * draw(st.sampled_from([1.0, 1.0, 0.9, 0.3]))), replace=False
        )
    )
    values = adata.X[rows][:, cols].toarray().astype(np.float64)
    flaw = draw(st.sampled_from(["none"] * 5 + ["nan", "negative", "fraction", "empty_cell"]))
    r, c = rng.integers(values.shape[0]), rng.integers(values.shape[1])
    if flaw == "empty_cell":
        values[r] = 0
    elif flaw != "none":
        values[r, c] = {"nan": np.nan, "negative": -2.0, "fraction": 0.25}[flaw]
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32]))
    if dtype == np.int32 and (not np.all(np.isfinite(values)) or np.any(values != np.round(values))):
        dtype = np.float64
    X = _as_format(values.astype(dtype), draw(st.sampled_from(FORMATS)), rng)
    var = adata.var.iloc[cols].copy()
    order = (
        rng.permutation(len(cols)) if draw(st.booleans()) else np.arange(len(cols))
    )  # features in any order
    X = X[:, order] if not sp.issparse(X) else sp.csr_matrix(X)[:, order]
    return ad.AnnData(X=X, obs=adata.obs.iloc[rows].copy(), var=var.iloc[order].copy())


@pytest.mark.filterwarnings("ignore:.*features are missing")
@pytest.mark.filterwarnings("ignore:.*of the .* features")
@pytest.mark.parametrize("source", ["rna", "atac"])
@SETTINGS
@given(data=st.data())
def test_translation_takes_any_storage_form_or_refuses_by_name(short_model, snare, source, data):
    cells = data.draw(real_cells(snare[0] if source == "rna" else snare[1]))
    target = "atac" if source == "rna" else "rna"
    before = _snapshot(cells)
    try:
        out = short_model.translate(cells, source=source, target=target, progress=False)
    except bf.ButterflyInputError:
        _assert_unchanged(cells, before)
        return
    _assert_unchanged(cells, before)
    assert list(out.obs_names) == list(cells.obs_names) and np.isfinite(out.X).all()
    twin = short_model.translate(_dense_twin(cells), source=source, target=target, progress=False)
    np.testing.assert_allclose(out.X, twin.X, rtol=1e-5, atol=1e-6)
