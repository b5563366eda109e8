"""Single-request latency and throughput at N concurrent requests, for both engines, one run.

    .venv/bin/python scripts/bench_serving.py --max-tokens 256 --concurrency 16 --out bench.json

Measured at the engine interface (``Engine.generate``: the same prompt, rendered by our chat
template, decoded under the plan's JSON schema), so both engines do the same work per token;
the plan validation on top is identical for both and costs microseconds. Each configuration runs
a warm-up request, then ``--repeats`` single requests one after another (latency), then
``--concurrency`` requests at once (throughput). Base model: BASE_MODEL, else the SmolLM2 demo
model. ``--adapter``: a LoRA folder for the "+ adapter" rows (default: a random r=16 LoRA made
for the base model in a temporary folder; ``--no-adapter`` skips those rows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

MEETING = (
    "[00:00] Alice: Thanks for joining. We need to launch the new mobile app by the end of March.\n"
    "[00:20] Bob: I will build the login screen and the payment page by March 10.\n"
    "[00:45] Carol: I will write the test plan and run the user tests in the third week of March.\n"
    "[01:05] Alice: Great. I will manage the project and send the weekly status report every "
    "Friday."
)


def make_adapter(base_model: str, folder: Path, rank: int = 16) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    # Small random B: a real (nonzero) adapter that leaves the model usable.
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.01)
    peft_model.save_pretrained(folder, safe_serialization=True)
    return folder


async def measure(engine: Any, adapter: Any, args: argparse.Namespace) -> dict[str, Any]:
    from ttalkkac.inference.base import EngineRequest
    from ttalkkac.plan import ProjectPlan
    from ttalkkac.prompts import render_prompt

    prompt = render_prompt(engine.tokenizer, MEETING)
    ids = engine.tokenizer.encode(prompt, add_special_tokens=False)

    def request(i: int) -> EngineRequest:
        return EngineRequest(
            prompt_ids=ids,
            prompt_text=prompt,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=i,
            adapter=adapter,
            request_id=f"bench-{i}-{time.monotonic_ns()}",
            repetition_penalty=args.repetition_penalty,
        )

    def valid(text: str) -> bool:
        try:
            ProjectPlan.model_validate_json(text)
        except ValueError:
            return False
        return True

    await engine.generate(request(0))  # warm-up: grammar compile, adapter load
    singles = []
    for i in range(args.repeats):
        started = time.perf_counter()
        result = await engine.generate(request(i + 1))
        singles.append((time.perf_counter() - started, result))
    started = time.perf_counter()
    results = await asyncio.gather(
        *(engine.generate(request(100 + i)) for i in range(args.concurrency))
    )
    wall = time.perf_counter() - started
    single_s = statistics.median(s for s, _ in singles)
    single_tokens = statistics.median(r.completion_tokens for _, r in singles)
    tokens = sum(r.completion_tokens for r in results)
    return {
        "single_latency_s": round(single_s, 2),
        "single_tokens": single_tokens,
        "single_tok_s": round(single_tokens / single_s, 1),
        "concurrent": args.concurrency,
        "concurrent_wall_s": round(wall, 2),
        "concurrent_req_s": round(args.concurrency / wall, 3),
        "concurrent_tok_s": round(tokens / wall, 1),
        "concurrent_tokens": tokens,
        "valid": f"{sum(valid(r.text) for r in results)}/{len(results)}",
    }


async def run_engine(kind: str, base_model: str, adapter_dir: Path | None, args) -> list[dict]:
    from ttalkkac.adapters import ref_from_dir
    from ttalkkac.inference.factory import build_engine
    from ttalkkac.settings import Settings

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-")), max_model_len=4096)
    engine = build_engine(settings, base_model=base_model, kind=kind)  # type: ignore[arg-type]
    started = time.perf_counter()
    await engine.start()
    load_s = time.perf_counter() - started
    rows = []
    try:
        configs: list[tuple[str, Any]] = [("base model", None)]
        if adapter_dir is not None:
            configs.append(("+ LoRA adapter", ref_from_dir(adapter_dir)))
        for label, adapter in configs:
            row = {"engine": kind, "mode": label, "load_s": round(load_s, 1)}
            row |= await measure(engine, adapter, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        await engine.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", nargs="+", default=["transformers", "vllm"])
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--adapter", type=Path, default=None)
    parser.add_argument("--no-adapter", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--repetition-penalty", type=float, default=1.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from ttalkkac.inference.factory import resolve_base_model
    from ttalkkac.settings import get_settings

    base_model = args.base_model or resolve_base_model(get_settings())
    adapter_dir = None
    if not args.no_adapter:
        adapter_dir = args.adapter or make_adapter(
            base_model, Path(tempfile.mkdtemp(prefix="bench-lora-")) / "lora"
        )
    rows = []
    for kind in args.engines:
        rows += asyncio.run(run_engine(kind, base_model, adapter_dir, args))
    header = (
        "| engine | mode | 1 request: s (tok/s) | "
        f"{args.concurrency} at once: s, req/s, tok/s | valid |"
    )
    print(f"\nbase model {base_model}; max_tokens {args.max_tokens}; {platform.processor()}")
    print(header + "\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['mode']} | {r['single_latency_s']} ({r['single_tok_s']}) | "
            f"{r['concurrent_wall_s']}, {r['concurrent_req_s']}, {r['concurrent_tok_s']} | "
            f"{r['valid']} |"
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"adapter": str(adapter_dir)},
                    "base_model": base_model,
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":  # vLLM on the CPU spawns its engine process: keep this guard
    main()
