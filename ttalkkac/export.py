"""Zips of managed files, streamed: an adapter (or its merged copy), a job's TensorBoard files.

- Only files chosen by name inside one folder, which must lie inside DATA_DIR: no symlink is
  followed and nothing resolving outside the folder is read, so a planted link cannot make the
  API serve arbitrary files. Pickles (``*.bin``, ``*.pt``) are never among them.
- Bounded: the files are listed and measured first; more than ``DOWNLOAD_MAX_BYTES`` (before
  compression) is ``PayloadTooLarge`` (413), and each file is read only up to the size it had
  then, so a file still being written (TensorBoard's) cannot make the zip grow.
- Streamed: ``zipfile`` writes into a sink that the generator empties after every block, so
  memory holds one block (1 MiB), whatever the size; entries over 2 GiB are Zip64.

No torch import: the API builds these without the training stack.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttalkkac.adapters import CONFIG_FILE, WEIGHTS_FILE, AdapterRef, ensure_managed
from ttalkkac.errors import InvalidInput, NotFound, PayloadTooLarge
from ttalkkac.settings import Settings
from ttalkkac.training.layout import TENSORBOARD_DIR

BLOCK = 1 << 20
MAX_FILES = 10_000
ADAPTER_FILES = frozenset({WEIGHTS_FILE, CONFIG_FILE, "README.md"})
# A merged model folder as save_pretrained writes it: weights, configs, tokenizer, template.
MERGED_SUFFIXES = frozenset({".safetensors", ".json", ".jinja", ".txt", ".model"})
TENSORBOARD_PREFIX = "events.out.tfevents."


@dataclass(frozen=True)
class ExportFile:
    arcname: str  # path inside the zip, "/"-separated, relative to the folder
    path: Path
    size: int


@dataclass(frozen=True)
class Export:
    """What a download will send: a file name for the client and the measured files."""

    filename: str
    files: list[ExportFile]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def collect(
    folder: Path,
    *,
    settings: Settings,
    allowed: Callable[[Path], bool],
    recursive: bool = False,
) -> list[ExportFile]:
    """The regular files of ``folder`` (inside DATA_DIR) that ``allowed`` accepts, measured."""
    root = ensure_managed(folder, settings)
    if not root.is_dir():
        raise NotFound(f"{folder} does not exist")
    files: list[ExportFile] = []
    total = 0
    for current, dirs, names in os.walk(root, followlinks=False):
        if not recursive:
            dirs.clear()
        dirs.sort()
        for name in sorted(names):
            path = Path(current) / name
            # A symlink is skipped, never followed (even one pointing inside).
            if path.is_symlink() or not path.is_file() or not allowed(path):
                continue
            if not path.resolve().is_relative_to(root):
                continue
            size = path.lstat().st_size
            total += size
            files.append(ExportFile(path.relative_to(root).as_posix(), path, size))
            if len(files) > MAX_FILES or total > settings.download_max_bytes:
                raise PayloadTooLarge(
                    f"{folder.name}: more than {MAX_FILES} files or "
                    f"{settings.download_max_bytes:,} bytes (DOWNLOAD_MAX_BYTES)",
                    detail={"limit_bytes": settings.download_max_bytes},
                )
    return files


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes the generator takes after each block."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def stream_zip(files: list[ExportFile]) -> Iterator[bytes]:
    """The zip of ``files``, a block at a time (safetensors stored: they do not compress)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", allowZip64=True) as archive:
        for item in files:
            info = zipfile.ZipInfo.from_file(item.path, item.arcname)
            info.compress_type = (
                zipfile.ZIP_STORED if item.path.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
            )
            force_zip64 = item.size >= zipfile.ZIP64_LIMIT
            with (
                archive.open(info, "w", force_zip64=force_zip64) as entry,
                item.path.open("rb") as source,
            ):
                left = item.size
                while left > 0:
                    block = source.read(min(BLOCK, left))
                    if not block:
                        break
                    entry.write(block)
                    left -= len(block)
                    yield sink.take()
            yield sink.take()
    yield sink.take()  # the central directory


def _safe_filename(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in name)


def adapter_export(row: Any, settings: Settings, *, merged: bool = False) -> Export:
    """An adapter's safetensors, config and README; ``merged``: its merged model copy."""
    folder = ensure_managed(row.path, settings)
    if not merged:
        files = collect(folder, settings=settings, allowed=lambda p: p.name in ADAPTER_FILES)
        names = {f.arcname for f in files}
        missing = sorted({WEIGHTS_FILE, CONFIG_FILE} - names)
        if missing:
            raise InvalidInput(f"adapter {row.name!r} has no {', '.join(missing)} in {folder}")
        return Export(f"{_safe_filename(row.name)}.zip", files)
    copy = merged_copy(row, folder)
    files = collect(copy, settings=settings, allowed=lambda p: p.suffix in MERGED_SUFFIXES)
    return Export(f"{_safe_filename(row.name)}-merged.zip", files)


def merged_copy(row: Any, folder: Path) -> Path:
    """The merged model folder built from the adapter's current weights (merged serving)."""
    from ttalkkac.inference.merge import built_from, merged_dir_for, read_stamp

    ref = AdapterRef(name=row.name, path=folder, base_model=row.base_model, rank=row.rank)
    copy = merged_dir_for(ref)
    hint = (
        "merged copies are built when an adapter is activated in merged serving mode "
        "(SERVING_MODE=merged, the CPU default): POST /adapters/{name}/activate"
    )
    if read_stamp(copy) is None:
        raise NotFound(f"adapter {row.name!r} has no merged copy; {hint}")
    if not built_from(copy, ref):
        raise NotFound(f"the merged copy of {row.name!r} is from older weights; {hint}")
    return copy


def tensorboard_export(job_id: str, job_dir: Path, settings: Settings) -> Export:
    """A job's TensorBoard event files (hyperparameters.report_to='tensorboard')."""
    folder = job_dir / TENSORBOARD_DIR
    if not folder.is_dir():
        raise NotFound(
            f"job {job_id} has no TensorBoard files: submit it with "
            "hyperparameters.report_to='tensorboard' (they appear with its first logged step)"
        )
    files = collect(
        folder,
        settings=settings,
        allowed=lambda p: p.name.startswith(TENSORBOARD_PREFIX),
        recursive=True,
    )
    return Export(f"{_safe_filename(job_id)}-tensorboard.zip", files)
