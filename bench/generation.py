"""Generation benchmark: our engines through ``PlanGenerator`` against the guide's inference.

Engines, each measured in a fresh Python process (``python -m bench _gen-engine``; one engine
in memory at a time, and its peak memory is its own):

- ``vllm_merged``: the service's merged mode as shipped (SERVING_MODE=merged, the CPU default):
  the engine starts on the base weights, the adapter is activated through ``AdapterSwitcher``
  (merge into a cached folder, new engine, atomic swap), and requests for it run on an engine
  without LoRA (other adapters would go to the LoRA engine, which no request here needs);
- ``vllm``: ``VllmEngine`` with the adapter as a per-request LoRA (continuous batching,
  JSON-schema constrained decoding: SERVING_MODE=lora);
- ``transformers``: ``TransformersEngine`` (dynamic batches of up to 16, PEFT adapter,
  xgrammar-constrained ``generate``): the careful transformers baseline;
- ``guide``: ``bench.guide_recipe.GuideInference``: merged adapter, one request at a time,
  the guide's sampling settings, no constraint; concurrent callers simply wait their turn.

The three engines of ours are built by ``ttalkkac.inference.factory`` as the service builds them
(its dtype choice included) and run the same meetings, adapter, temperature and answer budget
through ``PlanGenerator`` (prompt rendering, validation, one retry): what a ``/generate`` caller
gets.
Per concurrency level ``c``: ``requests[c]`` requests, at most ``c`` in flight; throughput is
finished work over the level's wall time. Latency p50/p95 come from the level ``c = 1``.

Sampled answers differ in length from engine to engine (one loops to the budget, another stops
early), so single-request latency is also measured greedily: each engine of ours answers the same
meetings at temperature 0, one at a time, and the report pairs them meeting by meeting (plan
digests and token counts say how close the work was: greedy paths of merged and unmerged
weights part after a while, so plans are rarely byte-identical).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import env
from bench import guide_recipe as guide
from bench.data import Meeting

logger = logging.getLogger(__name__)

ENGINES = ("vllm_merged", "vllm", "transformers", "guide")
ADAPTER_NAME = "bench-adapter"
OVERHEAD_MAX_TOKENS = 32


@dataclass
class Sample:
    latency_s: float
    completion_tokens: int
    valid: bool
    first_try: bool
    error: str | None = None
    answer: str | None = None  # digest of the validated plan: equal digests, equal answers


def invalid_sample(exc: Any, latency_s: float) -> Sample:
    """A request that ended GenerationInvalid: its attempts' tokens were generated all the same."""
    tokens = sum(a.get("completion_tokens", 0) for a in exc.detail.get("attempts", []))
    return Sample(latency_s, tokens, False, False, "invalid")


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def summarize(samples: list[Sample], wall_s: float, concurrency: int) -> dict[str, Any]:
    latencies = [s.latency_s for s in samples]
    # Latency per generated token: comparable across engines whose answers differ in length.
    per_token = [s.latency_s / s.completion_tokens for s in samples if s.completion_tokens]
    tokens = sum(s.completion_tokens for s in samples)
    valid = sum(s.valid for s in samples)
    errors: dict[str, int] = {}
    for s in samples:
        if s.error:
            errors[s.error] = errors.get(s.error, 0) + 1
    return {
        "concurrency": concurrency,
        "requests": len(samples),
        "wall_s": round(wall_s, 2),
        "latency_p50_s": _round(percentile(latencies, 50)),
        "latency_p95_s": _round(percentile(latencies, 95)),
        "latency_mean_s": _round(statistics.fmean(latencies) if latencies else None),
        "latency_per_token_ms_p50": _ms(percentile(per_token, 50)),
        "completion_tokens": tokens,
        "mean_completion_tokens": round(tokens / len(samples), 1) if samples else None,
        "valid": valid,
        "valid_share": round(valid / len(samples), 3) if samples else None,
        "first_try_valid_share": (
            round(sum(s.valid and s.first_try for s in samples) / len(samples), 3)
            if samples
            else None
        ),
        "requests_per_min": round(len(samples) / wall_s * 60, 2),
        "plans_per_min": round(valid / wall_s * 60, 2),
        "generated_tokens_per_s": round(tokens / wall_s, 2),
        "errors": errors,
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


async def load_level(
    call: Callable[[Meeting, int], Awaitable[Sample]],
    meetings: list[Meeting],
    *,
    requests: int,
    concurrency: int,
    seed0: int,
) -> dict[str, Any]:
    """``requests`` calls with at most ``concurrency`` in flight; the level's summary."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Sample:
        async with gate:
            return await call(meetings[i % len(meetings)], seed0 + i)

    started = time.perf_counter()
    samples = await asyncio.gather(*(one(i) for i in range(requests)))
    return summarize(list(samples), time.perf_counter() - started, concurrency)


# --- our engines ---------------------------------------------------------------------------


def service_settings(max_tokens: int | None = None, **engine: Any) -> Any:
    """The service's settings, but for the answer budget, the admission limit and ``engine``
    (context window, KV cache, dtype: sized for the benchmark's meetings)."""
    from ttalkkac.settings import Settings

    budget = {"default_max_tokens": max_tokens} if max_tokens else {}
    return Settings(max_waiting_requests=100_000, warmup=True, **budget, **engine)


def merged_vllm_engine(settings: Any, model: str) -> Callable[..., Any]:
    """Builds the service's merged-mode vLLM engine on ``model``: ``engine(weights, merged)``
    for a merged folder and its adapter, ``engine()`` for the base weights (not started)."""
    from ttalkkac.inference.factory import build_engine

    def engine(weights: str | None = None, merged: Any = None) -> Any:
        return build_engine(
            settings,
            base_model=model,
            kind="vllm",
            mode="merged",
            weights=weights,
            merged_adapter=merged,
        )

    return engine


def _settings(cfg: dict[str, Any]) -> Any:
    return service_settings(
        cfg["max_tokens"],
        max_model_len=cfg["max_model_len"],
        cpu_kvcache_space_gb=cfg["kv_cache_gb"],
        serving_dtype=cfg["dtype"],
    )


def sampling_settings(max_tokens: int) -> dict[str, Any]:
    """The sampling values our engines run with (recorded with the results)."""
    settings = service_settings(max_tokens)
    out = {"temperature": settings.default_temperature, "max_tokens": max_tokens}
    if hasattr(settings, "repetition_penalty"):
        out["repetition_penalty"] = settings.repetition_penalty
    return out


def _build_engine(
    kind: str, cfg: dict[str, Any], weights: str | None = None, merged_adapter: Any = None
) -> Any:
    """The engine the service would build for ``kind`` (``factory.build_engine``)."""
    from ttalkkac.inference.factory import build_engine

    return build_engine(
        _settings(cfg),
        base_model=cfg["model"],
        kind="vllm" if kind.startswith("vllm") else "transformers",
        mode="merged" if kind == "vllm_merged" else "lora",
        weights=weights,
        merged_adapter=merged_adapter,
    )


async def _engine_section(cfg: dict[str, Any]) -> dict[str, Any]:
    from ttalkkac.adapters import ref_from_dir
    from ttalkkac.errors import GenerationInvalid
    from ttalkkac.inference.engines import EngineHost
    from ttalkkac.inference.service import PlanGenerator
    from ttalkkac.inference.switcher import AdapterSwitcher

    kind = cfg["engine"]
    meetings = [Meeting(**m) for m in cfg["meetings"]]
    out: dict[str, Any] = {"engine": kind, "dtype": cfg["dtype"]}
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    try:
        # A private copy: merged mode writes its merged folder next to the adapter. It lives in
        # a data folder's models/, so that the API-overhead app serves this very adapter.
        data_dir = tmp / "data"
        adapter = ref_from_dir(
            shutil.copytree(cfg["adapter"], data_dir / "models" / ADAPTER_NAME),
            name=ADAPTER_NAME,
            base_model=cfg["model"],
        )
        engine = _build_engine(kind, cfg)
        # The service's own defaults (temperature, repetition penalty, ...): what /generate
        # callers get. The answer budget, admission limit and engine sizes are the benchmark's.
        settings = _settings(cfg)
        generator = PlanGenerator.from_settings(
            EngineHost(engine, warmup=settings.warmup), settings
        )
        started = time.perf_counter()
        await generator.start()
        out["start_s"] = round(time.perf_counter() - started, 2)
        activated = time.perf_counter()
        if kind == "vllm_merged":
            # The product's activation path: merge, start an engine on the merged weights,
            # swap it in (the base engine keeps serving meanwhile).
            switcher = AdapterSwitcher(
                generator.engines,
                base_model=cfg["model"],
                build_engine=lambda weights, ref: _build_engine(kind, cfg, weights, ref),
                read_active=lambda: adapter,
            )
            switcher.request(adapter)
            await switcher.wait()
            if switcher.error:
                raise RuntimeError(switcher.error)
            out["switch_s"] = switcher.last_switch_s

        async def call(meeting: Meeting, seed: int, temperature: float | None = None) -> Sample:
            t0 = time.perf_counter()
            try:
                result = await generator.generate(
                    meeting.text, adapter=adapter, seed=seed, temperature=temperature
                )
            except GenerationInvalid as exc:
                return invalid_sample(exc, time.perf_counter() - t0)
            except Exception as exc:  # counted, never hidden
                logger.warning("request failed: %s: %s", type(exc).__name__, exc)
                return Sample(time.perf_counter() - t0, 0, False, False, type(exc).__name__)
            return Sample(
                time.perf_counter() - t0,
                result.usage["completion_tokens"],
                True,
                result.retries == 0,
                answer=_digest(result.plan.model_dump_json()),
            )

        # The adapter's first plan: in per-request mode the engine loads it on first use; in
        # merged mode it follows the switch above.
        started = time.perf_counter()
        first = await call(meetings[0], 0)
        out["first_plan_with_adapter_s"] = round(time.perf_counter() - started, 2)
        out["first_plan_valid"] = first.valid
        out["adapter_to_first_plan_s"] = round(time.perf_counter() - activated, 2)
        levels = []
        batch_limit = getattr(generator.engine, "max_batch_size", None)
        for c in cfg["concurrency"]:
            if batch_limit and c > batch_limit and levels:
                # The transformers engine runs at most max_batch_size rows per generate():
                # beyond it, requests wait for the next batch, so throughput is the batch
                # limit's (measured above); running it would only take longer.
                base_level = _level({"levels": levels}, batch_limit) or levels[-1]
                derived = {k: base_level[k] for k in _THROUGHPUT_KEYS}
                derived |= {"concurrency": c, "derived_from_concurrency": base_level["concurrency"]}
                derived |= {"latency_p50_s": None, "latency_p95_s": None}
                levels.append(derived)
                continue
            logger.info("%s: concurrency %d, %d requests", kind, c, cfg["requests"][str(c)])
            level = await load_level(
                call, meetings, requests=cfg["requests"][str(c)], concurrency=c, seed0=1000 * c
            )
            level["load_average"] = env.load_average()
            logger.info("%s c=%d: %s", kind, c, json.dumps(level))
            levels.append(level)
        out["levels"] = levels
        out["greedy"] = await greedy_latency(call, meetings[: cfg["requests"]["1"]])
        if cfg.get("api_overhead"):
            out["api_overhead"] = await api_overhead(
                generator, meetings[0], data_dir, requests=cfg["api_overhead"]
            )
        await generator.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["peak_rss_mib"] = env.peak_rss_mib()
    # vLLM computes in its engine process: its peak counts too (reaped once stopped).
    out["peak_engine_process_rss_mib"] = env.peak_children_rss_mib()
    return out


async def greedy_latency(
    call: Callable[..., Awaitable[Sample]], meetings: list[Meeting]
) -> list[dict[str, Any]]:
    """Each meeting answered greedily, one at a time: near-equal answers on every engine of
    ours (up to numerics), so latencies compare near-equal work."""
    rows = []
    for meeting in meetings:
        sample = await call(meeting, 0, temperature=0.0)
        rows.append({"meeting_id": meeting.meeting_id} | asdict(sample))
        logger.info("greedy %s: %s", meeting.meeting_id, json.dumps(rows[-1]))
    return rows


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the guide's inference -----------------------------------------------------------------


async def _guide_section(cfg: dict[str, Any]) -> dict[str, Any]:
    meetings = [Meeting(**m) for m in cfg["meetings"]]
    inference = guide.GuideInference(cfg["model"], cfg["adapter"])
    started = time.perf_counter()
    await asyncio.to_thread(inference.load)
    out: dict[str, Any] = {"engine": "guide", "start_s": round(time.perf_counter() - started, 2)}
    turn = asyncio.Lock()  # the guide's server handles one request at a time

    async def call(meeting: Meeting, seed: int) -> Sample:
        t0 = time.perf_counter()
        async with turn:
            output = await asyncio.to_thread(inference.generate, meeting.text, seed=seed)
        verdict = guide.judge(output.text)
        return Sample(
            time.perf_counter() - t0,
            output.completion_tokens,
            verdict["schema_valid"],
            verdict["schema_valid"],
            None
            if verdict["schema_valid"]
            else ("unparseable" if not verdict["parseable"] else "invalid"),
        )

    started = time.perf_counter()
    await call(meetings[0], 0)
    out["first_plan_with_adapter_s"] = round(time.perf_counter() - started, 2)
    # Loading the base, merging the adapter and answering once: the guide's way to serve a new
    # adapter is to restart its process.
    out["adapter_to_first_plan_s"] = round(out["start_s"] + out["first_plan_with_adapter_s"], 2)
    # One request at a time: throughput does not depend on concurrency. Levels above 1 are not
    # run (64 serial requests would take most of an hour here); they repeat the serial
    # throughput, marked "derived", with no latency (it grows with the queue).
    serial = await load_level(call, meetings, requests=cfg["requests"]["1"], concurrency=1, seed0=0)
    serial["load_average"] = env.load_average()
    logger.info("guide c=1: %s", json.dumps(serial))
    levels = []
    for c in cfg["concurrency"]:
        if c == 1:
            levels.append(serial)
            continue
        derived = {k: serial[k] for k in _THROUGHPUT_KEYS}
        derived |= {"concurrency": c, "derived_from_concurrency": 1}
        derived |= {"latency_p50_s": None, "latency_p95_s": None}
        levels.append(derived)
    out["levels"] = levels
    out["settings"] = guide.GENERATE | {
        "prompt_max_tokens": guide.MAX_LENGTH - guide.MAX_NEW_TOKENS
    }
    inference.close()
    out["peak_rss_mib"] = env.peak_rss_mib()
    return out


_THROUGHPUT_KEYS = (
    "requests_per_min",
    "plans_per_min",
    "generated_tokens_per_s",
    "valid_share",
    "first_try_valid_share",
    "mean_completion_tokens",
)


def run_engine_section(cfg: dict[str, Any]) -> dict[str, Any]:
    if cfg["engine"] == "guide":
        return asyncio.run(_guide_section(cfg))
    return asyncio.run(_engine_section(cfg))


# --- the API's own overhead ----------------------------------------------------------------


class _TimedGenerator:
    """Forwards to a ``PlanGenerator`` and records the time spent inside ``generate``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.inside_s: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self._inner.generate(*args, **kwargs)
        finally:
            self.inside_s.append(time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def api_overhead(
    generator: Any, meeting: Meeting, data_dir: Path, *, requests: int
) -> dict[str, Any]:
    """``POST /generate`` through uvicorn against the same generator called directly.

    Overhead = round trip minus the time spent inside ``PlanGenerator.generate`` for that very
    request, so the generation's own variance cancels out. Greedy decoding, one at a time,
    answers of ``OVERHEAD_MAX_TOKENS``: too short for a plan, so each ends in 502 after its retry,
    which crosses the same layers; what is measured is the layers, not the model.
    """
    import httpx
    import uvicorn

    from app.main import create_app
    from ttalkkac.settings import Settings
    from ttalkkac.store import crud
    from ttalkkac.store.db import Database

    # The app manages the engine's own data folder: the adapter it registers is the very folder
    # the engine serves (a copy would be another adapter to a merged engine: 409).
    settings = Settings(data_dir=data_dir, warmup=False, log_level="WARNING")
    settings.ensure_dirs()
    managed = settings.models_dir / ADAPTER_NAME
    db = Database(settings.resolved_database_url)
    db.create_all()
    config = json.loads((managed / "adapter_config.json").read_text())
    with db.session() as session:
        crud.create_adapter(
            session,
            name=ADAPTER_NAME,
            base_model=generator.engine.base_model,
            path=str(managed),
            rank=int(config.get("r", 16)),
        )
    db.dispose()
    timed = _TimedGenerator(generator)
    app = create_app(settings)
    app.state.generator = timed
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    body = {
        "meeting": meeting.text,
        "adapter": ADAPTER_NAME,
        "temperature": 0.0,
        "max_tokens": OVERHEAD_MAX_TOKENS,
    }
    http: list[float] = []
    direct: list[float] = []
    statuses: dict[int, int] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            from ttalkkac.adapters import ref_from_dir

            ref = ref_from_dir(managed, name=ADAPTER_NAME, base_model=generator.engine.base_model)
            # An answer that does not validate (502) crossed the same layers: it counts.
            for i in range(requests):
                inside = len(timed.inside_s)
                started = time.perf_counter()
                response = await client.post("/generate", json=body | {"seed": i})
                rtt = time.perf_counter() - started
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if len(timed.inside_s) > inside:
                    http.append(rtt - timed.inside_s[-1])
                inside = len(timed.inside_s)
                started = time.perf_counter()
                with contextlib.suppress(Exception):
                    await timed.generate(
                        meeting.text,
                        adapter=ref,
                        temperature=0.0,
                        seed=i,
                        max_tokens=OVERHEAD_MAX_TOKENS,
                    )
                if len(timed.inside_s) > inside:
                    direct.append(time.perf_counter() - started - timed.inside_s[-1])
    finally:
        server.should_exit = True
        await task
    return {
        "requests": requests,
        "http_statuses": statuses,
        "http_overhead_ms_p50": _ms(percentile(http, 50)),
        "http_overhead_ms_max": _ms(max(http) if http else None),
        "direct_overhead_ms_p50": _ms(percentile(direct, 50)),
        "mean_request_s": _round(statistics.fmean(timed.inside_s) if timed.inside_s else None),
        "note": "round trip minus time inside PlanGenerator.generate, same request",
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# --- orchestration -------------------------------------------------------------------------


def random_adapter(model: str, out_dir: Path, *, seed: int = 0, std: float = 0.002) -> Path:
    """A LoRA with the guide's shape and small nonzero random weights (A and B), seeded."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from ttalkkac.training.spec import LoraSpec

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraSpec().to_peft_config())
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, std)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _run_subprocess(cfg: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    name = cfg["engine"]
    config = work_dir / f"gen-{name}-config.json"
    result = work_dir / f"gen-{name}.json"
    config.write_text(json.dumps(cfg, ensure_ascii=False))
    load_before = env.load_average()
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "_gen-engine",
            "--config",
            str(config),
            "--result",
            str(result),
        ],
        check=False,
    )
    if proc.returncode != 0 or not result.is_file():
        # One engine failing (e.g. vLLM refusing this CPU) must not lose the others' numbers.
        logger.error("engine %s failed (exit %s; log above)", name, proc.returncode)
        return {"engine": name, "error": f"exit {proc.returncode}"}
    out = json.loads(result.read_text())
    out["process_wall_s"] = round(time.perf_counter() - started, 1)
    out["load_average_before"] = load_before
    out["load_average_after"] = env.load_average()
    return out


def run_generation_bench(
    *,
    model: str,
    engines: list[str],
    concurrency: list[int],
    adapter: Path | None,
    smoke: bool,
    adapter_source: str = "",
    max_tokens: int | None = None,
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from bench.data import generation_meetings
    from ttalkkac.hardware import resolve_serving_dtype

    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}; choose from {ENGINES}")
    tokenizer = AutoTokenizer.from_pretrained(model)
    scaffold = len(tokenizer.encode(_render(tokenizer, ""), add_special_tokens=False))
    prompt_budget = scaffold + (96 if smoke else 400)
    meetings = generation_meetings(tokenizer, n=4 if smoke else 8, prompt_budget=prompt_budget)
    requests = {
        str(c): (2 if smoke else 5) if c == 1 else max(c, 2 if smoke else 8)
        for c in sorted({1, *concurrency})
    }
    # Default: the service's answer budget (DEFAULT_MAX_TOKENS), what a /generate caller gets.
    if max_tokens is None:
        max_tokens = 64 if smoke else service_settings().default_max_tokens
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        tmp_dir = Path(tmp)
        if adapter is None:
            adapter = random_adapter(model, tmp_dir / "random-adapter")
            adapter_source = "seeded random LoRA (r=16, guide's modules, B ~ N(0, 0.002))"
        settings = {
            "model": model,
            "adapter": str(adapter),
            "adapter_source": adapter_source or f"given: {adapter}",
            "meetings": [asdict(m) for m in meetings],
            "concurrency": concurrency,
            "requests": requests,
            "max_tokens": max_tokens,
            "sampling": sampling_settings(max_tokens),
            "max_model_len": 2048 if smoke else 4096,
            "kv_cache_gb": 1 if smoke else 4,
            "dtype": resolve_serving_dtype(service_settings()),
            "api_overhead": 2 if smoke else 5,
        }
        results: dict[str, Any] = {}
        # The API's overhead is measured once, on the first of our engines.
        overhead_on = next((e for e in engines if e != "guide"), None)
        for name in engines:
            cfg = dict(settings, engine=name)
            if name != overhead_on:
                cfg["api_overhead"] = 0
            logger.info("generation: engine %s", name)
            results[name] = _run_subprocess(cfg, tmp_dir)
    public = {k: v for k, v in settings.items() if k not in ("meetings", "adapter")}
    public["meetings"] = [
        {"meeting_id": m.meeting_id, "prompt_tokens": m.prompt_tokens, "shortened": m.shortened}
        for m in meetings
    ]
    return {
        "settings": public,
        "engines": results,
        "ratios": ratios(results),
        "greedy_pairs": greedy_pairs(results),
    }


def _render(tokenizer: Any, text: str) -> str:
    from ttalkkac.prompts import render_prompt

    return render_prompt(tokenizer, text)


def _level(result: dict[str, Any], c: int) -> dict[str, Any] | None:
    for level in result.get("levels", []):
        if level["concurrency"] == c:
            return level
    return None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Ours over each baseline, per concurrency level: tokens/s, requests/min, p50 latency."""
    out: dict[str, Any] = {}
    ours = [e for e in ("vllm_merged", "vllm", "transformers") if "levels" in results.get(e, {})]
    bases = [e for e in ("transformers", "guide") if "levels" in results.get(e, {})]
    for mine in ours:
        for base in bases:
            if mine == base:
                continue
            rows = {}
            for level in results[mine]["levels"]:
                c = level["concurrency"]
                other = _level(results[base], c)
                if other is None:
                    continue
                rows[str(c)] = {
                    "generated_tokens_per_s": _div(
                        level["generated_tokens_per_s"], other["generated_tokens_per_s"]
                    ),
                    "requests_per_min": _div(level["requests_per_min"], other["requests_per_min"]),
                    "plans_per_min": _div(level["plans_per_min"], other["plans_per_min"]),
                    "latency_p50": _div(level["latency_p50_s"], other["latency_p50_s"]),
                }
            out[f"{mine}/{base}"] = rows
    return out


def greedy_pairs(results: dict[str, Any]) -> dict[str, Any]:
    """Greedy single-request latency of each engine of ours against the transformers engine,
    meeting by meeting; pairs that produced byte-identical plans are also summarized apart."""
    base = results.get("transformers", {}).get("greedy")
    out: dict[str, Any] = {}
    if not base:
        return out
    by_meeting = {row["meeting_id"]: row for row in base}
    for mine in ("vllm_merged", "vllm"):
        rows = results.get(mine, {}).get("greedy")
        if not rows:
            continue
        pairs = []
        for row in rows:
            other = by_meeting.get(row["meeting_id"])
            if other is None:
                continue
            pairs.append(
                {
                    "meeting_id": row["meeting_id"],
                    "latency_s": round(row["latency_s"], 2),
                    "base_latency_s": round(other["latency_s"], 2),
                    "tokens": row["completion_tokens"],
                    "base_tokens": other["completion_tokens"],
                    "valid": row["valid"] and other["valid"],
                    "identical_plan": row["answer"] is not None
                    and row["answer"] == other["answer"],
                    "latency_ratio": _div(row["latency_s"], other["latency_s"]),
                }
            )
        identical = [p for p in pairs if p["identical_plan"]]
        out[f"{mine}/transformers"] = {
            "pairs": pairs,
            "identical_plans": len(identical),
            "latency_ratio_p50": _round(percentile([p["latency_ratio"] for p in pairs], 50), 2),
            "latency_ratio_p50_identical": _round(
                percentile([p["latency_ratio"] for p in identical], 50), 2
            ),
            "latency_p50_s": _round(percentile([p["latency_s"] for p in pairs], 50), 2),
            "base_latency_p50_s": _round(percentile([p["base_latency_s"] for p in pairs], 50), 2),
        }
    return out


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 2)
