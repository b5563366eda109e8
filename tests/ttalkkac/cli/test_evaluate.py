"""``ttalkkac eval`` against a running service: upload a folder, compare two, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.api_process import REPO_ROOT, Api, tiny_api_env
from tests.utils.serving import register_adapter
from tests.utils.training_data import write_tiny_gold
from ttalkkac.settings import Settings

pytestmark = pytest.mark.slow


def test_eval_compare_uploads_the_folder_and_writes_a_report(
    tmp_path: Path, terse_model_dir: Path, tiny_adapters: list[Path]
) -> None:
    env = tiny_api_env(tmp_path / "data", terse_model_dir)
    settings = Settings(data_dir=tmp_path / "data", database_url=env["DATABASE_URL"])
    settings.ensure_dirs()
    register_adapter(settings, "cli-tiny", tiny_adapters[0], base_model=str(terse_model_dir))
    write_tiny_gold(tmp_path / "gold", n=4)
    gold = tmp_path / "gold"
    api = Api(env, tmp_path / "api.log")
    try:
        api.wait_ready()
        out = tmp_path / "report"
        cmd = [sys.executable, "-m", "ttalkkac.cli.main", "eval", "--dataset", str(gold)]
        cmd += ["--compare", "base", "cli-tiny", "--url", api.url, "--split", "all"]
        cmd += ["--max-samples", "2", "--out", str(out), "--poll-s", "0.3", "--json"]
        done = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env
        )
    finally:
        api.stop()
    assert done.returncode == 0, done.stderr
    evaluations = json.loads(done.stdout)  # only the result on stdout
    assert [e["adapter"] for e in evaluations] == ["base", "cli-tiny"]
    assert all(e["status"] == "succeeded" and e["summary"]["n"] == 2 for e in evaluations)
    assert evaluations[0]["dataset_id"] == evaluations[1]["dataset_id"]  # uploaded once
    assert "uploading" in done.stderr and "queued" in done.stderr
    report = (out / "report.md").read_text()
    assert "| field_chrf |" in report and "delta" in report
    delta = evaluations[1]["summary"]["field_chrf"] - evaluations[0]["summary"]["field_chrf"]
    assert f"{delta:+.1f}" in report
    assert (out / "scores.png").read_bytes().startswith(b"\x89PNG")
