"""The fine-tuning guide's recipe, rewritten minimal and faithful, as the benchmark's baseline.

Source: ``nmmm9/SKN12TH_FinalProject``, ``ai-engine-dev/qwen3_finetune.py`` (training) and
``ai-engine-dev/qwen3_inference.py`` (inference). What is kept, because it is what makes the
guide's approach cost what it costs:

Training
- the conversation is written by hand in ChatML (``<|im_start|>role\\n...<|im_end|>``), the
  answer is the plan as ``json.dumps(..., ensure_ascii=False, indent=2)``;
- the whole text is tokenized with ``truncation=True, max_length=2048`` (the answer is cut when
  the transcript is long) and ``labels = input_ids``: the loss covers the prompt too;
- ``DataCollatorForSeq2Seq(padding=True)`` pads to the longest in the batch (labels with -100);
- eager attention off-GPU (``flash_attention_2`` on GPU), fp16 on GPU, fp32 on the CPU, gradient
  checkpointing, batch 1 x 8 accumulation, lr 2e-4, 100 warmup steps, LoRA r=16/alpha=32/dropout
  0.1 on the seven projections.

Deviations, all in the baseline's favour or neutral for speed: the same normalized plans as our
trainer are used as answers (the guide's loader read a ``result`` key that only 26 records
have); the step count is the benchmark's (``max_steps``), and evaluation and checkpoint saving
are off in both runs so that only training is timed.

Inference
- the same hand-written prompt, truncated to ``2048 - 512`` tokens; the adapter merged into the
  base (``merge_and_unload``) as the guide did; one request at a time; ``generate`` with
  ``max_new_tokens=512, temperature=0.7, do_sample=True, top_p=0.9, top_k=50,
  repetition_penalty=1.1``; no constrained decoding; the answer parsed as JSON afterwards.
- dtype: the guide's fp16 on a GPU; float32 on a CPU, where fp16 matmuls have no fast kernels
  (measured: about 40x slower than float32 on an AVX2-only CPU).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ttalkkac.plan import ProjectPlan
from ttalkkac.prompts import SYSTEM_PROMPT, USER_PROMPT_TEMPLATE

logger = logging.getLogger(__name__)

MAX_LENGTH = 2048
MAX_NEW_TOKENS = 512
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1}
TARGET_MODULES = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRAINING = {
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "gradient_accumulation_steps": 8,
    "warmup_steps": 100,
    "learning_rate": 2e-4,
    "logging_steps": 10,
    "gradient_checkpointing": True,
}
GENERATE = {
    "max_new_tokens": MAX_NEW_TOKENS,
    "temperature": 0.7,
    "do_sample": True,
    "top_p": 0.9,
    "top_k": 50,
    "repetition_penalty": 1.1,
}


def conversation(meeting_text: str, answer: str | None = None) -> str:
    """The guide's hand-written ChatML; without an answer, the generation prompt."""
    user = USER_PROMPT_TEMPLATE.format(meeting_content=meeting_text)
    text = (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
    return text if answer is None else f"{text}{answer}<|im_end|>"


def answer(plan: ProjectPlan) -> str:
    return json.dumps(plan.model_dump(), ensure_ascii=False, indent=2)


def train_features(tokenizer: Any, records: list[Any], *, max_length: int) -> list[dict]:
    """Whole-text features: truncated at ``max_length``, labels = input_ids."""
    texts = [conversation(r.meeting_text, answer(r.plan)) for r in records]
    enc = tokenizer(texts, truncation=True, padding=False, max_length=max_length)
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": list(ids)}
        for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True)
    ]


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def load_model(model_path: str, *, training: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    gpu = _on_gpu()
    attn = "eager"
    if gpu:
        try:
            import flash_attn  # noqa: F401

            attn = "flash_attention_2"
        except ImportError:  # the guide's choice is not installed: the next best kernel
            attn = "sdpa"
    return AutoModelForCausalLM.from_pretrained(
        model_path,
        dtype=torch.float16 if gpu else torch.float32,
        attn_implementation=attn,
        use_cache=not training,
    )


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="right")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_trainer(
    model_path: str,
    features: list[dict],
    *,
    out_dir: Path,
    max_steps: int,
    accumulation: int = TRAINING["gradient_accumulation_steps"],
    seed: int = 42,
) -> Any:
    """The guide's ``Trainer`` (model, LoRA, arguments, collator) for ``max_steps`` steps."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tokenizer = load_tokenizer(model_path)
    model = get_peft_model(
        load_model(model_path, training=True),
        LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            target_modules=TARGET_MODULES,
            bias="none",
            inference_mode=False,
            **LORA,
        ),
    )
    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=max_steps,
        fp16=_on_gpu(),
        use_cpu=not _on_gpu(),
        eval_strategy="no",
        save_strategy="no",
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        seed=seed,
        data_seed=seed,
        **(TRAINING | {"gradient_accumulation_steps": accumulation}),
    )
    collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model, padding=True)
    return Trainer(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=collator,
        processing_class=tokenizer,
    )


@dataclass
class GuideOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def judge(text: str) -> dict[str, Any]:
    """The guide's answer parsed afterwards: whether ``text`` is JSON and a ``ProjectPlan``."""
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError as exc:
        return {"parseable": False, "schema_valid": False, "error": f"json: {exc.msg}"}
    try:
        ProjectPlan.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        return {
            "parseable": True,
            "schema_valid": False,
            "error": f"schema: {where}: {first['msg']}",
        }
    return {"parseable": True, "schema_valid": True, "error": None}


class GuideInference:
    """The guide's inference class, reduced to what runs: merged adapter, one request at a time."""

    def __init__(self, model_path: str, adapter_path: str | None) -> None:
        self.model_path = model_path
        self.adapter_path = adapter_path
        self.tokenizer: Any = None
        self.model: Any = None

    def load(self) -> None:
        from peft import PeftModel

        self.tokenizer = load_tokenizer(self.model_path)
        model = load_model(self.model_path, training=False)
        if self.adapter_path:
            model = PeftModel.from_pretrained(model, self.adapter_path).merge_and_unload()
        model.eval()
        self.model = model

    def generate(self, meeting_text: str, *, seed: int) -> GuideOutput:
        import torch

        started = time.perf_counter()
        inputs = self.tokenizer(
            conversation(meeting_text),
            return_tensors="pt",
            truncation=True,
            max_length=MAX_LENGTH - MAX_NEW_TOKENS,
        ).to(self.model.device)
        torch.manual_seed(seed)
        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **GENERATE,
            )
        width = inputs["input_ids"].shape[1]
        new = output[0, width:].tolist()
        eos = self.tokenizer.eos_token_id
        completion = new[: new.index(eos) + 1] if eos in new else new
        return GuideOutput(
            text=self.tokenizer.decode(completion, skip_special_tokens=True).strip(),
            prompt_tokens=width,
            completion_tokens=len(completion),
            seconds=time.perf_counter() - started,
        )

    def close(self) -> None:
        self.model = None
