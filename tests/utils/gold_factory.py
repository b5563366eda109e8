"""Builders of small gold-standard folders in the real on-disk format (for what real data lacks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttalkkac.data.gold import MEETING_FILE, RESULT_FILE


def plan_dict(name: str = "리모컨 디자인 프로젝트", **overrides: Any) -> dict[str, Any]:
    plan = {
        "project_name": name,
        "project_purpose": "사용자 친화적인 리모컨 개발",
        "project_period": "2025.01.01 ~ 2025.03.31",
        "project_manager": "Speaker_A",
        "core_objectives": ["목표 1: 인터페이스 개선", "목표 2: 경량화"],
        "core_idea": "패션과 전자제품의 결합",
        "idea_description": "기존 디자인을 탈피한다.",
        "execution_plan": "1단계: 기능 설계\n2단계: 프로토타입",
        "expected_effects": ["시장 경쟁력 확보"],
    }
    plan.update(overrides)
    return plan


def standard_record(plan: dict[str, Any] | None = None, *, score: Any = 6.0, **extra: Any) -> dict:
    """The standard shape: the plan as fenced JSON in ``notion_output``, a quality score."""
    body = json.dumps(plan or plan_dict(), ensure_ascii=False, indent=4)
    record: dict[str, Any] = {
        "id": "train_001",
        "notion_output": f"```json\n{body}\n```",
        "prd_output": "```json\n{}\n```",
        "metadata": {"dataset_type": "train"},
    }
    if score is not None:
        record["quality_metrics"] = {"final_score": score, "is_production_ready": True}
    record.update(extra)
    return record


def reprocessed_record(plan: dict[str, Any] | None = None, **extra: Any) -> dict:
    """The reprocessed shape: ``result.notion_project`` object, no score."""
    record: dict[str, Any] = {
        "result": {"notion_project": plan or plan_dict(), "task_master_prd": {}},
        "metadata": {"utterance_count": 3},
        "generation_info": {"processed_with_chunking": True, "model": "gpt-4o"},
    }
    record.update(extra)
    return record


def chunk_record(index: Any, total: Any = None, *, score: float = 8.0) -> dict:
    info: dict[str, Any] = {"chunk_index": index, "chunk_length": 5000}
    if total is not None:
        info["total_chunks"] = total
    record = standard_record(plan_dict(f"청크 {index} 프로젝트"), score=score)
    record["metadata"] = {"is_chunk": True, "chunk_info": info}
    return record


def utterances(n: int, *, prefix: str = "발언", null_every: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        timestamp = None if null_every and i % null_every == 0 else f"{i // 60:02d}:{i % 60:02d}"
        text = f"{prefix} {i}: 리모컨 디자인과 배터리 수명, 가격 목표를 논의합니다."
        out.append({"timestamp": timestamp, "speaker": f"Speaker_{'ABCD'[i % 4]}", "text": text})
    return out


class GoldFolder:
    """A results folder and a meetings folder under one root."""

    def __init__(self, root: Path) -> None:
        self.results = root / "results"
        self.meetings = root / "meetings"
        self.results.mkdir(parents=True, exist_ok=True)
        self.meetings.mkdir(parents=True, exist_ok=True)

    def meeting(self, name: str, content: Any = None, *, raw: bytes | str | None = None) -> Path:
        folder = self.meetings / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MEETING_FILE
        if raw is not None:
            path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        else:
            payload = utterances(5) if content is None else content
            path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        return path

    def record(self, folder: str, content: Any = None, *, raw: bytes | str | None = None) -> Path:
        path = self.results / folder
        path.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            (path / RESULT_FILE).write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        elif content is not None:
            (path / RESULT_FILE).write_text(json.dumps(content, ensure_ascii=False), "utf-8")
        return path

    def pair(self, folder: str, meeting: str, record: dict | None = None, **kw: Any) -> None:
        """A record folder ``folder`` and its meeting ``meeting``."""
        self.meeting(meeting, **kw)
        self.record(folder, record if record is not None else standard_record())
