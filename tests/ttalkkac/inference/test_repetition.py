"""RepetitionStop: an answer that loops ends early, on both engines, by one rule (vLLM's).

The random tiny model loops at once under greedy decoding ("sesese..." to max_tokens), the case
the stop exists for: the demo adapter looped to 2,048 tokens on 14 of 24 validation meetings.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from ttalkkac.inference.base import EngineRequest, FinishReason
from ttalkkac.inference.hf_engine import TransformersEngine
from ttalkkac.inference.repetition import RepetitionStop
from ttalkkac.prompts import render_prompt

MEETING = "[00:01] Speaker_A: 리모컨 디자인을 논의하겠습니다."
STOP = RepetitionStop(max_pattern=32, min_count=8)


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([5] * 8, True),  # one token, 8 times
        ([5] * 7, False),
        ([1, 2, 3] + [7, 8, 9] * 8, True),  # a 3-token pattern after other text
        ([7, 8, 9] * 7 + [7, 8], False),  # not yet 8 whole repeats
        (list(range(300)), False),
        ([9] + list(range(32)) * 8, True),  # the longest pattern
        (list(range(33)) * 8, False),  # longer than max_pattern
    ],
)
def test_a_loop_is_a_pattern_repeated_min_count_times_at_the_end(tokens, expected) -> None:
    assert STOP.repeats(tokens) is expected


def test_the_rule_is_vllms() -> None:
    """The transformers engine decides as vLLM's scheduler would, on loops and near-loops."""
    from vllm.sampling_params import RepetitionDetectionParams
    from vllm.v1.core.sched.utils import check_sequence_repetition

    rng = random.Random(0)
    params = RepetitionDetectionParams(max_pattern_size=6, min_pattern_size=1, min_count=3)
    stop = RepetitionStop(max_pattern=6, min_count=3)
    seen = set()
    for _ in range(2000):
        pattern = [rng.randrange(4) for _ in range(rng.randint(1, 8))]
        tokens = [rng.randrange(4) for _ in range(rng.randint(0, 6))]
        tokens += pattern * rng.randint(1, 4) + [rng.randrange(4) for _ in range(rng.randint(0, 2))]
        ours = stop.repeats(tokens)
        assert ours == check_sequence_repetition(tokens, params), tokens
        seen.add(ours)
    assert seen == {True, False}


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        RepetitionStop(max_pattern=0, min_count=8)
    with pytest.raises(ValueError):
        RepetitionStop(max_pattern=8, min_count=1)


def _request(tokenizer, stop: RepetitionStop | None) -> EngineRequest:
    prompt = render_prompt(tokenizer, MEETING)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    return EngineRequest(
        ids, max_tokens=400, temperature=0, seed=3, repetition_penalty=1.1, repetition_stop=stop
    )


def _free_and_stopped(engine: Any) -> None:
    """One greedy answer with the stop and one without, in one batch, and what each must be."""

    async def both():
        await engine.start()
        try:
            # One batch: the stop is per request, the other row runs on to max_tokens.
            return await asyncio.gather(
                engine.generate(_request(engine.tokenizer, None)),
                engine.generate(_request(engine.tokenizer, STOP)),
            )
        finally:
            await engine.stop()

    free, stopped = asyncio.run(both())
    assert free.finish_reason is FinishReason.length and free.completion_tokens == 400
    assert stopped.finish_reason is FinishReason.repetition
    assert stopped.completion_tokens < 100
    assert free.text.startswith(stopped.text)  # same greedy answer, ended where it looped


def test_transformers_engine_ends_a_looping_answer(tiny_model_dir: Path) -> None:
    _free_and_stopped(TransformersEngine(str(tiny_model_dir), max_model_len=2048, dtype="float32"))


@pytest.mark.slow
def test_vllm_engine_ends_a_looping_answer(tiny_model_dir: Path) -> None:
    from ttalkkac.inference.vllm_engine import VllmEngine

    _free_and_stopped(
        VllmEngine(
            str(tiny_model_dir),
            max_model_len=2048,
            enable_lora=False,
            dtype="float32",
            enforce_eager=True,
        )
    )
