"""``python -m bench``: training and generation benchmarks, results under ``bench/results/``.

    python -m bench training      # the guide's recipe vs our trainer
    python -m bench generation    # vLLM vs transformers engine vs the guide's inference
    python -m bench all           # both, one results file
    python -m bench quality       # the demo recipe's adapter vs the base model, scored on gold
    python -m bench startup       # fresh clone -> ready and restart -> ready of serve.sh
    python -m bench all --smoke   # tiny random model, a minute or two: checks the plumbing

vLLM on the CPU starts its engine in a spawned process, hence the ``__main__`` guard.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SMOKE_SEQ_LEN = 1024
GUIDE_ACCUMULATION = 8

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

Model = Annotated[
    str | None,
    typer.Option(help="Base model folder. Default: the SmolLM2 demo model (tiny model: --smoke)."),
]
Smoke = Annotated[bool, typer.Option(help="Tiny random model, minimal work: checks the plumbing.")]
Out = Annotated[
    Path | None,
    typer.Option(help="Results folder. Default: bench/results (bench/results/smoke with --smoke)."),
]
Steps = Annotated[int, typer.Option(help="Optimizer steps per training variant (8 examples each).")]
SeqLen = Annotated[
    int, typer.Option(help="Sequence length: the guide's max_length, our max_seq_len.")
]
Variants = Annotated[str, typer.Option(help="Training variants, comma-separated.")]
Engines = Annotated[str, typer.Option(help="Generation engines, comma-separated.")]
Concurrency = Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")]
MaxTokens = Annotated[
    int | None,
    typer.Option(help="Answer budget of our engines. Default: the service's DEFAULT_MAX_TOKENS."),
]
Adapter = Annotated[
    Path | None,
    typer.Option(
        help="LoRA adapter folder. Default: the adapter our training variant produced, "
        "else a seeded random LoRA with nonzero weights."
    ),
]


def _setup(smoke: bool, model: str | None, out: Path | None) -> tuple[str, Path]:
    from ttalkkac.logs import configure_logging

    configure_logging("INFO")
    for noisy in ("httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from bench import data

    if model is None:
        model = str(data.tiny_model() if smoke else data.demo_model())
    out = out or (RESULTS_DIR / "smoke" if smoke else RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    return model, out


def _new_result(smoke: bool, *, kind: str) -> dict[str, Any]:
    """A run's record before its measurements: id, command, machine and versions."""
    from bench import env

    suffix = ("-smoke" if smoke else "") + (f"-{kind}" if kind else "")
    return {
        "run_id": time.strftime("%Y%m%d-%H%M%S") + suffix,
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "smoke": smoke,
        "machine": env.machine(),
        "versions": env.versions(),
    }


def _write(result: dict[str, Any], started: float, out: Path) -> None:
    """Wall time and the load at the end, then the run's files and its tables on stdout."""
    from bench import env, report

    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["machine"]["load_average_at_end"] = env.load_average()
    paths = report.write(result, out)
    typer.echo(report.markdown(result))
    typer.echo("\n" + "\n".join(str(p) for p in paths))


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def training(
    model: Model = None,
    smoke: Smoke = False,
    out: Out = None,
    steps: Steps = 1,
    max_seq_len: SeqLen = 2048,
    variants: Variants = "guide,ours,ours_fast",
) -> None:
    """Tokens/s and peak memory: the guide's recipe against our trainer."""
    _run(
        smoke,
        model,
        out,
        train=True,
        gen=False,
        steps=steps,
        max_seq_len=max_seq_len,
        variants=variants,
    )


@app.command()
def generation(
    model: Model = None,
    smoke: Smoke = False,
    out: Out = None,
    engines: Engines = "vllm_merged,vllm,transformers,guide",
    concurrency: Concurrency = "1,4,16,64",
    adapter: Adapter = None,
    max_tokens: MaxTokens = None,
) -> None:
    """Latency, throughput and valid share: vLLM vs transformers vs the guide's inference."""
    _run(
        smoke,
        model,
        out,
        train=False,
        gen=True,
        engines=engines,
        concurrency=concurrency,
        adapter=adapter,
        max_tokens=max_tokens,
    )


@app.command("all")
def all_(
    model: Model = None,
    smoke: Smoke = False,
    out: Out = None,
    steps: Steps = 1,
    max_seq_len: SeqLen = 2048,
    variants: Variants = "guide,ours,ours_fast",
    engines: Engines = "vllm_merged,vllm,transformers,guide",
    concurrency: Concurrency = "1,4,16,64",
    adapter: Adapter = None,
    max_tokens: MaxTokens = None,
) -> None:
    """Training, then generation with the adapter our trainer just wrote."""
    _run(
        smoke,
        model,
        out,
        train=True,
        gen=True,
        steps=steps,
        max_seq_len=max_seq_len,
        variants=variants,
        engines=engines,
        concurrency=concurrency,
        adapter=adapter,
        max_tokens=max_tokens,
    )


def _run(
    smoke: bool,
    model: str | None,
    out: Path | None,
    *,
    train: bool,
    gen: bool,
    steps: int = 1,
    max_seq_len: int = 2048,
    variants: str = "",
    engines: str = "",
    concurrency: str = "",
    adapter: Path | None = None,
    max_tokens: int | None = None,
) -> None:
    started = time.perf_counter()
    model, out = _setup(smoke, model, out)
    result = _new_result(smoke, kind="")
    keep = Path(tempfile.mkdtemp(prefix="bench-adapter-")) / "trained"
    adapter_source = f"given: {adapter}" if adapter else ""
    try:
        if train:
            from bench.training import run_training_bench

            # Smoke: the tiny model at a short length, 2 examples per step (plumbing only).
            result["training"] = run_training_bench(
                model=model,
                steps=steps,
                max_seq_len=min(max_seq_len, SMOKE_SEQ_LEN) if smoke else max_seq_len,
                accumulation=2 if smoke else GUIDE_ACCUMULATION,
                variants=_split(variants),
                keep_adapter=keep if gen and adapter is None else None,
            )
            if gen and adapter is None and (keep / "adapter_model.safetensors").is_file():
                adapter = keep
                per_step = 2 if smoke else GUIDE_ACCUMULATION
                adapter_source = (
                    f"trained by our trainer in this run ({steps} optimizer step(s) on "
                    f"{steps * per_step} real records)"
                )
        if gen:
            from bench.generation import run_generation_bench

            result["generation"] = run_generation_bench(
                model=model,
                engines=_split(engines),
                concurrency=[int(c) for c in _split(concurrency)],
                adapter=adapter,
                adapter_source=adapter_source,
                smoke=smoke,
                max_tokens=max_tokens,
            )
    finally:
        shutil.rmtree(keep.parent, ignore_errors=True)
    _write(result, started, out)


@app.command()
def quality(
    smoke: Smoke = False,
    model: Model = None,
    out: Out = None,
    adapter: Annotated[
        Path | None,
        typer.Option(help="Evaluate this adapter instead of training the recipe first."),
    ] = None,
    keep_adapter: Annotated[
        Path | None,
        typer.Option(help="Train the recipe into this folder and keep it (for --adapter later)."),
    ] = None,
    samples: Annotated[int, typer.Option(help="Validation examples evaluated.")] = 24,
    max_meeting_chars: Annotated[int, typer.Option(help="Meetings are shortened to this.")] = 4000,
    seed: Annotated[int, typer.Option(help="Example selection and generation seed.")] = 0,
    max_tokens: MaxTokens = None,
) -> None:
    """Train the demo recipe, then score base and adapter on the validation split."""
    from bench.quality import run_quality_bench

    started = time.perf_counter()
    model, out = _setup(smoke, model, out)
    result = _new_result(smoke, kind="quality")
    result["quality"] = run_quality_bench(
        model=model,
        smoke=smoke,
        adapter=adapter,
        keep_adapter=keep_adapter,
        max_samples=min(samples, 4) if smoke else samples,
        max_meeting_chars=max_meeting_chars,
        seed=seed,
        max_tokens=max_tokens,
    )
    _write(result, started, out)


@app.command("_train-quality", hidden=True)
def train_quality(
    model: Annotated[str, typer.Option()],
    out_dir: Annotated[Path, typer.Option()],
    result: Annotated[Path, typer.Option()],
    smoke: Smoke = False,
) -> None:
    from bench.quality import RECIPE, SMOKE_RECIPE, train_recipe
    from ttalkkac.logs import configure_logging

    configure_logging("INFO")
    outcome = train_recipe(model, out_dir, SMOKE_RECIPE if smoke else RECIPE)
    text = json.dumps(outcome, ensure_ascii=False, indent=2)
    result.write_text(text)
    (out_dir / "train-quality.json").write_text(text)


@app.command("profile-summary")
def profile_summary(
    raw: Annotated[Path, typer.Argument(help="A py-spy profile recorded with --format raw.")],
    title: Annotated[str, typer.Option(help="Heading of the summary.")] = "",
    top: Annotated[int, typer.Option(help="Frames per table.")] = 25,
    out: Annotated[Path | None, typer.Option(help="Write the Markdown here too.")] = None,
) -> None:
    """Top costs of a py-spy profile (see bench/profile.py for how to record one)."""
    from bench.profile import summarize

    text = summarize(raw, title=title, top=top)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    typer.echo(text)


@app.command("_train-variant", hidden=True)
def train_variant(
    variant: str,
    model: Annotated[str, typer.Option()],
    steps: Annotated[int, typer.Option()],
    max_seq_len: Annotated[int, typer.Option()],
    accumulation: Annotated[int, typer.Option()],
    out_dir: Annotated[Path, typer.Option()],
    result: Annotated[Path, typer.Option()],
) -> None:
    """One training variant in this process (run by ``training`` in a fresh interpreter)."""
    from ttalkkac.logs import configure_logging

    configure_logging("INFO")
    from bench.training import run_variant

    numbers = run_variant(
        variant,
        model=model,
        steps=steps,
        max_seq_len=max_seq_len,
        out_dir=out_dir,
        accumulation=accumulation,
    )
    result.write_text(json.dumps(numbers, ensure_ascii=False, indent=2))


@app.command("_gen-engine", hidden=True)
def gen_engine(
    config: Annotated[Path, typer.Option(help="JSON settings written by the parent.")],
    result: Annotated[Path, typer.Option()],
) -> None:
    """One generation engine's measurements in this process (run by ``generation``)."""
    from ttalkkac.logs import configure_logging

    configure_logging("INFO")
    from bench.generation import run_engine_section

    numbers = run_engine_section(json.loads(config.read_text()))
    result.write_text(json.dumps(numbers, ensure_ascii=False, indent=2))


@app.command()
def serving(
    model: Model = None,
    smoke: Smoke = False,
    out: Out = None,
    variants: Annotated[
        str, typer.Option(help="Comma-separated: reserve_one, all, all_eager.")
    ] = "reserve_one,all,all_eager",
    max_tokens: MaxTokens = None,
) -> None:
    """vLLM's cores, start and restart, and the adapter switch (in place vs a new engine)."""
    from bench.serving import run_serving_bench

    started = time.perf_counter()
    model, out = _setup(smoke, model, out)
    result = _new_result(smoke, kind="serving")
    result["serving"] = run_serving_bench(
        model=model, smoke=smoke, variants=_split(variants), max_tokens=max_tokens
    )
    result["switch"] = result["serving"].get("switch")
    _write(result, started, out)


@app.command()
def startup(
    port: Annotated[int, typer.Option(help="Port of the service while it is timed.")] = 8765,
    keep: Annotated[bool, typer.Option(help="Keep the clone and its logs.")] = False,
    out: Out = None,
) -> None:
    """Fresh clone -> ready and restart -> ready of ./scripts/serve.sh, by phase."""
    from bench import env
    from bench.startup import run_startup

    started = time.perf_counter()
    out = out or RESULTS_DIR
    result = _new_result(False, kind="startup")
    result["machine"]["load_average_at_start"] = env.load_average()
    result["startup"] = run_startup(port=port, keep=keep)
    _write(result, started, out)


@app.command("_serving-variant", hidden=True)
def serving_variant(
    config: Annotated[Path, typer.Option(help="JSON settings written by the parent.")],
    result: Annotated[Path, typer.Option()],
) -> None:
    """One engine variant's measurements in this process (run by ``serving``)."""
    from ttalkkac.logs import configure_logging

    configure_logging("INFO")
    from bench.serving import run_variant

    run_variant(config, result)


if __name__ == "__main__":
    app()
