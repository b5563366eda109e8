"""The launcher's process handling (``ttalkkac up``) with real processes: stop signals reach every
child, grandchildren are not left behind, a dead child is noticed, a launcher killed with -9
takes its children with it. The full launcher with the real API and worker runs in the smoke
test (tests/test_deploy_smoke.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ttalkkac.cli.up import ChildSpec, Supervisor

# A child that starts a grandchild (like vLLM's engine process or a Celery pool child), writes
# both pids, and exits on SIGTERM without stopping the grandchild.
CHILD = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(sys.argv[1], "w") as f:
        f.write(f"{os.getpid()} {grandchild.pid}")
    if sys.argv[2] == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif sys.argv[2] == "exit-3":
        time.sleep(0.5)
        sys.exit(3)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(path: Path, timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def _gone(pids: list[int], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _spec(tmp_path: Path, name: str, mode: str = "normal") -> ChildSpec:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return ChildSpec(name, [sys.executable, str(script), str(tmp_path / f"{name}.pids"), mode])


def test_stop_terminates_children_and_grandchildren(tmp_path: Path) -> None:
    sup = Supervisor([_spec(tmp_path, "a"), _spec(tmp_path, "b")], stop_timeout_s=5)
    sup.start()
    pids = _wait_for(tmp_path / "a.pids") + _wait_for(tmp_path / "b.pids")
    assert all(_alive(p) for p in pids)
    assert sup.wait(timeout_s=0.3, poll_s=0.05) == "timeout"
    started = time.monotonic()
    sup.stop()
    assert _gone(pids), [p for p in pids if _alive(p)]
    assert time.monotonic() - started < 5  # SIGTERM was enough; no waiting for the timeout
    assert all(c.proc.returncode is not None for c in sup.children)


def test_child_ignoring_sigterm_is_killed_after_timeout(tmp_path: Path) -> None:
    sup = Supervisor([_spec(tmp_path, "stubborn", "ignore-term")], stop_timeout_s=1)
    sup.start()
    pids = _wait_for(tmp_path / "stubborn.pids")
    time.sleep(0.2)  # let it install its handler
    started = time.monotonic()
    sup.stop()
    assert _gone(pids)
    assert 1 <= time.monotonic() - started < 10
    assert sup.children[0].proc.returncode == -signal.SIGKILL


def test_dead_child_is_reported(tmp_path: Path) -> None:
    sup = Supervisor([_spec(tmp_path, "ok"), _spec(tmp_path, "crash", "exit-3")])
    sup.start()
    try:
        assert sup.wait(poll_s=0.05, timeout_s=20) == "died"
        dead = sup.dead_child()
        assert dead is not None and dead.name == "crash" and dead.proc.returncode == 3
    finally:
        sup.stop()
    assert _gone(_wait_for(tmp_path / "ok.pids") + _wait_for(tmp_path / "crash.pids"))


LAUNCHER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from ttalkkac.cli.up import ChildSpec, Supervisor
    script, folder = sys.argv[2], sys.argv[3]
    sup = Supervisor(
        [ChildSpec(n, [sys.executable, script, f"{folder}/{n}.pids", "normal"]) for n in "xy"],
        stop_timeout_s=5,
    )
    sup.install_signal_handlers()
    sup.start()
    outcome = sup.wait(poll_s=0.05)
    sup.stop()
    print("outcome", outcome, flush=True)
    """
)


def _launcher(tmp_path: Path) -> subprocess.Popen[str]:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    repo = str(Path(__file__).resolve().parents[1])
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "launcher.py"), repo, str(tmp_path / "child.py"),
         str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_launcher_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    launcher = _launcher(tmp_path)
    pids = _wait_for(tmp_path / "x.pids") + _wait_for(tmp_path / "y.pids")
    launcher.send_signal(sig)
    out, _ = launcher.communicate(timeout=20)
    assert launcher.returncode == 0
    assert "outcome stop" in out
    assert _gone(pids)


def test_launcher_killed_hard_takes_children_with_it(tmp_path: Path) -> None:
    """kill -9 of the launcher: its children get SIGTERM from the kernel (PR_SET_PDEATHSIG)."""
    launcher = _launcher(tmp_path)
    x_child, _ = _wait_for(tmp_path / "x.pids")
    y_child, _ = _wait_for(tmp_path / "y.pids")
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait(timeout=10)
    assert _gone([x_child, y_child])


def test_up_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "ttalkkac.cli.main", "up", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DATA_DIR": str(tmp_path / "data")},
        )
    assert run.returncode == 2
    assert f"port {port}" in run.stderr


def test_broker_url_handed_down_keeps_its_kind(tmp_path: Path) -> None:
    """The launcher passes the embedded broker to its children as REDIS_URL=sqla+sqlite://..."""
    from ttalkkac.broker import resolve_broker
    from ttalkkac.settings import Settings

    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    broker = resolve_broker(Settings(data_dir=tmp_path, redis_url=url))
    assert (broker.url, broker.kind) == (url, "embedded")
    redis = resolve_broker(Settings(data_dir=tmp_path, redis_url="redis://h:6379/1"))
    assert redis.kind == "redis"


def test_up_stops_and_fails_when_the_engine_cannot_start(tmp_path: Path, postgres_url: str) -> None:
    """The real API with a base model that is not one: /ready says 'failed', the launcher
    reports it, stops the API and exits 1 instead of waiting for the ready timeout.

    With passwords in REDIS_URL and DATABASE_URL (trust auth ignores this one) and API keys
    set: no password in any line, and the probe still gets the engine's reason (with a key).
    """
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    database_url = postgres_url.replace("://postgres@", "://postgres:db-s3cret@")
    assert "db-s3cret" in database_url
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
        "REDIS_URL": "redis://:redis-s3cret@127.0.0.1:1/0",  # --no-worker: never connected
        "DATABASE_URL": database_url,
        "API_KEYS": "launcher-key",
    }
    run = subprocess.run(
        [sys.executable, "-m", "ttalkkac.cli.main", "up", "--no-worker", "--port", str(port),
         "--base-model", str(broken), "--ready-timeout", "240"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr[-3000:]
    assert "engine failed to start" in run.stderr
    # The reason itself, which /ready shows only with a key: the probe sent one.
    assert "failed to start: the engine failed to start" not in run.stderr
    assert "api stopped" in run.stderr
    assert run.stdout == ""  # the children's logs, vLLM's included, are all on stderr
    assert "probe=ttalkkac-up" not in run.stderr  # its /ready polls left out of the access log
    output = run.stdout + run.stderr
    assert "redis-s3cret" not in output and "db-s3cret" not in output
    assert "broker: redis://:***@127.0.0.1:1/0" in output
    assert "store: postgresql+psycopg://postgres:***@" in output
