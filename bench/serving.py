"""``python -m bench serving``: how the serving engine uses the CPU, starts, and switches adapters.

Variants of the vLLM engine in merged serving (the CPU default), each in a fresh Python process
(``python -m bench _serving-variant``), on the same meetings, answer budget and sampling:

- ``reserve_one``: vLLM's own CPU default, one core kept for its scheduler process
  (VLLM_CPU_CORES=reserve_one), torch.compile;
- ``all``: the engine's threads on every core (VLLM_CPU_CORES=all, the shipped default),
  torch.compile;
- ``all_eager``: every core, no torch.compile (ENFORCE_EAGER=true).

Per variant: engine start (``start_s``: a new engine process; the compile cache of vLLM may hold
this configuration from an earlier run, which ``compile_cache_hit`` says), a restart in the same
process (``restart_s``: stop, then a new engine on the same folder), and throughput at 1 and 16
requests in flight (``levels``), the API's event loop in this same process on the same cores.

For the shipped default, the adapter switch both ways (``switch``): activation of a new adapter
(merged into a fresh folder, then loaded into the running engine in place, or a new engine
started and swapped in), the first plan after it, the number of vLLM engine processes resident
and their memory while it runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import env
from bench.data import Meeting

logger = logging.getLogger(__name__)

VARIANTS: dict[str, dict[str, Any]] = {
    "reserve_one": {"vllm_cpu_cores": "reserve_one", "enforce_eager": False},
    "all": {"vllm_cpu_cores": "all", "enforce_eager": False},
    "all_eager": {"vllm_cpu_cores": "all", "enforce_eager": True},
}
SHIPPED = "all"
SWITCH_METHODS = ("in_place", "new_engine")


def engine_processes() -> list[dict[str, Any]]:
    """This process's descendants that are vLLM processes (name ``VLLM::...``), with their RSS."""
    parents: dict[int, int] = {}
    info: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue
        pid = int(entry.name)
        parents[pid] = int(fields.get("PPid", "0").strip())
        rss_kib = float(fields.get("VmRSS", "0 kB").split()[0])
        info[pid] = (fields.get("Name", "").strip(), rss_kib / 1024)
    me = os.getpid()

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == me:
                return True
        return False

    # /proc's Name is at most 15 characters: "VLLM::EngineCor", "VLLM::Worker".
    return [
        {"pid": pid, "name": name, "rss_mib": round(rss, 1)}
        for pid, (name, rss) in info.items()
        if name.startswith("VLLM::") and descends(pid)
    ]


class EngineSampler:
    """Samples engine processes every ``interval_s`` while a switch runs."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.engines_max = 0
        self.rss_max_mib = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            procs = await asyncio.to_thread(engine_processes)
            cores = [p for p in procs if p["name"].startswith("VLLM::EngineCor")]
            self.engines_max = max(self.engines_max, len(cores))
            self.rss_max_mib = max(self.rss_max_mib, sum(p["rss_mib"] for p in procs))
            await asyncio.sleep(self.interval_s)

    def __enter__(self) -> EngineSampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def _variant(cfg: dict[str, Any]) -> dict[str, Any]:
    from bench.generation import (
        Sample,
        invalid_sample,
        load_level,
        merged_vllm_engine,
        service_settings,
    )
    from ttalkkac.adapters import ref_from_dir
    from ttalkkac.errors import GenerationInvalid
    from ttalkkac.inference.engines import EngineHost
    from ttalkkac.inference.service import PlanGenerator
    from ttalkkac.inference.switcher import AdapterSwitcher

    model = cfg["model"]
    meetings = [Meeting(**m) for m in cfg["meetings"]]
    settings = service_settings(
        cfg["max_tokens"],
        max_model_len=4096,
        cpu_kvcache_space_gb=4,
        **VARIANTS[cfg["variant"]],
    )
    out: dict[str, Any] = {"variant": cfg["variant"], **VARIANTS[cfg["variant"]]}

    engine = merged_vllm_engine(settings, model)

    cache_root = os.environ.get("VLLM_CACHE_ROOT") or Path.home() / ".cache" / "vllm"
    cache = Path(cache_root) / "torch_compile_cache"

    def cached() -> dict[Path, int]:
        # Modification times too: a compilation vLLM failed to load is saved again in place.
        return {p: p.stat().st_mtime_ns for p in cache.rglob("model")} if cache.is_dir() else {}

    cached_before = cached()
    generator = PlanGenerator.from_settings(EngineHost(engine(), warmup=True), settings)
    started = time.perf_counter()
    await generator.start()
    out["start_s"] = round(time.perf_counter() - started, 1)
    cached_after = cached()
    out["compile_cache_hit"] = not settings.enforce_eager and cached_after == cached_before
    await generator.stop()
    generator = PlanGenerator.from_settings(EngineHost(engine(), warmup=True), settings)
    started = time.perf_counter()
    await generator.start()
    out["restart_s"] = round(time.perf_counter() - started, 1)

    async def call(meeting: Meeting, seed: int, adapter: Any = None) -> Sample:
        t0 = time.perf_counter()
        try:
            result = await generator.generate(meeting.text, adapter=adapter, seed=seed)
        except GenerationInvalid as exc:
            # Counted like the generation bench: an invalid plan's attempts were generated too.
            return invalid_sample(exc, time.perf_counter() - t0)
        return Sample(
            time.perf_counter() - t0,
            result.usage["completion_tokens"],
            True,
            result.retries == 0,
        )

    levels = []
    for c, n in cfg["requests"].items():
        level = await load_level(call, meetings, requests=n, concurrency=int(c), seed0=100)
        level["load_average"] = env.load_average()
        logger.info("%s c=%s: %.1f tokens/s", cfg["variant"], c, level["generated_tokens_per_s"])
        levels.append(level)
    out["levels"] = levels

    if cfg["switch"]:
        tmp = Path(tempfile.mkdtemp(prefix="bench-switch-"))
        try:
            out["switch"] = {}
            steady = sum(p["rss_mib"] for p in engine_processes())
            for method in SWITCH_METHODS:
                # A fresh copy per method: each activation merges, as a new adapter's does.
                ref = ref_from_dir(
                    shutil.copytree(cfg["adapter"], tmp / "models" / f"switch-{method}"),
                    name=f"switch-{method}",
                    base_model=model,
                )
                switcher = AdapterSwitcher(
                    generator.engines,
                    base_model=model,
                    build_engine=engine,
                    read_active=lambda ref=ref: ref,
                    method=method,
                )
                with EngineSampler() as sampler:
                    activated = time.perf_counter()
                    switcher.request(ref)
                    await switcher.wait()
                    if switcher.error:
                        raise RuntimeError(switcher.error)
                    switched = time.perf_counter()
                    first = await call(meetings[0], 0, adapter=ref)
                    done = time.perf_counter()
                out["switch"][method] = {
                    "method": switcher.last_switch_method,
                    "switch_s": round(switched - activated, 2),
                    "first_plan_s": round(done - switched, 2),
                    "first_plan_tokens": first.completion_tokens,
                    "first_plan_valid": first.valid,
                    "activation_to_first_plan_s": round(done - activated, 2),
                    "engines_resident_max": sampler.engines_max,
                    "engine_rss_max_mib": round(sampler.rss_max_mib, 1),
                    "engine_rss_steady_mib": round(steady, 1),
                    "engine_rss_ratio": round(sampler.rss_max_mib / steady, 2) if steady else None,
                }
                logger.info("switch %s: %s", method, json.dumps(out["switch"][method]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    await generator.stop()
    return out


def run_variant(config: Path, result: Path) -> None:
    cfg = json.loads(config.read_text())
    result.write_text(json.dumps(asyncio.run(_variant(cfg)), ensure_ascii=False, indent=2))


def run_serving_bench(
    *, model: str, smoke: bool, variants: list[str], max_tokens: int | None
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from bench.data import generation_meetings
    from bench.generation import _render, random_adapter

    tokenizer = AutoTokenizer.from_pretrained(model)
    scaffold = len(tokenizer.encode(_render(tokenizer, ""), add_special_tokens=False))
    meetings = generation_meetings(
        tokenizer, n=4 if smoke else 8, prompt_budget=scaffold + (96 if smoke else 400)
    )
    settings = {
        "model": model,
        "meetings": [asdict(m) for m in meetings],
        "max_tokens": max_tokens or (64 if smoke else 512),
        "requests": {"1": 2 if smoke else 4, "16": 4 if smoke else 16},
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        adapter = random_adapter(model, work / "random-adapter")
        for name in variants:
            cfg = dict(settings, variant=name, adapter=str(adapter), switch=name == SHIPPED)
            (work / f"{name}.json").write_text(json.dumps(cfg, ensure_ascii=False))
            started = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench",
                    "_serving-variant",
                    "--config",
                    str(work / f"{name}.json"),
                    "--result",
                    str(work / f"{name}-result.json"),
                ],
                check=False,
            )
            if proc.returncode != 0:
                logger.error("variant %s failed (exit %s; log above)", name, proc.returncode)
                results[name] = {"variant": name, "error": f"exit {proc.returncode}"}
                continue
            results[name] = json.loads((work / f"{name}-result.json").read_text())
            results[name]["process_wall_s"] = round(time.perf_counter() - started, 1)
    public = {k: v for k, v in settings.items() if k != "meetings"}
    public["meetings"] = [m.meeting_id for m in meetings]
    out: dict[str, Any] = {"settings": public, "variants": results}
    shipped = results.get(SHIPPED, {})
    if "switch" in shipped:
        in_place = shipped["switch"]["in_place"]
        out["switch"] = {
            "activation_to_first_plan_s": in_place["activation_to_first_plan_s"],
            "engines_resident_max": in_place["engines_resident_max"],
            "engine_rss_ratio": in_place["engine_rss_ratio"],
        }
    out["speedup_c16_vs_reserve_one"] = {
        name: _ratio(r, results.get("reserve_one", {}), "16") for name, r in results.items()
    }
    return out


def _tokens_per_s(result: dict[str, Any], c: str) -> float | None:
    for level in result.get("levels", []):
        if str(level["concurrency"]) == c:
            return level["generated_tokens_per_s"]
    return None


def _ratio(a: dict[str, Any], b: dict[str, Any], c: str) -> float | None:
    x, y = _tokens_per_s(a, c), _tokens_per_s(b, c)
    return round(x / y, 2) if x and y else None
