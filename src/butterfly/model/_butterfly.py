"""The AnnData-facing model: ``Butterfly(first, second, modalities=...)``, ``fit``, ``translate``, ``save``, ``load``."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._validation import (
    ButterflyInputError,
    NotTrainedError,
    TrainingDivergedError,
    check_conditions,
    check_keywords,
    check_label_key,
    check_model_options,
    check_paired,
    default_modalities,
    split_modalities,
    use_layers,
)
from ..metrics import _scores as metrics
from ..module._network import TranslatorNetwork, resolve_device
from ..pp import _modalities
from ..pp._accessibility import ATACPreprocessor, fit_open_calibration
from ..pp._expression import Preprocessor
from ..pp._genome import group_by_chromosome
from ..pp._modalities import ModalitySpec
from ..train import _distributed as distributed
from ..train._data import PairedRows, split_validation
from ..train._settings import TrainingConfig
from ..train._trainer import Trainer
from . import _inference as translation
from . import _quality as quality
from ._pairing import (
    joint_clusters,
    measured_pairs,
    pairs_within_groups,
    transport_matches,
    unpaired_pairs,
    unpaired_sampling_sizes,
)
from ._persistence import load_model, save_model
from ._summary import TRUSTED_VALIDATION_R, describe_model  # noqa: F401 (TRUSTED_VALIDATION_R: a model constant)

#: Fewest paired cells ``fit`` accepts (one is held out for validation whatever the fraction).
MIN_TRAINING_CELLS = 3

#: The most validation cells the per-feature validation scores use (a standard error of about 0.02 for r) and
#: the fewest (``translation.VALIDATION_SCORE_KEY`` names the ``var`` column that holds them).
VALIDATION_SCORE_CELLS = 2000
MIN_VALIDATION_SCORE_CELLS = 20

#: Training-pair strategies of a paired dataset: measured pairs (scButterfly-B), augmented within cell-type
#: labels (-T) or within clusters of a joint embedding (-C).
PAIRINGS = ("measured", "label", "cluster")
CLUSTER_BACKENDS = ("builtin", "scvi")


#: The arguments of a constructor that carry data, not settings: not recorded in ``init_params_``.
_DATA_ARGUMENTS = frozenset({"self", "cls", "first", "second", "control", "stimulated", "__class__"})


def _constructor_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A constructor's ``locals()`` on entry, but its data: the settings it was called with."""
    return {name: value for name, value in arguments.items() if name not in _DATA_ARGUMENTS}


def _spread_subset(pairs: PairedRows, n: int) -> PairedRows:
    """At most ``n`` of ``pairs``, evenly spaced over them: the validation rows are sorted, and cells are often
    ordered by sample, so the first ``n`` could all come from one."""
    if len(pairs) <= n:
        return pairs
    pick = np.unique(np.linspace(0, len(pairs) - 1, n).round().astype(int))
    return PairedRows({name: rows[pick] for name, rows in pairs.rows.items()})


class Butterfly:
    """A cross-modality translator (scButterfly-B) between two modalities of paired cells.

    Parameters
    ----------
    first, second
        The two modalities of the same cells in the same order (AnnData with raw counts for RNA, ATAC and
        ADT); or, as ``first`` alone, a dict of the two keyed by modality name (``{"rna": rna, "atac":
        atac}``) or a MuData. They are not modified.
    modalities
        Names or :class:`~butterfly.pp.ModalitySpec` of the two modalities, in the order of
        ``first`` and ``second``: ``("rna", "atac")``, ``("rna", "adt")``, ... By default the keys of a
        dict given as ``first``, else ``("rna", "atac")`` (also the modalities read from a MuData).
    layer
        Where the counts are: ``None`` (default) reads ``adata.X``; a name reads ``adata.layers[name]`` of
        both datasets (e.g. ``"counts"``, when ``X`` holds normalised values); a dict names a layer per
        modality, e.g. ``{"rna": "counts"}`` (modalities it leaves out are read from ``X``).
    pairing
        Training pairs: ``"measured"`` (scButterfly-B), ``"label"`` (-T: pairs augmented within the cell
        types of ``obs[label_key]`` of ``first``, 3x the training cells) or ``"cluster"`` (-C: augmented within
        Leiden clusters, resolution ``cluster_resolution``, of a joint embedding of the training cells).
    cluster_backend
        Joint embedding for ``pairing="cluster"``: ``"builtin"`` (SVD of RNA/ADT joined with LSI of ATAC,
        seconds) or ``"scvi"`` (the paper's MultiVI for RNA+ATAC, totalVI for RNA+ADT; needs
        ``pip install butterfly-omics[scvi]``, minutes).
    cluster_options
        Keyword arguments of the backend: :func:`~butterfly.model._pairing.joint_embedding` (``n_components``) or
        :func:`butterfly._scvi.scvi_latent` (``max_epochs``: scvi-tools' default when not given, 500 for
        MultiVI; ``min_fraction``).
    seed
        Controls the validation split, initialisation, masking, sampling and minibatch order. A run is
        reproducible on CPU; on a GPU some kernels sum in a varying order, so two runs differ.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
    validation_fraction
        Fraction of training cells held out for early stopping (paper: 0.2).
    dropout, batch_norm, discriminator_layers
        Network options. ``batch_norm`` (default True) puts BatchNorm after every hidden linear layer, as
        the authors' code does though the paper does not mention it: measured on SNARE-seq it lifts
        ATAC->RNA AMI from ~0 to 0.19 and RNA->ATAC from 0.15 to 0.46 (docs/guide.md). ``discriminator_layers=1``
        reproduces the authors' one-layer discriminator (the paper describes two).

    Examples
    --------
    >>> import butterfly as bf
    >>> rna, atac = bf.datasets.snare_mcc_demo()
    >>> model = bf.Butterfly(rna, atac, modalities=("rna", "atac"), seed=0)
    >>> history = model.fit(pretrain_epochs=2, epochs=2, progress=False)
    >>> rna_pred = model.translate(atac[:10], source="atac", target="rna")
    >>> rna_pred.shape
    (10, 1677)

    The same with the modalities named by a dict (or a MuData), as scverse tools take them:

    >>> model = bf.Butterfly({"rna": rna, "atac": atac}, seed=0)
    >>> model.names
    ('rna', 'atac')
    """

    def __init__(
        self,
        first,
        second=None,
        *,
        modalities: Sequence[str | ModalitySpec] | None = None,
        layer: str | dict[str, str | None] | None = None,
        pairing: str = "measured",
        label_key: str = "cell_type",
        batch_key: str | None = None,
        cluster_resolution: float = 3.0,
        cluster_backend: str = "builtin",
        cluster_options: dict | None = None,
        seed: int = 0,
        device: str = "auto",
        validation_fraction: float = 0.2,
        dropout: float = 0.1,
        batch_norm: bool = True,
        discriminator_layers: int = 2,
    ) -> None:
        modalities = default_modalities(first, second, modalities)
        self._apply_init_params("paired", _constructor_arguments(locals()))
        data = use_layers(split_modalities(first, second, self.names), self.names, layer)
        check_paired(data[0], data[1], self.names)
        if self.pairing == "cluster" and self.cluster_backend == "scvi":
            from ._scvi import require_scvi

            require_scvi()
            self._raw = data  # the scvi-tools models take raw counts; kept by reference, not copied
        if self.pairing == "label":
            self._labels = check_label_key(data[0], label_key, what=f"The {self.names[0]} data").to_numpy()
        self._read_batches(data)
        self._fit_preprocessing(data)

    def _read_batches(self, data, categories: list[str] | None = None) -> None:
        """Each cell's batch (``obs[batch_key]`` of the first modality, and of the second where it has the
        column too), as codes into the sorted batch names, or into ``categories`` when given (a loaded
        model's)."""
        key = self.init_params_.get("batch_key")
        if key is None:
            return
        values = check_label_key(data[0], key, what=f"The {self.names[0]} data", option="batch_key=")
        values = values.astype(str).to_numpy()
        if key in data[1].obs.columns and not np.array_equal(data[1].obs[key].astype(str).to_numpy(), values):
            raise ButterflyInputError(
                f"obs[{key!r}] differs between the {self.names[0]} and {self.names[1]} data of the same cells; "
                "paired cells come from one batch. Give the batches in one of them, or make them agree."
            )
        known = categories if categories is not None else sorted(set(values))
        codes = pd.Categorical(values, categories=known).codes.astype(np.int64)
        if (codes < 0).any():
            new = sorted(set(values[codes < 0]))
            raise ButterflyInputError(
                f"{int((codes < 0).sum())} cells are of batches the model was not trained on ({new[:5]}). "
                "Continue training on cells of known batches, or adapt the model to new batches of one "
                "modality with model.map_query(...)."
            )
        self.batch_categories_, self._batch_codes = list(known), codes

    @classmethod
    def unpaired(
        cls,
        first,
        second: ad.AnnData | None = None,
        *,
        modalities: Sequence[str | ModalitySpec] | None = None,
        label_key: str = "cell_type",
        layer: str | dict[str, str | None] | None = None,
        seed: int = 0,
        device: str = "auto",
        validation_fraction: float = 0.2,
        dropout: float = 0.1,
        batch_norm: bool = True,
        discriminator_layers: int = 2,
    ) -> Butterfly:
        """A translator trained on two modalities measured in different cells that share cell-type labels.

        Training pairs match a random ``first`` cell with a random ``second`` cell of the same label, each
        shared label drawn in proportion to its average share of the two sets (paper eq. 13); labels found on
        one side only are not used for training, but every cell can be translated afterwards.

        Parameters
        ----------
        first, second
            The cells measured in each modality (raw counts for RNA, ATAC and ADT): different cells, any
            numbers of them.
        label_key
            The ``obs`` column, in both, holding the cell-type labels that pair them.
        modalities, layer, seed, device, validation_fraction, dropout, batch_norm, discriminator_layers
            As for :class:`Butterfly`; the validation cells are split off each side before pairing.

        Examples
        --------
        >>> import butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> model = bf.Butterfly.unpaired(rna[:1000], atac[1000:], label_key="cell_type", seed=0)  # other cells
        >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
        >>> model.training_data_["cells"]
        {'rna': 1000, 'atac': 1000}
        >>> model.translate(rna[:5], source="rna", target="atac", progress=False).shape
        (5, 6401)
        """
        modalities = default_modalities(first, second, modalities)
        params = _constructor_arguments(locals())
        model = cls.__new__(cls)
        model._apply_init_params("unpaired", params)
        model._fit_two_sets(first, second)
        return model

    def _fit_two_sets(self, first, second, check=None) -> None:
        """Read two sets of different cells sharing ``label_key`` labels and fit the preprocessing;
        ``check(data, names)`` runs before the preprocessing is fitted."""
        data = use_layers(split_modalities(first, second, self.names), self.names, self.init_params_["layer"])
        labels = tuple(
            check_label_key(d, self.label_key, what=f"The {n} data").to_numpy()
            for d, n in zip(data, self.names, strict=True)
        )
        unpaired_sampling_sizes(*labels)  # refuses sets with no shared label
        if check is not None:
            check(data, self.names)
        self._labels = labels
        self._fit_preprocessing(data)

    @classmethod
    def perturbation(
        cls,
        control: ad.AnnData,
        stimulated: ad.AnnData,
        *,
        label_key: str = "cell_type",
        names: tuple[str, str] = ("control", "stimulated"),
        layer: str | dict[str, str | None] | None = None,
        transport_components: int = 50,
        seed: int = 0,
        device: str = "auto",
        validation_fraction: float = 0.2,
        dropout: float = 0.1,
        batch_norm: bool = True,
        discriminator_layers: int = 2,
    ) -> Butterfly:
        """scButterfly's perturbation-response model: learn from control and stimulated cells (different
        cells of the same cell types) how cells respond, then predict the stimulated state of any control
        cells, including cell types never seen stimulated.

        Both sides use the RNA networks (256-128 encoder, 50% input mask, MSE). Training pairs (paper,
        Methods): within each cell type found on both sides, the cells of both conditions are embedded by
        PCA (``transport_components``), the exact optimal transport plan between them is computed (Euclidean
        cost, uniform weights) and each control cell is paired with the stimulated cell it sends most mass
        to (:func:`~butterfly.model._pairing.transport_matches`). Validation cells are split off each side before
        matching. Then ``fit()`` as for any pair, and ``translate(cells, source="control",
        target="stimulated")``; score with :func:`butterfly.benchmark.evaluate_perturbation`.

        Parameters
        ----------
        control, stimulated
            Log-normalised expression of the same genes (as scGen's Kang data; for counts,
            ``sc.pp.normalize_total`` and ``sc.pp.log1p`` first), used as given; different cells.
        label_key
            The ``obs`` column, in both, holding the cell types.
        names
            The two conditions' modality names, as ``translate``'s ``source`` and ``target`` take them.
        layer
            Read the values from ``adata.layers[layer]`` instead of ``X``, as for :class:`Butterfly`.
        transport_components
            PCA components of the embedding the transport plan is computed in (paper: 50).
        seed, device, validation_fraction, dropout, batch_norm, discriminator_layers
            As for :class:`Butterfly`.

        Examples
        --------
        >>> import anndata as ad, butterfly as bf
        >>> pbmc = ad.read_h5ad("kang_pbmc.h5ad")  # doctest: +SKIP
        >>> control = pbmc[pbmc.obs["condition"] == "control"]  # doctest: +SKIP
        >>> stimulated = pbmc[pbmc.obs["condition"] == "stimulated"]  # doctest: +SKIP
        >>> held_out = control.obs["cell_type"] == "CD4T"  # a cell type never seen stimulated  # doctest: +SKIP
        >>> model = bf.Butterfly.perturbation(  # doctest: +SKIP
        ...     control[~held_out], stimulated[stimulated.obs["cell_type"] != "CD4T"], label_key="cell_type"
        ... )
        >>> history = model.fit(**bf.FAST_SETTING)  # doctest: +SKIP
        >>> predicted = model.translate(control[held_out], source="control", target="stimulated")  # doctest: +SKIP
        """
        params = _constructor_arguments(locals())
        model = cls.__new__(cls)
        model._apply_init_params("perturbation", params)
        model._fit_two_sets(control, stimulated, check_conditions)
        return model

    def _apply_init_params(self, constructor: str, params: dict[str, Any]) -> None:
        """Check and apply what the constructor's arguments (but the data) decide, and record them in
        ``init_params_``. Every constructor and :meth:`load` come here: a loaded model is configured from the
        record it was saved with, by the same code that configured it first."""
        p = dict(params)
        if constructor == "perturbation":
            names, components = p["names"], p["transport_components"]
            if (
                not isinstance(names, (tuple, list))
                or len(names) != 2
                or not all(isinstance(n, str) for n in names)
            ):
                raise ButterflyInputError(
                    f"names must be two condition names, e.g. ('control', 'stimulated'); got {names!r}."
                )
            if (
                not isinstance(components, (int, np.integer))
                or isinstance(components, bool)
                or components < 1
            ):
                raise ButterflyInputError(
                    f"transport_components must be a whole number of at least 1 (paper: 50), got {components!r}."
                )
            p["names"], p["transport_components"] = [str(n) for n in names], int(components)
            modalities = [dataclasses.replace(_modalities.EXPRESSION, name=n) for n in p["names"]]
        else:
            modalities = p["modalities"]
            if isinstance(modalities, (list, tuple)):
                modalities = [ModalitySpec.from_dict(m) if isinstance(m, dict) else m for m in modalities]
        self._configure(
            modalities, p["seed"], p["device"], p["validation_fraction"], p["dropout"], p["batch_norm"],
            p["discriminator_layers"],
        )  # fmt: skip
        if constructor != "perturbation":  # the specs as JSON can hold them
            p["modalities"] = [self.specs[n].to_dict() for n in self.names]
        self.pairing = {"unpaired": "unpaired", "perturbation": "transport"}.get(
            constructor, p.get("pairing")
        )
        self.label_key, self.cluster_resolution = p["label_key"], None
        self.cluster_backend, self.cluster_options = None, {}
        if constructor == "paired":
            self._check_pairing(p)
            self.cluster_resolution, self.cluster_backend = p["cluster_resolution"], p["cluster_backend"]
            self.cluster_options = p["cluster_options"] = dict(p["cluster_options"] or {})
        if constructor == "perturbation":
            self.transport_components = p["transport_components"]
        self._raw, self._labels = None, None
        batch_key = p.get("batch_key")
        if batch_key is not None and (not isinstance(batch_key, str) or not batch_key):
            raise ButterflyInputError(
                f"batch_key must name an obs column (a string) or be None, got {batch_key!r}."
            )
        #: the names of the training batches (batch covariates, with batch_key=), else None
        self.batch_categories_: list[str] | None = None
        self._batch_codes: np.ndarray | None = None
        #: the constructor ("paired", "unpaired" or "perturbation") and the arguments it was called with,
        #: but the data: what :meth:`save` records and :meth:`load` rebuilds the model from
        self.init_params_: dict[str, Any] = {"constructor": constructor, **p}

    @staticmethod
    def _check_pairing(p: dict[str, Any]) -> None:
        if p["pairing"] not in PAIRINGS:
            raise ButterflyInputError(f"pairing must be one of {list(PAIRINGS)}, got {p['pairing']!r}.")
        resolution = p["cluster_resolution"]
        if (
            not isinstance(resolution, (int, float))
            or isinstance(resolution, bool)
            or not 0 < resolution < np.inf
        ):
            raise ButterflyInputError(
                f"cluster_resolution (Leiden's, for pairing='cluster') must be a positive number (paper: 3), got "
                f"{resolution!r}."
            )
        if p["cluster_backend"] not in CLUSTER_BACKENDS:
            raise ButterflyInputError(
                f"cluster_backend must be one of {list(CLUSTER_BACKENDS)}, got {p['cluster_backend']!r}."
            )
        if p["cluster_options"] is not None and not isinstance(p["cluster_options"], dict):
            raise ButterflyInputError(f"cluster_options must be a dict, got {p['cluster_options']!r}.")
        if p["pairing"] == "cluster" and p["cluster_backend"] == "builtin":
            check_keywords(
                p["cluster_options"] or {}, ["n_components"], where="cluster_options (builtin backend)"
            )

    def _configure(
        self, modalities, seed, device, validation_fraction, dropout, batch_norm, discriminator_layers
    ):
        if isinstance(modalities, (str, _modalities.ModalitySpec)):
            raise ButterflyInputError(
                f"modalities must be a pair, the modality of each dataset in order, e.g. ('rna', 'atac'); "
                f"got {modalities!r}."
            )
        specs = [_modalities.get_modality(m) for m in modalities]
        if len(specs) != 2 or specs[0].name == specs[1].name:
            raise ButterflyInputError(
                f"modalities must name two different modalities, got {[s.name for s in specs]}. For two "
                "conditions of the same kind use specs with different names, e.g. "
                "dataclasses.replace(butterfly.pp.EXPRESSION, name='control')."
            )
        self.specs = {s.name: s for s in specs}
        self.names = (specs[0].name, specs[1].name)
        check_model_options(seed, validation_fraction, dropout, batch_norm, discriminator_layers)
        self.seed = int(seed)
        self.device = distributed.local_device(resolve_device(device))
        self.validation_fraction = float(validation_fraction)
        self.network_options = {
            "dropout": float(dropout),
            "batch_norm": bool(batch_norm),
            "discriminator_layers": int(discriminator_layers),
        }
        self.training_config: TrainingConfig | None = None
        self.history_: pd.DataFrame | None = None
        self.is_trained_ = False
        self.batch_norm_recalibration_: dict[str, float | bool] | None = None
        #: per target modality, each feature's translation score on the validation cells (see fit)
        self.validation_scores_: dict[str, np.ndarray] | None = None
        #: what the last fit trained on: cells per modality, training and validation pairs (see summary)
        self.training_data_: dict[str, Any] | None = None
        #: per direction ("rna->atac"), the validation check of butterfly.model._quality: does a cell's own translation
        #: match it better than other cells' do (the training mean scores 0), beside kNN's
        self.translation_check_: dict[str, dict] | None = None
        #: per ATAC target, the calibration of translate's probabilities on the validation cells (see fit)
        self.atac_calibration_: dict[str, dict] | None = None
        #: what map_query adapted the model to (modality, batch_key, new batches, cells, epochs), else None
        self.query_: dict[str, Any] | None = None
        self.query_history_: pd.DataFrame | None = None
        #: the Python and package versions a loaded model was saved with (None for a model built here)
        self.saved_with_: dict[str, str] | None = None

    def _fit_preprocessing(self, data) -> None:
        self.preprocessors: dict[str, Preprocessor] = {}
        self._matrices: dict[str, sp.csr_matrix] = {}
        for spec, adata in zip(self.specs.values(), data, strict=True):
            pre = spec.make_preprocessor()
            self._matrices[spec.name] = pre.fit_transform(adata).X
            self.preprocessors[spec.name] = pre
        self._build_network()

    # -- construction -------------------------------------------------------------------------------------
    def _chromosome_codes(self) -> dict[str, list[int] | None]:
        codes = {}
        for name, spec in self.specs.items():
            pre = self.preprocessors[name]
            if spec.chromosome_blocked:
                if not isinstance(pre, ATACPreprocessor):
                    raise ValueError(f"chromosome_blocked needs ATAC preprocessing for modality {name!r}.")
                codes[name] = group_by_chromosome(pre.chrom_)[1].tolist()
            else:
                codes[name] = None
        return codes

    def _build_network(self) -> None:
        n_features = {name: pre.n_features for name, pre in self.preprocessors.items()}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            network = TranslatorNetwork(
                list(self.specs.values()),
                n_features,
                self._chromosome_codes(),
                **self.network_options,
                n_batches=len(self.batch_categories_ or []),
            )
        self.network = network.to(self.device)

    def __repr__(self) -> str:
        dims = ", ".join(f"{n}: {p.n_features} features" for n, p in self.preprocessors.items())
        state = "trained" if self.is_trained_ else "not trained"
        return f"Butterfly({self.names[0]} <-> {self.names[1]}; {dims}; {state}; device={self.device})"

    def summary(self) -> str:
        """What this model is and how it was trained, in a few lines: modalities and features, pairing,
        the cells it trained on, the training setting (named after the nearer of the paper defaults and
        ``FAST_SETTING``, with what differs), each phase's epochs (run, allowed, kept) and the kept epoch's
        validation reconstruction loss (the early-stopping criterion), the BatchNorm recalibration, how many
        features translate well on the validation cells, and the versions a loaded model was saved with.
        ``butterfly info MODEL`` prints it; ``butterfly train`` prints it after training.

        Examples
        --------
        >>> import butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> model = bf.Butterfly(rna[:300], atac[:300], seed=0)
        >>> print(model.summary().splitlines()[1])
        modalities: rna (1,677 genes) <-> atac (5,766 peaks on 20 chromosomes)
        """
        return describe_model(self)

    # -- training -----------------------------------------------------------------------------------------
    def fit(
        self,
        pretrain_epochs: int = 100,
        epochs: int = 200,
        patience: int = 50,
        batch_size: int = 64,
        *,
        progress: bool = True,
        **options: Any,
    ) -> pd.DataFrame:
        """Pretrain each modality, then train the translator adversarially (paper defaults).

        Parameters
        ----------
        pretrain_epochs
            Most epochs of each modality's own pretraining (paper: 100).
        epochs
            Most epochs of the integrative (adversarial) phase (paper: 200).
        patience
            Epochs without a lower validation reconstruction loss before a phase stops (paper: 50); the best
            epoch's weights are restored at the end of each phase.
        batch_size
            Cells per minibatch (authors' code: 64).
        progress
            Progress bars with the current losses.
        **options
            Other :class:`~butterfly.train.TrainingConfig` fields (``lr``, ``kl_warmup_epochs``,
            ``precision``, ...). ``fit(**bf.FAST_SETTING)`` trains in minutes rather than the paper's hour
            (docs/guide.md).

        Returns
        -------
        pandas.DataFrame
            The loss history, one row per epoch and phase (also kept in ``history_``); plot it with
            :func:`butterfly.pl.plot_history`.

        Notes
        -----
        A second ``fit`` continues from the current weights (as scvi-tools' ``train`` does); for a fresh run,
        build a new ``Butterfly``. With ``recalibrate_batch_norm=True`` (part of ``FAST_SETTING``),
        ``batch_norm_recalibration_`` then holds the validation loss before and after the re-estimated
        BatchNorm statistics and whether they were kept. With ``weight_average_halflife`` above 0, the
        integrative rows' validation losses and the weights kept are those of the moving average of the
        weights (the training losses are the weights' own). Interrupted (Ctrl-C), ``fit`` restores the best
        weights of the finished epochs and keeps their history in ``history_`` before the interrupt
        propagates; the model translates once an integrative epoch has finished. After training,
        ``validation_scores_`` holds each translated gene's or protein's Pearson r on the validation cells
        (see :meth:`translate`'s ``var["validation_pearson"]``), and ``translation_check_`` each direction's
        check against the training mean and kNN (:mod:`butterfly.model._quality`): where a cell's own translation
        matches it no better than other cells' translations do (as predicting every cell as the mean training
        profile), ``fit`` warns in one sentence, and :meth:`summary` marks it. Started by ``torchrun`` as one of several
        processes, ``fit`` trains data-parallel (:mod:`butterfly.train._distributed`; ``batch_size`` cells per process).

        Examples
        --------
        >>> import butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> model = bf.Butterfly(rna[:400], atac[:400], seed=0)
        >>> history = model.fit(pretrain_epochs=2, epochs=2, progress=False)  # the paper's: model.fit()
        >>> history.groupby("phase", sort=False).size().to_dict()
        {'pretrain rna': 2, 'pretrain atac': 2, 'integrative': 2}
        >>> bool(history["train_loss"].iloc[1] < history["train_loss"].iloc[0])
        True
        >>> fast = bf.Butterfly(rna[:400], atac[:400], seed=0)
        >>> history = fast.fit(**{**bf.FAST_SETTING, "epochs": 2, "pretrain_epochs": 2}, progress=False)
        >>> sorted(fast.batch_norm_recalibration_)
        ['kept', 'validation_loss_after', 'validation_loss_before']
        """
        if not self._matrices:
            raise ButterflyInputError(
                "This model was loaded from disk without training cells; it translates, and it trains further "
                "when loaded with paired cells: Butterfly.load(path, first=rna, second=atac), then fit()."
            )
        check_keywords(options, [f.name for f in dataclasses.fields(TrainingConfig)], where="fit()")
        self.training_config = TrainingConfig(
            pretrain_epochs=pretrain_epochs,
            epochs=epochs,
            patience=patience,
            batch_size=batch_size,
            **options,
        )
        if (
            distributed.launched()
        ):  # one of several processes started by torchrun (butterfly.train._distributed)
            device = distributed.join(self.device)
            if device != self.device:
                self.device, self.network = device, self.network.to(device)
        if epochs == 0 and not self.is_trained_:
            raise ButterflyInputError(
                "epochs=0 runs no integrative training, and this model has none yet, so it would not translate: "
                "give epochs of at least 1 (paper: 200)."
            )
        train, validation = self._training_pairs()
        if len(train) < 2:
            raise ButterflyInputError(
                f"Only {len(train)} training pair(s) remain after the validation split; training needs at least 2 "
                "(a minibatch of one cell is skipped). Give more cells, or a smaller validation_fraction."
            )
        self.batch_norm_recalibration_ = self.validation_scores_ = self.atac_calibration_ = None
        self.translation_check_ = None
        self.training_data_ = {
            "cells": {name: int(self._matrices[name].shape[0]) for name in self.names},
            "training_pairs": len(train),
            "validation_pairs": len(validation),
            "processes": distributed.rank_and_size()[1],  # each with its own minibatches of batch_size
        }
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            trainer = self._trainer(train, validation, progress)
            try:
                trainer.pretrain(self.names[0])
                trainer.pretrain(self.names[1])
                trainer.integrate()
                if self.training_config.recalibrate_batch_norm:
                    self.batch_norm_recalibration_ = trainer.recalibrate_batch_norm()
            except KeyboardInterrupt:
                where, state = self._keep_finished_epochs(trainer)
                warnings.warn(
                    f"Training was interrupted during {where}. {state} The losses of the finished epochs are "
                    "in model.history_; model.fit() continues from these weights.",
                    stacklevel=2,
                )
                raise
            except TrainingDivergedError as err:
                _, state = self._keep_finished_epochs(trainer, diverged=True)
                raise TrainingDivergedError(f"{err} {state} The losses are in model.history_.") from None
        self.network.eval()
        self.history_ = pd.DataFrame(trainer.history)
        self.is_trained_ = True
        self._score_validation(train, validation)
        return self.history_

    def _score_validation(self, train: PairedRows, validation: PairedRows) -> None:
        """Score the translations of the validation cells, held out of training (at most
        ``VALIDATION_SCORE_CELLS``, spread over the data).

        ``validation_scores_``: each feature's Pearson r across cells, for RNA, protein and expression targets.
        ATAC targets get none: a peak is open in too few cells for a per-peak score to mean anything (on
        SNARE-seq, 3 of 320 validation cells at the median; per-peak AUROCs near 0.5 that did not agree between
        validation and test cells; RESULTS.md).

        ``translation_check_``: for each direction, how much better a cell's own translation matches its
        measured profile than other cells' translations do (with a bootstrap interval), beside kNN's; the
        training mean scores 0 (:func:`butterfly.model._quality.check_direction`). ``atac_calibration_``: for an ATAC
        target, the calibration of translate's probabilities
        (:func:`~butterfly.pp._accessibility.fit_open_calibration`). ``fit`` warns where the model is no better than the
        training mean. Both are ``None`` where validation pairs are not measured pairs (unpaired,
        perturbation) or are too few."""
        self.validation_scores_ = self.translation_check_ = self.atac_calibration_ = None
        if self.pairing in ("unpaired", "transport") or len(validation) < MIN_VALIDATION_SCORE_CELLS:
            return
        scores, checks, calibrations = {}, {}, {}
        pairs = _spread_subset(validation, VALIDATION_SCORE_CELLS)
        for source, target in (self.names, self.names[::-1]):
            rows = pairs.rows[source]
            truth = self._matrices[target][pairs.rows[target]]
            pred = np.zeros(truth.shape, np.float32)
            codes = None if self._batch_codes is None else self._batch_codes[rows]
            for batch, out, _ in translation.decoded_batches(
                self, self._matrices[source][rows], source, target, 1024, False, codes=codes
            ):
                pred[batch] = out
            truth = truth.toarray() if sp.issparse(truth) else np.asarray(truth)
            target_pre = self.preprocessors[target]
            if isinstance(target_pre, ATACPreprocessor):  # the probability calibration (translate's default)
                estimate = target_pre.inverse_transform(pred, None)
                calibrations[target] = fit_open_calibration(estimate, truth > 0, seed=self.seed)
            else:
                scores[target] = metrics.feature_pearson(pred, truth)
            checks[f"{source}->{target}"] = quality.check_direction(
                pred, truth, self._matrices[source][train.rows[source]], self._matrices[target][train.rows[target]],
                self._matrices[source][rows], target_kind=self.preprocessors[target].kind, seed=self.seed,
            )  # fmt: skip
        self.validation_scores_, self.translation_check_ = scores, checks
        self.atac_calibration_ = calibrations or None
        for direction, check in checks.items():
            text = quality.warning_text(direction, check)
            if text:
                warnings.warn(text, UserWarning, stacklevel=3)

    def _keep_finished_epochs(self, trainer: Trainer, diverged: bool = False) -> tuple[str, str]:
        """After an interrupted or diverged ``fit``: keep the finished epochs' history and best weights (the
        trainer has put them back); returns where training stopped and what the model can do now. The model
        is marked trained only once an integrative epoch has finished, and after a divergence only when the
        weights put back are a finished integrative epoch's (not the phase's starting weights)."""
        self.network.eval()
        self.history_ = pd.DataFrame(trainer.history)
        integrative = [r for r in trainer.history if r["phase"] == "integrative"]
        best = integrative[-1]["best_epoch"] if integrative else -1
        if best >= 0 or (integrative and not diverged):
            self.is_trained_ = True
            if best >= 0:
                state = (
                    f"The model translates with the weights of epoch {best} (lowest validation loss so far)."
                )
            else:
                state = "The model translates with the current weights (no epoch after the KL warm-up had finished)."
        elif (
            integrative
        ):  # diverged before a candidate epoch: the translator's starting weights were put back
            self.is_trained_ = False
            state = "The translator had not finished an epoch with finite losses, so the model cannot translate yet."
        elif self.is_trained_:  # an earlier fit's model, part-way through pretraining again
            state = "The model translates, with weights part-way through pretraining again."
        else:
            state = "The translator had not started training, so the model cannot translate yet."
        where = trainer.phase or "set-up"
        where = where if trainer.epoch is None else f"{where} epoch {trainer.epoch}"
        return where, state

    def _training_pairs(self) -> tuple[PairedRows, PairedRows]:
        """Split cells into training and validation, then pair the training cells by the chosen strategy.

        The split comes first, so synthetic pairs never join a training cell with a validation cell.
        """
        rng = np.random.default_rng(self.seed)
        a, b = self.names
        if self.pairing in ("unpaired", "transport"):
            splits = [split_validation(len(labels), self.validation_fraction, rng) for labels in self._labels]
            pairs = []
            for part, offset in ((0, 0), (1, 1)):
                cells = {a: splits[0][part], b: splits[1][part]}
                labels = (self._labels[0][cells[a]], self._labels[1][cells[b]])
                if self.pairing == "unpaired":
                    local = unpaired_pairs(*labels, self.names, seed=self.seed + offset)
                else:
                    local = self._transport_pairs(cells, labels)
                pairs.append(local.mapped(cells))
            return pairs[0], pairs[1]
        n_cells = self._matrices[a].shape[0]
        if n_cells < MIN_TRAINING_CELLS:
            raise ButterflyInputError(
                f"{n_cells} paired cells are too few to train on: butterfly needs at least {MIN_TRAINING_CELLS} "
                "(some for training, some held out for early stopping), and far more for a useful model."
            )
        train_cells, val_cells = split_validation(n_cells, self.validation_fraction, rng)
        validation = measured_pairs(len(val_cells), self.names).mapped({a: val_cells, b: val_cells})
        if self.pairing == "measured":
            local = measured_pairs(len(train_cells), self.names)
        else:
            if self.pairing == "label":
                groups = self._labels[train_cells]
            else:
                kinds = [self.specs[n].preprocessing for n in self.names]
                start = time.perf_counter()
                if self._raw is not None:
                    from ._scvi import scvi_clusters

                    raw = [d[train_cells] for d in self._raw]
                    groups = scvi_clusters(
                        raw, kinds, resolution=self.cluster_resolution, seed=self.seed, **self.cluster_options
                    )
                else:
                    matrices = [self._matrices[n][train_cells] for n in self.names]
                    groups = joint_clusters(
                        matrices, kinds, resolution=self.cluster_resolution, seed=self.seed,
                        **self.cluster_options,
                    )  # fmt: skip
                self.cluster_seconds_ = time.perf_counter() - start
            self.training_groups_ = groups  # one per training cell (validation cells excluded)
            self.training_cells_ = train_cells
            local = pairs_within_groups(groups, self.names, seed=self.seed)
        return local.mapped({a: train_cells, b: train_cells}), validation

    def _transport_pairs(
        self, cells: dict[str, np.ndarray], labels: tuple[np.ndarray, np.ndarray]
    ) -> PairedRows:
        """Optimal-transport pairs between ``cells`` of the two conditions (local row numbers)."""
        a, b = self.names
        columns = pd.Index(self.preprocessors[b].features_).get_indexer(self.preprocessors[a].features_)
        first, second = transport_matches(
            self._matrices[a][cells[a]], self._matrices[b][cells[b]][:, columns], *labels,
            n_components=self.transport_components, seed=self.seed,
        )  # fmt: skip
        return PairedRows({a: first, b: second})

    def _trainer(self, train: PairedRows, validation: PairedRows, progress: bool) -> Trainer:
        return Trainer(
            self.network, self._matrices, train, validation, self.training_config,
            device=self.device, seed=self.seed, progress=progress,
            batch_codes=None if self._batch_codes is None else dict.fromkeys(self.names, self._batch_codes),
        )  # fmt: skip

    def recalibrate_batch_norm(self) -> dict[str, float | bool] | None:
        """Re-estimate the BatchNorm statistics of a trained model without training it again.

        What ``fit(recalibrate_batch_norm=True)`` does at the end of training (see
        :class:`~butterfly.train.TrainingConfig`), for a model trained without it: the training cells pass
        once through the network as translation runs it, and the new statistics are kept only if they lower
        the validation loss. Needs the training cells (a loaded model: Butterfly.load(path, first=, second=)). Returns (and keeps in
        ``batch_norm_recalibration_``) both validation losses and whether the statistics were kept.

        Examples
        --------
        >>> import butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> model = bf.Butterfly(rna[:400], atac[:400], seed=0)
        >>> history = model.fit(pretrain_epochs=2, epochs=2, progress=False)
        >>> result = model.recalibrate_batch_norm()
        >>> result["kept"] == (result["validation_loss_after"] < result["validation_loss_before"])
        True
        """
        if not self.is_trained_:
            raise NotTrainedError("The model is not trained yet; call fit() first.")
        if not self._matrices:
            raise RuntimeError(
                "This model was loaded from disk without training cells; load it with them to recalibrate: "
                "Butterfly.load(path, first=rna, second=atac)."
            )
        train, validation = self._training_pairs()
        self.batch_norm_recalibration_ = self._trainer(
            train, validation, progress=False
        ).recalibrate_batch_norm()
        self.network.eval()
        self._score_validation(train, validation)
        return self.batch_norm_recalibration_

    # -- inference (butterfly.model._inference) ----------------------------------------------------------------
    def translate(
        self,
        adata: ad.AnnData,
        source: str,
        target: str,
        *,
        layer: str | None = None,
        peak_matching: str = "exact",
        normalized_to: float | None = None,
        atac_output: str = "probability",
        library_size: np.ndarray | None = None,
        n_samples: int = 0,
        batch_size: int = 1024,
        progress: bool = True,
        key_added: str | None = None,
        reference_batch: str | None = None,
    ) -> ad.AnnData:
        """Predict the ``target`` modality of cells measured in ``source``; any cells, seen or not.

        Features of ``adata`` are aligned by name to those the model was trained on. Returns an AnnData with
        the target's features (in the training data's order and names), ``obs`` copied from ``adata``, the
        latent mean in ``obsm["X_butterfly"]``, and predicted RNA/ATAC values below 1e-4 set to 0. For more
        cells than fit in memory, :meth:`translate_to_h5ad` writes the same result to a file batch by batch.
        A MuData in gives a MuData out: a new MuData holding ``adata``'s modalities and the translation as
        one more, named ``key_added`` (``adata`` itself is not changed).

        Parameters
        ----------
        adata
            The cells, measured in ``source``: an AnnData, or a MuData holding a modality named ``source``.
        layer
            Read the cells from ``adata.layers[layer]`` instead of ``adata.X`` (e.g. ``"counts"``).
        peak_matching
            For an ATAC source: ``"exact"`` (default) matches peaks by their coordinates; ``"overlap"`` gives
            each of the model's peaks the counts of the input peaks that overlap it, for peaks called apart
            from the training data's (another sample, another peak caller).
        normalized_to
            For an RNA source whose cells are already log-normalised, not counts: the total they were scaled
            to before ``log1p`` (scanpy's ``normalize_total(target_sum=...)``, often ``1e4``). Another model's
            RNA translation is recognised by itself (its ``uns["butterfly"]["normalized_to"]``), so
            translations chain: ATAC -> RNA with one model, then RNA -> protein with another trained on the
            genes the first predicts (docs/guide.md: "translations chain").
        atac_output
            For an ATAC target, what the values mean:

            - ``"probability"`` (default): the probability that the peak is open in that cell, calibrated on
              the validation cells after training (a logistic fit of the measured open peaks on the log of the
              ``"counts"`` estimate: strictly increasing, so peaks and cells rank as in ``"counts"``; the
              reliability curve is :func:`butterfly.pl.plot_reliability`). Models saved before butterfly
              calibrated, and unpaired ones, give the ``"counts"`` estimate clipped to [0, 1].
            - ``"tfidf"``: the decoder's own output, the peak's TF-IDF in the model's scaling (what it is trained
              to reconstruct: inversely proportional to the cell's open peaks and weighted by the peak's IDF, so
              not a probability; on SNARE-seq its values are near 0.005 where 1% of entries are open).
            - ``"counts"``: counts recovered from it (paper eq. 12) with ``library_size`` open peaks per cell;
              with binarised training input, an uncalibrated estimate of the chance the peak is open (it may
              exceed 1).
            - ``"binary"``: those counts binarised (1 above both the cell's and the peak's mean).
        library_size
            Open-peak count per cell used by ``"counts"``/``"binary"``; defaults to the training median.
        n_samples
            0 (default, as the paper): decode the latent mean. ``N``: the mean of ``N`` outputs decoded from
            draws of each cell's latent posterior (its expected profile, as scvi-tools' ``n_samples``), ``N``
            times the decoding work. A cell's draws are seeded by the model's seed and the cell's row in
            ``adata``, so the same cells in the same order give the same translation at any ``batch_size``
            (and from :meth:`translate_to_h5ad`). Averaged ATAC profiles cluster more coarsely; on SNARE-seq
            that raised RNA->ATAC AMI for fast-setting models and lowered it for others (docs/guide.md).
        batch_size, progress
            Cells per forward pass, and a progress bar over them when there are several.
        key_added
            For a MuData ``adata``: the name of the translation's modality; by default ``target``, or
            ``f"{target}_translated"`` when ``adata`` measured ``target`` too.
        reference_batch
            For a model with batch covariates (``batch_key=``): translate every cell as if of this training
            batch. By default each cell uses its own ``obs[batch_key]`` where the model knows that batch, and
            the mean of the training batches' covariates where it does not (with a warning; or adapt the model
            to new batches with :meth:`map_query`).

        Examples
        --------
        >>> import butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> model = bf.Butterfly(rna[:400], atac[:400], seed=0)
        >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
        >>> new_cells = atac[1900:]  # cells the model never saw
        >>> rna_pred = model.translate(new_cells, source="atac", target="rna", progress=False)
        >>> rna_pred.shape, rna_pred.obsm["X_butterfly"].shape
        ((100, 1677), (100, 128))
        >>> counts = model.translate(rna[1900:], source="rna", target="atac", atac_output="counts", progress=False)
        >>> list(counts.var.columns)
        ['chrom', 'start', 'end']
        """
        target_pre = translation.check_translation(self, source, target, atac_output)
        given = adata
        adata, options = translation.source_cells(self, adata, source, layer, peak_matching, normalized_to)
        codes = translation.cell_batches(self, adata, reference_batch)
        output, latent = translation.translate_arrays(
            self, adata, source, target, batch_size, progress, n_samples, options, codes
        )
        calibration = (self.atac_calibration_ or {}).get(target)
        output = translation.atac_form(target_pre, output, atac_output, library_size, calibration)
        translated = translation.translation_anndata(
            self, adata, target_pre, output, latent, source, target, atac_output
        )
        if given is not adata and hasattr(given, "mod"):  # a MuData in, a MuData out
            return translation.with_modality(given, translated, key_added or target)
        return translated

    def translate_to_h5ad(
        self,
        adata: ad.AnnData,
        path: str | os.PathLike,
        source: str,
        target: str,
        *,
        layer: str | None = None,
        peak_matching: str = "exact",
        normalized_to: float | None = None,
        atac_output: str = "probability",
        library_size: np.ndarray | None = None,
        n_samples: int = 0,
        batch_size: int = 1024,
        progress: bool = True,
        reference_batch: str | None = None,
    ) -> None:
        """:meth:`translate` into an ``.h5ad`` file, ``batch_size`` cells at a time: the output (dense, cells x
        target features x 4 bytes) never sits in memory, only one batch of it; what memory grows with is the
        input and the 128-d latent. The same values as :meth:`translate` with the same ``batch_size``
        (other batch sizes agree to float32 rounding); the file is written atomically.
        ``"binary"`` ATAC reads the written counts back once, for the column means.

        Parameters
        ----------
        path
            The ``.h5ad`` file to write. An existing file is replaced, as ``AnnData.write_h5ad`` does, but
            only once the new one is whole.
        adata, source, target, layer, peak_matching, normalized_to
            As for :meth:`translate`.
        atac_output, library_size, n_samples, batch_size, progress
            As for :meth:`translate`.

        Examples
        --------
        >>> import tempfile, anndata as ad, butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> model = bf.Butterfly(rna[:400], atac[:400], seed=0)
        >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = f"{folder.name}/atac_from_rna.h5ad"
        >>> model.translate_to_h5ad(rna[1900:], path, source="rna", target="atac", batch_size=32, progress=False)
        >>> ad.read_h5ad(path).shape
        (100, 7632)
        >>> folder.cleanup()
        """
        translation.check_translation(self, source, target, atac_output)
        adata, options = translation.source_cells(self, adata, source, layer, peak_matching, normalized_to)
        translation.write_translation(
            self, adata, path, source, target, options, atac_output=atac_output, library_size=library_size,
            n_samples=n_samples, batch_size=batch_size, progress=progress,
            codes=translation.cell_batches(self, adata, reference_batch),
        )  # fmt: skip

    def latent(
        self, adata: ad.AnnData, source: str, *, layer: str | None = None, peak_matching: str = "exact",
        normalized_to: float | None = None, batch_size: int = 1024, progress: bool = True,
    ) -> np.ndarray:  # fmt: skip
        """The translator's latent mean (cells x 128) of cells measured in ``source``: the embedding that
        both modalities share, for clustering or neighbours (``adata.obsm["X_butterfly"] = ...``).

        Parameters
        ----------
        adata, source
            The cells and the modality they were measured in, as for :meth:`translate`.
        layer, peak_matching, normalized_to, batch_size, progress
            As for :meth:`translate`.

        Examples
        --------
        >>> import butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> model = bf.Butterfly(rna[:400], atac[:400], seed=0)
        >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
        >>> model.latent(atac[1900:], "atac", progress=False).shape
        (100, 128)
        """
        translation.check_names(self, source)
        if not self.is_trained_:  # an untrained encoder's embedding is random, not the shared latent space
            raise NotTrainedError("The model is not trained yet; call fit() first, then latent().")
        adata, options = translation.source_cells(self, adata, source, layer, peak_matching, normalized_to)
        codes = translation.cell_batches(self, adata)
        return translation.translate_arrays(
            self, adata, source, None, batch_size, progress, options=options, codes=codes
        )[1]

    def map_query(
        self, query, modality: str, *, batch_key: str | None = None, epochs: int = 20, seed: int = 0,
        layer: str | None = None, batch_size: int = 128, lr: float = 1e-3, fine_tune: bool = True,
        progress: bool = True,
    ) -> Butterfly:  # fmt: skip
        """A new model adapted to cells of new batches measured in ONE modality (this model is not changed).

        For a model trained with batch covariates (``batch_key=``). The query's new batches get covariate
        vectors of their own, starting at the mean of the training batches'; ``modality``'s encoder and
        decoder and those new vectors are fine-tuned on the query cells' own reconstruction (its masked-VAE
        loss, as in pretraining), while the shared translator, the other modality's networks and the training
        batches' vectors stay frozen: the latent space, and so the translations into the other modality, stay
        this model's (scArches' architecture surgery). Then ``adapted.translate(query, source=modality,
        target=...)`` translates the query with its own batches.

        Parameters
        ----------
        query
            The cells, measured in ``modality`` (raw counts, as the model was trained on; an AnnData, or a
            MuData holding ``modality``), with their batches in ``obs[batch_key]``.
        modality
            The modality the query was measured in.
        batch_key
            The query's batch column; by default the model's ``batch_key``. It must hold at least one batch
            the model does not know.
        epochs, batch_size, lr, seed
            The fine-tuning: epochs over the query cells, cells per minibatch, Adam's learning rate, and the
            seed of its masks and latent draws.
        layer
            Read the query's counts from ``layers[layer]`` instead of ``X``.
        fine_tune
            True (default): ``modality``'s encoder and decoder are fine-tuned with the new batches' vectors.
            False: only the new batches' vectors train, every weight of the model stays as it is.
        progress
            A progress bar over the epochs.

        Examples
        --------
        >>> import butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> reference = rna.obs["batch"].isin(["09A", "09B", "09C", "09D"]).to_numpy()
        >>> model = bf.Butterfly(rna[reference], atac[reference], batch_key="batch", seed=0)
        >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
        >>> query = atac[~reference]  # ATAC of eight libraries the model never saw
        >>> adapted = model.map_query(query, "atac", epochs=2, progress=False)
        >>> adapted.query_["new_batches"][:3], len(adapted.batch_categories_)
        (['09E', '09F', '09G'], 12)
        >>> adapted.translate(query, source="atac", target="rna", progress=False).shape
        (1337, 1677)
        """
        from ._query import map_query

        return map_query(self, query, modality, batch_key=batch_key, epochs=epochs, seed=seed, layer=layer,
                         batch_size=batch_size, lr=lr, fine_tune=fine_tune, progress=progress)  # fmt: skip

    # -- persistence (butterfly.model._persistence) ------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save the model to a folder: ``config.json``, ``weights.pt`` (a state dict), the fitted preprocessing
        (JSON + ``.npz``) and the loss history. The folder is written atomically; ``overwrite`` replaces an
        earlier saved model (or an empty folder), never a folder holding anything else.

        Examples
        --------
        >>> import tempfile, numpy as np, butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> model = bf.Butterfly(rna[:400], atac[:400], seed=0)
        >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
        >>> folder = tempfile.TemporaryDirectory()
        >>> model.save(f"{folder.name}/model")
        >>> again = bf.Butterfly.load(f"{folder.name}/model")
        >>> a, b = (m.translate(atac[1900:], source="atac", target="rna", progress=False).X for m in (model, again))
        >>> bool(np.array_equal(a, b))
        True
        >>> folder.cleanup()
        """
        save_model(self, path, overwrite=overwrite)

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, device: str = "auto", first=None, second=None,
        layer: str | dict[str, str | None] | None = None,
    ) -> Butterfly:  # fmt: skip
        """Load a model saved with :meth:`save`. Weights are read with ``weights_only=True``: a model file
        cannot run code. ``device`` as for :class:`Butterfly`: a model saved on a GPU loads on a CPU.

        With paired cells (``first`` and ``second`` in the model's order, or one MuData as ``first``; ``layer``
        as for :class:`Butterfly`), the model can train further: :meth:`fit` then continues from the saved
        weights (a warm start) on those cells, the same the model trained on or new ones, read through the
        model's fitted preprocessing (its genes and peaks, normalisation and scaling are kept, not refitted).
        Models of measured pairs (-B), pairs within labels (-T, ``obs[label_key]`` of ``first``) and the
        built-in clusters (-C) continue; unpaired and perturbation models, trained on two sets of different
        cells, do not yet.

        Examples
        --------
        >>> import tempfile, butterfly as bf
        >>> rna, atac = bf.datasets.snare_mcc_demo()
        >>> model = bf.Butterfly(rna[:400], atac[:400], seed=0)
        >>> history = model.fit(pretrain_epochs=1, epochs=1, progress=False)
        >>> folder = tempfile.TemporaryDirectory()
        >>> model.save(f"{folder.name}/model")
        >>> loaded = bf.Butterfly.load(f"{folder.name}/model", device="cpu")
        >>> loaded.names, loaded.is_trained_, len(loaded.history_)
        (('rna', 'atac'), True, 3)
        >>> folder.cleanup()
        """
        model = load_model(cls, path, device=device)
        if first is not None or second is not None:
            model._attach_training_cells(first, second, layer)
        return model

    def _attach_training_cells(self, first, second, layer) -> None:
        """Read paired training cells into a loaded model through its fitted preprocessing (see :meth:`load`)."""
        if self.pairing in ("unpaired", "transport") or (
            self.pairing == "cluster" and self.cluster_backend == "scvi"
        ):
            raise ButterflyInputError(
                f"A model trained with pairing={self.pairing!r}"
                + (" and the scvi-tools backend" if self.pairing == "cluster" else "")
                + " cannot yet continue training from a saved file; train a new one on all the cells."
            )
        data = use_layers(split_modalities(first, second, self.names), self.names, layer)
        check_paired(data[0], data[1], self.names)
        if self.pairing == "label":
            self._labels = check_label_key(
                data[0], self.label_key, what=f"The {self.names[0]} data"
            ).to_numpy()
        self._read_batches(data, self.batch_categories_)
        self._matrices = {
            name: self.preprocessors[name].transform(adata).X
            for name, adata in zip(self.names, data, strict=True)
        }
