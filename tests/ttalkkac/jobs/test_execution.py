"""Finishing a run: one transaction, committed only while this process owns a running job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.utils.job_rows import get, messages, new_job, set_running
from ttalkkac import jobs
from ttalkkac.jobs import execution
from ttalkkac.jobs.claim import RunOutcome
from ttalkkac.jobs.liveness import is_requeued
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database

RESULTS: dict[str, Any] = {"hyperparameters": {"lora": {"r": 4}}, "train_loss": 1.0}


def _finish(db: Database, settings: Settings, job_id: str, me: str, tmp_path: Path) -> RunOutcome:
    job = get(db, job_id)
    reporter = jobs.JobReporter(db, job_id, worker=me)
    return execution._finish(db, settings, job, reporter, tmp_path, "base-model", RESULTS)


def _adapters(db: Database) -> list[str]:
    with db.session() as s:
        return [a.name for a in crud.list_adapters(s)]


def test_finishing_registers_the_adapter_and_succeeds(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    job_id = new_job(db)
    set_running(db, job_id, "host:1")
    assert _finish(db, settings, job_id, "host:1", tmp_path) is RunOutcome.succeeded
    job = get(db, job_id)
    assert job.status == "succeeded" and _adapters(db) == [job.adapter_name]


def test_a_superseded_run_neither_registers_nor_ends_the_job(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    job_id = new_job(db)
    set_running(db, job_id, "host:2", attempts=2)  # a later attempt owns the job now
    with pytest.raises(execution.Superseded):
        _finish(db, settings, job_id, "host:1", tmp_path)
    job = get(db, job_id)
    assert (job.status, job.worker) == ("running", "host:2") and _adapters(db) == []


def test_a_cancel_landing_during_finishing_ends_the_job_cancelled_at_once(
    db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite ignores FOR UPDATE: the API's cancel can land between the read and the CAS."""
    job_id = new_job(db)
    set_running(db, job_id, "host:1")
    register = execution._register

    def cancel_then_register(session: Any, *args: Any) -> str:
        with db.session() as other:  # the API, in its own transaction
            jobs.cancel_job(other, id=job_id)
        return register(session, *args)

    monkeypatch.setattr(execution, "_register", cancel_then_register)
    assert _finish(db, settings, job_id, "host:1", tmp_path) is RunOutcome.cancelled
    assert get(db, job_id).status == "cancelled" and _adapters(db) == []
    assert "cancelled as training finished; not registered" in messages(db, job_id)


def test_an_error_while_finishing_fails_the_job_instead_of_leaving_it_running(
    db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = new_job(db)
    set_running(db, job_id, "host:1")
    job = get(db, job_id)
    reporter = jobs.JobReporter(db, job_id, worker="host:1")
    monkeypatch.setattr("ttalkkac.datasets.load_training_data", _training_data)
    monkeypatch.setattr("ttalkkac.training.trainer.train_lora", lambda **kw: RESULTS)
    with db.session() as s:  # another job's adapter holds the name this one would register
        other = crud.create_dataset(s, name="o", kind="gold", path="/nowhere")
        taken = jobs.create_job(s, dataset_id=other.id, spec=_spec())
        crud.create_adapter(
            s,
            name=jobs.adapter_name_for(job, "base-model"),
            base_model="base-model",
            path="/x",
            job_id=taken.id,
            rank=4,
        )
    monkeypatch.setattr(execution, "_resolve_base_model", lambda job, settings: "base-model")
    outcome = execution._execute(db, settings, job, reporter, tmp_path)
    assert outcome is RunOutcome.failed
    failed = get(db, job_id)
    assert (failed.status, failed.error_type) == ("failed", "Conflict")
    assert "taken by another job" in failed.error_message


def _spec() -> Any:
    from ttalkkac.training.spec import TrainSpec

    return TrainSpec(max_steps=1)


def _training_data(dataset: Any, spec: Any) -> Any:
    from ttalkkac.training.trainer import TrainData

    return TrainData(train=[], val=[], stats={})


def _store_down(times: int, then: Any) -> Any:
    """``then``, after raising the error a dropped connection raises, ``times`` times."""
    from sqlalchemy.exc import OperationalError

    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return then(*args, **kwargs)

    return flaky


def test_finishing_rides_out_a_store_outage(
    db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ttalkkac.jobs import retry

    monkeypatch.setattr(retry, "STORE_RETRY_DELAYS_S", (0, 0, 0))
    job_id = new_job(db)
    set_running(db, job_id, "host:1")
    monkeypatch.setattr(execution, "_register", _store_down(2, execution._register))
    assert _finish(db, settings, job_id, "host:1", tmp_path) is RunOutcome.succeeded
    job = get(db, job_id)
    assert job.status == "succeeded" and _adapters(db) == [job.adapter_name]


def test_a_store_outage_during_training_hands_the_job_back_unfailed(
    db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Longer than the retries wait: the job is re-queued without using an attempt."""
    from ttalkkac.jobs import retry

    monkeypatch.setattr(retry, "STORE_RETRY_DELAYS_S", (0, 0))
    job_id = new_job(db)
    set_running(db, job_id, "host:1")
    job = get(db, job_id)
    reporter = jobs.JobReporter(db, job_id, worker="host:1")
    monkeypatch.setattr("ttalkkac.datasets.load_training_data", _training_data)
    monkeypatch.setattr("ttalkkac.training.trainer.train_lora", _store_down(1, lambda **kw: None))
    monkeypatch.setattr(execution, "_resolve_base_model", lambda job, settings: "base-model")
    assert execution._execute(db, settings, job, reporter, tmp_path) is RunOutcome.handed_back
    handed = get(db, job_id)
    assert handed.status == "running" and handed.attempts == 0 and handed.error_type is None
    assert is_requeued(handed.worker)
    assert any("lost the store" in m for m in messages(db, job_id))
