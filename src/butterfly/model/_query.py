"""Mapping a query onto a trained model (``Butterfly.map_query``): cells of new batches measured in one
modality get their own batch covariates, and that modality's encoder and decoder are fine-tuned on the
cells' own reconstruction, while the shared translator and the other modality's networks stay frozen, so that
the latent space, and the translations into the other modality, stay the reference's (scArches'
architecture surgery, for butterfly's batch covariates)."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .._progress import progress_bar
from .._validation import ButterflyInputError, NotTrainedError, check_label_key, check_whole_numbers
from ..module._network import kl_divergence
from ..train._data import PairedRows, minibatches
from ._inference import check_names, source_cells

if TYPE_CHECKING:
    from ._butterfly import Butterfly


def map_query(
    model: Butterfly, query, modality: str, *, batch_key: str | None = None, epochs: int = 20, seed: int = 0,
    layer: str | None = None, batch_size: int = 128, lr: float = 1e-3, fine_tune: bool = True,
    progress: bool = True,
) -> Butterfly:  # fmt: skip
    """See :meth:`butterfly.Butterfly.map_query`."""
    check_names(model, modality)
    if not model.is_trained_:
        raise NotTrainedError("The model is not trained yet; call fit() first, then map_query().")
    if not model.batch_categories_:
        raise ButterflyInputError(
            "map_query adapts a model with batch covariates to new batches; this model was trained without "
            "them. Train it with batch_key= naming the obs column of the training cells' batches."
        )
    check_whole_numbers(epochs=(epochs, 1), batch_size=(batch_size, 2))
    key = batch_key or model.init_params_["batch_key"]
    cells, options = source_cells(model, query, modality, layer)
    values = check_label_key(cells, key, what="The query", option="batch_key=").astype(str).to_numpy()
    known = list(model.batch_categories_)
    new = sorted(set(values) - set(known))
    if not new:
        raise ButterflyInputError(
            f"The query's obs[{key!r}] holds only batches the model was trained on ({sorted(set(values))[:5]}); "
            "translate these cells directly, or name the column of their new batches with batch_key=."
        )
    X = model.preprocessors[modality].transform(cells, **options).X  # refuses features with no overlap
    categories = known + new
    codes = pd.Categorical(values, categories=categories).codes.astype(np.int64)

    # the copy shares nothing with the model: its training matrices are left out, not copied
    kept = model._matrices, model._raw
    model._matrices, model._raw = {}, None
    try:
        adapted = copy.deepcopy(model)
    finally:
        model._matrices, model._raw = kept
    net = adapted.network
    net.covariates.grow(len(categories))
    adapted.batch_categories_ = categories
    trainable, hooks = _freeze_all_but(net, modality, n_known=len(known), networks=fine_tune)

    spec, device = net.specs[modality], adapted.device
    kl_weight = spec.kl_weight_for(X.shape[1])
    reduction = adapted.training_config.kl_reduction if adapted.training_config else "mean"
    optimizer = torch.optim.Adam(trainable, lr=lr)
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    rows = PairedRows({modality: np.arange(X.shape[0])})
    history = []

    def set_codes(batch_rows):
        net.covariates.codes = {modality: torch.as_tensor(codes[batch_rows[modality]], device=device)}

    bar = progress_bar(range(epochs), desc=f"map_query {modality}", unit="epoch", disable=not progress)
    try:
        for epoch in bar:
            _train_mode(net, modality, fine_tune)
            start, total, seen = time.perf_counter(), 0.0, 0
            batches = minibatches(
                {modality: X}, rows, batch_size, device, rng, {modality: spec.mask_rate},
                feature_major=net.feature_major, on_rows=set_codes,
            )  # fmt: skip
            for clean, masked in batches:
                h = net.encoders[modality](masked[modality])
                mean, logvar = net.translator.encode(h, modality)
                z = net.translator.sample(mean, logvar, generator)
                recon = net.reconstruction_loss(modality, net.decoders[modality](net.translator(z, modality)),
                                                clean[modality])  # fmt: skip
                loss = recon + kl_weight * kl_divergence(mean, logvar, reduction)
                if not torch.isfinite(loss):
                    raise ButterflyInputError(
                        f"map_query's loss is not finite in epoch {epoch}; lower lr (now {lr:g})."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * clean[modality].shape[0]
                seen += clean[modality].shape[0]
            history.append({"phase": f"map_query {modality}", "epoch": epoch, "train_loss": total / max(seen, 1),
                            "seconds": time.perf_counter() - start})  # fmt: skip
    finally:
        net.covariates.codes = None
        for hook in hooks:
            hook.remove()
        for parameter in net.parameters():
            parameter.requires_grad_(True)
        net.eval()
    adapted.query_ = {"modality": modality, "batch_key": key, "new_batches": new, "cells": int(X.shape[0]),
                      "epochs": int(epochs), "fine_tune": bool(fine_tune)}  # fmt: skip
    adapted.query_history_ = pd.DataFrame(history)
    adapted.translation_check_ = model.translation_check_
    return adapted


def _freeze_all_but(net, modality: str, *, n_known: int, networks: bool = True):
    """Freeze the network but ``modality``'s encoder and decoder and its new batches' covariate vectors (the
    known batches' vectors are kept by zeroing their gradients); returns the parameters that train and the
    gradient hooks to remove afterwards."""
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    trainable = (
        [*net.encoders[modality].parameters(), *net.decoders[modality].parameters()] if networks else []
    )
    hooks = []
    for table in (net.covariates.encoder_shift[modality], net.covariates.decoder_shift[modality]):
        keep_known = lambda grad, n=n_known: torch.cat([torch.zeros_like(grad[:n]), grad[n:]])  # noqa: E731
        table.weight.requires_grad_(True)
        hooks.append(table.weight.register_hook(keep_known))
        trainable.append(table.weight)
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable, hooks


def _train_mode(net, modality: str, networks: bool = True) -> None:
    """Dropout and BatchNorm statistics of ``modality``'s encoder and decoder train (when they are
    fine-tuned); the frozen parts (translator, the other modality) keep their statistics (eval mode)."""
    net.eval()
    if networks:
        net.encoders[modality].train()
        net.decoders[modality].train()
