"""The one rule for URLs the service calls out to (webhooks): absolute http(s) with a host."""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_URL_CHARS = 2000


def check_url(url: str) -> str:
    """``url`` stripped, or ``ValueError`` saying what is wrong with it."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"URL longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("only http:// and https:// URLs are allowed")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ValueError("the URL contains whitespace or control characters")
    return url


def redact(url: str) -> str:
    """Scheme, host and path only: a query string or user info may carry a secret token."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
