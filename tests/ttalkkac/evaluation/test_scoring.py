"""Scoring one plan: chrF per text field, item-aligned F1 per list field, grounding, validity."""

from __future__ import annotations

import pytest

from tests.utils.gold_factory import plan_dict
from ttalkkac.evaluation.scoring import (
    LIST_FIELDS,
    PlanScore,
    Validity,
    aggregate,
    chrf,
    list_f1,
    score_plan,
)
from ttalkkac.plan import PLAN_FIELDS, ProjectPlan, normalize_plan

MEETING = (
    "[00:01] Speaker_A: 리모컨 디자인 회의를 시작하겠습니다.\n"
    "[00:05] Speaker_B: 마크입니다. 인터페이스를 단순하게 하죠.\n"
    "[00:09] Speaker_A: 3월 말까지 프로토타입을 만듭시다."
)


def plan(**overrides: object) -> ProjectPlan:
    return normalize_plan(plan_dict(**overrides)).plan


def test_gold_against_itself_is_100_on_every_field() -> None:
    gold = plan()
    score = score_plan(gold, gold, MEETING)
    assert score.fields == dict.fromkeys(PLAN_FIELDS, 100.0)
    assert score.field_chrf == 100.0
    assert score.valid and score.validity is Validity.first_try


def test_a_different_plan_scores_below_100_and_above_0() -> None:
    gold = plan()
    other = plan(
        name="온라인 쇼핑몰 구축",
        project_purpose="매출 증대를 위한 쇼핑몰",
        core_objectives=["결제 시스템 도입"],
    )
    score = score_plan(other, gold, MEETING)
    assert 0 < score.fields["project_name"] < 100
    assert score.fields["project_period"] == 100.0  # same period text
    assert score.field_chrf < 100


def test_chrf_is_sacrebleus_sentence_chrf() -> None:
    from sacrebleu.metrics import CHRF

    hyp, ref = "회의록 자동 요약 서비스", "회의록 자동 요약 및 노션 연동 서비스"
    assert chrf(hyp, ref) == pytest.approx(CHRF().sentence_score(hyp, [ref]).score)
    assert chrf("", ref) == 0.0


def test_list_alignment_counts_missing_and_padded_items() -> None:
    gold = ["시장 조사", "프로토타입 제작", "사용자 테스트"]
    assert list_f1(gold, gold) == 100.0
    missing = list_f1(gold[:1], gold)  # perfect precision, a third of the recall
    padded = list_f1([*gold, "무관한 항목 하나", "무관한 항목 둘"], gold)
    assert 0 < missing < 100 and 0 < padded < 100
    # Order does not matter: each item finds its best match.
    assert list_f1(list(reversed(gold)), gold) == 100.0


def test_invalid_answer_scores_zero_and_counts_in_the_mean() -> None:
    gold = plan()
    invalid = score_plan(None, gold, MEETING)
    assert invalid.validity is Validity.invalid and not invalid.valid
    assert invalid.field_chrf == 0.0 and invalid.grounding == 0.0
    perfect = score_plan(gold, gold, MEETING)
    agg = aggregate([perfect, invalid])
    assert agg.n == 2
    assert agg.valid_rate == 0.5
    assert agg.field_chrf == 50.0
    assert agg.validity == {"first_try": 1, "retried": 0, "compact": 0, "invalid": 1}


def test_grounding_of_a_plan_naming_the_meetings_people() -> None:
    gold = plan()
    grounded = score_plan(plan(project_manager="Speaker_A"), gold, MEETING)
    invented = score_plan(plan(project_manager="김철수 팀장", project_period="미정"), gold, MEETING)
    assert grounded.manager_grounded and grounded.period_is_range
    assert grounded.names_grounded == 1.0
    assert grounded.grounding == 1.0
    assert not invented.manager_grounded and not invented.period_is_range
    assert invented.names_grounded == 0.0
    assert invented.grounding == 0.0


def test_score_round_trips_through_its_stored_dict() -> None:
    gold = plan()
    score = score_plan(plan(project_manager="마크"), gold, MEETING, validity=Validity.retried)
    back = PlanScore.from_dict(score.to_dict())
    assert back.validity is Validity.retried
    assert back.field_chrf == pytest.approx(score.field_chrf, abs=0.01)
    assert back.grounding == pytest.approx(score.grounding)
    assert set(LIST_FIELDS) <= set(back.fields)
