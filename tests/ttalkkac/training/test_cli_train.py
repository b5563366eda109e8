"""``ttalkkac train`` in the foreground: gold folders in, adapter and results out."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.utils.training_data import write_tiny_gold
from ttalkkac.cli.main import app
from ttalkkac.cli.train import SCORE_HINT, default_out_dir

pytestmark = pytest.mark.slow


def test_default_out_dir_is_the_guides_naming() -> None:
    out = default_out_dir("Qwen/Qwen3-4B", datetime(2025, 7, 31, 10, 49, 12))
    assert out == Path("Qwen3-4B_lora_ttalkkac_20250731_104912")


def test_train_writes_adapter_and_results(tiny_model_dir: Path, tmp_path: Path, one_thread) -> None:
    gold = write_tiny_gold(tmp_path / "gold", n=5, score=6.0)
    out = tmp_path / "run"
    args = [
        "train",
        "--gold", str(gold.results),
        "--meetings", str(gold.meetings),
        "--base-model", str(tiny_model_dir),
        "--out", str(out),
        "--min-quality", "6",
        "--max-steps", "4",
        "--grad-accum", "1",
        "--eval-steps", "2",
        "--max-seq-len", "512",
        "--val-fraction", "0.2",
        "--lora-r", "4",
        "--target-modules", "q_proj,v_proj",
        "--report-to", "tensorboard",
        "--keep-checkpoints",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["global_step"] == 4 and summary["out"] == str(out)
    assert set(summary) == {
        "train_loss",
        "eval_loss",
        "best_eval_loss",
        "global_step",
        "train_runtime",
        "train_tokens_per_second",
        "out",
    }
    # Validity is scored by the service's evaluation: one line says how, after the summary.
    hint = [line for line in result.stderr.splitlines() if "ttalkkac eval" in line]
    assert hint == [SCORE_HINT]
    assert "ttalkkac eval --adapter NAME --dataset DATASET" in SCORE_HINT
    results = json.loads((out / "training_results.json").read_text())
    assert results["train_loss"] is not None and results["eval_loss"] is not None
    assert results["hyperparameters"]["lora"]["r"] == 4
    assert results["hyperparameters"]["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert results["data"]["loader"]["usable"] == 5
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert (out / "adapter_model.safetensors").is_file() and (out / "loss.png").is_file()


def test_train_refuses_bad_values_and_empty_filters(tiny_model_dir: Path, tmp_path: Path) -> None:
    gold = write_tiny_gold(tmp_path / "gold", n=3, score=6.0)
    base = ["train", "--gold", str(gold.results), "--meetings", str(gold.meetings)]
    base += ["--base-model", str(tiny_model_dir), "--out", str(tmp_path / "x")]
    result = CliRunner().invoke(app, [*base, "--lora-r", "0"])
    assert result.exit_code == 2 and "lora.r" in result.output
    result = CliRunner().invoke(app, base)  # default --min-quality 7 keeps none of the 6.0s
    assert result.exit_code == 1 and "min-quality" in result.output
    assert not (tmp_path / "x").exists()


def test_mlflow_without_a_tracking_uri_is_refused_before_loading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ttalkkac.settings import get_settings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            ["train", "--gold", "nowhere", "--meetings", "nowhere", "--report-to", "mlflow"],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "MLFLOW_TRACKING_URI" in result.output
