"""The plan schema: normalization of real gold plans, bounds for constrained decoding, merging."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.conftest import GOLD_DIR
from tests.utils.gold_factory import plan_dict
from ttalkkac.data.gold import extract_plan
from ttalkkac.plan import (
    LONG_CHARS,
    MAX_LIST_ITEMS,
    MAX_STEPS,
    NAME_CHARS,
    PLAN_FIELDS,
    PlanShapeError,
    ProjectPlan,
    merge_plans,
    normalize_plan,
    plan_json_schema,
)


def _real_raw_plans() -> list[tuple[str, Any]]:
    plans = []
    for folder in sorted(Path(GOLD_DIR).iterdir()):
        record = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        try:
            found = extract_plan(record)
        except ValueError:
            continue  # two records hold JSON that no parser accepts (counted by the loader)
        if found is not None:
            plans.append((folder.name, found[1]))
    return plans


def test_every_parseable_real_gold_plan_normalizes(shared_data: Path) -> None:
    plans = _real_raw_plans()
    assert len(plans) == 260  # 263 records - 2 unparseable - 1 summary without a plan
    shapes: Counter[str] = Counter()
    dropped = 0
    for name, raw in plans:
        normalized = normalize_plan(raw)
        plan = normalized.plan
        assert ProjectPlan.model_validate_json(plan.to_json()) == plan, name
        assert plan.execution_plan and all("\n" not in step for step in plan.execution_plan)
        shapes[type(raw["execution_plan"]).__name__] += 1
        dropped += len(normalized.dropped_keys)
        assert set(normalized.dropped_keys) == set(raw) - set(PLAN_FIELDS), name
    # The three shapes the data really has, as the schema module's docstring states.
    assert shapes == {"list": 135, "str": 114, "dict": 11}
    assert dropped > 100


def test_execution_plan_string_becomes_one_step_per_line() -> None:
    raw = plan_dict(execution_plan="1단계: 설계 (1월)\n\n2단계: 제작\n  3단계: 테스트  ")
    assert normalize_plan(raw).plan.execution_plan == [
        "1단계: 설계 (1월)",
        "2단계: 제작",
        "3단계: 테스트",
    ]


def test_execution_plan_list_of_strings_and_of_objects() -> None:
    assert normalize_plan(plan_dict(execution_plan=["설계", " 제작 "])).plan.execution_plan == [
        "설계",
        "제작",
    ]
    steps = [{"단계": "1단계", "내용": "설계", "기간": "1월"}, {"단계": "2단계", "내용": "제작"}]
    assert normalize_plan(plan_dict(execution_plan=steps)).plan.execution_plan == [
        "단계: 1단계, 내용: 설계, 기간: 1월",
        "단계: 2단계, 내용: 제작",
    ]


def test_execution_plan_object_keyed_by_stage() -> None:
    raw = plan_dict(execution_plan={"1단계": "설계", "2단계": ["시안", "검토"]})
    normalized = normalize_plan(raw)
    assert normalized.plan.execution_plan == ["1단계: 설계", "2단계: 시안, 검토"]
    assert normalized.stats["execution_plan:dict"] == 1


def test_extra_keys_are_dropped_and_counted() -> None:
    raw = plan_dict(technical_details={"a": 1}, additional_notes="메모")
    normalized = normalize_plan(raw)
    assert sorted(normalized.dropped_keys) == ["additional_notes", "technical_details"]
    assert "technical_details" not in normalized.plan.model_dump()
    with pytest.raises(ValidationError):
        ProjectPlan(**normalize_plan(plan_dict()).plan.model_dump(), technical_details="x")


def test_missing_or_empty_fields_raise_plan_shape_error() -> None:
    raw = plan_dict()
    del raw["core_idea"]
    with pytest.raises(PlanShapeError, match="core_idea"):
        normalize_plan(raw)
    with pytest.raises(PlanShapeError, match="expected_effects"):
        normalize_plan(plan_dict(expected_effects=[]))
    with pytest.raises(PlanShapeError, match="project_name"):
        normalize_plan(plan_dict(project_name="  \n "))
    with pytest.raises(PlanShapeError):
        normalize_plan(["not", "a", "plan"])  # type: ignore[arg-type]


def test_too_long_texts_are_clipped_and_lists_cut() -> None:
    raw = plan_dict(
        project_name="가" * (NAME_CHARS + 50),
        idea_description="설명 " * LONG_CHARS,
        core_objectives=[f"목표 {i}" for i in range(MAX_LIST_ITEMS + 3)],
        execution_plan=[f"{i}단계" for i in range(MAX_STEPS + 5)],
    )
    normalized = normalize_plan(raw)
    plan = normalized.plan
    assert len(plan.project_name) == NAME_CHARS and plan.project_name.endswith("…")
    assert len(plan.idea_description) <= LONG_CHARS
    assert len(plan.core_objectives) == MAX_LIST_ITEMS
    assert len(plan.execution_plan) == MAX_STEPS
    assert normalized.stats["clipped:project_name"] == 1
    assert normalized.stats["cut:core_objectives"] == 1
    assert normalized.stats["cut:execution_plan"] == 1


def _walk(node: Any) -> list[dict[str, Any]]:
    out = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out += _walk(value)
    elif isinstance(node, list):
        for value in node:
            out += _walk(value)
    return out


def test_schema_bounds_every_string_by_pattern_and_every_list_by_max_items() -> None:
    schema = plan_json_schema()
    assert list(schema["properties"]) == list(PLAN_FIELDS)
    assert set(schema["required"]) == set(PLAN_FIELDS)
    assert schema.get("additionalProperties") is False
    nodes = _walk(schema)
    assert all("maxLength" not in node for node in nodes)  # xgrammar refuses maxLength+pattern
    strings = [node for node in nodes if node.get("type") == "string"]
    arrays = [node for node in nodes if node.get("type") == "array"]
    assert len(strings) == 9  # six text fields + the items of three lists
    for node in strings:
        assert node["pattern"].startswith("^[^\\x00-\\x1f]{1,") and node["pattern"].endswith("}$")
    assert len(arrays) == 3 and all(node["maxItems"] >= 1 for node in arrays)


@pytest.mark.parametrize("bad", ["a\x00b", "line\nbreak", "tab\there", "\x1f"])
def test_control_characters_are_rejected(bad: str) -> None:
    good = normalize_plan(plan_dict()).plan.model_dump()
    with pytest.raises(ValidationError):
        ProjectPlan(**{**good, "project_name": bad})
    with pytest.raises(ValidationError):
        ProjectPlan(**{**good, "execution_plan": ["ok", bad]})
    text = json.dumps({**good, "core_idea": bad})  # escaped in JSON, still a control char
    with pytest.raises(ValidationError):
        ProjectPlan.model_validate_json(text)


def test_normalize_turns_control_characters_into_spaces() -> None:
    plan = normalize_plan(plan_dict(project_name="리모컨\t디자인\x00 프로젝트")).plan
    assert plan.project_name == "리모컨 디자인 프로젝트"


def _plan(
    name: str, manager: str, objectives: list[str], steps: list[str], **kw: Any
) -> ProjectPlan:
    data = plan_dict(name, project_manager=manager, core_objectives=objectives, **kw)
    data["execution_plan"] = steps
    return normalize_plan(data).plan


def test_merge_plans_rules() -> None:
    a = _plan("A", "Kim", ["a1", "a2", "shared"], ["s1", "s2"], idea_description="설명 A")
    b = _plan("B", "Lee", ["b1", "SHARED"], ["s2", "s3"], idea_description="설명 B")
    c = _plan("C", "Lee", ["c1"], ["s4"], idea_description="설명 A")
    merged = merge_plans([a, b, c])
    assert merged.project_name == "A" and merged.core_idea == a.core_idea  # first chunk's
    assert merged.project_manager == "Lee"  # most chunks name Lee
    # round robin by depth; "shared" (depth 2) repeats "SHARED" (depth 1) up to case
    assert merged.core_objectives == ["a1", "b1", "c1", "a2", "SHARED"]
    assert merged.execution_plan == ["s1", "s2", "s3", "s4"]  # meeting order, dedup
    assert merged.idea_description == "설명 A 설명 B"  # distinct descriptions in order
    assert merge_plans([b, a]).project_manager == "Lee"  # tie: the earliest chunk's
    assert merge_plans([a]) is a
    with pytest.raises(ValueError):
        merge_plans([])


def test_merge_plans_respects_limits() -> None:
    plans = [
        _plan(
            f"P{i}",
            "Kim",
            [f"o{i}-{j}" for j in range(MAX_LIST_ITEMS)],
            [f"s{i}-{j}" for j in range(MAX_STEPS)],
            idea_description=str(i) * 600,
        )
        for i in range(3)
    ]
    merged = merge_plans(plans)
    assert len(merged.core_objectives) == MAX_LIST_ITEMS
    assert len(merged.execution_plan) == MAX_STEPS
    assert merged.idea_description == "0" * 600  # a second one would exceed LONG_CHARS
    assert merged.execution_plan[0] == "s0-0" and merged.core_objectives[1] == "o1-0"
