"""Atomic file writes: a file is written beside its target and renamed into place, so a crash or a full disk
never leaves a half-written result where a good one (or none) was."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def _write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    _write_atomic(path, lambda tmp: tmp.write_text(text))


def write_h5ad_atomic(adata, path: str | os.PathLike) -> None:
    _write_atomic(path, adata.write_h5ad)


def save_figure_atomic(fig, path: str | os.PathLike, **kwargs) -> None:
    fmt = Path(path).suffix.lstrip(".") or "png"
    _write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))


def copy_file_atomic(source: str | os.PathLike, path: str | os.PathLike) -> None:
    _write_atomic(path, lambda tmp: tmp.write_bytes(Path(source).read_bytes()))
