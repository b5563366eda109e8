"""Heavy request work (ingesting uploads, parsing datasets, drawing plots) on threads of its own.

A sync route runs on anyio's default pool (40 threads), which every other sync route and sync
dependency shares. Forty uploads parsing at once would hold every thread, and the listings,
``/ready`` and the rest would wait behind them. Heavy routes are ``async`` and run their work
under ``HEAVY_REQUEST_THREADS`` instead: a request beyond that waits for a thread without
holding one, and the rest of the API keeps its pool. ``/health`` needs no thread at all.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import FastAPI, Request

T = TypeVar("T")


def install_heavy_limiter(app: FastAPI, threads: int) -> None:
    """In the lifespan: the limiter belongs to the event loop that serves the app."""
    app.state.heavy_limiter = CapacityLimiter(threads)


async def run_heavy(request: Request, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on one of the heavy threads (waiting for one if all are busy)."""
    limiter: CapacityLimiter = request.app.state.heavy_limiter
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=limiter)
