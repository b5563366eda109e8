"""The Python API: ``TtalkkacInference``, the counterpart of the guide's ``TtalkkacQwenInference``.

    from ttalkkac.inference import TtalkkacInference

    inference = TtalkkacInference(adapter="var/jobs/job_x/adapter", engine="vllm").load_model()
    plan = inference.generate_project_plan("[00:01] Speaker_A: 오늘은 리모컨 디자인을 ...")
    print(plan.project_name, plan.execution_plan)
    inference.close()

It needs no running service: the engine runs in this process. Its coroutines run on a private
event loop in a background thread, so the same calls work from a script and from a notebook
(whose own loop is already running). vLLM's CPU build starts its engine in a spawned process:
scripts that use ``engine="vllm"`` need an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from ttalkkac.adapters import AdapterRef, resolve_local_adapter
from ttalkkac.hardware import resolve_base_model
from ttalkkac.inference.service import PlanGenerator, PlanResult
from ttalkkac.meetings import Utterance
from ttalkkac.plan import ProjectPlan
from ttalkkac.settings import Settings, get_settings

T = TypeVar("T")

Meeting = str | list[Utterance] | list[dict[str, Any]]


class TtalkkacInference:
    """Load a base model (and optionally a LoRA adapter) with either engine; generate plans.

    ``base_model``: id or folder (default: BASE_MODEL, else the demo model on a CPU host).
    ``adapter``: an adapter folder, a registry name, ``"base"``, or None for the registry's active
    adapter (the base model when there is none). ``engine``: ``"vllm"`` or ``"transformers"``.
    """

    def __init__(
        self,
        base_model: str | None = None,
        adapter: str | None = None,
        *,
        engine: Literal["vllm", "transformers"] | None = None,
        settings: Settings | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.engine_kind = engine or self.settings.serving_engine
        self.base_model_arg = base_model
        self.adapter_arg = adapter
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.generator: PlanGenerator | None = None
        self.adapter: AdapterRef | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def load_model(self) -> TtalkkacInference:
        """Start the engine and resolve the adapter (idempotent); returns ``self``."""
        if self.generator is not None:
            return self
        from ttalkkac.inference.factory import build_generator

        base = self.base_model_arg or resolve_base_model(self.settings)
        self.adapter = resolve_local_adapter(
            self.adapter_arg, self.settings, served_base_model=base
        )
        generator = build_generator(self.settings, base_model=base, kind=self.engine_kind)
        generator.engines.warmup_enabled = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ttalkkac-inference", daemon=True
        )
        self._thread.start()
        self._run(generator.start())
        self.generator = generator
        return self

    def close(self) -> None:
        if self._loop is None:
            return
        if self.generator is not None:
            self._run(self.generator.stop())
            self.generator = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> TtalkkacInference:
        return self.load_model()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # --- generation ----------------------------------------------------------------------

    def generate(self, meeting: Meeting, **options: Any) -> PlanResult:
        """The validated plan with usage, timings, chunk count and warnings."""
        self.load_model()
        assert self.generator is not None
        options.setdefault("max_tokens", self.max_tokens)
        options.setdefault("temperature", self.temperature)
        return self._run(self.generator.generate(meeting, adapter=self.adapter, **options))

    def generate_project_plan(self, meeting: Meeting, **options: Any) -> ProjectPlan:
        """The validated ``ProjectPlan`` for a meeting (text or utterance list)."""
        return self.generate(meeting, **options).plan

    def generate_many(self, meetings: list[Meeting], **options: Any) -> list[PlanResult]:
        """Several meetings at once: the engine batches them."""
        self.load_model()
        assert self.generator is not None
        generator = self.generator
        options.setdefault("max_tokens", self.max_tokens)
        options.setdefault("temperature", self.temperature)

        async def run_all() -> list[PlanResult]:
            return list(
                await asyncio.gather(
                    *(generator.generate(m, adapter=self.adapter, **options) for m in meetings)
                )
            )

        return self._run(run_all())
