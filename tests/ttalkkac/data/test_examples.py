"""Training examples: loss on the answer and end-of-turn token only; shortening; drops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GOLD_DIR, MEETINGS_DIR
from tests.utils.gold_factory import plan_dict, utterances
from ttalkkac.data.examples import (
    IGNORE_INDEX,
    SHORTENED_MARKER,
    AnswerTooLong,
    ExampleBuilder,
    TrainingExample,
    answer_text,
    build_example,
    build_examples,
    percentiles,
)
from ttalkkac.data.gold import GoldRecord, load_gold
from ttalkkac.meetings import meeting_text
from ttalkkac.plan import ProjectPlan, normalize_plan
from ttalkkac.prompts import render_prompt

END = "<|im_end|>"


def _plan() -> ProjectPlan:
    return normalize_plan(plan_dict()).plan


def _record(meeting: str, plan: ProjectPlan | None = None, rid: str = "r1") -> GoldRecord:
    return GoldRecord(
        record_id=rid,
        split="train",
        meeting_id=rid,
        meeting_text=meeting,
        plan=plan or _plan(),
        shape="notion_output",
        score=8.0,
    )


def _answer_part(tokenizer: Any, example: TrainingExample) -> str:
    """Decode exactly the tokens the loss counts."""
    ids = [t for t in example.labels if t != IGNORE_INDEX]
    return tokenizer.decode(ids, skip_special_tokens=False)


def _check_masking(tokenizer: Any, example: TrainingExample, answer: str) -> None:
    n = example.prompt_tokens
    assert len(example.input_ids) == len(example.labels) == len(example.attention_mask)
    assert example.labels[:n] == [IGNORE_INDEX] * n  # every prompt token masked
    assert example.labels[n:] == example.input_ids[n:]  # every answer token counted
    assert _answer_part(tokenizer, example) == answer + END
    assert example.input_ids[-1] == tokenizer.convert_tokens_to_ids(END)  # no newline after
    assert example.answer_tokens == len(example.input_ids) - n
    assert set(example.attention_mask) == {1}


def test_answer_text_is_compact_json_in_schema_order() -> None:
    plan = _plan()
    text = answer_text(plan)
    assert text.startswith('{"project_name":"리모컨 디자인 프로젝트","project_purpose":')
    assert '":"' in text and '","' in text  # no whitespace between tokens of the JSON
    assert '": "' not in text and '", "' not in text and "\n" not in text
    assert ProjectPlan.model_validate_json(text) == plan
    assert json.loads(text) == plan.model_dump()


def test_labels_count_only_the_answer_and_end_token(tiny_tokenizer) -> None:
    meeting = meeting_text(utterances(4))
    answer = answer_text(_plan())
    example = build_example(tiny_tokenizer, meeting, answer, max_seq_len=100_000)
    _check_masking(tiny_tokenizer, example, answer)
    assert not example.shortened and example.meeting_text == meeting
    # The prompt tokens are exactly the generation prompt, as tokenized at inference time.
    prompt = render_prompt(tiny_tokenizer, meeting)
    assert prompt.endswith("<think>\n\n</think>\n\n")  # Qwen3 template, thinking off
    expected = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert example.input_ids[: example.prompt_tokens] == expected
    assert example.full_prompt_tokens == example.prompt_tokens == len(expected)


def test_long_transcript_is_shortened_and_the_answer_kept(tiny_tokenizer) -> None:
    meeting = meeting_text(utterances(120))
    answer = answer_text(_plan())
    full = build_example(tiny_tokenizer, meeting, answer, max_seq_len=100_000)
    limit = full.answer_tokens + (full.prompt_tokens - full.answer_tokens) // 3 + 400
    limit = min(limit, len(full) - 200)
    example = build_example(tiny_tokenizer, meeting, answer, max_seq_len=limit)
    assert example.shortened
    assert len(example) <= limit
    assert len(example) > limit - 60  # the budget is used, not wasted
    _check_masking(tiny_tokenizer, example, answer)
    kept = example.meeting_text
    assert kept.endswith(SHORTENED_MARKER)
    head = kept[: -len(SHORTENED_MARKER)]
    assert meeting.startswith(head + "\n")  # the beginning, cut at a line end
    prompt = tiny_tokenizer.decode(example.input_ids[: example.prompt_tokens])
    assert "...(이하 생략)" in prompt and prompt.endswith("</think>\n\n")
    assert example.full_prompt_tokens == full.prompt_tokens > example.prompt_tokens


def test_answer_that_cannot_fit_is_dropped_and_counted(tiny_tokenizer) -> None:
    meeting = meeting_text(utterances(30))
    answer = answer_text(_plan())
    full = build_example(tiny_tokenizer, meeting, answer, max_seq_len=100_000)
    with pytest.raises(AnswerTooLong) as info:
        build_example(tiny_tokenizer, meeting, answer, max_seq_len=full.answer_tokens + 10)
    assert info.value.detail["answer_tokens"] == full.answer_tokens
    # A minimum of transcript is required beside the answer.
    tight = full.answer_tokens + (full.prompt_tokens - 100) // 2
    builder = ExampleBuilder(tiny_tokenizer, max_seq_len=tight, min_meeting_tokens=10_000)
    with pytest.raises(AnswerTooLong):
        builder.build(meeting, answer)

    big = normalize_plan(plan_dict(idea_description="매우 긴 설명 " * 80)).plan
    records = [_record(meeting, rid="fits"), _record(meeting, big, rid="too-long")]
    limit = full.answer_tokens + 600
    examples, stats = build_examples(tiny_tokenizer, records, max_seq_len=limit)
    assert [e.record_id for e in examples] == ["fits"]
    assert stats.dropped == {"answer_too_long": 1}
    assert (stats.records, stats.examples, stats.shortened) == (2, 1, 1)
    assert len(stats.answer_tokens) == len(stats.full_prompt_tokens) == 2
    summary = stats.to_dict()
    assert summary["answer_tokens"]["p100"] > limit  # the dropped answer is measured too
    assert summary["example_tokens"]["p100"] <= limit


def test_percentiles() -> None:
    values = list(range(1, 101))
    assert percentiles(values) == {
        "p0": 1,
        "p50": 50,
        "p90": 90,
        "p95": 95,
        "p99": 99,
        "p100": 100,
    }
    assert percentiles([]) == {}
    assert percentiles([7]) == dict.fromkeys(["p0", "p50", "p90", "p95", "p99", "p100"], 7)


def test_tokenizer_without_template_is_refused(tiny_tokenizer) -> None:
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        build_example(tokenizer, "회의", "{}")


@pytest.fixture(scope="module")
def smollm2_tokenizer(demo_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)


@pytest.mark.slow
def test_smollm2_masking_on_real_gold_records(shared_data: Path, smollm2_tokenizer) -> None:
    data = load_gold(GOLD_DIR, MEETINGS_DIR, min_quality=0, unscored="include")
    records = data.records[:25] + [r for r in data.records if r.shape == "notion_project"][:5]
    examples, stats = build_examples(smollm2_tokenizer, records)  # default max_seq_len 4096
    assert stats.examples == 30 and not stats.dropped
    assert stats.shortened >= 25  # real transcripts are long
    for record, example in zip(records, examples, strict=True):
        assert len(example) <= 4096
        _check_masking(smollm2_tokenizer, example, answer_text(record.plan))
        assert example.meeting_text == record.meeting_text or example.shortened
    # With the guide's 2,048 tokens most answers do not fit beside the prompt.
    _examples, short = build_examples(smollm2_tokenizer, records, max_seq_len=2048)
    assert short.dropped["answer_too_long"] >= 20
