"""The engine interface shared by the vLLM and the transformers engines.

An engine turns one rendered prompt (token ids) into one completion, decoded under the plan's
JSON schema, optionally through a LoRA adapter. It batches concurrent calls itself: callers
simply ``await engine.generate(request)`` from many tasks at once. Everything above it is the
same for every engine: starting, swapping and routing engines in ``engines.EngineHost``,
validation and retries in ``retry``, admission, chunking and merge in ``service.PlanGenerator``.

Engines are swappable at run time (merged serving): ``EngineHost`` holds the serving engine in
one attribute and leases it per request, so a new engine can be started beside the old one and
swapped in atomically while requests already inside the old engine finish there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from ttalkkac.adapters import AdapterRef
from ttalkkac.inference.progress import TextCallback
from ttalkkac.inference.repetition import RepetitionStop


class FinishReason(StrEnum):
    """Why an engine ended an answer (vLLM's names)."""

    stop = "stop"  # the model ended it
    length = "length"  # max_tokens
    repetition = "repetition"  # it looped (EngineRequest.repetition_stop)
    abort = "abort"
    error = "error"


@dataclass(frozen=True)
class EngineRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    seed: int
    adapter: AdapterRef | None = None
    request_id: str = ""
    prompt_text: str | None = None
    repetition_penalty: float = 1.0
    json_schema: dict[str, Any] | None = None  # None: the plan schema (engine_json_schema)
    repetition_stop: RepetitionStop | None = None  # None: an answer may loop to max_tokens
    # Called with the answer so far as the engine decodes it (a streaming client watches it).
    # Optional for engines: one that generates a batch in one call (transformers) never calls
    # it, and the caller learns the answer from the result as usual.
    on_text: TextCallback | None = field(default=None, compare=False, repr=False)


@dataclass
class EngineResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    queue_ms: float = 0.0
    generate_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """What ``PlanGenerator`` needs from an engine."""

    name: str  # "vllm" | "transformers"
    base_model: str  # id or path of the served base weights
    max_model_len: int  # prompt + completion tokens one sequence may hold
    tokenizer: Any  # the Hugging Face tokenizer the prompts are rendered with
    weights: str  # the folder (or id) the weights were loaded from
    merged_adapter: AdapterRef | None  # the adapter folded into ``weights``, if any
    enable_lora: bool  # whether per-request adapters can be applied

    async def start(self) -> None:
        """Load the model (idempotent). Heavy work runs off the event loop."""

    async def stop(self) -> None:
        """Release the model; requests still running fail with ``EngineUnavailable``."""

    async def generate(self, request: EngineRequest) -> EngineResult:
        """One completion under the plan schema; batched with concurrent calls.

        Cancelling the call stops the request's work in the engine where the engine can (vLLM
        aborts it; transformers drops it if its batch has not started).
        """

    @property
    def ready(self) -> bool:
        """Loaded and not failed."""

    def inflight(self) -> int:
        """Requests inside the engine (queued or running)."""

    def loaded_adapters(self) -> list[str]:
        """Names of the adapters the engine has loaded (for /ready and tests)."""


@runtime_checkable
class ReloadableEngine(Engine, Protocol):
    """An engine that can load other weights of its architecture while it runs (vLLM)."""

    async def reload_weights(self, weights: str, merged_adapter: AdapterRef | None) -> None:
        """Load ``weights`` in place with no request inside; on failure the old ones serve."""


def allowed_max_lora_rank(rank: int) -> int:
    """vLLM accepts only some ``max_lora_rank`` values; the smallest one >= ``rank``."""
    for allowed in (1, 8, 16, 32, 64, 128, 256, 320, 512):
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is larger than any vLLM supports (512)")


async def run_blocking(func: Any, *args: Any) -> Any:
    """Run a blocking call in a thread so the event loop keeps serving."""
    return await asyncio.to_thread(func, *args)
