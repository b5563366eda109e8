"""Prompts: the guide's exact text, chat messages, rendering through the tokenizer's template."""

from __future__ import annotations

import copy

import pytest

from ttalkkac.prompts import (
    SYSTEM_PROMPT,
    USER_PROMPT_TEMPLATE,
    build_messages,
    chat_template_kwargs,
    render_prompt,
    supports_thinking_switch,
)

# Copied from the original project's fine-tuning script (ai-engine-dev/qwen3_finetune.py),
# trailing spaces included: "전문가입니다. " and "수립  ".
GUIDE_SYSTEM = (
    "당신은 회의록을 분석하여 체계적인 노션 프로젝트 기획안을 생성하는 전문가입니다. \n"
    "회의 내용을 정확히 분석하고 실무에서 바로 활용할 수 있는 구조화된 프로젝트 계획을 만들어주세요."
)
GUIDE_USER_FOR_X = "\n".join(
    [
        "다음 회의록을 바탕으로 노션에서 사용할 수 있는 체계적인 프로젝트 기획안을 JSON 형식으로 생성해주세요.",
        "",
        "**요구사항:**",
        "1. 프로젝트명과 목적을 명확히 정의",
        "2. 핵심 아이디어와 실행 계획 수립  ",
        "3. 구체적인 목표와 기대 효과 도출",
        "4. 실무진과 일정 계획 포함",
        "5. JSON 형식으로 응답",
        "",
        "**회의록:**",
        "X",
        "",
        "**응답 형식:**",
        "JSON 형식으로 프로젝트 기획안을 생성해주세요.",
    ]
)

SIMPLE_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_prompts_are_the_guides_byte_for_byte() -> None:
    assert SYSTEM_PROMPT == GUIDE_SYSTEM
    assert USER_PROMPT_TEMPLATE.format(meeting_content="X") == GUIDE_USER_FOR_X
    assert USER_PROMPT_TEMPLATE.count("{meeting_content}") == 1


def test_build_messages() -> None:
    messages = build_messages("[00:01] A: 안녕하세요")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert "**회의록:**\n[00:01] A: 안녕하세요\n\n**응답 형식:**" in messages[1]["content"]
    with_answer = build_messages("회의", answer='{"a":1}')
    assert with_answer[-1] == {"role": "assistant", "content": '{"a":1}'}
    # Braces in a meeting are not format fields.
    assert "{x} {}" in build_messages("{x} {}")[1]["content"]


def test_qwen3_template_gets_thinking_switched_off(tiny_tokenizer) -> None:
    assert supports_thinking_switch(tiny_tokenizer)
    assert chat_template_kwargs(tiny_tokenizer) == {"enable_thinking": False}
    prompt = render_prompt(tiny_tokenizer, "[00:01] Speaker_A: 리모컨 회의")
    assert prompt.startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n")
    assert "[00:01] Speaker_A: 리모컨 회의" in prompt
    # Thinking off: the generation prompt ends with an empty think block, the answer follows.
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    thinking = tiny_tokenizer.apply_chat_template(
        build_messages("회의"), tokenize=False, add_generation_prompt=True
    )
    assert thinking.endswith("<|im_start|>assistant\n")  # the switch really changes the prompt


def test_template_without_switch_gets_no_kwarg(tiny_tokenizer) -> None:
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = SIMPLE_CHATML
    assert not supports_thinking_switch(tokenizer)
    assert chat_template_kwargs(tokenizer) == {}
    prompt = render_prompt(tokenizer, "회의 내용")
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "<think>" not in prompt


def test_tokenizer_without_template_is_refused(tiny_tokenizer) -> None:
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(tokenizer, "회의")


@pytest.mark.slow
def test_smollm2_template_renders_the_prompt(demo_model_dir) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    assert chat_template_kwargs(tokenizer) == {}
    prompt = render_prompt(tokenizer, "회의")
    assert prompt.startswith("<|im_start|>system\n" + SYSTEM_PROMPT)
    assert prompt.endswith("<|im_start|>assistant\n")
