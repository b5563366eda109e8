"""The plan schema as handed to xgrammar: bounded repetitions split, same language."""

from __future__ import annotations

import json

import pytest

from ttalkkac.inference.schema import engine_json_schema, split_repetition
from ttalkkac.plan import LONG_CHARS, NAME_CHARS, SHORT_CHARS

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
