"""Small training data for the tiny model: short meetings and plans, as records or uploads."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.utils.gold_factory import GoldFolder, plan_dict, standard_record
from ttalkkac.data.gold import GoldRecord
from ttalkkac.plan import normalize_plan

MEETING_LINES = [
    "오늘 회의에서는 새로운 리모컨 디자인을 논의하겠습니다.",
    "배터리 수명과 가격이 중요합니다. 다음 주까지 시장 조사를 하겠습니다.",
    "Alice will write the API spec by Friday. Bob owns the database migration.",
]


def meeting_utterances(i: int) -> list[dict]:
    return [
        {"timestamp": f"00:0{k}", "speaker": f"Speaker_{'AB'[k % 2]}", "text": f"{line} {i}"}
        for k, line in enumerate(MEETING_LINES)
    ]


def tiny_records(n: int = 6, *, meetings: int | None = None) -> list[GoldRecord]:
    """``n`` records over ``meetings`` meetings (default one each), all with the same short plan."""
    from ttalkkac.meetings import meeting_text

    plan = normalize_plan(plan_dict()).plan
    meetings = meetings or n
    return [
        GoldRecord(
            record_id=f"train_{i:03d}_m{i % meetings}",
            split="train",
            meeting_id=f"m{i % meetings}",
            meeting_text=meeting_text(meeting_utterances(i % meetings)),
            plan=plan,
            shape="notion_output",
            score=8.0,
        )
        for i in range(n)
    ]


def write_tiny_gold(root: Path, n: int = 6, *, score: float = 8.0) -> GoldFolder:
    """A gold-standard layout (results + meetings folders) of ``n`` short meetings."""
    gold = GoldFolder(root)
    for i in range(n):
        gold.pair(
            f"train_{i + 1:03d}_result_M{i}",
            f"result_M{i}",
            standard_record(score=score),
            content=meeting_utterances(i),
        )
    return gold


def zip_dir(src: Path, dest: Path, *, arc_root: str = "gold") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*")):
            zf.write(path, f"{arc_root}/{path.relative_to(src)}")
    return dest


def tiny_gold_zip(tmp: Path, n: int = 6, *, score: float = 8.0) -> Path:
    write_tiny_gold(tmp / "src", n, score=score)
    return zip_dir(tmp / "src", tmp / "gold.zip")


def chat_jsonl(path: Path, n: int = 4) -> Path:
    from ttalkkac.data.jsonl import record_to_chat

    lines = [json.dumps(record_to_chat(r), ensure_ascii=False) for r in tiny_records(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
