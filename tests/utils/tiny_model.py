"""A tiny random Qwen3 model with a real byte-level BPE tokenizer and Qwen3's chat template.

Built in seconds inside the test session (no hub download): real code paths of transformers,
PEFT, TRL and vLLM run on it. Its shape follows NOTES: head_dim 64, because vLLM's CPU
attention refuses smaller heads.
"""

from __future__ import annotations

from pathlib import Path

import trl

from ttalkkac.prompts import SYSTEM_PROMPT, USER_PROMPT_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# The real Qwen3 chat template (with the enable_thinking switch), as TRL ships it.
QWEN3_CHAT_TEMPLATE = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()

_CORPUS = [
    SYSTEM_PROMPT,
    USER_PROMPT_TEMPLATE,
    '{"project_name": "리모컨 디자인 프로젝트", "project_purpose": "사용자 친화적 리모컨 개발", '
    '"project_period": "2025.01.01 ~ 2025.03.31", "project_manager": "Speaker_A", '
    '"core_objectives": ["목표 1: 인터페이스 개선", "목표 2: 경량화"], "core_idea": "패션과 전자제품", '
    '"idea_description": "기존 디자인을 탈피한다.", "execution_plan": ["1단계: 기능 설계", '
    '"2단계: 프로토타입"], "expected_effects": ["시장 경쟁력 확보", "사용자 만족도 향상"]}',
    "[00:01] Speaker_A: 오늘 회의에서는 새로운 리모컨 디자인을 논의하겠습니다.",
    "[00:02] Speaker_B: 배터리 수명과 가격이 중요합니다. 다음 주까지 시장 조사를 하겠습니다.",
    "Alice will write the API spec by Friday. Bob owns the database migration. Meeting notes.",
    "0123456789 ~ . , : ; ! ? ( ) [ ] { } \" ' - _ / \\ + = * & % $ # @ < > |",
]


def build_tiny_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer (any text encodes) with Qwen3's special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
    )
    fast.chat_template = QWEN3_CHAT_TEMPLATE
    return fast


def build_tiny_qwen3(out_dir: Path, *, seed: int = 0, max_position_embeddings: int = 4096) -> Path:
    """Write a tiny random Qwen3 (safetensors + tokenizer + chat template) to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
