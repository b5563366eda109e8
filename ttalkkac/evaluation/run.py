"""Generating and scoring examples through the serving path (what ``POST /generate`` does).

Every example goes through ``PlanGenerator.generate``: the same engine, constrained decoding,
validation, retry and chunking as a user's request, never a second implementation. Examples run
concurrently (bounded), so the engine batches them. Decoding is greedy (temperature 0) with a
seed per example, so two runs of one adapter give the same plans.

A plan that never validates is a row with validity ``invalid`` (it scores 0). An engine that is
unavailable (loading, overloaded) is not the model's fault: the example is retried after a pause
and never recorded as invalid.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ttalkkac.errors import EngineUnavailable, GenerationInvalid, InvalidInput
from ttalkkac.evaluation.examples import EvalExample
from ttalkkac.evaluation.scoring import PlanScore, Validity, aggregate, score_plan
from ttalkkac.plan import ProjectPlan

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 16
UNAVAILABLE_RETRIES = 30  # about 5 minutes at the pause below, then the evaluation fails
UNAVAILABLE_PAUSE_S = 10.0


@dataclass
class RowResult:
    """One finished example, as stored (``to_dict``) and as reported."""

    index: int
    record_id: str
    meeting_id: str
    meeting_chars: int
    validity: Validity
    score: PlanScore
    floor: PlanScore | None
    floor_record_id: str | None
    plan: dict[str, Any] | None
    latency_ms: float
    completion_tokens: int
    chunks: int
    warnings: list[str]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "record_id": self.record_id,
            "meeting_id": self.meeting_id,
            "meeting_chars": self.meeting_chars,
            "validity": self.validity.value,
            "score": self.score.to_dict(),
            "floor": None if self.floor is None else self.floor.to_dict(),
            "floor_record_id": self.floor_record_id,
            "plan": self.plan,
            "latency_ms": round(self.latency_ms, 1),
            "completion_tokens": self.completion_tokens,
            "chunks": self.chunks,
            "warnings": self.warnings,
            "error": self.error,
        }


def floor_score(example: EvalExample) -> PlanScore | None:
    if example.floor_plan is None:
        return None
    return score_plan(example.floor_plan, example.gold, example.meeting)


async def evaluate_example(
    generator: Any,
    example: EvalExample,
    *,
    adapter: Any,
    seed: int,
    max_tokens: int | None = None,
    request_id: str = "eval",
) -> RowResult:
    """Generate a plan for one example through ``generator`` and score it."""
    started = time.perf_counter()
    plan: ProjectPlan | None = None
    validity, warnings, error = Validity.invalid, [], None
    completion_tokens, chunks = 0, 0
    for attempt in range(UNAVAILABLE_RETRIES + 1):
        try:
            result = await generator.generate(
                example.meeting,
                adapter=adapter,
                max_tokens=max_tokens,
                temperature=0.0,
                seed=seed + example.index,
                request_id=f"{request_id}-{example.index}",
            )
        except EngineUnavailable as exc:
            if attempt == UNAVAILABLE_RETRIES:
                raise
            logger.info("[%s] engine unavailable (%s); retrying", request_id, exc.message)
            await asyncio.sleep(exc.retry_after_s or UNAVAILABLE_PAUSE_S)
            continue
        except (GenerationInvalid, InvalidInput) as exc:
            error = f"{type(exc).__name__}: {exc.message}"
            break
        plan, validity = result.plan, Validity(result.validity.value)
        warnings, completion_tokens = list(result.warnings), result.usage["completion_tokens"]
        chunks = result.chunks
        break
    return RowResult(
        index=example.index,
        record_id=example.record_id,
        meeting_id=example.meeting_id,
        meeting_chars=len(example.meeting),
        validity=validity,
        score=score_plan(plan, example.gold, example.meeting, validity=validity),
        floor=floor_score(example),
        floor_record_id=example.floor_record_id,
        plan=None if plan is None else plan.model_dump(),
        latency_ms=(time.perf_counter() - started) * 1000,
        completion_tokens=completion_tokens,
        chunks=chunks,
        warnings=warnings,
        error=error,
    )


async def evaluate_examples(
    generator: Any,
    examples: list[EvalExample],
    *,
    adapter: Any,
    seed: int,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_tokens: int | None = None,
    request_id: str = "eval",
    on_row: Callable[[RowResult], Awaitable[None]] | None = None,
) -> list[RowResult]:
    """Evaluate ``examples`` concurrently; ``on_row`` is awaited as each one finishes."""
    gate = asyncio.Semaphore(concurrency)

    async def one(example: EvalExample) -> RowResult:
        async with gate:
            row = await evaluate_example(
                generator,
                example,
                adapter=adapter,
                seed=seed,
                max_tokens=max_tokens,
                request_id=request_id,
            )
        if on_row is not None:
            await on_row(row)
        return row

    rows = await asyncio.gather(*(one(e) for e in examples))
    return sorted(rows, key=lambda r: r.index)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluation's figures from its stored rows: model, floor, latency."""
    scores = [PlanScore.from_dict(r["score"]) for r in rows]
    floors = [PlanScore.from_dict(r["floor"]) for r in rows if r.get("floor")]
    latencies = sorted(r["latency_ms"] for r in rows)
    model = aggregate(scores).to_dict()
    return {
        **model,
        "generic_floor": aggregate(floors).to_dict() if floors else None,
        "latency_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
        "completion_tokens_mean": (
            round(statistics.fmean(r["completion_tokens"] for r in rows), 1) if rows else None
        ),
    }
