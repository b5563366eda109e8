"""An attempt's final files reach the job folder whole, from one attempt, the results last.

A kill is simulated at every step of publishing (each rename) and of writing the staging
folder: after any of them the job folder holds either the earlier attempt's finished run or no
finished run at all (a resume retrains), never a results file whose adapter is missing or cut.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ttalkkac.training import publish as publishing
from ttalkkac.training.publish import file_digests, publish, staging_folder
from ttalkkac.training.report import RESULTS_FILE
from ttalkkac.training.spec import TrainSpec
from ttalkkac.training.trainer import ADAPTER_CONFIG, ADAPTER_WEIGHTS, finished_results

BASE = "base-model"
SPEC = TrainSpec(max_steps=3)


class Killed(BaseException):
    """The process died here (a BaseException, as SystemExit: no handler of ours catches it)."""


def write_attempt(folder: Path, value: float) -> None:
    """The files ``train_lora`` stages, with a weight that tells the attempts apart."""
    save_file({"lora_A": torch.full((4, 4), value)}, str(folder / ADAPTER_WEIGHTS))
    (folder / ADAPTER_CONFIG).write_text(json.dumps({"r": 8, "attempt": value}))
    (folder / "log_history.json").write_text("[]")
    results = {
        "base_model": BASE,
        "hyperparameters": SPEC.model_dump(mode="json"),
        "v": value,
        "file_digests": file_digests(folder, [ADAPTER_WEIGHTS, ADAPTER_CONFIG]),  # as train_lora
    }
    (folder / RESULTS_FILE).write_text(json.dumps(results))


def attempt_of(out_dir: Path) -> float | None:
    """Which attempt's finished run the folder holds (None: none), checked to be whole."""
    results = finished_results(out_dir, spec=SPEC, base_model=BASE)
    if results is None:
        return None
    weight = float(load_file(str(out_dir / ADAPTER_WEIGHTS))["lora_A"][0, 0])
    config = json.loads((out_dir / ADAPTER_CONFIG).read_text())
    assert weight == config["attempt"] == results["v"], "files of two attempts mixed"
    return weight


def test_published_files_are_the_attempts_and_the_staging_folder_goes(tmp_path: Path) -> None:
    out_dir = tmp_path / "job_1"
    with staging_folder(out_dir) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".job_1.build-")
        write_attempt(staging, 1.0)
        moved = publish(staging, out_dir, last=RESULTS_FILE)
    assert moved[-1] == RESULTS_FILE and len(moved) == 4
    assert attempt_of(out_dir) == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["job_1"]


def test_a_staging_folder_without_results_publishes_nothing(tmp_path: Path) -> None:
    out_dir = tmp_path / "job_1"
    with staging_folder(out_dir) as staging:
        save_file({"lora_A": torch.zeros(2, 2)}, str(staging / ADAPTER_WEIGHTS))
        with pytest.raises(FileNotFoundError, match=RESULTS_FILE):
            publish(staging, out_dir, last=RESULTS_FILE)
    assert not out_dir.exists()


@pytest.mark.parametrize("earlier", [None, 1.0], ids=["first-attempt", "over-a-finished-run"])
def test_a_kill_at_any_rename_leaves_one_whole_run_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, earlier: float | None
) -> None:
    """``earlier``: a finished run already in the folder (a stale owner publishing over the
    live one's: a single owner never trains a finished run again)."""
    renames = 4  # config, weights, history, then the results
    for kill_at in range(renames + 1):  # renames done before the kill; the last: no kill
        out_dir = tmp_path / f"job_{kill_at}"
        if earlier is not None:
            with staging_folder(out_dir) as staging:
                write_attempt(staging, earlier)
                publish(staging, out_dir, last=RESULTS_FILE)
        done: list[object] = []

        def dying_replace(
            src: str | Path, dst: str | Path, _at: int = kill_at, _done: list[object] = done
        ) -> None:
            if len(_done) == _at:
                raise Killed
            os.rename(src, dst)
            _done.append(dst)

        monkeypatch.setattr(publishing.os, "replace", dying_replace)
        try:
            with staging_folder(out_dir) as staging:
                write_attempt(staging, 2.0)
                publish(staging, out_dir, last=RESULTS_FILE)
        except Killed:
            pass
        finally:
            monkeypatch.undo()

        # Whole runs only: the earlier one untouched, the new one complete, or none (a resume
        # trains again); attempt_of fails on files of two attempts passed off as one run.
        expected = 2.0 if kill_at == renames else earlier if kill_at == 0 else None
        assert attempt_of(out_dir) == expected, kill_at
        assert not list(tmp_path.glob(".*.build-*")), "staging left behind"
