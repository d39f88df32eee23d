"""Transactions against the real replica set.

``async_run_in_transaction``: commit and rollback of every kind of async
operation, nesting, other aliases, retrying a block on a real write conflict,
and hundreds of concurrent tasks with their own transactions.
With the server's failCommand fail point: commit retries by the
convenient-transactions spec, ``async_run_transaction`` re-running its function,
and cascades that never run without a transaction, even on a brand-new client.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import anyio
import pymongo
import pymongo.errors
import pytest
from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

import mongoengine_async.context as context
import mongoengine_async.detached as detached
import mongoengine_async.gridfs as async_gridfs
from conftest import held_on_server
from mongoengine_async import (
    CASCADE,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FileField,
    IntField,
    ListField,
    OperationError,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    async_run_transaction,
    async_switch_db,
    connect_async,
    disconnect_async,
    get_async_connection,
    get_async_db,
    is_transient,
    signals,
)
from mongoengine_async.context import current_session, follow_ups_pending
from mongoengine_async.errors import ForeignSessionError
from mongoengine_async.testing import CommandLog, fresh_database


class TxAccount(Document):
    name = StringField()
    balance = IntField(default=0)
    tags = ListField(StringField())


class TxAddress(EmbeddedDocument):
    city = StringField()


class TxHolder(Document):
    name = StringField()
    address = EmbeddedDocumentField(TxAddress)


class TxOwner(Document):
    name = StringField()


class TxPet(Document):
    name = StringField()
    owner = ReferenceField(TxOwner, reverse_delete_rule=CASCADE)


class TxPaper(Document):  # its files on a client of their own
    title = StringField()
    pdf = FileField(db_alias="tx-files")


class TxKennel(Document):
    name = StringField()


class TxDog(Document):
    name = StringField()
    kennel = ReferenceField(TxKennel, reverse_delete_rule=CASCADE)


class TxCollar(Document):  # deleted with its dog, deleted with its kennel
    name = StringField()
    dog = ReferenceField(TxDog, reverse_delete_rule=CASCADE)


class Boom(Exception):
    pass


async def committed(cls: type, **query) -> list[dict]:
    """What other sessions see: the committed documents, read with the driver."""
    collection = get_async_db()[cls._get_collection_name()]
    return await collection.find(query).sort("_id", 1).to_list(None)


async def warm(alias: str = "default") -> None:
    """Create the collections before any transaction: concurrent transactions
    that each create a collection implicitly conflict (WriteConflict)."""
    db = get_async_db(alias)
    existing = await db.list_collection_names()
    for cls in (TxAccount, TxHolder, TxOwner, TxPet):
        if cls._get_collection_name() not in existing:
            await db.create_collection(cls._get_collection_name())


# -- commit and rollback ---------------------------------------------------------------


async def test_commit_makes_everything_visible_at_the_end(async_alias):
    await warm()
    existing = await TxAccount(name="existing", balance=1).async_save()
    async with async_run_in_transaction() as session:
        assert isinstance(session, AsyncClientSession)
        assert session.in_transaction
        assert current_session(get_async_connection()) is session
        ann = await TxAccount(name="ann", balance=10).async_save()
        await TxAccount.objects.async_insert(
            [TxAccount(name="bob"), TxAccount(name="cy")]
        )
        await TxAccount.objects(name="bob").async_update(inc__balance=5)
        await existing.async_update(push__tags="touched")
        ann.balance = 11
        await ann.async_save()
        await TxAccount.objects(name="cy").async_delete()
        # Inside, the transaction sees its own writes; outside nobody does yet.
        assert await TxAccount.objects.async_count() == 3
        assert await TxAccount.objects.async_scalar("name") == [
            "existing",
            "ann",
            "bob",
        ]
        assert await TxAccount.objects.async_sum("balance") == 17
        assert await committed(TxAccount, name={"$in": ["ann", "bob"]}) == []
        assert (await committed(TxAccount, name="existing"))[0]["tags"] == []
    assert session.has_ended and current_session() is None
    names = [raw["name"] for raw in await committed(TxAccount)]
    assert names == ["existing", "ann", "bob"]
    assert (await committed(TxAccount, name="ann"))[0]["balance"] == 11
    assert (await committed(TxAccount, name="bob"))[0]["balance"] == 5
    assert (await committed(TxAccount, name="existing"))[0]["tags"] == ["touched"]


async def test_exception_rolls_everything_back(async_alias):
    await warm()
    existing = await TxAccount(name="existing", balance=1).async_save()
    before = await committed(TxAccount)
    with pytest.raises(Boom):
        async with async_run_in_transaction():
            await TxAccount(name="ann").async_save()
            await TxAccount.objects.async_insert([TxAccount(name="bob")])
            await TxAccount.objects.async_update(inc__balance=100)
            await existing.async_update(set__name="renamed")
            await TxAccount.objects(name="bob").async_modify(set__balance=7)
            assert await TxAccount.objects.async_count() == 3
            raise Boom
    assert await committed(TxAccount) == before
    assert current_session() is None


async def test_an_aggregation_built_before_a_transaction_joins_it(async_alias):
    """The session is taken when the aggregation runs, not when it is built
    (an aggregation runs once: see test_an_async_aggregate_runs_once)."""
    await warm()
    await TxAccount(name="committed").async_save()
    pipeline = [{"$project": {"_id": 0, "name": 1}}]
    names = TxAccount.objects.async_aggregate(pipeline)
    cursor = TxAccount.objects.async_aggregate(pipeline)
    async with async_run_in_transaction():
        await TxAccount(name="pending").async_save()
        inside = sorted([doc["name"] async for doc in names])
        awaited = sorted(doc["name"] for doc in await (await cursor).to_list())
    assert inside == awaited == ["committed", "pending"]
    outside = TxAccount.objects.order_by("name").async_aggregate(pipeline)
    assert [doc["name"] async for doc in outside] == ["committed", "pending"]


async def test_reference_fetch_sees_uncommitted_data(async_alias):
    await warm()
    async with async_run_in_transaction():
        owner = await TxOwner(name="Ann").async_save()
        await TxPet(name="Rex", owner=owner).async_save()
        pet = await TxPet.objects.async_get(name="Rex")
        assert (await pet.owner).name == "Ann"
        [loaded] = await TxPet.objects.async_select_related()
        assert loaded.owner.name == "Ann"
        # A cascading delete joins the transaction too.
        await owner.async_delete()
        assert await TxPet.objects.async_count() == 0
    assert await committed(TxOwner) == [] and await committed(TxPet) == []


async def test_cancellation_rolls_back(async_alias):
    await warm()
    inside = asyncio.Event()

    async def work():
        async with async_run_in_transaction():
            await TxAccount(name="cancelled").async_save()
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await asyncio.wait_for(inside.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await committed(TxAccount) == []


async def test_nested_use_raises_and_the_outer_transaction_goes_on(async_alias):
    await warm()
    async with async_run_in_transaction() as outer:
        await TxAccount(name="outer").async_save()
        with pytest.raises(OperationError) as error:
            async with async_run_in_transaction():
                pass  # pragma: no cover
        assert str(error.value) == (
            "async_run_in_transaction() cannot be nested: a transaction is "
            "already active in this task"
        )
        assert current_session() is outer and outer.in_transaction
    assert [raw["name"] for raw in await committed(TxAccount)] == ["outer"]


async def test_session_and_transaction_options(async_alias):
    from pymongo.read_concern import ReadConcern
    from pymongo.write_concern import WriteConcern

    await warm()
    async with async_run_in_transaction(
        session_kwargs={"causal_consistency": False},
        transaction_kwargs={
            "read_concern": ReadConcern("snapshot"),
            "write_concern": WriteConcern(w="majority"),
        },
    ) as session:
        assert session.options.causal_consistency is False
        await TxAccount(name="options").async_save()
    assert len(await committed(TxAccount)) == 1


# -- other aliases ---------------------------------------------------------------------


async def test_other_client_inside_the_block_does_not_use_the_session(
    async_alias, mongodb_uri, command_log
):
    other_log = CommandLog()
    # Different settings: a different client.
    async with fresh_database("tx_other", mongodb_uri, event_listeners=[other_log]):
        assert get_async_connection("tx_other") is not get_async_connection()
        await warm()
        await warm("tx_other")
        other_log.clear()
        with pytest.raises(Boom):
            async with async_run_in_transaction():
                await TxAccount(name="in the transaction").async_save()
                async with async_switch_db(TxOwner, "tx_other"):
                    owner = await TxOwner(name="elsewhere").async_save()
                    assert current_session(get_async_connection("tx_other")) is None
                    # A cascading delete there runs in its own transaction
                    # (on its own client): it does not clash with this one.
                    doomed = await TxOwner(name="doomed").async_save()
                    await doomed.async_delete()
                raise Boom
        assert await committed(TxAccount) == []
        raw = await get_async_db("tx_other").tx_owner.find().to_list(None)
        assert [doc["name"] for doc in raw] == ["elsewhere"]
        assert raw[0]["_id"] == owner.pk
        in_transaction = [
            event.command_name
            for event in other_log.events
            if "autocommit" in event.command  # sent in transactions only
        ]
        # The saves ran outside any transaction; the cascade in its own one.
        assert "insert" not in in_transaction
        assert in_transaction[-1] == "commitTransaction"


async def test_alias_sharing_the_client_joins_the_session(
    async_alias, mongodb_uri, command_log
):
    """Aliases differing only by database share one client, hence the session."""
    # The same settings as "default".
    async with fresh_database("tx_shared", mongodb_uri, event_listeners=[command_log]):
        assert get_async_connection("tx_shared") is get_async_connection()
        await warm("tx_shared")
        with pytest.raises(Boom):
            async with async_run_in_transaction():
                async with async_switch_db(TxOwner, "tx_shared"):
                    await TxOwner(name="rolled back").async_save()
                raise Boom
        assert await get_async_db("tx_shared").tx_owner.count_documents({}) == 0


class TxAgain(Document):
    name = StringField()
    meta = {"db_alias": "tx_again"}


async def test_an_alias_connected_again_inside_its_transaction_is_refused(
    async_alias, mongodb_uri
):
    """The alias of the transaction is disconnected and connected again (its
    own client now, here with another option) inside the block, by this task
    or another: the next operation on it ran on the new client with no
    session, outside the transaction, and stayed when the transaction was
    rolled back. It raises now, as PyMongo for a session of another client."""
    async with fresh_database("tx_again", mongodb_uri) as alias:
        name = get_async_db(alias).name
        plain = {"db": name, "host": mongodb_uri, "uuidRepresentation": "standard"}
        # A twin alias keeps the first client open (else its abort would fail).
        await connect_async(alias="tx_again_twin", **plain)
        try:
            await TxAgain(name="before").async_save()
            with pytest.raises(ForeignSessionError, match="connected again"):
                async with async_run_in_transaction(alias=alias):
                    await TxAgain(name="rolled back").async_save()
                    await disconnect_async(alias)
                    await connect_async(alias=alias, tz_aware=True, **plain)
                    await TxAgain(name="escaped").async_save()
            assert await TxAgain.objects.async_scalar("name") == ["before"]
            await disconnect_async(alias)  # on the twin's client again
            await connect_async(alias=alias, **plain)

            async def reconnect_and_save() -> None:
                await disconnect_async(alias)
                await connect_async(alias=alias, tz_aware=True, **plain)
                await TxAgain(name="escaped too").async_save()

            with pytest.raises(ForeignSessionError):
                await async_run_transaction(reconnect_and_save, alias=alias)
            assert await TxAgain.objects.async_scalar("name") == ["before"]
        finally:
            await disconnect_async("tx_again_twin")


class TxGone(Document):
    a = IntField()
    meta = {"db_alias": "tx_gone"}


@pytest.mark.parametrize("end", ["raise", "commit"])
async def test_an_alias_disconnected_inside_its_transaction(
    async_alias, mongodb_uri, end
):
    """The alias of the transaction disconnected inside the block, by another
    task: its client is closed once the transaction ended (its abort, or its
    commit), not under it. Closed at once, neither was sent: the transaction
    stayed open on the server, its document locked (an outside write waited)
    until the server's time limit (60 s), and a commit raised a
    TransientTransactionError saying it had aborted."""
    async with (
        fresh_database("tx_gone", mongodb_uri) as alias,
        pymongo.AsyncMongoClient(mongodb_uri) as outside,
    ):
        document = await TxGone(a=0).async_save()
        collection = outside[get_async_db(alias).name]["tx_gone"]
        with contextlib.suppress(Boom):
            async with async_run_in_transaction(alias=alias):
                await TxGone.objects(pk=document.pk).async_update(a=1)
                await asyncio.create_task(disconnect_async(alias))
                if end == "raise":
                    raise Boom
        update = collection.update_one({"_id": document.pk}, {"$set": {"b": 2}})
        await asyncio.wait_for(update, 5)  # (not locked)
        a = 1 if end == "commit" else 0
        assert await collection.find_one({}) == {"_id": document.pk, "a": a, "b": 2}


async def test_an_alias_disconnected_from_another_loop_inside_its_transaction(
    async_alias, mongodb_uri
):
    """disconnect_async() in this loop while another thread's loop runs a
    transaction on its client of the alias: that client is closed on its
    loop once the transaction ended, its abort sent. Closed at once, the
    abort could not be sent: the document stayed locked 60 s."""
    async with (
        fresh_database("tx_gone", mongodb_uri) as alias,
        pymongo.AsyncMongoClient(mongodb_uri) as outside,
    ):
        document = await TxGone(a=0).async_save()
        collection = outside[get_async_db(alias).name]["tx_gone"]
        in_block, disconnected = threading.Event(), threading.Event()

        async def block() -> None:
            with contextlib.suppress(Boom):
                async with async_run_in_transaction(alias=alias):
                    await TxGone.objects(pk=document.pk).async_update(a=1)
                    in_block.set()
                    while not disconnected.is_set():
                        await asyncio.sleep(0.01)
                    raise Boom

        thread = threading.Thread(target=asyncio.run, args=(block(),))
        thread.start()
        await asyncio.to_thread(in_block.wait, 30)
        await disconnect_async(alias)
        disconnected.set()
        await asyncio.to_thread(thread.join, 30)
        update = collection.update_one({"_id": document.pk}, {"$set": {"b": 2}})
        await asyncio.wait_for(update, 5)  # (not locked)
        assert await collection.find_one({}) == {"_id": document.pk, "a": 0, "b": 2}


# -- retrying --------------------------------------------------------------------------


async def test_retry_a_whole_block_on_a_real_write_conflict(async_alias):
    await warm()
    account = await TxAccount(name="shared", balance=0).async_save()
    first_wrote, second_failed = asyncio.Event(), asyncio.Event()
    errors: list[BaseException] = []

    async def first():
        async with async_run_in_transaction():
            await TxAccount.objects(pk=account.pk).async_update(inc__balance=1)
            first_wrote.set()
            await second_failed.wait()  # hold the write until the other conflicts

    async def second():
        await first_wrote.wait()
        attempts = 0
        while True:
            attempts += 1
            try:
                async with async_run_in_transaction():
                    await TxAccount.objects(pk=account.pk).async_update(inc__balance=10)
                return attempts
            except Exception as error:
                if not is_transient(error):
                    raise
                errors.append(error)
                second_failed.set()
                await asyncio.sleep(0.05)

    _, attempts = await asyncio.wait_for(asyncio.gather(first(), second()), 30)
    assert attempts >= 2
    assert isinstance(errors[0], OperationError)  # as MongoEngine wraps it
    assert errors[0].__cause__.code == 112  # WriteConflict
    assert (await committed(TxAccount))[0]["balance"] == 11


# -- concurrency -----------------------------------------------------------------------


async def test_200_concurrent_transactions(async_alias):
    await warm()
    sessions = []

    async def work(i: int):
        try:
            async with async_run_in_transaction() as session:
                sessions.append(session)
                account = await TxAccount(name=f"a{i}", balance=i).async_save()
                await asyncio.sleep(0)
                assert current_session() is session
                await account.async_update(inc__balance=1000)
                assert await TxAccount.objects(name=f"a{i}").async_count() == 1
                await asyncio.sleep(0)
                if i % 2:
                    raise Boom
        except Boom:
            pass

    await asyncio.wait_for(asyncio.gather(*(work(i) for i in range(200))), 120)
    assert len({id(session) for session in sessions}) == 200
    raw = await committed(TxAccount)
    assert sorted(doc["balance"] - 1000 for doc in raw) == list(range(0, 200, 2))
    assert current_session() is None


# -- fail points -----------------------------------------------------------------------


@pytest.fixture
async def app_alias(mongodb_uri, command_log) -> AsyncIterator[str]:
    """Alias "default" on a client with an application name of its own (the
    fixture's value), so that a fail point fails this test's commands only."""
    from mongoengine_async.connection import disconnect_all_async

    name = f"tx-{uuid4().hex[:8]}"
    try:
        async with fresh_database(
            "default", mongodb_uri, appname=name, event_listeners=[command_log]
        ):
            yield name
    finally:
        await disconnect_all_async()


# A write conflict as the server labels it: with_transaction runs the callback again.
WRITE_CONFLICT = {"errorCode": 112, "errorLabels": ["TransientTransactionError"]}


@asynccontextmanager
async def fail_point(app_name: str, mode: Any, **data: Any) -> AsyncIterator[None]:
    """The server's failCommand fail point, for the client named ``app_name``."""
    admin = get_async_connection().admin
    command = {"configureFailPoint": "failCommand", "mode": mode}
    try:
        await admin.command({**command, "data": {**data, "appName": app_name}})
    except pymongo.errors.OperationFailure as error:
        raise RuntimeError(
            "the failCommand fail point needs a mongod started with "
            f"--setParameter enableTestCommands=1 (server said: {error})"
        ) from error
    try:
        yield
    finally:
        await admin.command({**command, "mode": "off"})


async def end_session(session_id: dict) -> None:
    """End a session whose commit failed: its transaction stays open on the
    server (holding locks the test's dropDatabase would wait for) until then."""
    await get_async_connection().admin.command("killSessions", [session_id])


FORMS = ["context manager", "callback"]


async def run_in(form: str, fn: Callable[[], Awaitable[Any]], **options: Any) -> Any:
    """``fn`` in a transaction, by ``async_run_in_transaction`` or
    ``async_run_transaction``, with ``options`` for the transaction."""
    if form == "callback":
        return await async_run_transaction(fn, **options)
    async with async_run_in_transaction(transaction_kwargs=options):
        return await fn()


def sent(log: CommandLog) -> list[str]:
    """The names of the commands in ``log``, but those setting fail points."""
    return [name for name in log.names if name != "configureFailPoint"]


def transactions(log: CommandLog) -> list[int]:
    """The transaction numbers of the commands in ``log``, once each, in order."""
    numbers: list[int] = []
    for event in log.events:
        number = event.command.get("txnNumber")
        if number is not None and number not in numbers:
            numbers.append(number)
    return numbers


# -- the commit, by the convenient-transactions spec -----------------------------------


@pytest.mark.parametrize("form", FORMS)
async def test_commit_is_retried_while_its_result_is_unknown(
    app_alias, command_log, form
):
    await warm()
    unknown = {"errorCode": 8, "errorLabels": ["UnknownTransactionCommitResult"]}
    command_log.clear()
    async with fail_point(
        app_alias, {"times": 2}, failCommands=["commitTransaction"], **unknown
    ):
        await run_in(form, TxAccount(name="committed once").async_save)
    assert sent(command_log) == ["insert", *["commitTransaction"] * 3]
    assert [raw["name"] for raw in await committed(TxAccount)] == ["committed once"]


@pytest.mark.parametrize("form", FORMS)
async def test_max_commit_time_ms_bounds_the_commit(app_alias, command_log, form):
    """MaxTimeMSExpired is not retried, even labelled UnknownTransactionCommitResult."""
    await warm()
    sessions = []

    async def save():
        sessions.append(current_session().session_id)
        await TxAccount(name="never").async_save()

    expired = {"errorCode": 50, "errorLabels": ["UnknownTransactionCommitResult"]}
    command_log.clear()
    async with fail_point(
        app_alias, "alwaysOn", failCommands=["commitTransaction"], **expired
    ):
        with pytest.raises(pymongo.errors.OperationFailure) as error:
            await run_in(form, save, max_commit_time_ms=300)
    assert error.value.code == 50
    assert error.value.has_error_label("UnknownTransactionCommitResult")
    [commit] = [e for e in command_log.events if e.command_name == "commitTransaction"]
    assert commit.command["maxTimeMS"] == 300
    await end_session(sessions[0])
    assert await committed(TxAccount) == []


@pytest.mark.parametrize("form", FORMS)
async def test_a_commit_whose_result_stays_unknown_stops_at_the_timeout(
    app_alias, command_log, form
):
    """The spec retries for 120 s at most; a PyMongo timeout (``timeoutMS``,
    ``pymongo.timeout()``) ends it sooner."""
    await warm()
    sessions = []

    async def save():
        sessions.append(current_session().session_id)
        await TxAccount(name="unknown").async_save()

    unknown = {"errorCode": 8, "errorLabels": ["UnknownTransactionCommitResult"]}
    command_log.clear()
    async with fail_point(
        app_alias, "alwaysOn", failCommands=["commitTransaction"], **unknown
    ):
        with pytest.raises(pymongo.errors.PyMongoError) as error, pymongo.timeout(1):
            await run_in(form, save)
    # The PyMongo timeout ended it: the 120 s limit raises NetworkTimeout.
    assert isinstance(error.value, pymongo.errors.ExecutionTimeout)
    assert error.value.has_error_label("UnknownTransactionCommitResult")
    assert command_log.count("commitTransaction") > 1
    assert command_log.count("insert") == 1
    await end_session(sessions[0])


@pytest.mark.parametrize("form", FORMS)
async def test_a_commit_that_may_have_applied_keeps_the_files_put_on_another_client(
    app_alias, mongodb_uri, form
):
    """A commit whose outcome is unknown and not retried (here it applied,
    then its write concern failed with MaxTimeMSExpired) is given back as an
    abort, but the file put in the block on another client stays: the
    committed document refers to it. The undo deleted it as an abort's does."""
    await warm()
    async with fresh_database("tx-files", mongodb_uri, appname="tx-files"):
        paper = TxPaper(title="applied")

        async def write() -> None:
            await paper.pdf.async_put(b"the only copy")
            await paper.async_save()

        expired = {"code": 50, "errmsg": "operation exceeded time limit"}
        with pytest.raises(pymongo.errors.PyMongoError) as error:
            async with fail_point(
                app_alias,
                {"times": 1},
                failCommands=["commitTransaction"],
                writeConcernError=expired,
            ):
                await run_in(form, write)
        assert error.value.has_error_label("UnknownTransactionCommitResult")
        [stored] = await committed(TxPaper)
        deadline = time.monotonic() + 5  # (an abort deletes it in a task)
        while async_gridfs._aborted_uploads and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        files = get_async_db("tx-files")["fs.files"]
        assert await files.count_documents({"_id": stored["pdf"]}) == 1


# A commit whose outcome stays unknown: applied (its write concern failed), or
# not (refused, labelled UnknownTransactionCommitResult, and not retried).
UNKNOWN_COMMITS = {
    "applied": {
        "writeConcernError": {"code": 50, "errmsg": "operation exceeded time limit"}
    },
    "not applied": {
        "errorCode": 50,
        "errorLabels": ["UnknownTransactionCommitResult"],
    },
}


@pytest.mark.parametrize("commit", UNKNOWN_COMMITS)
@pytest.mark.parametrize("form", FORMS)
async def test_a_file_put_before_a_commit_of_unknown_outcome_is_saved_again(
    app_alias, mongodb_uri, form, commit
):
    """The proxy keeps the file put (on another client) in a block whose
    commit's outcome stayed unknown, as the upload is kept: saved again, the
    document refers to that file, whether the commit applied or not (the
    proxy given back had the next save store the old value: no file)."""
    await warm()
    async with fresh_database("tx-files", mongodb_uri, appname="tx-files"):
        paper = TxPaper(title="unknown")
        sessions = []

        async def write() -> None:
            sessions.append(current_session().session_id)
            await paper.pdf.async_put(b"the only copy")
            await paper.async_save()

        with pytest.raises(pymongo.errors.PyMongoError) as error:
            async with fail_point(
                app_alias,
                {"times": 1},
                failCommands=["commitTransaction"],
                **UNKNOWN_COMMITS[commit],
            ):
                await run_in(form, write)
        assert error.value.has_error_label("UnknownTransactionCommitResult")
        await end_session(sessions[0])
        await paper.async_save()
        [stored] = await committed(TxPaper)
        assert stored["pdf"] == paper.pdf.grid_id
        loaded = await TxPaper.objects.async_get(id=paper.id)
        assert await loaded.pdf.async_read() == b"the only copy"


@pytest.mark.parametrize("commit", UNKNOWN_COMMITS)
async def test_a_file_replaced_before_a_commit_of_unknown_outcome_is_saved_again(
    app_alias, mongodb_uri, commit
):
    """Likewise for a replace of a loaded document's file: saved again, the
    document holds the new file; the old one, whose delete waited for the
    commit, stays (orphaned if the commit applied)."""
    await warm()
    async with fresh_database("tx-files", mongodb_uri, appname="tx-files"):
        first = TxPaper(title="first edition")
        await first.pdf.async_put(b"first edition")
        await first.async_save()
        paper = await TxPaper.objects.async_get(id=first.id)
        sessions = []

        async def write() -> None:
            sessions.append(current_session().session_id)
            await paper.pdf.async_replace(b"second edition")
            paper.title = "second edition"
            await paper.async_save()

        with pytest.raises(pymongo.errors.PyMongoError):
            async with fail_point(
                app_alias,
                {"times": 1},
                failCommands=["commitTransaction"],
                **UNKNOWN_COMMITS[commit],
            ):
                await run_in("context manager", write)
        await end_session(sessions[0])
        assert paper._get_changed_fields() == ["pdf", "title"]
        await paper.async_save()
        loaded = await TxPaper.objects.async_get(id=paper.id)
        assert loaded.title == "second edition"
        assert await loaded.pdf.async_read() == b"second edition"
        files = get_async_db("tx-files")["fs.files"]
        assert await files.count_documents({"_id": first.pdf.grid_id}) == 1


# -- async_run_transaction re-runs its function ----------------------------------------


async def test_callback_form_reruns_on_a_transient_error(app_alias, command_log):
    """MongoEngine reports the failed update as its OperationError: the label
    is found on its cause, and the whole function runs again."""
    await warm()
    await TxAccount(name="ann", balance=100).async_save()
    attempts = []

    async def pay():
        attempts.append(current_session())
        await TxAccount(name="receipt").async_save()
        await TxAccount.objects(name="ann").async_update(dec__balance=10)
        return "paid"

    command_log.clear()
    async with fail_point(
        app_alias, {"times": 1}, failCommands=["update"], **WRITE_CONFLICT
    ):
        assert await async_run_transaction(pay) == "paid"
    assert len(attempts) == 2 and attempts[0] is attempts[1]
    assert sent(command_log) == [
        *["insert", "update", "abortTransaction"],
        *["insert", "update", "commitTransaction"],
    ]
    assert len(transactions(command_log)) == 2
    assert [raw["name"] for raw in await committed(TxAccount)] == ["ann", "receipt"]
    assert (await committed(TxAccount, name="ann"))[0]["balance"] == 90
    assert current_session() is None


@pytest.mark.parametrize("grouped", ["transient", "transient and other"])
async def test_callback_form_reruns_on_transient_errors_of_a_task_group(
    app_alias, command_log, grouped
):
    """A TransientTransactionError in the ExceptionGroup of a task group in
    the function runs it again, as one it raises itself (PyMongo's
    with_transaction does not look into groups): when every error of the
    group is transient. A group with another error propagates at once.
    (asyncio's task group; on Python 3.10, which has none, anyio's, whose
    group is the ``exceptiongroup`` backport's.)"""
    await warm()
    await TxAccount(name="ann", balance=100).async_save()
    attempts = []

    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("not transient")

    async def pay():
        attempts.append(current_session())
        tasks = [lambda: TxAccount.objects(name="ann").async_update(dec__balance=10)]
        if grouped == "transient and other" and len(attempts) == 1:
            tasks.append(fail)
        if sys.version_info < (3, 11):
            async with anyio.create_task_group() as anyio_group:
                for task in tasks:
                    anyio_group.start_soon(task)
            return "paid"
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            for task in tasks:
                group.create_task(task())
        return "paid"

    command_log.clear()
    async with fail_point(
        app_alias, {"times": 1}, failCommands=["update"], **WRITE_CONFLICT
    ):
        if grouped == "transient and other":
            with pytest.raises(Exception) as raised:
                await async_run_transaction(pay)
            assert type(raised.value).__name__ == "ExceptionGroup"
            assert not is_transient(raised.value)
            assert sent(command_log) == [  # (the abort fenced: see FENCED_AFTER)
                *["update", "abortTransaction"],
                *["find", "abortTransaction"],
            ]
            return
        assert await async_run_transaction(pay) == "paid"
    assert len(attempts) == 2
    assert sent(command_log) == [
        *["update", "abortTransaction"],
        *["update", "commitTransaction"],
    ]
    assert (await committed(TxAccount, name="ann"))[0]["balance"] == 90


def bookkeeping(document: Document) -> tuple:
    """What a save reads of a document: new or not, and its changes."""
    return document._created, sorted(document._get_changed_fields())


async def test_a_rerun_saves_again_what_the_aborted_attempt_saved(
    app_alias, command_log
):
    """The documents an aborted attempt saved are given back their state
    (new, changes, nested ones too): the rerun sends them again. The id the
    insert gave stays: saved again, it is the same document (replaced by id,
    else inserted, as MongoEngine saves a new document that has one)."""
    await warm()
    new = TxAccount(name="new")
    old = await TxAccount(name="old", balance=1).async_save()
    holder = await TxHolder(name="h", address=TxAddress(city="Rome")).async_save()
    old.balance, old.tags = 2, ["t"]
    holder.address.city = "Oslo"
    before = [bookkeeping(document) for document in (new, old, holder)]
    seen = []

    async def save_all():
        seen.append([bookkeeping(document) for document in (new, old, holder)])
        for document in (new, old, holder):
            await document.async_save()
        await TxAccount.objects(name="nobody").async_delete()  # fails once

    command_log.clear()
    async with fail_point(
        app_alias, {"times": 1}, failCommands=["delete"], **WRITE_CONFLICT
    ):
        await async_run_transaction(save_all)
    assert seen == [before, before]
    assert sent(command_log) == [
        *["insert", "update", "update", "delete", "abortTransaction"],
        *["findAndModify", "insert", "update", "update", "delete"],
        "commitTransaction",
    ]
    inserts = [e.command for e in command_log.events if e.command_name == "insert"]
    first_id = inserts[0]["documents"][0]["_id"]
    stored = {raw["name"]: raw for raw in await committed(TxAccount)}
    assert first_id == new.pk
    assert stored["new"]["_id"] == new.pk
    assert (stored["old"]["balance"], stored["old"]["tags"]) == (2, ["t"])
    assert (await committed(TxHolder))[0]["address"] == {"city": "Oslo"}
    assert [bookkeeping(document) for document in (new, old, holder)] == [
        (False, []),
        (False, []),
        (False, []),
    ]


async def test_a_rerun_inserts_again_what_the_aborted_attempt_inserted(
    app_alias, command_log
):
    """async_insert gives the documents their ids and marks them saved: an
    aborted attempt makes them new again (ids kept), so the rerun inserts the
    same documents again (MongoEngine refuses saved documents: "use
    doc.update() instead")."""
    await warm()
    accounts = [TxAccount(name="a"), TxAccount(name="b")]

    async def insert():
        await TxAccount.objects.async_insert(accounts, load_bulk=False)
        await TxAccount.objects(name="nobody").async_delete()  # fails once

    command_log.clear()
    async with fail_point(
        app_alias, {"times": 1}, failCommands=["delete"], **WRITE_CONFLICT
    ):
        await async_run_transaction(insert)
    assert sent(command_log) == [
        *["insert", "delete", "abortTransaction"],
        *["insert", "delete", "commitTransaction"],
    ]
    stored = await committed(TxAccount)
    assert [(raw["_id"], raw["name"]) for raw in stored] == [
        (account.pk, account.name) for account in accounts
    ]


async def test_an_aborted_block_gives_the_documents_back_their_state(async_alias):
    """A block retried by hand (as transactions.md shows) saves again what
    its aborted run saved; a committed one leaves the documents saved."""
    await warm()
    new = TxAccount(name="new")
    old = await TxAccount(name="old", balance=1).async_save()
    old.balance = 2
    before = [bookkeeping(new), bookkeeping(old)]
    for attempt in range(2):
        with contextlib.suppress(Boom):
            async with async_run_in_transaction():
                await new.async_save()
                await old.async_save()
                assert bookkeeping(new) == (False, [])
                if attempt == 0:
                    first_id = new.pk
                    raise Boom
        if attempt == 0:
            assert [bookkeeping(new), bookkeeping(old)] == before
            assert new.pk == first_id  # kept: a second save is the same document
            assert len(await committed(TxAccount)) == 1
    assert [raw["name"] for raw in await committed(TxAccount)] == ["old", "new"]
    assert (await committed(TxAccount, name="old"))[0]["balance"] == 2
    assert bookkeeping(new) == bookkeeping(old) == (False, [])
    assert (await committed(TxAccount, name="new"))[0]["_id"] == first_id


@pytest.mark.parametrize("write", ["save", "insert"])
async def test_an_aborted_write_of_a_copy_leaves_it_new(async_alias, write):
    """A loaded document whose id was cleared (a copy to store), saved or
    inserted in a block that aborted, changed and saved again: stored whole,
    as a new document (the id its write gave kept). It was given back as not
    new with that id: the next save sent only the changes (``balance`` and
    ``tags`` lost)."""
    await warm()
    await TxAccount(name="a", balance=5, tags=["t"]).async_save()
    copy = await TxAccount.objects.async_get(name="a")
    copy.id = None
    with contextlib.suppress(Boom):
        async with async_run_in_transaction():
            if write == "save":
                await copy.async_save()
            else:
                await TxAccount.objects.async_insert(copy, load_bulk=False)
            raise Boom
    assert copy._created and copy.pk is not None
    copy.name = "b"
    await copy.async_save()
    stored = await committed(TxAccount, name="b")
    assert stored == [{"_id": copy.pk, "name": "b", "balance": 5, "tags": ["t"]}]
    assert bookkeeping(copy) == (False, [])


async def test_an_abort_keeps_the_changes_made_after_the_save(async_alias):
    """An abort gives back the changes its save sent on top of those made
    since, which the next save sends too."""
    await warm()
    doc = await TxAccount(name="x", balance=1).async_save()
    with contextlib.suppress(Boom):
        async with async_run_in_transaction():
            doc.name = "renamed"
            await doc.async_save()
            doc.balance = 42  # after the save, not saved yet
            raise Boom
    assert bookkeeping(doc) == (False, ["balance", "name"])
    await doc.async_save()
    stored = (await committed(TxAccount))[0]
    assert (stored["name"], stored["balance"]) == ("renamed", 42)


class TxInner(EmbeddedDocument):
    x = IntField()


class TxOuter(EmbeddedDocument):
    inner = EmbeddedDocumentField(TxInner)


class TxNested(Document):
    name = StringField()
    items = ListField(EmbeddedDocumentField(TxOuter))
    outer = EmbeddedDocumentField(TxOuter)


def nested_changes(doc: TxNested) -> tuple[list[str], list[str], list[str]]:
    """``doc``'s own changes and those of the embedded documents inside
    values changed whole (``items``; ``outer.inner``)."""
    return (
        list(doc._changed_fields),
        list(doc.items[0].inner._changed_fields),
        list(doc.outer.inner._changed_fields),
    )


async def test_an_abort_gives_back_the_changes_inside_values_changed_whole(
    app_alias, command_log
):
    """The changes of embedded documents inside values changed whole (a list
    set anew, an embedded document set anew in another), which MongoEngine's
    bookkeeping holds apart, are where they were after an abort, as before
    the save; the next save sends the same update."""
    await warm()
    await TxNested(
        name="a",
        items=[TxOuter(inner=TxInner(x=1)), TxOuter(inner=TxInner(x=2))],
        outer=TxOuter(inner=TxInner(x=3)),
    ).async_save()
    doc = await TxNested.objects.async_get()
    doc.items[0].inner.x = 10
    doc.items = doc.items[:1]
    doc.outer.inner = TxInner(x=4)
    doc.outer.inner.x = 5
    doc.name = "b"
    before = nested_changes(doc)
    assert before == (["items", "name"], ["x"], ["x"])
    command_log.clear()
    with contextlib.suppress(Boom):
        async with async_run_in_transaction():
            await doc.async_save()
            raise Boom
    assert nested_changes(doc) == before
    assert doc._get_changed_fields() == ["items", "name", "outer.inner"]
    await doc.async_save()
    first, second = (
        event.command["updates"][0]["u"]
        for event in command_log.events
        if event.command_name == "update"
    )
    assert first == second
    stored = (await committed(TxNested))[0]
    assert stored["items"] == [{"inner": {"x": 10}}]
    assert (stored["outer"], stored["name"]) == ({"inner": {"x": 5}}, "b")


async def test_an_abort_gives_a_new_document_its_embedded_documents_changes(
    app_alias, command_log
):
    """A new document (no list of changes: all changed) saved in an aborted
    transaction is as before the save: new, without a list, its embedded
    documents holding their changes (they were ``[]``), so the next save
    sends the same insert and its post_save sees what it would have."""
    await warm()
    with contextlib.suppress(pymongo.errors.CollectionInvalid):
        await get_async_db().create_collection(TxNested._get_collection_name())
    doc = TxNested(
        name="a", items=[TxOuter(inner=TxInner(x=1))], outer=TxOuter(inner=TxInner())
    )
    doc.items[0].inner.x = 2
    doc.outer.inner.x = 3

    def state() -> tuple:
        return (
            doc._created,
            hasattr(doc, "_changed_fields"),
            list(doc.items[0].inner._changed_fields),
            list(doc.outer.inner._changed_fields),
        )

    before = state()
    assert before == (True, False, ["x"], ["x"])
    command_log.clear()
    with contextlib.suppress(Boom):
        async with async_run_in_transaction():
            await doc.async_save()
            raise Boom
    assert state() == before
    await doc.async_save()
    first, second = (
        event.command["documents"][0]
        for event in command_log.events
        if event.command_name == "insert"
    )
    assert first == second
    assert (await committed(TxNested))[0] == doc.to_mongo().to_dict()


class TxSlugged(Document):
    """Its save changes it: clean() and the receivers below."""

    title = StringField()
    slug = StringField()
    stamp = IntField()
    late = IntField()

    def clean(self):
        self.slug = self.title.lower()


def _stamp(sender, document, **kwargs):
    document.stamp = (document.stamp or 0) + 1


def _late(sender, document, **kwargs):
    document.late = (document.late or 0) + 1


async def test_an_abort_gives_back_the_changes_the_save_itself_made(async_alias):
    """The changes clean(), a pre_save and a pre_save_post_validation
    receiver make in an aborted save are changes again after the abort: the
    next save sends them (memory and database would differ otherwise)."""
    await warm()
    doc = await TxSlugged(title="A").async_save()
    signals.pre_save.connect(_stamp, sender=TxSlugged)
    signals.pre_save_post_validation.connect(_late, sender=TxSlugged)
    try:
        with contextlib.suppress(Boom):
            async with async_run_in_transaction():
                doc.title = "B"
                await doc.async_save()
                raise Boom
    finally:
        signals.pre_save.disconnect(_stamp, sender=TxSlugged)
        signals.pre_save_post_validation.disconnect(_late, sender=TxSlugged)
    assert sorted(doc._get_changed_fields()) == ["late", "slug", "stamp", "title"]
    await doc.async_save(clean=False)
    stored = (await committed(TxSlugged))[0]
    assert stored == doc.to_mongo().to_dict()


async def inserted_then_aborted(
    doc: Document, outside: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Insert ``doc`` in a transaction; once inserted, ``outside(abort)`` runs
    in another task, and the transaction aborts when it sets ``abort``."""
    inserted, abort = asyncio.Event(), asyncio.Event()

    async def aborted() -> None:
        with contextlib.suppress(Boom):
            async with async_run_in_transaction():
                await doc.async_save()
                inserted.set()
                await abort.wait()
                raise Boom

    async def beside() -> None:
        await inserted.wait()
        await outside(abort)

    await asyncio.gather(aborted(), beside())


@pytest.mark.parametrize("abort_reply", ["first", "after the save's"])
async def test_an_abort_during_another_tasks_save_of_the_document(
    async_alias, command_log, monkeypatch, abort_reply
):
    """A save outside the transaction, whose write is awaited while the
    transaction that inserted the document aborts (its undo makes the
    document new again, every field changed), ends without an error and
    leaves every field changed; also when the abort's reply is handled after
    the save's (the server releases the save's write as the abort ends):
    the undo then left the saved document new again."""
    saves: list[asyncio.Task] = []
    if abort_reply != "first":
        abort_transaction = AsyncClientSession.abort_transaction

        async def late_abort(self: AsyncClientSession) -> None:
            await abort_transaction(self)
            await asyncio.wait(saves)  # the save's reply is handled first

        monkeypatch.setattr(AsyncClientSession, "abort_transaction", late_abort)
    await warm()
    doc = TxAccount(name="x")

    async def outside(abort: asyncio.Event) -> None:
        command_log.clear()
        doc.balance = 5
        save = asyncio.create_task(doc.async_save())
        saves.append(save)
        while "update" not in command_log.names:  # (waits for the transaction)
            await asyncio.sleep(0)
        abort.set()
        await save

    await inserted_then_aborted(doc, outside)
    # The save's update made the document (upsert) of what it sent: every
    # field still counts as changed, and the next save sends them all.
    assert (await committed(TxAccount))[0]["balance"] == 5
    assert not doc._created and not hasattr(doc, "_changed_fields")
    await doc.async_save()
    stored = (await committed(TxAccount))[0]
    assert (stored["name"], stored["balance"]) == ("x", 5)


async def test_an_abort_after_another_tasks_save_that_sent_nothing(async_alias):
    """A save outside the transaction of a document it inserted, with
    nothing changed since, sends nothing: the abort leaves the document new
    (a save with save_condition inserts it). The save was counted as one
    that stored it: the undo left it stored, and that save raised
    SaveConditionError (an update matching nothing)."""
    await warm()
    doc = TxAccount(name="x")

    async def outside(abort: asyncio.Event) -> None:
        await doc.async_save()  # (nothing changed: nothing sent)
        abort.set()

    await inserted_then_aborted(doc, outside)
    assert doc._created and await committed(TxAccount) == []
    await doc.async_save(save_condition={"name": "x"})
    assert [raw["name"] for raw in await committed(TxAccount)] == ["x"]


async def test_drop_collection_does_not_join_the_transaction(async_alias, command_log):
    """The server refuses a drop in a transaction: it runs outside (as index
    builds), at once, and stays when the block aborts."""
    await warm()
    await TxAccount(name="a").async_save()
    command_log.clear()
    with pytest.raises(Boom):
        async with async_run_in_transaction():
            await TxAccount.async_drop_collection()
            raise Boom
    (drop,) = [event.command for event in command_log.events if "drop" in event.command]
    assert "txnNumber" not in drop and "autocommit" not in drop
    assert "tx_account" not in await get_async_db().list_collection_names()


async def test_callback_form_reruns_when_the_commit_is_transient(
    app_alias, command_log
):
    await warm()
    attempts = []

    async def save():
        attempts.append(1)
        await TxAccount(name="saved once").async_save()

    transient = {"errorCode": 251, "errorLabels": ["TransientTransactionError"]}
    command_log.clear()
    async with fail_point(
        app_alias, {"times": 1}, failCommands=["commitTransaction"], **transient
    ):
        await async_run_transaction(save)
    assert len(attempts) == 2
    assert sent(command_log) == [*["insert", "commitTransaction"] * 2]
    assert [raw["name"] for raw in await committed(TxAccount)] == ["saved once"]


async def test_a_one_by_one_delete_sends_post_delete_once_it_committed(
    app_alias, command_log
):
    """A queryset delete going document by document (the class has delete
    receivers) with rules to apply runs in a transaction of its own: each
    document's ``post_delete`` is sent once that transaction committed, once
    per document, though a transient commit failure ran the delete again
    (``pre_delete``, sent before each delete, is sent again). They had been
    sent in each attempt, before its commit: twice, the document still
    found outside the transaction (it could still be rolled back)."""
    for name in ("a", "b"):
        kennel = await TxKennel(name=name).async_save()
        await TxDog(name=f"{name}'s dog", kennel=kennel).async_save()
    pre, post = [], []

    def before(sender: type, document: Any, **kwargs: Any) -> None:
        pre.append(document.name)

    async def after(sender: type, document: Any, **kwargs: Any) -> None:
        kennels = [raw["name"] for raw in await committed(TxKennel)]
        post.append((document.name, kennels, current_session()))

    transient = {"errorCode": 251, "errorLabels": ["TransientTransactionError"]}
    signals.pre_delete.connect(before, sender=TxKennel)
    signals.post_delete.connect(after, sender=TxKennel)
    try:
        command_log.clear()
        async with fail_point(
            app_alias, {"times": 1}, failCommands=["commitTransaction"], **transient
        ):
            assert await TxKennel.objects.order_by("name").async_delete() == 2
    finally:
        signals.pre_delete.disconnect(before, sender=TxKennel)
        signals.post_delete.disconnect(after, sender=TxKennel)
    assert sent(command_log).count("commitTransaction") == 2
    assert pre == ["a", "b", "a", "b"]
    assert post == [("a", [], None), ("b", [], None)]
    assert await committed(TxKennel) == [] and await committed(TxDog) == []


async def test_a_one_by_one_delete_cancelled_while_it_commits_signals_after(
    app_alias,
):
    """Cancelled while its own transaction commits, a document-by-document
    delete raises at once; the commit goes on, and once it committed each
    document's ``post_delete`` is sent, once, in a task of its own."""
    for name in ("a", "b"):
        kennel = await TxKennel(name=name).async_save()
        await TxDog(name=f"{name}'s dog", kennel=kennel).async_save()
    post: list[tuple[str, list[str]]] = []
    both = asyncio.Event()

    async def after(sender: type, document: Any, **kwargs: Any) -> None:
        kennels = [raw["name"] for raw in await committed(TxKennel)]
        post.append((document.name, kennels))
        if len(post) == 2:
            both.set()

    signals.post_delete.connect(after, sender=TxKennel)
    try:
        async with held_on_server(app_alias, "commitTransaction", 1000) as held:
            deleting = asyncio.create_task(
                TxKennel.objects.order_by("name").async_delete()
            )
            await held.reached_server()
            deleting.cancel()
            await asyncio.wait({deleting})
            assert deleting.cancelled() and post == []
            await asyncio.wait_for(both.wait(), 60)  # (the last step asserted)
    finally:
        signals.post_delete.disconnect(after, sender=TxKennel)
    assert post == [("a", []), ("b", [])]
    assert await committed(TxDog) == []


async def test_context_manager_reports_a_transient_commit(app_alias, command_log):
    """The block cannot run again: the caller gets an error to retry on."""
    await warm()
    transient = {"errorCode": 251, "errorLabels": ["TransientTransactionError"]}
    command_log.clear()
    async with fail_point(
        app_alias, {"times": 1}, failCommands=["commitTransaction"], **transient
    ):
        with pytest.raises(pymongo.errors.PyMongoError) as error:
            async with async_run_in_transaction() as session:
                session_id = session.session_id
                await TxAccount(name="aborted").async_save()
    assert str(error.value) == (
        "The commit of async_run_in_transaction() failed with a "
        "TransientTransactionError and the transaction was aborted: run the "
        "block again (async_run_transaction() does that itself)"
    )
    assert is_transient(error.value)
    # The failed commit is fenced (a first operation may still be on its way):
    # one more transaction on the session, aborted at once.
    assert sent(command_log) == [
        "insert",
        "commitTransaction",
        "find",
        "abortTransaction",
    ]
    [fence] = [e.command for e in command_log.events if e.command_name == "find"]
    assert fence["find"] == "mongoengine_async_fence"
    await end_session(session_id)
    assert await committed(TxAccount) == []


# An error the block raises after its transaction sent something, and whether
# its abort is fenced (one more transaction on the session: see
# context._Block._fence). Any error may follow an operation the block gave up
# on (its time-out caught), still on its way.
FENCED_AFTER = {
    "lost connection": (pymongo.errors.AutoReconnect("connection reset"), True),
    "network time-out": (pymongo.errors.NetworkTimeout("timed out"), True),
    # A server selection time-out while this client knows its primary (one
    # of another client's): fenced. With no primary known, not (the fence
    # would wait for one, with nothing on its way): see test_server_loss.py.
    "a selection time-out": (
        pymongo.errors.ServerSelectionTimeoutError("no primary"),
        True,
    ),
    "time limit": (pymongo.errors.ExecutionTimeout("time limit", 50), True),
    "no such transaction": (pymongo.errors.OperationFailure("no txn", 251), True),
    "another error": (ValueError("not this one"), True),
}


@pytest.mark.parametrize("raised", list(FENCED_AFTER))
@pytest.mark.parametrize("form", FORMS)
async def test_the_aborts_that_are_fenced(app_alias, command_log, form, raised):
    """An abort of a block whose transaction sent something is fenced, but
    after a server selection that timed out while no primary is known (the
    fence would wait for a server too, with nothing on its way)."""
    await warm()
    error, fenced = FENCED_AFTER[raised]

    async def block() -> None:
        await TxAccount(name="aborted").async_save()
        raise error

    command_log.clear()
    with pytest.raises(type(error)):
        await run_in(form, block)
    fence = ["find", "abortTransaction"] if fenced else []
    assert sent(command_log) == ["insert", "abortTransaction", *fence]
    assert await committed(TxAccount) == []


async def test_callback_form_raises_other_errors_at_once(async_alias, command_log):
    await warm()
    attempts = []

    async def fail():
        attempts.append(1)
        await TxAccount(name="rolled back").async_save()
        raise Boom

    command_log.clear()
    with pytest.raises(Boom):
        await async_run_transaction(fail)
    assert attempts == [1]
    fence = ["find", "abortTransaction"]  # (see FENCED_AFTER)
    assert sent(command_log) == ["insert", "abortTransaction", *fence]
    assert await committed(TxAccount) == []


async def test_callback_form_options_and_binding(async_alias, command_log):
    from pymongo.read_concern import ReadConcern

    await warm()
    seen = []

    async def work():
        session = current_session(get_async_connection())
        seen.append((session.options.causal_consistency, session.in_transaction))
        return await TxAccount(name="options").async_save()

    command_log.clear()
    account = await async_run_transaction(
        work,
        session_kwargs={"causal_consistency": False},
        read_concern=ReadConcern("snapshot"),
        max_commit_time_ms=1000,
    )
    assert seen == [(False, True)] and account.name == "options"
    insert, commit = command_log.events
    assert insert.command["readConcern"] == {"level": "snapshot"}
    assert commit.command["maxTimeMS"] == 1000
    assert current_session() is None


@pytest.mark.parametrize("inner", FORMS)
@pytest.mark.parametrize("outer", FORMS)
async def test_no_form_nests_in_another(async_alias, outer, inner):
    await warm()

    async def nested():
        await TxAccount(name="outer").async_save()
        with pytest.raises(OperationError) as error:
            await run_in(inner, TxAccount(name="inner").async_save)
        refused = {"callback": "async_run_transaction()"}.get(
            inner, "async_run_in_transaction()"
        )
        assert str(error.value) == (  # names the function refused
            f"{refused} cannot be nested: a transaction is already active in this task"
        )

    await run_in(outer, nested)
    assert [raw["name"] for raw in await committed(TxAccount)] == ["outer"]


async def test_a_task_that_outlived_its_block_starts_a_transaction_of_its_own(
    async_alias,
):
    """A task started in a block that ended meanwhile inherited its ended
    session: its own transaction is not nested (it raised
    NestedTransactionError, "a transaction is already active in this task")."""
    await warm()
    account = await TxAccount(name="ann", balance=0).async_save()
    ended = asyncio.Event()

    async def later() -> None:
        await ended.wait()
        async with async_run_in_transaction():
            await TxAccount.objects(pk=account.pk).async_update(inc__balance=5)
        with pytest.raises(pymongo.errors.InvalidOperation, match="ended session"):
            await TxAccount.objects(pk=account.pk).async_update(inc__balance=1)

    async with async_run_in_transaction():
        task = asyncio.create_task(later())
        await TxAccount.objects(pk=account.pk).async_update(inc__balance=1)
    ended.set()
    await task
    assert (await committed(TxAccount))[0]["balance"] == 6


ENDED = "Cannot use ended session: this task was started in a transaction"


@pytest.mark.parametrize("late", ["save", "own transaction"])
async def test_a_task_of_an_attempt_run_again_does_not_join_the_next_one(
    app_alias, command_log, late
):
    """A task started in an attempt of async_run_transaction that runs once
    the attempt ended (a TransientTransactionError: fn runs again on the same
    session) is a task that outlived its block: its save fails before
    sending anything, and a transaction it starts is its own. It joined the
    next attempt's transaction: its save returned and was committed with
    it, which fn's second run never asked for (its own transaction raised
    NestedTransactionError). A task of an attempt that runs while the
    attempt does joins it (the receipt), and is aborted with it."""
    await warm()
    await TxAccount(name="ann", balance=100).async_save()
    attempt_over = asyncio.Event()
    late_tasks: list[asyncio.Task] = []

    async def outlive() -> None:
        await attempt_over.wait()
        if late == "save":
            await TxAccount(name="late").async_save()
            return
        async with async_run_in_transaction():
            await TxAccount(name="own").async_save()

    async def pay() -> str:
        if not late_tasks:
            late_tasks.append(asyncio.create_task(outlive()))
        else:  # the second attempt: the first one's task runs now
            attempt_over.set()
            await asyncio.wait(late_tasks)
        await asyncio.create_task(TxAccount(name="receipt").async_save())
        await TxAccount.objects(name="ann").async_update(dec__balance=10)
        return "paid"

    command_log.clear()
    async with fail_point(
        app_alias, {"times": 1}, failCommands=["update"], **WRITE_CONFLICT
    ):
        assert await async_run_transaction(pay) == "paid"
    [task] = late_tasks
    own = ["insert", "commitTransaction"] if late == "own transaction" else []
    assert sent(command_log) == [
        *["insert", "update", "abortTransaction"],
        *own,
        *["insert", "update", "commitTransaction"],
    ]
    if late == "save":
        assert type(task.exception()) is pymongo.errors.InvalidOperation
        assert str(task.exception()).startswith(ENDED)
        names = ["ann", "receipt"]
    else:
        assert task.exception() is None
        names = ["ann", "own", "receipt"]
    assert [raw["name"] for raw in await committed(TxAccount)] == names
    assert (await committed(TxAccount, name="ann"))[0]["balance"] == 90


async def test_a_task_of_an_attempt_does_not_share_the_next_ones_fetch(app_alias):
    """A task of an ended attempt fetching a reference while the next
    attempt's fetch of it is on its way fails as one that outlived its
    block. It waited for that fetch, as one in the same transaction: it got
    the document the next attempt wrote, which its abort then undid."""
    await warm()
    owner = TxOwner(id=ObjectId(), name="written by the second attempt")
    await get_async_db().tx_pet.insert_one({"name": "rex", "owner": owner.pk})
    pet = await TxPet.objects.async_get(name="rex")
    attempt_over = asyncio.Event()
    late_tasks: list[asyncio.Task] = []
    fetched: list[Any] = []

    async def outlive() -> Any:
        await attempt_over.wait()
        return await pet.owner.fetch()

    async def write() -> None:
        if not late_tasks:
            late_tasks.append(asyncio.create_task(outlive()))
            await TxAccount.objects(name="ann").async_update(inc__balance=1)
        await owner.async_save()
        held = {"blockConnection": True, "blockTimeMS": 1000}
        async with fail_point(app_alias, {"times": 1}, failCommands=["find"], **held):
            fetching = asyncio.create_task(pet.owner.fetch())
            await asyncio.sleep(0)  # (its query on its way)
            attempt_over.set()
            await asyncio.wait(late_tasks)
            fetched.append(await fetching)
        raise Boom

    async with fail_point(
        app_alias, {"times": 1}, failCommands=["update"], **WRITE_CONFLICT
    ):
        with pytest.raises(Boom):
            await async_run_transaction(write)
    [task] = late_tasks
    assert type(task.exception()) is pymongo.errors.InvalidOperation
    assert str(task.exception()).startswith(ENDED)
    assert [each.name for each in fetched] == ["written by the second attempt"]
    assert await committed(TxOwner) == []


async def test_a_task_of_an_attempt_leaves_the_next_ones_follow_ups(app_alias):
    """What follows a cancelled save that landed in the next attempt (its
    post_save, whose receiver writes) is the next attempt's, run by its
    next save: a save of a task of the ended attempt, refused, leaves it.
    That save ran it first, in its task: the receiver's write was refused
    there, and it ran no more (nothing it wrote was committed)."""
    await warm()
    attempt_over = asyncio.Event()
    late_tasks: list[asyncio.Task] = []
    received: list[str] = []

    async def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        received.append(document.name)
        await TxOwner(name=f"after {document.name}").async_save()

    async def outlive() -> None:
        await attempt_over.wait()
        await TxAccount(name="late").async_save()

    async def write() -> None:
        if not late_tasks:
            late_tasks.append(asyncio.create_task(outlive()))
            await TxAccount.objects(name="ann").async_update(inc__balance=1)
        async with held_on_server(app_alias, "insert", 1000) as held:
            saving = asyncio.create_task(TxHolder(name="cancelled").async_save())
            await held.reached_server()
            saving.cancel()
            await asyncio.wait({saving})
        while not follow_ups_pending():  # (its write landed: its post_save next)
            await asyncio.sleep(0.01)
        attempt_over.set()
        await asyncio.wait(late_tasks)
        await TxAccount(name="next").async_save()

    signals.post_save.connect(receiver, sender=TxHolder)
    try:
        async with fail_point(
            app_alias, {"times": 1}, failCommands=["update"], **WRITE_CONFLICT
        ):
            await async_run_transaction(write)
    finally:
        signals.post_save.disconnect(receiver, sender=TxHolder)
    [task] = late_tasks
    assert type(task.exception()) is pymongo.errors.InvalidOperation
    assert str(task.exception()).startswith(ENDED)
    assert received == ["cancelled"]
    assert [raw["name"] for raw in await committed(TxHolder)] == ["cancelled"]
    assert [raw["name"] for raw in await committed(TxOwner)] == ["after cancelled"]
    assert [raw["name"] for raw in await committed(TxAccount)] == ["next"]


@pytest.mark.parametrize("end", ["commit", "abort"])
@pytest.mark.parametrize("form", FORMS)
async def test_a_task_that_writes_while_its_block_commits_or_aborts(
    app_alias, command_log, form, end
):
    """A task started in a block (or an attempt) that writes once the block's
    code ended, while its commit or abort is on the server, fails as one that
    outlived the block, sending nothing. Its write was sent in the ending
    transaction: committed with it, which the block never asked for (or
    aborted with it, after it returned)."""
    await warm()
    code_ended = asyncio.Event()
    ending = "commitTransaction" if end == "commit" else "abortTransaction"
    tasks: list[asyncio.Task] = []

    async def outlive() -> None:
        await code_ended.wait()
        while ending not in command_log.names:  # the commit (abort) was sent
            await asyncio.sleep(0.01)
        await TxAccount(name="late").async_save()

    async def block() -> None:
        tasks.append(asyncio.create_task(outlive()))
        await TxAccount(name="block").async_save()
        code_ended.set()
        if end == "abort":
            raise Boom

    command_log.clear()
    async with fail_point(
        app_alias,
        {"times": 1},
        failCommands=[ending],
        blockConnection=True,
        blockTimeMS=1500,
    ):
        with contextlib.suppress(Boom):
            await run_in(form, block)
        await asyncio.wait(tasks)
    [task] = tasks
    assert type(task.exception()) is pymongo.errors.InvalidOperation
    assert str(task.exception()).startswith(ENDED)
    fenced = ["find", "abortTransaction"] if end == "abort" else []  # (FENCED_AFTER)
    assert sent(command_log) == ["insert", ending, *fenced]
    names = ["block"] if end == "commit" else []
    assert [raw["name"] for raw in await committed(TxAccount)] == names


async def delete_cancelled_in_block(app_alias: str, form: str, kennel: Any) -> None:
    """In a block (``form``), delete ``kennel`` in a task cancelled once its
    read of the dogs is held on the server, so that its cascade goes on once
    the block's code ended."""
    async with held_on_server(app_alias, "find", 1000) as held:

        async def block() -> None:
            deleting = asyncio.create_task(kennel.async_delete())
            await held.reached_server()  # its read of the dogs
            deleting.cancel()
            await asyncio.wait({deleting})

        await run_in(form, block)


@pytest.mark.parametrize("form", FORMS)
async def test_a_cancelled_cascade_goes_on_as_a_whole_once_the_block_ended(
    app_alias, form
):
    """A delete with rules joining the block's transaction, cancelled on its
    way and caught by the block, goes on as a whole (docs/documents.md), and
    the commit waits for it: its steps after the block's code ended (the
    signal receivers' writes for the documents it cascades to) are in the
    transaction. They failed as those of a task that outlived its block
    (InvalidOperation), and the commit took the delete cut short: nothing
    deleted. (The collars' receivers run in a write the dogs' delete
    detaches in turn.)"""
    await warm()
    kennel = await TxKennel(name="Ann's").async_save()
    for name in ("Rex", "Tom"):
        dog = await TxDog(name=name, kennel=kennel).async_save()
        await TxCollar(name=f"{name}'s collar", dog=dog).async_save()

    async def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        await TxAccount(name=f"before deleting {document.name}").async_save()

    signals.pre_delete.connect(receiver, sender=TxDog)
    signals.pre_delete.connect(receiver, sender=TxCollar)
    try:
        await delete_cancelled_in_block(app_alias, form, kennel)
    finally:
        signals.pre_delete.disconnect(receiver, sender=TxDog)
        signals.pre_delete.disconnect(receiver, sender=TxCollar)
    assert await committed(TxKennel) == [] and await committed(TxDog) == []
    assert await committed(TxCollar) == []
    assert [raw["name"] for raw in await committed(TxAccount)] == [
        "before deleting Rex",
        "before deleting Tom",
        "before deleting Rex's collar",
        "before deleting Tom's collar",
    ]


@pytest.mark.parametrize("form", FORMS)
async def test_a_task_a_receiver_starts_once_the_block_ended_writes_outside_it(
    app_alias, command_log, form
):
    """A task that a signal receiver starts (fire and forget) in the rest of a
    cancelled cascade, going on once the block's code ended, cannot join the
    transaction (its commit does not wait for the task, which would use the
    session beside the delete): it runs outside it, as one that a receiver
    starts in a delete's own transaction. It failed with 'Cannot use ended
    session' (an attempt over), though the block had ended before it began."""
    await warm()
    kennel = await TxKennel(name="Ann's").async_save()
    for name in ("Rex", "Tom"):
        await TxDog(name=name, kennel=kennel).async_save()
    started: list[asyncio.Task] = []

    async def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        save = TxAccount(name=f"task for {document.name}").async_save()
        started.append(asyncio.create_task(save))
        await asyncio.wait({started[-1]})
        await TxAccount(name=f"receiver for {document.name}").async_save()

    signals.pre_delete.connect(receiver, sender=TxDog)
    try:
        await delete_cancelled_in_block(app_alias, form, kennel)
    finally:
        signals.pre_delete.disconnect(receiver, sender=TxDog)
    assert [task.exception() for task in started] == [None, None]
    assert await committed(TxKennel) == [] and await committed(TxDog) == []
    assert [raw["name"] for raw in await committed(TxAccount)] == [
        "task for Rex",
        "receiver for Rex",
        "task for Tom",
        "receiver for Tom",
    ]
    in_transaction = {
        event.command["documents"][0]["name"]: "autocommit" in event.command
        for event in command_log.events
        if event.command_name == "insert"
        and event.command["insert"] == TxAccount._get_collection_name()
    }
    assert in_transaction == {
        "task for Rex": False,
        "receiver for Rex": True,
        "task for Tom": False,
        "receiver for Tom": True,
    }


def test_is_transient_follows_the_causes():
    labelled = pymongo.errors.OperationFailure("conflict", code=112)
    labelled._add_error_label("TransientTransactionError")
    try:
        raise OperationError("Update failed") from labelled
    except OperationError as error:
        wrapped = error
    assert is_transient(labelled) and is_transient(wrapped)
    assert not is_transient(OperationError("Update failed"))
    assert not is_transient(pymongo.errors.OperationFailure("other", code=2))
    assert not is_transient(None)
    if hasattr(asyncio, "TaskGroup"):  # (ExceptionGroup: Python 3.11's)
        assert is_transient(ExceptionGroup("g", [labelled, wrapped]))  # noqa: F821
        other = ValueError("other")
        assert not is_transient(ExceptionGroup("g", [labelled, other]))  # noqa: F821


# -- cascades run in a transaction of their own ----------------------------------------


class TxFreshAuthor(Document):
    name = StringField()
    meta = {"db_alias": "tx_fresh"}


class TxFreshBook(Document):
    title = StringField()
    author = ReferenceField(TxFreshAuthor, reverse_delete_rule=CASCADE)
    meta = {"db_alias": "tx_fresh"}


@pytest.mark.parametrize("seed", ["replicaSet", "discovered", "direct"])
async def test_a_cascade_on_a_brand_new_client_runs_in_a_transaction(
    app_alias, mongodb_uri, seed
):
    """Before the client knows a primary (``replicaSet=`` given), or anything
    at all (one seed, or ``directConnection``), a cascade is still atomic: its
    second delete fails, and nothing is deleted."""
    db = get_async_db()
    author_id = (await db.tx_fresh_author.insert_one({"name": "Lem"})).inserted_id
    books = [{"title": title, "author": author_id} for title in "ab"]
    await db.tx_fresh_book.insert_many(books)
    primary = (await db.client.admin.command("hello"))["primary"]
    host = {
        "replicaSet": mongodb_uri,
        "discovered": f"mongodb://{primary}",
        "direct": f"mongodb://{primary}/?directConnection=true",
    }[seed]
    log, fresh = CommandLog(), f"{app_alias}-fresh"
    options = {"appname": fresh, "event_listeners": [log]}
    options["uuidRepresentation"] = "standard"
    await connect_async(db.name, "tx_fresh", host=host, **options)
    failing = {"failCommands": ["delete"], "errorCode": 2}  # BadValue
    async with fail_point(fresh, {"skip": 1}, **failing):
        with pytest.raises(OperationError, match="Could not delete document"):
            await TxFreshAuthor(id=author_id).async_delete()
    # The author goes first (its transaction undoes it), then the books by
    # the rule's filter: no ids are read.
    fence = ["find", "abortTransaction"]  # (see FENCED_AFTER)
    assert log.names == ["delete", "delete", "abortTransaction", *fence]
    assert await db.tx_fresh_book.count_documents({}) == 2
    assert await db.tx_fresh_author.count_documents({}) == 1


async def test_a_cascade_reruns_on_a_transient_error(app_alias, command_log):
    await warm()
    owner = await TxOwner(name="Ann").async_save()
    await TxPet(name="Rex", owner=owner).async_save()
    await TxPet(name="Tom", owner=owner).async_save()
    command_log.clear()
    async with fail_point(
        app_alias, {"times": 1}, failCommands=["delete"], **WRITE_CONFLICT
    ):
        await owner.async_delete()
    attempt = ["delete", "delete"]  # the owner, then its pets by the rule's filter
    assert sent(command_log) == [
        *attempt[:1],
        "abortTransaction",
        *attempt,
        "commitTransaction",
    ]
    assert len(transactions(command_log)) == 2
    assert await committed(TxOwner) == [] and await committed(TxPet) == []


class TxJournalled(Document):
    name = StringField()
    meta = {"db_alias": "tx_journal"}


@pytest.mark.parametrize("form", FORMS)
async def test_a_settled_transaction_lets_go_of_its_documents(mongodb_uri, form):
    """The journal of a transaction (the undos that hold the documents it
    saved) is emptied once the transaction is settled: the tasks started
    during it (PyMongo's monitors on the client's first use, the class's
    collection preparation) keep a copy of the task's context for as long as
    they live, and the documents would live as long."""
    async with fresh_database("tx_journal", mongodb_uri):

        async def save() -> weakref.ref:
            return weakref.ref(await TxJournalled(name="t").async_save())

        # The client's and the class's first use: inside the transaction.
        if form == "callback":
            ref = await async_run_transaction(save, alias="tx_journal")
        else:
            async with async_run_in_transaction(alias="tx_journal"):
                ref = await save()
        for _ in range(2):  # after the commit, and after an aborted one
            with contextlib.suppress(Boom):
                async with async_run_in_transaction(alias="tx_journal"):
                    await TxJournalled(name="aborted").async_save()
                    raise Boom
        gc.collect()
        assert ref() is None


class TxSideRoot(Document):
    """On alias "tx_side", a client of its own; its deletes cascade there
    (TxSideNote) and to the default alias (TxSideBook), in a transaction."""

    meta = {"db_alias": "tx_side"}


class TxSideNote(Document):
    root = ReferenceField(TxSideRoot, reverse_delete_rule=CASCADE)
    meta = {"db_alias": "tx_side"}


class TxSideBook(Document):
    root = ReferenceField(TxSideRoot, reverse_delete_rule=CASCADE)
    scan = FileField(collection_name="tx_side_files")


@pytest.mark.parametrize("settled", ["committed", "aborted"])
async def test_a_failed_delete_cascading_into_a_live_transaction(
    app_alias, mongodb_uri, settled
):
    """A ``transaction=False`` delete on one client, cascading into the
    transaction of an ``async_run_in_transaction`` block on another, whose
    own (last) write fails on its client, not in that transaction: the
    documents the cascade deleted in the transaction are read in it, gone,
    and get their post_delete and lose their files in it, as with no failure;
    the block committing, neither is left; aborted, the book and its file
    are back. (Ours took them as there: no post_delete, the file read
    outside the transaction and kept, orphaned once it committed.)"""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        root = await TxSideRoot().async_save()
        note = await TxSideNote(root=root).async_save()
        book = TxSideBook(root=root)
        await book.scan.async_put(b"book", filename="book.txt")
        await book.async_save()
        seen = []

        def note_delete(sender: type, document: Document, **kwargs: object) -> None:
            seen.append((sender.__name__, document.pk))

        for cls in (TxSideNote, TxSideBook):
            signals.post_delete.connect(note_delete, sender=cls)
        try:
            async with async_run_in_transaction():
                # The note's delete goes, the root's (its client's next) fails.
                async with fail_point(
                    "tx-side", {"skip": 1}, failCommands=["delete"], errorCode=2
                ):
                    with pytest.raises(OperationError, match="Failing command"):
                        await root.async_delete(transaction=False)
                assert await TxSideBook.objects.async_count() == 0  # (in it)
                if settled == "aborted":
                    raise Boom
        except Boom:
            pass
        finally:
            for cls in (TxSideNote, TxSideBook):
                signals.post_delete.disconnect(note_delete, sender=cls)
        assert sorted(seen) == [("TxSideBook", book.pk), ("TxSideNote", note.pk)]
        assert await TxSideNote.objects.async_count() == 0
        assert await TxSideRoot.objects.async_scalar("pk") == [root.pk]
        files = get_async_db()["tx_side_files.files"]
        if settled == "aborted":  # (the book, back, holds its file)
            back = await TxSideBook.objects.async_get()
            assert await back.scan.async_read() == b"book"
            return
        assert await TxSideBook.objects.async_count() == 0
        assert await book.scan.async_get() is None
        assert await files.count_documents({}) == 0


class TxSideMemo(Document):
    """On the default alias (the block's transaction), its file on "tx_side"
    (the root's client, in no transaction)."""

    root = ReferenceField(TxSideRoot, reverse_delete_rule=CASCADE)
    scan = FileField(db_alias="tx_side", collection_name="tx_memo_files")


@pytest.mark.parametrize("settled", ["committed", "aborted"])
@pytest.mark.parametrize("failing", [False, True], ids=["ok", "failed"])
async def test_a_cascaded_file_elsewhere_waits_for_the_live_transaction(
    app_alias, mongodb_uri, failing, settled
):
    """A ``transaction=False`` delete on one client, cascading into the
    transaction of an ``async_run_in_transaction`` block on another, to a memo
    whose file is on the first client: the file is deleted once that
    transaction commits; aborted, the memo is back, and so is its file (ours
    deleted it at once, outside the transaction: the memo came back without
    it). So too when the root's own delete failed after the cascade."""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        root = await TxSideRoot().async_save()
        await TxSideNote(root=root).async_save()
        memo = TxSideMemo(root=root)
        await memo.scan.async_put(b"memo", filename="memo.txt")
        await memo.async_save()
        try:
            async with async_run_in_transaction():
                if failing:  # (the note's delete goes, the root's fails)
                    async with fail_point(
                        "tx-side", {"skip": 1}, failCommands=["delete"], errorCode=2
                    ):
                        with pytest.raises(OperationError, match="Failing command"):
                            await root.async_delete(transaction=False)
                else:
                    await root.async_delete(transaction=False)
                assert await memo.scan.async_read() == b"memo"  # (not yet)
                if settled == "aborted":
                    raise Boom
        except Boom:
            pass
        await assert_memo_settled(memo, settled)


async def assert_memo_settled(memo: TxSideMemo, settled: str) -> None:
    """The block ``settled``: aborted, the memo is back holding its file;
    committed, it and its file are gone."""
    if settled == "aborted":
        back = await TxSideMemo.objects.async_get()
        assert await back.scan.async_read() == b"memo"
        return
    assert await TxSideMemo.objects.async_count() == 0
    assert await memo.scan.async_get() is None


class TxSideLeaf(Document):
    """On "tx_side", deleted for good by a ``transaction=False`` delete there,
    its file there too."""

    root = ReferenceField(TxSideRoot, reverse_delete_rule=CASCADE)
    scan = FileField(db_alias="tx_side", collection_name="tx_leaf_files")
    meta = {"db_alias": "tx_side"}


async def test_a_delete_cancelled_while_the_live_transaction_deletes_files(
    app_alias, mongodb_uri, monkeypatch
):
    """A ``transaction=False`` delete cascading into another client's block,
    cancelled while that block's transaction deletes a cascaded book's file:
    the files it had yet to delete (the book's and memo's, in it; the leaf's,
    deleted for good) are still deleted, once it commits (they stayed,
    orphaned)."""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        root = await TxSideRoot().async_save()
        owners = [TxSideBook(root=root), TxSideMemo(root=root), TxSideLeaf(root=root)]
        for owner in owners:
            await owner.scan.async_put(b"scan", filename="scan.txt")
            await owner.async_save()
        real, reached = async_gridfs.AsyncGridFSProxy._delete, asyncio.Event()

        async def held_once(self: Any, *args: Any) -> None:
            if self.collection_name == "tx_side_files" and not reached.is_set():
                reached.set()
                await asyncio.Event().wait()  # (until cancelled)
            await real(self, *args)

        monkeypatch.setattr(async_gridfs.AsyncGridFSProxy, "_delete", held_once)
        async with async_run_in_transaction():
            task = asyncio.ensure_future(root.async_delete(transaction=False))
            await reached.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The delete going on in a task of its own, cancelled in turn (as
            # the end of its loop does).
            (write,) = [t for t in detached._finishing if not t.done()]
            write.cancel()
            await asyncio.wait([write])
        await detached.all_finished(60)  # (the leaf's, in a task of its own)
        for owner in owners:
            assert await type(owner).objects.async_count() == 0
            assert await owner.scan.async_get() is None


async def test_a_cascaded_file_elsewhere_costs_no_round_trip_in_the_block(
    app_alias, mongodb_uri
):
    """The file of a memo a ``transaction=False`` delete cascaded to in
    another client's block, on a client outside it, costs no command before
    that transaction commits (ours read whether each file existed, a round
    trip per file, unused), then its delete (files, chunks) once it did."""
    side = CommandLog()
    async with fresh_database(
        "tx_side", mongodb_uri, appname="tx-side", event_listeners=[side]
    ):
        root = await TxSideRoot().async_save()
        memos = [TxSideMemo(root=root) for _ in range(2)]
        for memo in memos:
            await memo.scan.async_put(b"memo", filename="memo.txt")
            await memo.async_save()
        side.clear()
        async with async_run_in_transaction():
            await root.async_delete(transaction=False)
            touched = [e.command.get(e.command_name) for e in side.events]
            assert not [name for name in touched if "tx_memo_files" in str(name)]
            side.clear()
        assert [(e.command_name, e.command["delete"]) for e in side.events] == [
            ("delete", "tx_memo_files.files"),
            ("delete", "tx_memo_files.chunks"),
        ] * 2
        for memo in memos:
            assert await memo.scan.async_get() is None


@pytest.mark.parametrize("delete", ["transaction=False", "document", "queryset"])
async def test_a_cascaded_file_whose_client_closed_in_the_block(
    app_alias, mongodb_uri, delete
):
    """The root's delete (``transaction=False``, or in a transaction of its
    own) inside a block of the default client, cascading to a memo there
    whose file is on "tx_side", that alias disconnected in the block: the
    block returns (it raised ``InvalidOperation``, or ``ConnectionFailure``
    with the alias looked up at the commit, after it committed), the delete
    not run reported to the loop's exception handler."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, report: reported.append(report))
    try:
        async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
            root = await TxSideRoot().async_save()
            memo = TxSideMemo(root=root)
            await memo.scan.async_put(b"memo", filename="memo.txt")
            await memo.async_save()
            grid_id = memo.scan.grid_id
            async with async_run_in_transaction():
                if delete == "transaction=False":
                    await root.async_delete(transaction=False)
                elif delete == "document":
                    await root.async_delete()
                else:
                    await TxSideRoot.objects.async_delete()
                await disconnect_async("tx_side")
            assert await TxSideMemo.objects.async_count() == 0
    finally:
        loop.set_exception_handler(None)
    assert [report["message"] for report in reported] == [
        f"The delete of file {grid_id!r} in bucket 'tx_memo_files', once a "
        "transaction committed, did not run: its client was closed before the commit"
    ]
    assert isinstance(reported[0]["exception"], pymongo.errors.InvalidOperation)


@pytest.mark.parametrize("settled", ["committed", "aborted"])
@pytest.mark.parametrize("delete", ["document", "queryset"])
async def test_a_delete_in_its_own_transaction_cascading_into_a_live_one(
    app_alias, mongodb_uri, delete, settled
):
    """The root's delete in a transaction of its own (on "tx_side"), inside a
    block of the default client, cascading to a memo there whose file is on
    "tx_side": the file is deleted once the block commits; aborted, the memo
    is back with its file (ours deleted it in the root's transaction: the memo
    came back without it)."""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        root = await TxSideRoot().async_save()
        memo = TxSideMemo(root=root)
        await memo.scan.async_put(b"memo", filename="memo.txt")
        await memo.async_save()
        with contextlib.suppress(Boom):
            async with async_run_in_transaction():
                if delete == "document":
                    await root.async_delete()
                else:
                    await TxSideRoot.objects.async_delete()
                assert await memo.scan.async_read() == b"memo"  # (not yet)
                if settled == "aborted":
                    raise Boom
        await assert_memo_settled(memo, settled)


@pytest.mark.parametrize("settled", ["committed", "aborted"])
@pytest.mark.parametrize("delete", ["document", "queryset"])
async def test_the_live_transaction_ends_after_a_cancelled_delete_in_it(
    app_alias, mongodb_uri, monkeypatch, delete, settled
):
    """A ``transaction=False`` delete cascading into another client's block,
    its caller cancelled while it deletes a cascaded book's file in that
    block's transaction, the block leaving at once: the block's commit waits
    for that delete (ours committed first: the memo's file, registered after,
    was never deleted, orphaned); aborted, the book and memo are back with
    their files, the leaf (deleted for good) without its own."""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        root = await TxSideRoot().async_save()
        owners = [TxSideBook(root=root), TxSideMemo(root=root), TxSideLeaf(root=root)]
        for owner in owners:
            await owner.scan.async_put(b"scan", filename="scan.txt")
            await owner.async_save()
        real, reached = async_gridfs.AsyncGridFSProxy._delete, asyncio.Event()
        release = asyncio.Event()

        async def held_once(self: Any, *args: Any) -> None:
            if self.collection_name == "tx_side_files" and not reached.is_set():
                reached.set()
                await release.wait()
            await real(self, *args)

        real_settle, real_commit = (
            context._settle_writes,
            AsyncClientSession.commit_transaction,
        )

        async def settle(session: AsyncClientSession) -> None:
            if context._unsettled.get(session):  # (the end waits for it)
                release.set()
            await real_settle(session)

        async def commit(self: AsyncClientSession) -> None:
            await real_commit(self)
            release.set()  # (the end did not wait: the delete goes on after)

        monkeypatch.setattr(async_gridfs.AsyncGridFSProxy, "_delete", held_once)
        monkeypatch.setattr(context, "_settle_writes", settle)
        monkeypatch.setattr(AsyncClientSession, "commit_transaction", commit)
        with contextlib.suppress(Boom):
            async with async_run_in_transaction():
                deleting = (
                    root.async_delete(transaction=False)
                    if delete == "document"
                    else TxSideRoot.objects.async_delete(transaction=False)
                )
                task = asyncio.ensure_future(deleting)
                await reached.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                if settled == "aborted":
                    raise Boom
        release.set()
        await detached.all_finished(60)
        leaf = owners[2]
        assert await TxSideLeaf.objects.async_count() == 0
        assert await leaf.scan.async_get() is None
        if settled == "aborted":
            for owner in owners[:2]:
                back = await type(owner).objects.async_get()
                assert await back.scan.async_read() == b"scan"
            return
        for owner in owners[:2]:
            assert await type(owner).objects.async_count() == 0
            assert await owner.scan.async_get() is None


class TxAwayRoot(Document):
    """On "tx_side", its deletes cascading there (TxAwayLeaf)."""

    meta = {"db_alias": "tx_side"}


class TxAwayLeaf(Document):
    """On "tx_side", its file on the default alias (a block's client)."""

    root = ReferenceField(TxAwayRoot, reverse_delete_rule=CASCADE)
    scan = FileField(collection_name="tx_away_files")
    meta = {"db_alias": "tx_side"}


@pytest.mark.parametrize(
    "delete", ["leaf", "leaf transaction=False", "root", "root transaction=False"]
)
@pytest.mark.parametrize("settled", ["committed", "aborted"])
async def test_a_file_in_the_live_client_of_a_document_deleted_outside(
    app_alias, mongodb_uri, delete, settled
):
    """A leaf on "tx_side" deleted for good in a block of the default client
    (on its own, or cascaded from its root, in no transaction or one on
    "tx_side"), its file on the default client: the file is gone with it,
    whether the block commits or aborts (ours deleted it in the block's
    transaction: aborted, it came back, orphaned)."""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        root = await TxAwayRoot().async_save()
        leaf = TxAwayLeaf(root=root)
        await leaf.scan.async_put(b"leaf", filename="leaf.txt")
        await leaf.async_save()
        grid_id = leaf.scan.grid_id
        target, _, flag = delete.partition(" ")
        kwargs = {"transaction": False} if flag else {}
        with contextlib.suppress(Boom):
            async with async_run_in_transaction():
                await (leaf if target == "leaf" else root).async_delete(**kwargs)
                if settled == "aborted":
                    raise Boom
        await detached.all_finished(60)
        assert await TxAwayLeaf.objects.async_count() == 0
        bucket = get_async_db()["tx_away_files.files"]
        assert await bucket.count_documents({"_id": grid_id}) == 0


@pytest.mark.parametrize("held", ["commit", "steps"])
async def test_the_live_transaction_ends_after_a_cancelled_commit_in_it(
    app_alias, mongodb_uri, monkeypatch, held
):
    """The root's delete in a transaction of its own (on "tx_side") inside a
    block of the default client, cascading to a memo there whose file is on
    "tx_side", its caller cancelled while its commit (or the steps after it)
    is on its way, the block leaving at once: the block's commit waits for
    that commit and its steps (ours committed first: the memo's file, left
    to the block's commit once the root's committed, was never deleted,
    orphaned)."""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        root = await TxSideRoot().async_save()
        memo = TxSideMemo(root=root)
        await memo.scan.async_put(b"memo", filename="memo.txt")
        await memo.async_save()
        side = get_async_connection("tx_side")
        reached, release = asyncio.Event(), asyncio.Event()
        real_settle, real_commit, real_steps = (
            context._settle_writes,
            AsyncClientSession.commit_transaction,
            context._run_steps,
        )

        async def settle(session: AsyncClientSession) -> None:
            if context._unsettled.get(session):  # (the end waits for it)
                release.set()
            await real_settle(session)

        async def commit(self: AsyncClientSession) -> None:
            if self.client is side and held == "commit":
                reached.set()
                await release.wait()
            await real_commit(self)
            if self.client is not side and held == "commit":
                release.set()  # (the end did not wait: the root's goes on after)

        async def run_steps(steps: list) -> None:
            if held == "steps" and not reached.is_set():  # (the root's)
                reached.set()
                await release.wait()
            await real_steps(steps)

        monkeypatch.setattr(context, "_settle_writes", settle)
        monkeypatch.setattr(context, "_run_steps", run_steps)
        monkeypatch.setattr(AsyncClientSession, "commit_transaction", commit)
        async with async_run_in_transaction():
            task = asyncio.ensure_future(root.async_delete())
            await reached.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        release.set()
        await detached.all_finished(60)
        assert await TxSideRoot.objects.async_count() == 0
        assert await TxSideMemo.objects.async_count() == 0
        bucket = get_async_db("tx_side")["tx_memo_files.files"]
        assert await bucket.count_documents({"_id": memo.scan.grid_id}) == 0


@pytest.mark.parametrize("form", ["document", "queryset"])
@pytest.mark.parametrize("own", ["transaction=False", "its own transaction"])
@pytest.mark.parametrize("settled", ["committed", "aborted"])
async def test_a_file_the_block_wrote_of_a_document_deleted_outside(
    app_alias, mongodb_uri, form, own, settled
):
    """The block on the default client wrote the file record of a leaf on
    "tx_side" (it holds its lock); the leaf is then deleted for good outside
    the block, cascaded from its root: the delete returns, the block ends as
    it would, and the file is gone after it (deleted at once, outside any
    transaction, the file waited for the block's lock until the server
    killed its transaction: the block failed)."""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        root = await TxAwayRoot().async_save()
        leaf = TxAwayLeaf(root=root)
        await leaf.scan.async_put(b"leaf", filename="leaf.txt")
        await leaf.async_save()
        grid_id = leaf.scan.grid_id
        files = get_async_db()["tx_away_files.files"]
        kwargs = {"transaction": False} if own == "transaction=False" else {}
        with contextlib.suppress(Boom):
            async with async_run_in_transaction() as session:
                await files.update_one(
                    {"_id": grid_id}, {"$set": {"seen": 1}}, session=session
                )
                if form == "document":
                    await root.async_delete(**kwargs)
                else:
                    assert await TxAwayRoot.objects.async_delete(**kwargs) == 1
                assert await files.count_documents({"_id": grid_id}) == 1
                if settled == "aborted":
                    raise Boom
        await detached.all_finished(60)
        assert await TxAwayLeaf.objects.async_count() == 0
        assert await files.count_documents({"_id": grid_id}) == 0
        chunks = get_async_db()["tx_away_files.chunks"]
        assert await chunks.count_documents({"files_id": grid_id}) == 0


async def test_a_file_the_block_wrote_of_a_document_deleted_in_a_block_within(
    app_alias, mongodb_uri
):
    """A leaf on "tx_side" deleted in a "tx_side" block within a block of the
    default client, which wrote the leaf's file record: the file, left to
    the inner block's commit, waits then for the outer block's end (deleted
    at once, it waited for the outer block's lock until the server killed
    its transaction: the block failed)."""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        leaf = TxAwayLeaf(root=await TxAwayRoot().async_save())
        await leaf.scan.async_put(b"leaf", filename="leaf.txt")
        await leaf.async_save()
        grid_id = leaf.scan.grid_id
        files = get_async_db()["tx_away_files.files"]
        async with async_run_in_transaction() as session:
            await files.update_one(
                {"_id": grid_id}, {"$set": {"seen": 1}}, session=session
            )
            async with async_run_in_transaction("tx_side"):
                await leaf.async_delete()
            assert await files.count_documents({"_id": grid_id}) == 1
        await detached.all_finished(60)
        assert await TxAwayLeaf.objects.async_count() == 0
        assert await files.count_documents({"_id": grid_id}) == 0


async def test_a_file_left_to_an_aborted_block_is_deleted_past_its_timeout(
    app_alias, mongodb_uri
):
    """The block of the test above aborts once its caller's
    ``pymongo.timeout()`` is spent: the file of the leaf deleted outside it
    is still deleted after the abort, outside that time-out (under it, the
    delete raised a time-out to the loop's exception handler: the file stayed,
    its document gone)."""
    async with fresh_database("tx_side", mongodb_uri, appname="tx-side"):
        root = await TxAwayRoot().async_save()
        leaf = TxAwayLeaf(root=root)
        await leaf.scan.async_put(b"leaf", filename="leaf.txt")
        await leaf.async_save()
        grid_id = leaf.scan.grid_id
        files = get_async_db()["tx_away_files.files"]
        with pytest.raises(Boom), pymongo.timeout(1):
            async with async_run_in_transaction() as session:
                await files.update_one(
                    {"_id": grid_id}, {"$set": {"seen": 1}}, session=session
                )
                await root.async_delete(transaction=False)
                await asyncio.sleep(1.2)  # (the time-out spent)
                raise Boom
        await detached.all_finished(60)
        assert await TxAwayLeaf.objects.async_count() == 0
        assert await files.count_documents({"_id": grid_id}) == 0
