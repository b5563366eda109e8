"""``PlanGenerator``: meeting in, validated ``ProjectPlan`` out, on any engine.

Per request: admission -> meeting -> prompt text -> token count -> chunks when the prompt and
the answer do not fit the engine's context -> one validated plan per chunk (concurrently; the
engine batches them; ``ttalkkac.inference.retry`` validates and retries each) -> merge of the
chunk plans (``ttalkkac.plan.merge_plans``). A plan that never validates is ``GenerationInvalid``
(502) with what failed; an unvalidated plan is never returned.

Admission is bounded: past ``max_waiting_requests`` requests inside the generator, new ones get
``EngineUnavailable`` with a ``retry_after_s`` estimate (503 + Retry-After) instead of queueing
without bound.

``stream`` is the same request as an async iterator: its progress (``ttalkkac.inference.progress``),
then its result; closing the iterator early (a client that went away) cancels the request, and
with it the engine's work.

Engines are not this module's: ``ttalkkac.inference.engines.EngineHost`` starts, swaps and
restarts them and routes adapters; each request leases the engine that serves its adapter for
as long as it runs, so a swap never stops an engine under a request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ttalkkac.adapters import AdapterRef
from ttalkkac.errors import DeadlineExceeded, EngineUnavailable, InvalidInput, PayloadTooLarge
from ttalkkac.inference.base import Engine
from ttalkkac.inference.engines import EngineHost
from ttalkkac.inference.progress import (
    MIN_INTERVAL_S,
    PlanProgress,
    ProgressCallback,
    ProgressTracker,
)
from ttalkkac.inference.repetition import RepetitionStop
from ttalkkac.inference.retry import PlanValidity, generate_chunk
from ttalkkac.meetings import CHUNK_CHARS, CHUNK_OVERLAP, Utterance, chunk_text, meeting_text
from ttalkkac.plan import ProjectPlan, merge_plans
from ttalkkac.prompts import render_prompt

logger = logging.getLogger(__name__)

MIN_CHUNK_CHARS = 1200


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
    # The worst over chunks: every chunk valid on its first answer, or some only after a retry.
    validity: PlanValidity = PlanValidity.first_try


class PlanGenerator:
    """Admission, chunking and merge over the engines of ``engines``."""

    def __init__(
        self,
        engines: EngineHost,
        *,
        max_waiting_requests: int = 64,
        max_engine_requests: int = 256,
        max_chunks_per_request: int = 32,
        timeout_s: float | None = None,
        max_meeting_chars: int = 200_000,
        default_max_tokens: int = 2048,
        default_temperature: float = 0.2,
        repetition_penalty: float = 1.0,
        repetition_stop: RepetitionStop | None = None,
    ) -> None:
        self.engines = engines
        self.max_waiting_requests = max_waiting_requests
        self.max_engine_requests = max_engine_requests
        self.max_chunks_per_request = max_chunks_per_request
        self.timeout_s = timeout_s
        self.max_meeting_chars = max_meeting_chars
        self.default_max_tokens = default_max_tokens
        self.default_temperature = default_temperature
        self.repetition_penalty = repetition_penalty
        self.repetition_stop = repetition_stop
        self._waiting = 0
        self._engine_requests = 0  # chunk requests of the admitted generations
        self._latency_s = 5.0  # moving average of request latency, for Retry-After

    @classmethod
    def from_settings(cls, engines: EngineHost, settings: Any) -> PlanGenerator:
        return cls(
            engines,
            max_waiting_requests=settings.max_waiting_requests,
            max_engine_requests=settings.max_engine_requests,
            max_chunks_per_request=settings.max_chunks_per_request,
            timeout_s=settings.generate_timeout_s,
            max_meeting_chars=settings.max_meeting_chars,
            default_max_tokens=settings.default_max_tokens,
            default_temperature=settings.default_temperature,
            repetition_penalty=settings.repetition_penalty,
            repetition_stop=RepetitionStop(
                settings.repetition_stop_max_pattern, settings.repetition_stop_min_count
            )
            if settings.repetition_stop_max_pattern
            else None,
        )

    # --- lifecycle: the engines' -----------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine that takes new requests (``EngineHost.engine``)."""
        return self.engines.engine

    @property
    def ready(self) -> bool:
        return self.engines.ready

    async def start(self) -> None:
        await self.engines.start()

    async def stop(self) -> None:
        await self.engines.stop()

    def waiting(self) -> int:
        """Requests admitted and not finished (queued in or running on the engine)."""
        return self._waiting

    def engine_requests(self) -> int:
        """Engine requests (chunks) of the admitted generations, in flight or queued."""
        return self._engine_requests

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

    def check_admission(self, meeting: str | list[Utterance] | list[dict[str, Any]]) -> str:
        """What ``generate`` would refuse before it starts, raised now; the meeting's text.

        A stream answers these with an HTTP status before its first event; ``generate`` checks
        again when it is admitted (another request may have taken the last place meanwhile).
        """
        text = self.check_meeting(meeting)
        self.engines.require_ready()
        if self._waiting >= self.max_waiting_requests:
            raise EngineUnavailable(
                f"{self._waiting} requests are already waiting (limit "
                f"{self.max_waiting_requests}); retry later",
                retry_after_s=self._retry_after(),
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
        progress: ProgressCallback | None = None,
        progress_interval_s: float = MIN_INTERVAL_S,
    ) -> PlanResult:
        """The validated plan of ``meeting``; ``progress`` hears how it goes (see ``stream``)."""
        text = self.check_admission(meeting)
        max_tokens = max_tokens or self.default_max_tokens
        temperature = self.default_temperature if temperature is None else temperature
        seed = random.randrange(2**31) if seed is None else seed
        tracker = (
            ProgressTracker(progress, min_interval_s=progress_interval_s) if progress else None
        )
        self._waiting += 1
        started = time.perf_counter()
        reserved = 0
        try:
            if tracker is not None:
                tracker.admitted()
            async with (
                asyncio.timeout(self.timeout_s) as deadline,
                self.engines.lease(adapter) as (engine, served),
            ):
                chunks = await self._split(engine, text, max_tokens)
                reserved = self._reserve_engine_requests(len(chunks), max_tokens)
                if tracker is not None:
                    tracker.planned(len(chunks))
                outcomes = await asyncio.gather(
                    *(
                        generate_chunk(
                            engine,
                            chunk,
                            adapter=served,
                            max_tokens=max_tokens,
                            temperature=temperature,
                            seed=seed + 1000 * i,
                            repetition_penalty=self.repetition_penalty,
                            repetition_stop=self.repetition_stop,
                            request_id=f"{request_id or 'gen'}-{i}",
                            label=f"chunk {i + 1}/{len(chunks)}" if len(chunks) > 1 else "",
                            progress=tracker.chunk(i + 1) if tracker else None,
                        )
                        for i, chunk in enumerate(chunks)
                    )
                )
        except TimeoutError as exc:
            if deadline.expired():  # ours; the engines' own timeouts pass through
                raise DeadlineExceeded(
                    f"the plan was not done in {self.timeout_s:g} s (GENERATE_TIMEOUT_S); "
                    "its engine work was aborted"
                ) from exc
            raise
        finally:
            self._waiting -= 1
            self._engine_requests -= reserved
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
            validity=PlanValidity.worst(o.validity for o in outcomes),
        )

    async def stream(
        self, meeting: str | list[Utterance] | list[dict[str, Any]], **options: Any
    ) -> AsyncIterator[PlanProgress | PlanResult]:
        """``generate(meeting, **options)`` as it runs: ``PlanProgress`` values, then the
        ``PlanResult`` (or the error ``generate`` raises).

        The generation runs in its own task; closing the iterator before the end (a client
        that went away) cancels that task, which cancels the engine's requests (vLLM aborts
        them) and returns its place in the waiting count.
        """
        events: asyncio.Queue[PlanProgress | None] = asyncio.Queue()

        async def run() -> PlanResult:
            try:
                return await self.generate(meeting, progress=events.put_nowait, **options)
            finally:
                events.put_nowait(None)  # the end, result or error

        task = asyncio.create_task(run())
        # A closed stream's result or error is nobody's: read it, so it is not logged as lost.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            while (event := await events.get()) is not None:
                yield event
            yield await task
        finally:
            if not task.done():
                task.cancel()  # before any await: a cancelled caller may not get further
                # wait(), not await: it neither raises the task's error nor swallows the
                # caller's own cancellation.
                await asyncio.wait([task])

    def _reserve_engine_requests(self, n: int, max_tokens: int) -> int:
        """Admit a generation by what it costs the engine: one request per chunk."""
        if n > self.max_chunks_per_request:
            raise InvalidInput(
                f"this meeting needs {n} chunks at max_tokens={max_tokens}; the limit is "
                f"{self.max_chunks_per_request} (MAX_CHUNKS_PER_REQUEST): shorten the meeting or "
                "ask for fewer max_tokens (more room for the meeting in each chunk)"
            )
        if self._engine_requests and self._engine_requests + n > self.max_engine_requests:
            raise EngineUnavailable(
                f"{self._engine_requests} engine requests are in flight and this meeting adds "
                f"{n} (limit {self.max_engine_requests}, MAX_ENGINE_REQUESTS); retry later",
                retry_after_s=self._retry_after(),
            )
        self._engine_requests += n
        return n

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


def _count_all(tokenizer: Any, texts: list[str]) -> list[int]:
    return [_prompt_tokens(tokenizer, text) for text in texts]


def _prompt_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(render_prompt(tokenizer, text), add_special_tokens=False))
