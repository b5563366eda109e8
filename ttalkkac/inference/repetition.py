"""Ending an answer that loops, instead of letting it run to ``max_tokens``.

A small or lightly fine-tuned model can fall into a loop inside a JSON string (the same
sentence, again and again) and then spends the whole answer budget on it: the demo adapter did
so on 14 of 24 validation meetings, 2,048 tokens each, before the compact retry made a plan
(bench/results/20261202-054921-quality.md). Such an answer can never validate, so every token
after the loop began is wasted. ``RepetitionStop`` ends it as soon as its last tokens are one
pattern repeated ``min_count`` times; the generator then retries it like an answer cut off at
``max_tokens`` (``retry.generate_chunk``).

The vLLM engine hands the same rule to vLLM's scheduler (``RepetitionDetectionParams``, checked
after every token); the transformers engine checks it in a stopping criterion with ``repeats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RepetitionStop:
    """End an answer whose last tokens are a pattern of 1..``max_pattern`` tokens repeated
    ``min_count`` times in a row."""

    max_pattern: int
    min_count: int

    def __post_init__(self) -> None:
        if self.max_pattern < 1 or self.min_count < 2:
            raise ValueError("a repetition stop needs max_pattern >= 1 and min_count >= 2")

    def repeats(self, tokens: Sequence[int]) -> bool:
        """Whether ``tokens`` ends in a pattern repeated ``min_count`` times (vLLM's rule)."""
        for size in range(1, self.max_pattern + 1):
            if size * self.min_count > len(tokens):
                return False
            if all(
                tokens[-n] == tokens[-(size * m + n)]
                for n in range(1, size + 1)
                for m in range(1, self.min_count)
            ):
                return True
        return False

    def describe(self) -> str:
        return f"a pattern of at most {self.max_pattern} tokens repeated {self.min_count} times"
