"""Simple translators to compare against, used through the same preprocessing as the model."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.neighbors import NearestNeighbors

from .model import Butterfly


class KNNTranslator:
    """Predict a cell's target profile as the mean of its ``k`` nearest training cells in the source's SVD space.

    Uses the preprocessing of a fitted :class:`~butterfly.Butterfly` model (or fits its own preprocessing
    through ``Butterfly(...)`` without training), so inputs and outputs live in the same spaces as the model's.
    """

    def __init__(self, first: ad.AnnData, second: ad.AnnData, *, modalities=("rna", "atac"), k: int = 20,
                 n_components: int = 50, seed: int = 0) -> None:  # fmt: skip
        self._model = Butterfly(first, second, modalities=modalities, seed=seed, device="cpu")
        self.names, self.k = self._model.names, k
        self._train = self._model._matrices
        self._svd, self._index = {}, {}
        for name in self.names:
            X = self._train[name]
            svd = TruncatedSVD(n_components=min(n_components, X.shape[1] - 1), random_state=seed)
            self._svd[name] = svd
            self._index[name] = NearestNeighbors(n_neighbors=k).fit(svd.fit_transform(X))

    def translate(self, adata: ad.AnnData, source: str, target: str) -> ad.AnnData:
        X = self._model.preprocessors[source].transform(adata).X
        _, neighbours = self._index[source].kneighbors(self._svd[source].transform(X))
        n_train = self._train[target].shape[0]
        rows = np.repeat(np.arange(X.shape[0]), self.k)
        averaging = sp.csr_matrix(
            (np.full(rows.size, 1.0 / self.k), (rows, neighbours.ravel())), shape=(X.shape[0], n_train)
        )
        pred = np.asarray((averaging @ self._train[target]).todense(), dtype=np.float32)
        return ad.AnnData(X=pred, obs=adata.obs.copy(), var=self._model.preprocessors[target]._output_var())
