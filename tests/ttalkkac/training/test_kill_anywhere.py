"""A training process SIGKILLed at random points of training, checkpointing and publishing.

Each delivery runs in a process of its own (``tests.utils.train_child``: the real Trainer and
publish path on the tiny model, a checkpoint every step) and is killed at a random moment
after a randomly chosen step; the next delivery resumes what it left. After every kill the
job folder holds a finished run whose adapter loads, or no finished run at all; every
checkpoint a resume would pick loads; the last delivery ends with an adapter PEFT loads.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.utils.api_process import REPO_ROOT
from tests.utils.train_child import SPEC
from ttalkkac.training.layout import TRAINER_STATE_FILE, checkpoint_folders
from ttalkkac.training.report import RESULTS_FILE
from ttalkkac.training.trainer import ADAPTER_WEIGHTS, finished_results

pytestmark = pytest.mark.slow

KILLS = 6
SEED = 20261204


def deliver(
    base_model: Path,
    out: Path,
    run_id: str,
    *,
    kill_after_step: int | None = None,
    delay_s: float = 0.0,
) -> tuple[bool, list[str]]:
    """Run one delivery; with ``kill_after_step``, SIGKILL it ``delay_s`` after it reports that
    step (or its first step, if it resumed past it). Returns (killed, the lines it printed)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.utils.train_child", str(base_model), str(out), run_id],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    killed = False
    for line in child.stdout:
        lines.append(line.strip())
        step = int(line.split()[1]) if line.startswith("step ") else None
        if kill_after_step is not None and step is not None and step >= kill_after_step:
            time.sleep(delay_s)
            killed = child.poll() is None
            child.send_signal(signal.SIGKILL)
            break
    child.stdout.close()
    code = child.wait(timeout=120)
    assert killed or code == 0, (code, lines[-5:])
    return killed, lines


def assert_consistent(out: Path, base_model: Path) -> None:
    """A results file means a finished run whose adapter is whole; every checkpoint a resume
    would take (state written, weights there) has weights that load."""
    if (out / RESULTS_FILE).exists():
        finished = finished_results(out, spec=SPEC, base_model=str(base_model))
        assert finished is not None, "a results file marks an adapter that is not its own"
        assert load_file(str(out / ADAPTER_WEIGHTS))
    for folder in checkpoint_folders(out / "checkpoints"):
        try:
            json.loads((folder / TRAINER_STATE_FILE).read_text())
        except (OSError, ValueError):
            continue  # incomplete: a resume removes it
        if (folder / ADAPTER_WEIGHTS).is_file():
            assert load_file(str(folder / ADAPTER_WEIGHTS)), folder


def test_sigkill_anywhere_leaves_a_loadable_adapter_or_a_resumable_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    out = tmp_path / "job"
    landed = 0
    for i in range(KILLS):
        step = rng.randint(1, SPEC.max_steps)
        killed, lines = deliver(
            tiny_model_dir, out, f"{i}-k", kill_after_step=step, delay_s=rng.uniform(0, 0.6)
        )
        landed += killed
        assert_consistent(out, tiny_model_dir)
    assert landed >= KILLS // 2, f"only {landed} of {KILLS} kills hit a running delivery"

    killed, lines = deliver(tiny_model_dir, out, "last")
    assert not killed and lines[-1] == "done", lines[-5:]
    results = finished_results(out, spec=SPEC, base_model=str(tiny_model_dir))
    assert results is not None and results["global_step"] == SPEC.max_steps

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out))
    assert model.peft_config["default"].r == SPEC.lora.r
