"""Subpackages import their modules on first use, so that ``import butterfly``, the command line's
``--help`` and the light modules do not wait for torch and scanpy (seconds) before they are needed."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attach(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` that import ``exports`` (name -> module of the package)
    on first use."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f".{exports[name]}", package)
        return getattr(module, name) if hasattr(module, name) else module

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
