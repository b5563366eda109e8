"""LoRA supervised fine-tuning with transformers' ``Trainer`` and PEFT.

Examples (token ids with the prompt masked to -100) come from ``ttalkkac.data.examples``; this
module only pads them, so training and validation loss are over answer tokens only. One run:

1. resolve the plan (steps, warmup cap, precision) and log every fix with its reason;
2. load the base model, wrap it with LoRA, train with evaluation and checkpoints every
   ``eval_steps``, resuming from the last complete checkpoint in ``out_dir/checkpoints`` if any
   (a job's delivery writes its own ``checkpoints/run-<id>/``: ``ttalkkac.training.layout``);
3. keep the best checkpoint by validation loss, save it as ``adapter_model.safetensors`` +
   ``adapter_config.json``;
4. write ``log_history.json``, ``loss.png`` and ``training_results.json``, the mark of a
   finished run, and rename all of them into ``out_dir``, the mark last
   (``ttalkkac.training.publish``: every attempt stages its own files). A resumed run (``resume=True``) that finds it, for the same spec and base
   model, next to the adapter returns it instead of training again: a process that died after
   training but before its job was marked succeeded costs a re-registration, not a retrain.

Whether the adapter writes valid plans is the post-training evaluation's question
(``ttalkkac.evaluation``, through the serving engine), not the trainer's.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttalkkac.errors import DataError, JobCancelled, JobInterrupted
from ttalkkac.hardware import Device
from ttalkkac.training.callbacks import CancelCallback, ProgressCallback
from ttalkkac.training.layout import (
    CHECKPOINTS_DIR,
    RUN_PREFIX,
    TRAINER_STATE_FILE,
    checkpoint_folders,
    checkpoint_step,
)
from ttalkkac.training.publish import file_digests, matches, publish, staging_folder
from ttalkkac.training.report import (
    LOG_HISTORY_FILE,
    LOSS_PLOT_FILE,
    RESULTS_FILE,
    library_versions,
    plot_loss,
    write_json,
)
from ttalkkac.training.reporter import Reporter
from ttalkkac.training.spec import RunPlan, TrainSpec, plan_run
from ttalkkac.training.tracking import Tracking, tracking_env

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class TrainData:
    """What the trainer needs from a dataset: records and the loader's statistics."""

    train: list[Any]  # records with meeting_id, meeting_text, plan
    val: list[Any]
    stats: dict[str, Any]


class PadCollator:
    """Right-pads a batch: pad id for inputs, -100 for labels, 0 for the attention mask."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
        for f in features:
            gap = width - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * gap)
            batch["labels"].append(list(f["labels"]) + [-100] * gap)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * gap)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def _answer_logits_trainer() -> type:
    """A ``Trainer`` that runs the LM head only where the loss needs it.

    The loss is the model's own (summed token cross-entropy over answer tokens, divided by the
    answer tokens of the whole accumulated batch), but logits are computed only at positions
    whose next token is an answer token (``logits_to_keep``). With a 49k-token vocabulary and
    transcripts filling most of a 4k-token example, the projection and the float32 logits of
    prompt positions were most of the head's time and memory, all for labels of -100.
    """
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class AnswerLogitsTrainer(Trainer):
        # Training passes num_items_in_batch (the accumulated batch's answer tokens): the loss
        # below is already normalized for gradient accumulation.
        loss_is_scaled_for_ga = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            targets = inputs["labels"][:, 1:]
            keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                logits_to_keep=keep,
                use_cache=False,
            )
            logits = outputs.logits.float()
            picked = targets[:, keep].to(logits.device)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)),
                picked.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            count = num_items_in_batch
            if count is None:  # evaluation: this batch's mean
                count = (picked != -100).sum()
            loss = loss / torch.as_tensor(count, device=loss.device).clamp(min=1)
            return (loss, outputs) if return_outputs else loss

    return AnswerLogitsTrainer


def _as_features(examples: list[Any]) -> list[dict[str, list[int]]]:
    return [
        {
            "input_ids": list(e.input_ids),
            "labels": list(e.labels),
            "attention_mask": list(e.attention_mask),
        }
        for e in examples
    ]


def _stats_dict(stats: Any) -> dict[str, Any]:
    if stats is None:
        return {}
    if isinstance(stats, dict):
        return stats
    for attr in ("to_dict", "as_dict", "model_dump"):
        if hasattr(stats, attr):
            return getattr(stats, attr)()
    from dataclasses import asdict, is_dataclass

    return asdict(stats) if is_dataclass(stats) else {"value": str(stats)}


def _load_model(base_model: str, precision: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    model.config.use_cache = False  # incompatible with gradient checkpointing
    return model


def _training_args(
    spec: TrainSpec,
    plan: RunPlan,
    checkpoints_dir: Path,
    has_val: bool,
    device: Device,
    run_name: str,
):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(checkpoints_dir),
        max_steps=plan.total_steps,
        per_device_train_batch_size=spec.per_device_train_batch_size,
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler_type,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
        warmup_steps=plan.warmup_steps,
        logging_steps=spec.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_val else "no",
        eval_steps=plan.eval_steps if has_val else None,
        save_strategy="steps",
        save_steps=plan.eval_steps,
        # Best (by eval loss) and last survive rotation: the best is what we ship, the last is
        # where a redelivered job resumes. keep_checkpoints: every one, for the user to pick.
        save_total_limit=None if spec.keep_checkpoints else 2,
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_loss" if has_val else None,
        greater_is_better=False if has_val else None,
        gradient_checkpointing=spec.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=device.kind == "cpu",
        dataloader_pin_memory=device.kind == "cuda",
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        prediction_loss_only=True,
        # transformers' own TensorBoard / MLflow callbacks; tracking_env points them at the
        # job folder and the deployment's server.
        report_to=spec.report_to,
        run_name=run_name,
        disable_tqdm=True,
        seed=spec.seed,
        data_seed=spec.seed,
    )


def _build_examples(tokenizer: Any, data: TrainData, spec: TrainSpec, reporter: Reporter):
    from ttalkkac.data.examples import build_examples

    train, train_stats = build_examples(tokenizer, data.train, max_seq_len=spec.max_seq_len)
    val, val_stats = build_examples(tokenizer, data.val, max_seq_len=spec.max_seq_len)
    stats = {"train": _stats_dict(train_stats), "val": _stats_dict(val_stats)}
    reporter.event(
        f"examples: {len(train)} train, {len(val)} validation (max_seq_len {spec.max_seq_len})",
        data=stats,
    )
    if not train:
        raise DataError(
            f"no training example fits max_seq_len={spec.max_seq_len}: raise max_seq_len",
            detail=stats,
        )
    return _as_features(train), _as_features(val), stats


def train_lora(
    *,
    base_model: str,
    data: TrainData,
    spec: TrainSpec,
    out_dir: Path,
    reporter: Reporter | None = None,
    resume: bool = True,
    device: Device | None = None,
    tracking: Tracking | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Fine-tune ``base_model`` on ``data``; return the results also written to ``out_dir``.

    ``tracking``: the run's name and MLflow server for ``spec.report_to`` (default: named after
    ``out_dir``, no server). ``run_id``: this delivery's own checkpoint folder,
    ``checkpoints/run-<run_id>/`` (a job's worker gives one per delivery; without it the
    checkpoints go straight into ``checkpoints/``).

    Raises ``JobCancelled`` when the reporter asked to stop, ``JobInterrupted`` after saving a
    checkpoint when it asked to be interrupted, ``DataError`` when nothing fits.
    """
    import torch
    from peft import get_peft_model
    from transformers import AutoTokenizer, PrinterCallback, Trainer, set_seed

    reporter = reporter or Reporter()
    device = device or Device.detect()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(spec.seed)

    if resume:
        finished = finished_results(out_dir, spec=spec, base_model=base_model)
        if finished is not None:
            reporter.event(
                "training had finished in an earlier attempt: its adapter and results are used",
                data={"global_step": finished.get("global_step")},
            )
            return finished

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_set, val_set, example_stats = _build_examples(tokenizer, data, spec, reporter)
    if spec.max_eval_samples is not None and len(val_set) > spec.max_eval_samples:
        reporter.event(
            f"evaluating on {spec.max_eval_samples} of {len(val_set)} validation examples "
            "(max_eval_samples)"
        )
        val_set = val_set[: spec.max_eval_samples]

    plan = plan_run(spec, n_train=len(train_set), device=device)
    for fix in plan.fixes:
        reporter.event(
            f"{fix.field}: {fix.requested} -> {fix.used} ({fix.reason})",
            level="warning",
            data={
                "fix": fix.field,
                "requested": fix.requested,
                "used": fix.used,
                "reason": fix.reason,
            },
        )
    if not val_set:
        reporter.event(
            "no validation examples: no evaluation, the last checkpoint is kept", level="warning"
        )

    tracking = tracking or Tracking(run_name=out_dir.name)
    # The integrations read their environment when the trainer is built and when it starts.
    with tracking_env(spec.report_to, tracking, out_dir):
        model = get_peft_model(_load_model(base_model, plan.precision), spec.to_peft_config())
        trainable, total = model.get_nb_trainable_parameters()
        ckpt_root = out_dir / CHECKPOINTS_DIR
        run_dir = ckpt_root / f"{RUN_PREFIX}{run_id}" if run_id else ckpt_root
        args = _training_args(spec, plan, run_dir, bool(val_set), device, tracking.run_name)
        cancel = CancelCallback(reporter)
        trainer_class = _answer_logits_trainer() if spec.answer_logits_only else Trainer
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=val_set or None,
            data_collator=PadCollator(tokenizer.pad_token_id),
            processing_class=tokenizer,
            callbacks=[ProgressCallback(reporter), cancel],
        )
        # Our reporter replaces the printer that prints every log dict to stdout.
        trainer.remove_callback(PrinterCallback)

        checkpoint = None
        if resume and ckpt_root.is_dir():
            checkpoint = last_complete_checkpoint(ckpt_root, reporter)
        if run_id and not spec.keep_checkpoints:
            _prune_other_runs(ckpt_root, keep=checkpoint)
        reporter.event(
            f"training {base_model} on {device.kind}: {plan.total_steps} steps, "
            f"{trainable:,} trainable of {total:,} parameters"
            + (f", resuming from {Path(checkpoint).name}" if checkpoint else ""),
            data={
                "plan": plan.as_dict(),
                "trainable_parameters": trainable,
                "total_parameters": total,
                "resumed_from": Path(checkpoint).name if checkpoint else None,
                "device": device.kind,
            },
        )

        tokens_before = 0
        if checkpoint:
            from transformers import TrainerState

            tokens_before = TrainerState.load_from_json(
                str(Path(checkpoint) / TRAINER_STATE_FILE)
            ).num_input_tokens_seen
        started = time.perf_counter()
        if checkpoint and (checkpoint_step(Path(checkpoint)) or 0) >= plan.total_steps:
            # Every step was trained before the last delivery died (evaluating or publishing):
            # transformers' resume would train one step past max_steps here.
            output = _end_of_trained_run(trainer, checkpoint, reporter)
        else:
            output = trainer.train(resume_from_checkpoint=checkpoint)
        wall_s = time.perf_counter() - started
        if cancel.cancelled:
            raise JobCancelled(f"cancelled at step {trainer.state.global_step}")
        if cancel.interrupted and trainer.state.global_step < plan.total_steps:
            step = trainer.state.global_step
            raise JobInterrupted(f"stopped at step {step} for a shutdown; checkpoint-{step} saved")
        # The final evaluation below re-scores the best checkpoint, already logged at its
        # step; logged again it would land after the integrations closed their run (MLflow's
        # fluent API would open a second, unnamed one).
        _drop_integration_callbacks(trainer)

    state = trainer.state
    best_step = (
        checkpoint_step(Path(state.best_model_checkpoint)) if state.best_model_checkpoint else None
    )
    final_eval = trainer.evaluate() if val_set else {}
    session_tokens = state.num_input_tokens_seen - tokens_before
    runtime = output.metrics.get("train_runtime") or wall_s
    train_losses = [e["loss"] for e in state.log_history if "loss" in e]
    eval_losses = [e["eval_loss"] for e in state.log_history if "eval_loss" in e]
    results = {
        "base_model": base_model,
        "adapter_dir": str(out_dir),
        "device": {"kind": device.kind, "name": device.name},
        "precision": plan.precision,
        "hyperparameters": spec.model_dump(mode="json"),
        "run_plan": plan.as_dict(),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "global_step": state.global_step,
        "epoch": state.epoch,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "train_runtime": runtime,
        "train_samples_per_second": output.metrics.get("train_samples_per_second"),
        "train_steps_per_second": output.metrics.get("train_steps_per_second"),
        "train_tokens": session_tokens,
        "train_tokens_per_second": session_tokens / runtime if runtime else None,
        "total_flos": state.total_flos,
        "train_loss": train_losses[-1] if train_losses else output.training_loss,
        "train_loss_mean": output.training_loss,
        "first_train_loss": train_losses[0] if train_losses else None,
        "best_train_loss": min(train_losses) if train_losses else None,
        "eval_loss": final_eval.get("eval_loss"),
        "best_eval_loss": state.best_metric,
        "best_eval_loss_seen": min(eval_losses) if eval_losses else None,
        "best_step": best_step,
        "data": {"loader": data.stats, "examples": example_stats},
        "library_versions": library_versions(),
        "torch_threads": torch.get_num_threads(),
    }
    with staging_folder(out_dir) as staging:
        trainer.model.save_pretrained(str(staging), safe_serialization=True)
        write_json(staging / LOG_HISTORY_FILE, state.log_history)
        plot_loss(
            state.log_history, staging / LOSS_PLOT_FILE, title=f"LoRA on {Path(base_model).name}"
        )
        results["file_digests"] = file_digests(staging, [ADAPTER_WEIGHTS, ADAPTER_CONFIG])
        write_json(staging / RESULTS_FILE, results)  # published last: the mark of a finished run
        # Checked before anything lands in out_dir: a cancelled run, or one another process has
        # taken over, must not overwrite the adapter there.
        if reporter.should_cancel():
            raise JobCancelled("cancelled after training")
        # Never a pickle: a stale .bin from another tool must not shadow the safetensors file.
        (out_dir / "adapter_model.bin").unlink(missing_ok=True)
        publish(staging, out_dir, last=RESULTS_FILE)
    reporter.event(
        f"adapter saved (best checkpoint: step {best_step or state.global_step})",
        data={"path": str(out_dir), "best_step": best_step, "eval": final_eval},
    )
    # The shipped adapter is the best checkpoint's; optimizer states are dead weight now, unless
    # the user asked to keep every checkpoint. A kill during this removal is harmless: a
    # resume finds the results above and stops there.
    if not spec.keep_checkpoints:
        shutil.rmtree(ckpt_root, ignore_errors=True)
    reporter.event(
        "results written", data={"files": [RESULTS_FILE, LOG_HISTORY_FILE, LOSS_PLOT_FILE]}
    )
    return results


def _end_of_trained_run(trainer: Any, checkpoint: str, reporter: Reporter) -> Any:
    """What ``trainer.train`` leaves after the last step, from a checkpoint at that step: its
    state, and the weights ``load_best_model_at_end`` would load (the best checkpoint's)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_FILE))
    best = state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
    source = Path(best) if best and (Path(best) / ADAPTER_WEIGHTS).is_file() else Path(checkpoint)
    set_peft_model_state_dict(trainer.model, load_file(str(source / ADAPTER_WEIGHTS)))
    trainer.state = state
    reporter.progress(step=state.global_step, total_steps=state.max_steps, epoch=state.epoch)
    reporter.event(
        f"every step was trained before the last stop: the run ends with {source.name}",
        data={"checkpoint": Path(checkpoint).name, "weights_from": source.name},
    )
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    return TrainOutput(state.global_step, sum(losses) / len(losses) if losses else 0.0, {})


def _drop_integration_callbacks(trainer: Any) -> None:
    from transformers.integrations import MLflowCallback, TensorBoardCallback

    for callback in (TensorBoardCallback, MLflowCallback):
        trainer.remove_callback(callback)


def finished_results(out_dir: Path, *, spec: TrainSpec, base_model: str) -> dict[str, Any] | None:
    """The results of a run of ``spec`` on ``base_model`` that finished in ``out_dir``, else None.

    Finished means: ``training_results.json`` (published last) parses, names the same
    hyperparameters and base model, and the adapter files it describes are there, byte for
    byte (their digests).
    """
    try:
        results = json.loads((out_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("base_model") != base_model:
        return None
    try:  # as a spec, not a dict: fields added since the run have their defaults on both sides
        same_run = TrainSpec.from_stored(results.get("hyperparameters") or {}) == spec
    except ValueError:
        return None
    weights = out_dir / ADAPTER_WEIGHTS
    if not same_run or not (out_dir / ADAPTER_CONFIG).is_file() or not weights.is_file():
        return None
    digests = results.get("file_digests")  # absent in runs published before digests were kept
    if isinstance(digests, dict) and not matches(out_dir, digests):
        return None  # two attempts published over each other: not one whole run
    return results


def last_complete_checkpoint(root: Path, reporter: Reporter) -> str | None:
    """The newest checkpoint under ``root`` that was completely written, else None.

    ``Trainer`` writes ``trainer_state.json`` last; a process killed while saving (OOM killer,
    kill -9) leaves a folder without it, or with it cut short; a kill while removing the
    checkpoints of a finished run can leave the state without the weights. transformers'
    ``get_last_checkpoint`` would pick such a folder and the resume would fail; they are
    removed (nothing in them can be resumed) and the one before is used.
    """
    for folder in reversed(checkpoint_folders(root)):
        try:
            json.loads((folder / TRAINER_STATE_FILE).read_text())
            if not (folder / ADAPTER_WEIGHTS).is_file():
                raise OSError(f"{ADAPTER_WEIGHTS} is missing")
        except (OSError, ValueError):
            reporter.event(
                f"{folder.name} is incomplete (the process was stopped while saving it): removed",
                level="warning",
                data={"checkpoint": folder.name},
            )
            shutil.rmtree(folder, ignore_errors=True)
            continue
        return str(folder)
    return None


def _prune_other_runs(root: Path, *, keep: str | None) -> None:
    """Remove the checkpoints a new delivery will not need: all but the one it resumes from
    and the best one that checkpoint's state names (loaded at the end of training). Earlier
    deliveries kept their best and last each; without this every restart would add two."""
    needed: set[Path] = set()
    if keep is not None:
        needed.add(Path(keep).resolve())
        try:
            state = json.loads((Path(keep) / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
            if state.get("best_model_checkpoint"):
                needed.add(Path(state["best_model_checkpoint"]).resolve())
        except (OSError, ValueError):
            pass
    for folder in checkpoint_folders(root):
        if folder.resolve() not in needed:
            shutil.rmtree(folder, ignore_errors=True)
    for run in root.glob(f"{RUN_PREFIX}*"):
        try:
            if run.is_dir() and not run.is_symlink() and not any(run.iterdir()):
                run.rmdir()
        except OSError:
            pass  # written meanwhile by the run that owned it: left for retention


def write_partial_outputs(out_dir: Path, log_history: list[dict[str, Any]]) -> None:
    """Loss curve and history while a job runs or after it failed (from the last checkpoint)."""
    write_json(out_dir / LOG_HISTORY_FILE, log_history)
    plot_loss(log_history, out_dir / LOSS_PLOT_FILE)
