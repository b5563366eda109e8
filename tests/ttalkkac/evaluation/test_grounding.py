"""Grounding signals: speakers, names in the meeting, date ranges."""

from __future__ import annotations

from datetime import date

import pytest

from ttalkkac.evaluation.grounding import (
    manager_grounded,
    name_pieces,
    names_grounded,
    parse_period,
    speakers,
)

ASSEMBLY = (
    "[10:00] 위원장 최민희: 회의를 개의하겠습니다.\n"
    "[10:02] 박정훈 의원: 질의하겠습니다. Eva 씨의 보고서를 봤습니다.\n"
)


def test_speakers_are_read_from_rendered_lines() -> None:
    assert speakers(ASSEMBLY) == {"위원장 최민희", "박정훈 의원"}


@pytest.mark.parametrize(
    ("manager", "expected"),
    [
        ("최민희 위원장", True),  # name piece occurs; the title alone does not count
        ("에바 (Eva)", True),  # one of the two spellings occurs
        ("위원장", False),  # a role names nobody
        ("PM", False),
        ("홍길동", False),
        ("정동영 예산결산심사소위원장", False),  # compound titles are roles, not names
    ],
)
def test_manager_grounded(manager: str, expected: bool) -> None:
    assert manager_grounded(manager, ASSEMBLY) is expected


def test_name_pieces_drop_roles() -> None:
    assert name_pieces("최민희 위원장") == ["최민희"]
    assert name_pieces("Speaker_C (PM)") == ["Speaker_C"]


def test_names_grounded_share() -> None:
    texts = ["박정훈 의원이 예산을 검토하고 김영수 위원이 보고한다"]
    assert names_grounded(texts, "최민희 위원장", ASSEMBLY) == pytest.approx(2 / 3)
    assert names_grounded(["이름 없는 계획"], "위원장", ASSEMBLY) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025.01.01 ~ 2025.03.31", (date(2025, 1, 1), date(2025, 3, 31))),
        ("2024-01 ~ 2024-06", (date(2024, 1, 1), date(2024, 6, 30))),
        ("2025년 1월 1일 ~ 2025년 3월 31일", (date(2025, 1, 1), date(2025, 3, 31))),
        ("2025.03.31 ~ 2025.01.01", None),  # ends before it starts
        ("2025.13.01 ~ 2025.14.01", None),  # no such month
        ("3개월", None),
        ("미정", None),
    ],
)
def test_parse_period(text: str, expected: tuple[date, date] | None) -> None:
    assert parse_period(text) == expected
