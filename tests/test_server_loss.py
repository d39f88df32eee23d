"""The server going away mid-operation: a prompt driver error, no hang, no lost data.

Each test runs its own throwaway replica set, so stopping it cannot disturb the
rest of the suite.
"""

from __future__ import annotations

import asyncio

import pymongo
import pytest
from pymongo.errors import PyMongoError

from mongoengine_async import (
    CASCADE,
    Document,
    IntField,
    OperationError,
    ReferenceField,
    StringField,
    connect_async,
    disconnect_async,
    is_transient,
)
from mongoengine_async.testing import ReplicaSet

ALIAS = "lossy"


class LossNote(Document):
    text = StringField()
    n = IntField()
    meta = {"db_alias": ALIAS}


class LossOwner(Document):
    name = StringField()
    meta = {"db_alias": ALIAS}


class LossItem(Document):
    owner = ReferenceField(LossOwner, reverse_delete_rule=CASCADE)
    meta = {"db_alias": ALIAS}


@pytest.fixture
async def server():
    """A replica set of this test's own, connected as alias "lossy"."""
    replica_set = ReplicaSet().start()
    await connect_async(
        db="loss",
        alias=ALIAS,
        host=replica_set.uri,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=1500,
    )
    try:
        yield replica_set
    finally:
        await disconnect_async(ALIAS)
        replica_set.stop()


async def stop(replica_set: ReplicaSet) -> None:
    await asyncio.to_thread(replica_set.stop)


async def test_streaming_raises_when_the_server_goes_away(server):
    await LossNote.objects.async_insert([LossNote(n=n) for n in range(50)])
    seen = []

    async def read_all() -> None:
        async for note in LossNote.objects.order_by("n").batch_size(5):
            seen.append(note.n)
            if len(seen) == 5:
                await stop(server)

    with pytest.raises(PyMongoError):
        await asyncio.wait_for(read_all(), 30)
    assert seen[:5] == [0, 1, 2, 3, 4]
    assert len(seen) < 50


async def test_a_failed_save_keeps_the_changes_to_save_later(server):
    note = await LossNote(text="draft", n=1).async_save()
    note.text = "final"
    await stop(server)
    with pytest.raises(PyMongoError):
        await asyncio.wait_for(note.async_save(), 30)
    assert note.text == "final"
    assert note._get_changed_fields() == ["text"]


async def test_a_cascade_interrupted_by_server_loss_raises_promptly(server):
    owner = await LossOwner(name="o").async_save()
    await LossItem.objects.async_insert([LossItem(owner=owner) for _ in range(20)])
    await stop(server)
    # Its transaction retries transient errors (a lost server is one) for 120 s,
    # as the convenient-transactions spec says, unless a PyMongo timeout ends it.
    # The timeout is an OperationFailure: Document.delete reports it wrapped.
    with pytest.raises(OperationError) as error, pymongo.timeout(3):
        await asyncio.wait_for(owner.async_delete(), 30)
    assert isinstance(error.value.__cause__, pymongo.errors.ExecutionTimeout)
    # The timeout keeps the label of the last attempt's error (docs/delete_rules.md).
    assert is_transient(error.value)
