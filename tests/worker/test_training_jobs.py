"""Jobs end to end: HTTP upload and submit, a real Celery worker, real training on a tiny model.

One worker (concurrency 1, a fresh child per job) serves the module; the tests run in order and
the crash test, which kills it, comes last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.utils.job_api import TERMINAL, events, submit, wait_for
from tests.utils.training_data import tiny_gold_zip
from tests.utils.worker_process import WorkerProcess
from tests.worker.conftest import WorkerSetup

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(worker_setup: WorkerSetup) -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app(worker_setup.settings)) as c:
        yield c


@pytest.fixture(scope="module")
def dataset_id(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = tiny_gold_zip(tmp_path_factory.mktemp("upload"), n=6, score=8.0)
    response = client.post("/datasets", files={"file": ("gold.zip", archive.read_bytes())})
    assert response.status_code == 201, response.text
    assert response.json()["records"] == 6
    return response.json()["id"]


def test_upload_train_and_register_adapter(
    client: TestClient, dataset_id: str, worker_setup: WorkerSetup, tiny_model_dir: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ttalkkac.store import crud
    from ttalkkac.store.db import Database

    job = submit(
        client,
        dataset_id,
        max_steps=8,
        eval_steps=4,
        lora={"r": 8, "alpha": 16},
    )
    done = wait_for(
        client, job["id"], lambda j: j["status"] in TERMINAL, what="success", log=worker_setup.log
    )
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1 and done["error"] is None
    assert done["progress"] == {"step": 8, "total_steps": 8, "epoch": done["progress"]["epoch"]}
    assert done["metrics"]["eval_loss"] is not None and done["metrics"]["best_eval_loss"] > 0
    assert done["base_model"] == str(tiny_model_dir)

    out = worker_setup.settings.jobs_dir / job["id"]
    for name in ("adapter_model.safetensors", "adapter_config.json", "training_results.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.bin"))
    plot = client.get(f"/train/{job['id']}/loss.png")
    assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"
    assert plot.content == (out / "loss.png").read_bytes()

    # Events: append-only, numbered 1..n in time order, the job's story from queue to adapter.
    story = events(client, job["id"])
    assert [e["seq"] for e in story] == list(range(1, len(story) + 1))
    stamps = [e["created_at"] for e in story]
    assert stamps == sorted(stamps)
    messages = [e["message"] for e in story]
    assert messages[0] == "job queued" and messages[1].startswith("job started (attempt 1 of 2)")
    assert messages[-2].startswith("succeeded: adapter")
    # The new adapter and the base model are queued for evaluation on the validation split.
    assert messages[-1].startswith(f"evaluation queued: {done['adapter_name']}, base on ")
    queued = client.get("/evaluations", params={"training_job_id": job["id"]}).json()
    assert sorted(e["adapter"] for e in queued["data"]) == sorted([done["adapter_name"], "base"])
    assert {e["split"] for e in queued["data"]} == {"validation"}
    assert any(e["type"] == "metrics" and "eval_loss" in e["data"] for e in story)
    assert any(m.startswith("checkpoint saved at step 4") for m in messages)
    # The evaluation above is the one validity figure: the job itself generates nothing.
    assert not [m for m in messages if "generat" in m.lower()]
    assert not [key for key in done["metrics"] if "generation" in key]
    assert events(client, job["id"], after=len(story) - 2) == story[-2:]

    db = Database(worker_setup.settings.resolved_database_url)
    with db.session() as session:
        adapter = crud.get_adapter(session, name=done["adapter_name"])
        assert adapter is not None
        assert (adapter.job_id, adapter.path, adapter.rank) == (job["id"], str(out), 8)
        assert adapter.base_model == str(tiny_model_dir)
        assert adapter.metrics["eval_loss"] == pytest.approx(done["metrics"]["eval_loss"])
    db.dispose()

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out)
    trained_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained_b and any(p.abs().sum() > 0 for p in trained_b)

    listing = client.get("/train", params={"limit": 1}).json()
    assert listing["count"] >= 1 and listing["data"][0]["id"] == job["id"]


def test_cancel_running_and_queued_jobs(
    client: TestClient, dataset_id: str, worker_setup: WorkerSetup
) -> None:
    running = submit(client, dataset_id, max_steps=100_000, eval_steps=50_000)
    waiting = submit(client, dataset_id, max_steps=5)  # queued behind it (concurrency 1)

    response = client.post(f"/train/{waiting['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client.post(f"/train/{waiting['id']}/cancel").status_code == 409

    wait_for(
        client,
        running["id"],
        lambda j: j["status"] == "running" and j["progress"]["step"] >= 2,
        what="training steps",
        log=worker_setup.log,
    )
    response = client.post(f"/train/{running['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] in ("cancelling", "cancelled")
    requested = time.monotonic()
    done = wait_for(
        client, running["id"], lambda j: j["status"] in TERMINAL, timeout_s=60, what="cancel"
    )
    assert done["status"] == "cancelled" and done["adapter_name"] is None
    assert time.monotonic() - requested < 30
    assert done["progress"]["step"] < 100_000
    messages = [e["message"] for e in events(client, running["id"])]
    assert any(m.startswith("cancel requested") for m in messages)
    assert messages[-1].startswith("cancelled")

    # The cancelled job's message is still delivered once the worker is free; it must not run.
    time.sleep(3)
    skipped = client.get(f"/train/{waiting['id']}").json()
    assert skipped["status"] == "cancelled" and skipped["attempts"] == 0


def test_queue_messages_deleted_with_jobs_running_and_queued_each_job_ends_once(
    client: TestClient, dataset_id: str, worker_setup: WorkerSetup
) -> None:
    """Redis loses the queue (restarted without persistence, a FLUSHDB, an operator's mistake)
    while one job runs and one waits: the running one finishes, the waiting one is sent again
    by the sweep once nothing runs, and each ends once with one adapter."""
    import redis

    from tests.conftest import REDIS_URL

    running = submit(client, dataset_id, max_steps=6, eval_steps=50_000)
    waiting = submit(client, dataset_id, max_steps=2)
    wait_for(
        client,
        running["id"],
        lambda j: j["status"] == "running" and j["progress"]["step"] >= 1,
        what="training steps",
        log=worker_setup.log,
    )
    settings = worker_setup.settings
    queue_key = f"{settings.broker_key_prefix}{settings.training_queue}"
    broker = redis.Redis.from_url(REDIS_URL)
    try:
        # Prefetch 1 with acks_late: the worker holds only the running job's message, so the
        # waiting job's message is in Redis and the deletion below really loses it.
        assert broker.llen(queue_key) == 1, broker.keys(f"{settings.broker_key_prefix}*")
        lost = broker.delete(queue_key, *broker.keys(f"{settings.broker_key_prefix}unacked*"))
        assert lost >= 1 and broker.llen(queue_key) == 0
    finally:
        broker.close()

    for job in (running, waiting):
        done = wait_for(
            client,
            job["id"],
            lambda j: j["status"] in TERMINAL,
            timeout_s=settings.job_resend_queued_after_s + 90,
            what="the end of a job whose message was deleted",
            log=worker_setup.log,
        )
        assert done["status"] == "succeeded", done
        messages = [e["message"] for e in events(client, job["id"])]
        assert sum(m.startswith("succeeded") for m in messages) == 1, messages
        assert done["attempts"] == 1
    resent = [e["message"] for e in events(client, waiting["id"])]
    assert any("its queue message was lost; sent again" in m for m in resent), resent
    from ttalkkac.store import crud
    from ttalkkac.store.db import Database

    db = Database(settings.resolved_database_url)  # this API serves no engine: no GET /adapters
    with db.session() as session:
        trained = [a.job_id for a in crud.list_adapters(session)]
    db.dispose()
    assert trained.count(running["id"]) == 1 and trained.count(waiting["id"]) == 1


class ApiDied(BaseException):
    """The API process dying (a BaseException: no handler of the route catches it)."""


def test_api_dying_between_the_commit_and_the_send_the_job_still_runs_once(
    client: TestClient,
    dataset_id: str,
    worker_setup: WorkerSetup,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST /train commits the job, then sends its message: a death in between leaves a queued
    job that no message names. The worker's sweep sends it again; it runs once."""
    import worker.celery_app

    def die(*args: object, **kwargs: object) -> None:
        raise ApiDied("killed after the commit, before the send")

    from app.main import create_app

    async def post_and_die() -> None:
        # An API of its own, the one that dies: the module's client must outlive this.
        app = create_app(worker_setup.settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                body = {"dataset_id": dataset_id, "hyperparameters": {"max_steps": 2}}
                await http.post("/train", json=body)

    monkeypatch.setattr(worker.celery_app, "enqueue_training_job", die)
    with pytest.raises((ApiDied, BaseExceptionGroup)) as died:
        asyncio.run(post_and_die())
    if died.type is not ApiDied:  # wrapped by the ASGI stack's task group
        assert died.group_contains(ApiDied)
    monkeypatch.undo()
    listed = client.get("/train", params={"limit": 1}).json()["data"][0]
    assert listed["status"] == "queued" and listed["attempts"] == 0, listed
    done = wait_for(
        client,
        listed["id"],
        lambda j: j["status"] in TERMINAL,
        timeout_s=worker_setup.settings.job_resend_queued_after_s + 90,
        what="the end of a job whose message was never sent",
        log=worker_setup.log,
    )
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    messages = [e["message"] for e in events(client, listed["id"])]
    assert any("its queue message was lost; sent again" in m for m in messages), messages
    assert sum(m.startswith("succeeded") for m in messages) == 1, messages


def test_database_connections_dropped_mid_job_the_job_still_succeeds(
    client: TestClient, dataset_id: str, worker_setup: WorkerSetup
) -> None:
    """PostgreSQL restarts or a proxy drops idle connections while a job trains: every
    connection to the job's database is terminated, several times; the job carries on."""
    from sqlalchemy import create_engine, text

    from tests.conftest import POSTGRES_ADMIN_URL

    job = submit(client, dataset_id, max_steps=12, eval_steps=4)
    wait_for(
        client,
        job["id"],
        lambda j: j["status"] == "running" and j["progress"]["step"] >= 1,
        what="training steps",
        log=worker_setup.log,
    )
    name = worker_setup.settings.resolved_database_url.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    dropped = 0
    try:
        with admin.connect() as conn:
            for _ in range(6):
                dropped += len(
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :name AND pid <> pg_backend_pid()"
                        ),
                        {"name": name},
                    ).all()
                )
                time.sleep(0.5)
    finally:
        admin.dispose()
    assert dropped >= 1, "no connection of the worker's was there to drop"
    done = wait_for(
        client, job["id"], lambda j: j["status"] in TERMINAL, what="success", log=worker_setup.log
    )
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1 and done["progress"]["step"] == 12


def test_sigterm_checkpoints_hands_the_job_back_and_the_next_worker_resumes_it(
    client: TestClient, dataset_id: str, worker_setup: WorkerSetup
) -> None:
    """A deploy: SIGTERM to the worker's main process (what ``docker stop`` sends to PID 1)."""
    import os
    import signal

    job = submit(client, dataset_id, max_steps=100_000, eval_steps=50_000)
    job_id = job["id"]
    wait_for(
        client,
        job_id,
        lambda j: j["status"] == "running" and j["progress"]["step"] >= 2,
        what="training steps",
        log=worker_setup.log,
    )
    proc = worker_setup.worker.proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=90)  # a warm shutdown: it waits for the step, the checkpoint, the hand-back
    handed = client.get(f"/train/{job_id}").json()
    messages = [e["message"] for e in events(client, job_id)]
    saved = [m for m in messages if m.startswith("checkpoint saved at step")]
    assert saved and any("is shutting down" in m for m in messages), messages
    stopped_at = int(saved[-1].rsplit(" ", 1)[1])
    assert handed["status"] == "running" and handed["attempts"] == 0  # no attempt used up

    worker_setup.worker = WorkerProcess(worker_setup.env, worker_setup.log).start()
    resumed = wait_for(
        client,
        job_id,
        lambda j: any(
            f"resuming from checkpoint-{stopped_at}" in e["message"] for e in events(client, job_id)
        ),
        what="the resume from the shutdown's checkpoint",
        log=worker_setup.log,
    )
    assert resumed["attempts"] == 1
    assert client.post(f"/train/{job_id}/cancel").status_code == 200
    done = wait_for(client, job_id, lambda j: j["status"] in TERMINAL, timeout_s=60, what="cancel")
    assert done["status"] == "cancelled"


def test_worker_killed_mid_job_resumes_then_fails_with_reason(
    client: TestClient, dataset_id: str, worker_setup: WorkerSetup
) -> None:
    job = submit(client, dataset_id, max_steps=100_000, eval_steps=3)
    job_id = job["id"]
    wait_for(
        client,
        job_id,
        lambda j: any(e["message"].startswith("checkpoint saved") for e in events(client, job_id)),
        what="a checkpoint",
        log=worker_setup.log,
    )
    first = client.get(f"/train/{job_id}").json()
    assert first["attempts"] == 1

    # 1) The process running the job is killed (OOM killer, kill -9): the worker notices and
    # redelivers at once (acks_late + reject_on_worker_lost); attempt 2 resumes from a checkpoint.
    from ttalkkac.store import crud
    from ttalkkac.store.db import Database

    db = Database(worker_setup.settings.resolved_database_url)
    with db.session() as session:
        child_pid = int(crud.get_job(session, id=job_id).worker.rsplit(":", 1)[1])
    db.dispose()
    import os
    import signal

    os.kill(child_pid, signal.SIGKILL)
    resumed = wait_for(
        client,
        job_id,
        lambda j: (
            j["attempts"] == 2
            and any("resuming from checkpoint-" in e["message"] for e in events(client, job_id))
        ),
        what="resume after the child was killed",
        log=worker_setup.log,
    )
    assert resumed["status"] == "running"
    messages = [e["message"] for e in events(client, job_id)]
    # Whichever noticed first (the worker's pool or its orphan sweep) names the lost process.
    assert any(f":{child_pid} " in m and ("lost" in m or "gone" in m) for m in messages), (
        child_pid,
        messages,
    )
    resume_line = next(m for m in messages if "resuming from checkpoint-" in m)
    resumed_from = int(resume_line.rsplit("checkpoint-", 1)[1])
    assert resumed_from >= 3
    wait_for(client, job_id, lambda j: j["progress"]["step"] > resumed_from, what="progress")

    # 2) The whole worker dies (machine or container lost). Its message stays unacknowledged
    # until the broker's visibility timeout; the next worker's start-up sweep finds the orphan.
    # MAX_JOB_ATTEMPTS is 2 here, so the job ends failed with the reason instead of running again.
    worker_setup.worker.kill_group()
    worker_setup.worker = WorkerProcess(worker_setup.env, worker_setup.log).start()
    failed = wait_for(
        client,
        job_id,
        lambda j: j["status"] in TERMINAL,
        timeout_s=60,
        what="failure after the worker was lost",
        log=worker_setup.log,
    )
    assert failed["status"] == "failed"
    assert failed["attempts"] == 2
    assert failed["error"]["type"] == "WorkerLost"
    assert "MAX_JOB_ATTEMPTS" in failed["error"]["message"]
    assert failed["finished_at"] is not None
