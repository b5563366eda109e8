"""``ttalkkac train``: the job's trainer in the foreground, with a progress bar."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ttalkkac.errors import DataError, InvalidInput
from ttalkkac.logs import configure_logging
from ttalkkac.settings import get_settings
from ttalkkac.training.reporter import Reporter
from ttalkkac.training.spec import TrainSpec

console = Console(stderr=True)

# Whether an adapter writes valid, good plans is the service's evaluation (constrained decoding
# through the serving engine), not the trainer's: one validity figure, in one place.
SCORE_HINT = (
    "not scored here: score the adapter (valid rate, field chrF, grounding) with "
    "`ttalkkac eval --adapter NAME --dataset DATASET` against a running service that has it "
    "registered; the service registers and evaluates the adapters of its own jobs (POST /train)"
)


class ConsoleReporter(Reporter):
    """A rich progress bar over optimizer steps, with events printed above it."""

    def __init__(self, progress: Progress) -> None:
        self.progress_bar = progress
        self.task = progress.add_task("training", total=None, loss="")

    def event(
        self,
        message: str,
        *,
        type: str = "message",
        level: str = "info",
        data: dict[str, Any] | None = None,
    ) -> None:
        if type == "metrics" and "loss" in (data or {}):
            # One line per logging step: the bar alone shows nothing when output is not a tty.
            d = data or {}
            message = (
                f"step {d.get('step')}: loss {d['loss']:.4f}, lr {d.get('learning_rate', 0):.2e}"
            )
        style = {"warning": "yellow", "error": "red"}.get(level, "")
        self.progress_bar.console.print(f"[{style}]{message}[/]" if style else message)

    def progress(self, *, step: int, total_steps: int, epoch: float | None) -> None:
        self.progress_bar.update(self.task, completed=step, total=total_steps)

    def metrics(self, metrics: dict[str, Any]) -> None:
        parts = []
        if metrics.get("loss") is not None:
            parts.append(f"loss {metrics['loss']:.4f}")
        if metrics.get("eval_loss") is not None:
            parts.append(f"eval {metrics['eval_loss']:.4f}")
        if parts:
            self.progress_bar.update(self.task, loss=" ".join(parts))


def default_out_dir(base_model: str, now: datetime | None = None) -> Path:
    """The guide's naming: ``<model>_lora_ttalkkac_YYYYMMDD_HHMMSS``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(base_model.rstrip("/")).name) or "model"
    return Path(f"{name}_lora_ttalkkac_{(now or datetime.now()):%Y%m%d_%H%M%S}")


def _spec(values: dict[str, Any]) -> TrainSpec:
    lora = {k: v for k, v in values.pop("lora").items() if v is not None}
    clean = {k: v for k, v in values.items() if v is not None}
    try:
        return TrainSpec.model_validate({**clean, "lora": lora})
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(spec)"
            console.print(f"[red]invalid hyperparameter {field}: {err['msg']}[/]")
        raise typer.Exit(2) from exc


def train(
    gold: Annotated[Path, typer.Option(help="Gold results folder (train_*/val_* folders).")],
    meetings: Annotated[
        Path, typer.Option(help="Meetings folder (<meeting>/05_final_result.json).")
    ],
    base_model: Annotated[
        str | None,
        typer.Option(help="Base model id or folder. Default: BASE_MODEL, else the demo model."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder. Default: <model>_lora_ttalkkac_<time>/")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (overrides epochs).")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data [3].")] = None,
    min_quality: Annotated[
        float | None, typer.Option(help="Skip gold records below [7.0].")
    ] = None,
    include_unscored: Annotated[
        bool, typer.Option(help="Also train on records without a quality score.")
    ] = False,
    max_seq_len: Annotated[int | None, typer.Option(help="Tokens per example [4096].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-device batch size [1].")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps [8].")] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--lr", help="Learning rate [2e-4].")
    ] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="Warmup steps [100], capped.")] = None,
    logging_steps: Annotated[int | None, typer.Option(help="Log every N steps [10].")] = None,
    eval_steps: Annotated[int | None, typer.Option(help="Evaluate every N steps.")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank [16].")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha [32].")] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout [0.1].")] = None,
    target_modules: Annotated[
        str | None, typer.Option(help="Comma-separated modules [q/k/v/o/gate/up/down_proj].")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="fp16 | bf16 | fp32 | auto [fp16, fixed per device].")
    ] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory.")] = True,
    val_fraction: Annotated[float | None, typer.Option(help="Held-out meetings [0.1].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [42].")] = None,
    max_eval_samples: Annotated[
        int | None, typer.Option(help="Validation examples evaluated during training [all].")
    ] = None,
    report_to: Annotated[
        str | None,
        typer.Option(help="none | tensorboard (<out>/tensorboard) | mlflow (MLFLOW_TRACKING_URI)."),
    ] = None,
    keep_checkpoints: Annotated[
        bool, typer.Option(help="Keep every checkpoint under <out>/checkpoints.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "WARNING",
) -> None:
    """Fine-tune a LoRA adapter on gold data; writes the adapter, results and loss curve."""
    configure_logging(log_level)
    spec = _spec(
        {
            "max_steps": max_steps,
            "num_train_epochs": epochs,
            "min_quality": min_quality,
            "include_unscored": include_unscored,
            "max_seq_len": max_seq_len,
            "per_device_train_batch_size": batch_size,
            "gradient_accumulation_steps": grad_accum,
            "learning_rate": learning_rate,
            "warmup_steps": warmup_steps,
            "logging_steps": logging_steps,
            "eval_steps": eval_steps,
            "mixed_precision": precision,
            "gradient_checkpointing": gradient_checkpointing,
            "val_fraction": val_fraction,
            "seed": seed,
            "max_eval_samples": max_eval_samples,
            "report_to": report_to,
            "keep_checkpoints": keep_checkpoints,
            "lora": {
                "r": lora_r,
                "alpha": lora_alpha,
                "dropout": lora_dropout,
                "target_modules": [m.strip() for m in target_modules.split(",") if m.strip()]
                if target_modules
                else None,
            },
        }
    )
    from ttalkkac.data.gold import load_gold
    from ttalkkac.training.tracking import check_tracking

    try:
        check_tracking(spec, get_settings())
    except InvalidInput as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    from ttalkkac.training.tracking import Tracking
    from ttalkkac.training.trainer import TrainData, train_lora

    try:
        gold_data = load_gold(
            gold,
            meetings,
            min_quality=spec.min_quality,
            unscored="include" if spec.include_unscored else "exclude",
            val_fraction=spec.val_fraction,
            seed=spec.seed,
        )
    except DataError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(1) from exc
    if base_model is None:
        from ttalkkac.hardware import resolve_base_model

        base_model = resolve_base_model(get_settings())
    out = out or default_out_dir(base_model)
    console.print(
        f"{len(gold_data.train)} train / {len(gold_data.val)} validation records; "
        f"base model {base_model}; output {out}"
    )
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        try:
            results = train_lora(
                base_model=base_model,
                data=TrainData(gold_data.train, gold_data.val, gold_data.stats.to_dict()),
                spec=spec,
                out_dir=out,
                reporter=ConsoleReporter(progress),
                tracking=Tracking.from_settings(get_settings(), run_name=out.name),
            )
        except InvalidInput as exc:  # DataError among them
            console.print(f"[red]{exc.message}[/]")
            raise typer.Exit(1) from exc
    summary = {
        key: results.get(key)
        for key in (
            "train_loss",
            "eval_loss",
            "best_eval_loss",
            "global_step",
            "train_runtime",
            "train_tokens_per_second",
        )
    }
    summary["out"] = str(out)
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    console.print(SCORE_HINT, soft_wrap=True, markup=False, highlight=False)
