"""Checkpoints of a real tiny training kept with keep_checkpoints: listed, registered, copied."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.ttalkkac.training.conftest import RecordingReporter
from tests.utils.training_data import tiny_records
from ttalkkac import checkpoints, jobs
from ttalkkac.errors import Conflict, NotFound
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.training.spec import TrainSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kept_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    """6 steps, evaluated and saved every 2, every checkpoint kept."""
    from ttalkkac.training.trainer import TrainData, train_lora

    records = tiny_records(4)
    out = tmp_path_factory.mktemp("kept")
    train_lora(
        base_model=str(tiny_model_dir),
        data=TrainData(records[:3], records[3:], {}),
        spec=TrainSpec(
            max_steps=6,
            gradient_accumulation_steps=1,
            logging_steps=1,
            eval_steps=2,
            max_seq_len=512,
            learning_rate=1e-2,
            keep_checkpoints=True,
        ),
        out_dir=out,
        reporter=RecordingReporter(),
    )
    return out


def test_every_checkpoint_is_kept_and_listed_with_its_losses(kept_run: Path) -> None:
    found = checkpoints.list_checkpoints(kept_run)
    assert [c.step for c in found] == [2, 4, 6]  # no rotation to best + last
    history = json.loads((kept_run / "log_history.json").read_text())
    for checkpoint in found:
        evals = [
            e["eval_loss"] for e in history if "eval_loss" in e and e["step"] == checkpoint.step
        ]
        losses = [e["loss"] for e in history if "loss" in e and e["step"] == checkpoint.step]
        assert checkpoint.eval_loss == evals[0]
        assert checkpoint.train_loss == losses[0]
        weights = (checkpoint.path / "adapter_model.safetensors").stat().st_size
        assert checkpoint.size_bytes > weights  # the optimizer state too
    best = min(found, key=lambda c: c.eval_loss or 0)
    assert [c.step for c in found if c.is_best] == [best.step]
    results = json.loads((kept_run / "training_results.json").read_text())
    assert results["best_step"] == best.step


def test_incomplete_and_foreign_folders_are_not_listed(kept_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "job"
    shutil.copytree(kept_run, out)
    root = out / "checkpoints"
    (root / "checkpoint-6" / "trainer_state.json").write_text('{"log_hi')  # cut short
    (root / "checkpoint-8").mkdir()  # being written
    (root / "notes").mkdir()
    (root / "checkpoint-10").symlink_to(root / "checkpoint-4")
    assert [c.step for c in checkpoints.list_checkpoints(out)] == [2, 4]
    with pytest.raises(NotFound, match="step 6"):
        checkpoints.get_checkpoint(out, 6)
    assert checkpoints.list_checkpoints(tmp_path / "nothing") == []


def test_register_copies_the_adapter_files_only(kept_run: Path, settings) -> None:
    db = Database(settings.resolved_database_url)
    db.create_all()
    with db.session() as session:
        dataset = crud.create_dataset(session, name="d", kind="gold", path="/nowhere")
        job = jobs.create_job(session, dataset_id=dataset.id, spec=TrainSpec(max_steps=6))
        with pytest.raises(Conflict, match="not started"):
            checkpoints.register_checkpoint(session, settings, job=job, step=4)
        job.base_model = "/models/tiny"
        job.suffix = "demo"
        shutil.copytree(kept_run, jobs.job_dir(settings, job.id))

        adapter = checkpoints.register_checkpoint(session, settings, job=job, step=4)
        assert adapter.name == f"tiny-demo-{job.id.removeprefix('job_')[:8]}-step4"
        folder = Path(adapter.path)
        assert folder.parent == settings.adapters_dir
        assert sorted(p.name for p in folder.iterdir()) == [
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
        ]
        source = jobs.job_dir(settings, job.id) / "checkpoints" / "checkpoint-4"
        copied = (folder / "adapter_model.safetensors").read_bytes()
        assert copied == (source / "adapter_model.safetensors").read_bytes()
        assert adapter.metrics["step"] == 4 and adapter.metrics["eval_loss"] is not None
        assert adapter.base_model == "/models/tiny" and adapter.job_id == job.id

        with pytest.raises(Conflict, match="already exists"):
            checkpoints.register_checkpoint(session, settings, job=job, step=4)
        with pytest.raises(NotFound):
            checkpoints.register_checkpoint(session, settings, job=job, step=5, name="other")
        named = checkpoints.register_checkpoint(session, settings, job=job, step=2, name="mine")
        assert named.name == "mine" and Path(named.path) != folder
    # Failed attempts left no folder behind.
    assert len(list(settings.adapters_dir.iterdir())) == 2
    db.dispose()
