"""A cancel racing a job's completion, many times on both databases: the job always ends.

The API's cancel and the worker's finishing run in two threads with their own sessions, let
go at once. Whichever wins, the job ends ``succeeded`` with its adapter or ``cancelled``
without one, never left ``cancelling`` (which on SQLite, where ``FOR UPDATE`` is ignored, used
to wait minutes for the sweep), and the cancel either took effect or was told 409.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.utils.job_rows import get, new_job, set_running
from tests.utils.stores import BACKENDS, store_on
from ttalkkac import jobs
from ttalkkac.errors import Conflict
from ttalkkac.jobs import execution
from ttalkkac.jobs.claim import RunOutcome
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database

ROUNDS = 15
RESULTS: dict[str, Any] = {"hyperparameters": {"lora": {"r": 4}}, "train_loss": 1.0}


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from store_on(request, f"sqlite:///{tmp_path / 'race.db'}")


def race_once(db: Database, settings: Settings, tmp_path: Path) -> tuple[str, Any, Any]:
    job_id = new_job(db)
    set_running(db, job_id, "host:1")
    job = get(db, job_id)
    reporter = jobs.JobReporter(db, job_id, worker="host:1")
    start = threading.Barrier(2)
    outcome: dict[str, Any] = {}

    def finish() -> None:
        start.wait()
        try:
            outcome["finish"] = execution._finish(
                db, settings, job, reporter, tmp_path, "base-model", RESULTS
            )
        except BaseException as exc:  # reported below, with the round
            outcome["finish"] = exc

    def cancel() -> None:
        start.wait()
        try:
            with db.session() as session:
                outcome["cancel"] = jobs.cancel_job(session, id=job_id).status
        except Conflict as exc:
            outcome["cancel"] = exc
        except BaseException as exc:
            outcome["cancel"] = exc

    threads = [threading.Thread(target=finish), threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return job_id, outcome["finish"], outcome["cancel"]


def test_cancel_racing_completion_always_ends_the_job(
    store: Database, settings: Settings, tmp_path: Path
) -> None:
    for round_ in range(ROUNDS):
        job_id, finished, cancelled = race_once(store, settings, tmp_path)
        assert isinstance(finished, RunOutcome), f"round {round_}: finishing raised {finished!r}"
        assert not isinstance(cancelled, Exception) or isinstance(cancelled, Conflict), (
            f"round {round_}: cancel raised {cancelled!r}"
        )
        job = get(store, job_id)
        with store.session() as s:
            adapter = crud.adapter_for_job(s, job_id=job_id)
        if job.status == "succeeded":
            assert finished is RunOutcome.succeeded and adapter is not None, round_
            # The cancel came too late and was told so; a cancel that took effect first would
            # have made the finishing's compare-and-set miss.
            assert isinstance(cancelled, Conflict), f"round {round_}: cancel gave {cancelled!r}"
        else:
            assert job.status == "cancelled", f"round {round_}: left {job.status}"
            assert finished is RunOutcome.cancelled and adapter is None, round_
            assert cancelled == "cancelling", round_
