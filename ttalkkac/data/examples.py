"""Training examples: chat-formatted token ids with the loss on the answer only.

One example = the tokenizer's own chat template applied to (system, user with the meeting,
assistant with the plan JSON). ``labels`` are -100 on every prompt token, so the loss counts only
the answer and the end-of-turn token that closes it (``<|im_end|>``); whatever the template puts
after that token (a newline) is left out of the sequence. The prompt is tokenized on its own, as
it is at generation time, and the answer after it, so the boundary is exact.

The answer is never truncated. When prompt + answer exceed ``max_seq_len`` the transcript is
shortened: its beginning is kept (meetings state their purpose early), cut at a line end, and
``SHORTENED_MARKER`` shows the cut. An example whose answer does not fit even beside the prompt
scaffold and ``min_meeting_tokens`` of transcript is dropped and counted.

``DEFAULT_MAX_SEQ_LEN = 4096``, measured on the 260 plan records of the shared gold data with the
SmolLM2 tokenizer (Korean costs it about 2 tokens per syllable; ``ttalkkac data inspect ...
--min-quality 0 --unscored include --tokenizer <demo model>``): answers are 517 / 1,477 / 2,232
/ 2,869 tokens (min / median / p95 / max, end token included) and the prompt without transcript
is 623. At the guide's 2,048 the median answer plus the scaffold alone overflows: 234 of 260
examples cannot keep even 256 transcript tokens, and truncating at 2,048 removed the answer of
nearly every example. At 3,072, 46 examples (18%) would keep under 512 transcript tokens. At
4,096 every example fits and keeps at least 577 transcript tokens (median 1,921). Longer
sequences buy little, since even at 8,192 only 37 of 260 transcripts fit whole, while CPU
training cost grows with sequence length. Tokenizers that spend fewer tokens on Korean (Qwen3)
keep more transcript within the same limit; raise it on a GPU when memory allows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ttalkkac.errors import DataError
from ttalkkac.plan import ProjectPlan
from ttalkkac.prompts import build_messages, chat_template_kwargs

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
DEFAULT_MAX_SEQ_LEN = 4096
MIN_MEETING_TOKENS = 256  # below this the model would learn to invent the plan
SHORTENED_MARKER = "\n...(이하 생략)"


def answer_text(plan: ProjectPlan) -> str:
    """The assistant answer for a plan (see ``ProjectPlan.to_json``: compact, as decoded)."""
    return plan.to_json()


class PlanRecord(Protocol):
    meeting_text: str
    plan: ProjectPlan


class AnswerTooLong(DataError):
    """The answer does not fit in ``max_seq_len`` beside the prompt and a minimal transcript."""

    code = "answer_too_long"


@dataclass
class TrainingExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on every prompt token
    attention_mask: list[int]
    shortened: bool
    prompt_tokens: int  # as trained (after shortening)
    full_prompt_tokens: int  # with the whole transcript
    answer_tokens: int  # answer + end-of-turn token
    meeting_text: str  # the transcript as trained (ends with SHORTENED_MARKER when shortened)
    record_id: str | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class ExampleStats:
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    records: int = 0
    examples: int = 0
    shortened: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    full_prompt_tokens: list[int] = field(default_factory=list)  # every record
    answer_tokens: list[int] = field(default_factory=list)  # every record
    example_tokens: list[int] = field(default_factory=list)  # built examples

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_seq_len": self.max_seq_len,
            "records": self.records,
            "examples": self.examples,
            "shortened": self.shortened,
            "dropped": dict(self.dropped),
            "prompt_tokens": percentiles(self.full_prompt_tokens),
            "answer_tokens": percentiles(self.answer_tokens),
            "example_tokens": percentiles(self.example_tokens),
        }


def percentiles(values: list[int], points: Iterable[int] = (0, 50, 90, 95, 99, 100)) -> dict:
    """Nearest-rank percentiles ({"p50": ...}); empty dict for no values."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n), at least 1
        out[f"p{p}"] = ordered[min(rank, len(ordered)) - 1]
    return out


class _Encoder:
    """Renders and tokenizes prompts and answers for one tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; use an instruction-tuned model")
        self.tokenizer = tokenizer
        self.kwargs = chat_template_kwargs(tokenizer)
        self.special_ids = set(tokenizer.all_special_ids)
        self._scaffold: int | None = None

    def ids(self, text: str) -> list[int]:
        # The chat template writes every special token itself (a BOS included where needed).
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, meeting: str) -> str:
        return self.tokenizer.apply_chat_template(
            build_messages(meeting), tokenize=False, add_generation_prompt=True, **self.kwargs
        )

    def end_text(self, meeting: str, prompt: str, answer: str) -> str:
        """What the template writes after the answer, found by rendering the whole conversation."""
        full = self.tokenizer.apply_chat_template(
            build_messages(meeting, answer), tokenize=False, **self.kwargs
        )
        if not full.startswith(prompt):
            raise ValueError(
                "the chat template does not render the generation prompt as a prefix of the "
                "conversation; label masking cannot find the answer"
            )
        rest = full[len(prompt) :]
        if not rest.startswith(answer):
            raise ValueError("the chat template changes the answer text; cannot mask labels")
        return rest[len(answer) :]

    def end_ids(self, end_text: str) -> list[int]:
        """The end-of-turn token(s): up to the first special token, without what follows it."""
        ids = self.ids(end_text)
        for i, token in enumerate(ids):
            if token in self.special_ids:
                return ids[: i + 1]
        if self.tokenizer.eos_token_id is not None:
            return [self.tokenizer.eos_token_id]
        raise ValueError("the chat template closes the answer with no special token")

    def scaffold_tokens(self) -> int:
        """Prompt tokens besides the transcript (measured with the cut marker alone)."""
        if self._scaffold is None:
            self._scaffold = len(self.ids(self.prompt(SHORTENED_MARKER.lstrip("\n"))))
        return self._scaffold

    def token_ends(self, meeting: str, n_tokens: int) -> list[int]:
        """Character end offsets of the meeting's first (at least) ``n_tokens`` tokens.

        Only a prefix is tokenized, doubled until it holds enough tokens (long transcripts are
        much longer than the budget). Slow tokenizers without offsets get an estimate.
        """
        size = max(n_tokens, 1) * 2
        while True:
            text = meeting[:size]
            try:
                enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            except (NotImplementedError, ValueError):
                ids = self.ids(meeting) or [0]
                return [round(len(meeting) * (i + 1) / len(ids)) for i in range(len(ids))]
            ends = [end for _start, end in enc["offset_mapping"]]
            if len(ends) > n_tokens or len(text) == len(meeting):
                return ends
            size *= 2


def shorten_meeting(meeting: str, cut: int) -> str:
    """The meeting's first ``cut`` characters, ended at a line break when one is near, + marker."""
    piece = meeting[:cut]
    newline = piece.rfind("\n")
    if newline > len(piece) // 2:
        piece = piece[:newline]
    return piece.rstrip() + SHORTENED_MARKER


class ExampleBuilder:
    """Builds masked examples for one tokenizer and one length limit (reuse it for many)."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
        min_meeting_tokens: int = MIN_MEETING_TOKENS,
    ) -> None:
        self.enc = _Encoder(tokenizer)
        self.max_seq_len = max_seq_len
        self.min_meeting_tokens = min_meeting_tokens

    def build(
        self, meeting_text: str, answer: str, *, record_id: str | None = None
    ) -> TrainingExample:
        enc, limit = self.enc, self.max_seq_len
        prompt = enc.prompt(meeting_text)
        end_ids = enc.end_ids(enc.end_text(meeting_text, prompt, answer))
        answer_ids = enc.ids(answer) + end_ids
        prompt_ids = enc.ids(prompt)
        full_prompt_tokens = len(prompt_ids)
        shortened = len(prompt_ids) + len(answer_ids) > limit
        if shortened:
            meeting_text, prompt_ids = self._shorten(
                meeting_text, len(answer_ids), full_prompt_tokens
            )
        return TrainingExample(
            input_ids=prompt_ids + answer_ids,
            labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
            attention_mask=[1] * (len(prompt_ids) + len(answer_ids)),
            shortened=shortened,
            prompt_tokens=len(prompt_ids),
            full_prompt_tokens=full_prompt_tokens,
            answer_tokens=len(answer_ids),
            meeting_text=meeting_text,
            record_id=record_id,
        )

    def _shorten(
        self, meeting_text: str, answer_tokens: int, full_prompt_tokens: int
    ) -> tuple[str, list[int]]:
        """The shortened transcript and its prompt ids, or ``AnswerTooLong``."""
        enc, limit = self.enc, self.max_seq_len
        detail = {"answer_tokens": answer_tokens, "full_prompt_tokens": full_prompt_tokens}
        budget = limit - answer_tokens - enc.scaffold_tokens()
        if budget < self.min_meeting_tokens:
            raise AnswerTooLong(
                f"the answer needs {answer_tokens} tokens; beside the {enc.scaffold_tokens()}-"
                f"token prompt that leaves {budget} of max_seq_len {limit} for the transcript "
                f"(minimum {self.min_meeting_tokens})",
                detail=detail,
            )
        n_tokens = budget
        ends = enc.token_ends(meeting_text, n_tokens)
        while True:  # token counts are not additive across the cut: verify, then correct
            shortened = shorten_meeting(meeting_text, ends[min(n_tokens, len(ends)) - 1])
            prompt_ids = enc.ids(enc.prompt(shortened))
            over = len(prompt_ids) + answer_tokens - limit
            if over <= 0:
                return shortened, prompt_ids
            n_tokens -= over
            if n_tokens < self.min_meeting_tokens:
                raise AnswerTooLong(
                    f"could not shorten the transcript to fit max_seq_len {limit}", detail=detail
                )


def build_example(
    tokenizer: Any,
    meeting_text: str,
    answer: str,
    *,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    min_meeting_tokens: int = MIN_MEETING_TOKENS,
    record_id: str | None = None,
) -> TrainingExample:
    """One masked training example; raises ``AnswerTooLong`` when the answer cannot fit."""
    builder = ExampleBuilder(
        tokenizer, max_seq_len=max_seq_len, min_meeting_tokens=min_meeting_tokens
    )
    return builder.build(meeting_text, answer, record_id=record_id)


def build_examples(
    tokenizer: Any,
    records: Iterable[PlanRecord],
    *,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    min_meeting_tokens: int = MIN_MEETING_TOKENS,
) -> tuple[list[TrainingExample], ExampleStats]:
    """Examples for every record that fits; drops (by reason) and shortenings are counted."""
    builder = ExampleBuilder(
        tokenizer, max_seq_len=max_seq_len, min_meeting_tokens=min_meeting_tokens
    )
    stats = ExampleStats(max_seq_len=max_seq_len)
    examples: list[TrainingExample] = []
    for record in records:
        stats.records += 1
        record_id = getattr(record, "record_id", None)
        try:
            example = builder.build(
                record.meeting_text, answer_text(record.plan), record_id=record_id
            )
        except AnswerTooLong as exc:
            stats.dropped[exc.code] += 1
            stats.answer_tokens.append(exc.detail["answer_tokens"])
            stats.full_prompt_tokens.append(exc.detail["full_prompt_tokens"])
            logger.info("dropped %s: %s", record_id, exc.message)
            continue
        stats.examples += 1
        stats.shortened += int(example.shortened)
        stats.full_prompt_tokens.append(example.full_prompt_tokens)
        stats.answer_tokens.append(example.answer_tokens)
        stats.example_tokens.append(len(example))
        examples.append(example)
    return examples, stats
