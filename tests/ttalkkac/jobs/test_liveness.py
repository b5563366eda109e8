"""Heartbeats are written and judged by the store's clock, so a worker's skewed clock does not
make its job look dead, nor keep a dead one looking alive (PostgreSQL: workers on other hosts)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.utils.job_rows import get, new_job, set_running
from ttalkkac import jobs
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Base, Database
from ttalkkac.store.models import utcnow

OTHER_HOST = "gpu-box-2:4242"  # another host's worker: only its heartbeat says it is alive


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    database.create_all()
    yield database
    Base.metadata.drop_all(database.engine)
    database.dispose()


@pytest.fixture
def stale_after_5s(settings: Settings) -> Settings:
    return settings.model_copy(update={"job_stale_after_s": 5})


def beat_with_clock_off_by(
    db: Database, job_id: str, skew: timedelta, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One heartbeat from a worker whose clock is ``skew`` off the store's."""
    with monkeypatch.context() as m:
        m.setattr(crud, "utcnow", lambda: utcnow() + skew)
        with db.session() as session:
            assert crud.touch_job(session, id=job_id, worker=OTHER_HOST)


def test_a_worker_whose_clock_is_behind_keeps_its_job(
    pg: Database, stale_after_5s: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = new_job(pg)
    set_running(pg, job_id, OTHER_HOST)
    beat_with_clock_off_by(pg, job_id, -timedelta(hours=1), monkeypatch)
    sent: list[str] = []
    assert jobs.recover_orphaned_jobs(pg, stale_after_5s, enqueue=sent.append) == []
    assert sent == [] and get(pg, job_id).worker == OTHER_HOST


def test_a_worker_whose_clock_is_ahead_is_taken_over_once_silent(
    pg: Database, stale_after_5s: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = new_job(pg)
    set_running(pg, job_id, OTHER_HOST)
    beat_with_clock_off_by(pg, job_id, timedelta(hours=1), monkeypatch)
    sent: list[str] = []
    assert jobs.recover_orphaned_jobs(pg, stale_after_5s, enqueue=sent.append) == []
    time.sleep(stale_after_5s.job_stale_after_s + 0.5)  # silent past the limit, not an hour
    assert jobs.recover_orphaned_jobs(pg, stale_after_5s, enqueue=sent.append) == [job_id]
    assert sent == [job_id] and get(pg, job_id).worker.startswith("requeued:")
