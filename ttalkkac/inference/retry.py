"""One chunk's plan: generate, validate, and retry once when the answer does not validate.

The policy, the same on every engine: the answer is parsed with ``ProjectPlan.model_validate_json``;
an answer that fails is retried once with another seed, at a temperature of at least
``RETRY_MIN_TEMPERATURE`` (greedy decoding would repeat the failed answer). An answer cut off at
``max_tokens``, or ended early because it looped (``repetition_stop``), is retried under the
compact plan schema instead (``ttalkkac.inference.schema.compact_json_schema``), which no answer
can overrun, so a model that loops inside a string or a small budget still ends in a plan. The
compact answer runs without the repetition stop: it is the last resort, and it always ends. Two
failures are ``GenerationInvalid`` with both attempts described; an unvalidated plan is never
returned.
Which of these paths a plan took is its ``PlanValidity``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from ttalkkac.adapters import AdapterRef
from ttalkkac.errors import GenerationInvalid
from ttalkkac.inference.base import Engine, EngineRequest, EngineResult, FinishReason
from ttalkkac.inference.progress import ChunkReporter
from ttalkkac.inference.repetition import RepetitionStop
from ttalkkac.inference.schema import compact_json_schema
from ttalkkac.plan import ProjectPlan
from ttalkkac.prompts import render_prompt

logger = logging.getLogger(__name__)

RETRY_MIN_TEMPERATURE = 0.3  # a retry at temperature 0 would repeat the failed answer


class PlanValidity(StrEnum):
    """How a plan came to validate, from best to worst (the order ``worst`` ranks by).

    An evaluation tells a model that answers valid plans from one that is rescued by the retry:
    ``retried`` is a second answer with another seed, ``compact`` an answer under the compact
    schema (fewer items, shorter texts) after the first was cut off at ``max_tokens``.
    """

    first_try = "first_try"
    retried = "retried"
    compact = "compact"

    @classmethod
    def worst(cls, values: Iterable[PlanValidity]) -> PlanValidity:
        """The worst of ``values`` (a merged plan is as good as its worst chunk)."""
        # Declaration order, not the values' alphabetical one ("compact" < "first_try").
        order = list(cls)
        return max(values, key=order.index)


@dataclass
class ChunkOutcome:
    """A chunk's validated plan and what it took (tokens over every attempt, retries)."""

    plan: ProjectPlan
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_ms: float = 0.0
    retries: int = 0
    validity: PlanValidity = PlanValidity.first_try
    warnings: list[str] = field(default_factory=list)


async def generate_chunk(
    engine: Engine,
    text: str,
    *,
    adapter: AdapterRef | None,
    max_tokens: int,
    temperature: float,
    seed: int,
    repetition_penalty: float,
    repetition_stop: RepetitionStop | None = None,
    request_id: str,
    label: str,
    progress: ChunkReporter | None = None,
) -> ChunkOutcome:
    """The plan of one chunk of meeting ``text`` on ``engine``, or ``GenerationInvalid``.

    ``label`` names the chunk in warnings and errors ("chunk 2/3"; empty for a whole meeting).
    ``progress`` hears the answer grow, a refused answer that is retried, and the valid one.
    """
    prompt = render_prompt(engine.tokenizer, text)
    ids = engine.tokenizer.encode(prompt, add_special_tokens=False)
    outcome = ChunkOutcome(plan=None)  # type: ignore[arg-type]
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
                repetition_penalty=repetition_penalty,
                json_schema=schema,
                repetition_stop=repetition_stop if schema is None else None,
                on_text=progress.on_text(attempt) if progress else None,
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
            if result.finish_reason in (FinishReason.length, FinishReason.repetition):
                # Cut off or looping (a model looping inside a string, or a small budget):
                # retry with the plan schema shrunk until no answer can be cut off.
                schema = compact_json_schema(max_tokens)
            if progress is not None and attempt < len(attempts):
                progress.retry(attempt, result.completion_tokens, failures[-1]["error"])
            continue
        outcome.retries = len(failures)
        if progress is not None:
            progress.done(attempt, result.completion_tokens, result.text)
        if failures:
            outcome.validity = PlanValidity.compact if schema is not None else PlanValidity.retried
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


def _failure(attempt: int, seed: int, result: EngineResult, exc: ValidationError) -> dict[str, Any]:
    """One failed attempt, as ``GenerationInvalid.detail["attempts"]`` lists it."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    reason = f"{where}: {first['msg']}" if where else first["msg"]
    if result.finish_reason == FinishReason.length:
        reason = f"cut off at max_tokens ({result.completion_tokens} tokens); {reason}"
    elif result.finish_reason == FinishReason.repetition:
        reason = f"ended after {result.completion_tokens} tokens, looping; {reason}"
    return {
        "attempt": attempt,
        "seed": seed,
        "finish_reason": result.finish_reason,
        "completion_tokens": result.completion_tokens,
        "error": reason,
        "output_tail": result.text[-200:],
    }
