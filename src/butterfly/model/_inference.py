"""Inference through a trained :class:`~butterfly.model.Butterfly`: read the source cells, decode them batch by
batch, and hold the result in an AnnData or write it to an ``.h5ad`` file. The model's ``translate``,
``translate_to_h5ad`` and ``latent`` put these together; annotation, integration and the kNN
baseline read their cells with :func:`source_cells` too."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from .._progress import progress_bar
from .._validation import ButterflyInputError, NotTrainedError, check_whole_numbers, use_layer
from ..io._atomic import _write_atomic
from ..module._network import latent_noise
from ..pp._accessibility import ATACPreprocessor, binarize_accessibility, binary_block, calibrated
from ..pp._expression import Preprocessor, RNAPreprocessor
from ..train._data import dense_rows

if TYPE_CHECKING:
    from ._butterfly import Butterfly

#: Predicted RNA/ATAC values below this are set to 0 (paper post-processing).
ZERO_THRESHOLD = 1e-4
#: Where a translation keeps the latent mean of its cells.
LATENT_KEY = "X_butterfly"
#: The ``var`` column of a translation into RNA, protein or expression that holds each feature's Pearson r on
#: the validation cells (``Butterfly.validation_scores_``).
VALIDATION_SCORE_KEY = "validation_pearson"
#: The forms of an ATAC translation (:meth:`Butterfly.translate`'s ``atac_output``): the calibrated probability
#: that each peak is open (default), the model's own scaled TF-IDF output, recovered counts (paper eq. 12),
#: binarised peaks.
ATAC_OUTPUTS = ("probability", "tfidf", "counts", "binary")


def check_names(model: Butterfly, source: str, target: str | None = None) -> None:
    """Refuse modality names the model does not know, and a translation into the source itself."""
    for name in (source, target):
        if name is not None and name not in model.names:
            raise ButterflyInputError(f"Unknown modality {name!r}: this model knows {list(model.names)}.")
    if target is not None and source == target:
        raise ButterflyInputError("source and target must differ; use the measured data itself.")


def check_translation(model: Butterfly, source: str, target: str, atac_output: str) -> Preprocessor:
    """Refuse a translation that cannot run; returns the target's preprocessor."""
    check_names(model, source, target)
    if not model.is_trained_:
        raise NotTrainedError("The model is not trained yet; call fit() first.")
    target_pre = model.preprocessors[target]
    if atac_output not in ATAC_OUTPUTS:
        raise ButterflyInputError(
            f"atac_output must be 'probability', 'tfidf', 'counts' or 'binary', got {atac_output!r}."
        )
    if atac_output not in ("probability", "tfidf") and not isinstance(target_pre, ATACPreprocessor):
        raise ButterflyInputError(f"atac_output={atac_output!r} applies to an ATAC target, not {target!r}.")
    return target_pre


def source_cells(
    model: Butterfly, adata, source: str, layer: str | None, peak_matching: str = "exact",
    normalized_to: float | None = None,
) -> tuple[ad.AnnData, dict[str, Any]]:  # fmt: skip
    """The cells to translate from ``source`` (``adata`` itself or, for a MuData, its modality ``source``;
    read from ``layers[layer]`` when ``layer`` names one) and the keywords of the source preprocessor's
    ``transform`` that read them. ``peak_matching`` is refused for a source without peaks and
    ``normalized_to`` for one that is not RNA; an RNA translation from another model (``uns["butterfly"]``)
    is read as log-normalised, as it is."""
    if peak_matching not in ("exact", "overlap"):
        raise ButterflyInputError(f"peak_matching must be 'exact' or 'overlap', got {peak_matching!r}.")
    pre = model.preprocessors[source]
    if peak_matching == "overlap" and not isinstance(pre, ATACPreprocessor):
        raise ButterflyInputError(
            f"peak_matching='overlap' maps chromatin peaks; the {source} modality has no peaks."
        )
    if normalized_to is not None and not isinstance(pre, RNAPreprocessor):
        given = " and takes its values as given: leave normalized_to out" if pre.kind == "expression" else ""
        raise ButterflyInputError(
            f"normalized_to reads log-normalised RNA; the {source} modality is not RNA counts{given}."
        )
    if hasattr(adata, "mod") and not isinstance(adata, ad.AnnData):  # MuData, without importing mudata
        if source not in adata.mod:
            raise ButterflyInputError(
                f"The MuData has no modality {source!r} (it has {sorted(adata.mod)}). Pass the AnnData of "
                f"the {source} cells instead, e.g. translate(mdata.mod[...], source={source!r}, ...)."
            )
        adata = adata.mod[source]
    if not isinstance(adata, ad.AnnData):
        raise ButterflyInputError(
            f"The cells to translate must be an AnnData (or a MuData), got {type(adata).__name__}. Wrap a "
            f"matrix with its feature names, e.g. anndata.AnnData(X, var=pandas.DataFrame(index=names)): "
            f"features are matched to the model's by name."
        )
    options: dict[str, Any] = {"peak_matching": peak_matching} if peak_matching != "exact" else {}
    if isinstance(pre, RNAPreprocessor):
        made_by = adata.uns.get("butterfly") if layer is None else None
        if normalized_to is None and isinstance(made_by, Mapping) and "normalized_to" in made_by:
            normalized_to = float(made_by["normalized_to"])  # a translation into RNA, chained
        if normalized_to is not None:
            options["normalized_to"] = normalized_to
    return use_layer(adata, layer, what=f"The {source} data"), options


def cell_batches(
    model: Butterfly, adata: ad.AnnData, reference_batch: str | None = None
) -> np.ndarray | None:
    """For a model with batch covariates, each cell's batch code: its ``obs[model.batch_key]`` where the model
    knows that batch; the batch ``reference_batch`` for every cell when given; else the mean of the known
    batches (code ``len(categories)``), with a warning naming the unknown batches. None without covariates."""
    categories = model.batch_categories_
    if not categories:
        if reference_batch is not None:
            raise ButterflyInputError(
                "reference_batch= needs a model trained with batch_key=; this one has none."
            )
        return None
    known = {c: i for i, c in enumerate(categories)}
    if reference_batch is not None:
        if str(reference_batch) not in known:
            raise ButterflyInputError(
                f"reference_batch={reference_batch!r} is not a batch the model knows; it knows {categories[:10]}."
            )
        return np.full(adata.n_obs, known[str(reference_batch)], dtype=np.int64)
    key = model.init_params_["batch_key"]
    if key not in adata.obs.columns:
        warnings.warn(
            f"The cells have no obs[{key!r}] (the model's batch_key): they are translated with the mean of the "
            f"{len(categories)} training batches' covariates. Name one with reference_batch=, or add the column.",
            UserWarning, stacklevel=4,
        )  # fmt: skip
        return np.full(adata.n_obs, len(categories), dtype=np.int64)
    values = adata.obs[key].astype(str).to_numpy()
    codes = np.array([known.get(v, len(categories)) for v in values], dtype=np.int64)
    unknown = sorted(set(values[codes == len(categories)]))
    if unknown:
        warnings.warn(
            f"{int((codes == len(categories)).sum())} cells are of batches the model was not trained on "
            f"({', '.join(map(repr, unknown[:5]))}): they are translated with the mean of the training batches' "
            "covariates. Name a training batch with reference_batch=, or adapt the model to them with "
            "model.map_query(...).",
            UserWarning, stacklevel=4,
        )  # fmt: skip
    return codes


def translated_batches(
    model: Butterfly, adata: ad.AnnData, source: str, target: str | None, batch_size: int, progress: bool,
    n_samples: int = 0, options: Mapping[str, Any] | None = None, codes: np.ndarray | None = None,
) -> Iterator[tuple[slice, np.ndarray | None, np.ndarray]]:  # fmt: skip
    """``(rows, translation, latent mean)`` for ``batch_size`` cells at a time; the translation is ``None``
    without a target, and its RNA/ATAC values below 1e-4 are set to 0. ``options``: keywords of the
    source preprocessor's ``transform`` (from :func:`source_cells`)."""
    check_whole_numbers(batch_size=(batch_size, 1), n_samples=(n_samples, 0))
    X = model.preprocessors[source].transform(adata, **(options or {})).X
    yield from decoded_batches(model, X, source, target, batch_size, progress, n_samples, codes)


def decoded_batches(
    model: Butterfly, X: sp.csr_matrix, source: str, target: str | None, batch_size: int, progress: bool,
    n_samples: int = 0, codes: np.ndarray | None = None,
) -> Iterator[tuple[slice, np.ndarray | None, np.ndarray]]:  # fmt: skip
    """:func:`translated_batches` of cells already preprocessed (``X``, in the source's fitted features);
    ``codes``: each cell's batch, for a model with batch covariates (:func:`cell_batches`)."""
    network = model.network
    network.eval()
    layout = source in network.feature_major
    blocks: dict[int, torch.Tensor] = {}  # latent draws shared by consecutive batches
    starts = range(0, X.shape[0], batch_size)
    bar = progress_bar(starts, desc=f"{source} -> {target or 'latent'}", unit="batch", leave=False,
                       disable=not progress or len(starts) < 2)  # fmt: skip
    for start in bar:
        rows = slice(start, min(start + batch_size, X.shape[0]))
        x = dense_rows(X, np.arange(rows.start, rows.stop), model.device, layout)
        batch = None
        if codes is not None and network.covariates is not None:  # the cells' batches, both ends
            code = torch.as_tensor(codes[rows], device=model.device)
            batch = {source: code, **({target: code} if target is not None else {})}
        if target is None:
            with network.batches(batch):
                mean = network.latent_mean(x, source)
            yield rows, None, mean.cpu().numpy()
            continue
        noise = None
        if n_samples:  # seeded by the model's seed and the rows: the same for any batch size
            latent = network.translator.latent
            noise = latent_noise(model.seed, rows.start, rows.stop, n_samples, latent, model.device, blocks)
        with network.batches(batch):
            out, mean = network.translate(x, source, target, noise)
        if model.specs[target].preprocessing in ("rna", "atac", "expression"):
            out[out < ZERO_THRESHOLD] = 0
        yield rows, out.cpu().numpy(), mean.cpu().numpy()


def translate_arrays(
    model: Butterfly, adata: ad.AnnData, source: str, target: str | None, batch_size: int,
    progress: bool = False, n_samples: int = 0, options: Mapping[str, Any] | None = None,
    codes: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:  # fmt: skip
    """Translations (``None`` without a target) and latent means of ``adata``, written batch by batch into
    arrays allocated once: no list of chunks to concatenate, no whole-matrix temporaries."""
    latent = np.zeros((adata.n_obs, model.network.translator.latent), np.float32)
    output = None
    if target is not None:
        output = np.zeros((adata.n_obs, model.preprocessors[target].n_features), np.float32)
    batches = translated_batches(
        model, adata, source, target, batch_size, progress, n_samples, options, codes
    )
    for rows, out, mean in batches:
        latent[rows] = mean
        if output is not None:
            output[rows] = out
    return output, latent


def atac_form(
    target_pre, output: np.ndarray, atac_output: str, library_size=None, calibration=None
) -> np.ndarray:
    """The model's ATAC output (scaled TF-IDF, ``"tfidf"``) in the form ``atac_output`` asks, converted in place
    (float32): ``"probability"``, the calibrated chance that each peak is open (``calibration``: the model's
    :func:`~butterfly.pp._accessibility.fit_open_calibration`; the training median's open peaks per cell);
    ``"counts"``, recovered counts (paper eq. 12, ``library_size`` open peaks per cell); ``"binary"``, those
    counts binarised. Targets other than ATAC are returned as they are."""
    if atac_output == "tfidf" or not isinstance(target_pre, ATACPreprocessor):
        return output
    if atac_output == "probability":
        return calibrated(target_pre.inverse_transform(output, None, copy=False), calibration)
    output = target_pre.inverse_transform(output, library_size, copy=False)
    if atac_output == "binary":
        output = binarize_accessibility(output, copy=False)
    return output


def with_modality(mdata, translated: ad.AnnData, key: str):
    """A new MuData of ``mdata``'s modalities and ``translated`` as modality ``key`` (renamed
    ``f"{key}_translated"`` when ``mdata`` has a ``key`` already); ``mdata`` is not changed."""
    import mudata

    if key in mdata.mod:
        key = f"{key}_translated"
    if key in mdata.mod:
        raise ButterflyInputError(
            f"The MuData has modalities {sorted(mdata.mod)}; name the translation's with key_added=."
        )
    return mudata.MuData({**mdata.mod, key: translated})


def translation_anndata(
    model: Butterfly, adata, target_pre, X, latent, source: str, target: str, atac_output: str
) -> ad.AnnData:
    """The AnnData of a translation: ``X`` with the target's features, ``adata``'s ``obs``, the latent mean
    in ``obsm``, the validation scores in ``var`` where the model has them, and what made it in ``uns``."""
    var = target_pre._output_var()
    if model.validation_scores_ is not None and target in model.validation_scores_:
        var[VALIDATION_SCORE_KEY] = model.validation_scores_[target]
    result = ad.AnnData(X=X, obs=adata.obs.copy(), var=var)
    result.obsm[LATENT_KEY] = latent
    result.uns["butterfly"] = {"source": source, "target": target, "output": atac_output}
    if isinstance(target_pre, RNAPreprocessor):
        result.uns["log1p"] = {"base": None}  # as sc.pp.log1p marks it: scanpy will not log it again
        # the total its cells are scaled to: another model translates them from RNA as they are
        result.uns["butterfly"]["normalized_to"] = target_pre.target_sum_
    return result


def write_translation(
    model: Butterfly, adata: ad.AnnData, path: str | os.PathLike, source: str, target: str,
    options: Mapping[str, Any], *, atac_output: str, library_size, n_samples: int, batch_size: int,
    progress: bool, codes: np.ndarray | None = None,
) -> None:  # fmt: skip
    """The body of :meth:`Butterfly.translate_to_h5ad <butterfly.model.Butterfly.translate_to_h5ad>`, for
    cells read by :func:`source_cells`: the AnnData's skeleton is written first, then ``X`` and the latent
    mean batch by batch into it, and the file is moved into place whole."""
    import h5py

    target_pre = model.preprocessors[target]
    n_cells, n_features = adata.n_obs, target_pre.n_features
    library = target_pre.library_sizes(n_cells, library_size) if atac_output in ("counts", "binary") else None
    calibration = (getattr(model, "atac_calibration_", None) or {}).get(target)
    skeleton = translation_anndata(
        model, adata, target_pre, None, np.zeros((n_cells, model.network.translator.latent), np.float32),
        source, target, atac_output,
    )  # fmt: skip

    def write(tmp: Path) -> None:
        skeleton.write_h5ad(tmp)
        with h5py.File(tmp, "r+") as f:
            chunk_rows = max(1, min(n_cells, (1 << 20) // max(1, n_features)))  # chunks of about 4 MB
            X = f.create_dataset("X", (n_cells, n_features), np.float32, chunks=(chunk_rows, n_features))
            X.attrs["encoding-type"], X.attrs["encoding-version"] = "array", "0.2.0"
            latent = f["obsm"][LATENT_KEY]
            col_sum = np.zeros(n_features)
            batches = translated_batches(
                model, adata, source, target, batch_size, progress, n_samples, options, codes
            )
            for rows, out, mean in batches:
                if library is not None:
                    out = target_pre.inverse_transform(out, library[rows], copy=False)
                elif atac_output == "probability":
                    out = atac_form(target_pre, out, atac_output, calibration=calibration)
                if atac_output == "binary":
                    col_sum += out.sum(axis=0, dtype=np.float64)
                X[rows], latent[rows] = out, mean
            if atac_output == "binary":
                for start in range(0, n_cells, batch_size):
                    rows = slice(start, min(start + batch_size, n_cells))
                    X[rows] = binary_block(X[rows], col_sum / n_cells)

    _write_atomic(path, write)
