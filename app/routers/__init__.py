"""One router module per resource; ``include_routers`` wires them into the app."""

from __future__ import annotations

from fastapi import FastAPI


def include_routers(app: FastAPI) -> None:
    # Each resource's router is added here as it is built.
    pass
