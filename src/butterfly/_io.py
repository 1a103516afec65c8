"""Atomic file writes: a file is written beside its target and renamed into place, so a crash or a full disk
never leaves a half-written result where a good one (or none) was."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ._validation import ButterflyInputError, _preview


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


def check_report_folder(out: str | os.PathLike, report_files: Iterable[str], *, overwrite: bool) -> None:
    """Refuse a report folder that holds files the report does not write (``report_files``: names or
    ``fnmatch`` patterns), unless ``overwrite``: an earlier report of the same kind is replaced, but a folder of
    the user's, which may hold a ``summary.md`` or a ``model/`` of their own, is not written into.
    Hidden files (``.DS_Store``, a killed run's ``.name.<pid>.tmp``) never clash and are ignored."""
    out, patterns = Path(out), list(report_files)
    if not out.exists() or overwrite:
        return
    if not out.is_dir():
        raise ButterflyInputError(f"--out {out} is a file; give a folder for the report.")
    foreign = sorted(
        p.name
        for p in out.iterdir()
        if not p.name.startswith(".") and not any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)
    )
    if foreign:
        raise ButterflyInputError(
            f"{out} already holds files this command did not write (e.g. {_preview(foreign)}). Give a new or "
            "empty folder with --out, or pass --overwrite (overwrite=True) to write the report into it anyway."
        )
