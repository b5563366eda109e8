"""The rules for URLs the service calls out to (webhooks).

- ``check_url``: absolute http(s) with a host, bounded, no whitespace.
- ``non_public_address``: a URL a *client* gave (a job's ``webhook_url``) must resolve to public
  internet addresses only; otherwise anyone with an API key could make the worker POST to
  loopback, the private network or a cloud metadata endpoint (server-side request forgery).
  URLs the operator configured (``WEBHOOK_URLS``) are trusted and not checked.
"""

from __future__ import annotations

import ipaddress
import socket
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


def non_public_address(url: str) -> str | None:
    """Why ``url``'s host is not only public addresses (None: every address it resolves to is).

    Checked when the job is submitted and again before every delivery (the name may resolve
    elsewhere by then). The connection itself resolves once more, so a name that changes its
    answer between the check and the connection is not caught: run the worker behind an egress
    proxy where that matters.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"the host {host!r} does not resolve ({exc})"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global:
            return (
                f"the host {host!r} resolves to {address}, which is not a public address "
                "(loopback, private, link-local or reserved); set WEBHOOK_ALLOW_PRIVATE=true "
                "to allow such receivers"
            )
    return None
