"""A delete with rules outside a transaction, on a client reading from
secondaries: its plan reads the primary, where it writes. The files of the
documents it cascades to are listed there, as every listing of files a
delete makes is (``gridfs.on_primary``): a secondary lagging behind would
list files a document held before, and the ones it holds now would be left,
held by no document. So are the documents it cascades to and the DENY
checks: one lagging behind misses a referrer just written."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pymongo
import pytest
from mongoengine.errors import OperationError
from pymongo import ReadPreference, WriteConcern

from mongoengine_async import (
    CASCADE,
    DENY,
    NULLIFY,
    Document,
    FileField,
    ReferenceField,
    StringField,
    get_async_db,
)
from mongoengine_async.testing import ReplicaSet, fresh_database

ALIAS = "dls_lagging"


class DlsLabel(Document):
    name = StringField()
    meta = {"db_alias": ALIAS}


class DlsAlbum(Document):
    """Needs its ids (its own rule): found by id, its files read with them."""

    title = StringField()
    label = ReferenceField(DlsLabel, reverse_delete_rule=CASCADE)
    sleeve = FileField(db_alias=ALIAS, collection_name="dls_files")
    meta = {"db_alias": ALIAS}


class DlsTrack(Document):
    album = ReferenceField(DlsAlbum, reverse_delete_rule=NULLIFY)
    meta = {"db_alias": ALIAS}


@contextlib.contextmanager
def replication_stopped(replica_set: ReplicaSet) -> Iterator[list[pymongo.MongoClient]]:
    """The secondaries fetch nothing more from the primary inside the block
    (``stopReplProducer``, once each secondary's fetcher is held by it): what
    is written meanwhile is on the primary only. Yields clients reaching
    each secondary alone."""
    primary = replica_set.wait_for_primary()
    others = [each for each in replica_set.members if each != primary]
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(pymongo.MongoClient(m.uri)) for m in others]
        for client in clients:
            stack.callback(
                client.admin.command,
                "configureFailPoint",
                "stopReplProducer",
                mode="off",
            )
            entered = client.admin.command(
                "configureFailPoint", "stopReplProducer", mode="alwaysOn"
            )["count"]
            client.admin.command(
                "waitForFailPoint",
                "stopReplProducer",
                timesEntered=entered + 1,
                maxTimeMS=60_000,
            )
        yield clients


async def test_cascaded_files_are_listed_on_the_primary(
    replica_set_3: ReplicaSet,
) -> None:
    """An album a label's delete cascades to had its sleeve replaced, which
    the secondaries have not seen yet: the delete (``transaction=False``, on
    a client reading from secondaries) deletes the album and its sleeve of
    now, listed on the primary. Listed on a secondary with the album's id,
    the old sleeve (gone already) was deleted again and the new one left,
    held by no document."""
    reads = {"read_preference": ReadPreference.SECONDARY}
    async with fresh_database(ALIAS, replica_set_3.uri, w=1, **reads):
        label = await DlsLabel(name="doomed").async_save()
        album = DlsAlbum(title="one", label=label)
        await album.sleeve.async_put(b"first")
        await album.async_save()
        await DlsTrack(album=album).async_save()
        database = get_async_db(ALIAS)
        # (On every member, as what came before it: the secondaries have it all.)
        everywhere = database.with_options(write_concern=WriteConcern(w=3))
        await everywhere["dls_marker"].insert_one({})

        with replication_stopped(replica_set_3) as secondaries:
            first = album.sleeve.grid_id
            await album.sleeve.async_delete()
            await album.sleeve.async_put(b"second")
            await album.async_save()
            for secondary in secondaries:  # (they lag behind: the first one)
                raw = secondary[database.name]["dls_album"].find_one()
                assert raw is not None and raw["sleeve"] == first
            await label.async_delete(transaction=False)

            primary = database.with_options(read_preference=ReadPreference.PRIMARY)
            assert await primary["dls_label"].count_documents({}) == 0
            assert await primary["dls_album"].count_documents({}) == 0
            assert await primary["dls_files.files"].count_documents({}) == 0
            assert await primary["dls_files.chunks"].count_documents({}) == 0
            [track] = await primary["dls_track"].find().to_list()
            assert "album" not in track


class DlsShelf(Document):
    name = StringField()
    meta = {"db_alias": ALIAS}


class DlsBox(Document):
    """Cascaded with a rule of its own (no files): found by id."""

    shelf = ReferenceField(DlsShelf, reverse_delete_rule=CASCADE)
    meta = {"db_alias": ALIAS}


class DlsTag(Document):
    box = ReferenceField(DlsBox, reverse_delete_rule=NULLIFY)
    meta = {"db_alias": ALIAS}


class DlsSeal(Document):
    shelf = ReferenceField(DlsShelf, reverse_delete_rule=DENY)
    meta = {"db_alias": ALIAS}


async def test_the_plan_reads_the_primary(replica_set_3: ReplicaSet) -> None:
    """A delete's plan (``transaction=False``, on a client reading from
    secondaries) reads the primary, where it writes: a box just put on the
    shelf, which the secondaries have not seen, is cascaded to and its tag
    nullified; a seal just put on another shelf refuses that one's delete.
    Read on a lagging secondary, the box was left pointing at a deleted
    shelf, its tag at a deleted box, and the sealed shelf deleted."""
    reads = {"read_preference": ReadPreference.SECONDARY}
    async with fresh_database(ALIAS, replica_set_3.uri, w=1, **reads):
        shelf = await DlsShelf(name="doomed").async_save()
        sealed = await DlsShelf(name="sealed").async_save()
        await DlsTag().async_save()  # (every collection created, everywhere)
        await DlsSeal().async_save()
        database = get_async_db(ALIAS)
        everywhere = database.with_options(write_concern=WriteConcern(w=3))
        await everywhere["dls_marker"].insert_one({})

        with replication_stopped(replica_set_3) as secondaries:
            box = await DlsBox(shelf=shelf).async_save()
            await DlsTag(box=box).async_save()
            await DlsSeal(shelf=sealed).async_save()
            for secondary in secondaries:  # (they lag behind: no box)
                assert secondary[database.name]["dls_box"].count_documents({}) == 0
            await shelf.async_delete(transaction=False)
            primary = database.with_options(read_preference=ReadPreference.PRIMARY)
            assert await primary["dls_box"].count_documents({}) == 0
            tagged = {"box": {"$exists": 1}}
            assert await primary["dls_tag"].count_documents(tagged) == 0
            with pytest.raises(OperationError) as raised:
                await sealed.async_delete(transaction=False)

            assert str(raised.value) == (
                "Could not delete document (DlsSeal.shelf refers to it)"
            )
            shelves = await primary["dls_shelf"].find().to_list()
            assert [raw["name"] for raw in shelves] == ["sealed"]
