"""Saved models: a folder of JSON, ``.npz`` arrays and a ``weights.pt`` state dict, written atomically and read
without running code (``weights_only=True``, no pickles)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .._validation import ButterflyInputError, ModelFileError
from ..io._atomic import remove_stale_staging, replace_folder, staging_folder, sync_files
from ..module._layers import InputLinear
from ..pp._modalities import EXPRESSION, preprocessor_from_state
from ..train._settings import TrainingConfig

if TYPE_CHECKING:
    from ._butterfly import Butterfly

MODEL_FORMAT = "butterfly-model"
# 2: chromosome-blocked weights stored one row per feature; 3: the encoders' input layers too
MODEL_FORMAT_VERSION = 4


#: the files a saved model's folder holds (a killed save's leftovers are recognised by them)
_MODEL_FILES = re.compile(
    r"^(config\.json|weights\.pt|history\.csv|validation_scores\.npz|preprocessing_.+\.(json|npz))$"
)


def save_model(model: Butterfly, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write ``model`` to the folder ``path`` (see :meth:`butterfly.Butterfly.save`).

    The files are written into a hidden folder beside ``path``, flushed, and that folder is then swapped with
    ``path`` in one atomic step (on Linux and macOS), so that at every instant ``path`` holds a whole model:
    the old one or the new. Hidden folders a killed save left beside ``path`` are removed first.
    """
    path = Path(path).absolute()
    check_save_target(path, overwrite=overwrite)
    remove_stale_staging(path, lambda name: bool(_MODEL_FILES.match(name)))
    tmp = staging_folder(path)
    try:
        config = {
            "format": MODEL_FORMAT,
            "version": MODEL_FORMAT_VERSION,
            "butterfly_version": _package_version(),
            "init_params": model.init_params_,
            "batch_categories": model.batch_categories_,
            "query": model.query_,
            "training": model.training_config.to_dict() if model.training_config else None,
            "is_trained": model.is_trained_,
            "batch_norm_recalibration": model.batch_norm_recalibration_,
            "training_data": model.training_data_,
            "translation_check": model.translation_check_,
            "atac_calibration": model.atac_calibration_,
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
        sync_files(tmp)
        replace_folder(tmp, path)
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
    """Read a folder written by :func:`save_model` into a new ``cls`` (see :meth:`butterfly.Butterfly.load`).

    A missing, cut-short or edited required file raises :class:`~butterfly.ModelFileError` naming the file and
    the problem; damage to an optional file (``history.csv``, ``validation_scores.npz``) warns and loads the
    model without it."""
    path = Path(path)
    config = read_model_config(path)
    model = cls.__new__(cls)
    params = init_params(config)
    try:
        model._apply_init_params(params.pop("constructor"), {**params, "device": device})
        training = _training_config(config.get("training"))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ModelFileError(
            path / "config.json", f"its constructor arguments or training settings are not valid ({err})."
        ) from None
    model.training_config = training
    model.is_trained_ = config["is_trained"]
    model.batch_norm_recalibration_ = config.get("batch_norm_recalibration")
    model.preprocessors = {name: _read_preprocessor(path, name) for name in model.names}
    model._matrices = {}
    model.training_data_ = config.get("training_data")  # None in files saved before butterfly kept them
    model.saved_with_ = config.get("saved_with")
    model.translation_check_ = config.get("translation_check")  # None in files saved before butterfly checked
    model.atac_calibration_ = config.get("atac_calibration")  # likewise: probabilities then uncalibrated
    model.batch_categories_ = config.get("batch_categories")
    model.query_ = config.get("query")
    try:
        model._build_network()
    except (TypeError, ValueError, KeyError) as err:
        raise ModelFileError(path / "config.json", f"its network settings are not valid ({err}).") from None
    state = _read_weights(path / "weights.pt", model.device)
    if config["version"] < 3:  # input layers stored as nn.Linear's [out, in] weight then
        for name, module in model.network.named_modules():
            if isinstance(module, InputLinear) and f"{name}.weight" in state:
                state[f"{name}.weight"] = state[f"{name}.weight"].t().contiguous()
    try:
        model.network.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ModelFileError(
            path / "weights.pt",
            "these weights do not fit the network config.json describes (another model's weights, or edited "
            f"files): {first[1].strip() if len(first) > 1 else first[0]} Save the model again from Python, or "
            "restore the folder whole from a backup.",
        ) from None
    model.network.eval()
    model.history_ = _read_optional(path / "history.csv", _read_history)
    # models saved before butterfly kept them have none
    model.validation_scores_ = _read_optional(path / "validation_scores.npz", _read_arrays)
    return model


_DAMAGED = (
    OSError,
    ValueError,
    KeyError,
    EOFError,
    zipfile.BadZipFile,
    UnicodeDecodeError,
    pd.errors.ParserError,
)


def _read_history(file: Path) -> pd.DataFrame:
    history = pd.read_csv(file)
    missing = {"phase", "epoch", "train_loss"} - set(history.columns)
    if missing:
        raise ValueError(f"it lacks the column(s) {sorted(missing)} a loss history has")
    return history


def _read_arrays(file: Path) -> dict[str, np.ndarray]:
    with np.load(file, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def _read_optional(file: Path, read):
    """``read(file)``, or None with a warning when the file is damaged (None without one when it is absent)."""
    if not file.is_file():
        return None
    try:
        return read(file)
    except (*_DAMAGED, pd.errors.EmptyDataError) as err:
        warnings.warn(
            f"{file} could not be read ({type(err).__name__}: {err}); the model loads without it.",
            stacklevel=3,
        )
        return None


def _read_preprocessor(path: Path, name: str):
    """The fitted preprocessing of modality ``name`` saved in ``path``."""
    config_file, arrays_file = path / f"preprocessing_{name}.json", path / f"preprocessing_{name}.npz"
    for file in (config_file, arrays_file):
        if not file.is_file():
            raise ModelFileError(
                file, "missing: the model folder is incomplete. Restore it whole from a backup."
            )
    try:
        pre_config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(config_file, f"not valid JSON ({err}).") from None
    try:
        arrays = _read_arrays(arrays_file)
    except _DAMAGED as err:
        raise ModelFileError(
            arrays_file, f"cannot be read, cut short or damaged ({type(err).__name__}: {err})."
        ) from None
    try:
        return preprocessor_from_state(pre_config, arrays)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise ModelFileError(
            config_file,
            f"the fitted preprocessing it and its .npz describe is not valid ({type(err).__name__}: {err}).",
        ) from None


def _read_weights(file: Path, device) -> dict:
    """The state dict in ``weights.pt``, read without running code."""
    if not file.is_file():
        raise ModelFileError(file, "missing: the model folder is incomplete. Restore it whole from a backup.")
    if file.stat().st_size == 0:
        raise ModelFileError(
            file,
            "empty (0 bytes): the write that made it did not finish. Restore the folder from a backup or save the model again.",
        )
    try:
        with warnings.catch_warnings():  # torch 2.1-2.3's own loader touches its deprecated TypedStorage
            warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)
            warnings.filterwarnings(
                "ignore", "Detected pickle protocol", UserWarning
            )  # a foreign file: refused below
            state = torch.load(file, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err).lower():
            raise ModelFileError(
                file,
                "refused: it holds Python objects besides tensors, which could run code when loaded. butterfly "
                "reads only tensors; use a model folder written by butterfly's save().",
            ) from None
        raise ModelFileError(file, f"damaged or cut short ({err}).") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(file, f"damaged or cut short, not a whole weights file ({reason}).") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(
            file, "holds no state dict of tensors; use a model folder written by butterfly's save()."
        )
    return state


#: config.json's keys and the types their values must have (optional keys may also be null)
_CONFIG_REQUIRED = {
    "version": int,
    "init_params": dict,
    "is_trained": bool,
}
#: before format 4, the constructor's arguments were keys of their own
_CONFIG_REQUIRED_FORMAT_3 = {
    "version": int,
    "modalities": list,
    "seed": int,
    "validation_fraction": (int, float),
    "network": dict,
    "is_trained": bool,
}
_CONFIG_OPTIONAL = {
    "training": dict,
    "batch_categories": list,
    "query": dict,
    "batch_norm_recalibration": dict,
    "pairing": str,
    "label_key": str,
    "cluster_backend": str,
    "cluster_options": dict,
    "cluster_resolution": (int, float),
    "transport_components": int,
    "training_data": dict,
    "translation_check": dict,
    "atac_calibration": dict,
    "saved_with": dict,
}


def _check_config(config: dict, file: Path) -> None:
    def kind(types) -> str:
        types = types if isinstance(types, tuple) else (types,)
        names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", list: "a list",
                 dict: "an object"}  # fmt: skip
        return " or ".join(names[t] for t in types)

    def fits(value, types) -> bool:
        types = types if isinstance(types, tuple) else (types,)
        return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)

    old = isinstance(config.get("version"), int) and config["version"] < 4
    for key, types in (_CONFIG_REQUIRED_FORMAT_3 if old else _CONFIG_REQUIRED).items():
        if key not in config:
            raise ModelFileError(
                file, f"the key {key!r} is missing. Restore the file from a backup or save the model again."
            )
        if not fits(config[key], types):
            raise ModelFileError(file, f"{key!r} must be {kind(types)}, got {config[key]!r}.")
    for key, types in _CONFIG_OPTIONAL.items():
        if config.get(key) is not None and not fits(config[key], types):
            raise ModelFileError(file, f"{key!r} must be {kind(types)} or null, got {config[key]!r}.")
    if old:
        modalities = config["modalities"]
        if len(modalities) != 2 or not all(isinstance(m, dict) for m in modalities):
            raise ModelFileError(
                file, f"'modalities' must list two modalities (objects), got {len(modalities)} entries."
            )
    elif config["init_params"].get("constructor") not in CONSTRUCTORS:
        raise ModelFileError(
            file, f"'init_params' must name its constructor, one of {list(CONSTRUCTORS)}; got "
            f"{config['init_params'].get('constructor')!r}.",
        )  # fmt: skip
    if config["version"] > MODEL_FORMAT_VERSION:
        raise ModelFileError(
            file, f"saved by a newer butterfly (format version {config['version']}, this release reads up to "
            f"{MODEL_FORMAT_VERSION}); upgrade butterfly (pip install -U butterfly-omics).",
        )  # fmt: skip


#: The constructors an ``init_params`` record names: ``Butterfly(...)``, ``Butterfly.unpaired(...)``,
#: ``Butterfly.perturbation(...)``.
CONSTRUCTORS = ("paired", "unpaired", "perturbation")


def init_params(config: dict) -> dict:
    """The constructor and its arguments a checked ``config`` records (a copy), from format 4's
    ``init_params`` or, for older files, from the keys that held them."""
    if "init_params" in config:
        return json.loads(json.dumps(config["init_params"]))
    pairing = config.get("pairing", "measured")
    params = {
        "layer": None,
        "label_key": config.get("label_key") or "cell_type",
        "seed": config["seed"],
        "device": "auto",
        "validation_fraction": config["validation_fraction"],
        **config["network"],
    }
    if pairing == "transport":
        names = [m.get("name") for m in config["modalities"]]
        return {"constructor": "perturbation", "names": names,
                "transport_components": config.get("transport_components") or 50, **params}  # fmt: skip
    if pairing == "unpaired":
        return {"constructor": "unpaired", "modalities": config["modalities"], **params}
    return {
        "constructor": "paired",
        "modalities": config["modalities"],
        "pairing": pairing,
        "cluster_resolution": config.get("cluster_resolution") or 3.0,
        "cluster_backend": config.get("cluster_backend") or "builtin",
        "cluster_options": config.get("cluster_options") or {},
        "batch_key": None,  # batch covariates came with format 4
        **params,
    }


def saved_modalities(config: dict) -> list[dict]:
    """The two modalities a checked ``config`` records (as :meth:`ModalitySpec.to_dict`), in the model's
    order."""
    params = init_params(config)
    if params["constructor"] == "perturbation":
        return [dataclasses.replace(EXPRESSION, name=str(n)).to_dict() for n in params["names"]]
    return list(params["modalities"])


def read_model_config(path: Path) -> dict:
    """The config of a saved model folder, its keys checked; raises when ``path`` is not one or the config is
    damaged (:class:`~butterfly.ModelFileError`)."""
    config = _read_config_file(Path(path))
    _check_config(config, Path(path) / "config.json")
    return config


def _read_config_file(path: Path) -> dict:
    """``config.json`` of a folder that says it is a butterfly model (its other keys unchecked)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved butterfly model (no config.json).")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(
            config_file, f"not JSON ({err}): {path} is not a butterfly model, or its config.json was damaged."
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
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    try:
        is_model = path.is_dir() and not path.is_symlink() and bool(_read_config_file(path))
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
    from .._version import __version__

    return __version__
