"""The plan schema as handed to xgrammar: bounded repetitions split, same language; the compact
plan for retries, whose longest answer fits the token budget."""

from __future__ import annotations

import json

import pytest

from ttalkkac.inference.schema import (
    COMPACT_ITEMS,
    RESERVED_TOKENS,
    compact_json_schema,
    compact_limits,
    engine_json_schema,
    split_repetition,
)
from ttalkkac.plan import LONG_CHARS, NAME_CHARS, SHORT_CHARS, ProjectPlan

C = r"[^\x00-\x1f]"


def test_small_bounds_are_unchanged() -> None:
    assert split_repetition(rf"^{C}{{1,120}}$") == rf"^{C}{{1,120}}$"
    assert split_repetition("^[a-z]+$") == "^[a-z]+$"


def test_large_bounds_are_split_exactly() -> None:
    assert split_repetition(rf"^{C}{{1,400}}$") == rf"^(?:{C}{{100}}){{0,3}}{C}{{1,100}}$"
    assert split_repetition(rf"^{C}{{1,1000}}$") == rf"^(?:{C}{{125}}){{0,7}}{C}{{1,125}}$"
    # No divisor in (32, 128]: the bound is lowered to a multiple of 128, never raised.
    assert split_repetition(rf"^{C}{{1,1009}}$") == rf"^(?:{C}{{128}}){{0,6}}{C}{{1,128}}$"


def test_schema_keeps_everything_but_patterns() -> None:
    schema = engine_json_schema()
    assert schema["required"] and schema["additionalProperties"] is False
    assert schema["properties"]["core_objectives"]["maxItems"] == 10
    assert "{1,100}" in schema["properties"]["project_purpose"]["pattern"]
    assert engine_json_schema() is not engine_json_schema()  # callers may mutate their copy


@pytest.fixture(scope="module")
def grammar(tiny_tokenizer):
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tiny_tokenizer, vocab_size=len(tiny_tokenizer))
    compiler = xgr.GrammarCompiler(info)
    return compiler.compile_json_schema(
        json.dumps(engine_json_schema()), any_whitespace=False, separators=(",", ":")
    )


def plan_text(**overrides: object) -> str:
    plan = {
        "project_name": "n" * NAME_CHARS,
        "project_purpose": "가" * SHORT_CHARS,
        "project_period": "2025.01.01 ~ 2025.03.31",
        "project_manager": "Speaker_A",
        "core_objectives": ["목표"],
        "core_idea": "i",
        "idea_description": "d" * LONG_CHARS,
        "execution_plan": ["1단계", "2단계"],
        "expected_effects": ["효과"],
    } | overrides
    return json.dumps(plan, ensure_ascii=False, separators=(",", ":"))


def accepts(grammar, text: str) -> bool:
    import xgrammar as xgr

    return xgr.GrammarMatcher(grammar).accept_string(text)


def test_xgrammar_compiles_it_and_keeps_the_bounds(grammar) -> None:
    assert accepts(grammar, plan_text())  # every string at its maximum length
    assert not accepts(grammar, plan_text(project_purpose="가" * (SHORT_CHARS + 1)))
    assert not accepts(grammar, plan_text(idea_description="d" * (LONG_CHARS + 1)))
    assert not accepts(grammar, plan_text(core_idea=""))
    assert not accepts(grammar, plan_text(core_idea="a\u0001b"))


def longest_compact_answer(max_tokens: int, char: str) -> str:
    """The longest answer the compact schema allows: every list full, every string full."""
    limits = compact_limits(max_tokens)
    plan = {
        name: [char * limit] * COMPACT_ITEMS[name] if name in COMPACT_ITEMS else char * limit
        for name, limit in limits.items()
    }
    return json.dumps(plan, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("max_tokens", [700, 1024, 2048, 8192])
def test_the_longest_compact_answer_fits_the_budget(tiny_tokenizer, max_tokens: int) -> None:
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tiny_tokenizer, vocab_size=len(tiny_tokenizer))
    grammar = xgr.GrammarCompiler(info).compile_json_schema(
        json.dumps(compact_json_schema(max_tokens)), any_whitespace=False, separators=(",", ":")
    )
    # A 4-byte character in every position: the most bytes, so the most tokens, possible.
    longest = longest_compact_answer(max_tokens, "😀")
    assert accepts(grammar, longest)
    assert len(longest.encode()) <= max_tokens - RESERVED_TOKENS  # a token is >= 1 byte
    ProjectPlan.model_validate_json(longest)  # within the plan's own bounds
    limits = compact_limits(max_tokens)
    one_more = json.loads(longest) | {"project_name": "😀" * (limits["project_name"] + 1)}
    assert not accepts(grammar, json.dumps(one_more, ensure_ascii=False, separators=(",", ":")))


def test_no_compact_plan_below_a_useful_size() -> None:
    assert compact_json_schema(256) is None and compact_limits(256) is None
    assert compact_limits(2048)["idea_description"] >= 80  # the service default budget
