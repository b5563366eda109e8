"""Which examples an evaluation scores: deterministic, floor from another meeting, shortened."""

from __future__ import annotations

from dataclasses import replace

from tests.utils.gold_factory import plan_dict
from tests.utils.training_data import tiny_records
from ttalkkac.data.examples import SHORTENED_MARKER
from ttalkkac.evaluation.examples import select_examples
from ttalkkac.plan import normalize_plan


def records(n: int = 8, *, meetings: int | None = None) -> list:
    out = []
    for i, record in enumerate(tiny_records(n, meetings=meetings)):
        plan = normalize_plan(plan_dict(f"프로젝트 {i}")).plan
        out.append(replace(record, plan=plan))
    return out


def test_selection_is_deterministic_per_seed_and_bounded() -> None:
    pool = records(8)
    first = select_examples(pool, max_samples=5, max_meeting_chars=10_000, seed=3)
    again = select_examples(list(reversed(pool)), max_samples=5, max_meeting_chars=10_000, seed=3)
    other = select_examples(pool, max_samples=5, max_meeting_chars=10_000, seed=4)
    assert [e.record_id for e in first] == [e.record_id for e in again]
    assert [e.record_id for e in first] != [e.record_id for e in other]
    assert [e.index for e in first] == list(range(5))


def test_floor_is_the_gold_plan_of_another_meeting() -> None:
    pool = records(6, meetings=3)  # two records per meeting
    examples = select_examples(pool, max_samples=6, max_meeting_chars=10_000, seed=0)
    by_id = {r.record_id: r for r in pool}
    for example in examples:
        floor = by_id[example.floor_record_id]
        assert floor.meeting_id != example.meeting_id
        assert example.floor_plan == floor.plan


def test_single_meeting_has_no_floor() -> None:
    examples = select_examples(
        records(2, meetings=1), max_samples=2, max_meeting_chars=10_000, seed=0
    )
    assert all(e.floor_plan is None for e in examples)


def test_long_meetings_are_shortened_as_training_shortens_them() -> None:
    pool = records(2)
    examples = select_examples(pool, max_samples=2, max_meeting_chars=60, seed=0)
    for example in examples:
        assert example.meeting.endswith(SHORTENED_MARKER)
        assert len(example.meeting) <= 60 + len(SHORTENED_MARKER)
