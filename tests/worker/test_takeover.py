"""A worker frozen past the stale limit loses its job to another, and then writes nothing.

Two real workers share the queue, the database and ``DATA_DIR``. The process training a job is
stopped (SIGSTOP: a VM paused, a process swapped out, a network partition) past
``JOB_STALE_AFTER_S``; the other worker takes the job over and resumes it from its checkpoint.
When the frozen process is continued it finds the job owned by another process at its next
write and exits without registering or overwriting anything: the adapter is the survivor's.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.utils.job_api import TERMINAL, events, submit, wait_for
from tests.utils.training_data import tiny_gold_zip
from tests.utils.worker_process import WorkerProcess
from tests.worker.conftest import WorkerSetup, running_worker
from ttalkkac.training.report import RESULTS_FILE

pytestmark = pytest.mark.slow

STALE_AFTER_S = 5  # the least the setting takes


@pytest.fixture(scope="module")
def first_worker(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    worker_database: str,
    redis_prefix: str,
    run_id: str,
) -> Iterator[WorkerSetup]:
    with running_worker(
        tmp_path_factory.mktemp("takeover-data"),
        database_url=worker_database,
        redis_prefix=redis_prefix,
        queue=f"test-training-{run_id}-takeover",
        base_model=tiny_model_dir,
        job_heartbeat_s="1",
        job_stale_after_s=str(STALE_AFTER_S),
        job_sweep_interval_s="1",
        eval_after_training="false",
    ) as setup:
        yield setup


@pytest.fixture(scope="module")
def client(first_worker: WorkerSetup) -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app(first_worker.settings)) as c:
        yield c


def owner(setup: WorkerSetup, job_id: str) -> str:
    """The job's ``worker`` column (``host:pid``), which the API does not show."""
    from ttalkkac.store import crud
    from ttalkkac.store.db import Database

    db = Database(setup.settings.resolved_database_url)
    try:
        with db.session() as session:
            job = crud.get_job(session, id=job_id)
            assert job is not None
            return job.worker or ""
    finally:
        db.dispose()


def pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_a_frozen_worker_is_taken_over_and_the_survivor_writes_the_adapter(
    client: TestClient, first_worker: WorkerSetup, tmp_path: Path
) -> None:
    archive = tiny_gold_zip(tmp_path / "zip", n=6, score=8.0)
    response = client.post("/datasets", files={"file": ("gold.zip", archive.read_bytes())})
    assert response.status_code == 201, response.text
    # Started first, so that the freeze below follows the first checkpoint closely; whichever
    # worker takes the job is the one frozen, the other the survivor.
    second = WorkerProcess(first_worker.env, first_worker.log.with_name("second.log")).start()
    try:
        job_id = submit(
            client, response.json()["id"], max_steps=48, eval_steps=3, keep_checkpoints=True
        )["id"]
        wait_for(
            client,
            job_id,
            lambda j: any(
                e["message"].startswith("checkpoint saved") for e in events(client, job_id)
            ),
            what="a checkpoint",
            log=first_worker.log,
        )
        frozen = int(owner(first_worker, job_id).rsplit(":", 1)[1])
        os.kill(frozen, signal.SIGSTOP)
        try:
            taken = wait_for(
                client,
                job_id,
                lambda j: (
                    j["attempts"] == 2 and not owner(first_worker, job_id).endswith(f":{frozen}")
                ),
                timeout_s=STALE_AFTER_S + 60,
                what="the takeover",
                log=first_worker.log,
            )
            assert taken["status"] == "running"
            wait_for(
                client,
                job_id,
                lambda j: any(
                    "resuming from checkpoint-" in e["message"] for e in events(client, job_id)
                ),
                what="the survivor's resume",
                log=first_worker.log,
            )
        finally:
            os.kill(frozen, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while not pid_gone(frozen):
            assert time.monotonic() < deadline, "the continued process kept running its lost job"
            time.sleep(0.2)
        done = wait_for(
            client, job_id, lambda j: j["status"] in TERMINAL, what="the end", log=first_worker.log
        )
    finally:
        second.stop()

    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    messages = [e["message"] for e in events(client, job_id)]
    assert sum(m.startswith("succeeded") for m in messages) == 1, messages
    # The frozen process said why it stopped, in its worker's log, not in the job's events.
    logs = first_worker.log.read_text(errors="replace") + second.log_text()
    assert f":{frozen}): stopping" in logs
    results = json.loads((first_worker.settings.jobs_dir / job_id / RESULTS_FILE).read_text())
    assert results["resumed_from"], "the adapter is the first attempt's, not the survivor's"
    assert results["global_step"] == 48
    # Each delivery checkpointed into its own folder. The frozen process may have been stopped
    # while saving the checkpoint after the one the survivor resumed from; continued, it
    # finishes that save (seen here: checkpoint-6, in its own folder) and nothing more.
    resumed = int(results["resumed_from"].removeprefix("checkpoint-"))
    root = first_worker.settings.jobs_dir / job_id / "checkpoints"
    runs = {run.name.split("-")[1]: run for run in root.iterdir()}
    assert sorted(runs) == ["1", "2"], sorted(root.iterdir())
    steps = {
        attempt: sorted(int(c.name.removeprefix("checkpoint-")) for c in run.iterdir())
        for attempt, run in runs.items()
    }
    assert steps["1"] and max(steps["1"]) <= resumed + 3 and resumed < min(steps["2"]), steps
    assert max(steps["2"]) == 48
