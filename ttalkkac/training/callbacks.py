"""Progress and cancellation as trainer callbacks, shared by the CLI and the worker.

The trainer talks to one ``Reporter`` (``ttalkkac.training.reporter``): the CLI's draws a progress bar, the worker's writes job
events and progress to the store and answers ``should_cancel`` from the job's status.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ttalkkac.training.reporter import Reporter

logger = logging.getLogger(__name__)


def _clean(logs: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe numbers (NaN/inf become None)."""
    out: dict[str, Any] = {}
    for key, value in logs.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


class ProgressCallback(TrainerCallback):
    """Forwards steps, logged losses, evaluations and checkpoints to a ``Reporter``."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.reporter.progress(
            step=state.global_step, total_steps=state.max_steps, epoch=state.epoch
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.reporter.progress(
            step=state.global_step, total_steps=state.max_steps, epoch=state.epoch
        )

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        # Evaluations are reported by on_evaluate; the end-of-training summary by the trainer.
        if not logs or any(k.startswith("eval_") for k in logs) or "train_loss" in logs:
            return
        data = _clean({"step": state.global_step, "epoch": state.epoch, **logs})
        self.reporter.event(
            f"step {state.global_step}: loss {logs.get('loss')}", type="metrics", data=data
        )
        self.reporter.metrics(
            {k: data[k] for k in ("loss", "learning_rate", "grad_norm") if k in data}
        )

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        data = _clean({"step": state.global_step, "epoch": state.epoch, **(metrics or {})})
        self.reporter.event(
            f"evaluation at step {state.global_step}: eval_loss {data.get('eval_loss')}",
            type="metrics",
            data=data,
        )
        if "eval_loss" in data:
            self.reporter.metrics({"eval_loss": data["eval_loss"]})

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.reporter.event(
            f"checkpoint saved at step {state.global_step}",
            data={"step": state.global_step, "checkpoint": f"checkpoint-{state.global_step}"},
        )


class CancelCallback(TrainerCallback):
    """Stops training at the end of the optimizer step during which a cancel was requested.

    An interrupt (the worker shutting down) stops there too, but saves a checkpoint first, so
    that the next attempt resumes from this very step.
    """

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.cancelled = False
        self.interrupted = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if not self.cancelled and self.reporter.should_cancel():
            self.cancelled = True
            logger.info("cancel requested: stopping after step %d", state.global_step)
            control.should_training_stop = True
            # A cancelled run's state is of no use: skip the step's evaluation and checkpoint.
            control.should_save = False
            control.should_evaluate = False
        elif not self.cancelled and not self.interrupted and self.reporter.should_interrupt():
            self.interrupted = True
            logger.info("interrupted: checkpoint at step %d, then stop", state.global_step)
            control.should_training_stop = True
            control.should_save = True
            control.should_evaluate = False
