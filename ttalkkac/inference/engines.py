"""``EngineHost``: the one owner of a service's engines; ``lease(adapter)`` is how requests get one.

The host starts the engine (and proves it generates: one short warm-up run), stops it, swaps it
for another at run time, restarts it when its process dies, and, in merged serving, owns the
LoRA engine and decides which engine serves which adapter. Callers never hold an engine beyond
one request: they ``async with host.lease(adapter) as (engine, apply):`` and run the request on
``engine`` with ``apply`` as its adapter (None: nothing to apply). Keeping all of this in one
place is what makes a swap safe: only the host knows which engines are still leased.

Swaps are atomic (merged serving, ``ttalkkac.inference.switcher``): the serving engine is one
attribute, read once per lease before any await, so new leases get the new engine while leases
already taken finish on the old one, which is stopped once its last lease is returned.

Weights can also change in place (``reload``; vLLM): new leases wait at a gate, the leases taken
before it are returned (their requests finish on the old weights), the engine loads the new
weights, and the gate opens. One engine, no compilation, and no request sees two sets of weights:
a request holds its lease for all its chunks and retries. While such a switch merges and loads,
requests for the adapter it brings wait for it (``expect``) instead of starting the LoRA
engine: right after an activation, the adapter's first plan takes the switch's seconds, not the
LoRA engine's minutes.

Merged serving routes by adapter: an engine whose weights have an adapter merged in
(``engine.merged_adapter``) runs without LoRA and serves exactly that adapter (or, on the base
weights, the base model). Any other adapter, and the base model while an adapter is merged, go to
the LoRA engine: the base weights with per-request LoRA, started by the first lease that needs it
(when configured; else ``Conflict``). It serves base + adapter whatever is merged, so a swap
leaves it alone.

A lease whose request fails with ``EngineUnavailable`` on an engine that is no longer ready (its
process crashed) restarts the serving engine in the background, once; a dead LoRA engine is
dropped instead, and the next lease that needs it starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

from ttalkkac.adapters import AdapterRef, adapter_key
from ttalkkac.errors import Conflict, EngineUnavailable
from ttalkkac.inference.base import Engine, EngineRequest, EngineResult, ReloadableEngine
from ttalkkac.prompts import render_prompt

logger = logging.getLogger(__name__)

WARMUP_MEETING = "[00:01] Speaker_A: 다음 주까지 시장 조사를 마치겠습니다."

HostState = Literal[
    "created", "preparing", "loading", "warming", "ready", "restarting", "failed", "stopped"
]


class EngineHost:
    """The serving engine, merged serving's LoRA engine, and the leases on them.

    ``build_lora_engine`` (merged serving with ENABLE_LORA): builds the engine, on the base
    weights with LoRA, for the requests that the merged weights do not serve.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        warmup: bool = True,
        build_lora_engine: Callable[[], Engine] | None = None,
    ) -> None:
        self._engine = engine
        self._build_lora_engine = build_lora_engine
        self._lora_engine: Engine | None = None
        self._lora_engine_lock = asyncio.Lock()
        self._lora_start: asyncio.Task[Engine] | None = None
        self.lora_engine_error: str | None = None
        self._lora_stop_task: asyncio.Task[None] | None = None
        self.warmup_enabled = warmup
        self.state: HostState = "created"
        self.error: str | None = None
        self._leases: dict[int, int] = {}
        self._drained: dict[int, asyncio.Event] = {}
        self._restart_task: asyncio.Task[None] | None = None
        # Set while weights load in place: new leases wait for it (routing reads the weights).
        self._reload_gate: asyncio.Event | None = None
        # The adapter an in-place switch is bringing (merging, then loading): its requests wait
        # for it rather than start the LoRA engine (minutes on a CPU) for a few seconds' gap.
        self._incoming: tuple[tuple[str, str, str] | None, asyncio.Event] | None = None

    # --- state -----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine that takes new requests (merged serving: the one with the merged weights)."""
        return self._engine

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self._engine.ready

    def status(self) -> str:
        """The state, with a dead engine that has not been noticed yet shown as such."""
        if self.state == "ready" and not self._engine.ready:
            return "engine_dead"
        return self.state

    def require_ready(self) -> None:
        """``EngineUnavailable`` unless the serving engine can take a request now."""
        if self.state == "failed":
            raise EngineUnavailable(f"the {self._engine.name} engine failed to start: {self.error}")
        if not self.ready:
            raise EngineUnavailable(
                f"the engine is not ready ({self.status()}); retry shortly", retry_after_s=10
            )

    def mark_preparing(self) -> None:
        """Start-up is choosing the first engine's weights (merged serving: merging them)."""
        self.state = "preparing"

    def mark_failed(self, exc: BaseException) -> None:
        """Start-up failed (also before the engine started: the base model could not be built)."""
        self.state = "failed"
        self.error = f"{type(exc).__name__}: {exc}"

    @property
    def lora_engine(self) -> Engine | None:
        return self._lora_engine

    def lora_engine_status(self) -> str | None:
        """Merged serving's LoRA engine: off | not started | starting | ready | failed: why."""
        if self._build_lora_engine is None:
            return None if self._engine.enable_lora else "off"  # lora mode: the engine itself
        if self._lora_engine is None:
            return f"failed: {self.lora_engine_error}" if self.lora_engine_error else "not started"
        return "ready" if self._lora_engine.ready else "starting"

    def loaded_adapters(self) -> list[str]:
        names = self._engine.loaded_adapters()
        if self._lora_engine is not None:
            names += [n for n in self._lora_engine.loaded_adapters() if n not in names]
        return names

    # --- lifecycle -------------------------------------------------------------------------

    def set_engine(self, engine: Engine) -> None:
        """Replace the engine before it starts (merged mode picks its weights at start-up)."""
        if self.state not in ("created", "preparing"):
            raise RuntimeError(f"set_engine after start (state {self.state}); use swap")
        self._engine = engine

    async def start(self) -> None:
        """Load the engine and, when enabled, prove it generates (one short warm-up run)."""
        self.state = "loading"
        try:
            await self._engine.start()
            if self.warmup_enabled:
                self.state = "warming"
                await self.warmup()
        except Exception as exc:
            self.mark_failed(exc)
            logger.exception("the %s engine failed to start", self._engine.name)
            raise
        self.state = "ready"

    async def warmup(self, engine: Engine | None = None) -> EngineResult:
        """One short generation: the first user request then does not pay for lazy set-up."""
        engine = engine or self._engine
        prompt = render_prompt(engine.tokenizer, WARMUP_MEETING)
        ids = engine.tokenizer.encode(prompt, add_special_tokens=False)
        started = time.perf_counter()
        result = await engine.generate(
            EngineRequest(ids, max_tokens=16, temperature=0.0, seed=0, request_id="warmup")
        )
        if result.completion_tokens < 1:
            raise RuntimeError("warm-up generation produced no tokens")
        logger.info("warm-up generation done in %.2f s", time.perf_counter() - started)
        return result

    async def stop(self) -> None:
        self.state = "stopped"
        if self._lora_start is not None and not self._lora_start.done():
            await asyncio.wait([self._lora_start])  # then stop what it started, not before
        lora_engine, self._lora_engine = self._lora_engine, None
        if lora_engine is not None:
            await lora_engine.stop()
        await self._engine.stop()

    async def swap(self, new: Engine, *, warmup: bool | None = None) -> None:
        """Start ``new``, route new leases to it, stop the old one once its leases are returned.

        If ``new`` fails to start or to warm up, it is stopped and the old engine keeps serving.
        """
        try:
            await new.start()
            if self.warmup_enabled if warmup is None else warmup:
                await self.warmup(new)
        except BaseException:
            await new.stop()
            raise
        old, self._engine = self._engine, new
        if self._leases.get(id(old), 0):
            event = self._drained.setdefault(id(old), asyncio.Event())
            await event.wait()
        await old.stop()

    def can_reload(self) -> bool:
        """Whether the serving engine loads new weights in place (else: ``swap``)."""
        return isinstance(self._engine, ReloadableEngine)

    def expect(self, adapter: AdapterRef | None) -> None:
        """Requests for ``adapter`` wait (until ``arrived``) instead of being routed now.

        Called when an in-place switch to ``adapter`` is requested; a newer expectation
        releases the older one's waiters (they are routed as usual).
        """
        if self._incoming is not None:
            self._incoming[1].set()
        self._incoming = (adapter_key(adapter), asyncio.Event())

    def arrived(self) -> None:
        """The switch is over (done or failed): waiting requests are routed."""
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            incoming[1].set()

    async def reload(self, weights: str, merged_adapter: AdapterRef | None) -> None:
        """Load ``weights`` (``merged_adapter`` folded into the base) into the serving engine.

        New leases wait until the load is done; leases already taken are returned first, so
        their requests finish on the old weights. A failed load leaves the old weights serving
        (the engine loads them back); an engine that could not even do that is restarted.
        """
        engine = self._engine
        if not isinstance(engine, ReloadableEngine):
            raise RuntimeError(f"the {engine.name} engine cannot load weights in place")
        if self._reload_gate is not None:
            raise RuntimeError("weights are already being loaded")
        gate = self._reload_gate = asyncio.Event()
        try:
            if self._leases.get(id(engine), 0):
                await self._drained.setdefault(id(engine), asyncio.Event()).wait()
            await engine.reload_weights(weights, merged_adapter)
        finally:
            self._reload_gate = None
            gate.set()
            if not engine.ready:
                self._schedule_restart(engine)

    # --- leases ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lease(
        self, adapter: AdapterRef | None
    ) -> AsyncIterator[tuple[Engine, AdapterRef | None]]:
        """The engine that serves ``adapter`` exactly, and what it must apply (None: nothing).

        The engine stays running until the lease is returned, even if a swap replaces it, and
        keeps its weights until then: an in-place load waits for every lease on it.
        """
        while True:
            if (gate := self._reload_gate) is not None:
                await gate.wait()
            elif (
                (incoming := self._incoming) is not None
                and incoming[0] == adapter_key(adapter)
                and incoming[0] != adapter_key(self._engine.merged_adapter)
            ):
                await incoming[1].wait()
            else:
                break
        engine, served = self._engine, adapter  # taken before any await: a swap cannot stop it
        try:
            merged = engine.merged_adapter
            if adapter_key(adapter) == adapter_key(merged):
                served = None  # the weights are what was asked for
            elif merged is not None or not engine.enable_lora:
                engine = await self._ensure_lora_engine(adapter, merged)
            key = id(engine)
            self._leases[key] = self._leases.get(key, 0) + 1
            try:
                yield engine, served
            finally:
                self._leases[key] -= 1
                if not self._leases[key]:
                    del self._leases[key]
                    if key in self._drained:
                        self._drained.pop(key).set()
        except EngineUnavailable:
            if not engine.ready:
                self._schedule_restart(engine)
            raise

    async def _ensure_lora_engine(
        self, adapter: AdapterRef | None, merged: AdapterRef | None
    ) -> Engine:
        """The LoRA engine, started (and warmed up) by the first request that needs it."""
        if self._build_lora_engine is None:
            asked = f"adapter {adapter.name!r}" if adapter else "the base model"
            serving = f"the active adapter {merged.name!r}" if merged else "the base model"
            raise Conflict(
                f"{asked} is not served here: this service serves only {serving}, merged into "
                "the weights, with ENABLE_LORA=false (SERVING_MODE=merged); activate it, or "
                "enable ENABLE_LORA"
            )
        engine = self._lora_engine
        if engine is not None and engine.ready:
            return engine
        async with self._lora_engine_lock:
            if self._lora_engine is not None and self._lora_engine.ready:
                return self._lora_engine
            if self._lora_start is None or self._lora_start.done():
                if self.state == "stopped":
                    raise EngineUnavailable("the service is stopping")
                self._lora_start = asyncio.create_task(self._start_lora_engine())
                # Its failure is read by its waiters; with none left it is not "never retrieved".
                self._lora_start.add_done_callback(lambda t: t.cancelled() or t.exception())
            start = self._lora_start
        # Shielded: a request that goes away (a closed stream, a cancelled evaluation) must not
        # cancel a start that other requests wait for, nor leave a half-built engine (vLLM's
        # engine process) running with no owner.
        return await asyncio.shield(start)

    async def _start_lora_engine(self) -> Engine:
        assert self._build_lora_engine is not None
        logger.info("starting the LoRA engine (base weights) for adapters not merged")
        engine = self._lora_engine = self._build_lora_engine()
        try:
            await engine.start()
            if self.warmup_enabled:
                await self.warmup(engine)
        except Exception as exc:
            self._lora_engine = None
            self.lora_engine_error = f"{type(exc).__name__}: {exc}"
            logger.exception("the LoRA engine failed to start")
            await engine.stop()
            raise EngineUnavailable(
                f"the LoRA engine (for adapters other than the merged one) failed to "
                f"start: {self.lora_engine_error}",
                retry_after_s=30,
            ) from exc
        self.lora_engine_error = None
        return engine

    # --- restarts --------------------------------------------------------------------------

    def _schedule_restart(self, engine: Engine) -> None:
        """A dead engine (its process crashed) is restarted in the background, once.

        A dead LoRA engine is dropped instead: the next request that needs it starts a new one.
        """
        if engine is self._lora_engine:
            logger.error("the LoRA engine died; the next request for it starts a new one")
            self._lora_engine = None
            self.lora_engine_error = "the LoRA engine died"
            self._lora_stop_task = asyncio.create_task(engine.stop())
            return
        if engine is not self._engine or self.state != "ready":
            return
        if self._restart_task is not None and not self._restart_task.done():
            return
        logger.error("the %s engine died; restarting it", engine.name)
        self.state = "restarting"
        self._restart_task = asyncio.create_task(self._restart(engine))

    async def _restart(self, engine: Engine) -> None:
        try:
            await engine.stop()
        except Exception:
            logger.exception("stopping the dead engine failed; starting a new one anyway")
        try:
            await self.start()
        except Exception:
            return  # state "failed", error recorded by start()
