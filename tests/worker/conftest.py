"""A real Celery worker on a queue and Redis key prefix of this run, with its own database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, created_database
from tests.utils.worker_process import WorkerProcess


@dataclass
class WorkerSetup:
    settings: object  # ttalkkac.settings.Settings of the API side
    env: dict[str, str]
    log: Path
    worker: WorkerProcess


@pytest.fixture(scope="module")
def worker_database(run_id: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """PostgreSQL shared by the API (this process) and the worker processes of one module."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with created_database(f"test_ttalkkac_{run_id}_worker_{module}") as url:
        yield url


@pytest.fixture(scope="module")
def redis_prefix(run_id: str) -> Iterator[str]:
    import redis

    prefix = f"test-ttalkkac-{run_id}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@contextmanager
def running_worker(
    data_dir: Path,
    *,
    database_url: str,
    redis_prefix: str,
    queue: str,
    base_model: Path,
    **values: str,
) -> Iterator[WorkerSetup]:
    """A worker process and the API's settings, both configured from one set of values.

    The worker reads the values from its environment, as a deployment gives them; the API side
    gets the same values as ``Settings`` with serving off (these tests train, not generate).
    """
    from ttalkkac.settings import Settings

    values = {
        "data_dir": str(data_dir),
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "training_queue": queue,
        "broker_key_prefix": redis_prefix,
        "base_model": str(base_model),
        **values,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATA_DIR", "DATABASE_URL"))}
    env.update({k.upper(): v for k, v in values.items()})
    # Tiny models train fastest on one thread; the suite shares two cores.
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    settings = Settings(**values, serving_enabled=False, warmup=False)
    settings.ensure_dirs()
    log = data_dir / "worker.log"
    setup = WorkerSetup(settings, env, log, WorkerProcess(env, log).start())
    try:
        yield setup
    finally:
        setup.worker.stop()  # a test may have replaced the process it started with


@pytest.fixture(scope="module")
def worker_setup(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    worker_database: str,
    redis_prefix: str,
    run_id: str,
) -> Iterator[WorkerSetup]:
    with running_worker(
        tmp_path_factory.mktemp("worker-data"),
        database_url=worker_database,
        redis_prefix=redis_prefix,
        queue=f"test-training-{run_id}",
        base_model=tiny_model_dir,
        max_job_attempts="2",
        job_heartbeat_s="1",
        job_stale_after_s="60",
        job_sweep_interval_s="2",
        job_resend_queued_after_s="10",  # the least it may be
    ) as setup:
        yield setup
