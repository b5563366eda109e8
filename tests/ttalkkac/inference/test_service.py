"""PlanGenerator on the real transformers engine (tiny model): validation, retry, chunks, limits.

Starting, swapping and routing engines is ``EngineHost``'s: ``test_engines.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ttalkkac.adapters import ref_from_dir
from ttalkkac.errors import (
    DeadlineExceeded,
    EngineUnavailable,
    GenerationInvalid,
    InvalidInput,
    PayloadTooLarge,
)
from ttalkkac.inference.base import EngineRequest, EngineResult
from ttalkkac.inference.engines import EngineHost
from ttalkkac.inference.hf_engine import TransformersEngine
from ttalkkac.inference.repetition import RepetitionStop
from ttalkkac.inference.retry import PlanValidity
from ttalkkac.inference.service import PlanGenerator, PlanResult
from ttalkkac.plan import ProjectPlan

MEETING = (
    "[00:01] Speaker_A: 리모컨 디자인을 논의하겠습니다.\n[00:02] Speaker_B: 시장 조사를 하겠습니다."
)


@pytest.fixture(scope="module")
def engine(terse_model_dir: Path) -> Iterator[TransformersEngine]:
    engine = TransformersEngine(str(terse_model_dir), max_model_len=2048, dtype="float32")
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.stop())


def generator(engine, **options) -> PlanGenerator:
    gen = PlanGenerator(EngineHost(engine, warmup=False), default_max_tokens=256, **options)
    gen.engines.state = "ready"  # the module's engine is already started
    return gen


def test_plan_with_and_without_adapter(engine, tiny_adapters) -> None:
    gen = generator(engine)
    adapter = ref_from_dir(tiny_adapters[0])
    plain, adapted = asyncio.run(
        _gather(gen.generate(MEETING, temperature=0), gen.generate(MEETING, adapter=adapter))
    )
    for result in (plain, adapted):
        assert isinstance(result.plan, ProjectPlan)
        assert result.engine == "transformers" and result.chunks == 1
        assert result.usage["completion_tokens"] > 0 and result.retries == 0
        assert result.validity is PlanValidity.first_try
    assert plain.adapter is None and adapted.adapter == adapter.name
    assert adapter.name in engine.loaded_adapters()


async def _gather(*coros):
    return await asyncio.gather(*coros)


class FirstAnswerCut:
    """The real engine, with its first answer cut in half (as a too-small budget would)."""

    def __init__(self, engine) -> None:
        self.inner = engine
        self.calls: list[EngineRequest] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def generate(self, request: EngineRequest) -> EngineResult:
        self.calls.append(request)
        result = await self.inner.generate(request)
        if len(self.calls) == 1:
            return replace(
                result, text=result.text[: len(result.text) // 2], finish_reason="length"
            )
        return result


def test_invalid_answer_is_retried_once_with_another_seed(engine) -> None:
    flaky = FirstAnswerCut(engine)
    gen = generator(flaky)
    result = asyncio.run(gen.generate(MEETING, temperature=0, seed=11))
    # No compact plan fits 256 tokens: a plain retry, although the first answer was cut.
    assert result.retries == 1 and result.validity is PlanValidity.retried
    assert [c.seed for c in flaky.calls] == [11, 12]
    assert flaky.calls[1].temperature >= 0.3  # greedy decoding would repeat the failure
    assert any("retried with seed 12" in w for w in result.warnings)


def test_answer_cut_off_at_max_tokens_is_retried_as_a_compact_plan(tiny_model_dir: Path) -> None:
    """The random (not terse) tiny model fills every string to its bound: the worst case."""
    engine = TransformersEngine(str(tiny_model_dir), max_model_len=2048, dtype="float32")

    async def scenario():
        gen = PlanGenerator(EngineHost(engine, warmup=False))
        await gen.start()
        try:
            return await gen.generate(MEETING, max_tokens=700, temperature=0, seed=3)
        finally:
            await gen.stop()

    result = asyncio.run(scenario())
    assert isinstance(result.plan, ProjectPlan) and result.retries == 1
    assert result.validity is PlanValidity.compact
    assert "cut off at max_tokens (700 tokens)" in result.warnings[0]
    assert "compact plan" in result.warnings[0]
    assert result.usage["completion_tokens"] > 700  # the cut answer, then the compact one
    assert len(result.plan.core_objectives) <= 2 and len(result.plan.execution_plan) <= 3


def test_a_looping_answer_is_ended_and_retried_as_a_compact_plan(tiny_model_dir: Path) -> None:
    """The same worst case with the repetition stop: the loop ends long before max_tokens."""
    engine = TransformersEngine(str(tiny_model_dir), max_model_len=2048, dtype="float32")
    stop = RepetitionStop(max_pattern=32, min_count=8)

    async def scenario():
        gen = PlanGenerator(EngineHost(engine, warmup=False), repetition_stop=stop)
        await gen.start()
        try:
            return await gen.generate(MEETING, max_tokens=700, temperature=0, seed=3)
        finally:
            await gen.stop()

    result = asyncio.run(scenario())
    assert isinstance(result.plan, ProjectPlan) and result.validity is PlanValidity.compact
    assert "looping" in result.warnings[0] and "compact plan" in result.warnings[0]
    # The compact answer, which always ends, ran without the stop and still fits max_tokens.
    assert result.usage["completion_tokens"] < 700 + 100


def test_two_invalid_answers_are_generation_invalid(engine) -> None:
    gen = generator(engine)
    with pytest.raises(GenerationInvalid) as info:
        asyncio.run(gen.generate(MEETING, max_tokens=16))
    attempts = info.value.detail["attempts"]
    assert len(attempts) == 2 and all(a["finish_reason"] == "length" for a in attempts)
    assert "cut off at max_tokens" in attempts[0]["error"]


def test_waiting_limit_rejects_with_retry_after(engine) -> None:
    gen = generator(engine, max_waiting_requests=1)

    async def two_at_once():
        return await asyncio.gather(
            gen.generate(MEETING), gen.generate(MEETING), return_exceptions=True
        )

    first, second = asyncio.run(two_at_once())
    assert isinstance(first.plan, ProjectPlan)
    assert isinstance(second, EngineUnavailable) and second.retry_after_s >= 1
    assert gen.waiting() == 0


def test_long_meeting_is_split_to_fit_the_context(engine) -> None:
    gen = generator(engine)
    lines = [
        f"[00:{i % 60:02d}] Speaker_{'AB'[i % 2]}: 항목 {i}번을 다음 주까지 검토합니다."
        for i in range(200)
    ]
    result = asyncio.run(gen.generate("\n".join(lines)))
    assert result.chunks > 1
    assert result.usage["prompt_tokens"] > engine.max_model_len
    assert "chunks" in result.warnings[0]
    with pytest.raises(InvalidInput, match="leaves no room"):
        asyncio.run(gen.generate(MEETING, max_tokens=2040))


def _long_meeting(lines: int = 200) -> str:
    return "\n".join(
        f"[00:{i % 60:02d}] Speaker_{'AB'[i % 2]}: 항목 {i}번을 다음 주까지 검토합니다."
        for i in range(lines)
    )


def test_a_meeting_is_admitted_by_what_it_costs_the_engine(engine) -> None:
    """One request per chunk: a long meeting is refused past the chunk cap, and while others
    hold the engine, past the engine-request limit (503, not a queue without bound)."""
    with pytest.raises(InvalidInput, match="MAX_CHUNKS_PER_REQUEST"):
        asyncio.run(generator(engine, max_chunks_per_request=2).generate(_long_meeting()))
    gen = generator(engine, max_engine_requests=3)

    async def short_then_long():
        short = asyncio.ensure_future(gen.generate(MEETING))
        while gen.engine_requests() == 0:  # the short one holds one engine request
            await asyncio.sleep(0.01)
        long = await asyncio.gather(gen.generate(_long_meeting()), return_exceptions=True)
        return await short, long[0]

    short, refused = asyncio.run(short_then_long())
    assert isinstance(short.plan, ProjectPlan)
    assert isinstance(refused, EngineUnavailable) and "MAX_ENGINE_REQUESTS" in refused.message
    assert gen.engine_requests() == 0 and gen.waiting() == 0


class Slow:
    """An engine whose every answer takes longer than the deadline; counts cancellations."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.cancelled = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def generate(self, request: EngineRequest) -> EngineResult:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("the deadline did not stop the request")


def test_a_generation_past_its_deadline_is_aborted(engine) -> None:
    slow = Slow(engine)
    gen = generator(slow, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="GENERATE_TIMEOUT_S"):
        asyncio.run(gen.generate(MEETING))
    assert time.monotonic() - started < 10
    assert slow.cancelled == 1 and gen.waiting() == 0 and gen.engine_requests() == 0


def test_meeting_checks(engine) -> None:
    gen = generator(engine, max_meeting_chars=1000)
    with pytest.raises(InvalidInput, match="empty"):
        asyncio.run(gen.generate(" \n "))
    with pytest.raises(InvalidInput, match="empty"):
        asyncio.run(gen.generate([]))
    with pytest.raises(InvalidInput, match="text"):
        asyncio.run(gen.generate([{"speaker": "A"}]))
    with pytest.raises(PayloadTooLarge, match="1,000"):
        asyncio.run(gen.generate("가" * 1001))


def test_stream_reports_progress_on_an_engine_that_cannot_stream(engine) -> None:
    """Transformers generates a batch in one call: no token updates, the rest as on vLLM
    (tests/app/test_stream.py)."""
    gen = generator(FirstAnswerCut(engine))

    async def collect():
        return [item async for item in gen.stream(MEETING, temperature=0, seed=5)]

    *progress, result = asyncio.run(collect())
    assert isinstance(result, PlanResult)
    assert [p.kind for p in progress] == ["admitted", "planned", "retry", "chunk_done"]
    retry, done = progress[2], progress[3]
    assert (retry.attempt, done.attempt) == (1, 2) and "cut off at max_tokens" in retry.message
    assert ProjectPlan.model_validate_json(done.text) == result.plan
    assert done.tokens == result.usage["completion_tokens"]


def test_closing_a_stream_early_cancels_the_generation(engine) -> None:
    gen = generator(engine)

    async def first_event_then_close():
        events = gen.stream(MEETING)
        first = await anext(events)
        waiting = gen.waiting()
        await events.aclose()
        return first, waiting

    first, waiting = asyncio.run(first_event_then_close())
    assert first.kind == "admitted" and waiting == 1
    assert gen.waiting() == 0


def test_validity_of_a_merged_plan_is_its_worst_chunk() -> None:
    first, retried, compact = PlanValidity.first_try, PlanValidity.retried, PlanValidity.compact
    assert PlanValidity.worst([first, first]) is first
    assert PlanValidity.worst([first, retried, first]) is retried
    assert PlanValidity.worst([compact, retried, first]) is compact  # not alphabetical
    assert compact == "compact"  # serializes as its name
