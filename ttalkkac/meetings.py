"""Meetings: plain text or utterance lists, rendered for the prompt, and the original chunking."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

CHUNK_CHARS = 5000
CHUNK_OVERLAP = 512


class Utterance(BaseModel):
    """One utterance of a transcript, as in ``05_final_result.json``."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    timestamp: str | None = Field(default=None, max_length=32, examples=["06:14"])
    speaker: str | None = Field(default=None, max_length=200, examples=["Speaker_C"])
    text: str = Field(min_length=1, max_length=100_000, examples=["리모컨 디자인을 정합시다."])

    @field_validator("timestamp", "speaker", mode="before")
    @classmethod
    def _none_if_blank(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def render(self) -> str:
        """``[timestamp] speaker: text`` as the original project did, without ``[None]``."""
        head = f"[{self.timestamp}] " if self.timestamp else ""
        speaker = f"{self.speaker}: " if self.speaker else ""
        return f"{head}{speaker}{self.text}"


def render_utterances(utterances: list[Utterance]) -> str:
    return "\n".join(u.render() for u in utterances)


def meeting_text(meeting: str | list[Utterance] | list[dict]) -> str:
    """The prompt text of a meeting given as plain text or as utterances."""
    if isinstance(meeting, str):
        return meeting.strip()
    utterances = [u if isinstance(u, Utterance) else Utterance.model_validate(u) for u in meeting]
    return render_utterances(utterances)


@dataclass(frozen=True)
class Chunk:
    index: int  # 1-based, as in the gold records' chunk_info.chunk_index
    total: int
    start: int  # character offsets into the meeting text
    end: int
    text: str


def chunk_text(
    text: str, chunk_chars: int = CHUNK_CHARS, overlap: int = CHUNK_OVERLAP
) -> list[Chunk]:
    """Split text into chunks with the original project's rules.

    Chunks of ``chunk_chars`` characters; a chunk that is not the last ends after the last
    ``.`` or newline found past its middle (else at the hard limit); the next chunk starts
    ``overlap`` characters before the previous end.
    """
    if chunk_chars <= overlap * 2:
        raise ValueError("chunk_chars must exceed twice the overlap")
    if len(text) <= chunk_chars:
        return [Chunk(1, 1, 0, len(text), text)]
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        end = min(start + chunk_chars, len(text))
        if end < len(text):
            window = text[start:end]
            cut = max(window.rfind("."), window.rfind("\n"))
            if cut > chunk_chars // 2:
                end = start + cut + 1
        spans.append((start, end))
        if end >= len(text):
            break
        start = end - overlap
    return [Chunk(i, len(spans), s, e, text[s:e]) for i, (s, e) in enumerate(spans, start=1)]
