"""Benchmark inputs: real gold records and meetings from ``../shared/data``, and the models.

Training uses the first training records (by folder name) whose plan fits ``max_seq_len`` with
our example builder, so both recipes see the same records. Generation uses held-out meetings
(one per meeting), each shortened so that its prompt fits ``prompt_budget`` tokens: the demo
model's prefill on two cores would otherwise dominate every number.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
GOLD_DIR_NAME = "ttalkkac_gold_standard_results_20250731_104912"
MEETINGS_DIR_NAME = "batch_triplet_results"
# The demo model is shared with the test suite's cache: built once per machine.
MODEL_CACHE = Path(os.environ.get("TTALKKAC_TEST_CACHE", Path.home() / ".cache" / "ttalkkac"))


@dataclass(frozen=True)
class Meeting:
    meeting_id: str
    text: str  # shortened to the prompt budget
    prompt_tokens: int
    shortened: bool


@lru_cache(maxsize=2)
def gold(data_dir: Path = SHARED_DATA) -> Any:
    """Every gold record, split by meeting. All scores here are 6.0, so no quality filter."""
    from ttalkkac.data.gold import load_gold

    return load_gold(
        data_dir / GOLD_DIR_NAME,
        data_dir / MEETINGS_DIR_NAME,
        min_quality=0.0,
        unscored="include",
        val_fraction=0.1,
        seed=42,
    )


def training_records(
    tokenizer: Any, *, n: int, max_seq_len: int, data_dir: Path = SHARED_DATA
) -> list[Any]:
    """``n`` training records whose plan fits ``max_seq_len`` (cycled if fewer fit)."""
    from ttalkkac.data.examples import MIN_MEETING_TOKENS, AnswerTooLong, ExampleBuilder
    from ttalkkac.data.examples import answer_text as render_answer

    builder = ExampleBuilder(tokenizer, max_seq_len=max_seq_len)
    scaffold = builder.enc.scaffold_tokens()
    chosen: list[Any] = []
    for record in sorted(gold(data_dir).train, key=lambda r: r.record_id):
        answer = render_answer(record.plan)
        if len(builder.enc.ids(answer)) + scaffold + MIN_MEETING_TOKENS > max_seq_len:
            continue  # cheap pre-check; the builder decides below
        try:
            builder.build(record.meeting_text, answer)
        except AnswerTooLong:
            continue
        chosen.append(record)
        if len(chosen) == n:
            return chosen
    if not chosen:
        raise RuntimeError(f"no gold record's plan fits max_seq_len={max_seq_len}")
    logger.warning("only %d records fit max_seq_len=%d; cycling them", len(chosen), max_seq_len)
    return [chosen[i % len(chosen)] for i in range(n)]


def generation_meetings(
    tokenizer: Any, *, n: int, prompt_budget: int, data_dir: Path = SHARED_DATA
) -> list[Meeting]:
    """``n`` held-out meetings (one record each), shortened so the prompt fits the budget."""
    from ttalkkac.data.examples import shorten_meeting
    from ttalkkac.prompts import render_prompt

    def length(text: str) -> int:
        return len(tokenizer.encode(render_prompt(tokenizer, text), add_special_tokens=False))

    if length("") >= prompt_budget:
        raise ValueError(f"prompt_budget={prompt_budget} leaves no room for a meeting")
    seen: set[str] = set()
    out: list[Meeting] = []
    for record in sorted(gold(data_dir).val, key=lambda r: r.record_id):
        if record.meeting_id in seen:
            continue
        seen.add(record.meeting_id)
        text, shortened = record.meeting_text, False
        if length(text) > prompt_budget:
            lo, hi = 0, min(len(text), prompt_budget * 8)
            while lo < hi:  # the longest head that fits, cut as training cuts
                mid = (lo + hi + 1) // 2
                if length(shorten_meeting(text, mid)) <= prompt_budget:
                    lo = mid
                else:
                    hi = mid - 1
            text, shortened = shorten_meeting(text, lo), True
        out.append(Meeting(record.meeting_id, text, length(text), shortened))
        if len(out) == n:
            break
    return out


def demo_model() -> Path:
    from ttalkkac.demo_model import ensure_demo_model

    return ensure_demo_model(MODEL_CACHE / "models")


def tiny_model() -> Path:
    """The test suite's tiny random Qwen3 (smoke runs only), built in a temporary folder."""
    from tests.utils.tiny_model import build_tiny_qwen3

    return build_tiny_qwen3(
        Path(tempfile.mkdtemp(prefix="bench-tiny-")), max_position_embeddings=8192
    )
