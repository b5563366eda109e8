"""Meetings: utterance rendering (no ``[None]``) and the original chunking rules."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.conftest import MEETINGS_DIR
from ttalkkac.meetings import CHUNK_CHARS, CHUNK_OVERLAP, Utterance, chunk_text, meeting_text


def test_utterances_render_as_timestamp_speaker_text() -> None:
    text = meeting_text(
        [
            {
                "timestamp": "06:14",
                "timestamp_order": "2-1",
                "speaker": "Speaker_C",
                "text": "안녕",
            },
            {"timestamp": None, "speaker": "위원장 최민희", "text": "개의합니다."},
            {"timestamp": "  ", "speaker": None, "text": "발언"},
            Utterance(timestamp="07:00", speaker="B", text="  공백  "),
        ]
    )
    assert text.split("\n") == [
        "[06:14] Speaker_C: 안녕",
        "위원장 최민희: 개의합니다.",
        "발언",
        "[07:00] B: 공백",
    ]
    assert "[None]" not in text and "None" not in text


def test_plain_text_is_kept() -> None:
    assert meeting_text("  회의록 본문\n둘째 줄  ") == "회의록 본문\n둘째 줄"


def test_utterance_without_text_is_invalid() -> None:
    with pytest.raises(ValidationError):
        Utterance.model_validate({"timestamp": "00:01", "speaker": "A", "text": ""})


def test_real_meetings_never_render_none(shared_data: Path) -> None:
    folders = sorted(Path(MEETINGS_DIR).iterdir())
    assert len(folders) == 263
    with_null = 0
    for folder in folders:
        data = json.loads((folder / "05_final_result.json").read_text(encoding="utf-8"))
        with_null += any(u.get("timestamp") is None for u in data)
        text = meeting_text(data)
        assert "[None]" not in text, folder.name
        assert text.count("\n") >= len(data) - 1  # one line per utterance (some hold more)
    assert with_null == 80  # meetings with untimed utterances (the assembly minutes)


def test_short_text_is_one_chunk() -> None:
    text = "가" * CHUNK_CHARS
    [chunk] = chunk_text(text)
    assert (chunk.index, chunk.total, chunk.start, chunk.end, chunk.text) == (1, 1, 0, 5000, text)


def _check_chunks(text: str) -> list:
    chunks = chunk_text(text)
    assert [c.index for c in chunks] == list(range(1, len(chunks) + 1))  # 1-based
    assert all(c.total == len(chunks) for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start == prev.end - CHUNK_OVERLAP  # 512 characters of overlap
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.end - c.start <= CHUNK_CHARS
    return chunks


def test_chunks_break_at_last_period_or_newline_past_the_middle() -> None:
    lines = [f"[00:{i:02d}] Speaker_A: 문장 {i} 리모컨 디자인을 논의합니다" for i in range(600)]
    text = "\n".join(lines)
    chunks = _check_chunks(text)
    assert len(chunks) > 3
    for c in chunks[:-1]:
        window = text[c.start : c.start + CHUNK_CHARS]
        last_break = max(window.rfind("."), window.rfind("\n"))
        assert last_break > CHUNK_CHARS // 2
        assert c.end == c.start + last_break + 1  # right after the last break in the window
        assert text[c.end - 1] in ".\n"


def test_period_wins_over_earlier_newline_and_breaks_before_the_middle_are_ignored() -> None:
    text = "a" * 2000 + "\n" + "b" * 1999 + "." + "c" * 4000  # newline 2000, period 4000
    first = chunk_text(text)[0]
    assert first.end == 4001
    text = "a" * 1000 + "." + "b" * 8000  # the only break is before the middle
    chunks = _check_chunks(text)
    assert chunks[0].end == CHUNK_CHARS  # hard limit
    assert chunks[1].start == CHUNK_CHARS - CHUNK_OVERLAP


def test_chunking_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        chunk_text("x" * 100, chunk_chars=1000, overlap=500)
