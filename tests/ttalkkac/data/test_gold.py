"""The gold loader on the real shared data and on small folders for what the real data lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import GOLD_DIR, MEETINGS_DIR
from tests.utils.gold_factory import (
    GoldFolder,
    chunk_record,
    plan_dict,
    reprocessed_record,
    standard_record,
    utterances,
)
from ttalkkac.data.gold import GoldDataset, Skip, load_gold, parse_record_folder
from ttalkkac.errors import DataError
from ttalkkac.meetings import chunk_text, meeting_text


def _assert_split_by_meeting(data: GoldDataset) -> None:
    train = {r.meeting_id for r in data.train}
    val = {r.meeting_id for r in data.val}
    assert not train & val
    stats = data.stats
    assert stats.records == stats.usable + sum(stats.skipped.values())
    assert stats.usable == len(data.train) + len(data.val) == stats.train + stats.val
    assert (stats.train_meetings, stats.val_meetings) == (len(train), len(val))


# --- the real data -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_all(shared_data: Path) -> GoldDataset:
    return load_gold(GOLD_DIR, MEETINGS_DIR, min_quality=0)


def test_real_data_counts(real_all: GoldDataset) -> None:
    stats = real_all.stats
    assert stats.records == 263
    # 237 standard records and 26 reprocessed ones (25 plans, one meeting summary)
    assert stats.shapes == {"notion_output": 237, "notion_project": 25, "meeting_summary": 1}
    assert stats.scores == {6.0: 237}  # every standard record: the original parser's fallback
    assert (stats.scored, stats.unscored) == (237, 26)
    assert stats.skipped == {"unscored_excluded": 25, "bad_plan_json": 2, "no_plan": 1}
    assert stats.skip_samples["no_plan"] == ["train_028_result_Btr001_processed"]
    assert stats.usable == 235
    assert sum(stats.dropped_keys.values()) > 100 and stats.dropped_keys["technical_details"] > 0
    assert stats.split_method.startswith("seeded_fraction")
    assert (stats.train, stats.val) == (211, 24)
    _assert_split_by_meeting(real_all)


def test_real_data_default_threshold_fails_with_counts_and_the_option(shared_data: Path) -> None:
    with pytest.raises(DataError) as info:
        load_gold(GOLD_DIR, MEETINGS_DIR)
    message = info.value.message
    assert "263 records" in message
    assert "235 scored below --min-quality 7.0" in message
    assert "6.0 x237" in message
    assert "--unscored include" in message
    assert info.value.detail["records"] == 263


def test_real_data_with_unscored_records(shared_data: Path) -> None:
    data = load_gold(GOLD_DIR, MEETINGS_DIR, min_quality=6.0, unscored="include")
    assert data.stats.usable == 260
    assert sum(r.shape == "notion_project" for r in data.records) == 25
    assert any("제22대국회" in r.meeting_id for r in data.records)  # Korean folder names
    _assert_split_by_meeting(data)
    with pytest.raises(DataError):
        load_gold(GOLD_DIR, MEETINGS_DIR, min_quality=6.5)  # 6.0 < 6.5, unscored excluded


def test_real_records_pair_the_right_meeting(real_all: GoldDataset) -> None:
    record = next(r for r in real_all.records if r.record_id == "train_001_result_TS3012a")
    assert record.meeting_id == "result_TS3012a"
    raw = json.loads((MEETINGS_DIR / "result_TS3012a" / "05_final_result.json").read_text())
    assert record.meeting_text == meeting_text(raw)
    assert record.plan.project_name == "트렌디한 TV 리모컨 디자인 프로젝트"
    assert record.score == 6.0 and record.split == "train"


def test_seeded_split_is_reproducible(shared_data: Path, real_all: GoldDataset) -> None:
    again = load_gold(GOLD_DIR, MEETINGS_DIR, min_quality=0)
    other = load_gold(GOLD_DIR, MEETINGS_DIR, min_quality=0, seed=7, val_fraction=0.2)
    assert [r.meeting_id for r in again.val] == [r.meeting_id for r in real_all.val]
    assert {r.meeting_id for r in other.val} != {r.meeting_id for r in real_all.val}
    assert other.stats.val_meetings == round(235 * 0.2)
    _assert_split_by_meeting(other)


# --- small folders -----------------------------------------------------------------------------


def test_folder_names() -> None:
    assert parse_record_folder("train_012_result_X") == ("train", 12, "result_X")
    name = "val_003_result_제22대국회 제418회(정기회) (2024.12.09.)"
    assert parse_record_folder(name) == (
        "val",
        3,
        "result_제22대국회 제418회(정기회) (2024.12.09.)",
    )
    assert parse_record_folder("test_001_x") is None
    assert parse_record_folder("train_x_y") is None


def test_val_folders_decide_the_split_and_keep_meetings_whole(tmp_path: Path) -> None:
    gold = GoldFolder(tmp_path)
    gold.pair("train_001_result_A", "result_A")
    gold.pair("train_002_result_B", "result_B")
    gold.pair("val_001_result_B", "result_B")  # meeting B also has a train_ record
    gold.pair("val_002_result_C (2차 회의)", "result_C (2차 회의)")
    data = load_gold(gold.results, gold.meetings, min_quality=0)
    assert data.stats.split_method == "val_folders"
    assert {r.meeting_id for r in data.train} == {"result_A"}
    assert {r.meeting_id for r in data.val} == {"result_B", "result_C (2차 회의)"}
    assert data.stats.moved_to_val == 1
    assert len(data.val) == 3
    _assert_split_by_meeting(data)


def test_seeded_fraction_holds_out_whole_meetings(tmp_path: Path) -> None:
    gold = GoldFolder(tmp_path)
    long = utterances(400)
    for m in range(10):
        gold.meeting(f"result_M{m}", long)
        for k in (1, 2):
            gold.record(f"train_{m * 2 + k:03d}_result_M{m}_chunk_{k}", chunk_record(k))
    data = load_gold(gold.results, gold.meetings, min_quality=0, val_fraction=0.2, seed=1)
    assert data.stats.chunk_records == 20
    assert data.stats.val_meetings == 2 and data.stats.train_meetings == 8
    assert len(data.val) == 4  # both chunks of each held-out meeting
    _assert_split_by_meeting(data)
    none_held = load_gold(gold.results, gold.meetings, min_quality=0, val_fraction=0)
    assert not none_held.val and len(none_held.train) == 20


def test_tiny_data_still_holds_out_one_meeting(tmp_path: Path) -> None:
    gold = GoldFolder(tmp_path)
    gold.pair("train_001_result_A", "result_A")
    gold.pair("train_002_result_B", "result_B")
    data = load_gold(gold.results, gold.meetings, min_quality=0, val_fraction=0.1)
    assert (data.stats.train_meetings, data.stats.val_meetings) == (1, 1)


def test_chunk_records_get_their_exact_chunk(tmp_path: Path) -> None:
    gold = GoldFolder(tmp_path)
    talk = utterances(400, null_every=7)
    text = meeting_text(talk)
    chunks = chunk_text(text)
    assert len(chunks) >= 3
    gold.meeting("result_긴 회의.v2", talk)
    n = len(chunks)
    gold.record("train_001_result_긴 회의.v2_chunk_1", chunk_record(1, n))
    gold.record("train_002_result_긴 회의.v2_chunk_2", chunk_record(2, n))
    gold.record("train_003_result_긴 회의.v2_chunk_3", chunk_record(3))  # no total: fine
    gold.record("train_004_result_긴 회의.v2_chunk_9", chunk_record(n + 1, n))  # out of range
    gold.record("train_005_result_긴 회의.v2_chunk_1", chunk_record(1, n + 2))  # cut differently
    gold.record("train_006_result_긴 회의.v2_chunk_0", chunk_record(0, n))  # not 1-based
    gold.record("train_007_result_긴 회의.v2_chunk_2", chunk_record("2", n))  # not an int
    no_info = chunk_record(1)
    del no_info["metadata"]["chunk_info"]
    gold.record("train_008_result_긴 회의.v2_chunk_1", no_info)
    data = load_gold(gold.results, gold.meetings, min_quality=0, val_fraction=0)
    by_index = {r.record_id: r for r in data.train}
    assert len(by_index) == 3
    for k in (1, 2, 3):
        record = by_index[f"train_00{k}_result_긴 회의.v2_chunk_{k}"]
        assert record.meeting_id == "result_긴 회의.v2"
        assert record.chunk_index == k
        assert record.meeting_text == chunks[k - 1].text
        assert record.plan.project_name == f"청크 {k} 프로젝트"
    assert data.stats.skipped == {"chunk_mismatch": 2, "bad_chunk_info": 3}


def test_every_kind_of_broken_file_is_counted_and_the_rest_loads(tmp_path: Path) -> None:
    gold = GoldFolder(tmp_path)
    gold.pair("train_001_result_ok", "result_ok")
    gold.pair(
        "train_002_result_회의 (2025.07.15.) 제1차",
        "result_회의 (2025.07.15.) 제1차",
        reprocessed_record(),
    )
    gold.record("train_003_result_no_file")  # folder without result.json
    gold.record("train_004_result_ok", raw="{not json")
    gold.record("train_005_result_ok", raw=b"\xff\xfe\x00broken")
    gold.record("train_006_result_ok", ["a", "list"])
    gold.record("train_007_result_ok", {"result": {"meeting_summary": {"action_items": []}}})
    gold.record("train_008_result_ok", {"metadata": {}})  # no plan at all
    gold.record("train_009_result_ok", standard_record() | {"notion_output": "```json\n{,}\n```"})
    missing_field = plan_dict()
    del missing_field["project_manager"]
    gold.record("train_010_result_ok", standard_record(missing_field))
    gold.record("train_011_result_nowhere", standard_record())
    gold.pair("train_012_result_badmeeting", "result_badmeeting", raw="[{")
    gold.pair("train_013_result_empty", "result_empty", content=[])
    gold.pair("train_014_result_dict", "result_dict", content={"not": "utterances"})
    partly = [*utterances(3), {"timestamp": "00:09", "speaker": "A", "text": ""}]
    gold.pair("train_015_result_partly", "result_partly", content=partly)
    gold.pair("train_016_result_low", "result_low", standard_record(score=5.5))
    gold.pair("train_017_result_str_score", "result_str_score", standard_record(score="8.5"))
    gold.pair("train_018_result_bad_score", "result_bad_score", standard_record(score="n/a"))
    (gold.results / "summary.json").write_text("{}")  # not a record folder
    (gold.results / "notes").mkdir()

    data = load_gold(gold.results, gold.meetings, min_quality=6.0)
    stats = data.stats
    assert stats.records == 18 and stats.ignored_entries == 2
    assert stats.skipped == {
        Skip.MISSING_RESULT: 1,
        Skip.BAD_JSON: 2,
        Skip.NOT_A_RECORD: 1,
        Skip.NO_PLAN: 2,
        Skip.BAD_PLAN_JSON: 1,
        Skip.BAD_PLAN_SHAPE: 1,
        Skip.MISSING_MEETING: 1,
        Skip.BAD_MEETING: 2,
        Skip.EMPTY_MEETING: 1,
        Skip.BELOW_QUALITY: 1,
        Skip.UNSCORED: 2,  # the reprocessed record and the unparseable score
    }
    assert stats.shapes["meeting_summary"] == 1 and stats.shapes["unknown"] == 1
    assert stats.invalid_utterances == 1
    loaded = {r.record_id for r in data.records}
    assert loaded == {
        "train_001_result_ok",
        "train_015_result_partly",
        "train_017_result_str_score",
    }
    partly_record = next(r for r in data.records if r.record_id == "train_015_result_partly")
    assert partly_record.meeting_text.count("\n") == 2  # the empty utterance left out
    _assert_split_by_meeting(data)

    with_unscored = load_gold(gold.results, gold.meetings, min_quality=6.0, unscored="include")
    assert "train_002_result_회의 (2025.07.15.) 제1차" in {
        r.record_id for r in with_unscored.records
    }
    # the reprocessed record, the bad score, the summary and the record without a plan
    assert with_unscored.stats.unscored == stats.unscored == 4


def test_meeting_found_through_the_record_when_the_folder_name_differs(tmp_path: Path) -> None:
    gold = GoldFolder(tmp_path)
    gold.meeting("result_real name")
    gold.record("train_001_renamed", standard_record(source_dir="result_real name"))
    source_file = "..\\batch_triplet_results\\result_real name\\05_final_result.json"
    record = standard_record()
    record["metadata"]["source_file"] = source_file
    gold.record("train_002_renamed", record)
    gold.record("train_003_escape", standard_record(source_dir="../results"))
    gold.record("train_004_escape", standard_record(source_dir="/etc"))
    data = load_gold(gold.results, gold.meetings, min_quality=0, val_fraction=0)
    assert [r.meeting_id for r in data.train] == ["result_real name", "result_real name"]
    assert data.stats.skipped == {"missing_meeting": 2}


def test_nothing_left_raises_with_counts(tmp_path: Path) -> None:
    gold = GoldFolder(tmp_path)
    gold.pair("train_001_result_A", "result_A", standard_record(score=6.0))
    gold.pair("train_002_result_B", "result_B", reprocessed_record())
    gold.record("train_003_result_C", raw="oops")
    with pytest.raises(DataError) as info:
        load_gold(gold.results, gold.meetings)
    message = info.value.message
    assert "3 records" in message and "--min-quality" in message
    assert "1 have no quality score" in message and "bad_json 1" in message
    assert info.value.detail["skipped"] == {
        "below_min_quality": 1,
        "unscored_excluded": 1,
        "bad_json": 1,
    }


def test_missing_or_empty_folders_raise(tmp_path: Path) -> None:
    gold = GoldFolder(tmp_path)
    with pytest.raises(DataError, match="no gold records"):
        load_gold(gold.results, gold.meetings)
    with pytest.raises(DataError, match="not found"):
        load_gold(tmp_path / "absent", gold.meetings)
    with pytest.raises(ValueError):
        load_gold(gold.results, gold.meetings, val_fraction=1.0)


def test_lone_surrogates_and_deep_nesting_are_counted_not_raised(tmp_path: Path) -> None:
    # As files hold them: ASCII escapes that json.loads decodes to lone surrogates.
    gold = GoldFolder(tmp_path)
    gold.pair("train_001_result_ok", "result_ok")
    gold.pair("train_002_result_m2", "result_m2", raw=json.dumps([{"text": "\ud800 회의"}]))
    gold.record("train_003_result_ok", raw=json.dumps(standard_record(plan_dict("\udc00"))))
    escaped_plan = json.dumps(plan_dict("\ud800"))  # the escape inside notion_output's string
    gold.record("train_004_result_ok", standard_record() | {"notion_output": escaped_plan})
    gold.record("train_005_result_ok", raw="[" * 100_000 + "]" * 100_000)
    gold.pair("train_006_result_m6", "result_m6", raw="[" * 100_000 + "]" * 100_000)
    data = load_gold(gold.results, gold.meetings, min_quality=0)
    assert [r.record_id for r in data.records] == ["train_001_result_ok"]
    assert data.stats.skipped == {Skip.BAD_MEETING: 2, Skip.BAD_JSON: 2, Skip.BAD_PLAN_JSON: 1}
