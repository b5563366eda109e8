"""Submitting evaluations, queuing them after training, and the activation gate (real store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.training_data import tiny_gold_zip
from ttalkkac.adapters import BASE
from ttalkkac.datasets import ingest_upload
from ttalkkac.errors import Conflict, NotFound
from ttalkkac.evaluation import commands
from ttalkkac.evaluation.examples import EvalSplit
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store import evaluations as store
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus, utcnow
from ttalkkac.training.spec import TrainSpec


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Database, str]]:
    db = Database(settings.resolved_database_url)
    db.create_all()
    with db.session() as session, tiny_gold_zip(tmp_path, n=6).open("rb") as stream:
        dataset_id = ingest_upload(settings, session, stream=stream, filename="g.zip").id
    with db.session() as session:
        for name in ("alpha", "beta"):
            crud.create_adapter(session, name=name, base_model="m", path=f"/x/{name}", rank=8)
    yield settings, db, dataset_id
    db.dispose()


def finished(db: Database, dataset_id: str, adapter: str, field_chrf: float, **params) -> str:
    """An evaluation as the runner leaves it: succeeded with a summary."""
    with db.session() as session:
        evaluation = commands.create_evaluation(
            session,
            adapter=adapter,
            dataset_id=dataset_id,
            split=params.get("split", EvalSplit.validation),
            max_samples=params.get("max_samples", 24),
            max_meeting_chars=4000,
            seed=0,
        )
        store.transition_evaluation(
            session,
            id=evaluation.id,
            from_statuses=[JobStatus.queued],
            to_status=JobStatus.succeeded,
            summary={"field_chrf": field_chrf, "valid_rate": 1.0, "grounding": 0.5},
            finished_at=utcnow(),
        )
        return evaluation.id


def test_unknown_dataset_or_adapter_is_not_found(env) -> None:
    _, db, dataset_id = env
    with db.session() as session:
        with pytest.raises(NotFound, match="no dataset"):
            commands.create_evaluation(
                session,
                adapter=BASE,
                dataset_id="ds_nope",
                split=EvalSplit.all,
                max_samples=1,
                max_meeting_chars=1000,
                seed=0,
            )
        with pytest.raises(NotFound, match="no adapter named 'gamma'"):
            commands.create_evaluation(
                session,
                adapter="gamma",
                dataset_id=dataset_id,
                split=EvalSplit.all,
                max_samples=1,
                max_meeting_chars=1000,
                seed=0,
            )


def test_gate_refuses_an_adapter_below_the_base_with_both_scores(env) -> None:
    _, db, dataset_id = env
    finished(db, dataset_id, BASE, 30.0)
    finished(db, dataset_id, "alpha", 25.5)
    with db.session() as session, pytest.raises(Conflict) as caught:
        commands.check_better_than_active(session, name="alpha")
    assert "25.50" in caught.value.message and "30.00" in caught.value.message
    assert caught.value.detail["active"]["name"] == BASE


def test_gate_compares_with_the_active_adapter_on_the_same_data_only(env) -> None:
    _, db, dataset_id = env
    finished(db, dataset_id, "alpha", 40.0)
    finished(db, dataset_id, "beta", 35.0, max_samples=10)  # other data: not comparable
    with db.session() as session:
        crud.activate_adapter(session, name="alpha")
    with (
        db.session() as session,
        pytest.raises(Conflict, match="no finished evaluation on the same"),
    ):
        commands.check_better_than_active(session, name="beta")
    finished(db, dataset_id, "beta", 41.0)  # same data as alpha's, and better
    with db.session() as session:
        commands.check_better_than_active(session, name="beta")  # passes
    finished(db, dataset_id, "beta", 39.0)  # the latest one counts
    with db.session() as session, pytest.raises(Conflict, match=r"39\.00.*40\.00"):
        commands.check_better_than_active(session, name="beta")


def test_gate_needs_an_evaluation_of_the_candidate(env) -> None:
    _, db, _ = env
    with db.session() as session, pytest.raises(Conflict, match="has no finished evaluation"):
        commands.check_better_than_active(session, name="alpha")


def test_after_training_queues_adapter_and_base_once_on_the_jobs_split(env) -> None:
    settings, db, dataset_id = env
    spec = TrainSpec(val_fraction=0.2, seed=7, min_quality=0)
    with db.session() as session:
        job = crud.create_job(
            session,
            dataset_id=dataset_id,
            base_model="m",
            hyperparameters=spec.model_dump(mode="json"),
        )
        first = commands.evaluate_after_training(session, settings, job, "alpha")
        second = commands.evaluate_after_training(session, settings, job, "beta")
    assert [e.adapter for e in first] == ["alpha", BASE]
    assert [e.adapter for e in second] == ["beta"]  # the base is evaluated once on that data
    evaluation = first[0]
    assert evaluation.split == "validation" and evaluation.training_job_id == job.id
    assert evaluation.max_samples == settings.eval_after_training_samples
    assert evaluation.selection["val_fraction"] == 0.2
    assert evaluation.selection["split_seed"] == 7


def test_after_training_can_be_switched_off(env) -> None:
    settings, db, dataset_id = env
    off = settings.model_copy(update={"eval_after_training": False})
    with db.session() as session:
        job = crud.create_job(
            session,
            dataset_id=dataset_id,
            base_model="m",
            hyperparameters=TrainSpec().model_dump(mode="json"),
        )
        assert commands.evaluate_after_training(session, off, job, "alpha") == []


def test_after_training_reads_a_job_stored_with_the_removed_generation_check_settings(
    env,
) -> None:
    settings, db, dataset_id = env
    stored = TrainSpec(val_fraction=0.3).model_dump(mode="json")
    stored |= {"generation_check_samples": 3, "generation_max_new_tokens": 1536}
    with db.session() as session:
        job = crud.create_job(
            session, dataset_id=dataset_id, base_model="m", hyperparameters=stored
        )
        created = commands.evaluate_after_training(session, settings, job, "alpha")
    assert [e.adapter for e in created] == ["alpha", BASE]
    assert created[0].selection["val_fraction"] == 0.3
