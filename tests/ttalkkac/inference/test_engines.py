"""EngineHost on the real transformers engine (tiny model): leases, swap, restart, LoRA engine.

What the service relies on: a swap never stops an engine under a request; a dead engine comes
back by itself; in merged serving each adapter reaches the engine whose weights serve it exactly
(the merged one, else the LoRA engine, started on first use), and a LoRA engine that cannot start
or dies is reported without taking the merged engine down.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ttalkkac.adapters import AdapterRef, ref_from_dir
from ttalkkac.errors import Conflict, EngineUnavailable
from ttalkkac.inference.base import Engine, EngineRequest, EngineResult
from ttalkkac.inference.engines import EngineHost
from ttalkkac.inference.hf_engine import TransformersEngine
from ttalkkac.inference.merge import ensure_merged
from ttalkkac.prompts import render_prompt

MEETING = "[00:01] Speaker_A: 리모컨 디자인을 논의하겠습니다."


@pytest.fixture(scope="module")
def refs(tiny_adapters: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[AdapterRef]:
    root = tmp_path_factory.mktemp("engines-adapters")
    return [
        ref_from_dir(shutil.copytree(src, root / name), name=name)
        for name, src in zip(("a", "b"), tiny_adapters, strict=True)
    ]


@pytest.fixture(scope="module")
def merged_a(terse_model_dir: Path, refs: list[AdapterRef]) -> Path:
    """Adapter ``a`` merged into the terse model's weights (built once)."""
    return ensure_merged(str(terse_model_dir), refs[0])


def engine_on(base: Path, **options) -> TransformersEngine:
    return TransformersEngine(str(base), max_model_len=2048, dtype="float32", **options)


def merged_engine(base: Path, weights: Path, adapter: AdapterRef) -> TransformersEngine:
    return engine_on(base, weights=str(weights), merged_adapter=adapter, enable_lora=False)


async def answer(engine: Engine, adapter: AdapterRef | None = None) -> EngineResult:
    """A short generation (its JSON cut off: only the engine's work is checked here)."""
    prompt = render_prompt(engine.tokenizer, MEETING)
    ids = engine.tokenizer.encode(prompt, add_special_tokens=False)
    return await engine.generate(
        EngineRequest(ids, max_tokens=8, temperature=0.0, seed=0, adapter=adapter)
    )


async def _until(predicate, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_swap_keeps_leased_engines_until_their_lease_returns(terse_model_dir: Path) -> None:
    old, new = engine_on(terse_model_dir), engine_on(terse_model_dir)

    async def scenario():
        host = EngineHost(old, warmup=True)
        await host.start()
        leased, release = asyncio.Event(), asyncio.Event()

        async def in_flight() -> tuple[Engine, EngineResult]:
            async with host.lease(None) as (engine, apply):
                assert apply is None
                leased.set()
                await release.wait()
                return engine, await answer(engine)

        request = asyncio.create_task(in_flight())
        await leased.wait()
        swap = asyncio.create_task(host.swap(new))
        await _until(lambda: host.engine is new)  # started and warmed up: takes new leases
        async with host.lease(None) as (engine, _):
            assert engine is new
            await answer(engine)
        await asyncio.sleep(0.1)
        assert not swap.done() and old.ready  # still leased
        release.set()
        engine, result = await request
        await swap
        after = host.status()
        await host.stop()
        return engine, result, after

    engine, result, after = asyncio.run(scenario())
    assert engine is old and result.completion_tokens > 0  # answered on the engine it leased
    assert not old.ready and after == "ready"
    assert old.batches >= 2 and new.batches >= 2  # warm-up, then the requests


def test_a_swap_that_cannot_start_keeps_the_old_engine(terse_model_dir, tmp_path) -> None:
    old, broken = engine_on(terse_model_dir), engine_on(tmp_path / "no-such-model")

    async def scenario():
        host = EngineHost(old, warmup=False)
        await host.start()
        with pytest.raises(OSError):
            await host.swap(broken)
        async with host.lease(None) as (engine, _):
            result = await answer(engine)
        await host.stop()
        return host, engine, result

    host, engine, result = asyncio.run(scenario())
    assert engine is old and result.completion_tokens > 0 and not broken.ready
    with pytest.raises(RuntimeError, match="set_engine after start"):
        host.set_engine(broken)


def test_a_dead_engine_is_restarted(terse_model_dir: Path) -> None:
    engine = engine_on(terse_model_dir)

    async def scenario():
        host = EngineHost(engine, warmup=True)
        await host.start()
        await engine.stop()  # as if its process had crashed
        states = [host.status()]
        with pytest.raises(EngineUnavailable):
            async with host.lease(None) as (leased, _):
                await answer(leased)
        states.append(host.status())
        with pytest.raises(EngineUnavailable, match=r"not ready \(restarting\)"):
            host.require_ready()
        await _until(lambda: host.state == "ready")
        async with host.lease(None) as (leased, _):
            result = await answer(leased)
        await host.stop()
        return states, leased, result

    states, leased, result = asyncio.run(scenario())
    assert states == ["engine_dead", "restarting"]
    assert leased is engine and result.completion_tokens > 0  # the same engine, started again


def test_merged_serving_routes_each_adapter_to_the_engine_that_serves_it(
    terse_model_dir: Path, refs: list[AdapterRef], merged_a: Path
) -> None:
    a, b = refs
    merged = merged_engine(terse_model_dir, merged_a, a)
    built: list[TransformersEngine] = []

    def build_lora() -> TransformersEngine:
        built.append(engine_on(terse_model_dir))
        return built[-1]

    async def scenario():
        host = EngineHost(merged, warmup=False, build_lora_engine=build_lora)
        await host.start()
        statuses = [host.lora_engine_status()]
        async with host.lease(a) as (engine, apply):
            assert (engine, apply) == (merged, None)  # the weights are what was asked for
        async with host.lease(b) as (engine, apply):
            assert engine is host.lora_engine and apply == b
            await answer(engine, apply)
        async with host.lease(None) as (engine, apply):
            assert engine is host.lora_engine and apply is None  # the base, while a is merged
        statuses.append(host.lora_engine_status())
        loaded = host.loaded_adapters()
        # A LoRA engine that dies under a request is dropped; the next request starts another.
        with pytest.raises(EngineUnavailable):
            async with host.lease(b) as (engine, apply):
                await engine.stop()  # as if its process had crashed
                await answer(engine, apply)
        statuses.append(host.lora_engine_status())
        async with host.lease(b) as (engine, apply):
            assert engine is built[1]
        statuses.append(host.lora_engine_status())
        await host.stop()
        return statuses, loaded

    statuses, loaded = asyncio.run(scenario())
    assert statuses == ["not started", "ready", "failed: the LoRA engine died", "ready"]
    assert loaded == ["a", "b"]  # merged into the weights, and applied by the LoRA engine
    assert len(built) == 2 and not merged.ready and not built[1].ready  # stopped with the host


def test_merged_without_lora_refuses_other_adapters(
    terse_model_dir: Path, refs: list[AdapterRef], merged_a: Path
) -> None:
    a, b = refs

    async def scenario():
        host = EngineHost(merged_engine(terse_model_dir, merged_a, a), warmup=False)
        await host.start()
        try:
            async with host.lease(a) as (engine, apply):
                result = await answer(engine, apply)
            with pytest.raises(Conflict, match=r"only the active adapter 'a'.*ENABLE_LORA"):
                async with host.lease(b):
                    pass
            with pytest.raises(Conflict, match="the base model is not served"):
                async with host.lease(None):
                    pass
            return host.lora_engine_status(), result
        finally:
            await host.stop()

    status, result = asyncio.run(scenario())
    assert status == "off" and result.completion_tokens > 0


def test_lora_engine_failure_is_reported_and_the_merged_engine_keeps_serving(
    terse_model_dir: Path, refs: list[AdapterRef], merged_a: Path, tmp_path: Path
) -> None:
    a, b = refs
    merged = merged_engine(terse_model_dir, merged_a, a)

    async def scenario():
        host = EngineHost(
            merged, warmup=True, build_lora_engine=lambda: engine_on(tmp_path / "no-such-model")
        )
        await host.start()
        try:
            with pytest.raises(EngineUnavailable, match=r"LoRA engine .* failed to start"):
                async with host.lease(b):
                    pass
            status = host.lora_engine_status()
            async with host.lease(a) as (engine, apply):
                result = await answer(engine, apply)
            return host, status, engine, result
        finally:
            await host.stop()

    host, status, engine, result = asyncio.run(scenario())
    assert status.startswith("failed: ") and host.lora_engine is None
    assert engine is merged and result.completion_tokens > 0
