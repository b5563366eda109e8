"""Results files: ``<run_id>.json`` (everything), ``<run_id>.md`` (the tables), a throughput
plot, and ``latest.*`` copies that the README's performance section points to."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENGINE_LABELS = {
    "vllm_merged": "vLLM, adapter merged (ours, CPU default)",
    "vllm": "vLLM, per-request LoRA (ours)",
    "transformers": "transformers + PEFT, batched (ours)",
    "guide": "guide: transformers + PEFT, one at a time",
}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write(result: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = result["run_id"]
    paths = [out_dir / f"{run_id}.json", out_dir / f"{run_id}.md"]
    paths[0].write_text(
        json.dumps(_json_safe(result), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    paths[1].write_text(markdown(result) + "\n", encoding="utf-8")
    if "generation" in result:
        plot = out_dir / f"{run_id}-throughput.png"
        if plot_throughput(result["generation"], plot, title=_machine_line(result)):
            paths.append(plot)
    # latest.* for the training and generation runs; latest-quality.*, latest-serving.* for the
    # others, so that a quality or serving run does not replace the generation run's latest.
    kind = next((k for k in ("quality", "serving", "startup") if k in result), "")
    for path in list(paths):
        latest = out_dir / path.name.replace(run_id, f"latest-{kind}" if kind else "latest")
        shutil.copyfile(path, latest)
        paths.append(latest)
    return paths


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    cpu = m["cpu"]
    flags = "/".join(cpu["flags"]) or "no AVX"
    return (
        f"{cpu['model']}, {cpu['logical_cores']} cores ({flags}), {m['memory_gib']} GiB, "
        f"{m['torch_threads']} torch threads"
    )


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"## Benchmark run {result['run_id']}"
        + (" (smoke: tiny random model)" if result["smoke"] else ""),
        "",
        f"- Machine: {_machine_line(result)}; load average at start {m['load_average_at_start']}, "
        f"at end {m.get('load_average_at_end')}",
        f"- {m['gpu'].get('note') or 'GPU: ' + m['gpu'].get('name', '?')}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        f"- Command: `{result['command']}`; wall time {_fmt(result.get('wall_s'))} s",
    ]
    if "training" in result:
        lines += ["", *_training_md(result["training"])]
    if "generation" in result:
        lines += ["", *_generation_md(result["generation"])]
    if "quality" in result:
        lines += ["", *_quality_md(result["quality"])]
    if "serving" in result:
        lines += ["", *_serving_md(result["serving"])]
    if "startup" in result:
        lines += ["", *_startup_md(result["startup"])]
    return "\n".join(lines)


def _startup_md(startup: dict[str, Any]) -> list[str]:
    lines = [
        f"### Fresh clone and restart to ready (`./scripts/serve.sh`, commit {startup['commit']})",
        "",
        "| run | installed | demo model | engine ready | warm-up done | ready | goal | "
        "engine start | compile cache |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("fresh_clone", "restart"):
        run = startup[name]
        phases = run["phases_s"]
        cache = (
            "loaded"
            if run["compile_cache_loaded"]
            else "load failed"
            if run["compile_cache_load_failed"]
            else "compiled"
        )
        lines.append(
            f"| {name.replace('_', ' ')} | "
            + " | ".join(
                _fmt(phases.get(p)) for p in ("installed", "demo_model", "engine", "warm_up")
            )
            + f" | **{_fmt(run['ready_s'])}** | {_fmt(run['goal_s'], 0)} "
            f"({'met' if run['met'] else 'missed'}) | {_fmt(run['engine_start_s'])} | {cache} |"
        )
    lines += ["", "Seconds from the command's start to the first line of each phase."]
    return lines


def _serving_md(serving: dict[str, Any]) -> list[str]:
    """Cores, start and switch of the vLLM engine (``bench.serving``)."""
    settings = serving.get("settings") or {}
    lines = [
        "## Serving: cores, start, adapter switch",
        "",
        f"- {len(settings.get('meetings', []))} meetings, max_tokens "
        f"{settings.get('max_tokens')}, requests per level {settings.get('requests')}; "
        "merged serving on the base weights, the API's event loop in the same process.",
        "",
        "| variant | cores | torch.compile | start s | restart s | c=1 tok/s | c=16 tok/s |"
        " c=16 vs reserve_one |",
        "|---|---|---|---|---|---|---|---|",
    ]
    speedups = serving.get("speedup_c16_vs_reserve_one") or {}
    for name, v in (serving.get("variants") or {}).items():
        if "error" in v:
            lines.append(f"| {name} | failed: {v['error']} | | | | | | |")
            continue
        tps = {str(level["concurrency"]): level["generated_tokens_per_s"] for level in v["levels"]}
        lines.append(
            f"| {name} | {v['vllm_cpu_cores']} | {'no' if v['enforce_eager'] else 'yes'} | "
            f"{_fmt(v['start_s'])} | {_fmt(v['restart_s'])} | {_fmt(tps.get('1'))} | "
            f"{_fmt(tps.get('16'))} | {_fmt(speedups.get(name), 2)} |"
        )
    for v in (serving.get("variants") or {}).values():
        for method, s in (v.get("switch") or {}).items():
            if not lines[-1].startswith("| switch"):
                lines += [
                    "",
                    "| switch | activation -> switched s | first plan s (tokens) | "
                    "activation -> first plan s | engines resident max | engine RSS max / steady |",
                    "|---|---|---|---|---|---|",
                ]
            lines.append(
                f"| switch {method} | {_fmt(s['switch_s'], 2)} | {_fmt(s['first_plan_s'], 2)} "
                f"({s['first_plan_tokens']}) | {_fmt(s['activation_to_first_plan_s'], 2)} | "
                f"{s['engines_resident_max']} | {_fmt(s['engine_rss_ratio'], 2)} |"
            )
    return lines


def _quality_md(quality: dict[str, Any]) -> list[str]:
    """Base vs adapter vs the generic floor, through the service path (``bench.quality``)."""
    from ttalkkac.evaluation.report import FIELD_LABELS, HEADLINE_HEADER, headline_rows

    training = quality.get("training") or {}
    settings = quality.get("evaluation_settings") or {}
    lines = [
        "### Quality: the demo recipe's adapter against the base model",
        "",
        f"- Training: {training.get('global_step', '?')} steps on "
        f"{training.get('train_records', '?')} records in {_fmt(training.get('wall_s'))} s "
        f"(loss {_fmt(training.get('first_train_loss'), 3)} -> {_fmt(training.get('train_loss'), 3)}, "
        f"eval loss {_fmt(training.get('eval_loss'), 3)})",
        f"- Evaluation: {quality.get('examples')} examples of the {settings.get('split')}, "
        f"meetings cut to {_fmt(settings.get('max_meeting_chars'))} characters, greedy, seed "
        f"{settings.get('seed')}; base {_fmt((quality.get('base') or {}).get('wall_s'))} s, "
        f"adapter {_fmt((quality.get('adapter') or {}).get('wall_s'))} s",
        f"- Decoding: max_tokens {settings.get('max_tokens', '?')}, repetition penalty "
        f"{settings.get('repetition_penalty', '?')}, loop stop "
        + (
            f"after {settings['repetition_stop_min_count']} repeats of a pattern of up to "
            f"{settings['repetition_stop_max_pattern']} tokens"
            if settings.get("repetition_stop_max_pattern")
            else "off"
        ),
        "",
        *HEADLINE_HEADER,
        *headline_rows("base model", quality.get("base")),
        *headline_rows("adapter (demo recipe)", quality.get("adapter")),
        *headline_rows("generic floor", quality.get("generic_floor")),
        "",
        f"Reproducibility (the adapter evaluated twice, same seed): field chrF differs by "
        f"{_fmt((quality.get('reproducibility') or {}).get('field_chrf_delta'), 3)}, "
        f"{(quality.get('reproducibility') or {}).get('same_plans', '-')} of "
        f"{quality.get('examples')} plans identical.",
        "",
        "| field | base | adapter | floor |",
        "|---|---|---|---|",
    ]
    for name, label in FIELD_LABELS.items():
        values = [
            (quality.get(key) or {}).get("fields", {}).get(name)
            for key in ("base", "adapter", "generic_floor")
        ]
        lines.append(f"| {name} ({label}) | " + " | ".join(_fmt(v) for v in values) + " |")
    return lines


def _training_md(training: dict[str, Any]) -> list[str]:
    s = training["settings"]
    lines = [
        "### Training (LoRA, same records, model and optimizer steps)",
        "",
        f"Model `{Path(s['model']).name}`, {s['optimizer_steps']} optimizer step(s) of "
        f"{s['gradient_accumulation_steps']} examples (batch 1 x "
        f"{s['gradient_accumulation_steps']} accumulation), sequence length {s['max_seq_len']}.",
        "",
        "| variant | tokens/s | loss tokens/s | plan tokens/s | peak RSS MiB | runtime s | "
        "tokens | plan tokens | examples with plan |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in training["variants"].items():
        lines.append(
            f"| {name} | {_fmt(r['tokens_per_s'])} | {_fmt(r['loss_tokens_per_s'])} | "
            f"{_fmt(r['answer_tokens_per_s'])} | {_fmt(r['peak_rss_mib'], 0)} | "
            f"{_fmt(r['train_runtime_s'])} | {_fmt(r['tokens'])} | {_fmt(r['answer_tokens'])} | "
            f"{r['examples_with_answer']}/{r['examples']} |"
        )
    if training["ratios"]:
        lines += ["", "| ratio | tokens/s | plan tokens/s | peak RSS |", "|---|---|---|---|"]
        for name, r in training["ratios"].items():
            label = name if "_vs_" in name else f"{name} / guide"
            lines.append(
                f"| {label} | {_fmt(r['tokens_per_s'], 2)} | {_fmt(r['answer_tokens_per_s'], 2)} "
                f"| {_fmt(r['peak_rss_mib'], 2)} |"
            )
    return lines


def _generation_md(gen: dict[str, Any]) -> list[str]:
    s = gen["settings"]
    engines = gen["engines"]
    lines = [
        "### Generation (same model, adapter, meetings; plans through PlanGenerator)",
        "",
        f"{len(s['meetings'])} held-out meetings (prompts of "
        f"{min(m['prompt_tokens'] for m in s['meetings'])}-"
        f"{max(m['prompt_tokens'] for m in s['meetings'])} tokens), adapter: "
        f"{s['adapter_source']}; our engines: "
        + ", ".join(f"{k} {v}" for k, v in s["sampling"].items())
        + f", dtype {s['dtype']}, JSON-schema constrained decoding. The guide's engine uses its "
        "own settings (temperature 0.7, top_p 0.9, top_k 50, repetition penalty 1.1, 512 new "
        "tokens, no constrained decoding).",
        "",
        "| engine | c | requests | p50 s | p95 s | ms/token p50 | answer tokens | requests/min | "
        "valid plans/min | gen tokens/s | valid share (first try) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in engines.items():
        label = ENGINE_LABELS.get(name, name)
        if "levels" not in e:
            lines.append(f"| {label} | failed: {e.get('error')} | | | | | | | | | |")
            continue
        for lv in e["levels"]:
            source = lv.get("derived_from_concurrency")
            derived = (
                f" (as c={source}: {'serial' if source == 1 else 'batch limit'})" if source else ""
            )
            lines.append(
                f"| {label} | {lv['concurrency']}{derived} | {_fmt(lv.get('requests'))} | "
                f"{_fmt(lv['latency_p50_s'], 2)} | {_fmt(lv['latency_p95_s'], 2)} | "
                f"{_fmt(lv.get('latency_per_token_ms_p50'))} | "
                f"{_fmt(lv.get('mean_completion_tokens'), 0)} | "
                f"{_fmt(lv['requests_per_min'])} | {_fmt(lv['plans_per_min'])} | "
                f"{_fmt(lv['generated_tokens_per_s'])} | {_fmt(lv['valid_share'], 2)} "
                f"({_fmt(lv.get('first_try_valid_share'), 2)}) |"
            )
    notes = [
        f"- {ENGINE_LABELS.get(name, name)}: {e['note']}"
        for name, e in engines.items()
        if e.get("note")
    ]
    if notes:
        lines += ["", *notes]
    lines += [
        "",
        "| engine | start s | adapter registered/activated -> first plan s | peak RSS MiB "
        "(+ engine process) |",
        "|---|---|---|---|",
    ]
    for name, e in engines.items():
        if "levels" in e:
            child = e.get("peak_engine_process_rss_mib")
            memory = _fmt(e.get("peak_rss_mib"), 0) + (f" (+{child:,.0f})" if child else "")
            lines.append(
                f"| {ENGINE_LABELS.get(name, name)} | {_fmt(e.get('start_s'))} | "
                f"{_fmt(e.get('adapter_to_first_plan_s'), 2)} | {memory} |"
            )
    if gen["ratios"]:
        cs = sorted({int(c) for rows in gen["ratios"].values() for c in rows})
        lines += [
            "",
            "Ratios, ours / baseline (generated tokens/s; valid plans/min in brackets):",
            "",
            "| ratio | " + " | ".join(f"c={c}" for c in cs) + " |",
            "|---|" + "---|" * len(cs),
        ]
        for name, rows in gen["ratios"].items():
            cells = []
            for c in cs:
                row = rows.get(str(c))
                cells.append(
                    "-"
                    if row is None
                    else f"{_fmt(row['generated_tokens_per_s'], 2)} ({_fmt(row['plans_per_min'], 2)})"
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _greedy_pairs_md(gen.get("greedy_pairs") or {})
    for name, e in engines.items():
        api = e.get("api_overhead")
        if api:
            lines += [
                "",
                f"API overhead ({ENGINE_LABELS.get(name, name)}, {api['requests']} sequential "
                f"requests, greedy): HTTP round trip via uvicorn minus time inside the generator "
                f"p50 {_fmt(api['http_overhead_ms_p50'], 2)} ms (max "
                f"{_fmt(api['http_overhead_ms_max'], 2)} ms); a direct call "
                f"{_fmt(api['direct_overhead_ms_p50'], 2)} ms; mean request "
                f"{_fmt(api['mean_request_s'], 2)} s.",
            ]
    return lines


def _greedy_pairs_md(pairs_by_engine: dict[str, Any]) -> list[str]:
    """Greedy single-request latency, meeting by meeting, against the transformers engine."""
    lines: list[str] = []
    for name, r in pairs_by_engine.items():
        mine = ENGINE_LABELS.get(name.split("/")[0], name)
        lines += [
            "",
            f"Single-request latency, greedy on the same meetings ({mine} against the transformers "
            "engine; one request at a time; a retry samples at temperature 0.3; 'identical plan': "
            "byte-identical plans from both):",
            "",
            "| meeting | ours s | transformers s | ours / transformers | answer tokens (ours, "
            "transformers) | identical plan | both valid |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in r["pairs"]:
            lines.append(
                f"| {p['meeting_id']} | {_fmt(p['latency_s'], 2)} | {_fmt(p['base_latency_s'], 2)} "
                f"| {_fmt(p['latency_ratio'], 2)} | {_fmt(p['tokens'])}, {_fmt(p['base_tokens'])} "
                f"| {_fmt(p['identical_plan'])} | {_fmt(p['valid'])} |"
            )
        lines += [
            "",
            f"p50 {_fmt(r['latency_p50_s'], 2)} s against {_fmt(r['base_latency_p50_s'], 2)} s; "
            f"p50 of the per-meeting ratio {_fmt(r['latency_ratio_p50'], 2)} (on the "
            f"{r['identical_plans']} identical plans: {_fmt(r['latency_ratio_p50_identical'], 2)}).",
        ]
    return lines


def plot_throughput(gen: dict[str, Any], path: Path, *, title: str = "") -> bool:
    """Generated tokens/s against concurrency, one line per engine."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        logger.warning("matplotlib missing: no plot")
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for name, e in gen["engines"].items():
        levels = e.get("levels")
        if not levels:
            continue
        xs = [lv["concurrency"] for lv in levels]
        ys = [lv["generated_tokens_per_s"] for lv in levels]
        style = "--" if name == "guide" else "-"
        ax.plot(xs, ys, style, marker="o", label=ENGINE_LABELS.get(name, name))
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("generated tokens/s")
    ax.set_title("Plan generation throughput" + (f"\n{title}" if title else ""), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
