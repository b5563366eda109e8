"""Importing the job service is cheap: the API and the sweep load it without the training stack."""

from __future__ import annotations

import subprocess
import sys


def test_importing_jobs_pulls_in_no_ml_framework_nor_web_stack() -> None:
    code = (
        "import sys, ttalkkac.jobs\n"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'peft', 'trl', 'fastapi', "
        "'celery') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
