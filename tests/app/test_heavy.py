"""``app.heavy``: heavy request work runs on threads of its own, and ``/health`` needs none.

Both tests run the app in this event loop (httpx's ASGI transport) so that they can look at
anyio's default thread pool, the one every sync route and dependency shares.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from app.main import create_app
from tests.utils.training_data import tiny_gold_zip
from ttalkkac import datasets
from ttalkkac.settings import Settings


def serve(settings: Settings, scenario: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run ``scenario`` against the app, lifespan included, in one event loop."""

    async def main() -> Any:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await scenario(client)

    return asyncio.run(main())


def test_health_answers_while_every_pool_thread_is_taken(settings: Settings) -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[int, bool]:
        pool = anyio.to_thread.current_default_thread_limiter()
        holders = [object() for _ in range(int(pool.total_tokens))]
        for holder in holders:
            await pool.acquire_on_behalf_of(holder)
        try:
            with anyio.fail_after(5):
                health = await client.get("/health")
            with anyio.move_on_after(1) as waited:
                await client.get("/datasets")  # a sync route: it waits for a pool thread
            return health.status_code, waited.cancelled_caught
        finally:
            for holder in holders:
                pool.release_on_behalf_of(holder)

    status, listing_waited = serve(settings, scenario)
    assert status == 200
    assert listing_waited  # the pool really was exhausted: a route that needs it had to wait


def test_uploads_run_on_the_heavy_threads_and_leave_the_pool_to_the_rest(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"heavy_request_threads": 2})
    archive = tiny_gold_zip(tmp_path, n=2).read_bytes()
    lock, running, most = threading.Lock(), 0, 0
    ingest = datasets.ingest_upload

    def slow_ingest(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.5)  # a large dataset's parse: long enough for the uploads to overlap
            return ingest(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(datasets, "ingest_upload", slow_ingest)

    async def scenario(client: httpx.AsyncClient) -> tuple[list[int], float]:
        # A pool of 4 threads: six uploads holding one each would leave the listing none.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 4

        async def upload(i: int) -> int:
            files = {"file": (f"gold{i}.zip", archive)}
            return (await client.post("/datasets", files=files)).status_code

        uploads = [asyncio.create_task(upload(i)) for i in range(6)]
        await asyncio.sleep(0.2)  # the uploads are in, two of them ingesting
        started = time.monotonic()
        listing = await client.get("/datasets")
        listing_s = time.monotonic() - started
        assert listing.status_code == 200
        return list(await asyncio.gather(*uploads)), listing_s

    statuses, listing_s = serve(settings, scenario)
    assert statuses == [201] * 6
    assert most == 2  # HEAVY_REQUEST_THREADS, not one thread per upload
    assert listing_s < 0.4, f"the listing waited {listing_s:.2f} s behind the uploads"
