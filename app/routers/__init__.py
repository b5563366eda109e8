"""One router module per resource; ``include_routers`` wires them into the app."""

from __future__ import annotations

from fastapi import FastAPI


def include_routers(app: FastAPI) -> None:
    from app.routers import adapters, datasets, evaluations, generate, health, plans, train

    for module in (datasets, train, generate, plans, evaluations, adapters, health):
        app.include_router(module.router)
