"""Saved models: a folder of JSON, ``.npz`` arrays and a ``weights.pt`` state dict, written atomically and read
without running code (``weights_only=True``, no pickles)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ._validation import ButterflyInputError
from .modalities import ModalitySpec, preprocessor_from_state
from .network import resolve_device
from .nn import InputLinear
from .settings import TrainingConfig

if TYPE_CHECKING:
    from .model import Butterfly

MODEL_FORMAT = "butterfly-model"
# 2: chromosome-blocked weights stored one row per feature; 3: the encoders' input layers too
MODEL_FORMAT_VERSION = 3


def save_model(model: Butterfly, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write ``model`` to the folder ``path`` (see :meth:`butterfly.Butterfly.save`)."""
    path = Path(path).absolute()
    check_save_target(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        config = {
            "format": MODEL_FORMAT,
            "version": MODEL_FORMAT_VERSION,
            "butterfly_version": _package_version(),
            "modalities": [model.specs[n].to_dict() for n in model.names],
            "seed": model.seed,
            "validation_fraction": model.validation_fraction,
            "network": model.network_options,
            "training": model.training_config.to_dict() if model.training_config else None,
            "is_trained": model.is_trained_,
            "batch_norm_recalibration": model.batch_norm_recalibration_,
            "pairing": model.pairing,
            "label_key": model.label_key,
            "cluster_backend": model.cluster_backend,
            "cluster_options": model.cluster_options,
            "training_data": model.training_data_,
            "saved_with": _versions(),
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=_plain))
        torch.save({k: v.cpu() for k, v in model.network.state_dict().items()}, tmp / "weights.pt")
        for name, pre in model.preprocessors.items():
            pre_config, arrays = pre.state()
            (tmp / f"preprocessing_{name}.json").write_text(json.dumps(pre_config, indent=2, default=_plain))
            np.savez(tmp / f"preprocessing_{name}.npz", **arrays)
        if model.history_ is not None:
            model.history_.to_csv(tmp / "history.csv", index=False)
        if model.validation_scores_ is not None:
            np.savez(tmp / "validation_scores.npz", **model.validation_scores_)
        if path.exists():
            backup = path.with_name(f".{path.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(path, backup)
            os.replace(tmp, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _training_config(saved: dict | None) -> TrainingConfig | None:
    """The training settings a model file records. Settings this release does not know (a later release's)
    shaped training only, and a loaded model does not train: they are left out; a setting the file lacks (one
    added after it was saved) takes its default."""
    if not saved:
        return None
    known = {field.name for field in dataclasses.fields(TrainingConfig)}
    return TrainingConfig(**{name: value for name, value in saved.items() if name in known})


def load_model(cls: type[Butterfly], path: str | os.PathLike, *, device: str = "auto") -> Butterfly:
    """Read a folder written by :func:`save_model` into a new ``cls`` (see :meth:`butterfly.Butterfly.load`)."""
    path = Path(path)
    config = read_model_config(path)
    if config.get("version", 0) > MODEL_FORMAT_VERSION:
        raise ButterflyInputError(
            f"{path} was saved by a newer butterfly (format version {config['version']}); upgrade butterfly."
        )
    model = cls.__new__(cls)
    specs = [ModalitySpec.from_dict(d) for d in config["modalities"]]
    model.specs = {s.name: s for s in specs}
    model.names = (specs[0].name, specs[1].name)
    model.seed = config["seed"]
    model.device = resolve_device(device)
    model.validation_fraction = config["validation_fraction"]
    model.network_options = config["network"]
    model.training_config = _training_config(config.get("training"))
    model.is_trained_ = config["is_trained"]
    model.batch_norm_recalibration_ = config.get("batch_norm_recalibration")
    model.preprocessors = {}
    for name in model.names:
        pre_config = json.loads((path / f"preprocessing_{name}.json").read_text())
        with np.load(path / f"preprocessing_{name}.npz", allow_pickle=False) as stored:
            model.preprocessors[name] = preprocessor_from_state(pre_config, dict(stored))
    model._matrices = {}
    model.pairing, model.label_key = config.get("pairing", "measured"), config.get("label_key")
    model.cluster_backend, model._raw = config.get("cluster_backend"), None
    model.cluster_options = config.get("cluster_options", {})
    model.training_data_ = config.get("training_data")  # None in files saved before butterfly kept them
    model.saved_with_ = config.get("saved_with")
    model._build_network()
    with warnings.catch_warnings():  # torch 2.1-2.3's own loader touches its deprecated TypedStorage
        warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)
        state = torch.load(path / "weights.pt", map_location=model.device, weights_only=True)
    if config.get("version", 0) < 3:  # input layers stored as nn.Linear's [out, in] weight then
        for name, module in model.network.named_modules():
            if isinstance(module, InputLinear):
                state[f"{name}.weight"] = state[f"{name}.weight"].t().contiguous()
    model.network.load_state_dict(state)
    model.network.eval()
    history = path / "history.csv"
    model.history_ = pd.read_csv(history) if history.is_file() else None
    model.validation_scores_ = None  # models saved before butterfly kept them have none
    if (path / "validation_scores.npz").is_file():
        with np.load(path / "validation_scores.npz", allow_pickle=False) as stored:
            model.validation_scores_ = {name: stored[name] for name in stored.files}
    return model


def read_model_config(path: Path) -> dict:
    """The config of a saved model folder; raises when ``path`` is not one."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved butterfly model (no config.json).")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ButterflyInputError(
            f"{path} is not a butterfly model (its config.json is not JSON: {err})."
        ) from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise ButterflyInputError(f"{path} is not a butterfly model (format {found!r}).")
    return config


def check_save_target(path: str | os.PathLike, *, overwrite: bool) -> None:
    """Refuse to save over anything but an earlier saved model (with ``overwrite``) or an empty folder.

    Replacing a folder deletes it, so ``overwrite=True`` on a folder of the user's (say, the project folder)
    must not be honoured.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    try:
        is_model = path.is_dir() and not path.is_symlink() and bool(read_model_config(path))
    except (OSError, ButterflyInputError):
        is_model = False
    if not is_model:
        raise ButterflyInputError(
            f"{path} exists and is not a saved butterfly model, so it is not replaced even with overwrite: "
            "saving deletes what the folder held. Choose a new or empty folder."
        )


def _plain(value):
    """JSON for the numpy scalars a user's options may hold (``cluster_options={"max_epochs": np.int64(50)}``)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be saved in a model's JSON config.")


def _versions() -> dict[str, str]:
    """The Python and package versions a model is saved with (``butterfly info`` shows them)."""
    import platform
    from importlib.metadata import version

    return {
        "butterfly": _package_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "anndata": version("anndata"),  # anndata.__version__ is deprecated from 0.13
    }


def _package_version() -> str:
    from . import __version__

    return __version__
