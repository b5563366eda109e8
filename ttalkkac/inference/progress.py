"""Progress of one plan request while it runs: what a streaming client (``/generate/stream``,
the console) is shown before the validated plan arrives.

``PlanGenerator.generate(progress=callback)`` calls ``callback`` with ``PlanProgress`` values;
``PlanGenerator.stream`` turns the same calls into an async iterator. The events come from
three layers, each reporting what only it knows: the generator (admitted, the meeting's
chunks), the retry policy (an answer that did not validate, a chunk's validated answer) and the
engine (the answer so far, as the vLLM engine decodes it; the transformers engine generates a
batch in one call and reports nothing until the answer is complete).

Token updates are throttled here, at the source, to one per chunk every ``min_interval_s``: the
vLLM engine reports every decoding step, and each update carries the chunk's whole answer so
far (a client can show it without keeping state), so unthrottled a 2,000-token plan would be
2,000 copies of a growing text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

# Four token updates a second per chunk: smooth enough to watch, small enough to send.
MIN_INTERVAL_S = 0.25


class ProgressKind(StrEnum):
    admitted = "admitted"  # inside the generator (counted in waiting), before the engine
    planned = "planned"  # the meeting is split: ``chunks`` is known
    tokens = "tokens"  # a chunk's answer grew; ``text`` is that answer so far
    retry = "retry"  # a chunk's answer did not validate; ``message`` says why, a new one starts
    chunk_done = "chunk_done"  # a chunk's answer validated; ``text`` is the whole answer


@dataclass(frozen=True)
class PlanProgress:
    kind: ProgressKind
    chunks: int = 0  # chunks of the meeting; 0 until planned
    chunk: int = 0  # 1-based; 0 for the request-wide kinds (admitted, planned)
    attempt: int = 0  # 1 for the first answer of the chunk, 2 for its retry
    tokens: int = 0  # completion tokens of the whole request so far: every chunk and attempt
    text: str = ""  # tokens / chunk_done: the chunk's answer (partial JSON until chunk_done)
    message: str = ""  # retry: why the answer was refused


ProgressCallback = Callable[[PlanProgress], None]
# What an engine calls as its answer grows: (the answer so far, its completion tokens).
TextCallback = Callable[[str, int], None]


class ProgressTracker:
    """One request's progress: token counts over its concurrent chunks, throttled updates.

    ``emit`` is called on the event loop, synchronously; it must not block or raise (the
    stream's is a queue's ``put_nowait``).
    """

    def __init__(self, emit: ProgressCallback, *, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self._emit = emit
        self.min_interval_s = min_interval_s
        self.chunks = 0
        self._settled: dict[int, int] = {}  # chunk -> tokens of its finished attempts
        self._current: dict[int, int] = {}  # chunk -> tokens of its running attempt
        self._last_sent: dict[int, float] = {}

    @property
    def tokens(self) -> int:
        return sum(self._settled.values()) + sum(self._current.values())

    def admitted(self) -> None:
        self._emit(PlanProgress(ProgressKind.admitted))

    def planned(self, chunks: int) -> None:
        self.chunks = chunks
        self._emit(PlanProgress(ProgressKind.planned, chunks=chunks, tokens=self.tokens))

    def chunk(self, chunk: int) -> ChunkReporter:
        return ChunkReporter(self, chunk)

    # --- called by ChunkReporter ------------------------------------------------------------

    def _text(self, chunk: int, attempt: int, text: str, tokens: int) -> None:
        self._current[chunk] = tokens
        now = time.monotonic()
        if now - self._last_sent.get(chunk, float("-inf")) < self.min_interval_s:
            return
        self._last_sent[chunk] = now
        self._send(ProgressKind.tokens, chunk, attempt, text=text)

    def _ended(self, kind: ProgressKind, chunk: int, attempt: int, tokens: int, **fields) -> None:
        # The engine's result is the authority on the attempt's tokens, not its last update.
        self._settled[chunk] = self._settled.get(chunk, 0) + tokens
        self._current.pop(chunk, None)
        self._last_sent.pop(chunk, None)  # the next attempt's first update goes out at once
        self._send(kind, chunk, attempt, **fields)

    def _send(self, kind: ProgressKind, chunk: int, attempt: int, **fields: str) -> None:
        self._emit(
            PlanProgress(
                kind, chunks=self.chunks, chunk=chunk, attempt=attempt, tokens=self.tokens, **fields
            )
        )


class ChunkReporter:
    """What ``retry.generate_chunk`` reports for one chunk (1-based ``chunk``)."""

    def __init__(self, tracker: ProgressTracker, chunk: int) -> None:
        self._tracker = tracker
        self.chunk = chunk

    def on_text(self, attempt: int) -> TextCallback:
        """The engine's callback for ``attempt`` of this chunk."""

        def report(text: str, tokens: int) -> None:
            self._tracker._text(self.chunk, attempt, text, tokens)

        return report

    def retry(self, attempt: int, tokens: int, message: str) -> None:
        self._tracker._ended(ProgressKind.retry, self.chunk, attempt, tokens, message=message)

    def done(self, attempt: int, tokens: int, text: str) -> None:
        self._tracker._ended(ProgressKind.chunk_done, self.chunk, attempt, tokens, text=text)
