"""The evaluation runner on real parts: the store (SQLite), the transformers engine on the tiny
model, the product's PlanGenerator. What a user relies on: an evaluation ends with every row and
its figures; one interrupted midway resumes without losing or doubling finished rows; a cancel
stops it and keeps what finished."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.training_data import tiny_gold_zip
from ttalkkac.adapters import BASE
from ttalkkac.datasets import ingest_upload
from ttalkkac.evaluation import commands
from ttalkkac.evaluation.examples import EvalSplit
from ttalkkac.evaluation.runner import EvalOutcome, EvaluationRunner
from ttalkkac.inference.engines import EngineHost
from ttalkkac.inference.hf_engine import TransformersEngine
from ttalkkac.inference.service import PlanGenerator
from ttalkkac.plan import ProjectPlan
from ttalkkac.settings import Settings
from ttalkkac.store import evaluations as store
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path, terse_model_dir: Path) -> Iterator[tuple[Settings, Database, str]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        warmup=False,
        serving_enabled=False,
        job_heartbeat_s=1,
        job_stale_after_s=5,
        eval_poll_s=0.1,
        eval_concurrency=2,
    )
    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    db.create_all()
    with db.session() as session, tiny_gold_zip(tmp_path, n=6).open("rb") as stream:
        dataset = ingest_upload(settings, session, stream=stream, filename="gold.zip")
    yield settings, db, dataset.id
    db.dispose()


@pytest.fixture
def generator(terse_model_dir: Path) -> Iterator[PlanGenerator]:
    engine = TransformersEngine(str(terse_model_dir), max_model_len=2048, dtype="float32")
    gen = PlanGenerator(EngineHost(engine, warmup=False), default_max_tokens=256)
    asyncio.run(gen.start())
    yield gen
    asyncio.run(gen.stop())


def queue(db: Database, dataset_id: str, *, samples: int = 4) -> str:
    with db.session() as session:
        return commands.create_evaluation(
            session,
            adapter=BASE,
            dataset_id=dataset_id,
            split=EvalSplit.all,
            max_samples=samples,
            max_meeting_chars=2000,
            seed=0,
        ).id


def rows_of(db: Database, evaluation_id: str) -> list:
    with db.session() as session:
        return store.list_rows(session, evaluation_id=evaluation_id)


def evaluation(db: Database, evaluation_id: str):
    with db.session() as session:
        return store.get_evaluation(session, id=evaluation_id)


def test_evaluation_runs_every_example_and_reports_its_figures(env, generator) -> None:
    settings, db, dataset_id = env
    evaluation_id = queue(db, dataset_id)
    runner = EvaluationRunner(db, settings, generator)

    async def go() -> EvalOutcome:
        claimed = await asyncio.to_thread(runner.claim_next)
        assert claimed is not None and claimed.id == evaluation_id
        assert await asyncio.to_thread(runner.claim_next) is None  # nothing else to do
        return await runner.run(claimed)

    assert asyncio.run(go()) is EvalOutcome.succeeded
    row = evaluation(db, evaluation_id)
    assert row.status == JobStatus.succeeded and row.done == row.total == 4
    rows = rows_of(db, evaluation_id)
    assert [r.index for r in rows] == [0, 1, 2, 3]
    for r in rows:
        ProjectPlan.model_validate(r.result["plan"])  # constrained decoding, validated
        assert r.result["validity"] in ("first_try", "retried", "compact")
        assert 0 <= r.result["score"]["field_chrf"] <= 100
        assert r.result["latency_ms"] > 0
    summary = row.summary
    assert summary["n"] == 4 and summary["valid_rate"] == 1.0
    assert 0 <= summary["field_chrf"] < 100  # a random tiny model is not the gold
    # Every tiny gold record has the same plan: the "other meeting" floor is that plan itself.
    assert summary["generic_floor"]["field_chrf"] == 100.0


def test_a_run_interrupted_midway_resumes_without_losing_or_doubling_rows(env, generator) -> None:
    settings, db, dataset_id = env
    evaluation_id = queue(db, dataset_id, samples=6)
    # The first runner records a process that no longer exists (as after a kill -9 of the API).
    dead = EvaluationRunner(db, settings, generator, owner=f"{os.uname().nodename}:999999999")

    async def interrupted() -> None:
        claimed = await asyncio.to_thread(dead.claim_next)
        task = asyncio.create_task(dead.run(claimed))
        while len(await asyncio.to_thread(rows_of, db, evaluation_id)) < 2:
            await asyncio.sleep(0.05)
        task.cancel()  # the process dies: nothing is finished or cleaned up
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(interrupted())
    kept = {r.index: (r.id, r.result["plan"]) for r in rows_of(db, evaluation_id)}
    assert 2 <= len(kept) < 6
    assert evaluation(db, evaluation_id).status == JobStatus.running

    survivor = EvaluationRunner(db, settings, generator)

    async def resume() -> EvalOutcome:
        claimed = await asyncio.to_thread(survivor.claim_next)
        assert claimed is not None and claimed.attempts == 2
        return await survivor.run(claimed)

    assert asyncio.run(resume()) is EvalOutcome.succeeded
    rows = rows_of(db, evaluation_id)
    assert [r.index for r in rows] == list(range(6))  # none lost, none doubled
    for r in rows:
        if r.index in kept:  # finished rows are kept as they were
            assert (r.id, r.result["plan"]) == kept[r.index]
    final = evaluation(db, evaluation_id)
    assert final.status == JobStatus.succeeded and final.summary["n"] == 6
    assert final.owner == survivor.owner


def test_cancel_stops_a_running_evaluation_and_keeps_finished_rows(env, generator) -> None:
    settings, db, dataset_id = env
    evaluation_id = queue(db, dataset_id, samples=6)
    runner = EvaluationRunner(db, settings, generator)

    async def go() -> EvalOutcome:
        claimed = await asyncio.to_thread(runner.claim_next)
        task = asyncio.create_task(runner.run(claimed))
        while not await asyncio.to_thread(rows_of, db, evaluation_id):
            await asyncio.sleep(0.05)
        with db.session() as session:
            assert commands.cancel_evaluation(session, id=evaluation_id).status == "cancelling"
        return await task

    assert asyncio.run(go()) is EvalOutcome.cancelled
    row = evaluation(db, evaluation_id)
    assert row.status == JobStatus.cancelled and row.finished_at is not None
    assert 1 <= len(rows_of(db, evaluation_id)) < 6
    assert row.summary["n"] == len(rows_of(db, evaluation_id))  # what finished stays readable
    with db.session() as session, pytest.raises(Exception, match="already cancelled"):
        commands.cancel_evaluation(session, id=evaluation_id)


def test_a_queued_evaluation_is_cancelled_at_once(env) -> None:
    _, db, dataset_id = env
    evaluation_id = queue(db, dataset_id)
    with db.session() as session:
        assert commands.cancel_evaluation(session, id=evaluation_id).status == "cancelled"
