"""Rendering a plan: Markdown and Notion block JSON with the original headings."""

from __future__ import annotations

from tests.utils.gold_factory import plan_dict
from ttalkkac.plan import ProjectPlan, normalize_plan
from ttalkkac.render import (
    NOTION_TEXT_LIMIT,
    to_markdown,
    to_notion_blocks,
    to_notion_page,
)

HEADINGS = ["프로젝트 개요", "핵심 목표", "세부 내용", "기대 효과"]


def _plan() -> ProjectPlan:
    return normalize_plan(
        plan_dict(execution_plan=["1단계: 설계", "2단계: 제작", "3단계: 테스트"])
    ).plan


def _text(block: dict) -> str:
    kind = block["type"]
    return "".join(part["text"]["content"] for part in block[kind]["rich_text"])


def test_markdown_has_the_original_sections_in_order() -> None:
    plan = _plan()
    md = to_markdown(plan)
    lines = md.splitlines()
    assert lines[0] == f"# {plan.project_name}"
    assert [line[3:] for line in lines if line.startswith("## ")] == HEADINGS
    assert "- **담당자**: Speaker_A" in lines
    assert lines.index("1. 1단계: 설계") < lines.index("3. 3단계: 테스트")
    assert "- 목표 1: 인터페이스 개선" in lines and "- 시장 경쟁력 확보" in lines
    assert md.endswith("\n")


def test_notion_blocks_structure() -> None:
    plan = _plan()
    blocks = to_notion_blocks(plan)
    for block in blocks:
        assert block["object"] == "block"
        assert set(block) == {"object", "type", block["type"]}
        assert all(part["type"] == "text" for part in block[block["type"]]["rich_text"])
    assert [_text(b) for b in blocks if b["type"] == "heading_2"] == HEADINGS
    steps = [_text(b) for b in blocks if b["type"] == "numbered_list_item"]
    assert steps == plan.execution_plan
    bullets = [_text(b) for b in blocks if b["type"] == "bulleted_list_item"]
    assert "담당자: Speaker_A" in bullets
    assert bullets[-len(plan.expected_effects) :] == plan.expected_effects
    manager = next(b for b in blocks if _text(b).startswith("담당자"))
    label, value = manager["bulleted_list_item"]["rich_text"]
    assert label["annotations"]["bold"] is True and value["annotations"]["bold"] is False
    assert {"heading_3", "paragraph"} <= {b["type"] for b in blocks}


def test_long_text_is_split_under_notions_limit() -> None:
    long = "가" * (NOTION_TEXT_LIMIT * 2 + 10)
    plan = ProjectPlan.model_construct(**{**_plan().model_dump(), "idea_description": long})
    paragraph = next(
        b for b in to_notion_blocks(plan) if b["type"] == "paragraph" and len(_text(b)) > 100
    )
    parts = paragraph["paragraph"]["rich_text"]
    assert len(parts) == 3
    assert all(len(p["text"]["content"]) <= NOTION_TEXT_LIMIT for p in parts)
    assert _text(paragraph) == long


def test_notion_page_body() -> None:
    plan = _plan()
    page = to_notion_page(plan, parent_page_id="abc123")
    assert page["parent"] == {"page_id": "abc123"}
    assert page["properties"]["title"]["title"][0]["text"]["content"] == plan.project_name
    assert page["children"] == to_notion_blocks(plan)
    assert "parent" not in to_notion_page(plan)
