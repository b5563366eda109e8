"""``app.guard``: API keys and body bounds are enforced before any body is read.

The bodies here are generated lazily (1 MiB pieces, hundreds of MiB in all) and the tests
count what the server pulled: an answer that came after reading the body would show it.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.guard import FORM_OVERHEAD, public_paths
from app.main import create_app
from tests.utils.chunked_upload import (
    BOUNDARY,
    MIB,
    MULTIPART,
    TOTAL,
    multipart_head,
    send_chunked_until_answered,
)
from tests.utils.training_data import tiny_gold_zip
from ttalkkac.settings import Settings

KEY = "k-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def keyed(tmp_path: Path) -> Settings:
    settings = Settings(
        data_dir=tmp_path / "data",
        serving_enabled=False,
        warmup=False,
        api_keys=KEY,
        max_upload_bytes=2 * MIB,
        max_request_bytes=64 * 1024,
    )
    settings.ensure_dirs()
    return settings


class LazyBody:
    """An async body of ``total`` bytes in 1 MiB pieces that counts what was pulled."""

    def __init__(self, total: int = TOTAL, head: bytes = b"") -> None:
        self.total, self.head, self.pulled = total, head, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.head:
            self.pulled += len(self.head)
            yield self.head
        while self.pulled < self.total:
            piece = b"x" * min(MIB, self.total - self.pulled)
            self.pulled += len(piece)
            yield piece


def multipart_body(data: bytes, filename: str) -> bytes:
    return multipart_head(filename) + data + f"\r\n--{BOUNDARY}--\r\n".encode()


async def post_lazily(
    app: FastAPI, path: str, body: LazyBody, content_type: str, headers: dict | None = None
) -> httpx.Response:
    """POST a chunked body (no Content-Length) to the app in this process, lifespan included."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post(
                path,
                content=body,
                headers={"content-type": content_type, **(headers or {})},
            )


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["request_id"]
    return error


# --- which routes are public ------------------------------------------------------------------


def test_public_routes_are_the_probes_the_docs_and_the_console(keyed: Settings) -> None:
    app = create_app(keyed)
    public = public_paths(app.routes)
    assert public.exact == {
        "/",  # the console's page: no data in it, every call it makes needs the key
        "/health",
        "/ready",
        "/metrics",
        "/docs",
        "/redoc",
        "/openapi.json",
    }
    # Static files (the docs', the console's), public below these paths.
    assert public.prefixes == {"/docs/", "/docs/fastapi/", "/redoc/", "/console/"}
    # "/" is exact: it must not make every path public.
    assert "/adapters" not in public and "/console/console.js" in public
    with TestClient(app) as client:
        for path in ("/", "/health", "/metrics", "/openapi.json", "/docs", "/redoc"):
            assert client.get(path).status_code == 200, path
        # The pages' scripts load without a key too (a browser sends none).
        page = client.get("/docs").text + client.get("/redoc").text
        scripts = re.findall(r'(?:src|href)="(/(?:docs|redoc)/[^"]+)"', page)
        assert scripts and all(client.get(src).status_code == 200 for src in scripts)
        assert client.get("/ready").status_code == 503  # no engine here, but answered
        for method, path in (
            ("get", "/adapters"),
            ("get", "/nowhere"),
            ("post", "/generate"),
            ("post", "/generate/stream"),
        ):
            response = getattr(client, method)(path)
            assert response.status_code == 401, path
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.headers["X-Request-Id"] == response.json()["error"]["request_id"]
        assert client.get("/adapters", headers=AUTH).status_code == 503  # past the guard


# --- unauthenticated: 401 before the body is read ---------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "head"),
    [
        ("/train", "application/json", b'{"dataset_id": "'),
        ("/datasets", MULTIPART, multipart_head()),
    ],
)
def test_unauthenticated_chunked_body_is_401_unread(
    keyed: Settings, path: str, content_type: str, head: bytes
) -> None:
    body = LazyBody(head=head)
    response = asyncio.run(post_lazily(create_app(keyed), path, body, content_type))
    assert_envelope(response, 401, "http_error")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert body.pulled == 0, f"the server read {body.pulled} bytes before answering"


def test_unauthenticated_huge_declared_length_is_401_not_413(keyed: Settings) -> None:
    with TestClient(create_app(keyed)) as client:
        response = client.post(
            "/datasets", content=b"x" * (3 * MIB), headers={"content-type": MULTIPART}
        )
    assert_envelope(response, 401, "http_error")


# --- authenticated: 413 at the limit, nothing left behind -------------------------------------


def test_authenticated_chunked_upload_over_the_limit_is_413_and_leaves_nothing(
    keyed: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"  # where the multipart parser rolls large parts over to disk
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    body = LazyBody(head=multipart_head())
    response = asyncio.run(post_lazily(create_app(keyed), "/datasets", body, MULTIPART, AUTH))
    error = assert_envelope(response, 413, "payload_too_large")
    limit = keyed.max_upload_bytes + FORM_OVERHEAD
    assert f"{limit:,}" in error["message"] and "MAX_UPLOAD_BYTES" in error["message"]
    assert body.pulled <= limit + MIB, "read on past the limit"
    assert list(keyed.datasets_dir.iterdir()) == []
    assert [p for p in spool.rglob("*") if p.is_file()] == []


def test_authenticated_chunked_json_over_the_limit_is_413(keyed: Settings) -> None:
    body = LazyBody(head=b'{"dataset_id": "')
    app = create_app(keyed)
    response = asyncio.run(post_lazily(app, "/train", body, "application/json", AUTH))
    error = assert_envelope(response, 413, "payload_too_large")
    assert "MAX_REQUEST_BYTES" in error["message"]
    assert body.pulled <= keyed.max_request_bytes + MIB


def test_declared_length_over_the_limit_is_413_before_reading(keyed: Settings) -> None:
    with TestClient(create_app(keyed)) as client:
        response = client.post(
            "/train", content=b"{" + b" " * (65 * 1024), headers={**AUTH, "content-type": "x"}
        )
        error = assert_envelope(response, 413, "payload_too_large")
        assert "66,561 bytes" in error["message"] and "65,536" in error["message"]
        # A public route is bounded too.
        response = client.post("/health", content=b"x" * (65 * 1024))
        assert_envelope(response, 413, "payload_too_large")


def test_chunked_upload_within_the_limit_is_stored(keyed: Settings, tmp_path: Path) -> None:
    archive = tiny_gold_zip(tmp_path, n=3).read_bytes()
    data = multipart_body(archive, "gold.zip")

    async def pieces() -> AsyncIterator[bytes]:
        for at in range(0, len(data), 4096):
            yield data[at : at + 4096]

    async def post() -> httpx.Response:
        app = create_app(keyed)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.post(
                    "/datasets", content=pieces(), headers={**AUTH, "content-type": MULTIPART}
                )

    response = asyncio.run(post())
    assert response.status_code == 201, response.text
    assert response.json()["records"] == 3


# --- over a real socket: the server answers while the client is still sending -----------------


@pytest.fixture
def live_server(keyed: Settings) -> Iterator[tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(keyed), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.mark.parametrize(
    ("path", "head"), [("/train", b'{"dataset_id": "'), ("/datasets", multipart_head())]
)
def test_unauthenticated_upload_over_tcp_is_answered_while_sending(
    live_server: tuple[str, int], path: str, head: bytes
) -> None:
    answer, sent = send_chunked_until_answered(live_server, path, head)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"www-authenticate: bearer" in head.lower()
    assert json.loads(body)["error"]["code"] == "http_error"
    # The socket buffers hold a few MiB at most; the client was stopped long before TOTAL.
    assert sent < TOTAL // 8, f"the client got {sent} bytes out before the answer"


# --- no keys: this machine only, however the server was started ---------------------------------


@pytest.fixture
def open_settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", serving_enabled=False, warmup=False)
    settings.ensure_dirs()
    return settings


async def get_from(app: FastAPI, client: tuple[str, int], path: str, **kw: Any) -> httpx.Response:
    """GET ``path`` as a client at address ``client`` (what uvicorn puts in the ASGI scope)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.get(path, **kw)


@pytest.mark.parametrize("address", ["192.0.2.7", "10.0.0.5", "2001:db8::1", "::ffff:10.0.0.5"])
def test_without_keys_a_network_client_is_403(open_settings: Settings, address: str) -> None:
    app = create_app(open_settings)
    for path in ("/health", "/datasets", "/no/such/route"):
        response = asyncio.run(get_from(app, (address, 50_000), path))
        error = assert_envelope(response, 403, "network_without_key")
        assert (
            "API_KEYS" in error["message"] and "ALLOW_UNAUTHENTICATED_NETWORK" in error["message"]
        )


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.1.1", "::1", "::ffff:127.0.0.1"])
def test_without_keys_this_machine_is_answered(open_settings: Settings, address: str) -> None:
    response = asyncio.run(get_from(create_app(open_settings), (address, 50_000), "/datasets"))
    assert response.status_code == 200, response.text


def test_the_opt_out_and_keys_open_the_network(open_settings: Settings, keyed: Settings) -> None:
    allowed = open_settings.model_copy(update={"allow_unauthenticated_network": True})
    network = ("192.0.2.7", 50_000)
    assert asyncio.run(get_from(create_app(allowed), network, "/datasets")).status_code == 200
    app = create_app(keyed)  # with keys, the network is asked for one, not refused
    assert_envelope(asyncio.run(get_from(app, network, "/datasets")), 401, "http_error")
    assert asyncio.run(get_from(app, network, "/datasets", headers=AUTH)).status_code == 200


def this_machines_network_address() -> str | None:
    """An address of this machine other than loopback (a UDP connect sends nothing)."""
    for probe in ("192.0.2.1", "10.255.255.255"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.connect((probe, 9))
            except OSError:
                continue
            address = udp.getsockname()[0]
            if not address.startswith("127.") and address != "0.0.0.0":
                return address
    return None


def test_uvicorn_started_directly_on_every_interface_answers_loopback_only(
    open_settings: Settings,
) -> None:
    """``uvicorn app.main:app --host 0.0.0.0`` skips ``ttalkkac api``'s refusal; the app refuses."""
    network = this_machines_network_address()
    if network is None:
        pytest.skip("this machine has no address other than loopback")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(open_settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        with httpx.Client(trust_env=False, timeout=10) as http:  # no proxy from the environment
            assert http.get(f"http://127.0.0.1:{port}/datasets").status_code == 200
            refused = http.get(f"http://{network}:{port}/datasets")
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "network_without_key"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
