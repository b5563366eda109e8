"""The benchmark's entry point in smoke mode: real code paths on the tiny model, no timings.

Runs ``python -m bench all --smoke`` as a user would (a subprocess: vLLM and the benchmark's
own per-variant processes need a ``__main__``), then checks the result files: every key the
README's table is built from is there and numeric.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def smoke_result(tiny_model_dir: Path, shared_data: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench-smoke")
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "all",
        "--smoke",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--variants",
        "guide,ours,ours_fast",
        "--engines",
        "transformers,guide",
        "--concurrency",
        "1,2",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = sorted(p.name for p in out.iterdir())
    runs = [name for name in files if name.endswith("-smoke.json")]
    assert len(runs) == 1, files
    run_id = runs[0].removesuffix(".json")
    for name in (f"{run_id}.md", "latest.json", "latest.md", f"{run_id}-throughput.png"):
        assert name in files, files
    result = json.loads((out / runs[0]).read_text())
    result["_markdown"] = (out / f"{run_id}.md").read_text()
    return result


def test_run_records_machine_and_versions(smoke_result: dict) -> None:
    assert smoke_result["smoke"] is True
    machine = smoke_result["machine"]
    assert machine["cpu"]["logical_cores"] >= 1
    assert "gpu" in machine and "load_average_at_start" in machine
    assert smoke_result["versions"]["torch"]
    assert _number(smoke_result["wall_s"])


def test_training_numbers_for_every_variant(smoke_result: dict) -> None:
    variants = smoke_result["training"]["variants"]
    assert set(variants) == {"guide", "ours", "ours_fast"}
    for name, r in variants.items():
        for key in ("tokens_per_s", "loss_tokens_per_s", "peak_rss_mib", "train_runtime_s"):
            assert _number(r[key]) and r[key] > 0, (name, key, r[key])
        assert r["tokens"] > 0 and r["examples"] == r["steps"] * r["gradient_accumulation_steps"]
    # Ours puts only the plan in the loss; the guide's whole-text loss covers every position.
    assert variants["ours"]["loss_tokens"] < variants["ours"]["tokens"]
    assert (
        variants["guide"]["loss_tokens"]
        == variants["guide"]["tokens"] - variants["guide"]["examples"]
    )
    ratios = smoke_result["training"]["ratios"]
    assert _number(ratios["ours"]["tokens_per_s"])
    assert _number(ratios["ours_fast_vs_ours"]["tokens_per_s"])


def test_generation_numbers_for_every_engine(smoke_result: dict) -> None:
    gen = smoke_result["generation"]
    assert "trained by our trainer" in gen["settings"]["adapter_source"]
    for name in ("transformers", "guide"):
        engine = gen["engines"][name]
        assert [lv["concurrency"] for lv in engine["levels"]] == [1, 2], name
        for level in engine["levels"]:
            for key in ("requests_per_min", "generated_tokens_per_s", "valid_share"):
                assert _number(level[key]), (name, key, level)
        assert _number(engine["levels"][0]["latency_p50_s"])
        assert _number(engine["adapter_to_first_plan_s"])
        assert _number(engine["peak_rss_mib"])
    # The guide's engine is serial: level 2 repeats level 1's throughput, marked derived.
    assert gen["engines"]["guide"]["levels"][1]["derived_from_concurrency"] == 1
    assert _number(gen["ratios"]["transformers/guide"]["1"]["generated_tokens_per_s"])


def test_markdown_tables(smoke_result: dict) -> None:
    text = smoke_result["_markdown"]
    assert "### Training" in text and "### Generation" in text
    assert "| guide |" in text and "| ours_fast |" in text
    assert "GPU" in text


def test_api_overhead_measured(smoke_result: dict) -> None:
    api = smoke_result["generation"]["engines"]["transformers"]["api_overhead"]
    assert api["requests"] >= 1
    # Generated (200) or generated and invalid (502): never refused before the engine.
    assert {str(status) for status in api["http_statuses"]} <= {"200", "502"}, api
    assert _number(api["http_overhead_ms_p50"]) and _number(api["direct_overhead_ms_p50"])


def test_greedy_latency_answers_every_meeting(smoke_result: dict) -> None:
    gen = smoke_result["generation"]
    rows = gen["engines"]["transformers"]["greedy"]
    meetings = [m["meeting_id"] for m in gen["settings"]["meetings"]]
    assert [r["meeting_id"] for r in rows] == meetings[: gen["settings"]["requests"]["1"]]
    for row in rows:
        assert _number(row["latency_s"]) and row["latency_s"] > 0, row
        assert row["completion_tokens"] > 0, row
        # A validated plan has a digest; an invalid answer has none and says why.
        assert (row["answer"] is not None) == row["valid"] == (row["error"] is None), row
