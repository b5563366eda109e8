"""The original project's prompts, turned into chat messages and rendered by the tokenizer.

The system prompt and the user template are the fine-tuning guide's, byte for byte (trailing
spaces included): the gold data was generated for them and a trained adapter expects them.
Rendering always goes through the tokenizer's own chat template; Qwen3 "thinking" is switched
off there (``enable_thinking=False``) because a plan must be pure JSON.
"""

from __future__ import annotations

from typing import Any, Protocol

SYSTEM_PROMPT = (
    "당신은 회의록을 분석하여 체계적인 노션 프로젝트 기획안을 생성하는 전문가입니다. \n"
    "회의 내용을 정확히 분석하고 실무에서 바로 활용할 수 있는 구조화된 프로젝트 계획을 "
    "만들어주세요."
)

USER_PROMPT_TEMPLATE = (
    "다음 회의록을 바탕으로 노션에서 사용할 수 있는 체계적인 프로젝트 기획안을 JSON 형식으로 "
    "생성해주세요.\n"
    "\n"
    "**요구사항:**\n"
    "1. 프로젝트명과 목적을 명확히 정의\n"
    "2. 핵심 아이디어와 실행 계획 수립  \n"
    "3. 구체적인 목표와 기대 효과 도출\n"
    "4. 실무진과 일정 계획 포함\n"
    "5. JSON 형식으로 응답\n"
    "\n"
    "**회의록:**\n"
    "{meeting_content}\n"
    "\n"
    "**응답 형식:**\n"
    "JSON 형식으로 프로젝트 기획안을 생성해주세요."
)

Message = dict[str, str]


class ChatTokenizer(Protocol):
    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def build_messages(meeting_content: str, answer: str | None = None) -> list[Message]:
    """System + user messages for one meeting, plus the assistant answer when training."""
    messages: list[Message] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_PROMPT_TEMPLATE.format(meeting_content=meeting_content)},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def supports_thinking_switch(tokenizer: ChatTokenizer) -> bool:
    """Whether the model's chat template reads ``enable_thinking`` (Qwen3 templates do)."""
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = " ".join(str(t) for t in template.values())
    return "enable_thinking" in str(template or "")


def chat_template_kwargs(tokenizer: ChatTokenizer) -> dict[str, Any]:
    """Extra chat-template variables: thinking off for templates that support it."""
    return {"enable_thinking": False} if supports_thinking_switch(tokenizer) else {}


def render_prompt(tokenizer: ChatTokenizer, meeting_content: str) -> str:
    """The generation prompt text (ends where the assistant's answer starts)."""
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template; use an instruction-tuned model")
    return tokenizer.apply_chat_template(
        build_messages(meeting_content),
        tokenize=False,
        add_generation_prompt=True,
        **chat_template_kwargs(tokenizer),
    )
