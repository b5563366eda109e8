"""Merged serving's switch, on the real transformers engine (tiny model, two adapters).

The transformers engine cannot load weights in place, so these switches take the two-engine
path (a new engine started beside the serving one, then swapped in); the in-place path of the
vLLM engine is tested on a real vLLM app in ``tests/app/test_merged_serving.py``.

What a user relies on: every request answered during a switch, each with the weights it asked
for (the merged adapter on the merged engine, any other on the LoRA engine, which a switch leaves
alone); the switch ends on the adapter activated last; a failed switch keeps the old engine.
Routing by adapter and the LoRA engine on their own: ``test_engines.py``.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ttalkkac.adapters import AdapterRef, ref_from_dir, trains_embeddings
from ttalkkac.inference.engines import EngineHost
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


def make_switcher(
    base: Path, active: list[AdapterRef | None]
) -> tuple[AdapterSwitcher, PlanGenerator]:
    """Merged engines on ``base``; the LoRA engine on the base weights."""

    def build(weights: str | None, adapter: AdapterRef | None) -> TransformersEngine:
        return TransformersEngine(
            str(base),
            weights=weights,
            merged_adapter=adapter,
            enable_lora=False,
            max_model_len=2048,
            dtype="float32",
        )

    def build_lora() -> TransformersEngine:
        return TransformersEngine(str(base), max_model_len=2048, dtype="float32")

    engines = EngineHost(build(None, None), warmup=True, build_lora_engine=build_lora)
    switcher = AdapterSwitcher(
        engines, base_model=str(base), build_engine=build, read_active=lambda: active[0]
    )
    return switcher, PlanGenerator(engines, default_max_tokens=256)


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
    switcher, generator = make_switcher(terse_model_dir, active)
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
        lora_engine = generator.engines.lora_engine
        active[0] = b
        switcher.request(b)
        before_switch = len(done)
        # Requests inside the generator as the switch begins: they must all be answered.
        in_flight = generator.waiting()
        await switcher.wait()
        await _until(lambda: len(done) >= before_switch + in_flight + 4)  # some on the new one
        stop.set()
        await asyncio.gather(*clients)
        assert generator.engines.lora_engine is lora_engine  # the switch left it alone
        # Greedy answers from each route to B's weights: merged (the new engine) and base + LoRA
        # (the LoRA engine of a service with A merged).
        on_b = await generator.generate(MEETING, adapter=b, temperature=0)
        old_like, old_like_generator = make_switcher(terse_model_dir, [a])
        await old_like.prepare()
        await old_like_generator.start()
        b_lora = await old_like_generator.generate(MEETING, adapter=b, temperature=0)
        assert old_like.engines.lora_engine_status() == "ready"
        await old_like_generator.stop()
        await generator.stop()
        return first_engine, lora_engine, done, in_flight, on_b, b_lora

    first_engine, lora_engine, done, in_flight, on_b, b_lora = asyncio.run(scenario())
    assert in_flight > 0, "no request was in flight when the switch began"
    for adapter, result in done:
        assert isinstance(result.plan, ProjectPlan)
        assert result.adapter == (adapter.name if adapter else None)
    assert switcher.merged_adapter == b and switcher.switching_to is None
    assert switcher.switches == 1 and switcher.last_switch_s > 0 and switcher.error is None
    assert switcher.last_switch_method == "new_engine"
    assert not first_engine.ready  # stopped once its last request finished
    assert first_engine.loaded_adapters() == ["a"]  # merged, and nothing else applied on it
    assert {"a", "b"} <= set(lora_engine.loaded_adapters())  # b before the switch, a after
    assert not lora_engine.ready  # stopped with the generator
    assert on_b.plan == b_lora.plan  # same weights, whichever way they are reached


def test_watch_follows_the_registry_and_coalesces(
    terse_model_dir: Path, refs: list[AdapterRef]
) -> None:
    a, b = refs
    active: list[AdapterRef | None] = [None]
    switcher, generator = make_switcher(terse_model_dir, active)
    switcher.sync_interval_s = 0.2

    async def scenario():
        await switcher.prepare()
        await generator.start()
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
        await generator.stop()
        return on_b

    assert asyncio.run(scenario()) == b


def test_failed_switch_keeps_serving(terse_model_dir: Path, refs: list[AdapterRef]) -> None:
    a, _ = refs
    switcher, generator = make_switcher(terse_model_dir, [None])
    (a.path / "adapter_model.safetensors").write_bytes(b"not safetensors")

    async def scenario():
        await switcher.prepare()
        await generator.start()
        switcher.request(a)
        await switcher.wait()
        result = await generator.generate(MEETING)
        await generator.stop()
        return result

    result = asyncio.run(scenario())
    assert isinstance(result.plan, ProjectPlan)
    assert switcher.merged_adapter is None and switcher.switches == 0
    assert "switch to a failed" in switcher.error


def test_in_place_is_refused_where_it_cannot_work(
    terse_model_dir: Path, refs: list[AdapterRef], tmp_path: Path
) -> None:
    """The reasons the switch falls back to a new engine, each said in words."""
    import json

    a, _ = refs
    switcher, _ = make_switcher(terse_model_dir, [a])
    assert "cannot load weights in place" in switcher.in_place_blocker(a)
    switcher.method = "new_engine"
    assert switcher.in_place_blocker(a) == "ADAPTER_SWITCH=new_engine"
    embeddings = shutil.copytree(a.path, tmp_path / "emb")
    config = json.loads((embeddings / "adapter_config.json").read_text())
    config["modules_to_save"] = ["lm_head"]
    (embeddings / "adapter_config.json").write_text(json.dumps(config))
    assert trains_embeddings(ref_from_dir(embeddings, name="emb"))
    assert not trains_embeddings(a)
