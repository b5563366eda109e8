"""TrainSpec defaults (the guide's), validation, PEFT mapping and the run-time fixes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ttalkkac.hardware import Device
from ttalkkac.training.spec import GUIDE_TARGET_MODULES, LoraSpec, TrainSpec, plan_run

CPU = Device("cpu")
A100 = Device("cuda", bf16_supported=True, name="A100")
T4 = Device("cuda", bf16_supported=False, name="T4")


def test_defaults_are_the_guides() -> None:
    spec = TrainSpec()
    assert (spec.lora.r, spec.lora.alpha, spec.lora.dropout) == (16, 32, 0.1)
    assert spec.lora.target_modules == list(GUIDE_TARGET_MODULES)
    assert spec.num_train_epochs == 3
    assert (spec.per_device_train_batch_size, spec.gradient_accumulation_steps) == (1, 8)
    assert spec.learning_rate == 2e-4
    assert (spec.warmup_steps, spec.logging_steps) == (100, 10)
    assert spec.gradient_checkpointing and spec.mixed_precision == "fp16"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"lora": {"r": 0}}, "lora.r"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout"),
        ({"lora": {"target_modules": ["q_proj", "attn.c_proj"]}}, "lora.target_modules"),
        ({"lora": {"target_modules": []}}, "lora.target_modules"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"num_train_epochs": -1}, "num_train_epochs"),
        ({"max_seq_len": 64}, "max_seq_len"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"lerning_rate": 1e-4}, "lerning_rate"),
    ],
)
def test_invalid_values_name_the_field(payload: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainSpec.model_validate(payload)
    locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert field in locs


def test_a_stored_row_with_the_removed_generation_check_settings_still_validates() -> None:
    # Job rows stored before the generation check was removed carry its two settings.
    stored = TrainSpec(max_steps=5, lora=LoraSpec(r=8)).model_dump(mode="json")
    legacy = {**stored, "generation_check_samples": 3, "generation_max_new_tokens": 1536}
    spec = TrainSpec.from_stored(legacy)
    assert spec == TrainSpec.from_stored(stored) == TrainSpec.model_validate(stored)
    assert (spec.max_steps, spec.lora.r) == (5, 8)
    assert "generation_check_samples" not in spec.model_dump()


def test_only_the_two_legacy_keys_are_forgiven_and_only_in_stored_rows() -> None:
    with pytest.raises(ValidationError) as info:  # a request: refused, naming the field
        TrainSpec.model_validate({"generation_check_samples": 0})
    assert [e["loc"] for e in info.value.errors()] == [("generation_check_samples",)]
    with pytest.raises(ValidationError, match="lerning_rate"):
        TrainSpec.from_stored({"generation_max_new_tokens": 16, "lerning_rate": 1e-4})


def test_to_peft_config_maps_every_field() -> None:
    config = TrainSpec(
        lora=LoraSpec(r=8, alpha=16, dropout=0.05, target_modules=["q_proj", "v_proj"])
    ).to_peft_config()
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    assert config.task_type == "CAUSAL_LM" and config.bias == "none"


def test_guide_run_caps_warmup_to_a_fraction_of_the_run() -> None:
    # The guide's own numbers: 190 examples x 3 epochs / (1 x 8) = 72 optimizer steps.
    plan = plan_run(TrainSpec(), n_train=190, device=CPU)
    assert plan.steps_per_epoch == 24 and plan.total_steps == 72
    assert plan.warmup_steps == 7  # 10% of 72, not 100
    fix = next(f for f in plan.fixes if f.field == "warmup_steps")
    assert (fix.requested, fix.used) == (100, 7) and "72" in fix.reason


def test_warmup_kept_when_it_fits() -> None:
    plan = plan_run(TrainSpec(warmup_steps=5, max_steps=1000), n_train=10, device=A100)
    assert plan.warmup_steps == 5 and plan.total_steps == 1000
    assert not [f for f in plan.fixes if f.field == "warmup_steps"]


@pytest.mark.parametrize(
    ("device", "requested", "used"),
    [
        (CPU, "fp16", "fp32"),
        (CPU, "bf16", "fp32"),
        (A100, "fp16", "bf16"),
        (T4, "fp16", "fp16"),
        (T4, "bf16", "fp16"),
        (A100, "auto", "bf16"),
        (CPU, "fp32", "fp32"),
    ],
)
def test_precision_fixed_for_the_device(device: Device, requested: str, used: str) -> None:
    plan = plan_run(TrainSpec(mixed_precision=requested), n_train=8, device=device)
    assert plan.precision == used
    fixed = [f for f in plan.fixes if f.field == "mixed_precision"]
    assert bool(fixed) == (requested != used and requested != "auto")


def test_eval_steps_default_and_cap() -> None:
    assert plan_run(TrainSpec(max_steps=50), n_train=4, device=CPU).eval_steps == 10
    plan = plan_run(TrainSpec(max_steps=5, eval_steps=100), n_train=4, device=CPU)
    assert plan.eval_steps == 5 and any(f.field == "eval_steps" for f in plan.fixes)
