"""``python -m bench quality --smoke``: the recipe's training step, then base and adapter
evaluated through a vLLM service (merged switch included) on real validation meetings, with the
result keys the README's Quality table reads."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_quality_smoke_writes_base_adapter_and_floor(
    tiny_model_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    cmd = [sys.executable, "-m", "bench", "quality", "--smoke", "--model", str(tiny_model_dir)]
    cmd += ["--out", str(tmp_path), "--samples", "2", "--max-meeting-chars", "600"]
    cmd += ["--max-tokens", "700"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [run] = [
        p
        for p in tmp_path.iterdir()
        if p.name.endswith("-quality.json") and not p.name.startswith("latest")
    ]
    # Its own latest copy: a quality run leaves the generation run's latest.* alone.
    assert (tmp_path / "latest-quality.json").is_file() and not (tmp_path / "latest.json").exists()
    quality = json.loads(run.read_text())["quality"]
    assert quality["training"]["global_step"] == 2  # the smoke recipe's steps, really trained
    for key in ("base", "adapter", "generic_floor"):
        figures = quality[key]
        assert 0 <= figures["field_chrf"] <= 100 and math.isfinite(figures["field_chrf"])
        assert 0 <= figures["valid_rate"] <= 1 and 0 <= figures["grounding"] <= 1
    for key in ("base", "adapter"):
        assert len(quality[key]["rows"]) == quality["examples"] == 2
    assert quality["generic_floor"]["valid_rate"] == 1.0  # gold plans are well-formed
    # Greedy decoding, same seed: the adapter's second evaluation repeats the first.
    assert quality["reproducibility"]["field_chrf_delta"] < 0.5
    markdown = run.with_suffix(".md").read_text()
    assert "generic floor" in markdown and "adapter (demo recipe)" in markdown
