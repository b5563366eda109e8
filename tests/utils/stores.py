"""The store on both backends, for tests whose behaviour leans on the database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ttalkkac.store.db import Base, Database

BACKENDS = ["sqlite", "postgresql"]


def store_on(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Database]:
    """A fixture body: ``request.param`` names the backend (parametrize with ``BACKENDS``)."""
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url)
    database.create_all()
    yield database
    if request.param == "postgresql":
        # The run's database is shared by the parametrized tests: leave it empty.
        Base.metadata.drop_all(database.engine)
    database.dispose()
