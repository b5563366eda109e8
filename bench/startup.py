"""Fresh clone -> ready and restart -> ready: the README's first command, timed by its phases.

``python -m bench startup`` clones this repository's committed HEAD into a temporary folder
and runs ``./scripts/serve.sh`` there with empty caches of its own (uv's downloads, vLLM's
compile cache; pip's cache and the machine's Redis are the machine's), until it prints
"Ttalkkac is ready."; then stops it (Ctrl-C) and starts it again in the same folder. Each
phase is the moment its line first appears in the output, from the command's start:

- ``installed``: ``scripts/install.sh`` done (uv, cold cache);
- ``demo_model``: the demo model built into ``var/models/`` (first start only);
- ``engine``: the vLLM engine ready (compiled; on a restart from the compile cache);
- ``warm_up``: the warm-up generation done;
- ``ready``: "Ttalkkac is ready." (the console's address printed).

Run it alone on the machine: every phase is CPU-bound.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
GOALS_S = {"fresh_clone": 240.0, "restart": 45.0}
PHASES = {
    "installed": "ttalkkac: installed into .venv",
    "demo_model": "built demo model at",
    "engine": "vLLM engine ready",
    "warm_up": "warm-up generation done",
    "ready": "Ttalkkac is ready.",
}
ENGINE_S = re.compile(r"vLLM engine ready: .* in ([0-9.]+) s")
CACHE_LOADED = "Directly load AOT compilation"
CACHE_MISSED = "Compiling model again"


def _start(folder: Path, env: dict[str, str], log: Path, port: int) -> tuple[subprocess.Popen, Any]:
    out = log.open("w")
    process = subprocess.Popen(
        ["./scripts/serve.sh", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, out


def _timed(folder: Path, env: dict[str, str], log: Path, port: int, timeout_s: float) -> dict:
    """Start the service, time each phase's line, stop it; the phases and what the log said."""
    started = time.monotonic()
    process, out = _start(folder, env, log, port)
    seen: dict[str, float] = {}
    try:
        while "ready" not in seen:
            if process.poll() is not None:
                raise RuntimeError(f"serve.sh exited ({process.returncode}): see {log}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"not ready after {timeout_s:.0f} s: see {log}")
            text = log.read_text(errors="replace")
            for phase, marker in PHASES.items():
                if phase not in seen and marker in text:
                    seen[phase] = round(time.monotonic() - started, 1)
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        out.close()
    text = log.read_text(errors="replace")
    engine = ENGINE_S.search(text)
    return {
        "phases_s": seen,
        "ready_s": seen["ready"],
        "engine_start_s": float(engine.group(1)) if engine else None,
        "compile_cache_loaded": CACHE_LOADED in text,
        "compile_cache_load_failed": CACHE_MISSED in text,
    }


def run_startup(*, port: int = 8765, timeout_s: float = 900, keep: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ttalkkac-startup-"))
    try:
        folder = work / "ttalkkac"
        subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(folder)], check=True)
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        env = {
            **os.environ,
            "UV_CACHE_DIR": str(work / "uv-cache"),
            "VLLM_CACHE_ROOT": str(work / "vllm-cache"),
        }
        for name in ("VIRTUAL_ENV", "DATA_DIR", "BASE_MODEL", "DATABASE_URL"):
            env.pop(name, None)
        fresh = _timed(folder, env, work / "fresh.log", port, timeout_s)
        restart = _timed(folder, env, work / "restart.log", port, timeout_s)
        for name, run in (("fresh_clone", fresh), ("restart", restart)):
            run["goal_s"] = GOALS_S[name]
            run["met"] = run["ready_s"] <= GOALS_S[name]
        return {"commit": commit, "fresh_clone": fresh, "restart": restart}
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
