"""Training benchmark: the guide's recipe against our trainer, same records, model and steps.

Each variant runs in a fresh Python process (``python -m bench _train-variant``) so that its
peak memory is its own and one variant's allocator state cannot slow the next. Tokens are
counted honestly: ``tokens`` are the non-pad tokens the model processed, ``loss_tokens`` the
positions whose prediction entered the loss, ``answer_tokens`` those among them that belong to
the plan (the guide's whole-text loss spends most of its positions on the transcript, and its
truncation at 2,048 tokens often leaves no plan at all).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import env
from bench import guide_recipe as guide

logger = logging.getLogger(__name__)

VARIANTS: dict[str, str] = {
    "guide": "The guide's recipe: whole-text loss, truncation at max_length, eager attention, "
    "gradient checkpointing, fp32 on CPU / fp16 on GPU, batch 1 x 8 accumulation.",
    "ours": "Our trainer as shipped (TrainSpec defaults): answer-only labels, transcript "
    "shortened to fit, SDPA attention, LM head only at answer positions, gradient "
    "checkpointing, batch 1 x 8 accumulation.",
    "ours_full_head": "Our trainer with answer_logits_only off (the LM head and float32 logits "
    "at every position): isolates that option's gain.",
    "ours_fast": "Our trainer as shipped plus gradient checkpointing off: no recomputation of "
    "the forward pass, more activation memory.",
}
DEFAULT_VARIANTS = ("guide", "ours", "ours_fast")


def run_variant(
    variant: str,
    *,
    model: str,
    steps: int,
    max_seq_len: int,
    out_dir: Path,
    accumulation: int = guide.TRAINING["gradient_accumulation_steps"],
) -> dict[str, Any]:
    """Train one variant in this process; return its measured numbers."""
    import torch
    from transformers import AutoTokenizer

    from bench.data import training_records

    tokenizer = AutoTokenizer.from_pretrained(model)
    n = steps * accumulation
    records = training_records(tokenizer, n=n, max_seq_len=max_seq_len)
    cpu_before = env.cpu_seconds()
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    if variant == "guide":
        features = guide.train_features(tokenizer, records, max_length=max_seq_len)
        trainer = guide.build_trainer(
            model, features, out_dir=out_dir, max_steps=steps, accumulation=accumulation
        )
        counts, runtime, loss = _run_guide(tokenizer, trainer, records, features)
    else:
        counts, runtime, loss = _run_ours(
            tokenizer,
            model,
            records,
            steps,
            max_seq_len,
            out_dir,
            accumulation=accumulation,
            variant=variant,
        )
    result = {
        "variant": variant,
        "description": VARIANTS[variant],
        "steps": steps,
        "gradient_accumulation_steps": accumulation,
        "examples": len(records),
        "records": [r.record_id for r in records],
        "max_seq_len": max_seq_len,
        "train_runtime_s": round(runtime, 2),
        "cpu_seconds": round(env.cpu_seconds() - cpu_before, 2),
        **counts,
        "tokens_per_s": round(counts["tokens"] / runtime, 2),
        "loss_tokens_per_s": round(counts["loss_tokens"] / runtime, 2),
        "answer_tokens_per_s": round(counts["answer_tokens"] / runtime, 2),
        "first_loss": loss,
        "peak_rss_mib": env.peak_rss_mib(),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 1024**2, 1) if gpu else None,
        "torch_threads": torch.get_num_threads(),
    }
    return result


def _run_guide(
    tokenizer: Any, trainer: Any, records: list[Any], features: list[dict]
) -> tuple[dict[str, int], float, float | None]:
    output = trainer.train()
    tokens = sum(len(f["input_ids"]) for f in features)
    answer_kept = 0
    for record, feature in zip(records, features, strict=True):
        prompt = guide.conversation(record.meeting_text)
        prompt_len = len(tokenizer(prompt)["input_ids"])
        answer_kept += max(0, len(feature["input_ids"]) - prompt_len)
    counts = {
        "tokens": tokens,
        "loss_tokens": sum(len(f["input_ids"]) - 1 for f in features),
        "answer_tokens": answer_kept,
        "examples_with_answer": sum(
            1
            for r, f in zip(records, features, strict=True)
            if len(f["input_ids"]) > len(tokenizer(guide.conversation(r.meeting_text))["input_ids"])
        ),
    }
    return counts, output.metrics["train_runtime"], _first_loss(trainer.state.log_history)


def _run_ours(
    tokenizer: Any,
    model: str,
    records: list[Any],
    steps: int,
    max_seq_len: int,
    out_dir: Path,
    *,
    accumulation: int,
    variant: str,
) -> tuple[dict[str, int], float, float | None]:
    from ttalkkac.data.examples import build_examples
    from ttalkkac.training.spec import TrainSpec
    from ttalkkac.training.trainer import TrainData, train_lora

    options: dict[str, Any] = {}
    if variant == "ours_fast":
        options["gradient_checkpointing"] = False
    elif variant == "ours_full_head":
        options["answer_logits_only"] = False
    spec = TrainSpec(
        max_steps=steps,
        gradient_accumulation_steps=accumulation,
        max_seq_len=max_seq_len,
        logging_steps=1,
        **options,
    )
    results = train_lora(
        base_model=model,
        data=TrainData(train=records, val=[], stats={}),
        spec=spec,
        out_dir=out_dir,
        resume=False,
    )
    examples, _stats = build_examples(tokenizer, records, max_seq_len=max_seq_len)
    counts = {
        "tokens": sum(len(e) for e in examples),
        # The position before the first answer token predicts it: answer_tokens positions.
        "loss_tokens": sum(e.answer_tokens for e in examples),
        "answer_tokens": sum(e.answer_tokens for e in examples),
        "examples_with_answer": len(examples),
    }
    if results.get("train_tokens") and results["train_tokens"] != counts["tokens"]:
        logger.warning(
            "trainer saw %s tokens, the examples hold %s", results["train_tokens"], counts["tokens"]
        )
    return counts, results["train_runtime"], results.get("first_train_loss")


def _first_loss(log_history: list[dict[str, Any]]) -> float | None:
    losses = [e["loss"] for e in log_history if "loss" in e]
    return losses[0] if losses else None


def run_in_subprocess(
    variant: str, *, model: str, steps: int, max_seq_len: int, accumulation: int, work_dir: Path
) -> dict[str, Any]:
    """``run_variant`` in a fresh interpreter (own peak memory), with load before and after."""
    out = work_dir / f"train-{variant}.json"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "_train-variant",
        variant,
        "--model",
        model,
        "--steps",
        str(steps),
        "--max-seq-len",
        str(max_seq_len),
        "--accumulation",
        str(accumulation),
        "--out-dir",
        str(work_dir / f"run-{variant}"),
        "--result",
        str(out),
    ]
    load_before = env.load_average()
    started = time.perf_counter()
    # The child's log goes straight to this terminal: progress is visible as it happens.
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"training variant {variant} failed (exit {proc.returncode}; log above)")
    result = json.loads(out.read_text())
    result["process_wall_s"] = round(time.perf_counter() - started, 1)
    result["load_average_before"] = load_before
    result["load_average_after"] = env.load_average()
    return result


def run_training_bench(
    *,
    model: str,
    steps: int,
    max_seq_len: int,
    variants: list[str],
    accumulation: int = guide.TRAINING["gradient_accumulation_steps"],
    keep_adapter: Path | None = None,
) -> dict[str, Any]:
    """Every variant, one after the other on this machine; ratios against the guide.

    ``keep_adapter``: where to copy the adapter our trainer wrote (the generation benchmark
    serves it).
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for variant in variants:
            logger.info(
                "training variant %s (%d steps, max_seq_len %d)", variant, steps, max_seq_len
            )
            results[variant] = run_in_subprocess(
                variant,
                model=model,
                steps=steps,
                max_seq_len=max_seq_len,
                accumulation=accumulation,
                work_dir=Path(tmp),
            )
            logger.info(
                "%s: %.1f tokens/s, peak RSS %.0f MiB",
                variant,
                results[variant]["tokens_per_s"],
                results[variant]["peak_rss_mib"],
            )
            if keep_adapter is not None and variant in ("ours", "ours_fast"):
                source = Path(tmp) / f"run-{variant}"
                keep_adapter.mkdir(parents=True, exist_ok=True)
                for name in ("adapter_model.safetensors", "adapter_config.json"):
                    shutil.copyfile(source / name, keep_adapter / name)
    ratios: dict[str, Any] = {}
    base = results.get("guide")
    if base:
        for name, r in results.items():
            if name == "guide":
                continue
            ratios[name] = {
                key: _ratio(r[key], base[key])
                for key in ("tokens_per_s", "answer_tokens_per_s", "peak_rss_mib")
            }
    if "ours" in results and "ours_fast" in results:
        ratios["ours_fast_vs_ours"] = {
            key: _ratio(results["ours_fast"][key], results["ours"][key])
            for key in ("tokens_per_s", "answer_tokens_per_s", "peak_rss_mib")
        }
    return {
        "settings": {
            "model": model,
            "optimizer_steps": steps,
            "gradient_accumulation_steps": accumulation,
            "max_seq_len": max_seq_len,
            "guide_hyperparameters": guide.TRAINING | guide.LORA,
        },
        "variants": results,
        "ratios": ratios,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 2)
