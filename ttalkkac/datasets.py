"""Dataset uploads: a zip of the gold-standard layout or chat-message JSONL, checked and stored.

An upload is written to a private folder under ``DATASETS_DIR`` (size-limited), unpacked with
every entry checked (no absolute paths, no ``..``, no links, bounded entry count and unpacked
size, so a zip bomb stops early), validated with the data lane's loader, and only then moved to
``DATASETS_DIR/<id>/`` and recorded. A rejected upload leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from ttalkkac.errors import DataError, InvalidInput, PayloadTooLarge
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.models import Dataset, new_id

logger = logging.getLogger(__name__)

FILES_DIR = "files"
JSONL_FILE = "data.jsonl"
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_SYMLINK = 0o120000
_FILE_TYPE_MASK = 0o170000
_MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems
_MAX_PATH_BYTES = 1024  # inside the archive; the data folder's own path comes on top


@dataclass(frozen=True)
class Layout:
    """Where a stored dataset's parts are, relative to its folder."""

    kind: str  # "gold" | "chat_jsonl"
    results_dir: str | None = None
    meetings_dir: str | None = None
    jsonl_file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


# --- writing and unpacking -------------------------------------------------------------------


def copy_limited(src: BinaryIO, dest: Path, *, max_bytes: int) -> int:
    """Copy a stream to ``dest``; ``PayloadTooLarge`` as soon as it passes ``max_bytes``."""
    written = 0
    with dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise PayloadTooLarge(f"upload larger than {max_bytes} bytes (MAX_UPLOAD_BYTES)")
            out.write(chunk)
    return written


def _entry_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if not info.flag_bits & 0x800:
        # No UTF-8 flag: zipfile decoded cp437, but many tools write UTF-8 anyway (Korean names).
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            name = name.encode("cp437").decode("utf-8")
    return name


def safe_relative(name: str) -> PurePosixPath:
    """The entry's path inside the archive, or ``InvalidInput`` when it could escape it or
    could not be created (a name part over the file system's 255 bytes, a path over 1 KiB)."""
    if "\x00" in name:
        raise InvalidInput(f"zip entry name contains NUL: {name!r}")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise InvalidInput(f"zip entry has an absolute path: {name!r}")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInput(f"zip entry escapes the archive folder: {name!r}")
    # Linux refuses longer names with ENAMETOOLONG, which would surface as a 500 mid-extract.
    if any(len(p.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES for p in parts):
        raise InvalidInput(
            f"zip entry has a name part over {_MAX_NAME_BYTES} bytes: {_short(name)!r}"
        )
    if len("/".join(parts).encode("utf-8", "surrogatepass")) > _MAX_PATH_BYTES:
        raise InvalidInput(f"zip entry path is over {_MAX_PATH_BYTES} bytes: {_short(name)!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _short(name: str, keep: int = 60) -> str:
    return name if len(name) <= keep else f"{name[:keep]}..."


def _is_dir_entry(info: zipfile.ZipInfo, name: str) -> bool:
    # Windows tools write folder entries as "name\\": zipfile only knows "name/".
    return info.is_dir() or name.replace("\\", "/").endswith("/")


def _check_tree(entries: list[tuple[str, PurePosixPath, bool]]) -> None:
    """``InvalidInput`` unless the entries make one tree: no file where a folder must be.

    A file ``a`` and an entry ``a/b`` (or a folder ``a/``), or a file named ``.``, cannot both
    be written: the second ``mkdir``/``open`` fails with ``FileExistsError``/``IsADirectoryError``.
    """
    files: dict[PurePosixPath, str] = {}
    folders: set[PurePosixPath] = set()
    for name, rel, is_dir in entries:
        if is_dir:
            folders.add(rel)
        elif rel == PurePosixPath("."):
            raise InvalidInput(f"zip entry has no file name: {name!r}")
        else:
            files.setdefault(rel, name)
        folders.update(rel.parents)
    clashes = sorted(set(files) & folders)
    if clashes:
        raise InvalidInput(
            f"zip entries conflict: {files[clashes[0]]!r} is a file, and other entries use it "
            "as a folder"
        )


def safe_extract(
    archive: Path, dest: Path, *, max_files: int, max_unpacked_bytes: int
) -> tuple[int, int]:
    """Unpack ``archive`` into ``dest`` after checking every entry; (files, bytes) written."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, UnicodeDecodeError, ValueError, EOFError) as exc:
        # UnicodeDecodeError: an entry flagged UTF-8 whose name is not; the others: headers
        # that lie about offsets or sizes.
        raise InvalidInput(f"not a valid zip file: {exc}") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise PayloadTooLarge(
                f"zip has {len(infos)} entries; at most {max_files} (MAX_DATASET_FILES)"
            )
        declared = sum(i.file_size for i in infos)
        if declared > max_unpacked_bytes:
            raise PayloadTooLarge(
                f"zip unpacks to {declared} bytes; at most {max_unpacked_bytes} "
                "(MAX_DATASET_UNPACKED_BYTES)"
            )
        plan: list[tuple[zipfile.ZipInfo, Path, bool]] = []
        tree: list[tuple[str, PurePosixPath, bool]] = []
        for info in infos:  # check every entry before writing any
            name = _entry_name(info)
            rel = safe_relative(name)
            if (info.external_attr >> 16) & _FILE_TYPE_MASK == _SYMLINK:
                raise InvalidInput(f"zip entry is a symbolic link: {name!r}")
            target = (root / rel).resolve()
            if not target.is_relative_to(root):
                raise InvalidInput(f"zip entry escapes the archive folder: {name!r}")
            is_dir = _is_dir_entry(info, name)
            plan.append((info, target, is_dir))
            tree.append((name, rel, is_dir))
        _check_tree(tree)
        try:
            return _write_entries(zf, plan, max_unpacked_bytes)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            # A size field that lies makes zipfile stop at the declared size: the CRC fails.
            raise InvalidInput(f"corrupt zip file: {exc}") from exc


def _write_entries(
    zf: zipfile.ZipFile, plan: list[tuple[zipfile.ZipInfo, Path, bool]], max_unpacked_bytes: int
) -> tuple[int, int]:
    files = written = 0
    for info, target, is_dir in plan:
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        files += 1
        # Declared sizes can lie: count what is actually inflated.
        with zf.open(info) as src, target.open("wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > max_unpacked_bytes:
                    raise PayloadTooLarge(
                        f"zip unpacks to more than {max_unpacked_bytes} bytes "
                        "(MAX_DATASET_UNPACKED_BYTES)"
                    )
                out.write(chunk)
    return files, written


# --- recognising the layout ------------------------------------------------------------------


def _walk_dirs(root: Path, max_depth: int = 4) -> list[Path]:
    out, frontier = [root], [root]
    for _ in range(max_depth):
        nxt = []
        for folder in frontier:
            for child in sorted(folder.iterdir()):
                if child.is_dir() and not child.is_symlink() and child.name != "__MACOSX":
                    nxt.append(child)
        out.extend(nxt)
        frontier = nxt
    return out


def find_gold_layout(root: Path) -> Layout:
    """The results folder (``<split>_<NNN>_<meeting>/result.json``) and the meetings folder."""
    from ttalkkac.data.gold import MEETING_FILE, RESULT_FILE, parse_record_folder

    results, meetings = [], []
    for folder in _walk_dirs(root):
        children = [c for c in folder.iterdir() if c.is_dir()]
        if any(parse_record_folder(c.name) and (c / RESULT_FILE).is_file() for c in children):
            results.append(folder)
        if any((c / MEETING_FILE).is_file() for c in children):
            meetings.append(folder)
    if len(results) != 1 or len(meetings) != 1:
        raise DataError(
            "expected one results folder (train_<NNN>_<meeting>/result.json entries) and one "
            f"meetings folder (<meeting>/05_final_result.json entries); found {len(results)} "
            f"and {len(meetings)}",
            detail={
                "results_folders": [str(p.relative_to(root)) for p in results][:10],
                "meetings_folders": [str(p.relative_to(root)) for p in meetings][:10],
            },
        )
    return Layout(
        "gold",
        results_dir=str(results[0].relative_to(root.parent)),
        meetings_dir=str(meetings[0].relative_to(root.parent)),
    )


# --- loading ---------------------------------------------------------------------------------


def load_records(
    folder: Path,
    layout: Layout,
    *,
    min_quality: float,
    include_unscored: bool,
    val_fraction: float,
    seed: int,
) -> Any:
    """The data lane's loader on a stored dataset: an object with ``train``, ``val``, ``stats``.

    A ``DataError`` says where in the dataset, never where on the server: its message and
    detail reach API answers (paths are made relative to ``folder``).
    """
    try:
        return _load_records(
            folder,
            layout,
            min_quality=min_quality,
            include_unscored=include_unscored,
            val_fraction=val_fraction,
            seed=seed,
        )
    except DataError as exc:
        exc.message = relative_paths(exc.message, folder)
        exc.detail = relative_paths(exc.detail, folder)
        exc.args = (exc.message,)
        raise


def _load_records(
    folder: Path,
    layout: Layout,
    *,
    min_quality: float,
    include_unscored: bool,
    val_fraction: float,
    seed: int,
) -> Any:
    if layout.kind == "gold":
        from ttalkkac.data.gold import load_gold

        return load_gold(
            folder / str(layout.results_dir),
            folder / str(layout.meetings_dir),
            min_quality=min_quality,
            unscored="include" if include_unscored else "exclude",
            val_fraction=val_fraction,
            seed=seed,
        )
    if layout.kind == "chat_jsonl":
        # A JSONL upload is curated by whoever wrote it: no quality filter applies.
        from ttalkkac.data.jsonl import load_chat_jsonl

        return load_chat_jsonl(
            folder / str(layout.jsonl_file), val_fraction=val_fraction, seed=seed
        )
    raise DataError(f"unknown dataset kind {layout.kind!r}")


def stats_dict(stats: Any) -> dict[str, Any]:
    if isinstance(stats, dict):
        return stats
    return stats.to_dict() if hasattr(stats, "to_dict") else dict(vars(stats))


def relative_paths(value: Any, root: Path) -> Any:
    """``value`` with every path under ``root`` written relative to it (``.`` for ``root``).

    The loaders record the folders they read (``results_dir``); stats and errors end up in API
    answers and job events, which must show the dataset's layout, not the server's folders.
    """
    if isinstance(value, str):
        prefix = str(root)
        if prefix not in value:
            return value
        return value.replace(prefix + "/", "").replace(prefix, ".")
    if isinstance(value, dict):
        return {k: relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [relative_paths(v, root) for v in value]
    return value


def _loader_stats(loaded: Any, folder: Path) -> dict[str, Any]:
    return relative_paths(stats_dict(loaded.stats), folder)


def staging_dir(settings: Settings, dataset_id: str) -> Path:
    """Where an upload is unpacked and checked before it becomes ``DATASETS_DIR/<id>``."""
    return settings.datasets_dir / f".incoming-{dataset_id}"


def public_stats(dataset: Dataset) -> dict[str, Any]:
    """A stored dataset's stats without server paths, rows recorded before this rule included
    (their loader stats hold the staging folder's absolute path)."""
    folder = Path(dataset.path)
    stats = relative_paths(dataset.stats or {}, folder)
    return relative_paths(stats, folder.parent / f".incoming-{dataset.id}")


def layout_of(dataset: Dataset) -> Layout:
    info = dict(dataset.stats.get("layout") or {})
    return Layout(**info) if info else Layout(dataset.kind)


def load_training_data(dataset: Dataset, spec: Any) -> Any:
    """``TrainData`` for a job: the dataset filtered and split with the job's spec."""
    from ttalkkac.training.trainer import TrainData

    loaded = load_records(
        Path(dataset.path),
        layout_of(dataset),
        min_quality=spec.min_quality,
        include_unscored=spec.include_unscored,
        val_fraction=spec.val_fraction,
        seed=spec.seed,
    )
    return TrainData(
        train=list(loaded.train),
        val=list(loaded.val),
        stats=_loader_stats(loaded, Path(dataset.path)),
    )


def check_filter(dataset: Dataset, spec: Any) -> dict[str, Any]:
    """Raise ``DataError`` now (at submission) if the job's filter leaves nothing to train on."""
    loaded = load_records(
        Path(dataset.path),
        layout_of(dataset),
        min_quality=spec.min_quality,
        include_unscored=spec.include_unscored,
        val_fraction=spec.val_fraction,
        seed=spec.seed,
    )
    if not loaded.train:
        raise DataError("the dataset's training split is empty with these options")
    return _loader_stats(loaded, Path(dataset.path))


# --- the upload ------------------------------------------------------------------------------


def _detect_kind(upload: Path, filename: str) -> str:
    if zipfile.is_zipfile(upload):
        return "zip"
    if filename.lower().endswith((".jsonl", ".json")):
        return "chat_jsonl"
    with upload.open("rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"{"):
        return "chat_jsonl"
    raise InvalidInput(
        "upload a .zip of the gold-standard layout (results + meetings folders) or a .jsonl "
        "file of chat messages"
    )


def ingest_upload(
    settings: Settings,
    session: Session,
    *,
    stream: BinaryIO,
    filename: str,
    name: str | None = None,
) -> Dataset:
    """Store, unpack, validate and record one upload. Nothing is kept when it is rejected."""
    settings.ensure_dirs()
    dataset_id = new_id("ds")
    staging = staging_dir(settings, dataset_id)
    final = settings.datasets_dir / dataset_id
    staging.mkdir(parents=True)
    try:
        upload = staging / "upload.bin"
        size = copy_limited(stream, upload, max_bytes=settings.max_upload_bytes)
        kind = _detect_kind(upload, filename)
        files = staging / FILES_DIR
        if kind == "zip":
            n_files, unpacked = safe_extract(
                upload,
                files,
                max_files=settings.max_dataset_files,
                max_unpacked_bytes=settings.max_dataset_unpacked_bytes,
            )
            layout = find_gold_layout(files)
        else:
            files.mkdir()
            upload.rename(files / JSONL_FILE)
            n_files, unpacked = 1, size
            layout = Layout("chat_jsonl", jsonl_file=f"{FILES_DIR}/{JSONL_FILE}")
        upload.unlink(missing_ok=True)
        # Structure check with no quality filter: every record that could ever be used.
        loaded = load_records(
            staging, layout, min_quality=0.0, include_unscored=True, val_fraction=0.1, seed=42
        )
        loader_stats = _loader_stats(loaded, staging)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    stats = {
        "layout": layout.as_dict(),
        "files": n_files,
        "unpacked_bytes": unpacked,
        "records": len(loaded.train) + len(loaded.val),
        "loader": loader_stats,
    }
    try:
        dataset = crud.create_dataset(
            session,
            id=dataset_id,
            name=(name or Path(filename).stem or dataset_id)[:200],
            kind=layout.kind,
            path=str(final),
            size_bytes=size,
            stats=stats,
        )
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    logger.info(
        "dataset %s stored: %s, %d usable records [%s]",
        dataset_id,
        layout.kind,
        stats["records"],
        filename,
    )
    return dataset
