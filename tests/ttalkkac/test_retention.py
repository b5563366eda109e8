"""Retention: deletes refuse what is in use, keep history rows, remove files only inside
DATA_DIR; the sweeps remove ended checkpoints, unused merged copies and old crash leftovers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.stores import BACKENDS, store_on
from ttalkkac import jobs, retention
from ttalkkac.errors import Conflict, InvalidInput, NotFound
from ttalkkac.inference.merge import STAMP_FILE, merge_lock_path
from ttalkkac.locks import file_lock
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store import evaluations as evaluation_store
from ttalkkac.store.db import Database
from ttalkkac.store.models import Evaluation, JobEvent, JobStatus
from ttalkkac.training.spec import TrainSpec


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Database]:
    """The store on both backends: the deletes lean on each one's ON DELETE rules."""
    yield from store_on(request, settings.resolved_database_url)


@pytest.fixture
def sqlite_db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.resolved_database_url)
    database.create_all()
    yield database
    database.dispose()


# --- helpers -----------------------------------------------------------------------------------


def make_dataset(db: Database, settings: Settings) -> str:
    with db.session() as s:
        row = crud.create_dataset(s, name="d", kind="gold", path="")
        row.path = str(settings.datasets_dir / row.id)
    folder = settings.datasets_dir / row.id
    (folder / "files").mkdir(parents=True)
    (folder / "files" / "data.jsonl").write_text("{}\n")
    return row.id


def make_job(
    db: Database,
    settings: Settings,
    dataset_id: str,
    status: str = "queued",
    spec: TrainSpec | None = None,
) -> str:
    with db.session() as s:
        job_id = jobs.create_job(s, dataset_id=dataset_id, spec=spec or TrainSpec(max_steps=1)).id
    if status != "queued":
        with db.session() as s:
            assert crud.transition_job(s, id=job_id, from_statuses=["queued"], to_status=status)
    folder = jobs.job_dir(settings, job_id)
    (folder / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-1" / "optimizer.pt").write_bytes(b"x" * 64)
    (folder / "loss.png").write_bytes(b"png")
    return job_id


def write_adapter(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def write_merged(adapter_dir: Path) -> Path:
    merged = adapter_dir.parent / f"{adapter_dir.name}.merged"
    merged.mkdir()
    (merged / STAMP_FILE).write_text(json.dumps({"adapter_path": str(adapter_dir)}))
    (merged / "model.safetensors").write_bytes(b"base weights")
    return merged


def register(db: Database, name: str, path: Path, *, job_id: str | None = None) -> None:
    with db.session() as s:
        crud.create_adapter(s, name=name, base_model="m", path=str(path), job_id=job_id, rank=8)


def make_evaluation(
    db: Database, dataset_id: str, *, adapter: str = "base", job_id: str | None = None
) -> str:
    with db.session() as s:
        return evaluation_store.create_evaluation(
            s,
            adapter=adapter,
            dataset_id=dataset_id,
            split="validation",
            max_samples=1,
            max_meeting_chars=1000,
            seed=0,
            selection={},
            training_job_id=job_id,
        ).id


def set_evaluation_status(db: Database, evaluation_id: str, status: str) -> None:
    with db.session() as s:
        assert evaluation_store.transition_evaluation(
            s, id=evaluation_id, from_statuses=["queued"], to_status=status
        )


def age(path: Path, seconds: float) -> None:
    """Make ``path`` and everything in it look untouched for ``seconds``."""
    stamp = time.time() - seconds
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(folder, name), (stamp, stamp))
    os.utime(path, (stamp, stamp))


# --- datasets ----------------------------------------------------------------------------------


def test_dataset_in_use_is_refused_and_kept(db: Database, settings: Settings) -> None:
    dataset_id = make_dataset(db, settings)
    job_id = make_job(db, settings, dataset_id, "running")
    with pytest.raises(Conflict) as refused:
        retention.delete_dataset(db, settings, id=dataset_id)
    assert refused.value.detail == {"jobs": [job_id], "evaluations": []}
    assert (settings.datasets_dir / dataset_id).is_dir()

    # A queued evaluation needs it too.
    other = make_dataset(db, settings)
    evaluation_id = make_evaluation(db, other)
    with pytest.raises(Conflict) as refused:
        retention.delete_dataset(db, settings, id=other)
    assert refused.value.detail == {"jobs": [], "evaluations": [evaluation_id]}


def test_dataset_used_by_ended_jobs_is_deleted_and_the_history_stays(
    db: Database, settings: Settings
) -> None:
    dataset_id = make_dataset(db, settings)
    job_id = make_job(db, settings, dataset_id, "failed")
    evaluation_id = make_evaluation(db, dataset_id)
    set_evaluation_status(db, evaluation_id, "succeeded")

    retention.delete_dataset(db, settings, id=dataset_id)

    assert not (settings.datasets_dir / dataset_id).exists()
    assert not list(settings.datasets_dir.iterdir())  # no .deleted-* left either
    with db.session() as s:
        assert crud.get_dataset(s, id=dataset_id) is None
        assert dataset_id not in [d.id for d in crud.list_datasets(s)[0]]
        job = crud.get_job(s, id=job_id)
        assert job is not None and job.dataset_id == dataset_id  # what it was trained on
        assert s.get(Evaluation, evaluation_id) is not None
    with pytest.raises(NotFound):  # deleted once
        retention.delete_dataset(db, settings, id=dataset_id)
    with db.session() as s, pytest.raises(NotFound):  # and no new job can use it
        jobs.create_job(s, dataset_id=dataset_id, spec=TrainSpec(max_steps=1))


def test_unreferenced_dataset_row_goes(sqlite_db: Database, settings: Settings) -> None:
    from ttalkkac.store.models import Dataset, DatasetDeletion

    dataset_id = make_dataset(sqlite_db, settings)
    retention.delete_dataset(sqlite_db, settings, id=dataset_id)
    with sqlite_db.session() as s:
        assert s.get(Dataset, dataset_id) is None
        assert s.get(DatasetDeletion, dataset_id) is None


# --- jobs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["queued", "running", "cancelling"])
def test_a_job_that_has_not_ended_is_not_deleted(
    sqlite_db: Database, settings: Settings, status: str
) -> None:
    job_id = make_job(sqlite_db, settings, make_dataset(sqlite_db, settings), "queued")
    if status == "cancelling":
        with sqlite_db.session() as s:
            crud.transition_job(s, id=job_id, from_statuses=["queued"], to_status="running")
    if status != "queued":
        with sqlite_db.session() as s:
            crud.transition_job(s, id=job_id, from_statuses=["queued", "running"], to_status=status)
    with pytest.raises(Conflict) as refused:
        retention.delete_job(sqlite_db, settings, id=job_id)
    assert refused.value.detail == {"status": status}
    assert (jobs.job_dir(settings, job_id) / "checkpoints").is_dir()


def test_job_with_a_registered_adapter_waits_for_the_adapter(
    db: Database, settings: Settings
) -> None:
    dataset_id = make_dataset(db, settings)
    job_id = make_job(db, settings, dataset_id, "succeeded")
    folder = write_adapter(jobs.job_dir(settings, job_id))
    merged = write_merged(folder)
    name = f"adapter-{job_id}"
    register(db, name, folder, job_id=job_id)
    evaluation_id = make_evaluation(db, dataset_id, adapter=name, job_id=job_id)
    set_evaluation_status(db, evaluation_id, "succeeded")

    with pytest.raises(Conflict) as refused:
        retention.delete_job(db, settings, id=job_id)
    assert refused.value.detail == {"adapter": name}
    assert f"DELETE /adapters/{name}" in refused.value.message

    # The adapter first: its merged copy goes, its folder is the job's and stays.
    retention.delete_adapter(db, settings, name=name)
    assert not merged.exists() and not merge_lock_path(merged).exists()
    assert (folder / "adapter_model.safetensors").is_file()

    retention.delete_job(db, settings, id=job_id)
    assert not folder.exists()
    assert not [p for p in settings.jobs_dir.iterdir()]
    with db.session() as s:
        assert crud.get_job(s, id=job_id) is None
        assert crud.list_events(s, job_id=job_id) == []
        assert s.query(JobEvent).filter(JobEvent.job_id == job_id).count() == 0
        evaluation = s.get(Evaluation, evaluation_id)
        # The evaluation is history: kept, no longer linked to the deleted job.
        assert evaluation is not None and evaluation.training_job_id is None
        assert evaluation.adapter == name
    with pytest.raises(NotFound):
        retention.delete_job(db, settings, id=job_id)


def test_a_hand_registered_adapter_in_a_job_folder_protects_it(
    sqlite_db: Database, settings: Settings
) -> None:
    job_id = make_job(sqlite_db, settings, make_dataset(sqlite_db, settings), "cancelled")
    register(sqlite_db, "by-hand", write_adapter(jobs.job_dir(settings, job_id)))  # no job_id
    with pytest.raises(Conflict):
        retention.delete_job(sqlite_db, settings, id=job_id)


# --- adapters ----------------------------------------------------------------------------------


def test_active_adapter_and_one_being_evaluated_are_refused(
    sqlite_db: Database, settings: Settings
) -> None:
    folder = write_adapter(settings.models_dir / "adapters" / "a")
    register(sqlite_db, "a", folder)
    with sqlite_db.session() as s:
        crud.activate_adapter(s, name="a")
    with pytest.raises(Conflict) as refused:
        retention.delete_adapter(sqlite_db, settings, name="a")
    assert "DELETE /adapters/active" in refused.value.message
    with sqlite_db.session() as s:
        crud.deactivate_adapters(s)
    evaluation_id = make_evaluation(sqlite_db, make_dataset(sqlite_db, settings), adapter="a")
    with pytest.raises(Conflict) as refused:
        retention.delete_adapter(sqlite_db, settings, name="a")
    assert refused.value.detail == {"evaluations": [evaluation_id]}
    assert folder.is_dir()
    with pytest.raises(InvalidInput):
        retention.delete_adapter(sqlite_db, settings, name="base")
    with pytest.raises(NotFound):
        retention.delete_adapter(sqlite_db, settings, name="nope")


def test_adapter_outside_a_job_folder_is_removed_with_its_merged_copy(
    sqlite_db: Database, settings: Settings
) -> None:
    folder = write_adapter(settings.models_dir / "adapters" / "copied")
    merged = write_merged(folder)
    register(sqlite_db, "copied", folder)
    retention.delete_adapter(sqlite_db, settings, name="copied")
    assert not folder.exists() and not merged.exists()
    assert list((settings.models_dir / "adapters").iterdir()) == []
    with sqlite_db.session() as s:
        assert crud.get_adapter(s, name="copied") is None


def test_files_outside_data_dir_are_never_touched(
    sqlite_db: Database, settings: Settings, tmp_path: Path
) -> None:
    outside = write_adapter(tmp_path / "elsewhere" / "adapter")
    outside_merged = write_merged(outside)
    register(sqlite_db, "outside", outside)
    # A link inside DATA_DIR to a folder outside it: removing it must not reach the target.
    link = settings.models_dir / "linked"
    link.symlink_to(outside, target_is_directory=True)
    register(sqlite_db, "linked", link)
    # A row naming DATA_DIR itself (a hand-made registration): never removed.
    (settings.data_dir / "adapter_config.json").write_text("{}")
    register(sqlite_db, "root", settings.data_dir)

    for name in ("outside", "linked", "root"):
        retention.delete_adapter(sqlite_db, settings, name=name)
    assert (outside / "adapter_model.safetensors").is_file() and outside_merged.is_dir()
    assert link.is_symlink() and settings.datasets_dir.is_dir() and settings.jobs_dir.is_dir()
    with sqlite_db.session() as s:
        assert crud.list_adapters(s) == []


# --- sweeps ------------------------------------------------------------------------------------


def test_checkpoints_of_ended_jobs_are_removed(sqlite_db: Database, settings: Settings) -> None:
    dataset_id = make_dataset(sqlite_db, settings)
    ended = {s: make_job(sqlite_db, settings, dataset_id, s) for s in ("failed", "cancelled")}
    running = make_job(sqlite_db, settings, dataset_id, "running")
    stranger = settings.jobs_dir / "job_not_in_this_store" / "checkpoints"
    stranger.mkdir(parents=True)

    removed = retention.remove_ended_checkpoints(sqlite_db, settings)

    assert sorted(removed) == sorted(
        jobs.job_dir(settings, j) / "checkpoints" for j in ended.values()
    )
    for job_id in ended.values():
        assert not (jobs.job_dir(settings, job_id) / "checkpoints").exists()
        assert (jobs.job_dir(settings, job_id) / "loss.png").is_file()  # the rest stays
    assert (jobs.job_dir(settings, running) / "checkpoints" / "checkpoint-1").is_dir()
    assert stranger.is_dir()


def test_checkpoints_a_job_asked_to_keep_are_kept_after_it_ends(
    sqlite_db: Database, settings: Settings
) -> None:
    dataset_id = make_dataset(sqlite_db, settings)
    kept = TrainSpec(max_steps=1, keep_checkpoints=True)
    asked = [make_job(sqlite_db, settings, dataset_id, s, kept) for s in ("succeeded", "failed")]
    removed = retention.remove_ended_checkpoints(sqlite_db, settings)
    assert removed == []
    for job_id in asked:
        assert (jobs.job_dir(settings, job_id) / "checkpoints" / "checkpoint-1").is_dir()


def test_checkpoint_policy_keep(sqlite_db: Database, settings: Settings) -> None:
    keep = settings.model_copy(update={"checkpoint_retention": "keep"})
    job_id = make_job(sqlite_db, settings, make_dataset(sqlite_db, settings), "failed")
    assert retention.remove_ended_checkpoints(sqlite_db, keep) == []
    assert (jobs.job_dir(settings, job_id) / "checkpoints").is_dir()


def test_unused_merged_copies_are_removed_but_not_the_active_or_a_locked_one(
    sqlite_db: Database, settings: Settings
) -> None:
    folders = {n: write_adapter(settings.models_dir / "adapters" / n) for n in "abc"}
    merged = {n: write_merged(f) for n, f in folders.items()}
    for name, folder in folders.items():
        register(sqlite_db, name, folder)
    with sqlite_db.session() as s:
        crud.activate_adapter(s, name="a")
    # A copy of a deleted adapter's folder (only its merged copy is left) goes too.
    gone = write_merged(settings.jobs_dir / "job_gone")

    with file_lock(merge_lock_path(merged["c"])):  # "c" is being merged by another process
        removed = retention.remove_unused_merged(sqlite_db, settings)

    assert sorted(removed) == sorted([merged["b"], gone])
    assert merged["a"].is_dir() and merged["c"].is_dir()
    assert all(f.is_dir() for f in folders.values())  # adapters themselves stay
    keep = settings.model_copy(update={"merged_retention": "keep"})
    assert retention.remove_unused_merged(sqlite_db, keep) == []


def test_old_leftovers_are_swept_young_ones_and_user_data_stay(
    sqlite_db: Database, settings: Settings
) -> None:
    old_upload = settings.datasets_dir / ".incoming-ds_old"
    (old_upload / "files").mkdir(parents=True)
    (old_upload / "upload.bin").write_bytes(b"zip")
    age(old_upload, 3600)
    # Old folder, but a file inside still being written: a live upload on another replica.
    live_upload = settings.datasets_dir / ".incoming-ds_live"
    live_upload.mkdir()
    (live_upload / "upload.bin").write_bytes(b"growing")
    age(live_upload, 3600)
    with (live_upload / "upload.bin").open("ab") as growing:  # the file changes, not the folder
        growing.write(b" more")
    assert live_upload.stat().st_mtime < time.time() - 3000
    merge_tmp = settings.jobs_dir / ".job_x.merged.tmp-1a2b3c4d"
    merge_tmp.mkdir()
    age(merge_tmp, 3600)
    trash = settings.jobs_dir / ".deleted-job_y-0011aabb"
    trash.mkdir()
    age(trash, 3600)
    demo_build = settings.models_dir / ".SmolLM2-135M-Instruct.build-k2j_x9q1"
    demo_build.mkdir()
    age(demo_build, 3600)
    attempt_build = settings.jobs_dir / ".job_x.build-0a1b2c3d4e5f"  # training.publish staging
    (attempt_build / "adapter_model.safetensors").parent.mkdir()
    (attempt_build / "adapter_model.safetensors").write_bytes(b"half")
    age(attempt_build, 3600)
    young = settings.jobs_dir / ".job_z.merged.tmp-99999999"
    young.mkdir()
    lock = settings.jobs_dir / ".job_x.merged.lock"
    lock.touch()
    age(lock, 3600)
    dataset_id = make_dataset(sqlite_db, settings)
    inside_dataset = settings.datasets_dir / dataset_id / "files" / ".incoming-mine"
    inside_dataset.mkdir()
    age(inside_dataset, 3600)

    removed = retention.remove_leftovers(sqlite_db, settings)

    assert sorted(removed) == sorted([old_upload, merge_tmp, trash, demo_build, attempt_build])
    for kept in (live_upload, young, lock, inside_dataset):
        assert kept.exists(), kept


def test_sweep_at_start_runs_every_part(sqlite_db: Database, settings: Settings) -> None:
    job_id = make_job(sqlite_db, settings, make_dataset(sqlite_db, settings), "failed")
    leftover = settings.datasets_dir / ".incoming-ds_crashed"
    leftover.mkdir()
    age(leftover, 3600)
    report = retention.sweep_at_start(sqlite_db, settings)
    assert report.checkpoints == [jobs.job_dir(settings, job_id) / "checkpoints"]
    assert report.leftovers == [leftover]
    assert report.removed == 2
    assert JobStatus.failed.terminal


def test_removal_stays_inside_its_root(settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    assert not retention._remove(outside, settings.data_dir)
    assert not retention._remove(settings.jobs_dir, settings.jobs_dir)
    assert not retention._remove(settings.jobs_dir / ".." / ".." / "outside", settings.jobs_dir)
    link = settings.jobs_dir / "job_link"
    link.symlink_to(outside, target_is_directory=True)
    assert retention._remove(link, settings.jobs_dir)  # the link goes, not what it points to
    assert outside.is_dir() and not link.exists()
