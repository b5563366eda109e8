"""Rendering a plan for people: Markdown, and the block JSON that Notion's page API takes.

Section headings follow the original project's Notion page: 프로젝트 개요, 핵심 목표, 세부 내용,
기대 효과.
"""

from __future__ import annotations

from typing import Any

from ttalkkac.plan import ProjectPlan

NOTION_TEXT_LIMIT = 2000  # Notion rejects rich_text content longer than 2,000 characters

OVERVIEW = "프로젝트 개요"
OBJECTIVES = "핵심 목표"
DETAILS = "세부 내용"
EFFECTS = "기대 효과"


def _overview_rows(plan: ProjectPlan) -> list[tuple[str, str]]:
    return [
        ("프로젝트명", plan.project_name),
        ("목적", plan.project_purpose),
        ("수행 기간", plan.project_period),
        ("담당자", plan.project_manager),
    ]


def to_markdown(plan: ProjectPlan) -> str:
    lines = [f"# {plan.project_name}", "", f"## {OVERVIEW}", ""]
    lines += [f"- **{label}**: {value}" for label, value in _overview_rows(plan)]
    lines += ["", f"## {OBJECTIVES}", ""]
    lines += [f"- {item}" for item in plan.core_objectives]
    lines += ["", f"## {DETAILS}", "", "### 핵심 아이디어", "", plan.core_idea, ""]
    lines += ["### 아이디어 설명", "", plan.idea_description, "", "### 실행 계획", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(plan.execution_plan, start=1)]
    lines += ["", f"## {EFFECTS}", ""]
    lines += [f"- {item}" for item in plan.expected_effects]
    return "\n".join(lines) + "\n"


def _rich_text(text: str, *, bold: bool = False) -> list[dict[str, Any]]:
    pieces = [text[i : i + NOTION_TEXT_LIMIT] for i in range(0, len(text), NOTION_TEXT_LIMIT)]
    return [
        {"type": "text", "text": {"content": piece}, "annotations": {"bold": bold}}
        for piece in pieces or [""]
    ]


def _block(kind: str, rich_text: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "block", "type": kind, kind: {"rich_text": rich_text}}


def to_notion_blocks(plan: ProjectPlan) -> list[dict[str, Any]]:
    """The page body as Notion blocks (``children`` of ``POST /v1/pages``)."""
    blocks = [_block("heading_2", _rich_text(OVERVIEW))]
    for label, value in _overview_rows(plan):
        blocks.append(
            _block("bulleted_list_item", _rich_text(f"{label}: ", bold=True) + _rich_text(value))
        )
    blocks.append(_block("heading_2", _rich_text(OBJECTIVES)))
    blocks += [_block("bulleted_list_item", _rich_text(item)) for item in plan.core_objectives]
    blocks.append(_block("heading_2", _rich_text(DETAILS)))
    blocks.append(_block("heading_3", _rich_text("핵심 아이디어")))
    blocks.append(_block("paragraph", _rich_text(plan.core_idea)))
    blocks.append(_block("heading_3", _rich_text("아이디어 설명")))
    blocks.append(_block("paragraph", _rich_text(plan.idea_description)))
    blocks.append(_block("heading_3", _rich_text("실행 계획")))
    blocks += [_block("numbered_list_item", _rich_text(step)) for step in plan.execution_plan]
    blocks.append(_block("heading_2", _rich_text(EFFECTS)))
    blocks += [_block("bulleted_list_item", _rich_text(item)) for item in plan.expected_effects]
    return blocks


def to_notion_page(plan: ProjectPlan, *, parent_page_id: str | None = None) -> dict[str, Any]:
    """A full ``POST /v1/pages`` body: title property plus the blocks."""
    page: dict[str, Any] = {
        "properties": {"title": {"title": _rich_text(plan.project_name)}},
        "children": to_notion_blocks(plan),
    }
    if parent_page_id:
        page["parent"] = {"page_id": parent_page_id}
    return page
