"""Test models for serving: a tiny Qwen3 that closes JSON strings early, and LoRA adapters for it.

A random tiny model under the plan schema fills every string up to its bound (thousands of
tokens). ``build_terse_qwen3`` gives the tiny model one constant hidden feature and an untied
output matrix whose rows read that feature for the tokens that close a string, list or object:
under constrained decoding its plans are short (about a hundred tokens) and schema-valid, so the
real code paths (prompt, engine, LoRA, grammar, validation) run in seconds. Everything else in
the model stays random; adapters (``build_lora``) are random LoRA weights with a nonzero B.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Closing a string beats closing a list or object, which beats everything else: inside a
# string the quote wins as soon as the grammar allows it; after a list item, "]" beats ",".
CLOSER_BIAS = {'"': 1.0, "]": 0.5, "}": 0.5}


def build_terse_qwen3(src_dir: Path, out_dir: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(src_dir)
    model = AutoModelForCausalLM.from_pretrained(src_dir, dtype=torch.float32)
    embed = model.get_input_embeddings().weight.data
    with torch.no_grad():
        embed[:, 0] = 1.0  # a constant feature that dominates the residual stream's first dim
        head = embed.clone()
        head[:, 0] = 0.0
        for token_id in range(len(tokenizer)):
            text = tokenizer.decode([token_id])
            if text and text[0] in CLOSER_BIAS:
                head[token_id, 0] = CLOSER_BIAS[text[0]]
    model.config.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(head.shape[1], head.shape[0], bias=False)
    model.lm_head.weight.data = head
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_lora(base_dir: Path, out_dir: Path, *, seed: int = 1, rank: int = 8) -> Path:
    """A LoRA adapter with random A and B (nonzero: it changes the model), as safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,  # random B too, so the adapter is not a no-op
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def bin_only_copy(adapter_dir: Path, out_dir: Path) -> Path:
    """The adapter with its weights as a pickled ``adapter_model.bin`` only (must be refused)."""
    import torch
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(adapter_dir / "adapter_config.json", out_dir / "adapter_config.json")
    torch.save(load_file(adapter_dir / "adapter_model.safetensors"), out_dir / "adapter_model.bin")
    return out_dir


def set_base_model(adapter_dir: Path, base_model: str) -> None:
    config_file = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_model
    config_file.write_text(json.dumps(config))


def register_adapter(
    settings, name: str, src_dir: Path, *, base_model: str, rank: int = 8, activate: bool = False
) -> Path:
    """Copy an adapter under DATA_DIR/models/adapters/<name> and register it in the store."""
    from ttalkkac.store import crud
    from ttalkkac.store.db import Database

    target = settings.models_dir / "adapters" / name
    shutil.copytree(src_dir, target)
    db = Database(settings.resolved_database_url)
    try:
        db.create_all()
        with db.session() as session:
            crud.create_adapter(
                session, name=name, base_model=base_model, path=str(target), rank=rank
            )
            if activate:
                crud.activate_adapter(session, name=name)
    finally:
        db.dispose()
    return target


def wait_ready(client, timeout_s: float = 300) -> dict:
    """Poll /ready until 200; the last body otherwise (with the engine's error)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/ready")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response.json()
        if response.json().get("state") == "failed":
            return response.json()
        time.sleep(0.5)
