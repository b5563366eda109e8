"""One delivery of a training run in a process of its own, for tests that SIGKILL it.

``python -m tests.utils.train_child <base model> <out dir> <run id>`` trains the tiny records
with ``SPEC`` into ``out dir`` (resuming what an earlier, killed delivery left) and prints one
line per event (``event <message>``) and ``done`` at the end, flushed, so that the parent can
time its kill to what the child is doing.
"""

from __future__ import annotations

import sys
from typing import Any

from tests.utils.training_data import tiny_records
from ttalkkac.training.reporter import Reporter
from ttalkkac.training.spec import TrainSpec

SPEC = TrainSpec(
    max_steps=8,
    gradient_accumulation_steps=1,
    eval_steps=1,  # a checkpoint every step: most of the run's time is saving
    logging_steps=1,
    max_seq_len=512,
    learning_rate=1e-2,
)


class PrintingReporter(Reporter):
    def event(self, message: str, *, type: str = "message", level: str = "info", data=None) -> None:
        print(f"event {message}", flush=True)

    def progress(self, *, step: int, total_steps: int, epoch: Any) -> None:
        print(f"step {step}", flush=True)


def main(base_model: str, out_dir: str, run_id: str) -> None:
    import torch

    from ttalkkac.training.trainer import TrainData, train_lora

    torch.set_num_threads(1)
    records = tiny_records(4)
    train_lora(
        base_model=base_model,
        data=TrainData(records[:3], records[3:], {}),
        spec=SPEC,
        out_dir=out_dir,
        reporter=PrintingReporter(),
        run_id=run_id,
    )
    print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
