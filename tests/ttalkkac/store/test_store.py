"""The job store on SQLite and on the machine's PostgreSQL (a database made for this run)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from tests.utils.stores import BACKENDS, store_on
from ttalkkac.errors import Conflict, NotFound
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import Adapter, JobStatus


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from store_on(request, f"sqlite:///{tmp_path / 'store.db'}")


def _job(db: Database, **kw) -> str:
    with db.session() as s:
        ds = crud.create_dataset(s, name="d", kind="gold", path="/x", stats={"records": 3})
        job = crud.create_job(s, dataset_id=ds.id, base_model="m", hyperparameters={"a": 1}, **kw)
        return job.id


def test_job_roundtrip_with_aware_timestamps_and_json(db: Database) -> None:
    job_id = _job(db, suffix="s1")
    with db.session() as s:
        job = crud.get_job(s, id=job_id)
        assert job is not None
        assert job.status == JobStatus.queued
        assert job.hyperparameters == {"a": 1}
        assert job.created_at.tzinfo is not None
        assert job.created_at.utcoffset() == UTC.utcoffset(None)
        assert job.attempts == 0 and job.adapter_name is None


def test_status_compare_and_set_moves_once(db: Database) -> None:
    job_id = _job(db)
    with db.session() as s:
        assert crud.transition_job(s, id=job_id, from_statuses=["queued"], to_status="running")
    with db.session() as s:
        # A second claim of the same job loses: the status is no longer queued.
        assert not crud.transition_job(s, id=job_id, from_statuses=["queued"], to_status="running")
        assert crud.job_status(s, id=job_id) == "running"


def test_events_are_numbered_per_job_and_read_after_seq(db: Database) -> None:
    a, b = _job(db), _job(db)
    with db.session() as s:
        for i in range(3):
            crud.append_event(s, job_id=a, message=f"a{i}", data={"i": i})
        crud.append_event(s, job_id=b, message="b0", type="metrics", data={"loss": 1.5})
    with db.session() as s:
        events = crud.list_events(s, job_id=a)
        assert [(e.seq, e.message) for e in events] == [(1, "a0"), (2, "a1"), (3, "a2")]
        assert [e.seq for e in crud.list_events(s, job_id=a, after=2)] == [3]
        (only_b,) = crud.list_events(s, job_id=b)
        assert (only_b.seq, only_b.type, only_b.data) == (1, "metrics", {"loss": 1.5})


def test_jobs_listed_newest_first_with_count(db: Database) -> None:
    ids = [_job(db) for _ in range(3)]
    with db.session() as s:
        rows, count = crud.list_jobs(s, offset=0, limit=2)
        assert count == 3
        assert [r.id for r in rows] == ids[::-1][:2]
        rows, _ = crud.list_jobs(s, offset=2, limit=2)
        assert [r.id for r in rows] == [ids[0]]


def test_adapters_unique_names_and_one_active(db: Database) -> None:
    job_id = _job(db)
    with db.session() as s:
        crud.create_adapter(s, name="a1", base_model="m", path="/p1", job_id=job_id, rank=16)
        crud.create_adapter(s, name="a2", base_model="m", path="/p2", rank=8, metrics={"x": 1})
        with pytest.raises(Conflict):
            crud.create_adapter(s, name="a1", base_model="m", path="/p3", rank=4)
    with db.session() as s:
        assert crud.get_active_adapter(s) is None
        assert crud.activate_adapter(s, name="a1").is_active
    with db.session() as s:
        assert crud.activate_adapter(s, name="a2").name == "a2"
    with db.session() as s:
        assert crud.get_active_adapter(s).name == "a2"
        assert [a.name for a in crud.list_adapters(s) if a.is_active] == ["a2"]
        assert crud.get_adapter(s, name="a2").metrics == {"x": 1}
        assert crud.get_adapter(s, name="a1").job_id == job_id
        with pytest.raises(NotFound):
            crud.activate_adapter(s, name="nope")
    # The database itself refuses a second active adapter, whatever the code does.
    with pytest.raises(IntegrityError), db.session() as s:
        s.execute(update(Adapter).values(is_active=True))


def test_schema_creation_is_safe_when_processes_start_together(run_id: str) -> None:
    """API and worker create the schema at the same moment on a fresh PostgreSQL database."""
    import subprocess
    import sys

    from sqlalchemy import create_engine, inspect, text

    from tests.conftest import POSTGRES_ADMIN_URL

    name = f"test_ttalkkac_race_{run_id}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        code = f"from ttalkkac.store.db import Database; Database({url!r}).create_all()"
        procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
        engine = create_engine(url)
        assert {"datasets", "training_jobs", "adapters"} <= set(inspect(engine).get_table_names())
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_concurrent_activations_end_with_one_active_and_no_error(db: Database) -> None:
    """Activations racing each other (two API replicas, two people): the last one wins."""
    from concurrent.futures import ThreadPoolExecutor

    names = [f"r{i}" for i in range(4)]
    with db.session() as s:
        for name in names:
            crud.create_adapter(s, name=name, base_model="m", path=f"/{name}", rank=8)

    def activate(i: int) -> str:
        with db.session() as s:
            return crud.activate_adapter(s, name=names[i % len(names)]).name

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(activate, range(40)))  # raises if any activation failed
    assert len(done) == 40
    with db.session() as s:
        active = [a.name for a in crud.list_adapters(s) if a.is_active]
    assert len(active) == 1 and active[0] in names
