"""Hyperparameters of a LoRA fine-tuning run, and the run-time fixes applied to them.

``TrainSpec`` is what a user submits (stored on the job row as JSON); its defaults are the
fine-tuning guide's. ``plan_run`` turns a spec plus the run's facts (training examples, device)
into the values actually used, and lists every change it made with the reason, so that a
default that is wrong for a run is fixed visibly rather than silently. The device itself is
detected by ``ttalkkac.hardware.Device``.

No torch import at module level: the API validates specs without loading the trainer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ttalkkac.hardware import Device

if TYPE_CHECKING:
    from peft import LoraConfig

# The guide's target modules: every attention and MLP projection of Llama/Qwen-style blocks.
GUIDE_TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
# Names PEFT can find in the decoder architectures we serve (Llama, Qwen2/3, Mistral, Gemma).
KNOWN_TARGET_MODULES: frozenset[str] = frozenset(GUIDE_TARGET_MODULES)

Precision = Literal["fp16", "bf16", "fp32", "auto"]
# transformers' integration names (TrainingArguments.report_to); see ttalkkac.training.tracking.
ReportTo = Literal["none", "tensorboard", "mlflow"]

# Settings of removed features that job rows stored before the removal may still hold.
LEGACY_KEYS: frozenset[str] = frozenset({"generation_check_samples", "generation_max_new_tokens"})
_STORED = "stored_job_row"  # validation context key: the data is a stored row, not a request


class LoraSpec(BaseModel):
    """The LoRA adapter's shape."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1, le=256, description="Rank of the update matrices.")
    alpha: int = Field(default=32, ge=1, le=1024, description="Scaling numerator (alpha / r).")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(GUIDE_TARGET_MODULES),
        min_length=1,
        description=f"Modules to adapt; any of {', '.join(GUIDE_TARGET_MODULES)}.",
    )

    @field_validator("target_modules")
    @classmethod
    def _known_modules(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - KNOWN_TARGET_MODULES)
        if unknown:
            raise ValueError(
                f"unknown target module(s) {unknown}; choose from {sorted(KNOWN_TARGET_MODULES)}"
            )
        # Order-preserving de-duplication keeps the stored spec stable.
        return list(dict.fromkeys(value))

    def to_peft_config(self) -> LoraConfig:
        from peft import LoraConfig, TaskType

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
            task_type=TaskType.CAUSAL_LM,
        )


class TrainSpec(BaseModel):
    """Every hyperparameter of a run. Defaults are the fine-tuning guide's."""

    model_config = ConfigDict(extra="forbid")

    lora: LoraSpec = Field(default_factory=LoraSpec)
    num_train_epochs: float = Field(default=3.0, gt=0, le=100, description="Passes over the data.")
    max_steps: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Optimizer steps; overrides epochs when set."
    )
    per_device_train_batch_size: int = Field(default=1, ge=1, le=256)
    gradient_accumulation_steps: int = Field(default=8, ge=1, le=1024)
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, gt=0, le=1000)
    warmup_steps: int = Field(default=100, ge=0, le=1_000_000)
    max_warmup_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Warmup longer than this share of the run's steps is capped to it.",
    )
    logging_steps: int = Field(default=10, ge=1, le=100_000)
    eval_steps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Evaluate (and checkpoint) every N steps. Default: about 5 times per run.",
    )
    gradient_checkpointing: bool = True
    answer_logits_only: bool = Field(
        default=True,
        description=(
            "Compute the LM head only at positions that predict answer tokens: the same loss, "
            "less time and memory on long transcripts."
        ),
    )
    mixed_precision: Precision = Field(
        default="fp16",
        description=(
            "The guide's fp16; becomes bf16 on a GPU that supports it and fp32 on a CPU. 'auto' "
            "picks bf16, fp16 or fp32 for the device."
        ),
    )
    max_seq_len: int = Field(
        default=4096, ge=128, le=131_072, description="Tokens per training example."
    )
    min_quality: float = Field(
        default=7.0, ge=0, le=10, description="Gold records scoring below this are skipped."
    )
    include_unscored: bool = Field(
        default=False, description="Also train on gold records that carry no quality score."
    )
    val_fraction: float = Field(default=0.1, ge=0, lt=1, description="Meetings held out.")
    max_eval_samples: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Validation examples evaluated during training (all when null; CPUs want few).",
    )
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    report_to: ReportTo = Field(
        default="none",
        description=(
            "Experiment tracking through transformers' integrations: 'tensorboard' writes event "
            "files into the job folder (GET /train/{id}/tensorboard.zip), 'mlflow' logs to the "
            "service's MLFLOW_TRACKING_URI (refused when it has none), one run named after the "
            "job."
        ),
    )
    keep_checkpoints: bool = Field(
        default=False,
        description=(
            "Keep every checkpoint (one per eval_steps) after a successful run, to list them "
            "and register any as an adapter. Default: only the best and the last are kept while "
            "training, and all are removed when it succeeds (each holds the optimizer state, "
            "about three times the adapter's size)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_legacy_keys(cls, data: Any, info: ValidationInfo) -> Any:
        # The generation check after training, replaced by the post-training evaluation, had
        # these two settings, and job rows stored before its removal still carry them. The
        # worker and the evaluation re-validate those rows (extra="forbid"), so a stored row
        # (``from_stored``) is read without them; a new request naming them is still refused.
        if isinstance(data, dict) and (info.context or {}).get(_STORED):
            return {k: v for k, v in data.items() if k not in LEGACY_KEYS}
        return data

    @classmethod
    def from_stored(cls, hyperparameters: dict[str, Any]) -> TrainSpec:
        """The spec of a stored job row (``TrainingJob.hyperparameters``), legacy keys dropped."""
        return cls.model_validate(hyperparameters, context={_STORED: True})

    def to_peft_config(self) -> LoraConfig:
        return self.lora.to_peft_config()


@dataclass(frozen=True)
class Fix:
    """One change to a submitted value, with why."""

    field: str
    requested: Any
    used: Any
    reason: str


@dataclass
class RunPlan:
    """The values a run actually uses (after fixes)."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_steps: int
    precision: Literal["fp16", "bf16", "fp32"]
    fixes: list[Fix] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_run(spec: TrainSpec, *, n_train: int, device: Device) -> RunPlan:
    """Resolve step counts and precision for ``n_train`` examples on ``device``."""
    if n_train < 1:
        raise ValueError("no training examples")
    fixes: list[Fix] = []
    batches = math.ceil(n_train / spec.per_device_train_batch_size)
    # Same arithmetic as transformers' Trainer: a partial accumulation still makes a step.
    steps_per_epoch = max(math.ceil(batches / spec.gradient_accumulation_steps), 1)
    if spec.max_steps is not None:
        total = spec.max_steps
    else:
        total = max(math.ceil(spec.num_train_epochs * steps_per_epoch), 1)

    warmup = spec.warmup_steps
    cap = math.floor(spec.max_warmup_fraction * total)
    if warmup > cap:
        fixes.append(
            Fix(
                "warmup_steps",
                warmup,
                cap,
                f"warmup of {warmup} steps exceeds {spec.max_warmup_fraction:.0%} of the run's "
                f"{total} optimizer steps; the learning rate would never reach its peak",
            )
        )
        warmup = cap

    eval_steps = spec.eval_steps or max(1, math.ceil(total / 5))
    if eval_steps > total:
        fixes.append(
            Fix(
                "eval_steps",
                eval_steps,
                total,
                f"evaluation every {eval_steps} steps would never run in {total} steps",
            )
        )
        eval_steps = total

    precision = _precision(spec.mixed_precision, device, fixes)
    return RunPlan(steps_per_epoch, total, warmup, eval_steps, precision, fixes)


def _precision(
    requested: Precision, device: Device, fixes: list[Fix]
) -> Literal["fp16", "bf16", "fp32"]:
    if device.kind != "cuda":
        if requested not in ("fp32", "auto"):
            fixes.append(
                Fix(
                    "mixed_precision",
                    requested,
                    "fp32",
                    f"training on {device.kind}: half-precision LoRA training there is slow or "
                    "unsupported; float32 is used",
                )
            )
        return "fp32"
    if requested == "auto":
        return "bf16" if device.bf16_supported else "fp16"
    if requested == "fp16" and device.bf16_supported:
        fixes.append(
            Fix(
                "mixed_precision",
                "fp16",
                "bf16",
                f"{device.name or 'this GPU'} supports bf16: same speed as fp16, no overflow or "
                "loss scaling",
            )
        )
        return "bf16"
    if requested == "bf16" and not device.bf16_supported:
        fixes.append(
            Fix(
                "mixed_precision",
                "bf16",
                "fp16",
                f"{device.name or 'this GPU'} has no bf16 support",
            )
        )
        return "fp16"
    return requested  # type: ignore[return-value]
