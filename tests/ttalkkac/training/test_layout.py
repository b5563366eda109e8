"""Where a job's checkpoints are: the CLI's flat layout and one folder per delivery."""

from __future__ import annotations

import os
from pathlib import Path

from ttalkkac.training.layout import checkpoint_folders, checkpoint_step


def test_checkpoints_are_found_in_both_layouts_oldest_step_first_later_writer_last(
    tmp_path: Path,
) -> None:
    root = tmp_path / "checkpoints"
    for folder in (
        "checkpoint-4",  # a CLI run, or a job from before deliveries had folders
        "run-1-aaaa/checkpoint-2",
        "run-1-aaaa/checkpoint-6",
        "run-2-bbbb/checkpoint-6",
        "run-2-bbbb/checkpoint-8",
        "run-2-bbbb/tmp-checkpoint-9",  # not a checkpoint's name
        "other/checkpoint-10",  # not a run's folder
    ):
        (root / folder).mkdir(parents=True)
    (root / "checkpoint-12").write_text("a file, not a folder")
    (root / "run-3-cccc").symlink_to(root / "other")
    # The same step written by two deliveries: the one written last comes last.
    os.utime(root / "run-1-aaaa/checkpoint-6", (1_000, 1_000))
    os.utime(root / "run-2-bbbb/checkpoint-6", (2_000, 2_000))

    found = [str(p.relative_to(root)) for p in checkpoint_folders(root)]
    assert found == [
        "run-1-aaaa/checkpoint-2",
        "checkpoint-4",
        "run-1-aaaa/checkpoint-6",
        "run-2-bbbb/checkpoint-6",
        "run-2-bbbb/checkpoint-8",
    ]
    assert checkpoint_folders(tmp_path / "missing") == []
    assert checkpoint_step(Path("checkpoint-17")) == 17
    assert checkpoint_step(Path("checkpoint-x")) is None
    assert checkpoint_step(Path("run-1")) is None
