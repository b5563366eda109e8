"""Fixtures of the API's browser tests (``test_docs.py``, ``test_console.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.utils.browser import CHROMIUM, CHROMIUM_ARGS, is_local


# Per module, not per session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, and later modules' asyncio.run() calls would fail under it.
@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def offline_page(browser) -> Iterator[tuple]:
    """A page that records every request and lets only loopback ones through."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    blocked: list[str] = []

    def route(route) -> None:
        if is_local(route.request.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda request: requested.append(request.url))
    yield page, requested, blocked
    context.close()
