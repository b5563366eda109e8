"""Names inside a job folder (``DATA_DIR/jobs/<job id>/``), for the trainer and its readers.

A module without heavy imports: the API lists checkpoints and zips TensorBoard files without
loading transformers, which ``ttalkkac.training.trainer`` imports at module level.

Checkpoints live under ``checkpoints/``: a job's delivery (a *run*) writes only into its own
``checkpoints/run-<id>/`` folder, so a process that lost its job (paused past the stale limit)
can neither overwrite nor rotate away the live run's checkpoints. A run of the CLI, the only
writer of its folder, writes ``checkpoints/checkpoint-<step>/`` directly, as jobs did before.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS_DIR = "checkpoints"  # checkpoint-<step>/ folders written by transformers' Trainer
CHECKPOINT_PREFIX = "checkpoint-"
RUN_PREFIX = "run-"  # checkpoints/run-<id>/: the checkpoints of one delivery of a job
TRAINER_STATE_FILE = "trainer_state.json"  # written last into a checkpoint by the Trainer
TENSORBOARD_DIR = "tensorboard"  # event files of report_to=tensorboard


def checkpoint_step(folder: Path) -> int | None:
    """The step of a ``checkpoint-<step>`` folder; None for any other name."""
    suffix = folder.name.removeprefix(CHECKPOINT_PREFIX)
    return int(suffix) if folder.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def checkpoint_folders(root: Path) -> list[Path]:
    """Every ``checkpoint-<step>`` folder under ``root`` (a job's ``checkpoints/``), complete or
    not: directly in it and in its runs' folders. Oldest step first; where two runs wrote the
    same step (a stale run and its successor), the one written last comes last."""
    if not root.is_dir():
        return []
    runs = [d for d in _children(root) if d.name.startswith(RUN_PREFIX) and _real_dir(d)]
    found = [
        folder
        for parent in [root, *runs]
        for folder in _children(parent)
        if checkpoint_step(folder) is not None and _real_dir(folder)
    ]
    return sorted(found, key=lambda f: (checkpoint_step(f) or 0, _mtime(f)))


def _children(folder: Path) -> list[Path]:
    try:  # a run's folder may be removed while we look (rotation, a successor's pruning)
        return list(folder.iterdir())
    except OSError:
        return []


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
