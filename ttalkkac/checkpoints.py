"""A job's checkpoints: list them with their losses, register one as an adapter.

Checkpoints are the Trainer's ``checkpoint-<step>`` folders (adapter weights, optimizer state,
``trainer_state.json``) under ``<job folder>/checkpoints``, in the folder of the delivery that
wrote them (``ttalkkac.training.layout``). While a job runs, the best and the last are kept; a
job that succeeds removes them all unless its spec has ``keep_checkpoints``. Listed is whatever
exists and is complete (the Trainer writes ``trainer_state.json`` last).

Registering copies the checkpoint's adapter files into ``DATA_DIR/adapters/`` (a folder of its
own, so it outlives the job folder and rotation) and adds the registry row, as a finished job
registers its final adapter. No torch import.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ttalkkac.adapters import CONFIG_FILE, WEIGHTS_FILE, config_rank, read_adapter_dir
from ttalkkac.errors import Conflict, InvalidInput, NotFound
from ttalkkac.jobs import adapter_name_for, job_dir
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.models import Adapter, TrainingJob
from ttalkkac.training.layout import (
    CHECKPOINTS_DIR,
    TRAINER_STATE_FILE,
    checkpoint_folders,
    checkpoint_step,
)

logger = logging.getLogger(__name__)

COPIED_FILES = (WEIGHTS_FILE, CONFIG_FILE, "README.md")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    epoch: float | None
    train_loss: float | None  # the last training loss logged at or before this step
    eval_loss: float | None  # the evaluation at this step, if one ran
    size_bytes: int  # the whole folder (weights, optimizer state, trainer state)
    is_best: bool  # the best by eval loss so far (the Trainer's best_model_checkpoint)
    created_at: datetime


def _read(folder: Path, step: int) -> tuple[Checkpoint, int | None] | None:
    """The checkpoint and the step of the best one its state names; None if incomplete."""
    try:
        state_file = folder / TRAINER_STATE_FILE
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if not (folder / WEIGHTS_FILE).is_file():
            return None
        written = state_file.stat().st_mtime
        size = sum(f.lstat().st_size for f in folder.rglob("*") if f.is_file())
    except (OSError, ValueError):
        return None  # being written, or removed while we read it (rotation)
    history: list[dict[str, Any]] = state.get("log_history") or []
    train = [e["loss"] for e in history if "loss" in e and e.get("step", 0) <= step]
    evals = [e["eval_loss"] for e in history if "eval_loss" in e and e.get("step") == step]
    best = state.get("best_model_checkpoint")
    checkpoint = Checkpoint(
        step=step,
        path=folder,
        epoch=state.get("epoch"),
        train_loss=train[-1] if train else None,
        eval_loss=evals[-1] if evals else None,
        size_bytes=size,
        is_best=False,
        created_at=datetime.fromtimestamp(written, UTC),
    )
    return checkpoint, checkpoint_step(Path(best)) if best else None


def list_checkpoints(out_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints under a job folder (all its deliveries'), oldest step first."""
    by_step: dict[int, tuple[Checkpoint, int | None]] = {}
    for folder in checkpoint_folders(Path(out_dir) / CHECKPOINTS_DIR):
        step = checkpoint_step(folder)
        read = _read(folder, step) if step is not None else None
        if read is not None:  # a step two deliveries wrote: the later one's (listed last)
            by_step[step] = read
    found = [by_step[step] for step in sorted(by_step)]
    # The newest state knows the best of the run so far; older ones only knew theirs.
    best = found[-1][1] if found else None
    return [replace(c, is_best=c.step == best) for c, _ in found]


def get_checkpoint(out_dir: Path, step: int) -> Checkpoint:
    for checkpoint in list_checkpoints(out_dir):
        if checkpoint.step == step:
            return checkpoint
    raise NotFound(
        f"no complete checkpoint at step {step} (GET /train/{{id}}/checkpoints lists them; a "
        "successful job keeps its checkpoints only with hyperparameters.keep_checkpoints)"
    )


def default_name(job: TrainingJob, step: int) -> str:
    return f"{adapter_name_for(job, job.base_model or 'model')}-step{step}"[:200]


def register_checkpoint(
    session: Session,
    settings: Settings,
    *,
    job: TrainingJob,
    step: int,
    name: str | None = None,
) -> Adapter:
    """Copy checkpoint ``step`` of ``job`` under DATA_DIR/adapters and register it."""
    if not job.base_model:
        raise Conflict(f"job {job.id} has not started: it has no checkpoints")
    checkpoint = get_checkpoint(job_dir(settings, job.id), step)
    name = name or default_name(job, step)
    if crud.get_adapter(session, name=name) is not None:
        raise Conflict(f"an adapter named {name!r} already exists; choose another name")
    # A folder per registration (the name is not enough: a failed attempt may have left one).
    dest = settings.adapters_dir / f"{name}-{uuid.uuid4().hex[:8]}"
    _copy_adapter(checkpoint.path, dest)
    try:
        config = read_adapter_dir(dest)
        metrics = {
            "source": "checkpoint",
            "step": checkpoint.step,
            "train_loss": checkpoint.train_loss,
            "eval_loss": checkpoint.eval_loss,
            "epoch": checkpoint.epoch,
        }
        try:
            with session.begin_nested():
                adapter = crud.create_adapter(
                    session,
                    name=name,
                    base_model=job.base_model,
                    path=str(dest),
                    job_id=job.id,
                    rank=config_rank(config),
                    metrics=metrics,
                )
        except IntegrityError as exc:  # registered by a concurrent request meanwhile
            raise Conflict(f"an adapter named {name!r} already exists") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    logger.info("[job %s] checkpoint-%s registered as adapter %s", job.id, step, name)
    return adapter


def _copy_adapter(source: Path, dest: Path) -> None:
    """The checkpoint's adapter files only (no optimizer state), written under a temporary name
    and renamed, so a listed adapter folder is always complete."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.mkdir(parents=True)
    try:
        for name in COPIED_FILES:
            file = source / name
            if file.is_file() and not file.is_symlink():
                shutil.copy2(file, tmp / name)
        if not (tmp / WEIGHTS_FILE).is_file() or not (tmp / CONFIG_FILE).is_file():
            raise InvalidInput(f"{source.name} has no complete adapter to register")
        tmp.rename(dest)
    except FileNotFoundError as exc:
        raise NotFound(f"{source.name} was removed while it was being copied") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
