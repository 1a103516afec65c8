"""Progress bars: tqdm's, updated less often when they are written to a log file instead of a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

#: Seconds between a bar's updates when standard error is not a terminal (a batch job's log, CI): one
#: update per half-minute instead of one per epoch, which in a log file is one more copy of the bar each.
LOG_INTERVAL = 30.0


def _writes_to_log() -> bool:
    if any("notebook" in cls.__module__ for cls in tqdm.__mro__):  # a Jupyter widget, not text
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return not (callable(isatty) and isatty())


def progress_bar(iterable=None, *, disable: bool = False, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``; into a log file (standard error not a terminal) at most one update per
    :data:`LOG_INTERVAL` seconds, unless ``mininterval`` is given."""
    if not disable and _writes_to_log():
        kwargs.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(iterable, disable=disable, **kwargs)
