"""Tests of mongoengine_async.testing against a real mongod (no mocks)."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pymongo
import pytest

from mongoengine_async import Document, IntField
from mongoengine_async.testing import (
    CommandLog,
    ReplicaSet,
    drop_database,
    fail_command,
    find_mongod,
    fresh_database,
    mongodb_uri,
)
from mongoengine_async.testing import __main__ as launcher
from mongoengine_async.testing.replica_set import _free_port


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


async def test_drop_database_drops_views_time_series_and_files_without_dropdatabase(
    mongodb_uri: str,
) -> None:
    """Every kind of collection goes, the database with them, and no
    dropDatabase is sent (it waits for a journal commit: 100 ms a test)."""
    log = CommandLog()
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
        mongodb_uri, event_listeners=[log]
    )
    name = f"test_drop_{uuid.uuid4().hex[:8]}"
    database = client[name]
    try:
        await database.things.insert_one({"n": 1})
        await database.create_collection("view", viewOn="things", pipeline=[])
        await database.create_collection("series", timeseries={"timeField": "t"})
        await database.series.insert_one({"t": datetime.datetime.now()})
        await database["fs.files"].insert_one({"length": 0})
        assert "system.views" in await database.list_collection_names()
        log.clear()
        await drop_database(client, name)
        assert "dropDatabase" not in log.names
        assert log.count("drop") == 5  # things, view, series, fs.files, system.views
        assert name not in await client.list_database_names()
    finally:
        await client.close()


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


def _run_user_suite(
    tmp_path: Path, uri: str, test: str, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``test`` (a user's test module) with pytest and the plugin."""
    (tmp_path / "test_user.py").write_text(test)
    options = ("-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    return subprocess.run(
        [sys.executable, "-m", "pytest", *options, str(tmp_path / "test_user.py")],
        cwd=tmp_path,
        env={**os.environ, **(env or {}), "MONGODB_URI": uri},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_fresh_database_leaves_out_the_database_a_uri_names(
    mongodb_uri: str,
) -> None:
    from mongoengine_async.connection import get_async_db

    named = f"kit_named_{uuid.uuid4().hex[:8]}"
    head, _, query = mongodb_uri.partition("?")
    uri = f"{head.rstrip('/')}/{named}?{query}"
    async with fresh_database("named", uri) as alias:
        name = get_async_db(alias).name
        await get_async_db(alias).things.insert_one({"n": 1})
    assert name.startswith("test_")
    with pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        assert named not in client.list_database_names()
        assert name not in client.list_database_names()


async def test_fresh_database_drops_it_when_the_test_disconnected(
    mongodb_uri: str,
) -> None:
    from mongoengine_async.connection import disconnect_async, get_async_db

    async with fresh_database("gone", mongodb_uri) as alias:
        name = get_async_db(alias).name
        await get_async_db(alias).things.insert_one({"n": 1})
        await disconnect_async(alias)
    with pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        assert name not in client.list_database_names()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A standalone ``mongod --auth`` with user ``u`` (password ``p``) in
    database ``kit_users``; yields its port."""
    port = _free_port()
    dbpath = tmp_path_factory.mktemp("auth")
    options = f"--auth --port {port} --bind_ip 127.0.0.1 --dbpath {dbpath}"
    server = subprocess.Popen(
        [find_mongod(), *options.split(), "--nounixsocket"], stdout=subprocess.DEVNULL
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=30_000) as client:
            # the localhost exception lets a first user into admin only
            client.admin.command("createUser", "a", pwd="a", roles=["root"])
        with pymongo.MongoClient(uri, username="a", password="a") as client:
            root = {"role": "root", "db": "admin"}
            client.kit_users.command("createUser", "u", pwd="p", roles=[root])
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


async def test_command_log_leaves_out_authentication(auth_server: int) -> None:
    from mongoengine_async.connection import get_async_db

    log = CommandLog()  # u authenticates on the URI's database, not on admin
    uri = f"mongodb://u:p@127.0.0.1:{auth_server}/kit_users?directConnection=true"
    async with fresh_database("authed", uri, event_listeners=[log]) as alias:
        await asyncio.gather(
            *(get_async_db(alias).things.count_documents({}) for _ in range(3))
        )
        assert log.names == ["aggregate"] * 3
        name = get_async_db(alias).name
    assert name.startswith("test_")
    admin_uri = f"mongodb://u:p@127.0.0.1:{auth_server}/?authSource=kit_users"
    with pymongo.MongoClient(admin_uri, directConnection=True) as client:
        assert name not in client.list_database_names()


SUITE_ALIAS_TEST = """
import asyncio, os
from mongoengine_async import Document, StringField, connect_async

class Entry(Document):
    msg = StringField()
    meta = {"db_alias": "logs"}

asyncio.run(connect_async(db="kit_suite", alias="logs", host=os.environ["MONGODB_URI"]))

async def test_1_uses_async_alias(async_alias):
    await connect_async(db="kit_other", alias="opened", host=os.environ["MONGODB_URI"])

async def test_2_suite_alias_after():
    from mongoengine_async.connection import is_async_connection
    assert not is_async_connection("opened")
    await Entry(msg="after").async_save()
"""


def test_async_alias_keeps_the_aliases_connected_before_it(
    mongodb_uri: str, tmp_path: Path
) -> None:
    proc = _run_user_suite(tmp_path, mongodb_uri, SUITE_ALIAS_TEST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        try:
            assert client.kit_suite.entry.distinct("msg") == ["after"]
        finally:
            client.drop_database("kit_suite")


OWN_DEFAULT_TEST = """
import asyncio, os
from mongoengine_async import connect_async, get_async_db

asyncio.run(connect_async(db="kit_mine", host=os.environ["MONGODB_URI"]))

async def test_1_async_alias_cannot_take_default(async_alias):
    pass

async def test_2_default_is_still_mine():
    assert get_async_db().name == "kit_mine"
"""


def test_async_alias_failing_to_connect_leaves_the_default_alias(
    mongodb_uri: str, tmp_path: Path
) -> None:
    proc = _run_user_suite(tmp_path, mongodb_uri, OWN_DEFAULT_TEST)
    assert proc.stdout.startswith("E."), proc.stdout + proc.stderr
    error = (
        "mongoengine.connection.ConnectionFailure: A different connection with "
        "alias `default` was already registered. Use disconnect_async() first"
    )
    assert f"E{' ' * 19}{error}" in proc.stdout.splitlines()


NO_ASYNCIO_TEST = """
def test_command_log(command_log):
    assert command_log.count() == 0

def test_async_alias(async_alias):
    pass
"""


def test_plugin_without_pytest_asyncio(mongodb_uri: str, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "pytest_asyncio"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    path = os.pathsep.join([str(shadow.parent), *sys.path])
    proc = _run_user_suite(
        tmp_path,
        mongodb_uri,
        NO_ASYNCIO_TEST,
        env={"PYTHONPATH": path, "PYTEST_ADDOPTS": "-p no:asyncio"},
    )
    assert proc.stdout.startswith(".E "), proc.stdout + proc.stderr  # log, alias
    assert (
        "the async_alias fixture needs pytest-asyncio: pip install pytest-asyncio"
        in proc.stdout.splitlines()
    )


def _launch(cmd: list[str], uri: str) -> subprocess.Popen[bytes]:
    """``python -m mongoengine_async.testing -- CMD`` in a session of its own
    (no terminal), once ``CMD`` has printed its first line (``ready``, once
    its signal handlers are installed: on a loaded machine, a fixed wait
    sent the signal before): on the existing server at ``uri``, so that
    ``CMD`` is its only child (no mongod of its own)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mongoengine_async.testing", "--", *cmd],
        start_new_session=True,
        env={**os.environ, "MONGODB_URI": uri},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    with proc.stdout:  # (CMD prints nothing more)
        assert proc.stdout.readline() == b"ready\n"
    return proc


EXIT_0_ON_SIGINT = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *a: sys.exit(0))\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)


def test_cli_ctrl_c_never_exits_0(mongodb_uri: str) -> None:
    proc = _launch([sys.executable, "-c", EXIT_0_ON_SIGINT], mongodb_uri)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    assert proc.wait(timeout=20) == 130


def test_cli_forwards_sigint_sent_to_the_launcher_alone(mongodb_uri: str) -> None:
    proc = _launch(["sh", "-c", "echo ready; exec sleep 30"], mongodb_uri)
    proc.send_signal(signal.SIGINT)  # kill -INT, as an IDE's stop button does
    try:
        assert proc.wait(timeout=20) == 130  # (a bound against a hang, as above)
    finally:
        if proc.returncode is None:  # it hung: kill it and its command
            os.killpg(proc.pid, signal.SIGKILL)


def test_cli_forwards_a_sigint_that_came_while_the_command_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGINT the launcher gets before ``Popen()`` returned (a loaded
    machine: CMD already printed its first line) is forwarded once CMD is
    known: CMD was left to run its course (the test above timed out in CI)."""
    started = subprocess.Popen

    def popen_then_sigint(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        child = started(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # (its handler runs before the return)
        return child

    monkeypatch.setattr(launcher, "_terminal_sent_it", lambda: False)
    monkeypatch.setattr(subprocess, "Popen", popen_then_sigint)
    began = time.monotonic()
    assert launcher._run(["sleep", "30"], "mongodb://unused") == 130
    assert time.monotonic() - began < 20  # (not the 30 s of its course)


def test_cli_kills_a_command_that_ignores_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(launcher, "TERMINATE_GRACE", 0.5)
    ignores = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"  # (a fixed wait may end before)
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", ignores], stdout=subprocess.PIPE)
    assert child.stdout is not None
    with child.stdout:
        assert child.stdout.readline() == b"ready\n"
        launcher._stop(child)
    assert child.returncode == -signal.SIGKILL


# -- the failover kit ------------------------------------------------------------
def test_three_member_set_lifecycle() -> None:
    with ReplicaSet(members=3) as rs:
        assert len({member.port for member in rs.members}) == 3
        assert len({member.dbpath for member in rs.members}) == 3
        assert rs.uri == (
            "mongodb://" + ",".join(m.host for m in rs.members) + "/?replicaSet=rs0"
        )
        status = rs.primary().command("replSetGetStatus")
        states = sorted(member["stateStr"] for member in status["members"])
        assert states == ["PRIMARY", "SECONDARY", "SECONDARY"]
        config = rs.primary().command("replSetGetConfig")["config"]
        assert config["settings"]["electionTimeoutMillis"] == 2000
        assert {member["priority"] for member in config["members"]} == {1}
        with pymongo.MongoClient(rs.uri, serverSelectionTimeoutMS=10_000) as client:
            items = client.kit.get_collection("items", write_concern=_MAJORITY)
            items.insert_one({"_id": 1})
        pids = [member.process.pid for member in rs.members]
        dbpaths = [member.dbpath for member in rs.members]
    assert rs.members == []
    assert [_pid_alive(pid) for pid in pids] == [False] * 3
    assert [os.path.exists(path) for path in dbpaths] == [False] * 3


_MAJORITY = pymongo.WriteConcern(w="majority")


def test_step_down_elects_another_primary(replica_set_3: ReplicaSet) -> None:
    rs = replica_set_3
    with pymongo.MongoClient(rs.uri, serverSelectionTimeoutMS=20_000) as client:
        items = client.kit.get_collection("step", write_concern=_MAJORITY)
        items.insert_one({"_id": "before"})
        old = rs.primary()
        assert rs.step_down() is old
        new = rs.wait_for_primary()
        assert new is not old
        assert old.hello()["secondary"] is True
        items.insert_one({"_id": "after"})  # the client found the new primary
        on_new = pymongo.MongoClient(new.uri)["kit"]["step"]
        assert sorted(doc["_id"] for doc in on_new.find()) == ["after", "before"]
        on_new.database.client.close()
        items.drop()


def test_kill_primary_and_restart_it(replica_set_3: ReplicaSet) -> None:
    rs = replica_set_3
    with pymongo.MongoClient(rs.uri, serverSelectionTimeoutMS=20_000) as client:
        items = client.kit.get_collection("kill", write_concern=_MAJORITY)
        items.insert_one({"_id": 1})
        killed = rs.kill_primary()
        assert not killed.running
        assert killed.process.returncode == -9  # SIGKILL: a crash
        assert killed.hello() is None
        assert rs.wait_for_primary() is not killed
        items.insert_one({"_id": 2})  # two of three members: majority still
        port, dbpath = killed.port, killed.dbpath

        assert rs.restart(killed) is killed
        assert killed.running
        assert (killed.port, killed.dbpath) == (port, dbpath)
        assert killed.hello()["secondary"] is True
        # It kept its data and catches up with the write it missed.
        with pymongo.MongoClient(killed.uri) as direct:
            copy = direct.kit.kill
            deadline = time.monotonic() + 30
            while copy.count_documents({}) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sorted(doc["_id"] for doc in copy.find()) == [1, 2]
        items.drop()


def test_restart_rejects_a_running_member(replica_set_3: ReplicaSet) -> None:
    member = replica_set_3.members[0]
    with pytest.raises(RuntimeError, match=f"member {member.host} is running"):
        replica_set_3.restart(member)


def test_heal_restarts_killed_members(replica_set_3: ReplicaSet) -> None:
    rs = replica_set_3
    old = rs.step_down()
    killed = rs.kill_primary()
    rs.heal()
    assert rs.running
    assert killed.hello()["secondary"] is True
    # The stepped-down member may be elected again at once.
    assert old.command("replSetGetStatus")["myState"] in (1, 2)
    with rs.fail_command("ping", mode="alwaysOn", error_code=2) as target:
        pass
    rs.heal()
    target.command("ping")  # heal turned every fail point off


def test_replica_set_fail_command_targets_the_primary(
    replica_set_3: ReplicaSet,
) -> None:
    rs = replica_set_3
    with pymongo.MongoClient(rs.uri, retryWrites=False) as client:
        with rs.fail_command("insert", error_code=2) as member:
            assert member is rs.primary()
            with pytest.raises(pymongo.errors.OperationFailure) as caught:
                client.kit.failing.insert_one({"_id": 1})
            assert caught.value.code == 2
        client.kit.failing.insert_one({"_id": 2})
        assert [doc["_id"] for doc in client.kit.failing.find()] == [2]
        client.kit.failing.drop()


def _client(uri: str, app_name: str) -> pymongo.MongoClient:
    """A client that neither retries nor shares its appname with other tests."""
    return pymongo.MongoClient(
        uri, appname=app_name, retryWrites=False, retryReads=False
    )


def test_fail_command_fails_the_next_matching_command(mongodb_uri: str) -> None:
    app = f"kit-{uuid.uuid4().hex[:8]}"
    with _client(mongodb_uri, app) as client:
        items = client.kit_fail[app]
        with fail_command(
            mongodb_uri,
            ["insert", "update"],
            error_code=2,
            error_labels=["TransientTransactionError"],
            app_name=app,
        ):
            assert items.count_documents({}) == 0  # not a matching command
            with pytest.raises(pymongo.errors.OperationFailure) as caught:
                items.insert_one({"_id": 1})
            assert caught.value.code == 2
            assert caught.value.has_error_label("TransientTransactionError")
            items.insert_one({"_id": 2})  # times=1: only the next one failed
        assert [doc["_id"] for doc in items.find()] == [2]
        client.drop_database("kit_fail")


def test_fail_command_always_on_until_the_block_ends(mongodb_uri: str) -> None:
    app = f"kit-{uuid.uuid4().hex[:8]}"
    with _client(mongodb_uri, app) as client, _client(mongodb_uri, "other") as other:
        items = client.kit_fail[app]
        with fail_command(
            mongodb_uri, "insert", mode="alwaysOn", error_code=50, app_name=app
        ):
            for n in range(3):
                with pytest.raises(pymongo.errors.ExecutionTimeout):
                    items.insert_one({"_id": n})
            other.kit_fail[app].insert_one({"_id": "other"})  # other appname
        items.insert_one({"_id": "after"})
        assert sorted(doc["_id"] for doc in items.find()) == ["after", "other"]
        client.drop_database("kit_fail")


def test_fail_command_closes_the_connection_or_blocks(mongodb_uri: str) -> None:
    app = f"kit-{uuid.uuid4().hex[:8]}"
    with _client(mongodb_uri, app) as client:
        items = client.kit_fail[app]
        with fail_command(mongodb_uri, "insert", close_connection=True, app_name=app):
            with pytest.raises(pymongo.errors.AutoReconnect):
                items.insert_one({"_id": 1})
        with (
            fail_command(mongodb_uri, "find", block_time_ms=60_000, app_name=app),
            ThreadPoolExecutor(1) as pool,
        ):
            found = pool.submit(items.find_one)
            held = _held_find(client.admin, app)  # (blocked: not answered yet)
            assert not found.done()
            client.admin.command("killOp", op=held["opid"])
            with pytest.raises(pymongo.errors.OperationFailure) as caught:
                found.result()
            assert caught.value.code == 11601  # Interrupted while blocked
        client.drop_database("kit_fail")


def _held_find(admin: Any, app_name: str) -> dict[str, Any]:
    """The find of client ``app_name`` the server runs, once it does (the
    fail point holds it there)."""
    pipeline = [
        {"$currentOp": {"allUsers": True}},
        {"$match": {"appName": app_name, "command.find": {"$exists": True}}},
    ]
    deadline = time.monotonic() + 30
    while not (running := list(admin.aggregate(pipeline))):
        assert time.monotonic() < deadline, "the find never reached the server"
        time.sleep(0.01)
    (held,) = running
    return held


def test_fail_command_says_test_commands_are_off(tmp_path: Path) -> None:
    """A plain standalone mongod, as in production: no configureFailPoint."""
    port = _free_port()
    options = f"--port {port} --bind_ip 127.0.0.1 --dbpath {tmp_path} --nounixsocket"
    server = subprocess.Popen(
        [find_mongod(), *options.split()], stdout=subprocess.DEVNULL
    )
    try:
        uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        with pytest.raises(RuntimeError) as caught:
            with fail_command(uri, "insert", error_code=2):
                pass
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert str(caught.value) == (
        "the failCommand fail point needs test commands on: start mongod "
        "with --setParameter enableTestCommands=1 (ReplicaSet does)"
    )
    assert caught.value.__cause__.code == 59


START_FROM_A_THREAD = """
import asyncio, os
from mongoengine_async.testing import ReplicaSet

async def main():
    rs = await asyncio.to_thread(ReplicaSet().start)  # as restart() from a test
    print(rs.process.pid, rs.dbpath, flush=True)
    os._exit(0)  # dies without stopping anything

asyncio.run(main())
"""


def test_a_server_started_from_a_thread_dies_with_the_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", START_FROM_A_THREAD],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    pid, dbpath = proc.stdout.split()
    try:
        deadline = time.monotonic() + 15
        while _pid_alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pid_alive(int(pid))
    finally:
        shutil.rmtree(dbpath, ignore_errors=True)


TERMINATED = """
import time
from mongoengine_async.testing import ReplicaSet

rs = ReplicaSet().start()
print(rs.process.pid, rs.dbpath, flush=True)
time.sleep(120)
"""


def test_sigterm_stops_the_server_and_deletes_its_directory() -> None:
    """A SIGTERMed pytest run (no handler of its own) leaves no directory."""
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-c", TERMINATED],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    pid, dbpath = proc.stdout.readline().split()
    try:
        assert os.path.isdir(dbpath)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM  # still dies of it
        assert not os.path.exists(dbpath)
        assert not _pid_alive(int(pid))
    finally:
        proc.kill()
        shutil.rmtree(dbpath, ignore_errors=True)


USED_BY_A_THREAD = """
import threading, pymongo
from mongoengine_async.testing import ReplicaSet

rs = ReplicaSet().start()
print(rs.process.pid, flush=True)

def worker():
    threading.main_thread().join()  # (returned: the interpreter exits next)
    with pymongo.MongoClient(rs.uri, serverSelectionTimeoutMS=5000) as client:
        print(client.admin.command("ping")["ok"], flush=True)

threading.Thread(target=worker).start()
"""


def test_a_server_outlives_the_main_thread_while_a_thread_uses_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    proc = subprocess.run(
        [sys.executable, "-c", USED_BY_A_THREAD],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    pid, ok = proc.stdout.split()
    assert ok == "1.0", proc.stderr
    assert not _pid_alive(int(pid))  # stopped at interpreter exit


class KitOrder(Document):
    total = IntField()


async def test_the_docs_failover_example(replica_set_3: ReplicaSet) -> None:
    """docs/testing.md's failover test of a user's own (shown, not run there)."""
    rs = replica_set_3
    async with fresh_database("default", rs.uri, serverSelectionTimeoutMS=15_000):
        await KitOrder(total=10).async_save()
        killed = await asyncio.to_thread(rs.kill_primary)
        await KitOrder(total=20).async_save()  # retried on the new primary
        await asyncio.to_thread(rs.restart, killed)
        assert await KitOrder.objects.async_sum("total") == 30
        assert rs.primary() is not killed


def test_cli_without_a_mongod_says_so_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env["MONGOD"] = str(tmp_path / "missing")
    done = subprocess.run(
        [sys.executable, "-m", "mongoengine_async.testing", "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"python -m mongoengine_async.testing: $MONGOD={env['MONGOD']!r} is not "
        "an executable file\n"
    )
