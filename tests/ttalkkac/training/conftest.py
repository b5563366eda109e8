"""One shared tiny training run for the tests that read its outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.utils.training_data import tiny_records
from ttalkkac.training.reporter import Reporter


@dataclass
class RecordingReporter(Reporter):
    events: list[dict[str, Any]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    cancel_at_step: int | None = None
    interrupt_at_step: int | None = None

    def event(self, message: str, *, type: str = "message", level: str = "info", data=None) -> None:
        self.events.append({"message": message, "type": type, "level": level, "data": data or {}})

    def progress(self, *, step: int, total_steps: int, epoch: float | None) -> None:
        self.steps.append(step)

    def should_cancel(self) -> bool:
        return (
            self.cancel_at_step is not None
            and bool(self.steps)
            and self.steps[-1] >= self.cancel_at_step
        )

    def should_interrupt(self) -> bool:
        return (
            self.interrupt_at_step is not None
            and bool(self.steps)
            and self.steps[-1] >= self.interrupt_at_step
        )


@dataclass
class TrainedRun:
    base_dir: Path
    out_dir: Path
    results: dict[str, Any]
    reporter: RecordingReporter
    base_digest: str


def file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def trained_run(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, one_thread
) -> TrainedRun:
    """A handful of examples repeated for 24 steps at a high learning rate: loss must fall."""
    from ttalkkac.training.spec import TrainSpec
    from ttalkkac.training.trainer import TrainData, train_lora

    records = tiny_records(6)
    spec = TrainSpec(
        max_steps=24,
        gradient_accumulation_steps=2,
        learning_rate=1e-2,
        logging_steps=2,
        eval_steps=6,
        max_seq_len=512,
        lora={"r": 8, "alpha": 16},
    )
    before = file_digest(tiny_model_dir / "model.safetensors")
    reporter = RecordingReporter()
    out = tmp_path_factory.mktemp("trained")
    results = train_lora(
        base_model=str(tiny_model_dir),
        data=TrainData(records[:4], records[4:], {"source": "tiny_records"}),
        spec=spec,
        out_dir=out,
        reporter=reporter,
    )
    return TrainedRun(tiny_model_dir, out, results, reporter, before)
