"""The generation service's life in the API process: built and started in the lifespan.

The engine loads in a background task so that ``/health`` answers at once and ``/ready`` turns
true when the engine can generate; until then ``/generate`` answers 503 with Retry-After.

Serving modes (SERVING_MODE, ``ttalkkac.hardware.resolve_serving_mode``):
- ``lora``: the engine serves the base weights; every adapter, the active one included, is
  applied per request (vLLM loads an adapter on first use).
- ``merged``: the engine serves the active adapter merged into the weights; an
  ``AdapterSwitcher`` rebuilds and swaps the engine when the active adapter changes.

A test (or an embedding program) may put its own ``PlanGenerator`` on ``app.state.generator``
before start-up: it is used as is, and not stopped at shutdown (its owner stops it).

The generator's engines (``generator.engines``, an ``EngineHost``) are what the switcher swaps
and what ``/ready`` reports on.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from app.metrics import (
    ADAPTER_SWITCH_SECONDS,
    ADAPTER_SWITCHES,
    ENGINE_READY,
    GENERATE_QUEUE_DEPTH,
    SERVING_MODE,
)
from ttalkkac.adapters import AdapterRef, ref_from_row
from ttalkkac.errors import EngineUnavailable
from ttalkkac.hardware import choose_base_model, resolve_serving_mode
from ttalkkac.inference.service import PlanGenerator
from ttalkkac.inference.switcher import AdapterSwitcher
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database

logger = logging.getLogger(__name__)


async def start_serving(app: FastAPI) -> None:
    from ttalkkac.inference.factory import build_engine, build_generator

    settings: Settings = app.state.settings
    generator: PlanGenerator | None = getattr(app.state, "generator", None)
    app.state.owns_generator = generator is None
    app.state.serving_task = None
    app.state.switcher = None
    app.state.serving_mode = "lora"
    if generator is None and not settings.serving_enabled:
        logger.info("SERVING_ENABLED is false: no generation engine in this process")
        return
    if generator is None:
        mode = resolve_serving_mode(settings)
        generator = build_generator(settings, mode=mode)
        app.state.generator = generator
        app.state.serving_mode = mode
        if mode == "merged":
            choice = choose_base_model(settings)
            base = choice.model
            app.state.switcher = AdapterSwitcher(
                generator.engines,
                base_model=base,
                build_engine=lambda weights, adapter: build_engine(
                    settings,
                    base_model=base,
                    mode="merged",
                    weights=weights,
                    merged_adapter=adapter,
                ),
                read_active=partial(read_active_adapter, app.state.db, settings, base),
                prepare_base=choice.prepare,
                sync_interval_s=settings.adapter_sync_interval_s,
                on_switch=_record_switch,
                method=settings.adapter_switch,
            )
    logger.info("serving mode: %s", app.state.serving_mode)
    SERVING_MODE.labels(app.state.serving_mode).set(1)
    GENERATE_QUEUE_DEPTH.set_function(generator.waiting)
    if generator.engines.state == "created":
        app.state.serving_task = asyncio.create_task(
            _start(generator, app.state.switcher, app.state.serving_mode)
        )


def read_active_adapter(db: Database, settings: Settings, base_model: str) -> AdapterRef | None:
    """The registry's active adapter, checked and ready to merge; None: the base model."""
    with db.session() as session:
        row = crud.get_active_adapter(session)
        return None if row is None else ref_from_row(row, settings, base_model)


def _record_switch(outcome: str, seconds: float) -> None:
    ADAPTER_SWITCHES.labels(outcome).inc()
    if outcome == "ok":
        ADAPTER_SWITCH_SECONDS.observe(seconds)


async def _start(generator: PlanGenerator, switcher: AdapterSwitcher | None, mode: str) -> None:
    try:
        if switcher is not None:
            await switcher.prepare()
        await generator.start()
    except Exception as exc:  # logged; /ready reports the error
        if generator.engines.state != "failed":  # the base model could not be prepared
            logger.exception("serving could not start")
            generator.engines.mark_failed(exc)
        return
    ENGINE_READY.labels(generator.engine.name, mode).set(1)
    if switcher is not None:
        switcher.start_watching()


async def stop_serving(app: FastAPI) -> None:
    generator: PlanGenerator | None = getattr(app.state, "generator", None)
    task = getattr(app.state, "serving_task", None)
    if task is not None and not task.done():
        # The engine start runs in a thread that cannot be interrupted; let it finish so
        # that the engine process it spawned is stopped below instead of leaking.
        await asyncio.wait([task])
    switcher: AdapterSwitcher | None = getattr(app.state, "switcher", None)
    if switcher is not None:
        await switcher.stop()
    if generator is not None and getattr(app.state, "owns_generator", False):
        ENGINE_READY.labels(generator.engine.name, app.state.serving_mode).set(0)
        await generator.stop()


def notify_active_changed(request: Request, active: AdapterRef | None) -> None:
    """After an activation: in merged mode, start switching the engine (in the background)."""
    switcher: AdapterSwitcher | None = getattr(request.app.state, "switcher", None)
    if switcher is not None:
        switcher.request(active)


def get_generator(request: Request) -> PlanGenerator:
    generator = getattr(request.app.state, "generator", None)
    if generator is None:
        raise EngineUnavailable(
            "this API process runs no generation engine (SERVING_ENABLED=false)"
        )
    return generator


GeneratorDep = Annotated[PlanGenerator, Depends(get_generator)]
