"""Atomic file writes: a file is written beside its target and renamed into place, so a crash or a full disk
never leaves a half-written result where a good one (or none) was."""

from __future__ import annotations

import os
from pathlib import Path


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    tmp = _temporary(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_h5ad_atomic(adata, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = _temporary(path)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_figure_atomic(fig, path: str | os.PathLike, **kwargs) -> None:
    path = Path(path)
    tmp = _temporary(path)
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
