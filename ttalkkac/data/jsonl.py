"""Chat-message JSONL: export records for other fine-tuning tools, import uploads back.

One line per example: ``{"messages": [system, user, assistant]}`` with the guide's prompts and
the plan as compact JSON, the format TRL, Axolotl and OpenAI-style fine-tuning read. Optional
``metadata`` (record id, meeting id, split) keeps the split by meeting on a round trip.

Import accepts any line with a user and an assistant message: a user message rendered from our
template gives back the meeting; any other user text is taken as the meeting itself (training
always wraps it in our template). The assistant message must hold a plan (a fenced block is
accepted); it is normalized like gold plans. Bad lines are counted by reason, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from ttalkkac.data.examples import answer_text
from ttalkkac.data.gold import DEFAULT_SEED, DEFAULT_VAL_FRACTION, GoldRecord, split_by_meeting
from ttalkkac.errors import DataError
from ttalkkac.plan import PlanShapeError, normalize_plan
from ttalkkac.prompts import USER_PROMPT_TEMPLATE, build_messages
from ttalkkac.text import invalid_unicode_at

logger = logging.getLogger(__name__)

SHAPE = "chat_jsonl"
_HEAD, _TAIL = USER_PROMPT_TEMPLATE.split("{meeting_content}")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)\n?\s*```", re.DOTALL)


def record_to_chat(
    record: GoldRecord,
    *,
    meeting_text: str | None = None,
    metadata: bool = False,
    split: str | None = None,
) -> dict[str, Any]:
    """One JSONL object; ``meeting_text`` overrides the record's (e.g. a shortened transcript),
    ``split`` the split written to the metadata (the assigned one rather than the folder's)."""
    line: dict[str, Any] = {
        "messages": build_messages(
            record.meeting_text if meeting_text is None else meeting_text,
            answer_text(record.plan),
        )
    }
    if metadata:
        line["metadata"] = {
            "record_id": record.record_id,
            "meeting_id": record.meeting_id,
            "split": split or record.split,
            "score": record.score,
            "chunk_index": record.chunk_index,
        }
    return line


def write_chat_jsonl(lines: Iterable[dict[str, Any]], path: Path | str) -> int:
    """Write JSONL atomically (a temp file renamed); returns the number of lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


@dataclass
class JsonlStats:
    lines: int = 0
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skip_lines: dict[str, list[int]] = field(default_factory=dict)
    raw_user_content: int = 0  # user messages not rendered from our template
    dropped_keys: Counter[str] = field(default_factory=Counter)
    # filled by split_by_meeting
    split_method: str = ""
    moved_to_val: int = 0
    train: int = 0
    val: int = 0
    train_meetings: int = 0
    val_meetings: int = 0

    def skip(self, reason: str, line_no: int) -> None:
        self.skipped[reason] += 1
        lines = self.skip_lines.setdefault(reason, [])
        if len(lines) < 5:
            lines.append(line_no)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "records": self.records,
            "skipped": dict(self.skipped),
            "skip_lines": self.skip_lines,
            "raw_user_content": self.raw_user_content,
            "dropped_keys": dict(self.dropped_keys),
            "usable": self.records,
            "split_method": self.split_method,
            "moved_to_val": self.moved_to_val,
            "train": self.train,
            "val": self.val,
            "train_meetings": self.train_meetings,
            "val_meetings": self.val_meetings,
        }


@dataclass
class ChatJsonlDataset:
    train: list[GoldRecord]
    val: list[GoldRecord]
    stats: JsonlStats


def meeting_from_user(content: str) -> tuple[str, bool]:
    """The meeting inside a user message rendered from our template, else the content itself."""
    if content.startswith(_HEAD) and content.endswith(_TAIL) and len(content) >= len(_HEAD + _TAIL):
        return content[len(_HEAD) : len(content) - len(_TAIL)], True
    return content.strip(), False


def _last(messages: list[Any], role: str) -> str | None:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == role:
            content = message.get("content")
            return content if isinstance(content, str) else None
    return None


def _parse_line(raw: str, line_no: int, stats: JsonlStats) -> GoldRecord | None:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        # RecursionError: brackets nested past the interpreter's limit ("[[[[...").
        stats.skip("bad_json", line_no)
        return None
    if invalid_unicode_at(obj) is not None:
        # A "\ud800" escape: not text UTF-8 can store, hash or tokenize.
        stats.skip("invalid_unicode", line_no)
        return None
    messages = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(messages, list):
        stats.skip("no_messages", line_no)
        return None
    user, assistant = _last(messages, "user"), _last(messages, "assistant")
    if not user:
        stats.skip("no_user_message", line_no)
        return None
    if not assistant:
        stats.skip("no_assistant_message", line_no)
        return None
    meeting, from_template = meeting_from_user(user)
    if not meeting.strip():
        stats.skip("empty_meeting", line_no)
        return None
    match = _FENCE.search(assistant)
    try:
        raw_plan = json.loads(match.group(1) if match else assistant)
    except (json.JSONDecodeError, RecursionError):
        stats.skip("bad_plan_json", line_no)
        return None
    if invalid_unicode_at(raw_plan) is not None:
        stats.skip("invalid_unicode", line_no)
        return None
    try:
        normalized = normalize_plan(raw_plan)
    except (PlanShapeError, ValidationError, RecursionError):
        stats.skip("bad_plan_shape", line_no)
        return None
    stats.dropped_keys.update(normalized.dropped_keys)
    stats.raw_user_content += int(not from_template)
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    split = meta.get("split") if meta.get("split") in ("train", "val") else "train"
    meeting_id = meta.get("meeting_id")
    if not isinstance(meeting_id, str) or not meeting_id:
        # Without an id, identical transcripts are one meeting (so never on both sides).
        meeting_id = "sha1:" + hashlib.sha1(meeting.encode("utf-8")).hexdigest()[:16]
    score = meta.get("score")
    chunk_index = meta.get("chunk_index")
    return GoldRecord(
        record_id=str(meta.get("record_id") or f"line_{line_no}"),
        split=split,
        meeting_id=meeting_id,
        meeting_text=meeting,
        plan=normalized.plan,
        shape=SHAPE,
        score=float(score) if isinstance(score, int | float) else None,
        chunk_index=chunk_index if isinstance(chunk_index, int) else None,
    )


def iter_chat_jsonl(lines: Iterable[str], stats: JsonlStats) -> Iterator[GoldRecord]:
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        stats.lines += 1
        record = _parse_line(raw, line_no, stats)
        if record is not None:
            stats.records += 1
            yield record


def read_chat_jsonl(source: Path | str | IO[str]) -> tuple[list[GoldRecord], JsonlStats]:
    """Records from a chat JSONL file (path or open text stream) and per-reason skip counts."""
    stats = JsonlStats()
    if isinstance(source, str | Path):
        with Path(source).open(encoding="utf-8", errors="replace") as handle:
            records = list(iter_chat_jsonl(handle, stats))
    else:
        records = list(iter_chat_jsonl(source, stats))
    logger.info(
        "chat jsonl: %d lines, %d records, skipped %s",
        stats.lines,
        stats.records,
        dict(stats.skipped),
    )
    return records, stats


def load_chat_jsonl(
    path: Path | str, *, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED
) -> ChatJsonlDataset:
    """Records of a chat JSONL file split by meeting like gold data (``metadata.split`` = val
    lines are validation; else a seeded fraction of meetings). ``DataError`` if none is usable."""
    records, stats = read_chat_jsonl(path)
    if not records:
        raise DataError(
            f"no usable lines in {Path(path).name}: {stats.lines} lines, skipped "
            f"{dict(stats.skipped) or 'none'}; each line needs "
            '{"messages": [..., {"role": "user", ...}, {"role": "assistant", "content": PLAN}]}',
            detail=stats.to_dict(),
        )
    train, val = split_by_meeting(records, val_fraction=val_fraction, seed=seed, stats=stats)
    return ChatJsonlDataset(train=train, val=val, stats=stats)
