"""``async_run_in_transaction`` against the real replica set.

Commit and rollback of every kind of async operation, nesting, other aliases,
retrying a block on a real write conflict, commit retries, and hundreds of
concurrent tasks with their own transactions.
"""

from __future__ import annotations

import asyncio

import pymongo.errors
import pytest
from pymongo.asynchronous.client_session import AsyncClientSession

from mongoengine_async import (
    CASCADE,
    Document,
    IntField,
    ListField,
    OperationError,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    async_switch_db,
    get_async_connection,
    get_async_db,
)
from mongoengine_async.context import current_session
from mongoengine_async.testing import CommandLog, fresh_database


class TxAccount(Document):
    name = StringField()
    balance = IntField(default=0)
    tags = ListField(StringField())


class TxOwner(Document):
    name = StringField()


class TxPet(Document):
    name = StringField()
    owner = ReferenceField(TxOwner, reverse_delete_rule=CASCADE)


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
    for cls in (TxAccount, TxOwner, TxPet):
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


async def test_an_aggregation_reused_in_a_transaction_joins_it(async_alias):
    await warm()
    await TxAccount(name="committed").async_save()
    names = TxAccount.objects.async_aggregate([{"$project": {"_id": 0, "name": 1}}])
    assert [doc async for doc in names] == [{"name": "committed"}]
    async with async_run_in_transaction():
        await TxAccount(name="pending").async_save()
        inside = sorted([doc["name"] async for doc in names])
    assert inside == ["committed", "pending"]


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


# -- retrying --------------------------------------------------------------------------


def transient(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is a TransientTransactionError."""
    while error is not None:
        if isinstance(error, pymongo.errors.PyMongoError) and error.has_error_label(
            "TransientTransactionError"
        ):
            return True
        error = error.__cause__
    return False


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
                if not transient(error):
                    raise
                errors.append(error)
                second_failed.set()
                await asyncio.sleep(0.05)

    _, attempts = await asyncio.wait_for(asyncio.gather(first(), second()), 30)
    assert attempts >= 2
    assert isinstance(errors[0], OperationError)  # as MongoEngine wraps it
    assert errors[0].__cause__.code == 112  # WriteConflict
    assert (await committed(TxAccount))[0]["balance"] == 11


async def test_commit_is_retried_on_unknown_commit_result(async_alias, monkeypatch):
    await warm()
    original = AsyncClientSession.commit_transaction
    calls = []

    async def flaky_commit(self):
        calls.append(1)
        if len(calls) == 1:
            error = pymongo.errors.AutoReconnect("simulated network error on commit")
            error._add_error_label("UnknownTransactionCommitResult")
            raise error
        return await original(self)

    monkeypatch.setattr(AsyncClientSession, "commit_transaction", flaky_commit)
    async with async_run_in_transaction():
        await TxAccount(name="committed once").async_save()
    assert len(calls) == 2
    assert len(await committed(TxAccount)) == 1


async def test_commit_error_without_the_label_propagates(async_alias, monkeypatch):
    await warm()

    async def failing_commit(self):
        raise pymongo.errors.OperationFailure("simulated", code=8000)

    monkeypatch.setattr(AsyncClientSession, "commit_transaction", failing_commit)
    with pytest.raises(pymongo.errors.OperationFailure, match="simulated"):
        async with async_run_in_transaction():
            await TxAccount(name="never").async_save()
    monkeypatch.undo()
    assert await committed(TxAccount) == []


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
