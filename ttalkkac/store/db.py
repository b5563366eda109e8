"""Engine and sessions for the store. SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

_SCHEMA_LOCK = 0x7474_616C_6B6B  # advisory-lock key: "ttalkk"


class Base(DeclarativeBase):
    pass


class Database:
    """One engine and session factory per process; schema created at start-up."""

    def __init__(self, url: str) -> None:
        self.url = url
        connect_args: dict = {}
        if url.startswith("sqlite"):
            # The API's threadpool and the worker's callbacks share the file; wait on locks.
            connect_args = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        from ttalkkac.store import models  # noqa: F401  (registers the tables)

        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # API and worker start together on a fresh database (compose, tests): without a
                # lock, two concurrent CREATE TABLEs collide on pg_type. The lock is released at
                # commit; the second process then finds the tables and creates nothing.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            Base.metadata.create_all(conn)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessionmaker() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
