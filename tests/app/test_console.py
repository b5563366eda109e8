"""The console at ``/``, in Debian's Chromium: a plan streams and renders, the training page shows
a dataset's report and a job's loss chart, the adapters page lists and activates adapters.

The browser fixtures are in ``tests/app/conftest.py``; every page runs with outside network cut
off (``offline_page``) and must not even try it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from app.main import create_app
from tests.utils.browser import (
    is_local,
    live_server,
    needs_chromium,
    screenshot_on_failure,
    serve_client_app,
)
from tests.utils.serving import register_adapter
from tests.utils.training_data import tiny_gold_zip
from ttalkkac import render
from ttalkkac.plan import ProjectPlan
from ttalkkac.store import crud
from ttalkkac.store.db import Database

MEETING = (
    "[00:01] 김민수: 오늘은 회의록 요약 서비스 도입을 논의하겠습니다.\n"
    "[00:32] 박준호: 다음 주 금요일까지 음성 인식 API를 비교하겠습니다."
)
TIMEOUT_MS = 60_000  # two shared cores


def test_the_console_is_public_and_loads_only_its_own_files(settings) -> None:
    keyed = settings.model_copy(update={"api_keys": ["k1"]})
    with TestClient(create_app(keyed)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "://" not in page.text
        assets = re.findall(r'(?:src|href)="(console/[^"]+)"', page.text)
        assert sorted(assets) == ["console/console.css", "console/console.js"]
        for asset in assets:
            assert client.get(f"/{asset}").status_code == 200, asset
        # The page holds no data; the calls it makes do, and need the key.
        assert client.get("/adapters").status_code == 401
        assert client.post("/generate/stream", json={"meeting": "x"}).status_code == 401


def assert_offline(requested: list[str], blocked: list[str], base_url: str) -> None:
    assert f"{base_url}/console/console.js" in requested  # the recorder saw the page's files
    assert [u for u in requested if not is_local(u)] == [] and blocked == []


# --- on the shared vLLM app ------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_url(vllm_client) -> Iterator[str]:
    with serve_client_app(vllm_client) as url:
        yield url


@needs_chromium
def test_a_plan_streams_and_renders(vllm_url, offline_page) -> None:
    page, requested, blocked = offline_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    with screenshot_on_failure(page, "console"):
        page.goto(f"{vllm_url}/#plan")
        page.wait_for_selector("#adapter option[value='base']", state="attached")
        page.fill("#meeting", MEETING)
        page.select_option("#adapter", "base")
        # Every partial answer the page shows, in order.
        page.evaluate(
            """() => {
                window.partials = [];
                new MutationObserver((records) => records.forEach((r) =>
                    r.addedNodes.forEach((n) => window.partials.push(n.textContent))))
                    .observe(document.querySelector('#plan-partial'), {childList: true});
            }"""
        )
        page.get_by_role("button", name="기획안 만들기").click()
        page.wait_for_selector("#plan-result:not([hidden])", timeout=TIMEOUT_MS)
        assert page.is_hidden("#error")
        partials = [p for p in page.evaluate("window.partials") if p]

        # The rendered plan has the Notion page's Korean sections (ttalkkac/render.py).
        headings = page.eval_on_selector_all(
            "#plan-rendered h2", "hs => hs.map(h => h.textContent)"
        )
        assert headings == [render.OVERVIEW, render.OBJECTIVES, render.DETAILS, render.EFFECTS]
        with page.expect_download() as download:
            page.click("#download-json")
        plan = ProjectPlan.model_validate_json(Path(download.value.path()).read_text())
        assert page.text_content("#plan-rendered h1") == plan.project_name
        # The answer was shown growing: partial JSON, then the chunk's whole answer.
        assert ProjectPlan.model_validate_json(partials[-1]) == plan
        assert any(len(p) < len(partials[-1]) and partials[-1].startswith(p) for p in partials)
        page.click("#copy-markdown")
        assert page.evaluate("navigator.clipboard.readText()") == render.to_markdown(plan)
        assert_offline(requested, blocked, vllm_url)


@needs_chromium
def test_a_plan_goes_to_notion_from_the_console(vllm_url, vllm_client, offline_page) -> None:
    """The page pushes the plan it shows; the server calls Notion (a local fake of its API)."""
    from pydantic import SecretStr

    from tests.utils.fake_notion import TOKEN, FakeNotion, serve

    fake = FakeNotion()
    settings = vllm_client.app.state.settings
    saved = (settings.notion_token, settings.notion_base_url)
    page, requested, blocked = offline_page
    with serve(fake.app) as notion_url:
        settings.notion_token, settings.notion_base_url = SecretStr(TOKEN), notion_url
        try:
            with screenshot_on_failure(page, "console-notion"):
                page.goto(f"{vllm_url}/#plan")
                page.wait_for_selector("#adapter option[value='base']", state="attached")
                page.fill("#meeting", MEETING)
                page.select_option("#adapter", "base")
                page.get_by_role("button", name="기획안 만들기").click()
                page.wait_for_selector("#plan-result:not([hidden])", timeout=TIMEOUT_MS)
                page.fill("#notion-parent", "01234567-89ab-cdef-0123-456789abcdef")
                page.get_by_role("button", name="Notion에 올리기").click()
                page.wait_for_selector("#notion-link:not([hidden])", timeout=TIMEOUT_MS)
                assert page.is_hidden("#error")
                assert len(fake.pages) == 1 and fake.violations == []
                (page_id,) = fake.pages
                assert page_id.replace("-", "") in page.get_attribute("#notion-link", "href")
                # Pushed again: the same page, not a second one.
                page.get_by_role("button", name="Notion에 올리기").click()
                expect(page.locator("#push-notion")).to_be_enabled(timeout=TIMEOUT_MS)
                assert len(fake.pages) == 1
                assert_offline(requested, blocked, vllm_url)
        finally:
            settings.notion_token, settings.notion_base_url = saved


@needs_chromium
def test_the_adapters_page_lists_and_activates_adapters(
    vllm_url, vllm_client, serving_settings, tiny_adapters, offline_page
) -> None:
    name = f"console-{uuid.uuid4().hex[:8]}"
    register_adapter(
        serving_settings, name, tiny_adapters[0], base_model=serving_settings.base_model
    )
    vllm_client.delete("/adapters/active")
    page, requested, blocked = offline_page
    try:
        with screenshot_on_failure(page, "console-adapters"):
            page.goto(f"{vllm_url}/#adapters")
            row = page.locator(f"tr[data-adapter='{name}']")
            row.wait_for(timeout=TIMEOUT_MS)
            assert "서비스 중" in page.text_content("tr[data-adapter='base']")  # nothing active
            page.click("#lang-toggle")  # English, and the button's accessible name with it
            assert page.text_content("#tab-adapters") == "Adapters"
            page.get_by_role("button", name=f"Activate {name}").click()
            row.locator(".badge", has_text="default").wait_for(timeout=TIMEOUT_MS)
            assert "serving" in row.text_content()  # lora mode: the active adapter serves
            assert row.get_by_role("button").is_disabled()
            assert vllm_client.get("/adapters").json()["active"] == name
            assert "mode lora" in page.text_content("#serving-status")
            assert_offline(requested, blocked, vllm_url)
    finally:
        vllm_client.delete("/adapters/active")


# --- training, without an engine or a worker -------------------------------------------------


@pytest.fixture(scope="module")
def training_app(tmp_path_factory: pytest.TempPathFactory, run_id: str) -> Iterator[tuple]:
    """An API without an engine; its queue is the run's own and nobody consumes it."""
    import redis

    from tests.conftest import REDIS_URL
    from ttalkkac.settings import Settings

    prefix, queue = f"test-ttalkkac-{run_id}-console:", f"test-training-{run_id}-console"
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("console-train"),
        redis_url=REDIS_URL,
        training_queue=queue,
        broker_key_prefix=prefix,
        serving_enabled=False,
        warmup=False,
    )
    settings.ensure_dirs()
    try:
        with live_server(create_app(settings)) as url:
            yield url, settings
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@needs_chromium
def test_upload_then_a_job_then_its_loss_chart(training_app, offline_page, tmp_path) -> None:
    url, settings = training_app
    page, requested, blocked = offline_page
    archive = tiny_gold_zip(tmp_path, n=4, score=8.0)
    with screenshot_on_failure(page, "console-train"):
        page.goto(f"{url}/#train")
        page.set_input_files("#dataset-file", str(archive))
        page.fill("#dataset-name", "console-gold")
        page.click("#dataset-submit")
        page.wait_for_selector("#dataset-report:not([hidden])", timeout=TIMEOUT_MS)
        assert page.text_content("#dataset-records") == "4"
        page.locator("#train-advanced summary").click()
        page.click("#cpu-preset")
        assert page.input_value("#hp-max-steps") == "3"
        page.click("#train-submit")
        page.wait_for_selector("#job:not([hidden]) #job-status", timeout=TIMEOUT_MS)
        job_id = page.text_content("#job-status").split(":")[0]
        assert page.input_value("#job-select") == job_id

        # The worker's part, written into the store as a worker writes it: running, losses.
        db = Database(settings.resolved_database_url)
        try:
            with db.session() as session:
                job = crud.get_job(session, id=job_id)
                assert job is not None and job.hyperparameters["max_steps"] == 3
                assert crud.transition_job(
                    session, id=job_id, from_statuses=["queued"], to_status="running"
                )
                crud.update_job(session, id=job_id, step=2, total_steps=3)
                for step, loss in ((1, 2.5), (2, 2.1), (3, 1.8)):
                    data = {"step": step, "loss": loss}
                    crud.append_event(
                        session, job_id=job_id, message=f"step {step}", type="metrics", data=data
                    )
                crud.append_event(
                    session, job_id=job_id, type="metrics", data={"step": 3, "eval_loss": 2.0}
                )
        finally:
            db.dispose()
        chart = page.locator("#loss-chart polyline[data-series='train']")
        chart.wait_for(timeout=TIMEOUT_MS)
        points = chart.get_attribute("points").split()
        assert len(points) == 3
        ys = [float(p.split(",")[1]) for p in points]
        assert ys == sorted(ys)  # the loss falls: each point lower on the chart (SVG y grows down)
        assert page.locator("#loss-chart circle.eval").count() == 1
        assert "2/3" in page.text_content("#job-progress")
        page.click("#job-cancel")
        expect(page.locator("#job-status")).to_contain_text("취소", timeout=TIMEOUT_MS)
        assert_offline(requested, blocked, url)
