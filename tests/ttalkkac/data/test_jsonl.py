"""Chat JSONL: export for other tools and import of uploads, with bad lines counted."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.conftest import GOLD_DIR, MEETINGS_DIR
from tests.utils.gold_factory import plan_dict
from ttalkkac.data.examples import answer_text
from ttalkkac.data.gold import load_gold
from ttalkkac.data.jsonl import (
    load_chat_jsonl,
    read_chat_jsonl,
    record_to_chat,
    write_chat_jsonl,
)
from ttalkkac.errors import DataError
from ttalkkac.prompts import SYSTEM_PROMPT, build_messages


def test_real_records_round_trip(shared_data: Path, tmp_path: Path) -> None:
    data = load_gold(GOLD_DIR, MEETINGS_DIR, min_quality=0)
    chosen = [("train", r) for r in data.train[:20]] + [("val", r) for r in data.val[:5]]
    out = tmp_path / "sub" / "gold.jsonl"
    lines = (record_to_chat(r, metadata=True, split=split) for split, r in chosen)
    assert write_chat_jsonl(lines, out) == 25
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    roles = [m["role"] for m in first["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert first["messages"][0]["content"] == SYSTEM_PROMPT
    assert first["messages"][2]["content"] == answer_text(data.train[0].plan)

    records, stats = read_chat_jsonl(out)
    assert stats.records == 25 and not stats.skipped and stats.raw_user_content == 0
    for (split, original), back in zip(chosen, records, strict=True):
        assert back.plan == original.plan
        assert back.meeting_text == original.meeting_text
        assert (back.meeting_id, back.record_id, back.split) == (
            original.meeting_id,
            original.record_id,
            split,
        )
    loaded = load_chat_jsonl(out)
    assert loaded.stats.split_method == "val_folders"
    assert [r.record_id for r in loaded.val] == [r.record_id for _s, r in chosen[20:]]


def _line(**obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def test_import_counts_every_bad_line() -> None:
    plan = plan_dict(technical_details="dropped")
    good = build_messages("[00:01] A: 회의", json.dumps(plan, ensure_ascii=False))
    fenced = [
        {"role": "user", "content": "그냥 회의 내용입니다"},
        {"role": "assistant", "content": "```json\n" + json.dumps(plan) + "\n```"},
    ]
    missing = dict(plan)
    del missing["project_name"]
    text = "\n".join(
        [
            _line(messages=good),
            "",
            _line(messages=fenced),
            "{broken",
            _line(prompt="x", completion="y"),
            _line(messages=[{"role": "assistant", "content": "{}"}]),
            _line(messages=[{"role": "user", "content": "회의"}]),
            _line(
                messages=[
                    {"role": "user", "content": "회의"},
                    {"role": "assistant", "content": "표"},
                ]
            ),
            _line(
                messages=[
                    {"role": "user", "content": "회의"},
                    {"role": "assistant", "content": json.dumps(missing)},
                ]
            ),
            _line(messages=build_messages("   ", json.dumps(plan))),
            "[1, 2]",
        ]
    )
    records, stats = read_chat_jsonl(io.StringIO(text))
    assert [r.meeting_text for r in records] == ["[00:01] A: 회의", "그냥 회의 내용입니다"]
    assert stats.lines == 10  # the blank line is not a line of data
    assert stats.raw_user_content == 1
    assert stats.dropped_keys == {"technical_details": 2}
    assert stats.skipped == {
        "bad_json": 1,
        "no_messages": 2,
        "no_user_message": 1,
        "no_assistant_message": 1,
        "bad_plan_json": 1,
        "bad_plan_shape": 1,
        "empty_meeting": 1,
    }
    assert stats.skip_lines["bad_json"] == [4]
    assert records[0].record_id == "line_1" and records[0].split == "train"


def test_lines_without_ids_group_identical_transcripts(tmp_path: Path) -> None:
    plan = json.dumps(plan_dict(), ensure_ascii=False)
    path = tmp_path / "upload.jsonl"
    path.write_text(
        "\n".join(_line(messages=build_messages(m, plan)) for m in ["회의 A", "회의 B", "회의 A"]),
        encoding="utf-8",
    )
    data = load_chat_jsonl(path, val_fraction=0.5, seed=3)
    ids = [r.meeting_id for r in data.train + data.val]
    assert len(set(ids)) == 2
    assert not {r.meeting_id for r in data.train} & {r.meeting_id for r in data.val}


def test_upload_with_nothing_usable_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("{broken\n" + _line(messages=[]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="no usable lines") as info:
        load_chat_jsonl(path)
    assert info.value.detail["skipped"] == {"bad_json": 1, "no_user_message": 1}


def test_lines_nested_past_the_recursion_limit_are_bad_lines() -> None:
    plan = json.dumps(plan_dict(), ensure_ascii=False)
    deep = "[" * 100_000 + "]" * 100_000
    deep_plan = [{"role": "user", "content": "회의"}, {"role": "assistant", "content": deep}]
    text = "\n".join(
        [deep, _line(messages=deep_plan), _line(messages=build_messages("회의", plan))]
    )
    records, stats = read_chat_jsonl(io.StringIO(text))
    assert len(records) == 1
    assert stats.skipped == {"bad_json": 1, "bad_plan_json": 1}
    assert stats.skip_lines == {"bad_json": [1], "bad_plan_json": [2]}


def test_lines_with_lone_surrogates_are_bad_lines() -> None:
    # As a file holds them: ASCII escapes ("\ud800"), which json.loads decodes to a lone
    # surrogate (raw surrogates cannot be in a UTF-8 file).
    plan = plan_dict()
    bad_plan = json.dumps({**plan, "project_name": "\ud800 plan"})
    text = "\n".join(
        [
            json.dumps({"messages": build_messages("\ud800 회의", json.dumps(plan))}),
            json.dumps({"messages": build_messages("회의", bad_plan)}),
            json.dumps(
                {"messages": build_messages("회의", json.dumps(plan)), "metadata": {"\udfff": 1}}
            ),
            _line(messages=build_messages("좋은 회의", json.dumps(plan))),
        ]
    )
    assert "\\ud800" in text
    records, stats = read_chat_jsonl(io.StringIO(text))
    assert [r.meeting_text for r in records] == ["좋은 회의"]
    assert stats.skipped == {"invalid_unicode": 3}
    for record in records:
        record.meeting_text.encode("utf-8")  # what hashing and tokenizing need
