"""Training settings: :class:`TrainingConfig` (the paper's defaults, checked on creation) and ``FAST_SETTING``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType

import numpy as np

from .._validation import ButterflyInputError

_WHOLE_NUMBER_MINIMA = {
    "pretrain_epochs": 0,
    "epochs": 0,
    "kl_warmup_epochs": 0,
    "patience": 1,
    "batch_size": 2,  # a minibatch of one cell is dropped (no BatchNorm statistics): no step would run
}


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
        bound, the adversarial term swamps reconstruction and translations fall to chance (see docs/guide.md).
    precision
        ``"float32"`` (default) or ``"bfloat16"``: training forward passes under bfloat16 autocast (losses and
        weights stay float32). Faster on CPUs with AVX-512 BF16/AMX and on recent GPUs; validation stays
        float32.
    sparse_inputs
        Training minibatches of sparse modalities (under 25% non-zeros, e.g. RNA and ATAC) enter the encoders'
        first layers as sparse rows, so only stored entries are multiplied. The same function as the dense
        product; ``False`` densifies them (as the authors' code does).
    recalibrate_batch_norm
        After training, re-estimate the BatchNorm layers' running statistics on the training cells as
        translation uses the network (no input mask, no dropout, latent means), and keep them only if they
        lower the validation reconstruction loss (see :meth:`~butterfly.train.Trainer.recalibrate_batch_norm`).
        Not in the paper or the authors' code (both use the moving averages of training); off by default, on
        in ``FAST_SETTING``.
    weight_average_halflife
        Half-life, in epochs, of an exponential moving average of the weights during the integrative phase
        (0, the default: off). The average is updated after every optimizer step but never trained; the
        validation loss, early stopping and the weights kept at the end are the average's. Not in the paper
        or the authors' code.
    cuda_graphs
        On a CUDA GPU, record each phase's training step (forward, backward, both optimizers' steps) once as a
        CUDA graph and replay it for every minibatch of the same size, so that the GPU no longer waits for
        Python to launch a thousand small kernels per step; the epoch's last, smaller minibatch runs as
        usual. Minibatches then enter the encoders dense (``sparse_inputs`` has no effect). The same
        function; ignored on a CPU, under ``precision="bfloat16"``, with several processes (torchrun) and
        with torch before 2.5. ``False``: every step runs eagerly.
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
    recalibrate_batch_norm: bool = False
    weight_average_halflife: float = 0.0
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        """Refuse settings training cannot run with, naming the setting."""

        def refuse(name: str, wanted: str) -> None:
            raise ButterflyInputError(f"{name}= must be {wanted}, got {getattr(self, name)!r}.")

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
        if not finite(self.weight_average_halflife) or self.weight_average_halflife < 0:
            refuse("weight_average_halflife", "a number of at least 0 (0: off)")
        if self.kl_reduction not in ("mean", "sum"):
            refuse("kl_reduction", "'mean' or 'sum'")
        if self.precision not in ("float32", "bfloat16"):
            refuse("precision", "'float32' or 'bfloat16'")
        for name in ("mask_scaling", "sparse_inputs", "recalibrate_batch_norm", "cuda_graphs"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                refuse(name, "True or False")

    def to_dict(self) -> dict:
        """The settings as plain Python values (numpy scalars given to ``fit`` become numbers), JSON-ready."""
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in asdict(self).items()}


#: The recommended fast setting: ``model.fit(**FAST_SETTING)`` or ``butterfly train --fast``. Batches of
#: 256 with the learning rates validation cells picked, the authors' KL warm-up over 15 epochs of each
#: phase, early stopping (patience 15) within 30 pretraining and 150 integrative epochs, and the BatchNorm
#: statistics re-estimated after training where validation cells prefer them. On the SNARE-seq
#: split of issue 3 (8,247 cells) it trains in under 3 minutes on two CPU cores, and its translations beat
#: the paper defaults' and the authors' code's on average (docs/guide.md, "Headline figures"; benchmarks/RESULTS.md).
FAST_SETTING: Mapping[str, int | float | bool] = MappingProxyType(  # read-only
    {
        "pretrain_epochs": 30,
        "epochs": 150,
        "patience": 15,
        "batch_size": 256,
        "lr": 2e-3,
        "discriminator_lr": 1e-2,
        "kl_warmup_epochs": 15,
        "recalibrate_batch_norm": True,
    }
)
