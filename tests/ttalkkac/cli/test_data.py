"""``ttalkkac data inspect|export`` on the real data, through the real console script too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import GOLD_DIR, MEETINGS_DIR, REPO_ROOT
from tests.utils.gold_factory import GoldFolder, standard_record
from ttalkkac.cli.main import app
from ttalkkac.data.jsonl import read_chat_jsonl

runner = CliRunner()
REAL = [str(GOLD_DIR), "--meetings", str(MEETINGS_DIR)]


def test_inspect_json_reports_real_counts(shared_data: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", *REAL, "--min-quality", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["records"] == 263
    assert report["usable"] == 235
    assert report["train"] + report["val"] == 235
    assert report["skipped"] == {"bad_plan_json": 2, "no_plan": 1, "unscored_excluded": 25}
    assert report["shapes"]["notion_output"] == 237
    assert "tokens" not in report


def test_inspect_default_threshold_fails_clearly(shared_data: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", *REAL])
    assert result.exit_code == 1
    assert "no usable gold records" in result.stderr
    assert "--min-quality" in result.stderr and "263 records" in result.stderr
    as_json = runner.invoke(app, ["data", "inspect", *REAL, "--json"])
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert "--min-quality" in report["error"] and report["stats"]["records"] == 263


def test_console_script_acceptance(shared_data: Path) -> None:
    """The README's command through the installed entry point: 263 records, non-zero default."""
    script = Path(sys.executable).with_name("ttalkkac")
    gold = "../shared/data/ttalkkac_gold_standard_results_20250731_104912"
    meetings = "../shared/data/batch_triplet_results"
    base = [str(script), "data", "inspect", gold, "--meetings", meetings]
    ok = subprocess.run(
        [*base, "--min-quality", "0", "--json"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["records"] == 263 and report["usable"] > 0
    failed = subprocess.run(base, cwd=REPO_ROOT, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "--min-quality" in failed.stderr


def test_inspect_human_tables(tmp_path: Path) -> None:
    gold = GoldFolder(tmp_path)
    gold.pair("train_001_result_회의 (1)", "result_회의 (1)", standard_record(score=8.0))
    gold.pair("val_001_result_B", "result_B", standard_record(score=9.0))
    gold.record("train_002_result_C", raw="{")
    args = [str(gold.results), "--meetings", str(gold.meetings)]
    result = runner.invoke(app, ["data", "inspect", *args])
    assert result.exit_code == 0, result.output
    for text in ("Gold data", "records", "Skipped records", "bad_json", "val_folders"):
        assert text in result.stdout


@pytest.mark.slow
def test_inspect_with_tokenizer_reports_token_lengths(tmp_path: Path, demo_model_dir: Path) -> None:
    gold = GoldFolder(tmp_path)
    gold.pair("train_001_result_A", "result_A", standard_record(score=8.0))
    gold.pair("train_002_result_B", "result_B", standard_record(score=8.0))
    args = [str(gold.results), "--meetings", str(gold.meetings), "--tokenizer", str(demo_model_dir)]
    result = runner.invoke(app, ["data", "inspect", *args, "--max-seq-len", "1200", "--json"])
    assert result.exit_code == 0, result.output
    tokens = json.loads(result.stdout)["tokens"]
    assert tokens["max_seq_len"] == 1200 and tokens["records"] == 2
    assert tokens["examples"] + sum(tokens["dropped"].values()) == 2
    assert tokens["answer_tokens"]["p50"] > 100
    assert set(tokens["prompt_tokens"]) == {"p0", "p50", "p90", "p95", "p99", "p100"}
    human = runner.invoke(app, ["data", "inspect", *args])
    assert human.exit_code == 0 and "Tokens (max_seq_len 4096)" in human.stdout


def test_export_writes_chat_jsonl(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "gold.jsonl"
    args = ["data", "export", *REAL, "--min-quality", "0", "--out", str(out), "--with-metadata"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote 235 examples to {out}" in result.stdout
    records, stats = read_chat_jsonl(out)
    assert stats.records == 235 and not stats.skipped
    assert sum(r.split == "val" for r in records) == 24
    val_only = tmp_path / "val.jsonl"
    args = ["data", "export", *REAL, "--min-quality", "0", "--out", str(val_only), "--split", "val"]
    assert runner.invoke(app, args).exit_code == 0
    lines = val_only.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 24 and set(json.loads(lines[0])) == {"messages"}
    failed = runner.invoke(app, ["data", "export", *REAL, "--out", str(tmp_path / "x.jsonl")])
    assert failed.exit_code == 1 and not (tmp_path / "x.jsonl").exists()


@pytest.mark.slow
def test_export_with_tokenizer_shortens_transcripts(
    shared_data: Path, tmp_path: Path, demo_model_dir: Path
) -> None:
    out = tmp_path / "short.jsonl"
    args = ["data", "export", *REAL, "--min-quality", "0", "--out", str(out)]
    args += ["--split", "val", "--tokenizer", str(demo_model_dir), "--max-seq-len", "4096"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records, _stats = read_chat_jsonl(out)
    assert len(records) == 24
    assert sum(r.meeting_text.endswith("...(이하 생략)") for r in records) >= 20


def test_data_modules_do_not_import_ml_frameworks() -> None:
    code = (
        "import sys, ttalkkac.cli.data, ttalkkac.data.gold, ttalkkac.data.examples, "
        "ttalkkac.data.jsonl, ttalkkac.demo_model\n"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'peft', 'trl') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
