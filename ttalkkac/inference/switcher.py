"""Merged serving's control loop: keep the serving engine merged with the active adapter.

- At start-up (``prepare``), before the engines start: the active adapter is merged into the
  base weights (or its cached merged folder reused) and the first engine loads those weights.
- When the active adapter changes (``request``, called by the activation endpoint, and by
  ``watch``, which polls the registry so that activations made through another API replica
  are picked up too): the new merged folder is built in a thread (or its cached one reused),
  then loaded **in place** into the running engine (``EngineHost.reload``: the plans in flight
  finish on the old weights, new ones wait a moment, then run on the new weights; one engine,
  no recompilation). Where that cannot work (``in_place_blocker``: an engine without in-place
  loading, an adapter that trains the embeddings or the LM head, which a reload does not
  re-tie, a base model that is not a local folder, or ADAPTER_SWITCH=new_engine), a new engine
  is started beside the serving one and swapped in atomically (``EngineHost.swap``); requests
  keep flowing on the old engine meanwhile. Requests for an adapter that is not the merged one
  go to the host's LoRA engine (base weights), which a switch does not touch.
- Switches are coalesced: activating A then B while A's engine is still starting ends on B.
  A failed switch keeps the serving engine, is reported in ``status()``, and is not retried by
  ``watch`` for the same adapter files (an explicit activation retries it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ttalkkac.adapters import AdapterRef, adapter_key, trains_embeddings
from ttalkkac.inference.base import Engine
from ttalkkac.inference.engines import EngineHost
from ttalkkac.inference.merge import ensure_merged

logger = logging.getLogger(__name__)

BuildEngine = Callable[[str | None, AdapterRef | None], Engine]
"""Builds an engine (not started) for merged weights (None: the base weights) and their adapter."""


_NO_FAILURE = ("", "", "no failure")  # None is a real key: the base weights

SwitchMethod = Literal["in_place", "new_engine"]


def _label(adapter: AdapterRef | None) -> str:
    return adapter.name if adapter is not None else "base"


class AdapterSwitcher:
    def __init__(
        self,
        engines: EngineHost,
        *,
        base_model: str,
        build_engine: BuildEngine,
        read_active: Callable[[], AdapterRef | None],
        prepare_base: Callable[[], object] | None = None,
        sync_interval_s: float = 5.0,
        on_switch: Callable[[str, float], None] | None = None,
        method: SwitchMethod = "in_place",
    ) -> None:
        self.engines = engines
        self.base_model = base_model
        self._build_engine = build_engine
        self._read_active = read_active
        self._prepare_base = prepare_base
        self.sync_interval_s = sync_interval_s
        self._on_switch = on_switch or (lambda outcome, seconds: None)
        self.method: SwitchMethod = method
        self.last_switch_method: SwitchMethod | None = None
        self._wanted: AdapterRef | None = None
        self._task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._failed_key: tuple[str, str, str] | None = _NO_FAILURE
        self._read_error: str | None = None
        self.switching_to: str | None = None
        self.last_switch_s: float | None = None
        self.switches = 0
        self.error: str | None = None

    @property
    def merged_adapter(self) -> AdapterRef | None:
        """The adapter in the weights of the engine that takes new requests."""
        return self.engines.engine.merged_adapter

    def status(self) -> dict[str, Any]:
        merged = self.merged_adapter
        return {
            "merged_adapter": merged.name if merged else None,
            "switching_to": self.switching_to,
            "last_switch_s": self.last_switch_s,
            "last_switch_method": self.last_switch_method,
            "switch_error": self.error,
        }

    # --- start-up --------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Give the (not yet started) host an engine on the active adapter's merged weights.

        A failure (the adapter's files unreadable, the merge failing) is logged and reported;
        the service then starts on the base weights (other adapters through the LoRA engine).
        """
        self.engines.mark_preparing()
        if self._prepare_base is not None:
            await asyncio.to_thread(self._prepare_base)
        try:
            active = await asyncio.to_thread(self._read_active)
        except Exception as exc:
            self._report_read_error(exc)
            return
        self._wanted = active
        if active is None:
            return
        started = time.perf_counter()
        try:
            engine = await self._engine_for(active)
        except Exception as exc:
            self._failed(active, exc, time.perf_counter() - started)
            return
        self.engines.set_engine(engine)

    async def _engine_for(self, target: AdapterRef | None) -> Engine:
        return self._build_engine(await self._weights_for(target), target)

    async def _weights_for(self, target: AdapterRef | None) -> str | None:
        """The merged folder of ``target`` (None: the base weights, as the engine names them)."""
        if target is None:
            return None
        return str(await asyncio.to_thread(ensure_merged, self.base_model, target))

    def in_place_blocker(self, target: AdapterRef | None) -> str | None:
        """Why ``target`` cannot be loaded into the running engine (None: it can)."""
        if self.method == "new_engine":
            return "ADAPTER_SWITCH=new_engine"
        if not self.engines.can_reload():
            return f"the {self.engines.engine.name} engine cannot load weights in place"
        if target is None and not Path(self.base_model).is_dir():
            return f"the base model {self.base_model!r} is not a local folder"
        for adapter in (target, self.merged_adapter):  # loading over one is as wrong as it
            if adapter is not None and trains_embeddings(adapter):
                return (
                    f"adapter {adapter.name!r} trains the embeddings or the LM head, which a "
                    "load in place does not re-tie"
                )
        return None

    async def _switch(self, target: AdapterRef | None) -> SwitchMethod:
        blocker = self.in_place_blocker(target)
        if blocker is None:
            weights = await self._weights_for(target) or self.base_model
            await self.engines.reload(weights, target)
            return "in_place"
        logger.info("switching with a new engine: %s", blocker)
        await self.engines.swap(await self._engine_for(target))
        return "new_engine"

    # --- switching -------------------------------------------------------------------------

    def request(self, target: AdapterRef | None, *, retry_failed: bool = True) -> None:
        """Serve ``target`` merged (None: the base weights); switches in the background."""
        if not retry_failed and adapter_key(target) == self._failed_key:
            return
        self._wanted = target
        if self.engines.state == "ready" and self.in_place_blocker(target) is None:
            self.engines.expect(target)  # its requests wait for the weights, seconds away
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def wait(self) -> None:
        """Until the switch in progress (if any) has finished."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            await self._switch_until_wanted()
        finally:
            self.engines.arrived()

    async def _switch_until_wanted(self) -> None:
        while adapter_key(self._wanted) != adapter_key(self.merged_adapter):
            if self.engines.state != "ready":
                return  # not serving yet (or failed): start-up or the next request decides
            target = self._wanted
            self.switching_to = _label(target)
            started = time.perf_counter()
            logger.info(
                "switching the engine from %s to %s merged",
                _label(self.merged_adapter),
                _label(target),
            )
            try:
                method = await self._switch(target)
            except Exception as exc:
                self.switching_to = None
                self._failed(target, exc, time.perf_counter() - started)
                return
            seconds = time.perf_counter() - started
            self.last_switch_s = round(seconds, 2)
            self.last_switch_method = method
            self.switches += 1
            self.error, self._failed_key = None, _NO_FAILURE
            self._on_switch("ok", seconds)
            logger.info(
                "now serving %s merged (switch %s took %.1f s)", _label(target), method, seconds
            )
        self.switching_to = None

    def _failed(self, target: AdapterRef | None, exc: Exception, seconds: float) -> None:
        self.error = f"switch to {_label(target)} failed: {type(exc).__name__}: {exc}"
        self._failed_key = adapter_key(target)
        self._on_switch("failed", seconds)
        logger.error(
            "%s; still serving %s merged", self.error, _label(self.merged_adapter), exc_info=exc
        )

    # --- following the registry ------------------------------------------------------------

    def start_watching(self) -> None:
        if self._watch_task is None:
            self._watch_task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        last_read = adapter_key(self._wanted)
        while True:
            await asyncio.sleep(self.sync_interval_s)
            try:
                active = await asyncio.to_thread(self._read_active)
            except Exception as exc:
                self._report_read_error(exc)
                continue
            self._read_error = None
            # Act on a change in the registry, or on a mismatch while no switch runs. Not on
            # a read that merely lags an activation this process has just requested.
            changed = adapter_key(active) != last_read
            idle = self._task is None or self._task.done()
            if changed or (idle and adapter_key(active) != adapter_key(self.merged_adapter)):
                self.request(active, retry_failed=False)
            last_read = adapter_key(active)

    def _report_read_error(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message != self._read_error:  # once per distinct problem, not every poll
            logger.error("cannot read the active adapter: %s", message)
        self._read_error = message

    async def stop(self) -> None:
        """Stop following the registry; let a switch in progress finish.

        An engine start cannot be interrupted (it runs in a thread and spawns the engine
        process): cancelling it would leak that process. The host's owner stops whichever
        engine serves afterwards.
        """
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
