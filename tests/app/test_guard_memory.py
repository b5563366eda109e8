"""A 1 GiB chunked upload to a real API process: its memory and temporary disk stay bounded.

The API runs in a process of its own (``ttalkkac api``, serving off) with ``API_KEYS`` set and
``MAX_UPLOAD_BYTES`` of 64 MiB. While a client sends up to 1 GiB over loopback, a sampler reads
the process's resident memory (``/proc/<pid>/status``) and the bytes under its temporary
folder (``TMPDIR``, where multipart parts spool) and ``DATA_DIR`` every 20 ms. Without a key the
answer is 401 while the client is still sending; with one, over the limit, 413. In neither case
does memory grow, or the disk fill, by twice the limit at any moment.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.utils.api_process import Api
from tests.utils.chunked_upload import MIB, TOTAL, multipart_head, send_chunked_until_answered

pytestmark = pytest.mark.slow

LIMIT = 64 * MIB
KEY = "k-" + uuid.uuid4().hex


@dataclass
class Served:
    api: Api
    watched: list[Path]  # TMPDIR and DATA_DIR


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("guard-memory")
    data, spool = root / "data", root / "tmp"
    spool.mkdir()
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{root / 'ttalkkac.db'}",
        "SERVING_ENABLED": "false",
        "WARMUP": "false",
        "API_KEYS": KEY,
        "MAX_UPLOAD_BYTES": str(LIMIT),
        "TMPDIR": str(spool),
    }
    api = Api(env, root / "api.log")
    try:
        api.wait_ready(path="/health")  # serving is off: /ready would not say 200
        yield Served(api, [spool, data])
    finally:
        api.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def disk_bytes(folders: list[Path], pid: int | None = None) -> int:
    """Bytes in files under ``folders``, plus those ``pid`` holds open after unlinking them
    (a spooled upload part is a ``TemporaryFile``: no name in any folder)."""
    total = 0
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(OSError):  # removed while we looked
                    total += os.lstat(os.path.join(dirpath, name)).st_size
    if pid is not None:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).endswith(" (deleted)") and stat.S_ISREG(fd.stat().st_mode):
                    total += fd.stat().st_size
    return total


class Peaks:
    """The most memory and disk seen, above what there was at the start, while running."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.rss0 = rss_bytes(served.api.proc.pid)
        self.disk0 = disk_bytes(served.watched, served.api.proc.pid)
        self.rss = self.disk = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.rss = max(self.rss, rss_bytes(self.served.api.proc.pid) - self.rss0)
            self.disk = max(
                self.disk, disk_bytes(self.served.watched, self.served.api.proc.pid) - self.disk0
            )
            self._stop.wait(0.02)

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.mark.parametrize(
    ("path", "head", "headers", "status"),
    [
        ("/train", b'{"dataset_id": "', {}, 401),
        ("/datasets", multipart_head(), {}, 401),
        ("/datasets", multipart_head(), {"Authorization": f"Bearer {KEY}"}, 413),
        ("/train", b'{"dataset_id": "', {"Authorization": f"Bearer {KEY}"}, 413),
    ],
    ids=["train-no-key", "datasets-no-key", "datasets-over-limit", "train-over-limit"],
)
def test_a_1_gib_upload_keeps_memory_and_disk_below_twice_the_limit(
    served: Served, path: str, head: bytes, headers: dict[str, str], status: int
) -> None:
    address = ("127.0.0.1", served.api.port)
    with Peaks(served) as peaks:
        answer, sent = send_chunked_until_answered(address, path, head, headers)
        time.sleep(0.2)  # a last sample after the answer, while anything spooled would remain
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:300]
    assert sent < TOTAL // 4, f"the client got {sent:,} bytes out before the answer"
    assert peaks.rss < 2 * LIMIT, f"memory grew by {peaks.rss:,} bytes"
    assert peaks.disk < 2 * LIMIT, f"{peaks.disk:,} bytes on disk"
    assert disk_bytes(served.watched, served.api.proc.pid) - peaks.disk0 < MIB, (
        "an upload's bytes were left behind"
    )
    print(
        f"{path} {status}: sent {sent / MIB:.1f} MiB, memory +{peaks.rss / MIB:.1f} MiB, "
        f"disk +{peaks.disk / MIB:.1f} MiB"
    )
