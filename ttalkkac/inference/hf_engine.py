"""The transformers + PEFT engine: the same interface as vLLM, as a careful user would write it.

- The model is loaded once; adapters are loaded once each (``PeftModel.load_adapter``) and kept
  (least recently used ones unloaded past ``max_loras``).
- Concurrent requests are batched dynamically: one worker thread takes the first waiting request,
  collects whatever else arrives within ``batch_wait_ms`` (up to ``max_batch_size``), and runs one
  left-padded ``generate`` for them. Requests for different adapters share the batch through
  PEFT's mixed-adapter inference (``adapter_names=[...]``, ``"__base__"`` for the base model).
- Decoding is constrained by the same JSON schema as vLLM (xgrammar's transformers logits
  processor, one grammar matcher per row, compact separators as vLLM uses them).
- The worker thread keeps the event loop free; results come back through futures.

Differences from vLLM, inherent to ``generate``: a batch runs until its longest member finishes
(no continuous batching), shares one temperature and repetition penalty (other values run in
separate batches), and sampling seeds are per batch, not per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttalkkac.adapters import AdapterRef
from ttalkkac.errors import EngineUnavailable, InvalidInput
from ttalkkac.inference.base import EngineRequest, EngineResult, FinishReason
from ttalkkac.inference.repetition import RepetitionStop
from ttalkkac.inference.schema import engine_json_schema

logger = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class _Pending:
    request: EngineRequest
    future: asyncio.Future[EngineResult]
    loop: asyncio.AbstractEventLoop
    submitted: float = field(default_factory=time.perf_counter)


_STOP = object()


class TransformersEngine:
    name = "transformers"

    def __init__(
        self,
        base_model: str,
        *,
        max_model_len: int = 8192,
        max_loras: int = 4,
        max_batch_size: int = 16,
        batch_wait_ms: float = 10.0,
        dtype: str = "bfloat16",
        prepare: Callable[[], object] | None = None,
        weights: str | None = None,
        merged_adapter: AdapterRef | None = None,
        enable_lora: bool = True,
    ) -> None:
        self.base_model = str(base_model)
        # Merged mode: the weights loaded are ``base_model`` with ``merged_adapter`` folded in.
        self.weights = str(weights or base_model)
        self.merged_adapter = merged_adapter
        self.enable_lora = enable_lora
        self.requested_max_model_len = max_model_len
        self.max_model_len = max_model_len
        self.max_loras = max_loras
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.dtype = dtype
        self.tokenizer: Any = None
        self._prepare = prepare  # builds the base model's folder when it is the demo model
        self._model: Any = None  # the base model, or a PeftModel once an adapter is loaded
        self._compiler: Any = None
        self._grammars: dict[str | None, Any] = {}  # schema JSON (None: the plan's) -> grammar
        self._adapters: OrderedDict[tuple[str, str, str], str] = OrderedDict()  # key -> peft name
        self._adapter_names: dict[str, str] = {}  # peft name -> adapter name
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._inflight = 0
        self._lock = threading.Lock()
        self._start_lock = asyncio.Lock()
        self._failed: BaseException | None = None
        self._counter = 0
        self._stop_ids: list[int] = []
        self.batches = 0  # generate() calls so far (for metrics and tests)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._thread is not None:
                return
            started = time.perf_counter()
            if self._prepare is not None:
                await asyncio.to_thread(self._prepare)
            await asyncio.to_thread(self._load)
            self._thread = threading.Thread(
                target=self._worker, name="ttalkkac-hf-engine", daemon=True
            )
            self._thread.start()
            logger.info(
                "transformers engine ready: %s (dtype=%s, max_model_len=%d) in %.1f s",
                self.base_model,
                self.dtype,
                self.max_model_len,
                time.perf_counter() - started,
            )

    def _load(self) -> None:
        import torch
        import xgrammar as xgr
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.weights, padding_side="left")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        dtype = getattr(torch, self.dtype) if self.dtype != "auto" else "auto"
        model = AutoModelForCausalLM.from_pretrained(self.weights, dtype=dtype)
        model.eval()
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_model_len = min(self.requested_max_model_len, int(limit or 10**9))
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model.config.vocab_size)
        self._compiler = xgr.GrammarCompiler(info)
        self._grammar_for(None)
        self._stop_ids = sorted(set(info.stop_token_ids) | {tokenizer.eos_token_id})
        self.tokenizer = tokenizer
        self._model = model

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join)
        self._model = None

    @property
    def ready(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._failed is None

    def inflight(self) -> int:
        return self._inflight

    def loaded_adapters(self) -> list[str]:
        names = set(self._adapter_names.values())
        if self.merged_adapter is not None:
            names.add(self.merged_adapter.name)
        return sorted(names)

    # --- requests ------------------------------------------------------------------------

    async def generate(self, request: EngineRequest) -> EngineResult:
        if not self.ready:
            raise EngineUnavailable("the transformers engine is not running", retry_after_s=10)
        if request.adapter is not None and not self.enable_lora:
            raise InvalidInput(
                f"adapter {request.adapter.name!r}: this engine was started without LoRA support"
            )
        if len(request.prompt_ids) + request.max_tokens > self.max_model_len:
            raise InvalidInput(
                f"prompt ({len(request.prompt_ids)} tokens) plus max_tokens "
                f"({request.max_tokens}) exceed the context of {self.max_model_len} tokens"
            )
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future(), loop)
        with self._lock:
            self._inflight += 1
        try:
            self._queue.put(pending)
            return await pending.future
        finally:
            with self._lock:
                self._inflight -= 1

    # --- the worker thread ---------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._drain("the transformers engine stopped")
                return
            batch = [first]
            deadline = time.perf_counter() + self.batch_wait_s
            stop = False
            while len(batch) < self.max_batch_size:
                try:
                    item = self._queue.get(timeout=max(deadline - time.perf_counter(), 0))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            batch = [p for p in batch if not p.future.cancelled()]
            for group in _by_sampling(batch):
                self._run_group(group)
            if stop:
                self._drain("the transformers engine stopped")
                return

    def _drain(self, message: str) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _resolve(item, error=EngineUnavailable(message, retry_after_s=10))

    def _run_group(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = self._generate_batch([p.request for p in group])
        except Exception as exc:  # one bad batch must not kill the worker
            logger.exception("transformers batch of %d failed", len(group))
            error: Exception = (
                exc
                if isinstance(exc, InvalidInput)
                else EngineUnavailable(
                    f"generation failed: {type(exc).__name__}: {exc}", retry_after_s=5
                )
            )
            for pending in group:
                _resolve(pending, error=error)
            return
        finished = time.perf_counter()
        self.batches += 1
        for pending, result in zip(group, results, strict=True):
            result.queue_ms = (started - pending.submitted) * 1000
            result.generate_ms = (finished - started) * 1000
            _resolve(pending, result=result)

    def _adapter_name(self, adapter: AdapterRef) -> str:
        """Load the adapter once (PEFT), keep at most ``max_loras`` loaded; its PEFT name."""
        from peft import PeftModel

        name = self._adapters.get(adapter.key)
        if name is not None:
            self._adapters.move_to_end(adapter.key)
            return name
        self._counter += 1
        name = f"adapter_{self._counter}"
        if not isinstance(self._model, PeftModel):
            self._model = PeftModel.from_pretrained(
                self._model, str(adapter.path), adapter_name=name, is_trainable=False
            )
        else:
            self._model.load_adapter(str(adapter.path), adapter_name=name, is_trainable=False)
        self._model.eval()
        self._adapters[adapter.key] = name
        self._adapter_names[name] = adapter.name
        logger.info("loaded adapter %s from %s as %s", adapter.name, adapter.path, name)
        return name

    def _evict(self, keep: set[str]) -> None:
        while len(self._adapters) > self.max_loras:
            key, name = next(iter(self._adapters.items()))
            if name in keep:
                break
            self._model.delete_adapter(name)
            del self._adapters[key]
            self._adapter_names.pop(name, None)

    def _grammar_for(self, schema: dict[str, Any] | None) -> Any:
        """The compiled grammar of ``schema`` (None: the plan's), compiled once."""
        # Key order matters: properties are generated in schema order. The plan's own grammar
        # is keyed by None, so the common request serializes nothing.
        key = None if schema is None else json.dumps(schema)
        grammar = self._grammars.get(key)
        if grammar is None:
            # The grammar vLLM builds with disable_any_whitespace: compact separators.
            grammar = self._compiler.compile_json_schema(
                key or json.dumps(engine_json_schema()), any_whitespace=False, separators=(",", ":")
            )
            self._grammars[key] = grammar
        return grammar

    def _generate_batch(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        import torch
        from peft import PeftModel
        from xgrammar.contrib.hf import LogitsProcessor

        names = [self._adapter_name(r.adapter) if r.adapter else BASE_ADAPTER for r in requests]
        self._evict(set(names))
        tok = self.tokenizer
        width = max(len(r.prompt_ids) for r in requests)
        pad = tok.pad_token_id
        input_ids = torch.tensor(
            [[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in requests]
        )
        attention = torch.tensor(
            [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests]
        )
        temperature = requests[0].temperature
        max_new = max(r.max_tokens for r in requests)
        grammar = LogitsProcessor([self._grammar_for(r.json_schema) for r in requests])
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "pad_token_id": pad,
            "eos_token_id": self._stop_ids,
            "logits_processor": [grammar],
            "top_k": None,
            "top_p": None,
            "repetition_penalty": requests[0].repetition_penalty,
        }
        loops = _LoopCriterion([r.repetition_stop for r in requests], width, grammar)
        if loops.active:
            kwargs["stopping_criteria"] = [loops]
        if temperature > 0:
            kwargs |= {"do_sample": True, "temperature": temperature}
            torch.manual_seed(requests[0].seed)
        else:
            kwargs |= {"do_sample": False, "temperature": None}
        if isinstance(self._model, PeftModel):
            kwargs["adapter_names"] = names
        with torch.inference_mode():
            output = self._model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        results = []
        rows = zip(output[:, width:].tolist(), requests, strict=True)
        for index, (row, request) in enumerate(rows):
            tokens = row[: min(loops.ended_at.get(index, request.max_tokens), request.max_tokens)]
            stop_at = next((i for i, t in enumerate(tokens) if t in self._stop_ids), None)
            stopped = stop_at is not None
            if stop_at is not None:
                tokens = tokens[:stop_at]
            reason = FinishReason.stop if stopped else FinishReason.length
            if not stopped and index in loops.ended_at:
                reason = FinishReason.repetition
            results.append(
                EngineResult(
                    text=tok.decode(tokens, skip_special_tokens=True),
                    prompt_tokens=len(request.prompt_ids),
                    completion_tokens=len(tokens) + (1 if stopped else 0),
                    finish_reason=reason,
                )
            )
        return results


class _LoopCriterion:
    """transformers stopping criterion: ends each row whose answer loops (its RepetitionStop).

    ``ended_at`` maps a row to the length of its answer when it was ended, so the caller can cut
    the row there (generate pads the rest) and report ``FinishReason.repetition``.
    """

    def __init__(self, stops: list[RepetitionStop | None], prompt_width: int, grammar: Any) -> None:
        self.stops = stops
        self.prompt_width = prompt_width
        self.grammar = grammar
        self.ended_at: dict[int, int] = {}
        self.active = any(stops)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row, stop in enumerate(self.stops):
            if stop is None:
                continue
            if row in self.ended_at:
                done[row] = True
                continue
            answer = input_ids[row, self.prompt_width :].tolist()
            if stop.repeats(answer[-stop.max_pattern * stop.min_count :]):
                self.ended_at[row] = len(answer)
                done[row] = True
                # generate pads an ended row from now on, and xgrammar's processor would refuse
                # the pad token as the row's next JSON token: it skips rows whose matcher has
                # terminated (as after an end-of-sequence token), so this one reads terminated.
                self.grammar.matchers[row] = _EndedMatcher()
        return done


class _EndedMatcher:
    """Stands in for the xgrammar matcher of a row ended by ``_LoopCriterion``."""

    def is_terminated(self) -> bool:
        return True


def _by_sampling(batch: list[_Pending]) -> list[list[_Pending]]:
    """Requests that share one ``generate`` call: same temperature and repetition penalty."""
    groups: dict[tuple[float, float], list[_Pending]] = {}
    for pending in batch:
        key = (pending.request.temperature, pending.request.repetition_penalty)
        groups.setdefault(key, []).append(pending)
    return list(groups.values())


def _resolve(
    pending: _Pending, *, result: EngineResult | None = None, error: Exception | None = None
) -> None:
    def settle() -> None:
        if pending.future.done():
            return
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(result)  # type: ignore[arg-type]

    # A closed loop means nobody is waiting for this result any more.
    with contextlib.suppress(RuntimeError):
        pending.loop.call_soon_threadsafe(settle)
