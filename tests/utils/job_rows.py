"""Job rows for the job service's tests: make one, put it in ``running`` under a worker, read it."""

from __future__ import annotations

from datetime import timedelta

from ttalkkac import jobs
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import TrainingJob, utcnow
from ttalkkac.training.spec import TrainSpec


def new_job(db: Database) -> str:
    with db.session() as s:
        ds = crud.create_dataset(s, name="d", kind="gold", path="/nowhere")
        return jobs.create_job(s, dataset_id=ds.id, spec=TrainSpec(max_steps=1)).id


def set_running(
    db: Database, job_id: str, worker: str, *, attempts: int = 1, age_s: int = 0
) -> None:
    with db.session() as s:
        assert crud.transition_job(
            s,
            id=job_id,
            from_statuses=["queued", "running"],
            to_status="running",
            worker=worker,
            attempts=attempts,
            heartbeat_at=utcnow() - timedelta(seconds=age_s),
        )


def get(db: Database, job_id: str) -> TrainingJob:
    with db.session() as s:
        job = crud.get_job(s, id=job_id)
        assert job is not None
        return job


def messages(db: Database, job_id: str) -> list[str]:
    with db.session() as s:
        return [e.message for e in crud.list_events(s, job_id=job_id)]
