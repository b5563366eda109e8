"""``PlanGenerator``: meeting in, validated ``ProjectPlan`` out, on any engine.

Per request: meeting -> prompt text -> token count -> chunks when the prompt and the answer do not
fit the engine's context -> one generation per chunk (concurrently; the engine batches them) ->
``ProjectPlan.model_validate_json`` -> on failure one retry with another seed (an answer cut off at
``max_tokens`` is retried under the compact plan schema, which cannot be cut off:
``ttalkkac.inference.schema.compact_json_schema``) -> merge of the chunk plans
(``ttalkkac.plan.merge_plans``). A plan that never validates is ``GenerationInvalid`` (502)
with what failed; an unvalidated plan is never returned.

Admission is bounded: past ``max_waiting_requests`` requests inside the generator, new ones get
``EngineUnavailable`` with a ``retry_after_s`` estimate (503 + Retry-After) instead of queueing
without bound.

The engine is held behind one attribute and leased per request, so ``swap_engine`` can replace it
atomically (merged serving, ``ttalkkac.inference.switcher``): new requests go to the new engine,
requests already leased finish on the old one, which is stopped once its last lease is returned.

Merged serving routes by adapter: an engine whose weights have an adapter merged in
(``engine.merged_adapter``) runs without LoRA and serves exactly that adapter (or, on the base
weights, the base model). Any other adapter, and the base model while an adapter is merged, go to
the LoRA engine: the base weights with per-request LoRA, started on the first such request (when
configured; else ``Conflict``). It serves base + adapter whatever is merged, so a switch leaves it
alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ttalkkac.adapters import AdapterRef, adapter_key
from ttalkkac.errors import (
    Conflict,
    EngineUnavailable,
    GenerationInvalid,
    InvalidInput,
    PayloadTooLarge,
)
from ttalkkac.inference.base import Engine, EngineRequest, EngineResult
from ttalkkac.inference.schema import compact_json_schema
from ttalkkac.meetings import CHUNK_CHARS, CHUNK_OVERLAP, Utterance, chunk_text, meeting_text
from ttalkkac.plan import ProjectPlan, merge_plans
from ttalkkac.prompts import render_prompt

logger = logging.getLogger(__name__)

MIN_CHUNK_CHARS = 1200
RETRY_MIN_TEMPERATURE = 0.3  # a retry at temperature 0 would repeat the failed answer
WARMUP_MEETING = "[00:01] Speaker_A: 다음 주까지 시장 조사를 마치겠습니다."


@dataclass
class PlanResult:
    plan: ProjectPlan
    adapter: str | None
    base_model: str
    engine: str
    usage: dict[str, int]
    timings: dict[str, float]
    chunks: int
    warnings: list[str] = field(default_factory=list)
    retries: int = 0


@dataclass
class _ChunkOutcome:
    plan: ProjectPlan
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_ms: float = 0.0
    retries: int = 0
    warnings: list[str] = field(default_factory=list)


class PlanGenerator:
    def __init__(
        self,
        engine: Engine,
        *,
        max_waiting_requests: int = 64,
        max_meeting_chars: int = 200_000,
        default_max_tokens: int = 2048,
        default_temperature: float = 0.2,
        repetition_penalty: float = 1.0,
        warmup: bool = True,
        build_lora_engine: Callable[[], Engine] | None = None,
    ) -> None:
        self._engine = engine
        # Merged serving: builds the engine for requests the merged weights do not serve.
        self._build_lora_engine = build_lora_engine
        self._lora_engine: Engine | None = None
        self._lora_engine_lock = asyncio.Lock()
        self.lora_engine_error: str | None = None
        self._lora_stop_task: asyncio.Task[None] | None = None
        self.max_waiting_requests = max_waiting_requests
        self.max_meeting_chars = max_meeting_chars
        self.default_max_tokens = default_max_tokens
        self.default_temperature = default_temperature
        self.repetition_penalty = repetition_penalty
        self.warmup_enabled = warmup
        # created | preparing | loading | warming | ready | restarting | failed | stopped
        self.state = "created"
        self.error: str | None = None
        self._waiting = 0
        self._leases: dict[int, int] = {}
        self._drained: dict[int, asyncio.Event] = {}
        self._latency_s = 5.0  # moving average of request latency, for Retry-After
        self._restart_task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        engine: Engine,
        settings: Any,
        *,
        build_lora_engine: Callable[[], Engine] | None = None,
    ) -> PlanGenerator:
        return cls(
            engine,
            build_lora_engine=build_lora_engine,
            max_waiting_requests=settings.max_waiting_requests,
            max_meeting_chars=settings.max_meeting_chars,
            default_max_tokens=settings.default_max_tokens,
            default_temperature=settings.default_temperature,
            repetition_penalty=settings.repetition_penalty,
            warmup=settings.warmup,
        )

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self._engine.ready

    def status(self) -> str:
        """The state, with a dead engine that has not been noticed yet shown as such."""
        if self.state == "ready" and not self._engine.ready:
            return "engine_dead"
        return self.state

    def waiting(self) -> int:
        """Requests admitted and not finished (queued in or running on the engine)."""
        return self._waiting

    def set_engine(self, engine: Engine) -> None:
        """Replace the engine before it starts (merged mode picks its weights at start-up)."""
        if self.state not in ("created", "preparing"):
            raise RuntimeError(f"set_engine after start (state {self.state}); use swap_engine")
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
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
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
        lora_engine, self._lora_engine = self._lora_engine, None
        if lora_engine is not None:
            await lora_engine.stop()
        await self._engine.stop()

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

    async def swap_engine(self, new: Engine, *, warmup: bool | None = None) -> None:
        """Start ``new``, route new requests to it, stop the old one once its requests finish.

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

    @asynccontextmanager
    async def _lease(
        self, adapter: AdapterRef | None
    ) -> AsyncIterator[tuple[Engine, AdapterRef | None]]:
        """The engine that serves ``adapter`` exactly, and what it must apply (None: nothing)."""
        engine, served = self._engine, adapter  # taken before any await: a swap cannot stop it
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

    # --- generation ----------------------------------------------------------------------

    def check_meeting(self, meeting: str | list[Utterance] | list[dict[str, Any]]) -> str:
        """The meeting's prompt text, or ``InvalidInput``/``PayloadTooLarge`` naming the problem."""
        if isinstance(meeting, list) and not meeting:
            raise InvalidInput("meeting: the utterance list is empty")
        try:
            text = meeting_text(meeting)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(f"meeting: utterance {where}: {first['msg']}") from exc
        if not text.strip():
            raise InvalidInput("meeting is empty (only whitespace)")
        if len(text) > self.max_meeting_chars:
            raise PayloadTooLarge(
                f"meeting has {len(text):,} characters; the limit is {self.max_meeting_chars:,}"
            )
        return text

    async def generate(
        self,
        meeting: str | list[Utterance] | list[dict[str, Any]],
        *,
        adapter: AdapterRef | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        request_id: str = "",
    ) -> PlanResult:
        text = self.check_meeting(meeting)
        max_tokens = max_tokens or self.default_max_tokens
        temperature = self.default_temperature if temperature is None else temperature
        seed = random.randrange(2**31) if seed is None else seed
        if self.state == "failed":
            raise EngineUnavailable(f"the {self._engine.name} engine failed to start: {self.error}")
        if not self.ready:
            raise EngineUnavailable(
                f"the engine is not ready ({self.status()}); retry shortly", retry_after_s=10
            )
        if self._waiting >= self.max_waiting_requests:
            raise EngineUnavailable(
                f"{self._waiting} requests are already waiting (limit "
                f"{self.max_waiting_requests}); retry later",
                retry_after_s=self._retry_after(),
            )
        self._waiting += 1
        started = time.perf_counter()
        engine = self._engine
        try:
            async with self._lease(adapter) as (engine, served):
                chunks = await self._split(engine, text, max_tokens)
                outcomes = await asyncio.gather(
                    *(
                        self._generate_chunk(
                            engine,
                            chunk,
                            adapter=served,
                            max_tokens=max_tokens,
                            temperature=temperature,
                            seed=seed + 1000 * i,
                            request_id=f"{request_id or 'gen'}-{i}",
                            label=f"chunk {i + 1}/{len(chunks)}" if len(chunks) > 1 else "",
                        )
                        for i, chunk in enumerate(chunks)
                    )
                )
        except EngineUnavailable:
            if not engine.ready:
                self._schedule_restart(engine)
            raise
        finally:
            self._waiting -= 1
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._latency_s = 0.8 * self._latency_s + 0.2 * elapsed_ms / 1000
        warnings = [w for o in outcomes for w in o.warnings]
        if len(chunks) > 1:
            warnings.insert(
                0,
                f"the meeting did not fit the context ({engine.max_model_len} tokens with "
                f"max_tokens={max_tokens}); planned in {len(chunks)} chunks and merged",
            )
        queue_ms = max(o.queue_ms for o in outcomes)
        return PlanResult(
            plan=merge_plans([o.plan for o in outcomes]),
            adapter=adapter.name if adapter else None,
            base_model=engine.base_model,
            engine=engine.name,
            usage={
                "prompt_tokens": sum(o.prompt_tokens for o in outcomes),
                "completion_tokens": sum(o.completion_tokens for o in outcomes),
            },
            timings={
                "queue_ms": round(queue_ms, 1),
                "generate_ms": round(max(elapsed_ms - queue_ms, 0.0), 1),
            },
            chunks=len(chunks),
            warnings=warnings,
            retries=sum(o.retries for o in outcomes),
        )

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

    def _retry_after(self) -> int:
        return max(1, math.ceil(self._latency_s))

    async def _split(self, engine: Engine, text: str, max_tokens: int) -> list[str]:
        """The meeting as one prompt if it fits, else chunks (original rules) that each fit."""
        budget = engine.max_model_len - max_tokens
        overhead = await asyncio.to_thread(_prompt_tokens, engine.tokenizer, "")
        if overhead + 64 > budget:
            raise InvalidInput(
                f"max_tokens={max_tokens} leaves no room for a meeting in the engine's context "
                f"of {engine.max_model_len} tokens; ask for fewer tokens"
            )
        if await asyncio.to_thread(_prompt_tokens, engine.tokenizer, text) <= budget:
            return [text]
        chunk_chars, overlap = CHUNK_CHARS, CHUNK_OVERLAP
        while True:
            chunks = [c.text for c in chunk_text(text, chunk_chars, overlap)]
            longest = max(await asyncio.to_thread(_count_all, engine.tokenizer, chunks))
            if longest <= budget:
                return chunks
            if chunk_chars <= MIN_CHUNK_CHARS:
                raise InvalidInput(
                    f"even {chunk_chars}-character chunks of this meeting do not fit the context "
                    f"of {engine.max_model_len} tokens with max_tokens={max_tokens}"
                )
            # Shrink in proportion to the overflow (with margin); keep the original overlap
            # ratio once chunks get small.
            shrink = (budget - overhead) / max(longest - overhead, 1)
            chunk_chars = max(MIN_CHUNK_CHARS, int(chunk_chars * shrink * 0.9))
            overlap = min(CHUNK_OVERLAP, chunk_chars // 10)

    async def _generate_chunk(
        self,
        engine: Engine,
        text: str,
        *,
        adapter: AdapterRef | None,
        max_tokens: int,
        temperature: float,
        seed: int,
        request_id: str,
        label: str,
    ) -> _ChunkOutcome:
        prompt = render_prompt(engine.tokenizer, text)
        ids = engine.tokenizer.encode(prompt, add_special_tokens=False)
        outcome = _ChunkOutcome(plan=None)  # type: ignore[arg-type]
        failures: list[dict[str, Any]] = []
        attempts = [(seed, temperature), (seed + 1, max(temperature, RETRY_MIN_TEMPERATURE))]
        schema: dict[str, Any] | None = None  # the plan schema
        for attempt, (attempt_seed, attempt_temperature) in enumerate(attempts, start=1):
            result = await engine.generate(
                EngineRequest(
                    prompt_ids=ids,
                    prompt_text=prompt,
                    max_tokens=max_tokens,
                    temperature=attempt_temperature,
                    seed=attempt_seed,
                    adapter=adapter,
                    request_id=f"{request_id}-a{attempt}",
                    repetition_penalty=self.repetition_penalty,
                    json_schema=schema,
                )
            )
            outcome.prompt_tokens += result.prompt_tokens
            outcome.completion_tokens += result.completion_tokens
            if attempt == 1:
                outcome.queue_ms = result.queue_ms
            try:
                outcome.plan = ProjectPlan.model_validate_json(result.text)
            except ValidationError as exc:
                failures.append(_failure(attempt, attempt_seed, result, exc))
                logger.warning(
                    "[%s] attempt %d did not validate (%s, %d tokens): %s",
                    request_id,
                    attempt,
                    result.finish_reason,
                    result.completion_tokens,
                    failures[-1]["error"],
                )
                if result.finish_reason == "length":
                    # Cut off (a model looping inside a string, or a small budget): retry
                    # with the plan schema shrunk until no answer can be cut off.
                    schema = compact_json_schema(max_tokens)
                continue
            outcome.retries = len(failures)
            if failures:
                where = f"{label}: " if label else ""
                how = (
                    "a compact plan (fewer items, shorter texts) that fits max_tokens"
                    if schema is not None
                    else f"seed {attempt_seed}"
                )
                outcome.warnings.append(
                    f"{where}the first answer did not validate ({failures[0]['error']}); "
                    f"retried with {how}"
                )
            return outcome
        where = f" ({label})" if label else ""
        raise GenerationInvalid(
            f"the model's answer did not validate against the plan schema{where}, twice: "
            f"{failures[-1]['error']}",
            detail={"attempts": failures},
        )

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
            if self.state == "stopped":
                raise EngineUnavailable("the service is stopping")
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


def _count_all(tokenizer: Any, texts: list[str]) -> list[int]:
    return [_prompt_tokens(tokenizer, text) for text in texts]


def _prompt_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(render_prompt(tokenizer, text), add_special_tokens=False))


def _failure(attempt: int, seed: int, result: EngineResult, exc: ValidationError) -> dict[str, Any]:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    reason = f"{where}: {first['msg']}" if where else first["msg"]
    if result.finish_reason == "length":
        reason = f"cut off at max_tokens ({result.completion_tokens} tokens); {reason}"
    return {
        "attempt": attempt,
        "seed": seed,
        "finish_reason": result.finish_reason,
        "completion_tokens": result.completion_tokens,
        "error": reason,
        "output_tail": result.text[-200:],
    }
