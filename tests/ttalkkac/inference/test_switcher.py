"""Merged serving's switch, on the real transformers engine (tiny model, two adapters).

What a user relies on: every request answered during a switch, each with the weights it asked
for; the switch ends on the adapter activated last; a failed switch keeps the old engine.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ttalkkac.adapters import ref_from_dir
from ttalkkac.errors import Conflict
from ttalkkac.inference.base import AdapterRef
from ttalkkac.inference.hf_engine import TransformersEngine
from ttalkkac.inference.service import PlanGenerator
from ttalkkac.inference.switcher import AdapterSwitcher
from ttalkkac.plan import ProjectPlan

MEETING = (
    "[00:01] Speaker_A: 리모컨 디자인을 논의하겠습니다.\n[00:02] Speaker_B: 시장 조사를 하겠습니다."
)


@pytest.fixture
def refs(tiny_adapters: list[Path], tmp_path: Path) -> list[AdapterRef]:
    return [
        ref_from_dir(shutil.copytree(src, tmp_path / name), name=name)
        for name, src in zip(("a", "b"), tiny_adapters, strict=True)
    ]


def make_switcher(base: Path, active: list[AdapterRef | None], **options) -> AdapterSwitcher:
    def build(weights: str | None, adapter: AdapterRef | None) -> TransformersEngine:
        return TransformersEngine(
            str(base),
            weights=weights,
            merged_adapter=adapter,
            max_model_len=2048,
            dtype="float32",
            **options,
        )

    generator = PlanGenerator(build(None, None), default_max_tokens=256, warmup=True)
    return AdapterSwitcher(
        generator, base_model=str(base), build_engine=build, read_active=lambda: active[0]
    )


async def _until(predicate, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_switch_under_load_answers_every_request_with_its_adapter(
    terse_model_dir: Path, refs: list[AdapterRef]
) -> None:
    a, b = refs
    active: list[AdapterRef | None] = [a]
    switcher = make_switcher(terse_model_dir, active)
    generator = switcher.generator
    asked = [a, b, None]

    async def scenario():
        await switcher.prepare()
        await generator.start()
        assert generator.engine.merged_adapter == a  # started on A's merged weights
        first_engine = generator.engine
        done: list[tuple[AdapterRef | None, object]] = []
        stop = asyncio.Event()

        async def client(i: int) -> None:
            while not stop.is_set():
                adapter = asked[(i + len(done)) % 3]
                done.append((adapter, await generator.generate(MEETING, adapter=adapter)))

        clients = [asyncio.create_task(client(i)) for i in range(4)]
        await _until(lambda: len(done) >= 4)
        active[0] = b
        switcher.request(b)
        before_switch = len(done)
        await switcher.wait()
        during = len(done) - before_switch
        await _until(lambda: len(done) >= before_switch + during + 4)  # some on the new one
        stop.set()
        await asyncio.gather(*clients)
        # Greedy answers from each route to B's weights: merged (new engine) and relative to
        # A's merged weights (a fresh engine like the first one).
        on_b = await generator.generate(MEETING, adapter=b, temperature=0)
        old_like = make_switcher(terse_model_dir, [a])
        await old_like.prepare()
        await old_like.generator.start()
        b_relative = await old_like.generator.generate(MEETING, adapter=b, temperature=0)
        await old_like.generator.stop()
        await generator.stop()
        return first_engine, done, during, on_b, b_relative

    first_engine, done, during, on_b, b_relative = asyncio.run(scenario())
    assert during > 0, "no request ran while the engine was switching"
    for adapter, result in done:
        assert isinstance(result.plan, ProjectPlan)
        assert result.adapter == (adapter.name if adapter else None)
    assert switcher.merged_adapter == b and switcher.switching_to is None
    assert switcher.switches == 1 and switcher.last_switch_s > 0 and switcher.error is None
    assert not first_engine.ready  # stopped once its last request finished
    assert {"a", "b", "base"} <= set(first_engine.loaded_adapters())
    assert on_b.plan == b_relative.plan  # same weights, whichever way they are reached


def test_watch_follows_the_registry_and_coalesces(
    terse_model_dir: Path, refs: list[AdapterRef]
) -> None:
    a, b = refs
    active: list[AdapterRef | None] = [None]
    switcher = make_switcher(terse_model_dir, active)
    switcher.sync_interval_s = 0.2

    async def scenario():
        await switcher.prepare()
        await switcher.generator.start()
        assert switcher.merged_adapter is None
        switcher.start_watching()
        switcher.request(a)
        switcher.request(b)  # while A's switch runs: it ends on B
        active[0] = b
        await switcher.wait()
        await _until(lambda: switcher.switching_to is None)
        on_b = switcher.merged_adapter
        active[0] = None  # deactivated through another replica
        await _until(lambda: switcher.merged_adapter is None and switcher.switching_to is None)
        await switcher.stop()
        await switcher.generator.stop()
        return on_b

    assert asyncio.run(scenario()) == b


def test_failed_switch_keeps_serving(terse_model_dir: Path, refs: list[AdapterRef]) -> None:
    a, _ = refs
    switcher = make_switcher(terse_model_dir, [None])
    (a.path / "adapter_model.safetensors").write_bytes(b"not safetensors")

    async def scenario():
        await switcher.prepare()
        await switcher.generator.start()
        switcher.request(a)
        await switcher.wait()
        result = await switcher.generator.generate(MEETING)
        await switcher.generator.stop()
        return result

    result = asyncio.run(scenario())
    assert isinstance(result.plan, ProjectPlan)
    assert switcher.merged_adapter is None and switcher.switches == 0
    assert "switch to a failed" in switcher.error


def test_merged_without_lora_refuses_other_adapters(
    terse_model_dir: Path, refs: list[AdapterRef]
) -> None:
    a, b = refs
    switcher = make_switcher(terse_model_dir, [a], enable_lora=False)

    async def scenario():
        await switcher.prepare()
        await switcher.generator.start()
        try:
            ok = await switcher.generator.generate(MEETING, adapter=a)
            with pytest.raises(Conflict, match=r"only the active adapter 'a'.*ENABLE_LORA"):
                await switcher.generator.generate(MEETING, adapter=b)
            with pytest.raises(Conflict, match="the base model is not served"):
                await switcher.generator.generate(MEETING)
        finally:
            await switcher.generator.stop()
        return ok

    assert asyncio.run(scenario()).adapter == "a"
