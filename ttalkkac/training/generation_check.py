"""After training: does the adapter write plans? Share of outputs that parse and validate.

Runs in the training process with transformers ``generate`` (greedy, one left-padded batch),
so it needs no serving engine. Constrained decoding lives in the serving engine (vLLM with
JSON-schema output); this check measures the unconstrained model, which is what training
changes, and reports constrained decoding as not run here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ttalkkac.data.examples import shorten_meeting
from ttalkkac.plan import ProjectPlan
from ttalkkac.prompts import render_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckItem:
    meeting_id: str
    meeting_text: str


def fit_prompt(tokenizer: Any, meeting_text: str, budget: int) -> tuple[str, bool]:
    """The generation prompt within ``budget`` tokens, the meeting shortened as in training."""

    def length(text: str) -> int:
        return len(tokenizer(render_prompt(tokenizer, text), add_special_tokens=False)["input_ids"])

    if length(meeting_text) <= budget:
        return render_prompt(tokenizer, meeting_text), False
    lo, hi = 0, len(meeting_text)
    while lo < hi:  # the longest head that fits, cut the way training examples are cut
        mid = (lo + hi + 1) // 2
        if length(shorten_meeting(meeting_text, mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return render_prompt(tokenizer, shorten_meeting(meeting_text, lo)), True


def judge(text: str) -> dict[str, Any]:
    """Whether ``text`` is JSON and whether it validates as a ``ProjectPlan``."""
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError as exc:
        return {"parseable": False, "schema_valid": False, "error": f"json: {exc.msg}"}
    try:
        ProjectPlan.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        return {
            "parseable": True,
            "schema_valid": False,
            "error": f"schema: {where}: {first['msg']}",
        }
    return {"parseable": True, "schema_valid": True, "error": None}


def generation_check(
    model: Any,
    tokenizer: Any,
    items: Sequence[CheckItem],
    *,
    max_new_tokens: int,
    max_seq_len: int,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Generate a plan for each item (greedy) and count parseable and schema-valid outputs."""
    import torch

    result: dict[str, Any] = {
        "samples": 0,
        "parseable": 0,
        "schema_valid": 0,
        "parse_rate": None,
        "schema_valid_rate": None,
        "decoding": "greedy, unconstrained (transformers generate)",
        "max_new_tokens": max_new_tokens,
        "constrained": {
            "run": False,
            "reason": "constrained decoding is the serving engine's (vLLM JSON schema); "
            "the training process checks the unconstrained model",
        },
        "items": [],
    }
    if not items:
        return result
    budget = max_seq_len - max_new_tokens
    prompts, shortened = zip(
        *(fit_prompt(tokenizer, item.meeting_text, budget) for item in items), strict=True
    )
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer(
            list(prompts), return_tensors="pt", padding=True, add_special_tokens=False
        )
    finally:
        tokenizer.padding_side = side
    batch = {k: v.to(model.device) for k, v in batch.items()}
    if should_stop is not None and should_stop():
        return result

    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
            )
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - started

    new_tokens = output[:, batch["input_ids"].shape[1] :]
    generated = 0
    for item, cut, row in zip(items, shortened, new_tokens, strict=True):
        ids = [t for t in row.tolist() if t != tokenizer.pad_token_id]
        generated += len(ids)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        verdict = judge(text)
        result["samples"] += 1
        result["parseable"] += int(verdict["parseable"])
        result["schema_valid"] += int(verdict["schema_valid"])
        result["items"].append(
            {
                "meeting_id": item.meeting_id,
                "prompt_shortened": cut,
                "new_tokens": len(ids),
                "output_head": text[:200],
                **verdict,
            }
        )
    n = result["samples"]
    result["parse_rate"] = result["parseable"] / n
    result["schema_valid_rate"] = result["schema_valid"] / n
    result["seconds"] = round(elapsed, 3)
    result["tokens_per_s"] = round(generated / elapsed, 2) if elapsed > 0 else None
    logger.info(
        "generation check: %d/%d parseable, %d/%d schema-valid (%.1f s)",
        result["parseable"],
        n,
        result["schema_valid"],
        n,
        elapsed,
    )
    return result
