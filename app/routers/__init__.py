"""One router module per resource; ``include_routers`` wires them into the app."""

from __future__ import annotations

from fastapi import FastAPI


def include_routers(app: FastAPI) -> None:
    # Each resource's router is added here as it is built.
    from app.routers import datasets, train

    app.include_router(datasets.router)  # training
    app.include_router(train.router)  # training

    from app.routers import adapters, generate, health

    app.include_router(generate.router)  # serving
    app.include_router(adapters.router)  # serving
    app.include_router(health.router)  # serving
