"""The generation service's life in the API process: built and started in the lifespan.

The engine loads in a background task so that ``/health`` answers at once and ``/ready`` turns
true when the engine can generate; until then ``/generate`` answers 503 with Retry-After.
A test (or an embedding program) may put its own ``PlanGenerator`` on ``app.state.generator``
before start-up: it is used as is, and not stopped at shutdown (its owner stops it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from app.metrics import ENGINE_READY, GENERATE_QUEUE_DEPTH
from ttalkkac.errors import EngineUnavailable
from ttalkkac.inference.service import PlanGenerator

logger = logging.getLogger(__name__)

SERVING_MODE = "lora"  # per-request LoRA adapters; issue 7 adds "merged"


async def start_serving(app: FastAPI) -> None:
    from ttalkkac.inference.factory import build_generator

    settings = app.state.settings
    generator: PlanGenerator | None = getattr(app.state, "generator", None)
    app.state.owns_generator = generator is None
    app.state.serving_task = None
    if generator is None and not settings.serving_enabled:
        logger.info("SERVING_ENABLED is false: no generation engine in this process")
        return
    if generator is None:
        if settings.serving_mode == "merged":
            logger.warning("SERVING_MODE=merged is not available yet; serving per-request LoRA")
        generator = build_generator(settings)
        app.state.generator = generator
    GENERATE_QUEUE_DEPTH.set_function(generator.waiting)
    if generator.state == "created":
        app.state.serving_task = asyncio.create_task(_start(generator))


async def _start(generator: PlanGenerator) -> None:
    try:
        await generator.start()
    except Exception:  # logged by the generator; /ready reports the error
        return
    ENGINE_READY.labels(generator.engine.name, SERVING_MODE).set(1)


async def stop_serving(app: FastAPI) -> None:
    generator: PlanGenerator | None = getattr(app.state, "generator", None)
    task = getattr(app.state, "serving_task", None)
    if task is not None and not task.done():
        # The engine start runs in a thread that cannot be interrupted; let it finish so
        # that the engine process it spawned is stopped below instead of leaking.
        await asyncio.wait([task])
    if generator is not None and getattr(app.state, "owns_generator", False):
        ENGINE_READY.labels(generator.engine.name, SERVING_MODE).set(0)
        await generator.stop()


def get_generator(request: Request) -> PlanGenerator:
    generator = getattr(request.app.state, "generator", None)
    if generator is None:
        raise EngineUnavailable(
            "this API process runs no generation engine (SERVING_ENABLED=false)"
        )
    return generator


GeneratorDep = Annotated[PlanGenerator, Depends(get_generator)]
