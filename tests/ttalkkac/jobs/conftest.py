"""A store per test and a pid that is surely dead, for the job service's state machine."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ttalkkac.settings import Settings
from ttalkkac.store.db import Database


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.resolved_database_url)
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def lost_worker(dead_pid: int) -> str:
    """A ``worker`` value naming a process of this host that is gone."""
    return f"{socket.gethostname()}:{dead_pid}"
