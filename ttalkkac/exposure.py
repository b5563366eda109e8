"""Whether the API may listen on an address: no keys, no network (unless told so).

An API without ``API_KEYS`` lets anyone who reaches its port train on, read and delete every
dataset, job and adapter. On a loopback address only this machine can; on any other address
(``0.0.0.0``, a LAN address, a host name) the network can, so ``ttalkkac api`` and
``ttalkkac up`` refuse to start that way unless ``ALLOW_UNAUTHENTICATED_NETWORK`` says it is
meant (a private network, a proxy in front that authenticates).
"""

from __future__ import annotations

import ipaddress

from ttalkkac.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (also as ``[::1]`` or IPv4-mapped) and ``localhost``.

    Any other name is not: it may resolve to a public address. An empty host means every
    interface to uvicorn.
    """
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def listen_refusal(host: str, settings: Settings) -> str | None:
    """Why the API must not listen on ``host`` with these settings; None when it may."""
    if settings.api_keys or settings.allow_unauthenticated_network or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host or 'every interface'!r} without API keys: anyone who can "
        "reach the port could train, read and delete everything. Set API_KEYS (comma-separated "
        "bearer tokens), or listen on 127.0.0.1, or set ALLOW_UNAUTHENTICATED_NETWORK=true if an "
        "open API on this network is intended."
    )
