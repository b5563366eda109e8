"""A training attempt's final files: written in a folder of their own, renamed into place.

Any process can be killed while it writes, and for a moment two can run one job (a stale owner
that has not yet noticed its heartbeat was refused). Each attempt therefore writes its adapter,
history, plot and results into a staging folder beside the job folder
(``.<job folder>.build-<token>``: the start-up sweep in ``ttalkkac.retention`` removes one a
dead process left), then renames them into the job folder one file at a time with the results
file last. A reader (the adapter registry, the serving engine, a resumed attempt) sees every
file whole, and sees the results file, the mark of a finished run, only once the adapter it
describes is in place. The results name the digests of the adapter's files
(``file_digests``): when two attempts publish over each other, a folder whose files are not
the ones its results describe is not a finished run (``matches``), and a resume trains again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staging_folder(out_dir: Path) -> Iterator[Path]:
    """A new, empty folder on ``out_dir``'s filesystem (a rename is atomic only within one),
    removed on the way out with whatever was not published from it."""
    staging = out_dir.parent / f".{out_dir.name}.build-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, out_dir: Path, *, last: str) -> list[str]:
    """Move every file of ``staging`` into ``out_dir``, replacing what is there, ``last`` last.

    Returns the names moved, in order. Each move is one ``os.replace``; the files and then the
    folder's entries are flushed to disk before ``last`` moves, so a power cut cannot keep the
    mark and lose (or empty) what it marks.
    """
    names = sorted(p.name for p in staging.iterdir() if p.is_file() and p.name != last)
    if not (staging / last).is_file():
        raise FileNotFoundError(f"{last} was not written to {staging}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in [*names, last]:
        _fsync(staging / name)
    for name in names:
        os.replace(staging / name, out_dir / name)
    _fsync(out_dir)
    os.replace(staging / last, out_dir / last)
    _fsync(out_dir)
    return [*names, last]


def file_digests(folder: Path, names: list[str]) -> dict[str, str]:
    """SHA-256 of each named file of ``folder``, for the results to describe what they mark."""
    digests = {}
    for name in names:
        digest = hashlib.sha256()
        with (folder / name).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digests[name] = digest.hexdigest()
    return digests


def matches(folder: Path, digests: dict[str, str]) -> bool:
    """Whether ``folder``'s files are the ones ``digests`` describe."""
    try:
        return file_digests(folder, list(digests)) == digests
    except OSError:
        return False


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk (read-only descriptors do both)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
