"""Simple translators to compare against, using the same preprocessing as the model.

Each fits butterfly's preprocessing on the training cells (through an untrained :class:`~butterfly.Butterfly`),
so their inputs and outputs live in the same spaces as the model's and are scored identically.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import Ridge
from sklearn.neighbors import NearestNeighbors

from ._validation import ButterflyInputError
from .metrics import gene_means
from .model import Butterfly


class _SVDBaseline:
    """Preprocessing plus a truncated SVD of each modality's training cells."""

    def __init__(
        self, first: ad.AnnData, second: ad.AnnData, *, modalities, n_components: int, seed: int
    ) -> None:
        self._model = Butterfly(first, second, modalities=modalities, seed=seed, device="cpu")
        self.names = self._model.names
        self._train = self._model._matrices
        self._svd, self._components = {}, {}
        for name in self.names:
            X = self._train[name]
            svd = TruncatedSVD(n_components=min(n_components, X.shape[1] - 1), random_state=seed)
            self._components[name] = svd.fit_transform(X)
            self._svd[name] = svd

    def _source_components(self, adata: ad.AnnData, source: str, target: str) -> np.ndarray:
        self._model._check_names(source, target)  # the same refusals as Butterfly.translate
        return self._svd[source].transform(self._model.preprocessors[source].transform(adata).X)

    def _result(self, pred: np.ndarray, adata: ad.AnnData, target: str) -> ad.AnnData:
        return ad.AnnData(
            X=pred.astype(np.float32),
            obs=adata.obs.copy(),
            var=self._model.preprocessors[target]._output_var(),
        )


class KNNTranslator(_SVDBaseline):
    """Predict a cell's target profile as the mean of its ``k`` nearest training cells in the source's SVD space."""

    def __init__(
        self, first, second, *, modalities=("rna", "atac"), k: int = 20, n_components: int = 50, seed: int = 0
    ):
        super().__init__(first, second, modalities=modalities, n_components=n_components, seed=seed)
        n_train = first.n_obs
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_train:
            raise ButterflyInputError(
                f"k (neighbours averaged) must be a whole number from 1 to the {n_train} training cells, got {k!r}."
            )
        self.k = int(k)
        self._index = {
            name: NearestNeighbors(n_neighbors=k).fit(self._components[name]) for name in self.names
        }

    def translate(self, adata: ad.AnnData, source: str, target: str, *, progress: bool = False) -> ad.AnnData:
        """Predict ``target`` for cells measured in ``source`` (``progress``: the signature of
        :meth:`Butterfly.translate`; one search, no bar)."""
        _, neighbours = self._index[source].kneighbors(self._source_components(adata, source, target))
        n, n_train = neighbours.shape[0], self._train[target].shape[0]
        rows = np.repeat(np.arange(n), self.k)
        averaging = sp.csr_matrix(
            (np.full(rows.size, 1.0 / self.k), (rows, neighbours.ravel())), shape=(n, n_train)
        )
        return self._result(np.asarray((averaging @ self._train[target]).todense()), adata, target)


class LinearTranslator(_SVDBaseline):
    """Ridge regression from the source's SVD components to the target's, mapped back through the target SVD
    (the kind of linear model that won the NeurIPS 2021 predict-modality task)."""

    def __init__(
        self,
        first,
        second,
        *,
        modalities=("rna", "atac"),
        alpha: float = 1.0,
        n_components: int = 64,
        seed: int = 0,
    ):
        super().__init__(first, second, modalities=modalities, n_components=n_components, seed=seed)
        self._ridge = {}
        for source, target in (self.names, self.names[::-1]):
            self._ridge[source, target] = Ridge(alpha=alpha).fit(
                self._components[source], self._components[target]
            )

    def translate(self, adata: ad.AnnData, source: str, target: str, *, progress: bool = False) -> ad.AnnData:
        """Predict ``target`` for cells measured in ``source`` (``progress``: as :meth:`KNNTranslator.translate`)."""
        source_components = self._source_components(adata, source, target)  # checks the names first
        components = self._ridge[source, target].predict(source_components)
        pred = self._svd[target].inverse_transform(components)
        low = 0.0 if self._model.specs[target].output in ("sigmoid", "leaky_relu") else -np.inf
        high = 1.0 if self._model.specs[target].output == "sigmoid" else np.inf
        return self._result(np.clip(pred, low, high), adata, target)


class MeanShiftPerturbation:
    """Predict a control cell's stimulated state as its own profile plus the average response of the training
    cells: the mean of the stimulated cells minus the mean of the control cells, gene by gene, values below
    zero set to zero. scGen's latent vector arithmetic done in gene space, without a model; it knows
    nothing of cell types, so it is the bar a response that depends on the cell type has to clear.
    """

    def __init__(
        self, control: ad.AnnData, stimulated: ad.AnnData, *, label_key: str = "cell_type",
        names: tuple[str, str] = ("control", "stimulated"),
    ) -> None:  # fmt: skip
        self._model = Butterfly.perturbation(
            control, stimulated, label_key=label_key, names=names, device="cpu"
        )
        self.names = self._model.names
        genes = {name: pd.Index(self._model.preprocessors[name].features_) for name in self.names}
        means = {name: gene_means(self._model._matrices[name]) for name in self.names}
        self._shift, self._reorder = {}, {}
        for source, target in (self.names, self.names[::-1]):
            in_source = genes[target].get_indexer(genes[source])  # target's columns in the source's order
            self._shift[source, target] = means[target][in_source] - means[source]
            self._reorder[source, target] = genes[source].get_indexer(genes[target])

    def translate(self, adata: ad.AnnData, source: str, target: str, *, progress: bool = False) -> ad.AnnData:
        """Shift cells measured in ``source`` by the training cells' mean response towards ``target``."""
        self._model._check_names(source, target)
        X = self._model.preprocessors[source].transform(adata).X
        pred = (
            np.asarray(X.todense() if sp.issparse(X) else X, dtype=np.float32) + self._shift[source, target]
        )
        pred = np.maximum(pred, 0.0)[:, self._reorder[source, target]]
        return ad.AnnData(
            X=pred.astype(np.float32),
            obs=adata.obs.copy(),
            var=self._model.preprocessors[target]._output_var(),
        )
