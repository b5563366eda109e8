"""An API process killed (SIGKILL) during an evaluation: the next one resumes it and no finished
row is lost or doubled. Real processes (``ttalkkac api``), the transformers engine on the tiny
model, the SQLite store on disk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.api_process import Api, tiny_api_env
from tests.utils.training_data import tiny_gold_zip
from ttalkkac.store import evaluations as store
from ttalkkac.store.db import Database

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path, terse_model_dir: Path) -> dict[str, str]:
    return tiny_api_env(tmp_path / "data", terse_model_dir)


@pytest.fixture
def apis(tmp_path: Path) -> Iterator[list[Api]]:
    started: list[Api] = []
    yield started
    for api in started:
        api.stop()


def test_api_killed_mid_evaluation_resumes_it_without_losing_rows(
    env: dict[str, str], apis: list[Api], tmp_path: Path
) -> None:
    first = Api(env, tmp_path / "api.log")
    apis.append(first)
    first.wait_ready()
    archive = tiny_gold_zip(tmp_path / "gold", n=6)
    upload = httpx.post(
        f"{first.url}/datasets", files={"file": ("gold.zip", archive.read_bytes())}, timeout=60
    )
    assert upload.status_code == 201, upload.text
    body = {"adapter": "base", "dataset_id": upload.json()["id"], "split": "all", "max_samples": 6}
    evaluation_id = httpx.post(f"{first.url}/evaluations", json=body, timeout=30).json()["id"]

    deadline = time.monotonic() + 120
    while httpx.get(f"{first.url}/evaluations/{evaluation_id}").json()["progress"]["step"] < 2:
        assert time.monotonic() < deadline, "no rows finished"
        time.sleep(0.1)
    first.kill()

    db = Database(env["DATABASE_URL"])
    with db.session() as session:
        kept = {
            r.index: (r.id, r.result) for r in store.list_rows(session, evaluation_id=evaluation_id)
        }
        assert store.get_evaluation(session, id=evaluation_id).status == "running"
    assert 2 <= len(kept) < 6

    second = Api(env, tmp_path / "api.log")
    apis.append(second)
    second.wait_ready()
    deadline = time.monotonic() + 180
    while (done := httpx.get(f"{second.url}/evaluations/{evaluation_id}").json())["status"] != (
        "succeeded"
    ):
        assert done["status"] in ("running", "queued"), done
        assert time.monotonic() < deadline, done
        time.sleep(0.3)
    assert done["attempts"] == 2
    assert [r["index"] for r in done["rows"]] == list(range(6))
    with db.session() as session:
        rows = store.list_rows(session, evaluation_id=evaluation_id)
    for row in rows:
        if row.index in kept:
            assert (row.id, row.result) == kept[row.index]  # finished rows survive untouched
    db.dispose()
