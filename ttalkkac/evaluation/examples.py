"""Which examples an evaluation scores, and the generic-plan floor beside each.

Selection is deterministic: the dataset is split exactly as a training job splits it (by meeting,
with the job's ``val_fraction`` and seed, ``ttalkkac.data.gold.split_by_meeting``), the chosen
split is shuffled with the evaluation's seed and cut at ``max_samples``. Two evaluations with the
same parameters score the same examples in the same order; a resumed one finds its rows by index.

Meetings longer than ``max_meeting_chars`` are shortened the way training shortens them (the
beginning kept, cut at a line end, ``SHORTENED_MARKER`` appended), so the model sees what it was
trained on.

The **generic-plan floor**: beside every example, the gold plan of a *different* meeting of the
same split is scored against this example's gold plan and meeting. A well-formed plan that knows
nothing about the meeting scores this much; a model that scores no higher learned the template,
not the meeting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ttalkkac.data.examples import shorten_meeting
from ttalkkac.errors import DataError
from ttalkkac.plan import ProjectPlan

MAX_SAMPLES = 500


class EvalSplit(StrEnum):
    validation = "validation"
    all = "all"


class Selection(BaseModel):
    """How the dataset is split before an evaluation picks its examples (a training job's)."""

    model_config = ConfigDict(extra="forbid")

    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    split_seed: int = Field(default=42, ge=0, le=2**31 - 1)
    min_quality: float = Field(default=0.0, ge=0, le=10)
    include_unscored: bool = True

    @classmethod
    def from_spec(cls, spec: Any) -> Selection:
        return cls(
            val_fraction=spec.val_fraction,
            split_seed=spec.seed,
            min_quality=spec.min_quality,
            include_unscored=spec.include_unscored,
        )


@dataclass(frozen=True)
class EvalExample:
    index: int  # position in the evaluation; rows are keyed by it
    record_id: str
    meeting_id: str
    meeting: str  # as sent to the model (shortened when over max_meeting_chars)
    gold: ProjectPlan
    floor_record_id: str | None  # the other meeting's gold plan used as the floor
    floor_plan: ProjectPlan | None


def select_examples(
    records: list[Any],
    *,
    max_samples: int,
    max_meeting_chars: int,
    seed: int,
) -> list[EvalExample]:
    """The evaluation's examples from a split's records (``meeting_text``, ``plan``, ids)."""
    pool = sorted(records, key=lambda r: str(r.record_id))
    random.Random(seed).shuffle(pool)
    chosen = pool[:max_samples]
    examples = []
    for index, record in enumerate(chosen):
        floor = _floor_record(pool, index, record)
        meeting = record.meeting_text
        if len(meeting) > max_meeting_chars:
            meeting = shorten_meeting(meeting, max_meeting_chars)
        examples.append(
            EvalExample(
                index=index,
                record_id=str(record.record_id),
                meeting_id=str(getattr(record, "meeting_id", record.record_id)),
                meeting=meeting,
                gold=record.plan,
                floor_record_id=None if floor is None else str(floor.record_id),
                floor_plan=None if floor is None else floor.plan,
            )
        )
    return examples


def _floor_record(pool: list[Any], index: int, record: Any) -> Any | None:
    """The next record of the shuffled pool that belongs to another meeting (None: only one)."""
    meeting = getattr(record, "meeting_id", record.record_id)
    for step in range(1, len(pool)):
        other = pool[(index + step) % len(pool)]
        if getattr(other, "meeting_id", other.record_id) != meeting:
            return other
    return None


def load_split(folder: Path, layout: Any, split: EvalSplit, selection: Selection) -> list[Any]:
    """The records of a stored dataset's split (``ttalkkac.datasets.load_records``)."""
    from ttalkkac.datasets import load_records

    loaded = load_records(
        folder,
        layout,
        min_quality=selection.min_quality,
        include_unscored=selection.include_unscored,
        val_fraction=selection.val_fraction,
        seed=selection.split_seed,
    )
    records = list(loaded.val) if split is EvalSplit.validation else [*loaded.train, *loaded.val]
    if not records:
        raise DataError(
            f"the dataset's {split.value} split is empty (val_fraction "
            f"{selection.val_fraction}); evaluate split 'all' or use a larger dataset"
        )
    return records
