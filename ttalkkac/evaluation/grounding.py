"""Grounding: does a plan talk about the people and dates of *its* meeting?

Three signals, each cheap and explainable (no model, no NER library):
- ``manager_grounded``: ``project_manager`` names someone of the meeting: a speaker label
  (``Speaker_C``) or a name piece (``최민희`` of ``최민희 위원장``, ``Eva`` of ``에바 (Eva)``) that
  occurs in the transcript. Role words alone (``PM``, ``위원장``) name nobody and do not count.
- ``names_grounded``: the share of person references in the whole plan that occur in the
  meeting (a hallucination signal). Person references are speaker labels, Korean names followed
  by a title (``김교흥 위원장``, ``박 의원``) and the manager's name pieces. None when the plan names
  nobody.
- ``period_is_range``: ``project_period`` parses as a date range whose start is not after its end
  (``2025.01.01 ~ 2025.03.31``, ``2025-01 ~ 2025-06``, ``2025년 1월 1일 ~ 2025년 3월 31일``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_SPEAKER_LINE = re.compile(r"^(?:\[[^\]\n]{0,40}\]\s*)?([^:\n]{1,80}):", re.MULTILINE)
_SPEAKER_LABEL = re.compile(r"\bSpeaker_[A-Za-z0-9]+\b")
_TITLES = (
    "위원장|소위원장|부위원장|위원|의원|장관|차관|청장|처장|원장|국장|과장|실장|본부장|대표|"
    "사장|팀장|매니저|교수|박사|님|씨"
)
# A particle may follow the title (위원이, 의원은); 위원회 is a committee, not a person.
_TITLED_KOREAN_NAME = re.compile(rf"([가-힣]{{2,4}})\s?(?:{_TITLES})(?!회)")
_PIECES = re.compile(r"[\s,/()\[\]·・|&+]+")
# Words that describe a role, not a person: a manager made only of these names nobody.
_ROLE_WORDS = frozenset(
    {
        *_TITLES.split("|"),
        "pm",
        "po",
        "lead",
        "leader",
        "manager",
        "project",
        "team",
        "the",
        "and",
        "및",
        "프로젝트",
        "담당자",
        "책임자",
        "팀",
        "전체",
        "공동",
        "미정",
    }
)
_TITLE_SUFFIX = re.compile(rf"(?:{_TITLES})$")


def _is_role(piece: str) -> bool:
    """A role word, or a compound title such as 예산결산심사소위원장 (longer than a name)."""
    folded = piece.casefold()
    return folded in _ROLE_WORDS or (len(piece) > 4 and bool(_TITLE_SUFFIX.search(piece)))


def speakers(meeting: str) -> set[str]:
    """Speaker names of a transcript rendered as ``[time] speaker: text`` lines."""
    found = {m.group(1).strip() for m in _SPEAKER_LINE.finditer(meeting)}
    return {s for s in found if s and len(s) <= 60}


def name_pieces(text: str) -> list[str]:
    """The parts of a name field that could identify a person (role words dropped)."""
    pieces = []
    for piece in _PIECES.split(text):
        piece = piece.strip(".:;\"'")
        if len(piece) < 2 or _is_role(piece) or piece.isdigit():
            continue
        pieces.append(piece)
    return pieces


def _occurs(piece: str, meeting_folded: str, speaker_names: set[str]) -> bool:
    folded = piece.casefold()
    return folded in meeting_folded or any(folded in s.casefold() for s in speaker_names)


def manager_grounded(manager: str, meeting: str) -> bool:
    folded = meeting.casefold()
    names = speakers(meeting)
    return any(_occurs(p, folded, names) for p in name_pieces(manager))


def person_references(texts: list[str], manager: str) -> list[str]:
    """Person references in a plan: speaker labels, titled Korean names, the manager's name."""
    refs: list[str] = []
    for text in texts:
        refs += _SPEAKER_LABEL.findall(text)
        refs += [m.group(1) for m in _TITLED_KOREAN_NAME.finditer(text)]
    refs += name_pieces(manager)
    seen: dict[str, None] = {}
    for ref in refs:
        if not _is_role(ref):
            seen.setdefault(ref, None)
    return list(seen)


def names_grounded(texts: list[str], manager: str, meeting: str) -> float | None:
    refs = person_references(texts, manager)
    if not refs:
        return None
    folded = meeting.casefold()
    names = speakers(meeting)
    return sum(_occurs(r, folded, names) for r in refs) / len(refs)


_DATE = (
    r"(?P<{p}y>(?:19|20)\d{{2}})\s*(?:[.\-/]|년)\s*(?P<{p}m>\d{{1,2}})"
    r"(?:\s*(?:[.\-/]|월)\s*(?P<{p}d>\d{{1,2}}))?\s*(?:일|월|\.)?"
)
_RANGE = re.compile(
    _DATE.format(p="a")
    + r"\s*(?:~|∼|〜|–|—|-|to|부터|에서)\s*(?:까지\s*)?"
    + _DATE.format(p="b")
    + r"\s*(?:까지)?",
    re.IGNORECASE,
)


def parse_period(text: str) -> tuple[date, date] | None:
    """The first date range in ``text`` (day defaults to the 1st / end of month), or None."""
    match = _RANGE.search(text)
    if match is None:
        return None
    try:
        start = date(int(match["ay"]), int(match["am"]), int(match["ad"] or 1))
        end_day = (
            int(match["bd"]) if match["bd"] else _month_end(int(match["by"]), int(match["bm"]))
        )
        end = date(int(match["by"]), int(match["bm"]), end_day)
    except ValueError:  # month 13, day 32, ...
        return None
    return (start, end) if start <= end else None


def _month_end(year: int, month: int) -> int:
    if not 1 <= month <= 12:
        raise ValueError(month)
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return (nxt - date.resolution).day


@dataclass(frozen=True)
class Grounding:
    manager_grounded: bool
    names_grounded: float | None
    period_is_range: bool

    @property
    def score(self) -> float:
        """Mean of the three signals (0-1); names count only when the plan names someone."""
        parts = [float(self.manager_grounded), float(self.period_is_range)]
        if self.names_grounded is not None:
            parts.append(self.names_grounded)
        return sum(parts) / len(parts)
