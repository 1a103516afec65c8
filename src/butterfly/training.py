"""The network of a two-modality translator and its training loops (pretraining, adversarial integrative phase).

Knows nothing of files or AnnData: it takes preprocessed CSR matrices and training/validation pairs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._validation import ButterflyInputError
from .data import PairedRows, minibatches
from .modalities import ModalitySpec
from .nn import Decoder, Discriminator, Encoder, Translator, _Blocked, kl_divergence

_WHOLE_NUMBER_MINIMA = {
    "pretrain_epochs": 0,
    "epochs": 0,
    "kl_warmup_epochs": 0,
    "patience": 1,
    "batch_size": 1,
}
# the TrainingConfig fields that butterfly train/benchmark take as flags (--batch-size, ...)
_CLI_OPTIONS = {*_WHOLE_NUMBER_MINIMA, "lr", "discriminator_lr", "precision"}


@dataclass
class TrainingConfig:
    """Training settings. Defaults follow the paper's Methods; options marked "authors' code" reproduce
    deviations found in the reference implementation and are off by default.

    Parameters
    ----------
    pretrain_epochs
        Maximum epochs of each modality's own pretraining (paper: 100).
    epochs
        Maximum epochs of integrative training (paper: 200).
    patience
        Early-stopping patience in epochs (paper: 50), on the deterministic validation reconstruction loss
        (the four reconstruction/translation terms in the integrative phase); the best weights are restored.
    batch_size
        Minibatch size (authors' code: 64).
    lr, discriminator_lr
        Adam learning rate of encoders/decoders/translator (1e-3) and SGD learning rate of the
        discriminators (5e-3).
    adversarial_weight
        ``w_dis`` (paper: 1).
    kl_reduction
        ``"mean"`` over cells and latent dimensions (paper eq. 4 as the authors compute it) or ``"sum"`` over
        latent dimensions.
    kl_warmup_epochs
        Linear KL warm-up over this many epochs of each phase (authors' code: 50; paper: none).
    mask_scaling
        Scale kept inputs by ``1 / (1 - mask_rate)`` as inverted dropout does (authors' code).
    adversarial_gate
        Subtract the adversarial term only while the discriminators' mean BCE per term is below this value,
        i.e. while they still tell real from translated embeddings better than chance (ln 2 = 0.693).
        Default 0.675: the authors' code gates at 1.35 over its two BCE terms. ``None`` applies the paper's
        eq. 9 literally; measured on SNARE-seq, the generator then drives the discriminator loss up without
        bound, the adversarial term swamps reconstruction and translations fall to chance (see README).
    precision
        ``"float32"`` (default) or ``"bfloat16"``: training forward passes under bfloat16 autocast (losses and
        weights stay float32). Faster on CPUs with AVX-512 BF16/AMX and on recent GPUs; validation stays
        float32.
    sparse_inputs
        Training minibatches of sparse modalities (under 25% non-zeros, e.g. RNA and ATAC) enter the encoders'
        first layers as sparse rows, so only stored entries are multiplied. The same function as the dense
        product; ``False`` densifies them (as the authors' code does).
    """

    pretrain_epochs: int = 100
    epochs: int = 200
    patience: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    discriminator_lr: float = 5e-3
    adversarial_weight: float = 1.0
    kl_reduction: str = "mean"
    kl_warmup_epochs: int = 0
    mask_scaling: bool = False
    adversarial_gate: float | None = 0.675
    precision: str = "float32"
    sparse_inputs: bool = True

    def __post_init__(self) -> None:
        """Refuse settings training cannot run with, naming the setting (and its CLI flag, if it has one)."""

        def refuse(name: str, wanted: str) -> None:
            flag = f" (--{name.replace('_', '-')})" if name in _CLI_OPTIONS else ""
            raise ButterflyInputError(f"{name}{flag} must be {wanted}, got {getattr(self, name)!r}.")

        def whole(value) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        def finite(value) -> bool:
            number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            return number and math.isfinite(value)

        for name, low in _WHOLE_NUMBER_MINIMA.items():
            if not whole(getattr(self, name)) or getattr(self, name) < low:
                refuse(name, f"a whole number of at least {low}")
        for name in ("lr", "discriminator_lr"):
            if not finite(getattr(self, name)) or getattr(self, name) <= 0:
                refuse(name, "a positive number")
        if not finite(self.adversarial_weight) or self.adversarial_weight < 0:
            refuse("adversarial_weight", "a number of at least 0")
        gate = self.adversarial_gate
        if gate is not None and not finite(gate):  # at or below 0 the gate never opens
            refuse("adversarial_gate", "None or a finite number")
        if self.kl_reduction not in ("mean", "sum"):
            refuse("kl_reduction", "'mean' or 'sum'")
        if self.precision not in ("float32", "bfloat16"):
            refuse("precision", "'float32' or 'bfloat16'")

    def to_dict(self) -> dict:
        """The settings as plain Python values (numpy scalars given to ``fit`` become numbers), JSON-ready."""
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in asdict(self).items()}


#: The recommended fast setting: ``model.fit(**FAST_SETTING)`` or ``butterfly train --fast``. Batches of
#: 256 with the learning rates validation cells picked, the authors' KL warm-up over 15 epochs of each
#: phase, and early stopping (patience 15) within 30 pretraining and 150 integrative epochs. On the SNARE-seq
#: split of issue 3 (8,247 cells) it trains in under 3 minutes on two CPU cores, and its translations beat
#: the paper defaults' and the authors' code's on average (README, "Headline figures").
FAST_SETTING: Mapping[str, int | float] = MappingProxyType(  # read-only
    {
        "pretrain_epochs": 30,
        "epochs": 150,
        "patience": 15,
        "batch_size": 256,
        "lr": 2e-3,
        "discriminator_lr": 1e-2,
        "kl_warmup_epochs": 15,
    }
)


def activate(spec: ModalitySpec, raw: torch.Tensor) -> torch.Tensor:
    """The decoder's output activation of a modality, applied to its pre-activation values."""
    if spec.output == "sigmoid":
        return torch.sigmoid(raw)
    if spec.output == "leaky_relu":
        return F.leaky_relu(raw, 0.01)
    return raw


class _BCEWithLogits(torch.autograd.Function):
    """Mean binary cross-entropy on logits, ``mean(softplus(x) - x * y)``: the same value as
    ``F.binary_cross_entropy_with_logits`` in two passes over ``x`` (no ``log_sigmoid`` buffer) and a
    backward of ``sigmoid(x) - y``; forward + backward 1.6x faster on 256 x 5,377 ATAC logits on a CPU."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, target)
        cross = torch.dot(logits.reshape(-1), target.reshape(-1))
        return (F.softplus(logits).sum() - cross) / logits.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, target = ctx.saved_tensors
        return torch.sigmoid(logits).sub_(target).mul_(grad / logits.numel()), None


def reconstruction_loss(spec: ModalitySpec, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A modality's reconstruction loss (BCE on logits or MSE after the activation), averaged."""
    raw = raw.float()  # losses in float32 also under bfloat16 autocast
    if raw.dim() == 2 and raw.t().is_contiguous() and target.t().is_contiguous():
        # both feature-major: the same mean over the contiguous transposes runs about 2x faster
        raw, target = raw.t(), target.t()
    if spec.loss == "bce":
        return _BCEWithLogits.apply(raw, target.to(raw.dtype))
    return F.mse_loss(activate(spec, raw), target)


#: Cells per validation minibatch, whatever the training batch: enough for full-speed products; at 1,024
#: (4x a batch of 256) every validation pass page-faulted in fresh 20 MB buffers and an integrative epoch's
#: validation took 0.11 s instead of 0.08 s on SNARE-seq (two CPU threads).
VALIDATION_ROWS = 256

SPARSE_INPUT_DENSITY = 0.25  # below this fraction of non-zeros, encoders read training minibatches sparse


class TranslatorNetwork(nn.Module):
    """Encoders, decoders, the shared translator and the discriminators for two modalities."""

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        n_features: dict[str, int],
        chromosome_codes: dict[str, list[int] | None],
        *,
        dropout: float = 0.1,
        batch_norm: bool = False,
        discriminator_layers: int = 2,
    ) -> None:
        super().__init__()
        self.specs = {s.name: s for s in specs}
        self.names = [s.name for s in specs]
        kwargs = {"dropout": dropout, "batch_norm": batch_norm}
        self.encoders = nn.ModuleDict(
            {
                s.name: Encoder(n_features[s.name], s.hidden, codes=chromosome_codes.get(s.name), **kwargs)
                for s in specs
            }
        )
        self.decoders = nn.ModuleDict(
            {
                s.name: Decoder(n_features[s.name], s.hidden, codes=chromosome_codes.get(s.name), **kwargs)
                for s in specs
            }
        )
        self.translator = Translator(self.names, batch_norm=batch_norm)
        self.discriminators = nn.ModuleDict(
            {n: Discriminator(layers=discriminator_layers) for n in self.names}
        )
        # chromosome-blocked modalities read and write feature-major tensors fastest
        self.feature_major = frozenset(n for n, c in chromosome_codes.items() if c is not None)

    def chromosome_orders(self) -> dict[str, np.ndarray]:
        """Column order that groups each chromosome-blocked modality's features by chromosome (the layers'
        row order), for the modalities whose features are not so grouped already."""
        orders = {}
        for name in self.feature_major:
            first = next(m for m in self.encoders[name].modules() if isinstance(m, _Blocked))
            if not first.sorted_already:
                orders[name] = first.order.cpu().numpy()
        return orders

    @contextlib.contextmanager
    def chromosome_io(self) -> Iterator[None]:
        """Within: the chromosome-blocked layers read and write features in chromosome order (the columns
        of :meth:`chromosome_orders`), which saves a row gather per layer and pass, forward and backward."""
        layers = [m for m in self.modules() if isinstance(m, _Blocked)]
        for layer in layers:
            layer.chromosome_io = True
        try:
            yield
        finally:
            for layer in layers:
                layer.chromosome_io = False

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.encoders.parameters(), *self.decoders.parameters(), *self.translator.parameters()]

    def modality_parameters(self, name: str) -> list[nn.Parameter]:
        t = self.translator
        parts = (self.encoders[name], self.decoders[name], t.mean[name], t.logvar[name], t.heads[name])
        return [p for part in parts for p in part.parameters()]

    def activate(self, name: str, raw: torch.Tensor) -> torch.Tensor:
        return activate(self.specs[name], raw)

    def reconstruction_loss(self, name: str, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(self.specs[name], raw, target)

    @torch.no_grad()
    def latent_mean(self, x: torch.Tensor, source: str) -> torch.Tensor:
        return self.translator.encode(self.encoders[source](x), source)[0]

    @torch.no_grad()
    def translate(self, x: torch.Tensor, source: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic translation (latent mean, no mask): returns (output, latent mean)."""
        mean = self.latent_mean(x, source)
        return self.activate(target, self.decoders[target](self.translator(mean, target))), mean


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ButterflyInputError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (a torch device), got {device!r}."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ButterflyInputError(
            f"device={str(device)!r} was requested but torch sees no CUDA GPU; use device='auto' or 'cpu'."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ButterflyInputError(
            f"device={str(device)!r} was requested but torch sees {torch.cuda.device_count()} CUDA GPU(s), "
            f"numbered from 0; use 'cuda:0' to 'cuda:{torch.cuda.device_count() - 1}'."
        )
    return device


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
    """Tracks the best validation loss and keeps a copy of the best weights to restore."""

    def __init__(self, module: nn.Module, patience: int) -> None:
        self.module, self.patience = module, patience
        self.best, self.best_epoch, self.bad_epochs, self.state = math.inf, -1, 0, None

    def step(self, loss: float, epoch: int) -> bool:
        if loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = loss, epoch, 0
            self.state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self) -> None:
        if self.state is not None:
            self.module.load_state_dict(self.state)


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
    ) -> None:
        self.network, self.train, self.validation = network, train, validation
        # blocked modalities' columns in chromosome order: the epochs run under network.chromosome_io()
        orders = network.chromosome_orders()
        self.matrices = {n: X[:, orders[n]] if n in orders else X for n, X in matrices.items()}
        self.config, self.device, self.progress = config, device, progress
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.n_features = {n: matrices[n].shape[1] for n in network.names}
        self.sparse_inputs = frozenset(
            n for n, X in matrices.items()
            if config.sparse_inputs and sp.issparse(X) and X.nnz < SPARSE_INPUT_DENSITY * X.shape[0] * X.shape[1]
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
        if not shuffle:
            return minibatches(matrices, pairs, VALIDATION_ROWS, self.device, feature_major=layouts)
        rates = {n: self.network.specs[n].mask_rate for n in pairs.rows}
        return minibatches(
            matrices, pairs, self.config.batch_size, self.device, self.rng, rates, self.config.mask_scaling,
            layouts, self.sparse_inputs,
        )  # fmt: skip

    def _optimizer(self, params) -> torch.optim.Optimizer:
        # The fused kernel does one pass over all parameters instead of a dozen small ops per tensor.
        try:
            return torch.optim.Adam(params, lr=self.config.lr, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(params, lr=self.config.lr)

    def _autocast(self):
        """bfloat16 autocast of the training forward passes when ``precision="bfloat16"``."""
        enabled = self.config.precision == "bfloat16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _warmup(self, epoch: int) -> float:
        warm = self.config.kl_warmup_epochs
        return min(1.0, epoch / warm) if warm > 0 else 1.0

    def _kl(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return kl_divergence(mean, logvar, self.config.kl_reduction)

    def _loop(self, phase: str, max_epochs: int, run_epoch, validate) -> list[dict]:
        """Shared epoch loop: train, validate, early-stop, restore the best weights."""
        with self.network.chromosome_io():
            return self._epochs(phase, max_epochs, run_epoch, validate)

    def _epochs(self, phase: str, max_epochs: int, run_epoch, validate) -> list[dict]:
        stopper = _EarlyStopping(self.network, self.config.patience)
        history = []
        bar = tqdm(range(max_epochs), desc=phase, disable=not self.progress, leave=False)
        for epoch in bar:
            start = time.perf_counter()
            self.network.train()
            train_stats = run_epoch(epoch)
            self.network.eval()
            with torch.no_grad():
                val_stats = validate(epoch)
            record = {"phase": phase, "epoch": epoch, "seconds": time.perf_counter() - start}
            record.update({f"train_{k}": v for k, v in train_stats.items()})
            record.update({f"val_{k}": v for k, v in val_stats.items()})
            history.append(record)
            bar.set_postfix(train=f"{train_stats['loss']:.4f}", val=f"{val_stats['loss']:.4f}")
            # Stop on the reconstruction/translation loss alone, as the authors' code does: the KL term rises
            # a little while the translator learns, and with it in the criterion, early stopping can restore an
            # epoch-0 model whose translations are near-constant (seen on SNARE-seq with patience 20).
            if stopper.step(val_stats["recon"], epoch):
                break
        stopper.restore()
        for record in history:
            record["best_epoch"] = stopper.best_epoch
        return history

    # -- pretraining ----------------------------------------------------------------------------------------
    def pretrain(self, name: str) -> list[dict]:
        """Train one modality's encoder, translator blocks and decoder as a masked VAE (X -> En -> T -> De)."""
        net, cfg = self.network, self.config
        kl_weight = net.specs[name].kl_weight_for(self.n_features[name])
        optimizer = self._optimizer(net.modality_parameters(name))
        single = {name: self.matrices[name]}
        train = PairedRows({name: self.train.rows[name]})
        validation = PairedRows({name: self.validation.rows[name]})

        def losses(x, x_in, sample: bool, epoch: int):
            h = net.encoders[name](x_in)
            mean, logvar = net.translator.encode(h, name)
            z = net.translator.sample(mean, logvar, self.generator) if sample else mean
            recon = net.reconstruction_loss(name, net.decoders[name](net.translator(z, name)), x)
            kl = self._kl(mean, logvar)
            return recon + kl_weight * self._warmup(epoch) * kl, recon, kl

        def run_epoch(epoch):
            means = _Means("loss", "recon", "kl")
            for batch, masked in self._batches(single, train):
                with self._autocast():
                    loss, recon, kl = losses(batch[name], masked[name], True, epoch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                means.add(batch[name].shape[0], loss, recon, kl)
            return means.result()

        def validate(epoch):
            means = _Means("loss", "recon", "kl")
            for batch, _ in self._batches(single, validation, shuffle=False):
                means.add(
                    batch[name].shape[0], *losses(batch[name], batch[name], False, cfg.kl_warmup_epochs)
                )
            return means.result()

        return self._loop(f"pretrain {name}", cfg.pretrain_epochs, run_epoch, validate)

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
        self, batch, stats, emb, epoch: int, terms: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weighted reconstruction, KL term and weighted KL; ``terms`` (if given) receives each of the four
        unweighted reconstruction losses, keyed ``"<source>_to_<target>"``."""
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
        return recon, kl * self._warmup(epoch), kl

    def integrate(self) -> list[dict]:
        """Adversarial integrative training of all modules, starting from the pretrained weights."""
        net, cfg = self.network, self.config
        gen_optimizer = self._optimizer(net.generator_parameters())
        dis_optimizer = torch.optim.SGD(net.discriminators.parameters(), lr=cfg.discriminator_lr)

        def soft_labels(n: int):
            u = torch.rand((2, n), generator=self.generator, device=self.device)
            return 0.8 + 0.2 * u[0], 0.2 * u[1]  # l_pos ~ U[0.8, 1], l_neg ~ U[0, 0.2]

        def run_epoch(epoch):
            means = _Means("loss", "recon", "kl", "discriminator", "adversarial_applied")
            for batch, masked in self._batches(self.matrices, self.train):
                size = next(iter(batch.values())).shape[0]
                with self._autocast():
                    h, stats, emb = self._forward_all(masked, sample=True)
                labels = soft_labels(size)
                # 1. discriminator step on detached embeddings
                detached_h = {k: v.detach() for k, v in h.items()}
                detached_emb = {k: v.detach() for k, v in emb.items()}
                with self._autocast():
                    dis_loss = self._discriminator_loss(detached_h, detached_emb, labels)
                dis_optimizer.zero_grad(set_to_none=True)
                dis_loss.backward()
                dis_optimizer.step()
                # 2. generator step, with L_Dis recomputed by the updated discriminators
                with self._autocast():
                    recon, kl_term, kl = self._generator_terms(batch, stats, emb, epoch)
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
                means.add(size, loss, recon, kl, dis_loss, applied)
            return means.result()

        def validate(epoch):
            # Deterministic: no mask, no dropout, latent means.
            # Each of the four reconstruction terms is recorded too (val_<source>_to_<target>): the sum, the
            # stopping criterion, can improve while a cross-translation term stays flat.
            a, b = net.names
            pairs = [f"{s}_to_{t}" for s, t in ((a, a), (b, a), (a, b), (b, b))]
            means = _Means("loss", "recon", "kl", *pairs)
            for batch, _ in self._batches(self.matrices, self.validation, shuffle=False):
                _, stats, emb = self._forward_all(batch, sample=False)
                terms: dict[str, torch.Tensor] = {}
                recon, kl, _ = self._generator_terms(batch, stats, emb, cfg.kl_warmup_epochs, terms)
                size = next(iter(batch.values())).shape[0]
                means.add(size, recon + kl, recon, kl, *(terms[pair] for pair in pairs))
            return means.result()

        return self._loop("integrative", cfg.epochs, run_epoch, validate)
