#!/usr/bin/env python
"""Smoke test of the README's newcomer path, end to end, through the one-command launcher.

Starts ``ttalkkac up`` on a free port with a fresh data folder, waits for ``/ready``, uploads a
small gold-standard dataset cut from ``../shared/data`` (a few meetings, shortened), trains a
LoRA adapter for a few steps with ``POST /train``, waits for ``succeeded``, asks ``POST
/generate`` for a plan with the new adapter and validates it, then stops the launcher with
SIGINT (Ctrl-C) and checks that no process it started is left.

    .venv/bin/python scripts/smoke.py                    # tiny random Qwen3 (fast, CI)
    .venv/bin/python scripts/smoke.py --model demo       # the SmolLM2-135M demo model
    .venv/bin/python scripts/smoke.py --broker embedded  # as on a machine without Redis

Prints a JSON summary (timings included) and exits non-zero on the first failed step.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ttalkkac.plan import ProjectPlan  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
GOLD = SHARED / "ttalkkac_gold_standard_results_20250731_104912"
MEETINGS = SHARED / "batch_triplet_results"
TERMINAL = {"succeeded", "failed", "cancelled"}

log = logging.getLogger("smoke")


class SmokeFailure(RuntimeError):
    pass


# --- data -------------------------------------------------------------------------------------


def build_dataset_zip(n_meetings: int, max_utterances: int) -> tuple[bytes, str]:
    """A zip in the gold layout: the first standard records, their meetings cut short.

    Returns the zip and the text of the first (shortened) meeting, for ``/generate``.
    """
    buf, first_meeting = io.BytesIO(), ""
    picked = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for record_dir in sorted(GOLD.iterdir()):
            if picked == n_meetings:
                break
            result = record_dir / "result.json"
            meeting_name = record_dir.name.split("_", 2)[2]
            meeting = MEETINGS / meeting_name / "05_final_result.json"
            if not result.is_file() or not meeting.is_file():
                continue
            utterances = json.loads(meeting.read_text(encoding="utf-8"))[:max_utterances]
            zf.writestr(f"{GOLD.name}/{record_dir.name}/result.json", result.read_bytes())
            zf.writestr(
                f"{MEETINGS.name}/{meeting_name}/05_final_result.json",
                json.dumps(utterances, ensure_ascii=False),
            )
            if not first_meeting:
                first_meeting = "\n".join(
                    f"[{u.get('timestamp') or ''}] {u['speaker']}: {u['text']}" for u in utterances
                )
            picked += 1
    if picked < n_meetings:
        raise SmokeFailure(f"only {picked} usable meetings under {SHARED}")
    return buf.getvalue(), first_meeting


def resolve_model(choice: str, work: Path) -> str:
    if choice == "tiny":
        from tests.utils.tiny_model import build_tiny_qwen3

        # 8,192 positions: a random model fills every string of the schema to its bound, so its
        # plans run to several thousand tokens and need the room.
        return str(build_tiny_qwen3(work / "tiny-qwen3", max_position_embeddings=8192))
    if choice == "demo":
        from ttalkkac.demo_model import ensure_demo_model
        from ttalkkac.settings import Settings

        # The user's models folder (DATA_DIR/models), so the demo model is built only once.
        return str(ensure_demo_model(Settings().models_dir))
    return choice


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = _ppid(int(entry))
            if ppid is not None:
                parents[int(entry)] = ppid
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def processes_with_env(marker: str) -> list[tuple[int, str]]:
    """Live processes whose environment holds ``marker`` (our unique DATA_DIR)."""
    needle = marker.encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        out.append((int(entry), cmd))
    return out


# --- HTTP --------------------------------------------------------------------------------------


def _check(response: httpx.Response, *expected: int) -> Any:
    if response.status_code not in expected:
        raise SmokeFailure(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text[:2000]}"
        )
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def wait_ready(client: httpx.Client, launcher: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            raise SmokeFailure(f"the launcher exited with {launcher.returncode} before /ready")
        try:
            if client.get("/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SmokeFailure(f"/ready not 200 after {timeout_s:.0f} s")


def wait_job(client: httpx.Client, job_id: str, timeout_s: float) -> tuple[dict, list[dict]]:
    deadline, after, events = time.monotonic() + timeout_s, 0, []
    while time.monotonic() < deadline:
        page = _check(client.get(f"/train/{job_id}/events", params={"after": after}), 200)
        for event in page["data"]:
            events.append(event)
            after = max(after, event["seq"])
            log.info("job event %s: %s", event.get("type"), json.dumps(event.get("data"))[:200])
        job = _check(client.get(f"/train/{job_id}"), 200)
        if job["status"] in TERMINAL:
            return job, events
        time.sleep(2)
    raise SmokeFailure(f"job {job_id} not finished after {timeout_s:.0f} s")


# --- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    summary.update(model=args.model, broker=args.broker)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ttalkkac-smoke-"))
    data_dir = work / "data"
    model = resolve_model(args.model, work)
    summary["base_model"] = model
    run_id = uuid.uuid4().hex[:8]
    port = args.port or free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # The machine's Redis is shared with other runs: a queue and key prefix of our own.
        "TRAINING_QUEUE": f"smoke_{run_id}",
        "BROKER_KEY_PREFIX": f"smoke_{run_id}:",
        "LOG_LEVEL": "INFO",
    }
    env.pop("DATABASE_URL", None)  # the launcher's default: SQLite under DATA_DIR
    if args.broker == "embedded":
        env["REDIS_URL"] = f"sqla+sqlite:///{data_dir / 'broker.sqlite'}"
    elif args.broker == "auto":
        env.pop("REDIS_URL", None)
    if args.max_model_len:
        env["MAX_MODEL_LEN"] = str(args.max_model_len)

    log_path = work / "launcher.log"
    cmd = [sys.executable, "-m", "ttalkkac.cli.main", "up", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--base-model", model, "--stop-timeout", "30"]
    log.info("starting: %s (log: %s)", " ".join(cmd), log_path)
    with log_path.open("wb") as log_file:
        launcher = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    summary["log"] = str(log_path)
    children: set[int] = set()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        wait_ready(client, launcher, args.ready_timeout)
        summary["ready_s"] = round(time.monotonic() - t0, 1)
        log.info("ready after %.1f s", summary["ready_s"])
        time.sleep(1)  # the launcher prints its banner right after /ready answers
        if "/docs" not in log_path.read_text(errors="replace"):
            raise SmokeFailure("the launcher did not print where /docs is")
        _check(client.get("/docs"), 200)
        children = descendants(launcher.pid)
        summary["processes_while_running"] = len(children)

        # 1. upload a dataset
        blob, meeting = build_dataset_zip(args.meetings, args.utterances)
        t = time.monotonic()
        dataset = _check(
            client.post(
                "/datasets",
                files={"file": ("smoke-gold.zip", blob, "application/zip")},
                data={"name": f"smoke-{run_id}"},
            ),
            200,
            201,
        )
        summary["dataset"] = {"id": dataset["id"], "stats": dataset.get("stats")}
        summary["upload_s"] = round(time.monotonic() - t, 2)

        # 2. train a few steps
        t = time.monotonic()
        hyper = {
            "max_steps": args.steps,
            "gradient_accumulation_steps": 1,
            "logging_steps": 1,
            "eval_steps": max(1, args.steps // 2),
            "warmup_steps": 0,
            "min_quality": 0,
            "include_unscored": True,
            "max_seq_len": args.max_seq_len,
        }
        job = _check(
            client.post(
                "/train",
                json={"dataset_id": dataset["id"], "hyperparameters": hyper, "suffix": "smoke"},
            ),
            202,
        )
        job, events = wait_job(client, job["id"], args.train_timeout)
        summary["train_s"] = round(time.monotonic() - t, 1)
        summary["job"] = {k: job.get(k) for k in ("id", "status", "error", "progress", "metrics")}
        if job["status"] != "succeeded":
            raise SmokeFailure(f"job ended {job['status']}: {job.get('error')}")
        adapter_name = job.get("adapter_name") or (job.get("adapter") or {}).get("name")
        if not adapter_name:
            raise SmokeFailure(f"succeeded job names no adapter: {job}")
        summary["adapter"] = adapter_name
        summary["events"] = len(events)
        adapter = _check(client.get(f"/adapters/{adapter_name}"), 200)
        summary["adapter_metrics"] = adapter.get("metrics")

        # 3. generate with the new adapter
        t = time.monotonic()
        answer = _check(
            client.post(
                "/generate",
                json={
                    "meeting": meeting,
                    "adapter": adapter_name,
                    "max_tokens": args.max_tokens,
                    "temperature": args.temperature,
                },
                timeout=args.generate_timeout,
            ),
            200,
        )
        summary["generate_s"] = round(time.monotonic() - t, 2)
        if answer.get("adapter") != adapter_name:
            raise SmokeFailure(f"/generate used {answer.get('adapter')!r}, not {adapter_name!r}")
        plan = ProjectPlan.model_validate(answer["plan"])
        summary["plan_project_name"] = plan.project_name
        summary["usage"] = answer.get("usage")
    finally:
        children |= descendants(launcher.pid)
        t = time.monotonic()
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            launcher.wait(timeout=args.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
            raise SmokeFailure("the launcher did not stop after Ctrl-C") from None
        summary["stop_s"] = round(time.monotonic() - t, 1)
        summary["launcher_exit_code"] = launcher.returncode
        client.close()

    # Grandchildren the launcher signalled (vLLM's engine core, Celery's pool child) may still be
    # exiting on a loaded machine: give them a bounded grace period, then nothing may remain.
    deadline = time.monotonic() + 20
    while True:
        left = [pid for pid in children if _ppid(pid) is not None and _is_live(pid)]
        left_env = processes_with_env(str(data_dir))
        if not (left or left_env) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    summary["left_running"] = sorted(set(left) | {pid for pid, _ in left_env})
    if summary["left_running"]:
        raise SmokeFailure(f"processes left running after stop: {left_env or left}")
    if launcher.returncode != 0:
        raise SmokeFailure(f"the launcher exited with {launcher.returncode} after Ctrl-C")
    summary["total_s"] = round(time.monotonic() - t0, 1)


def _is_live(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny | demo | a model folder or id")
    parser.add_argument("--broker", choices=["auto", "embedded", "env"], default="auto",
                        help="auto: what `ttalkkac up` picks; embedded: SQLite broker; env: REDIS_URL as set")  # fmt: skip
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--meetings", type=int, default=4)
    parser.add_argument("--utterances", type=int, default=12, help="utterances kept per meeting")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--max-model-len", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=6144, help="/generate answer budget")
    parser.add_argument("--temperature", type=float, default=0.0, help="/generate temperature")
    parser.add_argument("--ready-timeout", type=float, default=600)
    parser.add_argument("--generate-timeout", type=float, default=900)
    parser.add_argument("--train-timeout", type=float, default=900)
    parser.add_argument("--stop-timeout", type=float, default=90)
    parser.add_argument("--json-out", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s smoke: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not GOLD.is_dir() or not MEETINGS.is_dir():
        print(f"error: shared data not found under {SHARED}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {}
    ok = True
    try:
        run(args, summary)
    except Exception as exc:  # every failure ends in the summary, with the launcher's log
        ok = False
        summary["error"] = f"{type(exc).__name__}: {exc}"
        log.error("FAILED: %s", exc)
        if "log" in summary:
            tail = Path(summary["log"]).read_text(errors="replace")[-6000:]
            print(f"--- launcher log (tail) ---\n{tail}\n---", file=sys.stderr)
    summary["ok"] = ok
    text = json.dumps(summary, ensure_ascii=False, indent=2, default=str)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
