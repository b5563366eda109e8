"""GET /docs and /redoc: served from the package, public, and nothing loaded from outside.

The browser fixtures (``browser``, ``offline_page``) are in ``tests/app/conftest.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.utils.browser import is_local, live_server, needs_chromium, screenshot_on_failure

ASSET = re.compile(r'(?:src|href)="([^"]+)"')
TIMEOUT_MS = 60_000  # two shared cores: Swagger UI takes a few seconds to render 17 operations


def test_docs_pages_load_only_their_own_files_without_an_api_key(settings) -> None:
    keyed = settings.model_copy(update={"api_keys": ["k1"]})
    with TestClient(create_app(keyed)) as client:
        assert client.get("/train").status_code == 401  # the key is required elsewhere
        for page in ("/docs", "/redoc"):
            response = client.get(page)
            assert response.status_code == 200, page
            assert "://" not in response.text, page  # no CDN, no fonts, no outside favicon
            assets = ASSET.findall(response.text)
            assert len(assets) >= 2, assets  # the script (and stylesheet) plus the favicon
            for asset in assets:
                assert client.get(asset).status_code == 200, asset
        assert '"validatorUrl": null' in client.get("/docs").text  # no spec sent to a validator
        # The vendored files' licences are served beside them.
        assert "Apache License" in client.get("/docs/LICENSE").text
        assert "MIT" in client.get("/redoc/redoc.standalone.js.LICENSE.txt").text
        assert client.get("/redoc/logo-mini.svg").status_code == 200  # ReDoc's footer logo
        assert client.get("/openapi.json").json()["info"]["title"] == "Ttalkkac"


# --- in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ttalkkac.settings import Settings

    # SERVING_ENABLED=false: the docs need no model.
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("docs-data"), warmup=False, serving_enabled=False
    )
    settings.ensure_dirs()
    with live_server(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def operations(base_url: str) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> operationId, from the schema both pages render."""
    paths = httpx.get(f"{base_url}/openapi.json").json()["paths"]
    return {
        (method.upper(), path): op["operationId"]
        for path, item in paths.items()
        for method, op in item.items()
    }


@needs_chromium
def test_swagger_ui_renders_every_operation_offline(base_url, operations, offline_page) -> None:
    page, requested, blocked = offline_page
    with screenshot_on_failure(page, "docs"):
        page.goto(f"{base_url}/docs")
        page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)
        rendered = page.eval_on_selector_all(
            ".opblock",
            """blocks => blocks.map(b => [
                b.querySelector('.opblock-summary-method').textContent.trim(),
                b.querySelector('.opblock-summary-path').getAttribute('data-path'),
            ])""",
        )
        assert {("POST", "/generate"), ("POST", "/train")} <= {tuple(r) for r in rendered}
        assert sorted(tuple(r) for r in rendered) == sorted(operations)
        # The recorder saw the page's own files, so an empty outside list means something.
        assert f"{base_url}/docs/swagger-ui-bundle.js" in requested
        assert [u for u in requested if not is_local(u)] == [] and blocked == []


@needs_chromium
def test_redoc_renders_every_operation_offline(base_url, operations, offline_page) -> None:
    page, requested, blocked = offline_page
    with screenshot_on_failure(page, "redoc"):
        page.goto(f"{base_url}/redoc")
        page.wait_for_selector("[data-section-id^='operation/']", timeout=TIMEOUT_MS)
        sections = page.eval_on_selector_all(
            "[data-section-id^='operation/']",
            "els => els.map(e => e.getAttribute('data-section-id'))",
        )
        assert sorted(sections) == sorted(f"operation/{op}" for op in operations.values())
        assert f"operation/{operations['POST', '/generate']}" in sections
        assert page.get_by_text("Ttalkkac (").first.is_visible()  # the title, not a blank page
        assert f"{base_url}/redoc/redoc.standalone.js" in requested
        assert [u for u in requested if not is_local(u)] == [] and blocked == []
