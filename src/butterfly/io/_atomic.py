"""Atomic file writes: a file is written beside its target and renamed into place, so a crash or a full disk
never leaves a half-written result where a good one (or none) was."""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .._validation import ButterflyInputError, _preview


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
        raise ButterflyInputError(f"{out} is a file; give a folder for the report as out=.")
    foreign = sorted(
        p.name
        for p in out.iterdir()
        if not p.name.startswith(".") and not any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)
    )
    if foreign:
        raise ButterflyInputError(
            f"{out} already holds files this command did not write (e.g. {_preview(foreign)}). Give a new or "
            "empty folder as out=, or pass overwrite=True to write the report into it anyway."
        )


# -- folders replaced whole (saved models) ---------------------------------------------------------------------
# A folder is written under a hidden staging name beside its target, then swapped with the target in one
# atomic exchange (Linux renameat2(RENAME_EXCHANGE), macOS renamex_np(RENAME_SWAP)), so at every instant the
# target holds either the old folder or the new one, whole. The staging name carries this host and process, so
# the next write to the same target recognises a killed write's leftovers as its own and removes them, and
# nothing else: a folder of another name, of a live process, or holding files this writer does not make stays.
_STAGING = re.compile(r"^\.(?P<target>.+)\.butterfly-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]+$")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def staging_folder(path: Path) -> Path:
    """A new, empty hidden folder beside ``path`` to write ``path``'s replacement into, with the permissions a
    new folder of the user's gets (their umask), not ``mkdtemp``'s 0700."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.butterfly-{_host_tag()}-{os.getpid()}-", dir=path.parent)
    )
    os.chmod(tmp, 0o777 & ~_current_umask())
    return tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return True
    return True


def remove_stale_staging(path: Path, is_own_file: Callable[[str], bool]) -> list[Path]:
    """Remove the staging folders a killed write to ``path`` left beside it: hidden folders of the staging
    name for ``path``, made on this host by a process that no longer runs, holding only files for which
    ``is_own_file(name)`` is true. Returns what was removed."""
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    host = _host_tag()
    for sibling in siblings:
        match = _STAGING.match(sibling.name)
        if not match or match["target"] != path.name or match["host"] != host:
            continue
        if int(match["pid"]) == os.getpid() or _pid_alive(int(match["pid"])):
            continue
        try:
            if sibling.is_symlink() or not sibling.is_dir():
                continue
            if not all(entry.is_file() and not entry.is_symlink() and is_own_file(entry.name)
                       for entry in sibling.iterdir()):  # fmt: skip
                continue
            shutil.rmtree(sibling)
            removed.append(sibling)
        except OSError:
            continue
    return removed


def _exchange_call():
    """The C call that swaps two paths atomically, with its flag, or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        call, at_fdcwd = libc.renameat2, -100
        call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        return lambda a, b: call(at_fdcwd, a, at_fdcwd, b, 2)  # RENAME_EXCHANGE
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        call = libc.renamex_np
        call.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        return lambda a, b: call(a, b, 2)  # RENAME_SWAP
    return None


_EXCHANGE = _exchange_call()


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` (both existing) in one atomic step; False where the system or file system offers
    no such step (nothing was changed then)."""
    if _EXCHANGE is None:
        return False
    if _EXCHANGE(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # e.g. a file system without the exchange
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_folder(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` at ``path``. When ``path`` exists it is swapped out in one atomic step
    and then removed; where no atomic swap exists, it is renamed aside first (a window with no folder at
    ``path``, the best such systems allow). ``tmp`` is gone afterwards, and ``path``'s parent is synced."""
    if not path.exists():
        os.replace(tmp, path)
    elif exchange_paths(tmp, path):
        shutil.rmtree(tmp)  # now the old folder
    else:
        aside = Path(tempfile.mkdtemp(prefix=tmp.name + "-old", dir=path.parent))
        os.replace(path, aside / "old")
        os.replace(tmp, path)
        shutil.rmtree(aside)
    _sync_folder(path.parent)


def sync_files(folder: Path) -> None:
    """Flush every file of ``folder`` to disk (before it replaces a folder: a power cut then leaves whole
    files)."""
    for entry in folder.iterdir():
        with open(entry, "rb") as handle:
            os.fsync(handle.fileno())
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
