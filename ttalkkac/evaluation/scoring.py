"""Scoring one generated plan against its gold plan and meeting, and aggregating many.

- Text fields: chrF (sacrebleu's implementation; character n-grams suit Korean and English
  alike), 0-100.
- List fields (``core_objectives``, ``execution_plan``, ``expected_effects``): item alignment.
  Each gold item is matched to its best generated item (recall) and each generated item to its
  best gold item (precision), by chrF; the field's score is their F1. Missing items lower
  recall, padding lowers precision: count and content both count.
- ``field_chrf``: the mean of the nine field scores (the headline figure, 0-100).
- Grounding (``ttalkkac.evaluation.grounding``), 0-1.
- Validity: whether a valid plan came back at all, and how (first try, after a plain retry,
  through the compact-schema fallback). An invalid answer scores 0 on every field and on
  grounding, so averages are over all examples, not only the valid ones.

Gold against itself scores 100 on every field.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from ttalkkac.evaluation.grounding import (
    Grounding,
    manager_grounded,
    names_grounded,
    parse_period,
)
from ttalkkac.plan import PLAN_FIELDS, ProjectPlan

TEXT_FIELDS: tuple[str, ...] = (
    "project_name",
    "project_purpose",
    "project_period",
    "project_manager",
    "core_idea",
    "idea_description",
)
LIST_FIELDS: tuple[str, ...] = ("core_objectives", "execution_plan", "expected_effects")


class Validity(StrEnum):
    """How the plan was obtained (the worst over a meeting's chunks)."""

    first_try = "first_try"
    retried = "retried"
    compact = "compact"
    invalid = "invalid"


@lru_cache(maxsize=1)
def _chrf() -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF()


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF (0-100) of one string against one reference."""
    if hypothesis == reference:
        return 100.0
    if not hypothesis.strip() or not reference.strip():
        return 0.0
    return float(_chrf().sentence_score(hypothesis, [reference]).score)


def list_f1(generated: list[str], gold: list[str]) -> float:
    """F1 (0-100) of an item alignment: best chrF match of every gold and every generated item."""
    if not generated or not gold:
        return 100.0 if generated == gold else 0.0
    matrix = [[chrf(g, r) for r in gold] for g in generated]
    precision = statistics.fmean(max(row) for row in matrix)
    recall = statistics.fmean(
        max(matrix[i][j] for i in range(len(generated))) for j in range(len(gold))
    )
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass
class PlanScore:
    """The score of one plan (or of an invalid answer) against one gold plan and meeting."""

    validity: Validity
    fields: dict[str, float]  # field name -> 0-100
    manager_grounded: bool = False
    names_grounded: float | None = None
    period_is_range: bool = False

    @property
    def valid(self) -> bool:
        return self.validity is not Validity.invalid

    @property
    def field_chrf(self) -> float:
        return statistics.fmean(self.fields[name] for name in PLAN_FIELDS)

    @property
    def grounding(self) -> float:
        if not self.valid:
            return 0.0
        return Grounding(self.manager_grounded, self.names_grounded, self.period_is_range).score

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["validity"] = self.validity.value
        data["field_chrf"] = round(self.field_chrf, 2)
        data["grounding"] = round(self.grounding, 4)
        data["fields"] = {k: round(v, 2) for k, v in self.fields.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanScore:
        return cls(
            validity=Validity(data["validity"]),
            fields=dict(data["fields"]),
            manager_grounded=bool(data.get("manager_grounded")),
            names_grounded=data.get("names_grounded"),
            period_is_range=bool(data.get("period_is_range")),
        )


def score_plan(
    plan: ProjectPlan | None,
    gold: ProjectPlan,
    meeting: str,
    *,
    validity: Validity = Validity.first_try,
) -> PlanScore:
    """Score ``plan`` against ``gold`` and the meeting it was made from (None: invalid answer)."""
    if plan is None:
        return PlanScore(validity=Validity.invalid, fields=dict.fromkeys(PLAN_FIELDS, 0.0))
    fields: dict[str, float] = {}
    for name in TEXT_FIELDS:
        fields[name] = chrf(getattr(plan, name), getattr(gold, name))
    for name in LIST_FIELDS:
        fields[name] = list_f1(getattr(plan, name), getattr(gold, name))
    texts = [
        value if isinstance(value, str) else " ".join(value)
        for value in (getattr(plan, name) for name in PLAN_FIELDS)
    ]
    return PlanScore(
        validity=validity,
        fields={name: fields[name] for name in PLAN_FIELDS},
        manager_grounded=manager_grounded(plan.project_manager, meeting),
        names_grounded=names_grounded(texts, plan.project_manager, meeting),
        period_is_range=parse_period(plan.project_period) is not None,
    )


# --- aggregation -----------------------------------------------------------------------------


@dataclass
class Aggregate:
    """Means over examples: what an evaluation reports (and what ``require_better`` compares)."""

    n: int = 0
    field_chrf: float = 0.0  # 0-100
    valid_rate: float = 0.0  # 0-1
    grounding: float = 0.0  # 0-1
    fields: dict[str, float] = field(default_factory=dict)
    validity: dict[str, int] = field(default_factory=dict)
    manager_grounded_rate: float = 0.0
    names_grounded: float | None = None
    period_is_range_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def aggregate(scores: list[PlanScore]) -> Aggregate:
    if not scores:
        return Aggregate()
    names = [s.names_grounded for s in scores if s.valid and s.names_grounded is not None]
    return Aggregate(
        n=len(scores),
        field_chrf=round(statistics.fmean(s.field_chrf for s in scores), 2),
        valid_rate=round(sum(s.valid for s in scores) / len(scores), 4),
        grounding=round(statistics.fmean(s.grounding for s in scores), 4),
        fields={
            name: round(statistics.fmean(s.fields[name] for s in scores), 2) for name in PLAN_FIELDS
        },
        validity={v.value: sum(s.validity is v for s in scores) for v in Validity},
        manager_grounded_rate=round(sum(s.manager_grounded for s in scores) / len(scores), 4),
        names_grounded=round(statistics.fmean(names), 4) if names else None,
        period_is_range_rate=round(sum(s.period_is_range for s in scores) / len(scores), 4),
    )
