"""The gold-standard loader: result folders + meeting transcripts -> plan records, split by meeting.

Layout (see ``shared/data/README.md``): ``RESULTS/<split>_<NNN>_<meeting folder>/result.json``
and ``MEETINGS/<meeting folder>/05_final_result.json``. Record shapes handled:

- standard: ``notion_output`` holds the plan as JSON inside a ```` ```json ```` fence, scored in
  ``quality_metrics.final_score``;
- reprocessed long meetings: ``result.notion_project`` holds the plan as an object, no score;
- ``result.meeting_summary`` (seen once): a summary, not a plan; skipped as ``no_plan``;
- chunk records (later versions of the data): ``metadata.is_chunk`` with
  ``metadata.chunk_info.chunk_index`` (1-based); the folder carries a ``_chunk_<k>`` suffix and
  the record is paired with exactly that chunk of its meeting (``ttalkkac.meetings.chunk_text``).

Every record that is not used is counted under one reason (``GoldStats.skipped``); a broken file
never stops the load. The quality filter really filters; when it leaves nothing, ``DataError``
says why and which option changes it.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ttalkkac.errors import DataError
from ttalkkac.meetings import Utterance, chunk_text, render_utterances
from ttalkkac.plan import PlanShapeError, ProjectPlan, normalize_plan
from ttalkkac.text import invalid_unicode_at

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
MEETING_FILE = "05_final_result.json"
DEFAULT_MIN_QUALITY = 7.0  # the fine-tuning guide's threshold
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SEED = 42

_RECORD_FOLDER = re.compile(r"^(train|val)_(\d+)_(.+)$", re.DOTALL)
_CHUNK_SUFFIX = re.compile(r"_chunk_\d+$")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)\n?\s*```", re.DOTALL)
_SAMPLES_PER_REASON = 5
_UTTERANCES = TypeAdapter(list[Utterance])


class Unscored(StrEnum):
    """What to do with records that carry no quality score (the reprocessed shape)."""

    EXCLUDE = "exclude"  # a filter that cannot be checked is not passed
    INCLUDE = "include"


class Skip(StrEnum):
    """Why a record was not used (one reason per record, the first that applies)."""

    MISSING_RESULT = "missing_result_json"
    UNREADABLE = "unreadable_file"
    BAD_JSON = "bad_json"
    NOT_A_RECORD = "not_a_record"
    NO_PLAN = "no_plan"
    BAD_PLAN_JSON = "bad_plan_json"
    BAD_PLAN_SHAPE = "bad_plan_shape"
    MISSING_MEETING = "missing_meeting"
    BAD_MEETING = "bad_meeting_file"
    EMPTY_MEETING = "empty_meeting"
    BAD_CHUNK_INFO = "bad_chunk_info"
    CHUNK_MISMATCH = "chunk_mismatch"
    BELOW_QUALITY = "below_min_quality"
    UNSCORED = "unscored_excluded"


@dataclass(frozen=True)
class GoldRecord:
    """One usable training pair: the meeting text (or its chunk) and the normalized plan."""

    record_id: str  # the gold folder name
    split: str  # "train" or "val", from the folder prefix
    meeting_id: str  # the meeting folder name; the unit of the train/val split
    meeting_text: str
    plan: ProjectPlan
    shape: str  # "notion_output" or "notion_project"
    score: float | None
    chunk_index: int | None = None  # 1-based, for chunk records
    chunk_total: int | None = None


@dataclass
class GoldStats:
    results_dir: str = ""
    min_quality: float = DEFAULT_MIN_QUALITY
    unscored_policy: str = Unscored.EXCLUDE.value
    records: int = 0  # record folders found (usable + skipped)
    usable: int = 0
    shapes: Counter[str] = field(default_factory=Counter)  # of every readable record
    scored: int = 0  # readable records with a final_score, whatever happens to them later
    unscored: int = 0
    scores: Counter[float] = field(default_factory=Counter)
    chunk_records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skip_samples: dict[str, list[str]] = field(default_factory=dict)
    dropped_keys: Counter[str] = field(default_factory=Counter)
    plan_stats: Counter[str] = field(default_factory=Counter)
    invalid_utterances: int = 0
    ignored_entries: int = 0  # folder entries that are not <split>_<NNN>_<meeting>
    split_method: str = ""
    moved_to_val: int = 0  # train_ records of a meeting that also has val_ records
    train: int = 0
    val: int = 0
    train_meetings: int = 0
    val_meetings: int = 0

    def skip(self, reason: Skip, record_id: str, detail: str = "") -> None:
        self.skipped[reason.value] += 1
        samples = self.skip_samples.setdefault(reason.value, [])
        if len(samples) < _SAMPLES_PER_REASON:
            samples.append(record_id)
        logger.debug("skipped %s: %s %s", record_id, reason.value, detail)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scores"] = {str(k): v for k, v in sorted(self.scores.items())}
        for name in ("shapes", "skipped", "dropped_keys", "plan_stats"):
            data[name] = dict(sorted(getattr(self, name).items()))
        return data


@dataclass
class GoldDataset:
    train: list[GoldRecord]
    val: list[GoldRecord]
    stats: GoldStats

    @property
    def records(self) -> list[GoldRecord]:
        return self.train + self.val


def parse_record_folder(name: str) -> tuple[str, int, str] | None:
    """``train_012_result_X`` -> ("train", 12, "result_X"); None for any other name."""
    match = _RECORD_FOLDER.match(name)
    if not match:
        return None
    return match.group(1), int(match.group(2)), match.group(3)


def record_shape(record: dict[str, Any]) -> str:
    """``notion_output``, ``notion_project``, another ``result`` key (``meeting_summary``) or
    ``unknown``."""
    if "notion_output" in record:
        return "notion_output"
    result = record.get("result")
    if isinstance(result, dict) and result:
        return "notion_project" if "notion_project" in result else str(next(iter(result)))
    return "unknown"


def extract_plan(record: dict[str, Any]) -> tuple[str, Any] | None:
    """The record's shape and raw plan object, or None when it holds no plan.

    Raises ``ValueError`` when a plan is present but its JSON cannot be parsed.
    """
    if "notion_output" in record:
        raw = record["notion_output"]
        if isinstance(raw, dict):
            return "notion_output", raw
        if not isinstance(raw, str):
            raise ValueError(f"notion_output is a {type(raw).__name__}")
        match = _FENCE.search(raw)
        text = match.group(1) if match else raw
        try:
            return "notion_output", _loads_checked(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"notion_output is not JSON: {exc}") from exc
    result = record.get("result")
    if isinstance(result, dict) and "notion_project" in result:
        plan = result["notion_project"]
        if isinstance(plan, str):
            try:
                plan = _loads_checked(plan)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise ValueError(f"notion_project is not JSON: {exc}") from exc
        return "notion_project", plan
    return None


def _loads_checked(text: str) -> Any:
    """``json.loads`` of an embedded plan; ``ValueError`` when its text is not valid Unicode."""
    value = json.loads(text)
    if invalid_unicode_at(value) is not None:
        raise ValueError("the plan's text is not valid Unicode")
    return value


def record_score(record: dict[str, Any]) -> float | None:
    metrics = record.get("quality_metrics")
    if not isinstance(metrics, dict):
        return None
    value = metrics.get("final_score")
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _plain_name(name: Any) -> str | None:
    """A folder name that cannot escape the meetings folder, or None."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        return None
    return name if "/" not in name and "\\" not in name else None


def meeting_candidates(folder_meeting: str, record: dict[str, Any], *, is_chunk: bool) -> list[str]:
    """Meeting folder names to try, best first: the folder name, then what the record says."""
    names = []
    if is_chunk:
        names.append(_CHUNK_SUFFIX.sub("", folder_meeting))
    names.append(folder_meeting)
    names.append(record.get("source_dir"))
    metadata = record.get("metadata")
    source_file = metadata.get("source_file") if isinstance(metadata, dict) else None
    if isinstance(source_file, str):
        parts = [p for p in re.split(r"[\\/]+", source_file) if p]
        if len(parts) >= 2:
            names.append(parts[-2])
    out: list[str] = []
    for name in names:
        plain = _plain_name(name)
        if plain and plain not in out:
            out.append(plain)
    return out


class _MeetingCache:
    """Meeting texts by folder name, read once (chunk records share their meeting)."""

    def __init__(self, meetings_dir: Path, stats: GoldStats) -> None:
        self.meetings_dir = meetings_dir
        self.stats = stats
        self._texts: dict[str, str | Skip] = {}

    def find(self, candidates: list[str]) -> str | None:
        for name in candidates:
            if (self.meetings_dir / name / MEETING_FILE).is_file():
                return name
        return None

    def text(self, name: str) -> str | Skip:
        if name not in self._texts:
            self._texts[name] = self._read(self.meetings_dir / name / MEETING_FILE)
        return self._texts[name]

    def _read(self, path: Path) -> str | Skip:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            logger.warning("unreadable meeting %s: %s", path, exc)
            return Skip.BAD_MEETING
        if invalid_unicode_at(data) is not None:  # "\ud800" escapes: text nothing can encode
            logger.warning("unreadable meeting %s: not valid Unicode", path)
            return Skip.BAD_MEETING
        if isinstance(data, str):
            text = data.strip()
        elif isinstance(data, list):
            try:  # the whole list at once is much faster; item by item only when one is bad
                utterances = _UTTERANCES.validate_python(data)
            except ValidationError:
                utterances = []
                for item in data:
                    try:
                        utterances.append(Utterance.model_validate(item))
                    except ValidationError:
                        self.stats.invalid_utterances += 1
            text = render_utterances(utterances)
        else:
            return Skip.BAD_MEETING
        return text if text.strip() else Skip.EMPTY_MEETING


def _chunk_info(record: dict[str, Any]) -> tuple[bool, int | None, int | None]:
    """(is_chunk, chunk_index, total_chunks); index None when a chunk record lacks a valid one."""
    metadata = record.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("is_chunk"):
        return False, None, None
    info = metadata.get("chunk_info")
    if not isinstance(info, dict):
        return True, None, None
    index, total = info.get("chunk_index"), info.get("total_chunks")
    valid_index = isinstance(index, int) and not isinstance(index, bool) and index >= 1
    valid_total = isinstance(total, int) and not isinstance(total, bool) and total >= 1
    return True, index if valid_index else None, total if valid_total else None


def _load_record(
    folder: Path,
    split: str,
    folder_meeting: str,
    meetings: _MeetingCache,
    stats: GoldStats,
    *,
    min_quality: float,
    unscored: Unscored,
) -> GoldRecord | None:
    rid = folder.name
    path = folder / RESULT_FILE
    if not path.is_file():
        stats.skip(Skip.MISSING_RESULT, rid)
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        stats.skip(Skip.UNREADABLE, rid, str(exc))
        return None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        stats.skip(Skip.BAD_JSON, rid, str(exc))
        return None
    if invalid_unicode_at(record) is not None:  # "\ud800" escapes: text nothing can encode
        stats.skip(Skip.BAD_JSON, rid, "not valid Unicode")
        return None
    if not isinstance(record, dict):
        stats.skip(Skip.NOT_A_RECORD, rid, type(record).__name__)
        return None

    shape = record_shape(record)
    stats.shapes[shape] += 1
    score = record_score(record)
    if score is None:
        stats.unscored += 1
    else:
        stats.scored += 1
        stats.scores[score] += 1
    try:
        found = extract_plan(record)
    except ValueError as exc:
        stats.skip(Skip.BAD_PLAN_JSON, rid, str(exc))
        return None
    if found is None:
        stats.skip(Skip.NO_PLAN, rid, f"shape {shape}")
        return None
    raw_plan = found[1]
    try:
        normalized = normalize_plan(raw_plan)
    except (PlanShapeError, ValidationError) as exc:
        stats.skip(Skip.BAD_PLAN_SHAPE, rid, str(exc))
        return None

    is_chunk, chunk_index, chunk_total = _chunk_info(record)
    name = meetings.find(meeting_candidates(folder_meeting, record, is_chunk=is_chunk))
    if name is None:
        stats.skip(Skip.MISSING_MEETING, rid, folder_meeting)
        return None
    text = meetings.text(name)
    if isinstance(text, Skip):
        stats.skip(text, rid, name)
        return None
    if is_chunk:
        if chunk_index is None:
            stats.skip(Skip.BAD_CHUNK_INFO, rid)
            return None
        chunks = chunk_text(text)
        # A different total means the text was cut differently, so chunk k is other text.
        if chunk_index > len(chunks) or (chunk_total is not None and chunk_total != len(chunks)):
            stats.skip(Skip.CHUNK_MISMATCH, rid, f"{chunk_index}/{chunk_total} vs {len(chunks)}")
            return None
        text = chunks[chunk_index - 1].text

    if score is None:
        if unscored is Unscored.EXCLUDE:
            stats.skip(Skip.UNSCORED, rid)
            return None
    elif score < min_quality:
        stats.skip(Skip.BELOW_QUALITY, rid, f"{score} < {min_quality}")
        return None

    stats.dropped_keys.update(normalized.dropped_keys)
    stats.plan_stats.update(normalized.stats)
    stats.chunk_records += int(is_chunk)
    return GoldRecord(
        record_id=rid,
        split=split,
        meeting_id=name,
        meeting_text=text,
        plan=normalized.plan,
        shape=shape,
        score=score,
        chunk_index=chunk_index if is_chunk else None,
        chunk_total=chunk_total if is_chunk else None,
    )


def split_by_meeting(
    records: list[GoldRecord], *, val_fraction: float, seed: int, stats: Any
) -> tuple[list[GoldRecord], list[GoldRecord]]:
    """Train/val by meeting: ``val_`` meetings if any, else a seeded fraction of meetings.

    A meeting with any ``val_`` record is validation as a whole, so no meeting is on both sides.
    Writes the split counts onto ``stats`` (``GoldStats`` or the JSONL stats).
    """
    meetings = sorted({r.meeting_id for r in records})
    val_meetings = {r.meeting_id for r in records if r.split == "val"}
    if val_meetings:
        stats.split_method = "val_folders"
        stats.moved_to_val = sum(
            1 for r in records if r.split == "train" and r.meeting_id in val_meetings
        )
    else:
        stats.split_method = f"seeded_fraction(val_fraction={val_fraction}, seed={seed})"
        n_val = round(len(meetings) * val_fraction)
        if val_fraction > 0 and len(meetings) >= 2:
            n_val = min(max(n_val, 1), len(meetings) - 1)
        shuffled = list(meetings)
        random.Random(seed).shuffle(shuffled)
        val_meetings = set(shuffled[:n_val])
    train = [r for r in records if r.meeting_id not in val_meetings]
    val = [r for r in records if r.meeting_id in val_meetings]
    stats.train, stats.val = len(train), len(val)
    stats.train_meetings = len({r.meeting_id for r in train})
    stats.val_meetings = len({r.meeting_id for r in val})
    return train, val


def load_gold(
    results_dir: Path | str,
    meetings_dir: Path | str,
    *,
    min_quality: float = DEFAULT_MIN_QUALITY,
    unscored: Unscored | str = Unscored.EXCLUDE,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
) -> GoldDataset:
    """Load, filter and split a gold-standard results folder.

    ``min_quality``: keep records whose ``final_score`` is at least this. ``unscored``: keep or
    exclude records without a score. ``val_fraction``/``seed``: the held-out share of meetings
    when there are no ``val_`` folders. Raises ``DataError`` when the folders are missing or
    nothing usable remains (the message gives the counts and the option to change).
    """
    results_dir, meetings_dir = Path(results_dir), Path(meetings_dir)
    unscored = Unscored(unscored)
    if not 0 <= val_fraction < 1:
        raise ValueError("val_fraction must be in [0, 1)")
    for label, path in (("gold results", results_dir), ("meetings", meetings_dir)):
        if not path.is_dir():
            raise DataError(f"{label} folder not found: {path}")
    stats = GoldStats(
        results_dir=str(results_dir), min_quality=min_quality, unscored_policy=unscored.value
    )
    meetings = _MeetingCache(meetings_dir, stats)
    entries = []
    for entry in results_dir.iterdir():
        parsed = parse_record_folder(entry.name) if entry.is_dir() else None
        if parsed is None:
            stats.ignored_entries += 1
            continue
        entries.append((parsed, entry))
    entries.sort(key=lambda item: (item[0][0], item[0][1], item[1].name))

    records: list[GoldRecord] = []
    for (split, _number, folder_meeting), folder in entries:
        stats.records += 1
        try:
            record = _load_record(
                folder,
                split,
                folder_meeting,
                meetings,
                stats,
                min_quality=min_quality,
                unscored=unscored,
            )
        except Exception:  # one broken file never stops the load
            logger.exception("unexpected error loading %s", folder)
            stats.skip(Skip.UNREADABLE, folder.name, "unexpected error")
            continue
        if record is not None:
            records.append(record)
    stats.usable = len(records)
    if not records:
        raise DataError(_nothing_usable_message(stats), detail=stats.to_dict())
    train, val = split_by_meeting(records, val_fraction=val_fraction, seed=seed, stats=stats)
    logger.info(
        "gold %s: %d records, %d usable (%d train / %d val), skipped %s",
        results_dir.name,
        stats.records,
        stats.usable,
        stats.train,
        stats.val,
        dict(stats.skipped),
    )
    return GoldDataset(train=train, val=val, stats=stats)


def _nothing_usable_message(stats: GoldStats) -> str:
    if stats.records == 0:
        return (
            f"no gold records in {stats.results_dir}: expected folders named "
            "train_<NNN>_<meeting> or val_<NNN>_<meeting> holding result.json"
        )
    parts = [f"no usable gold records: {stats.records} records"]
    below = stats.skipped.get(Skip.BELOW_QUALITY.value, 0)
    if below:
        seen = ", ".join(f"{score} x{n}" for score, n in sorted(stats.scores.items()))
        parts.append(
            f"{below} scored below --min-quality {float(stats.min_quality)} (scores seen: {seen}); "
            f"pass --min-quality {max(stats.scores)} or lower to keep them"
        )
    excluded = stats.skipped.get(Skip.UNSCORED.value, 0)
    if excluded:
        parts.append(f"{excluded} have no quality score and are excluded (--unscored include)")
    others = {
        reason: n
        for reason, n in stats.skipped.items()
        if reason not in (Skip.BELOW_QUALITY.value, Skip.UNSCORED.value)
    }
    if others:
        parts.append("other skips: " + ", ".join(f"{r} {n}" for r, n in sorted(others.items())))
    return "; ".join(parts)
