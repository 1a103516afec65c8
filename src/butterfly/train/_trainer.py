"""The training loops of a two-modality translator (pretraining, adversarial integrative phase).

Knows nothing of files or AnnData: it takes preprocessed CSR matrices and training/validation pairs.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .._progress import progress_bar
from .._validation import TrainingDivergedError
from ..module._network import TranslatorNetwork, kl_divergence
from . import _distributed as distributed
from ._data import PairedRows, minibatches
from ._graphs import GraphedStep, graphs_supported
from ._settings import TrainingConfig

#: Cells per validation minibatch, whatever the training batch: enough for full-speed products; at 1,024
#: (4x a batch of 256) every validation pass page-faulted in fresh 20 MB buffers and an integrative epoch's
#: validation took 0.11 s instead of 0.08 s on SNARE-seq (two CPU threads).
VALIDATION_ROWS = 256

SPARSE_INPUT_DENSITY = 0.25  # below this fraction of non-zeros, encoders read training minibatches sparse


def _non_finite(record: dict) -> list[str]:
    """The loss columns of an epoch record that are NaN or infinite."""
    return [
        key
        for key, value in record.items()
        if key.startswith(("train_", "val_")) and isinstance(value, float) and not math.isfinite(value)
    ]


class _Means:
    """Cell-weighted means of per-minibatch loss values, summed on the device and read once per epoch, so that
    a GPU is not made to wait for every step (a ``.item()`` per loss would)."""

    def __init__(self, *names: str):
        self.names, self.total, self.n = names, None, 0

    def add(self, size: int, *values: torch.Tensor) -> None:
        batch = size * torch.stack([v.detach().double() for v in values])
        self.total = batch if self.total is None else self.total + batch
        self.n += size

    def result(self) -> dict[str, float]:
        means = self.total.cpu().numpy() / self.n if self.n else np.zeros(len(self.names))
        return dict(zip(self.names, means.tolist(), strict=True))


class _EarlyStopping:
    """Tracks the best validation loss and keeps a copy of the best weights to restore. Epochs before
    ``first_epoch`` are neither candidates nor count against the patience."""

    def __init__(self, module: nn.Module, patience: int, first_epoch: int = 0) -> None:
        self.module, self.patience, self.first_epoch = module, patience, first_epoch
        self.best, self.best_epoch, self.bad_epochs, self.state = math.inf, -1, 0, None
        # the weights the phase started from: what a phase that diverges before any candidate epoch restores
        self.start = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def step(self, loss: float, epoch: int) -> bool:
        if epoch < self.first_epoch:
            return False
        if loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = loss, epoch, 0
            self.state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, diverged: bool = False) -> None:
        """Put the best epoch's weights back; after a non-finite loss with no finite candidate epoch yet, the
        phase's starting weights."""
        if self.state is not None:
            self.module.load_state_dict(self.state)
        elif diverged:
            self.module.load_state_dict(self.start)


class _WeightAverage:
    """Exponential moving average of a module's floating-point weights and buffers, updated after each
    optimizer step, with a half-life of ``halflife_steps`` steps. Training never sees the average;
    :meth:`swapped` puts it in the module for a while (validation, a snapshot of the best weights)."""

    def __init__(self, module: nn.Module, halflife_steps: float) -> None:
        self.decay = 0.5 ** (1.0 / halflife_steps)
        state = module.state_dict(keep_vars=True).values()
        self.live = [t.detach() for t in state if t.is_floating_point()]  # views of the module's own storage
        self.average = [t.clone() for t in self.live]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.average, self.live, 1.0 - self.decay)

    @contextmanager
    @torch.no_grad()
    def swapped(self):
        current = [t.clone() for t in self.live]
        torch._foreach_copy_(self.live, self.average)
        try:
            yield
        finally:
            torch._foreach_copy_(self.live, current)


class Trainer:
    """Runs pretraining and integrative training of a :class:`TranslatorNetwork`."""

    def __init__(
        self,
        network: TranslatorNetwork,
        matrices: dict[str, sp.csr_matrix],
        train: PairedRows,
        validation: PairedRows,
        config: TrainingConfig,
        *,
        device: torch.device,
        seed: int,
        progress: bool = True,
        batch_codes: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.network, self.train, self.validation = network, train, validation
        #: per modality, the batch of each row of its matrix (a network with batch covariates), else None
        self.batch_codes = batch_codes if network.covariates is not None else None
        # every phase's epoch records so far, and where training is: what an interrupted fit reports
        self.history: list[dict] = []
        self.phase: str | None = None
        self.epoch: int | None = None  # the epoch running, None between epoch loops
        # blocked modalities' columns in chromosome order: the epochs run under network.chromosome_io()
        orders = network.chromosome_orders()
        self.matrices = {n: X[:, orders[n]] if n in orders else X for n, X in matrices.items()}
        # with several processes (torchrun), each trains on its share of every epoch's pairs and draws its own
        # masks, dropout and latent samples; the shares come from one permutation all of them draw alike
        self.rank, self.processes = distributed.rank_and_size()
        self.config, self.device, self.progress = config, device, progress and self.rank == 0
        self.rng = np.random.default_rng(seed if self.processes == 1 else [seed, self.rank])
        self.shared_rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed + self.rank * 2**32)
        self.n_features = {n: matrices[n].shape[1] for n in network.names}
        # training steps recorded once as CUDA graphs and replayed (_graphs.py); not under autocast or torchrun
        self.graphs = (
            config.cuda_graphs and graphs_supported(device) and self.processes == 1
            and config.precision == "float32" and network.covariates is None
        )  # fmt: skip
        self.sparse_inputs = frozenset(
            n for n, X in matrices.items()
            if config.sparse_inputs and not self.graphs and sp.issparse(X)
            and X.nnz < SPARSE_INPUT_DENSITY * X.shape[0] * X.shape[1]
        )  # fmt: skip
        shared = sum(20.0 / self.n_features[s.name] for s in network.specs.values() if s.kl_weight is None)
        # Integrative KL weight: the paper's 20/I_a + 20/I_b for both, or a modality's constant (ADT: 1/150).
        self.kl_weights = {
            s.name: s.kl_weight if s.kl_weight is not None else shared for s in network.specs.values()
        }

    # -- pieces ---------------------------------------------------------------------------------------------
    def _batches(self, matrices, pairs, *, shuffle: bool = True):
        """Training minibatches (shuffled, masked) or, with ``shuffle=False``, validation ones
        (``VALIDATION_ROWS`` cells)."""
        layouts = self.network.feature_major
        rows = self._set_batch_codes if self.batch_codes is not None else None
        if not shuffle:
            return minibatches(
                matrices, pairs, VALIDATION_ROWS, self.device, feature_major=layouts, on_rows=rows
            )
        rates = {n: self.network.specs[n].mask_rate for n in pairs.rows}
        if self.processes > 1:
            pairs = self._share(pairs)
        return minibatches(
            matrices, pairs, self.config.batch_size, self.device, self.rng, rates, self.config.mask_scaling,
            layouts, self.sparse_inputs, on_rows=rows,
        )  # fmt: skip

    def _set_batch_codes(self, rows: dict[str, np.ndarray]) -> None:
        """The batch covariates read the batches of the minibatch's rows (see BatchCovariates)."""
        self.network.covariates.codes = {
            name: torch.as_tensor(self.batch_codes[name][r], device=self.device) for name, r in rows.items()
        }

    def _share(self, pairs: PairedRows) -> PairedRows:
        """This process's share of ``pairs`` for one epoch: as many pairs for every process, none twice."""
        per_process = len(pairs) // self.processes
        order = self.shared_rng.permutation(len(pairs))
        mine = order[self.rank * per_process : (self.rank + 1) * per_process]
        return PairedRows({name: rows[mine] for name, rows in pairs.rows.items()})

    def _optimizer(self, params) -> torch.optim.Optimizer:
        # The fused kernel does one pass over all parameters instead of a dozen small ops per tensor; in a
        # CUDA graph the step count must live on the device (capturable).
        params = list(params)
        capturable = {"capturable": True} if self.graphs else {}
        try:
            return torch.optim.Adam(params, lr=self.config.lr, fused=True, **capturable)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(params, lr=self.config.lr, **capturable)

    def _stepper(self, train_step):
        """``run(tensors, epoch) -> losses``: one training step of a phase, ``train_step(tensors, warm)``
        with the epoch's KL warm-up factor, replayed from a CUDA graph where ``self.graphs`` (the factor
        then a device tensor filled in place: a float would be recorded as a constant)."""
        if not self.graphs:
            return lambda tensors, epoch: train_step(tensors, self._warmup(epoch))
        warm = torch.ones((), device=self.device)
        graphed = GraphedStep(lambda tensors: train_step(tensors, warm), [self.generator])

        def run(tensors, epoch):
            warm.fill_(self._warmup(epoch))
            return graphed(tensors)

        return run

    def _autocast(self):
        """bfloat16 autocast of the training forward passes when ``precision="bfloat16"``."""
        enabled = self.config.precision == "bfloat16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _warmup(self, epoch: int) -> float:
        warm = self.config.kl_warmup_epochs
        return min(1.0, epoch / warm) if warm > 0 else 1.0

    def _kl(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return kl_divergence(mean, logvar, self.config.kl_reduction)

    def _loop(self, phase: str, max_epochs: int, run_epoch, validate, average=None) -> list[dict]:
        """Shared epoch loop: train, validate, early-stop, restore the best weights. With ``average`` (a
        :class:`_WeightAverage`), validation, early stopping and the restored weights are the average's."""
        try:
            with self.network.chromosome_io():
                return self._epochs(phase, max_epochs, run_epoch, validate, average)
        finally:  # no minibatch's batch codes outlive the phase
            if self.network.covariates is not None:
                self.network.covariates.codes = None

    def _epochs(self, phase: str, max_epochs: int, run_epoch, validate, average) -> list[dict]:
        # Within the KL warm-up the objective is not yet the one trained for: with a lighter KL term the
        # reconstruction is better than it will be at full weight, so an epoch there would win and early
        # stopping could end training soon after the warm-up (seen on 4,124 SNARE-seq cells: the best epoch
        # 12 of a 15-epoch warm-up, stopped at 27, cell-type annotation through it 0.28 against 0.41-0.43).
        first = min(self.config.kl_warmup_epochs, max_epochs - 1)
        stopper = _EarlyStopping(self.network, self.config.patience, first_epoch=first)
        history = []
        bar = progress_bar(range(max_epochs), desc=phase, disable=not self.progress, leave=False)
        try:
            for epoch in bar:
                self.epoch = epoch
                start = time.perf_counter()
                self.network.train()
                train_stats = distributed.mean_over_processes(run_epoch(epoch), self.device)
                self.network.eval()
                with average.swapped() if average is not None else nullcontext():
                    with torch.no_grad():
                        # averaged over processes, whose BatchNorm statistics differ a little: all stop alike
                        val_stats = distributed.mean_over_processes(validate(epoch), self.device)
                    # Stop on the reconstruction/translation loss alone, as the authors' code does: the KL
                    # term rises a little while the translator learns, and with it in the criterion, early
                    # stopping can restore an epoch-0 model whose translations are near-constant (seen on
                    # SNARE-seq with patience 20).
                    # an epoch with a NaN or infinite loss is never a candidate (training stops on it below)
                    finite = all(math.isfinite(v) for v in (*train_stats.values(), *val_stats.values()))
                    stop = stopper.step(val_stats["recon"], epoch) if finite else True
                record = {"phase": phase, "epoch": epoch, "seconds": time.perf_counter() - start}
                record.update({f"train_{k}": v for k, v in train_stats.items()})
                record.update({f"val_{k}": v for k, v in val_stats.items()})
                history.append(record)
                diverged = _non_finite(record)
                if diverged:
                    raise TrainingDivergedError(self._divergence(phase, epoch, diverged))
                bar.set_postfix(
                    train=f"{train_stats['loss']:.4f}", val=f"{val_stats['loss']:.4f}", refresh=False
                )
                if stop:
                    break
        finally:  # also on Ctrl-C: keep what the finished epochs earned (the best weights, the history)
            bar.close()
            self.network.eval()
            stopper.restore(diverged=bool(history) and bool(_non_finite(history[-1])))
            for record in history:
                record["best_epoch"] = stopper.best_epoch
            self.history.extend(history)
        self.epoch = None
        distributed.same_buffers(self.network)  # not on Ctrl-C: the other processes may not reach it
        return history

    def _divergence(self, phase: str, epoch: int, losses: list[str]) -> str:
        cfg, defaults = self.config, TrainingConfig()
        wording = f"the loss {losses[0]} is" if len(losses) == 1 else f"the losses {', '.join(losses)} are"
        advice = f"lower lr (now {cfg.lr:g}), e.g. fit(lr={min(cfg.lr / 10, defaults.lr):g})"
        if cfg.discriminator_lr > defaults.discriminator_lr:
            advice += f", and discriminator_lr= (now {cfg.discriminator_lr:g})"
        if cfg.precision != "float32":
            advice += f"; or train with precision='float32' (now {cfg.precision!r})"
        return (
            f"Training diverged in {phase} epoch {epoch}: {wording} not finite (NaN or infinite). This usually "
            f"means the learning rate is too high for these data: {advice}. Check too that the inputs hold no "
            "extreme values."
        )

    # -- pretraining ----------------------------------------------------------------------------------------
    def pretrain(self, name: str) -> list[dict]:
        """Train one modality's encoder, translator blocks and decoder as a masked VAE (X -> En -> T -> De)."""
        net, cfg = self.network, self.config
        self.phase = f"pretrain {name}"
        kl_weight = net.specs[name].kl_weight_for(self.n_features[name])
        optimizer = self._optimizer(net.modality_parameters(name))
        single = {name: self.matrices[name]}
        train = PairedRows({name: self.train.rows[name]})
        validation = PairedRows({name: self.validation.rows[name]})

        def losses(x, x_in, sample: bool, warm):
            h = net.encoders[name](x_in)
            mean, logvar = net.translator.encode(h, name)
            z = net.translator.sample(mean, logvar, self.generator) if sample else mean
            recon = net.reconstruction_loss(name, net.decoders[name](net.translator(z, name)), x)
            kl = self._kl(mean, logvar)
            return recon + kl_weight * warm * kl, recon, kl

        step = losses
        if self.processes > 1:  # the other modality's translator blocks take no part: unused parameters
            parts = {
                "encoder": net.encoders[name],
                "translator": net.translator,
                "decoder": net.decoders[name],
            }
            step = distributed.wrap(distributed.Pass(parts, losses), self.device, find_unused_parameters=True)

        def train_step(tensors, warm):
            with self._autocast():
                loss, recon, kl = step(tensors["clean"], tensors["masked"], True, warm)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # detached: a loss kept past its step keeps that step's autograd graph alive
            return loss.detach(), recon.detach(), kl.detach()

        run_step = self._stepper(train_step)

        def run_epoch(epoch):
            means = _Means("loss", "recon", "kl")
            for batch, masked in self._batches(single, train):
                losses_now = run_step({"clean": batch[name], "masked": masked[name]}, epoch)
                means.add(batch[name].shape[0], *losses_now)
            return means.result()

        def validate(epoch):
            means = _Means("loss", "recon", "kl")
            for batch, _ in self._batches(single, validation, shuffle=False):
                means.add(batch[name].shape[0], *losses(batch[name], batch[name], False, 1.0))
            return means.result()

        return self._loop(self.phase, cfg.pretrain_epochs, run_epoch, validate)

    # -- integrative training -------------------------------------------------------------------------------
    def _forward_all(self, inputs: dict[str, torch.Tensor], sample: bool):
        """Embeddings, latent statistics and the four translator outputs for a paired (masked) batch."""
        net = self.network
        a, b = net.names
        h, stats, emb = {}, {}, {}
        for name in (a, b):
            h[name] = net.encoders[name](inputs[name])
            mean, logvar = net.translator.encode(h[name], name)
            z = net.translator.sample(mean, logvar, self.generator) if sample else mean
            stats[name] = (mean, logvar)
            for target in (a, b):
                emb[name, target] = net.translator(z, target)
        return h, stats, emb

    def _discriminator_loss(self, h, emb, labels) -> torch.Tensor:
        """Eq. 7: each discriminator tells its modality's encoder output (positive) from the translation."""
        net = self.network
        a, b = net.names
        positive, negative = labels
        loss = 0.0
        for target, source in ((a, b), (b, a)):
            disc = net.discriminators[target]
            loss = loss + F.binary_cross_entropy_with_logits(disc(emb[source, target]).float(), negative)
            loss = loss + F.binary_cross_entropy_with_logits(disc(h[target]).float(), positive)
        return loss

    def _generator_terms(
        self, batch, stats, emb, warm, terms: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weighted reconstruction, KL term (the weighted KL times the warm-up factor ``warm``) and weighted
        KL; ``terms`` (if given) receives each of the four unweighted reconstruction losses, keyed
        ``"<source>_to_<target>"``."""
        net = self.network
        recon = 0.0
        kl = 0.0  # weighted: sum over modalities of w_ELBO * KL
        for target in net.names:
            weight = net.specs[target].recon_weight
            decoder = net.decoders[target]
            for source in net.names:
                term = net.reconstruction_loss(target, decoder(emb[source, target]), batch[target])
                recon = recon + weight * term
                if terms is not None:
                    terms[f"{source}_to_{target}"] = term
            kl = kl + self.kl_weights[target] * self._kl(*stats[target])
        return recon, kl * warm, kl

    def integrate(self) -> list[dict]:
        """Adversarial integrative training of all modules, starting from the pretrained weights."""
        net, cfg = self.network, self.config
        self.phase = "integrative"
        gen_optimizer = self._optimizer(net.generator_parameters())
        dis_optimizer = torch.optim.SGD(net.discriminators.parameters(), lr=cfg.discriminator_lr)
        average = None
        if cfg.weight_average_halflife > 0:
            steps_per_epoch = math.ceil(len(self.train) // self.processes / cfg.batch_size)
            average = _WeightAverage(net, cfg.weight_average_halflife * steps_per_epoch)

        forward_all, discriminator_loss = self._forward_all, self._discriminator_loss
        if self.processes > 1:
            # Two wrapped passes with no parameter in common: the generator's (its gradients also reach the
            # discriminators through the adversarial term, outside any wrapped pass, so those are not
            # averaged, and the discriminators' own step clears them) and the discriminators' own.
            parts = {"encoders": net.encoders, "translator": net.translator, "decoders": net.decoders}
            forward_all = distributed.wrap(distributed.Pass(parts, forward_all), self.device)
            discriminators = distributed.Pass({"discriminators": net.discriminators}, discriminator_loss)
            discriminator_loss = distributed.wrap(discriminators, self.device)

        def soft_labels(n: int):
            u = torch.rand((2, n), generator=self.generator, device=self.device)
            return 0.8 + 0.2 * u[0], 0.2 * u[1]  # l_pos ~ U[0.8, 1], l_neg ~ U[0, 0.2]

        def train_step(tensors, warm):
            batch = {name: tensors[f"clean {name}"] for name in net.names}
            masked = {name: tensors[f"masked {name}"] for name in net.names}
            size = next(iter(batch.values())).shape[0]
            with self._autocast():
                h, stats, emb = forward_all(masked, sample=True)
            labels = soft_labels(size)
            # 1. discriminator step on detached embeddings
            detached_h = {k: v.detach() for k, v in h.items()}
            detached_emb = {k: v.detach() for k, v in emb.items()}
            with self._autocast():
                dis_loss = discriminator_loss(detached_h, detached_emb, labels)
            dis_optimizer.zero_grad(set_to_none=True)
            dis_loss.backward()
            dis_optimizer.step()
            # 2. generator step, with L_Dis recomputed by the updated discriminators
            with self._autocast():
                recon, kl_term, kl = self._generator_terms(batch, stats, emb, warm)
                loss = recon + kl_term
                adversarial = self._discriminator_loss(h, emb, labels)
            # The gate as a 0/1 factor computed on the device, not an if on the loss's value, so that
            # the step never waits for the GPU; a closed gate adds exact zeros to the gradients.
            applied = torch.ones((), device=self.device)
            if cfg.adversarial_gate is not None:
                applied = (adversarial.detach() / 4 < cfg.adversarial_gate).float()
            if self.device.type == "cpu" and not applied:
                # no device to wait for on a CPU: a closed gate skips the term and its backward pass
                # through the discriminators (the same gradients: the 0 factor adds exact zeros)
                objective = loss
            else:
                objective = loss - cfg.adversarial_weight * (applied * adversarial)
            gen_optimizer.zero_grad(set_to_none=True)
            objective.backward()
            gen_optimizer.step()
            # "loss" is reconstruction + KL, comparable with the validation loss; the adversarial part
            # and how often the gate let it through are recorded beside it.
            return loss.detach(), recon.detach(), kl.detach(), dis_loss.detach(), applied

        run_step = self._stepper(train_step)

        def run_epoch(epoch):
            means = _Means("loss", "recon", "kl", "discriminator", "adversarial_applied")
            for batch, masked in self._batches(self.matrices, self.train):
                tensors = {f"clean {name}": batch[name] for name in net.names}
                tensors.update({f"masked {name}": masked[name] for name in net.names})
                losses = run_step(tensors, epoch)
                if average is not None:
                    average.update()
                means.add(next(iter(batch.values())).shape[0], *losses)
            return means.result()

        return self._loop(self.phase, cfg.epochs, run_epoch, self._validate_integrative, average)

    def _validate_integrative(self, epoch: int | None = None) -> dict[str, float]:
        """The integrative phase's validation losses. Deterministic: no mask, no dropout, latent means.

        Each of the four reconstruction terms is recorded too (``<source>_to_<target>``): the sum, the
        stopping criterion, can improve while a cross-translation term stays flat.
        """
        a, b = self.network.names
        pairs = [f"{s}_to_{t}" for s, t in ((a, a), (b, a), (a, b), (b, b))]
        means = _Means("loss", "recon", "kl", *pairs)
        for batch, _ in self._batches(self.matrices, self.validation, shuffle=False):
            _, stats, emb = self._forward_all(batch, sample=False)
            terms: dict[str, torch.Tensor] = {}
            recon, kl, _ = self._generator_terms(batch, stats, emb, 1.0, terms)
            size = next(iter(batch.values())).shape[0]
            means.add(size, recon + kl, recon, kl, *(terms[pair] for pair in pairs))
        return means.result()

    # -- after training -------------------------------------------------------------------------------------
    @torch.no_grad()
    def recalibrate_batch_norm(self) -> dict[str, float | bool] | None:
        """Re-estimate every BatchNorm layer's running statistics as inference uses the network, and keep
        them only if they lower the validation reconstruction loss (the early-stopping criterion).

        Training updates the statistics by a moving average over masked inputs, dropout and sampled latents,
        while translation runs on unmasked inputs and latent means without dropout: on few cells (a handful
        of steps per epoch) or with the RNA input mask the two differ (docs/guide.md). Here the training pairs pass
        once through every path of the integrative phase in inference mode, each BatchNorm layer averaging
        its batch statistics; the rest of the network is unchanged. Returns the validation loss before and
        after and whether the new statistics were kept; ``None`` for a network without BatchNorm.
        """
        net = self.network
        self.phase = "BatchNorm recalibration"
        layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not layers:
            return None
        saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                 for m in layers]  # fmt: skip

        def put_back(statistics: bool) -> None:
            for layer, (momentum, mean, var, count) in zip(layers, saved, strict=True):
                layer.momentum = momentum
                if statistics:
                    layer.running_mean.copy_(mean)
                    layer.running_var.copy_(var)
                    layer.num_batches_tracked.copy_(count)
            net.eval()

        with net.chromosome_io():
            net.eval()
            before = self._validate_integrative()["recon"]
            try:
                for layer in layers:
                    layer.reset_running_stats()
                    layer.momentum = None  # a plain average over the batches
                    layer.train()
                for batch, _ in self._batches(self.matrices, self.train, shuffle=False):
                    if next(iter(batch.values())).shape[0] < 2:  # one cell has no batch variance
                        continue
                    _, _, emb = self._forward_all(batch, sample=False)
                    for target in net.names:
                        for source in net.names:
                            net.decoders[target](emb[source, target])
                put_back(statistics=False)
                after = self._validate_integrative()["recon"]
            except BaseException:  # Ctrl-C or an error half-way: never leave half-estimated statistics
                put_back(statistics=True)
                raise
            if not after < before:
                put_back(statistics=True)
        # process 0's statistics everywhere, should the processes' sums differ in the last digits
        distributed.same_buffers(net)
        return {"validation_loss_before": before, "validation_loss_after": after, "kept": after < before}
