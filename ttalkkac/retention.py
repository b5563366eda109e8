"""Retention: deleting datasets, jobs and adapters with their files, and the sweeps that remove
files the service no longer needs.

Deleting (``DELETE /datasets/{id}``, ``/train/{id}``, ``/adapters/{name}``):

- **A dataset** is refused (``Conflict``) while a queued or running job or evaluation uses it.
  Its folder ``DATASETS_DIR/<id>`` is removed. Ended jobs and evaluations that used it keep
  their rows (history: what a job was trained on); while any does, the dataset row stays marked
  deleted (``DatasetDeletion``) and reads as missing, else the row goes.
- **A job** is deleted only once it has ended (succeeded, failed, cancelled), and not while the
  adapter it trained is registered: that adapter's files are the job's folder, so the adapter
  is deleted first (``DELETE /adapters/{name}``), then the job. Its events go with it;
  evaluations keep their rows (``training_job_id`` cleared). ``JOBS_DIR/<id>`` is removed:
  checkpoints, adapter, results, loss plot.
- **An adapter** is refused while it is the active one (the default of ``/generate``, merged
  into the serving weights) or while a queued or running evaluation scores it. Its registry row
  goes, and its merged copy (``<folder>.merged``). Its folder goes too, unless it is a job's
  folder (that goes with the job). Evaluation rows stay: they name adapters by name, and are
  the history of what was measured.

Files: the row changes are committed first, then the files go, so a failure never leaves a row
without its files. Only inside ``DATA_DIR``: dataset and job folders are derived from their
ids, never read from the store; an adapter's registered path is removed only if it resolves
strictly inside ``DATA_DIR`` (outside the datasets folder), is an adapter folder
(``adapter_config.json``) and is not itself a link. A folder is first renamed to a
``.deleted-*`` sibling and then removed, so a crash halfway leaves a leftover the start-up sweep
finds, not a half-deleted folder under a live name.

Sweeps (``sweep_at_start``: the API at start-up; ``remove_ended_checkpoints``: also the worker's
periodic sweep):

- checkpoints of ended jobs (``CHECKPOINT_RETENTION``; a succeeded run removes its own, this
  catches failed and cancelled jobs and a crash during that removal);
- merged copies of adapters that are not active (``MERGED_RETENTION``), skipping one whose
  merge lock another process holds;
- crash leftovers (``.incoming-*`` uploads, ``.*.tmp-*``/``.*.old-*`` merges, ``.*.build-*``
  demo models, ``.deleted-*``) with nothing in them touched for ``LEFTOVER_MIN_AGE_S``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from ttalkkac.adapters import BASE, CONFIG_FILE
from ttalkkac.errors import Conflict, InvalidInput, NotFound
from ttalkkac.inference.merge import MERGED_SUFFIX, STAMP_FILE, merge_lock_path, merged_dir_of
from ttalkkac.jobs.claim import job_dir
from ttalkkac.locks import file_lock
from ttalkkac.settings import Settings
from ttalkkac.store import crud, outbox
from ttalkkac.store import evaluations as evaluation_store
from ttalkkac.store.db import Database
from ttalkkac.store.hooks import Subject
from ttalkkac.store.models import TERMINAL_STATUSES, Adapter, JobStatus
from ttalkkac.training.layout import CHECKPOINTS_DIR

logger = logging.getLogger(__name__)

IN_USE = tuple(s for s in JobStatus if s not in TERMINAL_STATUSES)
"""Statuses of a job or evaluation that still needs its dataset or adapter."""

TRASH_PREFIX = ".deleted-"
# Names our own staging code gives to work in progress (datasets.staging_dir, merge.ensure_merged,
# demo_model.ensure_demo_model's mkdtemp, _remove below).
_LEFTOVER = re.compile(r"^\.(incoming|deleted)-.+$|^\..+\.(tmp|old|build)-[A-Za-z0-9_]+$")


# --- deleting ----------------------------------------------------------------------------------


def delete_dataset(db: Database, settings: Settings, *, id: str) -> None:
    """Delete a dataset and its folder; ``Conflict`` while a job or evaluation needs it."""
    with db.session() as session:
        if crud.get_dataset(session, id=id) is None:
            raise NotFound(f"no dataset with id {id!r}")
        jobs = crud.jobs_using_dataset(session, dataset_id=id, statuses=IN_USE)
        evaluations = evaluation_store.evaluations_using(session, statuses=IN_USE, dataset_id=id)
        if jobs or evaluations:
            raise Conflict(
                f"dataset {id} is in use by {_users(jobs, evaluations)}: cancel them or wait "
                "until they end, then delete it",
                detail={"jobs": jobs, "evaluations": evaluations},
            )
        if not crud.delete_dataset(session, id=id):
            raise NotFound(f"no dataset with id {id!r}")
    _remove(settings.datasets_dir / id, settings.datasets_dir)
    logger.info("dataset %s deleted", id)


def delete_job(db: Database, settings: Settings, *, id: str) -> None:
    """Delete an ended job, its events, its finished webhook deliveries and its folder;
    ``Conflict`` while it runs or while the adapter it trained is registered."""
    folder = job_dir(settings, id)
    with db.session() as session:
        job = crud.get_job(session, id=id)
        if job is None:
            raise NotFound(f"no training job with id {id!r}")
        status = JobStatus(job.status)
        if not status.terminal:
            raise Conflict(
                f"job {id} is {status.value}: cancel it (POST /train/{id}/cancel) and delete it "
                "once it has ended",
                detail={"status": status.value},
            )
        adapter = crud.adapter_for_job(session, job_id=id) or _adapter_at(session, folder)
        if adapter is not None:
            raise Conflict(
                f"job {id} trained adapter {adapter.name!r}, which is registered and whose "
                f"files are this job's folder: delete the adapter first "
                f"(DELETE /adapters/{adapter.name})",
                detail={"adapter": adapter.name},
            )
        if not crud.delete_job(session, id=id):  # deleted meanwhile, or an adapter appeared
            raise Conflict(f"job {id} changed while it was being deleted; try again")
        outbox.delete_ended(session, subject=Subject.training_job, subject_id=id)
    _remove(folder, settings.jobs_dir)
    _remove_merged(merged_dir_of(folder), settings.jobs_dir)  # left if its adapter crashed out
    logger.info("[job %s] deleted", id)


def delete_adapter(db: Database, settings: Settings, *, name: str) -> None:
    """Unregister an adapter and remove its files; ``Conflict`` for the active one and while an
    evaluation of it is queued or running."""
    if name == BASE:
        raise InvalidInput(f"{BASE!r} is the base model, not an adapter")
    with db.session() as session:
        row = crud.get_adapter(session, name=name)
        if row is None:
            raise NotFound(f"no adapter named {name!r}")
        evaluations = evaluation_store.evaluations_using(session, statuses=IN_USE, adapter=name)
        if evaluations:
            raise Conflict(
                f"adapter {name!r} is being evaluated ({', '.join(evaluations)}): cancel the "
                "evaluations or wait until they end, then delete it",
                detail={"evaluations": evaluations},
            )
        if row.is_active:
            raise Conflict(
                f"adapter {name!r} is the active adapter (the default of /generate): activate "
                "another one or DELETE /adapters/active first",
                detail={"active": True},
            )
        path = row.path
        if not crud.delete_adapter(session, name=name):  # activated or deleted meanwhile
            raise Conflict(f"adapter {name!r} changed while it was being deleted; try again")
        folder = managed_adapter_folder(path, settings)
        owned_by_job = folder is not None and _is_job_folder(session, folder, settings)
    if folder is None:
        logger.info("adapter %r deleted; its folder is not managed and stays", name)
        return
    _remove_merged(merged_dir_of(folder), settings.data_dir)
    if not owned_by_job:
        _remove(folder, settings.data_dir)
    logger.info("adapter %r deleted%s", name, " (its job's folder stays)" if owned_by_job else "")


def managed_adapter_folder(path: str | Path, settings: Settings) -> Path | None:
    """The registered adapter folder ``path``, resolved, if retention may remove its files.

    Only a real folder (not a link) strictly inside DATA_DIR, outside the datasets folder and
    not a managed root itself, holding an adapter config; None otherwise. A row could name any
    path (registered by hand, or before DATA_DIR moved): what is outside is never touched.
    """
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() or candidate.is_symlink() or not candidate.is_dir():
        return None
    resolved = candidate.resolve()
    if not _strictly_inside(resolved, settings.data_dir) or _inside(
        resolved, settings.datasets_dir
    ):
        return None
    if resolved in _roots(settings) or not (resolved / CONFIG_FILE).is_file():
        return None
    return resolved


# --- sweeps ------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What one sweep removed."""

    checkpoints: list[Path] = field(default_factory=list)
    merged: list[Path] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return len(self.checkpoints) + len(self.merged) + len(self.leftovers)


def sweep_at_start(db: Database, settings: Settings) -> SweepReport:
    """The API's start-up sweep. Each part is independent: one failing does not stop the rest."""
    report = SweepReport()
    parts = (
        ("checkpoints", lambda: remove_ended_checkpoints(db, settings)),
        ("merged", lambda: remove_unused_merged(db, settings)),
        ("leftovers", lambda: remove_leftovers(db, settings)),
    )
    for name, run in parts:
        try:
            setattr(report, name, run())
        except Exception:
            logger.exception("retention sweep of %s failed; the next start tries again", name)
    if report.removed:
        logger.info(
            "retention: removed %d checkpoint folder(s), %d merged copies, %d leftover(s)",
            len(report.checkpoints),
            len(report.merged),
            len(report.leftovers),
        )
    return report


def remove_ended_checkpoints(db: Database, settings: Settings) -> list[Path]:
    """``checkpoints/`` of every ended job (CHECKPOINT_RETENTION=delete_on_end), but those
    of jobs submitted with ``hyperparameters.keep_checkpoints``.

    Found from the folders on disk, then their jobs' statuses in one query: the cost follows the
    checkpoints that exist, not the number of jobs ever run. A folder whose job the store does
    not know is left alone (it may belong to another store sharing the disk).
    """
    if settings.checkpoint_retention == "keep" or not settings.jobs_dir.is_dir():
        return []
    found = {
        ckpt.parent.name: ckpt
        for ckpt in settings.jobs_dir.glob(f"*/{CHECKPOINTS_DIR}")
        if not ckpt.parent.name.startswith(".") and ckpt.is_dir() and not ckpt.is_symlink()
    }
    if not found:
        return []
    with db.session() as session:
        statuses = crud.job_statuses_and_hyperparameters(session, ids=found)
    removed = []
    for job_id, ckpt in sorted(found.items()):
        status, hyperparameters = statuses.get(job_id, (None, {}))
        if status is None or not JobStatus(status).terminal:
            continue
        if hyperparameters.get("keep_checkpoints"):  # the job's submitter asked for every one
            continue
        if _remove(ckpt, settings.jobs_dir):
            logger.info("[job %s] %s checkpoints removed", job_id, status)
            removed.append(ckpt)
    return removed


def remove_unused_merged(db: Database, settings: Settings) -> list[Path]:
    """Merged copies (``<adapter>.merged`` with a merge stamp) of adapters that are not active
    (MERGED_RETENTION=active_only), beside registered adapters and in the jobs and models
    folders. One whose merge lock is held (a merge in progress elsewhere) is skipped; the
    active adapter is read again under the lock, so a concurrent activation keeps its copy."""
    if settings.merged_retention == "keep":
        return []
    removed = []
    for parent in _adapter_parents(db, settings):
        for merged in sorted(parent.glob(f"*{MERGED_SUFFIX}")):
            if merged.is_symlink() or not (merged / STAMP_FILE).is_file():
                continue
            with file_lock(merge_lock_path(merged), wait=False) as locked:
                unused = locked and merged != _active_merged_dir(db, settings)
                if unused and _remove(merged, settings.data_dir):
                    removed.append(merged)
    return removed


def remove_leftovers(db: Database, settings: Settings, *, now: float | None = None) -> list[Path]:
    """Staging files and folders of crashed processes, untouched for LEFTOVER_MIN_AGE_S."""
    cutoff = (time.time() if now is None else now) - settings.leftover_min_age_s
    removed = []
    for parent in {*_roots(settings), *_adapter_parents(db, settings)}:
        if not parent.is_dir():
            continue
        for entry in sorted(parent.iterdir()):
            if not _LEFTOVER.match(entry.name) or _newest_mtime(entry) >= cutoff:
                continue
            if _remove(entry, parent, trash=False):
                logger.info("removed leftover %s", entry)
                removed.append(entry)
    return removed


# --- helpers -----------------------------------------------------------------------------------


def _users(jobs: list[str], evaluations: list[str]) -> str:
    parts = []
    if jobs:
        parts.append(f"job(s) {', '.join(jobs)}")
    if evaluations:
        parts.append(f"evaluation(s) {', '.join(evaluations)}")
    return " and ".join(parts)


def _roots(settings: Settings) -> set[Path]:
    """The managed folders themselves: never removed, only their entries."""
    return {
        p.resolve()
        for p in (settings.data_dir, settings.datasets_dir, settings.jobs_dir, settings.models_dir)
    }


def _inside(path: Path, root: Path) -> bool:
    return path.is_relative_to(root.resolve())


def _strictly_inside(path: Path, root: Path) -> bool:
    return _inside(path, root) and path != root.resolve()


def _adapter_at(session: Session, folder: Path) -> Adapter | None:
    """A registered adapter whose path is ``folder`` (one registered by hand has no job id)."""
    target = folder.resolve()
    for row in crud.list_adapters(session):
        if Path(row.path).expanduser().resolve() == target:
            return row
    return None


def _is_job_folder(session: Session, folder: Path, settings: Settings) -> bool:
    """``folder`` is ``JOBS_DIR/<id>`` of a job the store still has (its files are the job's)."""
    if folder.parent != settings.jobs_dir.resolve():
        return False
    return crud.get_job(session, id=folder.name) is not None


def _adapter_parents(db: Database, settings: Settings) -> set[Path]:
    """Folders that hold registered adapters (and so their merged copies), inside DATA_DIR."""
    with db.session() as session:
        paths = [row.path for row in crud.list_adapters(session)]
    parents = {settings.jobs_dir.resolve(), settings.models_dir.resolve()}
    for path in paths:
        folder = managed_adapter_folder(path, settings)
        if folder is not None:
            parents.add(folder.parent)
    return {p for p in parents if p.is_dir()}


def _active_merged_dir(db: Database, settings: Settings) -> Path | None:
    with db.session() as session:
        active = crud.get_active_adapter(session)
        path = None if active is None else active.path
    folder = None if path is None else managed_adapter_folder(path, settings)
    return None if folder is None else merged_dir_of(folder)


def _remove_merged(merged: Path, root: Path) -> None:
    """A merged copy and its lock file, once no process builds it (waits for a merge)."""
    lock = merge_lock_path(merged)
    if not merged.exists() and not lock.exists():
        return
    with file_lock(lock):
        _remove(merged, root)
    _remove(lock, root, trash=False)


def _remove(path: Path, root: Path, *, trash: bool = True) -> bool:
    """Remove the file or folder ``path`` if it lies strictly inside ``root``; True if removed.

    A link is removed as a link (its target is not ours). A folder is first renamed to a
    ``.deleted-*`` sibling (``trash``): a crash during the removal then leaves a name the
    start-up sweep removes, not half a folder under its live name.
    """
    if path.is_symlink():
        if not _inside(path.parent.resolve(), root):
            return False
        path.unlink(missing_ok=True)
        return True
    if not path.exists():
        return False
    resolved = path.resolve()
    if not _strictly_inside(resolved, root):
        logger.warning("not removing %s: it is not inside the managed folder %s", path, root)
        return False
    if not resolved.is_dir():
        resolved.unlink(missing_ok=True)
        return True
    if trash:
        target = resolved.with_name(f"{TRASH_PREFIX}{resolved.name}-{uuid.uuid4().hex[:8]}")
        try:
            resolved.rename(target)
        except FileNotFoundError:  # removed by another process meanwhile
            return False
        resolved = target
    shutil.rmtree(resolved, ignore_errors=True)
    return not resolved.exists()


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` and of everything in it (links not followed):
    a folder that a live process still writes into is young even if the folder itself is not."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in itertools.chain(dirs, files):
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except OSError:
                    continue
    return newest
