"""Tests of mongoengine_async.testing against a real mongod (no mocks)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pymongo
import pytest

from mongoengine_async.testing import (
    CommandLog,
    ReplicaSet,
    find_mongod,
    fresh_database,
    mongodb_uri,
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_find_mongod_returns_executable() -> None:
    path = find_mongod()
    assert os.path.isfile(path)
    assert os.access(path, os.X_OK)


def test_find_mongod_rejects_bad_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGOD", "/nonexistent/mongod")
    with pytest.raises(RuntimeError, match="MONGOD"):
        find_mongod()


def test_replica_set_lifecycle() -> None:
    rs = ReplicaSet()
    with rs:
        assert rs.running
        assert rs.uri.startswith("mongodb://127.0.0.1:")
        assert rs.uri.endswith("/?replicaSet=rs0")
        assert rs.process is not None
        pid = rs.process.pid
        dbpath = rs.dbpath
        assert dbpath is not None
        assert os.path.isdir(dbpath)

        with pymongo.MongoClient(rs.uri, serverSelectionTimeoutMS=10_000) as client:
            hello = client.admin.command("hello")
            assert hello["setName"] == "rs0"
            assert hello["isWritablePrimary"] is True

            coll = client.test_launcher.items
            with client.start_session() as session:
                session.with_transaction(
                    lambda s: coll.insert_one({"_id": 1, "v": "committed"}, session=s)
                )

            # A transaction that raises leaves nothing behind.
            def fail(s: pymongo.client_session.ClientSession) -> None:
                coll.insert_one({"_id": 2, "v": "rolled back"}, session=s)
                raise ValueError("abort")

            with client.start_session() as session, pytest.raises(ValueError):
                session.with_transaction(fail)

            assert list(coll.find()) == [{"_id": 1, "v": "committed"}]

    assert not rs.running
    assert not _pid_alive(pid)
    assert not os.path.exists(dbpath)
    rs.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        _ = rs.uri


def test_mongodb_uri_helper_uses_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", "mongodb://example.invalid/?replicaSet=x")
    with mongodb_uri() as uri:
        assert uri == "mongodb://example.invalid/?replicaSet=x"


def test_mongodb_uri_fixture_is_a_replica_set(mongodb_uri: str) -> None:
    with pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        hello = client.admin.command("hello")
        assert hello["isWritablePrimary"] is True
        assert hello.get("setName")
        coll = client.test_fixture.items
        with client.start_session() as session:
            session.with_transaction(lambda s: coll.insert_one({"x": 1}, session=s))
        assert coll.count_documents({"x": 1}) >= 1
        client.drop_database("test_fixture")


def test_cli_runs_command_with_uri() -> None:
    script = (
        "import os, sys, pymongo\n"
        "uri = os.environ['MONGODB_URI']\n"
        "c = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000)\n"
        "assert c.admin.command('hello')['setName'] == 'rs0'\n"
        "print(uri)\n"
        "sys.exit(7)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    cli = [sys.executable, "-m", "mongoengine_async.testing", "--"]
    proc = subprocess.run(
        [*cli, sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 7, proc.stderr
    port = int(proc.stdout.strip().split(":")[2].split("/")[0])
    # The server is gone once the CLI has returned.
    with (
        pymongo.MongoClient(
            "127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=300
        ) as client,
        pytest.raises(pymongo.errors.ServerSelectionTimeoutError),
    ):
        client.admin.command("ping")


async def test_async_alias_round_trip(async_alias: str) -> None:
    from mongoengine_async.connection import get_async_connection, get_async_db

    assert async_alias == "default"
    client = get_async_connection(async_alias)
    assert isinstance(client, pymongo.AsyncMongoClient)
    name = get_async_db(async_alias).name
    assert name.startswith("test_")
    coll = client[name]["things"]
    await coll.insert_one({"_id": "a", "n": 1})
    assert await coll.find_one({"_id": "a"}) == {"_id": "a", "n": 1}


async def test_fresh_database_is_dropped_and_its_alias_disconnected(
    async_alias: str, mongodb_uri: str
) -> None:
    from mongoengine_async.connection import ConnectionFailure, get_async_db

    log = CommandLog()
    async with fresh_database("fresh", mongodb_uri, event_listeners=[log]) as alias:
        database = get_async_db(alias)
        await database.things.insert_one({"id": uuid.uuid4()})  # standard UUIDs
        assert log.names == ["insert"]
    assert alias == "fresh"
    assert database.name not in await get_async_db().client.list_database_names()
    with pytest.raises(ConnectionFailure, match="fresh"):
        get_async_db(alias)


USER_TEST = """
from mongoengine_async import get_async_db

async def test_writes(async_alias):
    db = get_async_db(async_alias)
    await db.things.insert_one({"n": 1})
    print("DATABASE", db.name)
"""


def test_async_alias_drops_its_database(mongodb_uri: str, tmp_path: Path) -> None:
    """A user's test run with the plugin: its database is gone afterwards."""
    (tmp_path / "test_user.py").write_text(USER_TEST)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            str(tmp_path / "test_user.py"),
        ],
        cwd=tmp_path,
        env={**os.environ, "MONGODB_URI": mongodb_uri},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [name] = [
        line.split()[1] for line in proc.stdout.splitlines() if "DATABASE" in line
    ]
    assert name.startswith("test_")
    with pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        assert name not in client.list_database_names()
