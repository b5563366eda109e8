"""The LoRA trainer on the tiny Qwen3: outputs, learning, evaluation, adapter, cancel, resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tests.ttalkkac.training.conftest import RecordingReporter, TrainedRun, file_digest
from tests.utils.training_data import tiny_records
from ttalkkac.errors import JobCancelled

pytestmark = pytest.mark.slow


def test_outputs_are_safetensors_results_history_and_plot(trained_run: TrainedRun) -> None:
    out = trained_run.out_dir
    for name in ("adapter_model.safetensors", "adapter_config.json", "training_results.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.bin")), "no pickle weights"
    assert not (out / "checkpoints").exists()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "log_history.json").read_text())
    assert any("loss" in h for h in history) and any("eval_loss" in h for h in history)

    results = json.loads((out / "training_results.json").read_text())
    for key in (
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_flos",
        "train_tokens_per_second",
        "train_loss",
        "eval_loss",
        "best_eval_loss",
        "best_train_loss",
        "data",
        "library_versions",
    ):
        assert results[key] is not None, key
    assert results["hyperparameters"]["lora"]["r"] == 8
    assert results["hyperparameters"]["learning_rate"] == 1e-2
    assert results["base_model"] == str(trained_run.base_dir)
    assert results["library_versions"]["peft"] and results["library_versions"]["transformers"]
    assert results["data"]["loader"] == {"source": "tiny_records"}
    assert results["data"]["examples"]["train"]["examples"] == 4
    assert results["global_step"] == 24 and results["train_tokens"] > 0
    assert results["total_flos"] > 0


def test_loss_falls_on_repeated_examples(trained_run: TrainedRun) -> None:
    r = trained_run.results
    assert r["train_loss"] < r["first_train_loss"] - 1.0, (r["first_train_loss"], r["train_loss"])


def test_validation_loss_recorded_and_best_checkpoint_kept(trained_run: TrainedRun) -> None:
    history = trained_run.results
    evals = [
        (e["step"], e["eval_loss"])
        for e in json.loads((trained_run.out_dir / "log_history.json").read_text())
        if "eval_loss" in e
    ]
    assert [s for s, _ in evals][:4] == [6, 12, 18, 24]
    best_step, best = min(evals, key=lambda item: item[1])
    assert math.isclose(history["best_eval_loss"], best, rel_tol=1e-6)
    assert history["best_step"] == best_step
    # The saved adapter is the best checkpoint: evaluating it again gives the best loss.
    assert math.isclose(history["eval_loss"], best, rel_tol=1e-4)


def test_run_time_fixes_are_reported(trained_run: TrainedRun) -> None:
    fixes = {e["data"]["fix"]: e for e in trained_run.reporter.events if "fix" in e["data"]}
    assert fixes["warmup_steps"]["data"]["used"] == 2  # 10% of 24 steps, not 100
    assert fixes["mixed_precision"]["data"]["used"] == "fp32"  # CPU
    assert all(e["level"] == "warning" for e in fixes.values())


def test_events_cover_losses_evaluations_and_checkpoints(trained_run: TrainedRun) -> None:
    events = trained_run.reporter.events
    losses = [e for e in events if e["type"] == "metrics" and "loss" in e["data"]]
    assert [e["data"]["step"] for e in losses][:3] == [1, 2, 4]
    assert all("learning_rate" in e["data"] for e in losses)
    assert len([e for e in events if "eval_loss" in e["data"]]) >= 4
    assert [e["data"]["step"] for e in events if "checkpoint" in e["data"]][:4] == [6, 12, 18, 24]
    assert trained_run.reporter.steps[-1] == 24


def test_adapter_loads_with_peft_changes_outputs_and_base_is_unchanged(
    trained_run: TrainedRun,
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert file_digest(trained_run.base_dir / "model.safetensors") == trained_run.base_digest
    base = AutoModelForCausalLM.from_pretrained(trained_run.base_dir, dtype=torch.float32)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        base_logits = base(ids).logits
    model = PeftModel.from_pretrained(base, trained_run.out_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "LoRA B starts at zero: trained"
    with torch.no_grad():
        tuned = model(ids).logits
        with model.disable_adapter():
            plain = model(ids).logits
    assert not torch.allclose(tuned, base_logits, atol=1e-4)
    assert torch.allclose(plain, base_logits, atol=1e-6)


def test_training_does_not_generate(trained_run: TrainedRun) -> None:
    # Validity is the post-training evaluation's figure (constrained, through the serving
    # engine); the run had validation meetings, which the trainer used to generate on.
    assert trained_run.results["data"]["examples"]["val"]["examples"] > 0
    assert not [key for key in trained_run.results if "generation" in key]
    assert not [e for e in trained_run.reporter.events if "generat" in e["message"].lower()]


def test_cancel_stops_within_a_step_and_a_rerun_resumes_from_the_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    from ttalkkac.training.spec import TrainSpec
    from ttalkkac.training.trainer import TrainData, finished_results, train_lora

    records = tiny_records(4)
    data = TrainData(records[:3], records[3:], {})
    spec = TrainSpec(
        max_steps=6,
        gradient_accumulation_steps=1,
        eval_steps=3,
        logging_steps=1,
        max_seq_len=512,
    )
    stopper = RecordingReporter(cancel_at_step=4)
    with pytest.raises(JobCancelled):
        train_lora(
            base_model=str(tiny_model_dir), data=data, spec=spec, out_dir=tmp_path, reporter=stopper
        )
    assert stopper.steps[-1] == 4  # stopped at the end of the step the cancel arrived in
    assert (tmp_path / "checkpoints" / "checkpoint-3").is_dir()
    assert not (tmp_path / "checkpoints" / "checkpoint-4").exists()
    assert not (tmp_path / "adapter_model.safetensors").exists()
    # A process killed while saving a later checkpoint leaves it without its trainer state,
    # which Trainer writes last: the rerun must not resume from it.
    partial = tmp_path / "checkpoints" / "checkpoint-5"
    shutil.copytree(tmp_path / "checkpoints" / "checkpoint-3", partial)
    (partial / "trainer_state.json").unlink()
    # A kill while a finished run removes its checkpoints can leave the state without weights.
    weightless = tmp_path / "checkpoints" / "checkpoint-4"
    shutil.copytree(tmp_path / "checkpoints" / "checkpoint-3", weightless)
    (weightless / "adapter_model.safetensors").unlink()

    again = RecordingReporter()
    results = train_lora(
        base_model=str(tiny_model_dir), data=data, spec=spec, out_dir=tmp_path, reporter=again
    )
    assert results["resumed_from"] == "checkpoint-3"
    assert any("resuming from checkpoint-3" in e["message"] for e in again.events)
    assert any("checkpoint-5 is incomplete" in e["message"] for e in again.events)
    assert any("checkpoint-4 is incomplete" in e["message"] for e in again.events)
    assert not partial.exists() and not weightless.exists()
    assert again.steps[0] == 3 and results["global_step"] == 6
    assert (tmp_path / "adapter_model.safetensors").is_file()

    # The process died after training, before its job was marked succeeded: the next attempt
    # finds the finished run and trains nothing.
    third = RecordingReporter()
    reused = train_lora(
        base_model=str(tiny_model_dir), data=data, spec=spec, out_dir=tmp_path, reporter=third
    )
    assert reused == json.loads((tmp_path / "training_results.json").read_text())
    assert reused["global_step"] == 6 and third.steps == []
    assert any("finished in an earlier attempt" in e["message"] for e in third.events)
    # Results written before a spec field existed still match (the field has its default).
    stored = json.loads((tmp_path / "training_results.json").read_text())
    del stored["hyperparameters"]["report_to"]
    (tmp_path / "training_results.json").write_text(json.dumps(stored))
    assert finished_results(tmp_path, spec=spec, base_model=str(tiny_model_dir)) is not None
    # Another spec in the same folder is another run: that one does train.
    assert (
        finished_results(
            tmp_path, spec=spec.model_copy(update={"seed": 7}), base_model=str(tiny_model_dir)
        )
        is None
    )


def test_an_interrupt_saves_a_checkpoint_at_its_step_and_the_rerun_resumes_there(
    tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    """A worker shutting down: nothing since the last step is lost, however far the last
    scheduled checkpoint is."""
    from ttalkkac.errors import JobInterrupted
    from ttalkkac.training.spec import TrainSpec
    from ttalkkac.training.trainer import TrainData, train_lora

    records = tiny_records(4)
    data = TrainData(records[:3], records[3:], {})
    spec = TrainSpec(
        max_steps=4, gradient_accumulation_steps=1, eval_steps=100, logging_steps=1, max_seq_len=512
    )
    stopper = RecordingReporter(interrupt_at_step=2)
    with pytest.raises(JobInterrupted, match="checkpoint-2 saved"):
        train_lora(
            base_model=str(tiny_model_dir), data=data, spec=spec, out_dir=tmp_path, reporter=stopper
        )
    assert stopper.steps[-1] == 2
    assert (tmp_path / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter_model.safetensors").exists()
    again = RecordingReporter()
    results = train_lora(
        base_model=str(tiny_model_dir), data=data, spec=spec, out_dir=tmp_path, reporter=again
    )
    assert results["resumed_from"] == "checkpoint-2" and results["global_step"] == 4


def test_each_delivery_checkpoints_into_its_own_folder_and_prunes_what_it_will_not_need(
    tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    """A job's deliveries never write into each other's folders (a stale one's rotation could
    otherwise remove the live one's best checkpoint); each resumes from the newest complete
    checkpoint of any of them and keeps only that one and the best its state names."""
    from ttalkkac.errors import JobInterrupted
    from ttalkkac.training.spec import TrainSpec
    from ttalkkac.training.trainer import TrainData, train_lora

    records = tiny_records(4)
    data = TrainData(records[:3], records[3:], {})
    spec = TrainSpec(
        max_steps=6, gradient_accumulation_steps=1, eval_steps=1, logging_steps=1, max_seq_len=512
    )
    root = tmp_path / "checkpoints"

    def deliver(run_id: str, **stop: int) -> dict:
        return train_lora(
            base_model=str(tiny_model_dir),
            data=data,
            spec=spec,
            out_dir=tmp_path,
            reporter=RecordingReporter(**stop),
            run_id=run_id,
        )

    with pytest.raises(JobInterrupted):
        deliver("1-first", interrupt_at_step=3)
    assert [p.name for p in root.iterdir()] == ["run-1-first"]
    first = root / "run-1-first"
    assert (first / "checkpoint-3" / "adapter_model.safetensors").is_file()
    state = json.loads((first / "checkpoint-3" / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"]).name
    # A delivery that lost the job left a checkpoint of an earlier step in its own folder.
    stale = root / "run-0-stale" / "checkpoint-1"
    shutil.copytree(first / "checkpoint-3", stale)

    with pytest.raises(JobInterrupted):
        deliver("1-second", interrupt_at_step=5)
    second = root / "run-1-second"
    assert sorted(p.name for p in root.iterdir()) == ["run-1-first", "run-1-second"]
    assert sorted(p.name for p in first.iterdir()) == sorted({"checkpoint-3", best})
    assert (second / "checkpoint-5" / "adapter_model.safetensors").is_file()
    assert not any(
        p.name in {"checkpoint-1", "checkpoint-2", "checkpoint-3"} for p in second.iterdir()
    )

    results = deliver("2-third")
    assert results["resumed_from"] == "checkpoint-5" and results["global_step"] == 6
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert not root.exists()  # a finished run keeps no checkpoints without keep_checkpoints


def test_a_delivery_that_died_after_the_last_step_is_finished_without_training_more(
    tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    """transformers' resume from a checkpoint at max_steps trains one step more (9 of 8 here,
    found by SIGKILLing deliveries while they evaluated and published); the run is ended from
    its checkpoints instead, and a shutdown that arrives at the last step finishes the run."""
    from ttalkkac.training.spec import TrainSpec
    from ttalkkac.training.trainer import TrainData, train_lora

    records = tiny_records(4)
    data = TrainData(records[:3], records[3:], {})
    spec = TrainSpec(
        max_steps=8,
        gradient_accumulation_steps=1,
        eval_steps=2,
        logging_steps=1,
        max_seq_len=512,
        keep_checkpoints=True,
    )
    # A shutdown requested during the last step: nothing is left to resume, the run ends.
    first = train_lora(
        base_model=str(tiny_model_dir),
        data=data,
        spec=spec,
        out_dir=tmp_path,
        reporter=RecordingReporter(interrupt_at_step=8),
        run_id="1-a",
    )
    assert first["global_step"] == 8
    shipped = (tmp_path / "adapter_model.safetensors").read_bytes()
    # The process died after the last checkpoint, before its results were published.
    for name in ("training_results.json", "adapter_model.safetensors", "adapter_config.json"):
        (tmp_path / name).unlink()
    again = RecordingReporter()
    results = train_lora(
        base_model=str(tiny_model_dir),
        data=data,
        spec=spec,
        out_dir=tmp_path,
        reporter=again,
        run_id="2-b",
    )
    assert results["global_step"] == 8 and results["resumed_from"] == "checkpoint-8"
    assert again.steps == [8]  # the progress reported, no step trained
    assert any("every step was trained" in e["message"] for e in again.events)
    assert results["best_step"] == first["best_step"]
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == shipped


def test_answer_logits_loss_equals_the_models_own(
    tiny_model_dir: Path, tiny_tokenizer, tmp_path: Path, one_thread
) -> None:
    """Head on answer positions only: same loss value and same LoRA gradients as the full head."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from ttalkkac.data.examples import build_examples
    from ttalkkac.training.spec import LoraSpec
    from ttalkkac.training.trainer import PadCollator, _answer_logits_trainer, _as_features

    examples, _ = build_examples(tiny_tokenizer, tiny_records(2), max_seq_len=512)
    features = _as_features(examples)
    features[1]["input_ids"] = features[1]["input_ids"][:-5]  # unequal lengths: padding matters
    features[1]["labels"] = features[1]["labels"][:-5]
    features[1]["attention_mask"] = features[1]["attention_mask"][:-5]
    batch = PadCollator(tiny_tokenizer.pad_token_id)(features)

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraSpec(r=4, alpha=8, dropout=0.0).to_peft_config())
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)  # nonzero, so gradients reach lora_A too

    def grads(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    full = model(**batch).loss
    full_grads = grads(full)
    trainer = _answer_logits_trainer()(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), report_to="none"),
    )
    answer_only = trainer.compute_loss(model, batch)
    assert torch.allclose(answer_only, full, rtol=1e-5, atol=1e-6), (answer_only, full)
    for name, grad in grads(answer_only).items():
        assert torch.allclose(grad, full_grads[name], rtol=1e-4, atol=1e-7), name
