"""The API-key check and the pagination bounds declared in ``app/deps.py``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.deps import api_key_valid, bearer_token
from app.main import create_app
from ttalkkac.settings import Settings


@pytest.fixture
def keyed_settings(settings: Settings) -> Settings:
    settings.api_keys = ["k1", "키-두번째"]
    return settings


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (b"Bearer k1", True),
        (b"bearer k1", True),  # the scheme is case-insensitive
        ("Bearer 키-두번째".encode(), True),  # a non-ASCII key, sent as its UTF-8 bytes
        ("Bearer 키-두번째".encode("utf-16-le"), False),
        (b"Bearer \xe9\xe9", False),  # not ASCII, not UTF-8: compare_digest raised TypeError
        ("Bearer 키".encode(), False),
        (b"Bearer ", False),
        (b"Basic k1", False),
        (b"k1", False),
    ],
)
def test_api_keys_compare_the_bytes_sent(keyed_settings: Settings, header: bytes, ok: bool) -> None:
    with TestClient(create_app(keyed_settings)) as client:
        response = client.get("/datasets", headers={"Authorization": header})
    assert response.status_code == (200 if ok else 401), response.text
    if not ok:
        assert response.json()["error"]["code"] == "http_error"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_bearer_token_and_key_check(keyed_settings: Settings) -> None:
    assert bearer_token([(b"x-other", b"1"), (b"Authorization", b"Bearer abc")]) == b"abc"
    assert bearer_token([(b"authorization", b"Token abc")]) is None
    assert bearer_token([]) is None
    assert api_key_valid(keyed_settings, "키-두번째".encode())
    assert not api_key_valid(keyed_settings, None)
    keyed_settings.api_keys = []
    assert api_key_valid(keyed_settings, None)  # no keys configured: open
