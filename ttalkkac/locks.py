"""An exclusive lock between processes on one host: a ``flock`` on a lock file.

Used where several processes (API replicas on one host, the launcher, tests) may build the
same folder at once: the demo model, merged adapter weights; and by retention, which must not
remove a merged folder while another process builds it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock inside the block. ``wait=False``: yields False at once if another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
