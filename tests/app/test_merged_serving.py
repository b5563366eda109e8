"""Merged serving on a real vLLM engine: the active adapter in the weights, switched under load.

One app (tiny Qwen3, two adapters, adapter "a" active at start): it merges "a" before its engine
starts (LoRA off); "b" and the base model are served by the LoRA engine, started by the first
request for them; activating "b" while clients keep sending requests loads b's merged weights
into the running engine (in place: the same engine, no second one) with no request lost, every
answer names the adapter it was asked for, the requests in flight finish before the weights
change, and the engine then answers exactly as a fresh engine started on b's merged folder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.utils.serving import register_adapter, wait_ready
from ttalkkac.plan import ProjectPlan

MEETING = (
    "[00:01] Speaker_A: 리모컨 디자인을 논의하겠습니다.\n[00:02] Speaker_B: 시장 조사를 하겠습니다."
)


@pytest.fixture(scope="module")
def merged_client(serving_settings, tiny_adapters, tmp_path_factory) -> Iterator[TestClient]:
    settings = serving_settings.model_copy(
        update={
            "serving_mode": "merged",
            "data_dir": tmp_path_factory.mktemp("serving-merged"),
            "max_waiting_requests": 32,
            "adapter_sync_interval_s": 1.0,
            # No torch.compile: it only changes speed (the bench measures it), and a compiled
            # engine start costs a minute on 2 cores; this app starts three engines.
            "enforce_eager": True,
        }
    )
    settings.ensure_dirs()
    base = settings.base_model
    register_adapter(settings, "a", tiny_adapters[0], base_model=base, activate=True)
    register_adapter(settings, "b", tiny_adapters[1], base_model=base)
    with TestClient(create_app(settings)) as client:
        ready = wait_ready(client)
        assert ready["ready"], ready
        yield client


def test_starts_on_the_active_adapter_merged(merged_client) -> None:
    ready = merged_client.get("/ready").json()
    assert ready["mode"] == "merged" and ready["merged_adapter"] == "a"
    assert ready["active_adapter"] == "a" and ready["switching_to"] is None
    engine = merged_client.app.state.generator.engine
    assert engine.weights.endswith("a.merged") and engine.base_model != engine.weights
    metrics = merged_client.get("/metrics").text
    assert 'ttalkkac_serving_mode{mode="merged"} 1.0' in metrics
    assert 'ttalkkac_merged_adapter{adapter="a"} 1.0' in metrics
    assert 'ttalkkac_engine_ready{engine="vllm",mode="merged"} 1.0' in metrics


def test_other_adapters_and_the_base_are_served_by_the_lora_engine(merged_client) -> None:
    assert merged_client.get("/ready").json()["lora_engine"] == "not started"
    for asked, expected in (("a", "a"), ("b", "b"), ("base", None), (None, "a")):
        response = merged_client.post("/generate", json={"meeting": MEETING, "adapter": asked})
        assert response.status_code == 200, response.text
        assert response.json()["adapter"] == expected
        ProjectPlan.model_validate(response.json()["plan"])
    generator = merged_client.app.state.generator
    assert not generator.engine.enable_lora and generator.engine.loaded_adapters() == ["a"]
    assert generator.engines.lora_engine.loaded_adapters() == ["b"]
    ready = merged_client.get("/ready").json()
    assert ready["lora_engine"] == "ready" and set(ready["loaded_adapters"]) == {"a", "b"}
    metrics = merged_client.get("/metrics").text
    assert 'ttalkkac_engine_ready{engine="vllm",mode="lora"} 1.0' in metrics


def test_activation_switches_the_engine_under_load_losing_nothing(merged_client) -> None:
    first_engine = merged_client.app.state.generator.engine
    lora_engine = merged_client.app.state.generator.engines.lora_engine
    answers: list[tuple[str | None, int, dict]] = []
    stop = threading.Event()
    asked = ["a", "b", None, "base"]

    def client_loop(i: int) -> None:
        n = 0
        while not stop.is_set():
            adapter = asked[(i + n) % len(asked)]
            response = merged_client.post(
                "/generate", json={"meeting": MEETING, "adapter": adapter}
            )
            answers.append((adapter, response.status_code, response.json()))
            n += 1

    with ThreadPoolExecutor(max_workers=4) as pool:
        loops = [pool.submit(client_loop, i) for i in range(4)]
        while len(answers) < 4:
            time.sleep(0.05)
        activated = merged_client.post("/adapters/b/activate")
        assert activated.status_code == 200, activated.text
        at_activation = len(answers)
        deadline = time.monotonic() + 180
        while True:
            ready = merged_client.get("/ready").json()
            if ready["merged_adapter"] == "b" and ready["switching_to"] is None:
                break
            assert ready["switch_error"] is None, ready
            assert time.monotonic() < deadline, ready
            time.sleep(0.2)
        during_switch = len(answers) - at_activation
        after = len(answers)
        while len(answers) < after + 4:  # some answered by the new engine
            time.sleep(0.05)
        stop.set()
        for loop in loops:
            loop.result()

    assert during_switch > 0, "no request was answered while the switch was under way"
    for adapter, status, body in answers:
        assert status == 200, body
        ProjectPlan.model_validate(body["plan"])
        if adapter == "base":
            assert body["adapter"] is None
        elif adapter is None:  # the active adapter at the time: "a", then "b"
            assert body["adapter"] in ("a", "b")
        else:
            assert body["adapter"] == adapter
    generator = merged_client.app.state.generator
    # In place: the engine that served "a" now serves "b"; no second merged engine was started.
    assert generator.engine is first_engine and first_engine.ready
    assert ready["last_switch_method"] == "in_place"
    # The LoRA engine is untouched by the switch.
    assert generator.engines.lora_engine is lora_engine and lora_engine.ready
    assert generator.engine.weights.endswith("b.merged")
    assert generator.engine.merged_adapter.name == "b"
    assert ready["last_switch_s"] > 0
    assert 'ttalkkac_adapter_switches_total{outcome="ok"} 1.0' in merged_client.get("/metrics").text


def test_weights_change_only_with_no_request_inside(merged_client) -> None:
    """Requests in flight finish on the old weights; a request that comes meanwhile waits."""
    import asyncio

    generator = merged_client.app.state.generator
    host, engine = generator.engines, generator.engine
    target = engine.merged_adapter  # "b" after the switch test; reloading the same is allowed
    inflight_at_load: list[int] = []
    real_reload = engine.reload_weights

    async def recording_reload(weights, merged_adapter):
        inflight_at_load.append(engine.inflight())
        await real_reload(weights, merged_adapter)
        inflight_at_load.append(engine.inflight())  # the late request still waits at the gate

    async def scenario():
        engine.reload_weights = recording_reload
        try:
            first = [
                asyncio.create_task(
                    generator.generate(MEETING, adapter=target, temperature=0.0, seed=i)
                )
                for i in range(3)
            ]
            async with asyncio.timeout(60):
                while engine.inflight() < 3:
                    await asyncio.sleep(0.01)
            reload = asyncio.create_task(host.reload(engine.weights, target))
            await asyncio.sleep(0.05)
            late = asyncio.create_task(
                generator.generate(MEETING, adapter=target, temperature=0.0, seed=9)
            )
            await asyncio.sleep(0.05)
            assert not late.done()
            results = await asyncio.gather(*first, reload, late)
        finally:
            del engine.reload_weights
        return results

    results = merged_client.portal.call(scenario)
    assert inflight_at_load == [0, 0]
    for result in (*results[:3], results[4]):
        ProjectPlan.model_validate(result.plan.model_dump())


def test_in_place_weights_answer_as_a_fresh_engine(merged_client) -> None:
    """Greedy answers after the load equal those of a new engine started on the same folder."""
    from ttalkkac.inference.engines import EngineHost
    from ttalkkac.inference.factory import build_engine
    from ttalkkac.inference.service import PlanGenerator

    generator = merged_client.app.state.generator
    weights, adapter = generator.engine.weights, generator.engine.merged_adapter
    assert weights.endswith("b.merged")

    async def plans(gen, asked):
        return [
            (await gen.generate(MEETING, adapter=asked, temperature=0.0, seed=0)).plan
            for _ in range(2)
        ]

    after_reload = merged_client.portal.call(plans, generator, adapter)
    settings = merged_client.app.state.settings
    # merged_adapter=None: an engine that starts on the merged folder itself (a merged engine
    # of the service starts on the base folder, whose compile cache it reuses, and loads the
    # merged weights in place, like the switch).
    fresh = build_engine(settings, base_model=settings.base_model, mode="merged", weights=weights)
    assert fresh.weights == weights and not fresh._starts_on_base()
    fresh_host = EngineHost(fresh, warmup=False)

    async def fresh_plans():
        fresh_generator = PlanGenerator.from_settings(fresh_host, settings)
        await fresh_generator.start()
        try:
            return await plans(fresh_generator, None)  # its weights are b's, unnamed
        finally:
            await fresh_generator.stop()

    assert merged_client.portal.call(fresh_plans) == after_reload


def test_a_request_for_the_adapter_being_switched_to_waits_for_it(
    merged_client, tiny_adapters
) -> None:
    """Right after an activation, the new adapter's plan comes from the merged weights, not the
    LoRA engine (which would be started for it if it were not running: minutes on a CPU)."""
    settings = merged_client.app.state.settings
    register_adapter(settings, "c", tiny_adapters[0], base_model=settings.base_model)
    activated = merged_client.post("/adapters/c/activate")
    assert activated.status_code == 200, activated.text
    response = merged_client.post("/generate", json={"meeting": MEETING, "adapter": "c"})
    assert response.status_code == 200, response.text
    assert response.json()["adapter"] == "c"
    generator = merged_client.app.state.generator
    assert generator.engine.merged_adapter.name == "c"
    assert "c" not in generator.engines.lora_engine.loaded_adapters()
