"""Simple translators to compare against, using the same preprocessing as the model.

Each fits butterfly's preprocessing on the training cells (through an untrained :class:`~butterfly.Butterfly`),
so their inputs and outputs live in the same spaces as the model's and are scored identically.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import Ridge
from sklearn.neighbors import NearestNeighbors

from .._progress import progress_bar
from .._validation import ButterflyInputError, NotTrainedError, check_whole_numbers
from ..metrics._scores import gene_means
from ..model._butterfly import Butterfly
from ..model._inference import check_names, source_cells
from ..model._quality import neighbour_mean
from ..pp._expression import RNAPreprocessor


class _SVDBaseline:
    """Preprocessing plus a truncated SVD of each modality's training cells."""

    def __init__(
        self, first: ad.AnnData, second: ad.AnnData, *, modalities, n_components: int, seed: int
    ) -> None:
        self._model = Butterfly(first, second, modalities=modalities, seed=seed, device="cpu")
        self.names = self._model.names
        self._train = self._model._matrices
        self._svd, self._components = {}, {}
        for name in self.names if n_components else ():  # 0: subclasses that need no shared SVD
            X = self._train[name]
            svd = TruncatedSVD(n_components=min(n_components, X.shape[1] - 1), random_state=seed)
            self._components[name] = svd.fit_transform(X)
            self._svd[name] = svd

    def _source_components(
        self, adata: ad.AnnData, source: str, target: str, normalized_to=None
    ) -> np.ndarray:
        check_names(self._model, source, target)  # the same refusals as Butterfly.translate
        adata, options = source_cells(self._model, adata, source, None, normalized_to=normalized_to)
        return self._svd[source].transform(self._model.preprocessors[source].transform(adata, **options).X)

    def _result(self, pred: np.ndarray, adata: ad.AnnData, target: str) -> ad.AnnData:
        target_pre = self._model.preprocessors[target]
        result = ad.AnnData(X=pred.astype(np.float32), obs=adata.obs.copy(), var=target_pre._output_var())
        if isinstance(target_pre, RNAPreprocessor):  # log-normalised, and chained as a model's translation
            result.uns["log1p"] = {"base": None}
            result.uns["butterfly"] = {"target": target, "normalized_to": target_pre.target_sum_}
        return result


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

    def translate(
        self, adata: ad.AnnData, source: str, target: str, *, normalized_to: float | None = None,
        progress: bool = False,
    ) -> ad.AnnData:  # fmt: skip
        """Predict ``target`` for cells measured in ``source`` (``normalized_to`` and ``progress``: as
        :meth:`Butterfly.translate`; one search, no bar)."""
        components = self._source_components(adata, source, target, normalized_to)
        _, neighbours = self._index[source].kneighbors(components)
        return self._result(neighbour_mean(neighbours, self._train[target]), adata, target)


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

    def translate(
        self, adata: ad.AnnData, source: str, target: str, *, normalized_to: float | None = None,
        progress: bool = False,
    ) -> ad.AnnData:  # fmt: skip
        """Predict ``target`` for cells measured in ``source`` (keywords: as :meth:`KNNTranslator.translate`)."""
        source_components = self._source_components(adata, source, target, normalized_to)  # names checked
        components = self._ridge[source, target].predict(source_components)
        pred = self._svd[target].inverse_transform(components)
        low = 0.0 if self._model.specs[target].output in ("sigmoid", "leaky_relu") else -np.inf
        high = 1.0 if self._model.specs[target].output == "sigmoid" else np.inf
        return self._result(np.clip(pred, low, high), adata, target)


class MeanTranslator(_SVDBaseline):
    """Predict every cell as the mean training profile of the target: the floor any translator must clear, and
    the reference of :mod:`butterfly.model._quality`'s check (it scores 0 there)."""

    def __init__(self, first, second, *, modalities=("rna", "atac"), seed: int = 0):
        super().__init__(first, second, modalities=modalities, n_components=0, seed=seed)
        self._mean = {name: np.asarray(self._train[name].mean(axis=0)).ravel() for name in self.names}

    def translate(
        self, adata: ad.AnnData, source: str, target: str, *, normalized_to: float | None = None,
        progress: bool = False,
    ) -> ad.AnnData:  # fmt: skip
        """Predict ``target`` for cells measured in ``source``: the same profile for every cell (their input is
        still read and checked, as for any translator)."""
        check_names(self._model, source, target)
        cells, options = source_cells(self._model, adata, source, None, normalized_to=normalized_to)
        self._model.preprocessors[source].transform(cells, **options)  # the same refusals as the others
        return self._result(np.tile(self._mean[target], (adata.n_obs, 1)), adata, target)


#: The kernel ridge settings per (source kind, target kind) of the NeurIPS 2021 predict-modality leader
#: (Guanlab-dengkw): source SVD components (None: all features), target SVD components, RBF length scale, alpha.
KERNEL_RIDGE_SETTINGS = {
    ("rna", "adt"): (300, 70, 10.0, 0.2),
    ("adt", "rna"): (None, 50, 10.0, 0.2),
    ("rna", "atac"): (1000, 50, 10.0, 0.1),
    ("atac", "rna"): (100, 70, 10.0, 0.1),
}
#: For other pairs of kinds (expression, ...).
KERNEL_RIDGE_DEFAULT = (100, 50, 10.0, 0.1)


class KernelRidgeTranslator(_SVDBaseline):
    """Kernel ridge regression in the manner of the NeurIPS 2021 predict-modality leader (Guanlab-dengkw).

    For each direction: a truncated SVD of the source's training cells (in butterfly's preprocessed space), each
    cell's components standardised (minus their mean, over their standard deviation), scikit-learn's
    ``KernelRidge`` with an RBF kernel of length scale ``l`` (``gamma = 1 / (2 l^2)``) onto the components of a
    truncated SVD of the target's training cells, projected back, and clipped to the target's range (non-negative
    RNA and protein, [0, 1] for ATAC). Settings per direction: :data:`KERNEL_RIDGE_SETTINGS`. Unlike the
    competition entry, the source SVD is fitted on the training cells only, never on the cells translated.
    The kernel has one row and column per training cell: memory grows with their square (8 GB at 30,000).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> ridge = bf.benchmark.KernelRidgeTranslator(rna[:1500], atac[:1500])
    >>> ridge.settings_[("rna", "atac")]
    {'source_components': 1000, 'target_components': 50, 'length_scale': 10.0, 'alpha': 0.1}
    >>> ridge.translate(rna[1500:], source="rna", target="atac").shape
    (500, 5578)
    """

    def __init__(
        self, first, second, *, modalities=("rna", "atac"), seed: int = 0, settings: dict | None = None
    ):
        from sklearn.kernel_ridge import KernelRidge

        super().__init__(first, second, modalities=modalities, n_components=0, seed=seed)
        self._source_svd, self._target_svd, self._ridge, self.settings_ = {}, {}, {}, {}
        for source, target in (self.names, self.names[::-1]):
            kinds = (self._model.specs[source].preprocessing, self._model.specs[target].preprocessing)
            chosen = (settings or {}).get((source, target)) or KERNEL_RIDGE_SETTINGS.get(
                kinds, KERNEL_RIDGE_DEFAULT
            )
            n_source, n_target, scale, alpha = chosen
            X, Y = self._train[source], self._train[target]
            n_source = _components(n_source, X)
            n_target = _components(n_target, Y)
            self.settings_[source, target] = {
                "source_components": n_source, "target_components": n_target, "length_scale": scale, "alpha": alpha,
            }  # fmt: skip
            self._source_svd[source, target] = TruncatedSVD(n_components=n_source, random_state=seed).fit(X)
            self._target_svd[source, target] = TruncatedSVD(n_components=n_target, random_state=seed).fit(Y)
            features = _standardise_rows(self._source_svd[source, target].transform(X))
            ridge = KernelRidge(alpha=alpha, kernel="rbf", gamma=1.0 / (2.0 * scale**2))
            self._ridge[source, target] = ridge.fit(features, self._target_svd[source, target].transform(Y))

    def translate(
        self, adata: ad.AnnData, source: str, target: str, *, normalized_to: float | None = None,
        progress: bool = False,
    ) -> ad.AnnData:  # fmt: skip
        """Predict ``target`` for cells measured in ``source`` (keywords: as :meth:`KNNTranslator.translate`)."""
        check_names(self._model, source, target)
        cells, options = source_cells(self._model, adata, source, None, normalized_to=normalized_to)
        X = self._model.preprocessors[source].transform(cells, **options).X
        features = _standardise_rows(self._source_svd[source, target].transform(X))
        pred = self._target_svd[source, target].inverse_transform(
            self._ridge[source, target].predict(features)
        )
        low = 0.0 if self._model.specs[target].output in ("sigmoid", "leaky_relu") else -np.inf
        high = 1.0 if self._model.specs[target].output == "sigmoid" else np.inf
        return self._result(np.clip(pred, low, high), adata, target)


def _components(wanted: int | None, X) -> int:
    """SVD components: ``wanted`` (None: all features), at most one fewer than the features and the cells."""
    most = max(1, min(X.shape[1] - 1, X.shape[0] - 1))
    return most if wanted is None else max(1, min(int(wanted), most))


def _standardise_rows(components: np.ndarray) -> np.ndarray:
    """Each cell's components minus their mean, over their standard deviation (Guanlab's ``StandardScaler``
    on the transposed matrix)."""
    centred = components - components.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1, keepdims=True)
    return centred / np.where(spread > 0, spread, 1.0)


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
        check_names(self._model, source, target)
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


class _ScGenVAE(torch.nn.Module):
    """scGen's network: every layer Linear -> BatchNorm -> LeakyReLU -> Dropout (scvi-tools' ``FCLayers``),
    the decoder's last layer included; a Gaussian latent with variance ``exp(.) + 1e-4``."""

    def __init__(self, n_genes: int, hidden: int, latent: int, layers: int, dropout: float) -> None:
        super().__init__()

        def stack(dims: list[int]) -> torch.nn.Sequential:
            parts = []
            for n_in, n_out in zip(dims[:-1], dims[1:], strict=True):
                parts += [
                    torch.nn.Linear(n_in, n_out),
                    torch.nn.BatchNorm1d(n_out, momentum=0.01, eps=1e-3),
                    torch.nn.LeakyReLU(),
                    torch.nn.Dropout(dropout),
                ]
            return torch.nn.Sequential(*parts)

        self.encoder = stack([n_genes] + [hidden] * layers)
        self.mean = torch.nn.Linear(hidden, latent)
        self.variance = torch.nn.Linear(hidden, latent)
        self.decoder = stack([latent] + [hidden] * (layers - 1) + [n_genes])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mean(h), torch.exp(self.variance(h)) + 1e-4

    def loss(self, x: torch.Tensor, kl_weight: float, sample: bool) -> torch.Tensor:
        """scGen's objective: mean over cells of 0.5 * squared error summed over genes + 0.5 * weight * KL."""
        mean, variance = self.encode(x)
        z = mean + variance.sqrt() * torch.randn_like(mean) if sample else mean
        squared_error = ((x - self.decoder(z)) ** 2).sum(1)
        kl = 0.5 * (variance + mean**2 - 1 - variance.log()).sum(1)
        return (0.5 * squared_error + 0.5 * kl_weight * kl).mean()


class LatentArithmetic:
    """scGen (Lotfollahi et al., *Nature Methods* 2019), re-implemented for comparison: the perturbation-response
    method the paper compares scButterfly with on the same data.

    One VAE learns the expression of every training cell of both conditions (the condition is not an input);
    the response is the difference between the mean latent of the stimulated and of the control cells, each
    set first balanced over cell types (every type resampled to the largest type's count, then both sets cut
    to the smaller one's size, as scGen's ``predict``); a control cell's stimulated state is the decoded
    latent mean of the cell plus that difference. Defaults are scGen's: two hidden layers of 800, latent 100,
    dropout 0.2, KL weight 5e-5, Adam (lr 1e-3, eps 0.01, weight decay 1e-6), batches of 32, up to 100
    epochs with early stopping of patience 25 on 10% of the cells held out (scGen's tutorial; as in
    scvi-tools, the weights at the stop are kept). Validation here scores the latent mean, without
    sampling. Not the ``scgen`` package, which the project cannot install (it pins old scvi-tools).
    Inputs as :meth:`Butterfly.perturbation` (log-normalised expression of the same genes, cell types in
    ``obs[label_key]``); call :meth:`fit`, then :meth:`translate`.
    """

    def __init__(
        self, control: ad.AnnData, stimulated: ad.AnnData, *, label_key: str = "cell_type",
        names: tuple[str, str] = ("control", "stimulated"), hidden: int = 800, latent: int = 100,
        layers: int = 2, dropout: float = 0.2, kl_weight: float = 5e-5, seed: int = 0, device: str = "auto",
    ) -> None:  # fmt: skip
        check_whole_numbers(hidden=(hidden, 1), latent=(latent, 1), layers=(layers, 1))
        if not 0 <= dropout < 1 or not kl_weight >= 0:
            raise ButterflyInputError(
                f"dropout must be in [0, 1) and kl_weight at least 0 (scGen: 0.2, 5e-5); got {dropout!r}, {kl_weight!r}."
            )
        self._model = Butterfly.perturbation(
            control, stimulated, label_key=label_key, names=names, seed=seed, device=device
        )
        self.names = self._model.names
        self.genes = pd.Index(self._model.preprocessors[self.names[0]].features_)
        second = pd.Index(self._model.preprocessors[self.names[1]].features_).get_indexer(self.genes)
        self._X = sp.vstack(
            [self._model._matrices[self.names[0]], self._model._matrices[self.names[1]][:, second]]
        ).tocsr()
        self._labels = np.concatenate([np.asarray(labels).astype(str) for labels in self._model._labels])
        self._condition = np.repeat([0, 1], [len(labels) for labels in self._model._labels])
        self.kl_weight, self.seed, self.device = float(kl_weight), int(seed), self._model.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.network = _ScGenVAE(len(self.genes), hidden, latent, layers, dropout).to(self.device)
        self.delta_: np.ndarray | None = None

    def _batch(self, rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self._X[rows].toarray(), dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def _latent_mean(self, X) -> np.ndarray:
        self.network.eval()
        means = []
        for start in range(0, X.shape[0], 1024):
            block = X[start : start + 1024]
            block = block.toarray() if sp.issparse(block) else np.asarray(block)
            x = torch.as_tensor(block, dtype=torch.float32, device=self.device)
            means.append(self.network.encode(x)[0].cpu().numpy())
        return np.concatenate(means)

    def fit(
        self, *, epochs: int = 100, batch_size: int = 32, patience: int = 25, lr: float = 1e-3,
        validation_fraction: float = 0.1, progress: bool = True,
    ) -> pd.DataFrame:  # fmt: skip
        """Train the VAE, then compute the latent response. Returns the loss history (one row per epoch)."""
        check_whole_numbers(epochs=(epochs, 1), batch_size=(batch_size, 2), patience=(patience, 1))
        if not 0 < validation_fraction < 1 or not lr > 0:
            raise ButterflyInputError(
                f"validation_fraction must be in (0, 1) and lr above 0; got {validation_fraction!r}, {lr!r}."
            )
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(self._X.shape[0])
        n_validation = max(1, int(round(validation_fraction * len(order))))
        validation, train = order[:n_validation], order[n_validation:]
        optimizer = torch.optim.Adam(self.network.parameters(), lr=lr, eps=0.01, weight_decay=1e-6)
        history, best, waited = [], np.inf, 0
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            bar = progress_bar(range(epochs), desc="scGen-style VAE", disable=not progress, leave=False)
            for epoch in bar:
                self.network.train()
                shuffled, losses = rng.permutation(train), []
                for start in range(0, len(shuffled), batch_size):
                    rows = shuffled[start : start + batch_size]
                    if len(rows) < 2:  # BatchNorm needs two cells
                        continue
                    loss = self.network.loss(self._batch(rows), self.kl_weight, sample=True)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.item())
                self.network.eval()
                with torch.no_grad():
                    val = float(np.mean([
                        self.network.loss(self._batch(validation[s : s + 1024]), self.kl_weight, sample=False).item()
                        for s in range(0, len(validation), 1024)
                    ]))  # fmt: skip
                history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val})
                bar.set_postfix(train=f"{history[-1]['train_loss']:.2f}", val=f"{val:.2f}", refresh=False)
                best, waited = (val, 0) if val < best else (best, waited + 1)
                if waited >= patience:
                    break
        self.delta_ = self._response(rng)
        return pd.DataFrame(history)

    def _response(self, rng: np.random.Generator) -> np.ndarray:
        """Mean latent of the stimulated cells minus that of the control cells, both balanced over types."""
        balanced = []
        for condition in (0, 1):
            cells = np.flatnonzero(self._condition == condition)
            types = [cells[self._labels[cells] == t] for t in np.unique(self._labels[cells])]
            largest = max(len(t) for t in types)
            balanced.append(np.concatenate([rng.choice(t, largest) for t in types]))
        size = min(len(b) for b in balanced)
        control, stimulated = (rng.choice(b, size, replace=False) for b in balanced)
        return self._latent_mean(self._X[stimulated]).mean(0) - self._latent_mean(self._X[control]).mean(0)

    def translate(self, adata: ad.AnnData, source: str, target: str, *, progress: bool = False) -> ad.AnnData:
        """Move cells measured in ``source`` by the latent response towards ``target`` and decode them."""
        if self.delta_ is None:
            raise NotTrainedError("This LatentArithmetic baseline is not trained yet: call fit() first.")
        check_names(self._model, source, target)
        X = self._model.preprocessors[source].transform(adata).X
        in_genes = pd.Index(self._model.preprocessors[source].features_).get_indexer(self.genes)
        shift = self.delta_ if (source, target) == self.names else -self.delta_
        z = self._latent_mean(X[:, in_genes]) + shift
        with torch.no_grad():
            decoded = [
                self.network.decoder(torch.as_tensor(z[s : s + 1024], device=self.device)).cpu().numpy()
                for s in range(0, len(z), 1024)
            ]
        pred = np.concatenate(decoded)[:, self.genes.get_indexer(self._model.preprocessors[target].features_)]
        return ad.AnnData(
            X=pred.astype(np.float32),
            obs=adata.obs.copy(),
            var=self._model.preprocessors[target]._output_var(),
        )
