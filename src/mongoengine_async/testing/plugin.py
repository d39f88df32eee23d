"""The pytest plugin (``pytest11`` entry point, active whenever the package is
installed): replica-set and per-test database fixtures.

- ``mongodb_uri``: session-scoped fixture giving a replica-set URI.
- ``replica_set_3``: a 3-member :class:`ReplicaSet` (one per session) for
  failover tests, healed after each test.
- ``command_log``: a :class:`CommandLog` recording the commands (round trips)
  sent on the ``async_alias`` connection.
- ``async_alias``: function-scoped async fixture that connects the ``"default"``
  alias with :func:`mongoengine_async.connection.connect_async` to a fresh
  database, yields the alias name, then drops the database and disconnects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from mongoengine_async.testing.clients import CommandLog, fresh_database
from mongoengine_async.testing.replica_set import ReplicaSet, mongodb_uri

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]


@pytest.fixture(scope="session", name="mongodb_uri")
def _mongodb_uri_fixture() -> Iterator[str]:
    """Session-wide replica-set URI (``$MONGODB_URI`` or a throwaway server)."""
    with mongodb_uri() as uri:
        yield uri


@pytest.fixture(scope="session", name="_replica_set_3_shared")
def _replica_set_3_shared_fixture() -> Iterator[ReplicaSet]:
    """The session's 3-member set, started on first use."""
    with ReplicaSet(members=3) as replica_set:
        yield replica_set


@pytest.fixture(name="replica_set_3")
def _replica_set_3_fixture(
    _replica_set_3_shared: ReplicaSet,
) -> Iterator[ReplicaSet]:
    """A 3-member :class:`ReplicaSet` (never ``$MONGODB_URI``) a test may fail
    over; afterwards it is healed (:meth:`ReplicaSet.heal`) for the next."""
    yield _replica_set_3_shared
    _replica_set_3_shared.heal()


@pytest.fixture(name="command_log")
def _command_log_fixture() -> CommandLog:
    """The commands sent on the ``async_alias`` connection of this test."""
    return CommandLog()


if pytest_asyncio is None:

    @pytest.fixture(name="async_alias")
    def _async_alias_needs_pytest_asyncio() -> None:
        """Say that ``async_alias`` needs pytest-asyncio, not just "not found"."""
        pytest.fail(
            "the async_alias fixture needs pytest-asyncio: pip install pytest-asyncio",
            pytrace=False,
        )

else:

    @pytest_asyncio.fixture(name="async_alias")
    async def _async_alias_fixture(
        mongodb_uri: str, command_log: CommandLog
    ) -> AsyncIterator[str]:
        """Connect alias ``"default"`` asynchronously to a fresh database.

        Yields the alias name; afterwards drops the database and disconnects
        the async aliases the test connected (their clients are bound to this
        test's event loop); aliases connected before the test stay.
        """
        from mongoengine_async.connection import async_aliases, disconnect_async

        before = async_aliases()
        try:
            async with fresh_database(
                "default", mongodb_uri, event_listeners=[command_log]
            ) as alias:
                yield alias
        finally:
            for opened in async_aliases() - before:
                await disconnect_async(opened)
