"""Environment variables set for a stretch of code and put back after it.

For libraries that read their configuration from the environment at one moment: vLLM's CPU
binding when its engine process is spawned, transformers' tracking callbacks when the trainer
is built. Process-wide, like the environment itself: callers keep the stretch short.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def scoped_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (None: unset) these variables, and put back what was there before."""
    before = {key: os.environ.get(key) for key in values}
    _apply(values)
    try:
        yield
    finally:
        _apply(before)


def _apply(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
