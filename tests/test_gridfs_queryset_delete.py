"""A queryset delete of documents holding files deletes only the documents
whose files it listed: one that comes to match meanwhile keeps its files."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
import pytest
from bson import ObjectId
from pymongo import ReadPreference

import mongoengine_async.gridfs
import mongoengine_async.queryset as queryset_module
from mongoengine_async import (
    CASCADE,
    NULLIFY,
    Document,
    FileField,
    ListField,
    ReferenceField,
    StringField,
    context,
    get_async_connection,
    get_async_db,
)
from mongoengine_async.testing import CommandLog, fresh_database


class QdPlain(Document):
    name = StringField()
    data = FileField(collection_name="qd_files")


class QdRuled(Document):
    name = StringField()
    data = FileField(collection_name="qd_files")


class QdHolder(Document):
    ruled = ReferenceField(QdRuled, reverse_delete_rule=NULLIFY)


class QdRoot(Document):
    name = StringField()


class QdChild(Document):
    parent = ReferenceField(QdRoot, reverse_delete_rule=CASCADE)
    name = StringField()
    data = FileField(collection_name="qd_files")


class QdPair(Document):
    """Deleted by two CASCADE filters: one for each of its references."""

    first = ReferenceField(QdRoot, reverse_delete_rule=CASCADE)
    second = ReferenceField(QdRoot, reverse_delete_rule=CASCADE)
    name = StringField()
    data = FileField(collection_name="qd_files")


class QdMany(Document):
    """Deleted by one CASCADE filter a run of the deleted roots' ids."""

    parents = ListField(ReferenceField(QdRoot, reverse_delete_rule=CASCADE))
    name = StringField()
    data = FileField(collection_name="qd_files")


@contextlib.contextmanager
def after_first_find(
    command_log: CommandLog, mongodb_uri: str, write: Any, collection: str = ""
) -> Iterator[None]:
    """Call ``write(database)`` (another client's, sync) once the first
    ``find`` (of ``collection`` if given) sent on the test's connection was
    answered: between a delete's listing of the files and its delete,
    deterministically."""
    client: pymongo.MongoClient = pymongo.MongoClient(
        mongodb_uri, uuidRepresentation="standard"
    )
    database = client[get_async_db().name]
    done: list[str] = []

    def succeeded(event: Any) -> None:
        if event.command_name != "find" or done:
            return
        [sent] = [
            each for each in command_log.events if each.request_id == event.request_id
        ]
        if collection in ("", sent.command["find"]):
            done.append(event.command_name)
            write(database)

    command_log.succeeded = succeeded  # type: ignore[method-assign]
    try:
        yield
    finally:
        del command_log.succeeded
        client.close()
    assert done  # (the write happened)


def renamed_kept(cls: type[Any], pk: Any) -> Callable[[Any], None]:
    """The write of :func:`after_first_find` that renames document ``pk`` of
    ``cls`` "kept": a listed document changed to match the delete no more."""

    def write(database: Any) -> None:
        collection = database[cls._get_collection_name()]
        collection.update_one({"_id": pk}, {"$set": {"name": "kept"}})

    return write


async def stored(cls: type[Any], name: str) -> Any:
    """A saved ``cls`` document named ``name`` holding a file of its name."""
    document = cls(name=name)
    await document.data.async_put(name.encode())
    await document.async_save()
    return document


async def files_left() -> list[bytes]:
    """The contents of the files left in the bucket, sorted."""
    chunks = get_async_db()["qd_files.chunks"]
    return sorted([raw["data"] for raw in await chunks.find().to_list()])


@pytest.mark.parametrize("way", ["plain", "session", "rules", "rules-no-transaction"])
@pytest.mark.parametrize("change", ["inserted", "updated"])
async def test_a_document_matching_after_the_files_were_listed_keeps_them(
    async_alias: str, command_log: CommandLog, mongodb_uri: str, way: str, change: str
) -> None:
    """A document inserted (or updated to match) between the listing of the
    files of the matches and their delete is left alone, with its file; the
    count is of the documents deleted. The delete went by its query: that
    document was deleted too, its file (listed by nothing) orphaned."""
    cls = QdPlain if way in ("plain", "session") else QdRuled
    for name in ("a", "b"):
        await stored(cls, f"doomed {name}")
    later = cls(id=ObjectId(), name="doomed c" if change == "inserted" else "kept")
    await later.data.async_put(b"later")
    if change == "updated":
        await later.async_save()
    raw = later.to_mongo().to_dict()

    def write(database: Any) -> None:
        collection = database[cls._get_collection_name()]
        if change == "inserted":
            collection.insert_one(raw)
        else:
            collection.update_one({"_id": later.pk}, {"$set": {"name": "doomed c"}})

    queryset = cls.objects(name__startswith="doomed")
    with after_first_find(command_log, mongodb_uri, write):
        if way == "session":
            async with get_async_connection().start_session() as session:
                deleted = await queryset.async_delete(session=session)
        else:
            deleted = await queryset.async_delete(transaction=way == "rules")
    assert deleted == 2
    [kept] = await cls.objects.async_to_list()
    assert kept.pk == later.pk
    assert await (await cls.data.async_get(kept)).async_read() == b"later"
    assert await files_left() == [b"later"]


async def delete_doomed(cls: type[Any], way: str) -> int | None:
    """``async_delete()`` of the ``cls`` documents named "doomed ...", the
    ``way`` given: in a session of ours, or in a transaction of its own
    ("rules") or not."""
    queryset = cls.objects(name__startswith="doomed")
    if way == "session":
        async with get_async_connection().start_session() as session:
            return await queryset.async_delete(session=session)
    return await queryset.async_delete(transaction=way == "rules")


@pytest.mark.parametrize("way", ["plain", "session", "rules", "rules-no-transaction"])
async def test_a_listed_document_matching_no_more_keeps_its_files(
    async_alias: str, command_log: CommandLog, mongodb_uri: str, way: str
) -> None:
    """A document whose files were listed, then changed to match no more
    before the delete, stays (the delete names the query too) and keeps its
    files: the delete removed fewer documents than it listed, so one query
    reads the files of those still there. They were deleted, the document
    left referring to files gone."""
    cls = QdPlain if way in ("plain", "session") else QdRuled
    for name in ("a", "b", "c"):
        await stored(cls, f"doomed {name}")
    changed = await cls.objects.async_get(name="doomed c")

    write = renamed_kept(cls, changed.pk)

    with after_first_find(command_log, mongodb_uri, write):
        assert await delete_doomed(cls, way) == 2
    [kept] = await cls.objects.async_to_list()
    assert (kept.pk, kept.name) == (changed.pk, "kept")
    assert await (await cls.data.async_get(kept)).async_read() == b"doomed c"
    assert await files_left() == [b"doomed c"]


async def test_an_unacknowledged_delete_spares_the_files_of_those_it_left(
    async_alias: str, command_log: CommandLog, mongodb_uri: str
) -> None:
    """An unacknowledged delete (w=0) tells no count: a listed document
    changed to match no more before it keeps its files all the same (the
    files of the listed documents still there are read). They were all
    deleted, the document left referring to a file gone."""
    for name in ("a", "b", "c"):
        await stored(QdPlain, f"doomed {name}")
    changed = await QdPlain.objects.async_get(name="doomed c")

    write = renamed_kept(QdPlain, changed.pk)

    queryset = QdPlain.objects(name__startswith="doomed")
    with after_first_find(command_log, mongodb_uri, write):
        assert await queryset.async_delete(write_concern={"w": 0}) is None
    kept = await QdPlain.objects.async_get(pk=changed.pk)
    assert kept.name == "kept"
    assert await (await QdPlain.data.async_get(kept)).async_read() == b"doomed c"
    assert b"doomed c" in await files_left()


async def test_cancelled_as_it_reads_the_files_left_it_still_spares_them(
    async_alias: str, command_log: CommandLog, mongodb_uri: str
) -> None:
    """Cancelled while it reads the files of the listed documents still there
    (the documents deleted), the delete leaves that read and the files'
    deletes to a task of its own, which still spares the files of those."""
    documents = [await stored(QdPlain, f"doomed {name}") for name in "abc"]
    changed = documents[2]
    finds: list[Any] = []

    write = renamed_kept(QdPlain, changed.pk)

    def started(event: Any) -> None:
        CommandLog.started(command_log, event)
        if event.command_name == "find":
            finds.append(event.command["filter"])
            if len(finds) == 2:  # the read of the files of those left
                task.cancel()

    command_log.started = started  # type: ignore[method-assign]
    with after_first_find(command_log, mongodb_uri, write):
        task = asyncio.ensure_future(delete_doomed(QdPlain, "plain"))
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.wait_for(asyncio.gather(*context.following), 30)  # the last step
    assert finds[1] == {"_id": {"$in": [each.pk for each in documents]}}
    [kept] = await QdPlain.objects.async_to_list()
    assert kept.pk == changed.pk
    assert await files_left() == [b"doomed c"]


@pytest.mark.parametrize("again", [False, True])
async def test_its_files_task_cancelled_as_it_reads_the_files_left_keeps_them(
    async_alias: str, command_log: CommandLog, mongodb_uri: str, again: bool
) -> None:
    """The files' task of a cancelled delete (the caller cancelled as it read
    the files of the listed documents still there) cancelled in turn while
    it reads them (the loop's end cancels it so) reads them again, and
    deletes only the files of the documents gone; cancelled ``again`` in
    that read, it deletes none: a file it could not check may be held by a
    document still there. It deleted every listed file, the document left
    referring to a file gone."""
    documents = [await stored(QdPlain, f"doomed {name}") for name in "abc"]
    changed = documents[2]
    finds: list[Any] = []

    write = renamed_kept(QdPlain, changed.pk)

    def started(event: Any) -> None:
        CommandLog.started(command_log, event)
        if event.command_name == "find":
            finds.append(event.command["filter"])
            if len(finds) == 2:  # the caller's read of the files of those left
                task.cancel()
            elif len(finds) == 3 or (again and len(finds) == 4):  # its task's
                for each in context.following:
                    each.cancel()

    command_log.started = started  # type: ignore[method-assign]
    with after_first_find(command_log, mongodb_uri, write):
        task = asyncio.ensure_future(delete_doomed(QdPlain, "plain"))
        with pytest.raises(asyncio.CancelledError):
            await task
    # The files' task, to its end (its deletes, or the last read cut short).
    await asyncio.wait(set(context.following), timeout=30)
    del command_log.started
    reads = finds[1:]
    [kept] = await QdPlain.objects.async_to_list()
    assert (kept.pk, kept.name) == (changed.pk, "kept")
    assert await (await QdPlain.data.async_get(kept)).async_read() == b"doomed c"
    kept_files = [b"doomed a", b"doomed b"] if again else []  # (orphans)
    assert await files_left() == [*kept_files, b"doomed c"]
    assert reads == [{"_id": {"$in": [each.pk for each in documents]}}] * 3


@pytest.mark.parametrize("way", ["plain", "session", "rules-no-transaction"])
async def test_cancelled_while_its_delete_is_on_its_way_it_spares_those_left(
    async_alias: str, command_log: CommandLog, mongodb_uri: str, way: str
) -> None:
    """Cancelled while its delete is on its way, one listed document changed
    meanwhile to match no more, the delete goes on and the files follow in a
    task of their own: those of the document it left are read and kept. The
    task deleted every listed file, the document left referring to files
    gone."""
    cls = QdPlain if way in ("plain", "session") else QdRuled
    for name in ("a", "b", "c"):
        await stored(cls, f"doomed {name}")
    changed = await cls.objects.async_get(name="doomed c")

    write = renamed_kept(cls, changed.pk)

    def started(event: Any) -> None:
        CommandLog.started(command_log, event)
        if event.command_name == "delete" and (
            event.command["delete"] == cls._get_collection_name()
        ):
            task.cancel()  # the delete sent, its caller gone

    command_log.started = started  # type: ignore[method-assign]
    with after_first_find(command_log, mongodb_uri, write):
        task = asyncio.ensure_future(delete_doomed(cls, way))
        with pytest.raises(asyncio.CancelledError):
            await task
    # The delete's task, then the files' (started once the delete ended).
    await asyncio.wait_for(asyncio.gather(*queryset_module._deleting), 30)
    await asyncio.wait_for(asyncio.gather(*context.following), 30)
    [kept] = await cls.objects.async_to_list()
    assert (kept.pk, kept.name) == (changed.pk, "kept")
    assert await (await cls.data.async_get(kept)).async_read() == b"doomed c"
    assert await files_left() == [b"doomed c"]


async def all_followed(cancelled: bool = False) -> None:
    """Return once the steps following a commit (one started at least), and
    the files' task they start, all ended (some ``cancelled``: by the test)."""
    while not context.following:
        await asyncio.sleep(0)
    while context.following:
        if cancelled:
            await asyncio.wait(set(context.following))
        else:
            await asyncio.gather(*context.following)


async def test_cancelled_while_its_own_transaction_commits_it_spares_those_left(
    async_alias: str, command_log: CommandLog, mongodb_uri: str
) -> None:
    """A delete with rules in a transaction of its own, one listed document
    changed to match no more before the transaction: cancelled while its
    commit is on its way, the commit goes on and the files follow in a task
    of their own, which spares those of the document the delete left."""
    for name in ("a", "b", "c"):
        await stored(QdRuled, f"doomed {name}")
    changed = await QdRuled.objects.async_get(name="doomed c")
    committed = asyncio.Event()

    write = renamed_kept(QdRuled, changed.pk)

    def started(event: Any) -> None:
        CommandLog.started(command_log, event)
        if event.command_name == "commitTransaction":
            task.cancel()  # the commit sent, its caller gone

    def succeeded(event: Any) -> None:
        if event.command_name == "commitTransaction":
            committed.set()
        following(event)

    command_log.started = started  # type: ignore[method-assign]
    with after_first_find(command_log, mongodb_uri, write):
        following = command_log.succeeded
        command_log.succeeded = succeeded  # type: ignore[method-assign]
        task = asyncio.ensure_future(delete_doomed(QdRuled, "rules"))
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(committed.wait(), 30)
        command_log.succeeded = following  # type: ignore[method-assign]
    await asyncio.wait_for(all_followed(), 30)
    [kept] = await QdRuled.objects.async_to_list()
    assert (kept.pk, kept.name) == (changed.pk, "kept")
    assert await files_left() == [b"doomed c"]


async def test_a_listed_document_changed_in_its_own_transaction_is_read_again(
    async_alias: str, command_log: CommandLog, mongodb_uri: str
) -> None:
    """A delete with rules in a transaction of its own lists the files of
    its matches in the read of their ids, in the transaction (one read): a
    listed document changed to match no more before the delete makes that
    delete conflict, the transaction runs again, reads the matches anew,
    and the files of those deleted go after the commit, with no read of
    those left (there is none). The changed document keeps its file."""
    for name in ("a", "b", "c"):
        await stored(QdRuled, f"doomed {name}")
    changed = await QdRuled.objects.async_get(name="doomed c")
    doomed = [(await QdRuled.objects.async_get(name=f"doomed {x}")).pk for x in "ab"]
    query = QdRuled.objects(name__startswith="doomed")._query

    command_log.clear()
    with after_first_find(command_log, mongodb_uri, renamed_kept(QdRuled, changed.pk)):
        assert await delete_doomed(QdRuled, "rules") == 2

    sent = [(e.command_name, e.command[e.command_name]) for e in command_log.events]
    attempt = [("find", "qd_ruled"), ("update", "qd_holder"), ("delete", "qd_ruled")]
    files = [("delete", "qd_files.files"), ("delete", "qd_files.chunks")]
    assert sent == [
        *attempt,
        ("abortTransaction", 1),  # (the write conflict)
        *attempt,
        ("commitTransaction", 1),
        *files,
        *files,
    ]
    finds = [e for e in command_log.events if e.command_name == "find"]
    assert [e.command["filter"] for e in finds] == [query, query]
    [_, _, first, _, _, _, second, *_] = command_log.events
    assert first.command["deletes"][0]["q"] == {"_id": {"$in": [*doomed, changed.pk]}}
    assert second.command["deletes"][0]["q"] == {"_id": {"$in": doomed}}
    [kept] = await QdRuled.objects.async_to_list()
    assert (kept.pk, kept.name) == (changed.pk, "kept")
    assert await (await QdRuled.data.async_get(kept)).async_read() == b"doomed c"
    assert await files_left() == [b"doomed c"]


async def test_a_delete_of_many_matches_names_them_in_runs_under_the_limit(
    async_alias: str, command_log: CommandLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete of the documents whose files were listed names their ids in
    runs of LISTED_IDS_BYTES at most, one delete each (one naming them all
    fails over 16 MB, some 700,000 ids), and counts them all."""
    documents = [await stored(QdPlain, f"doomed {number}") for number in range(5)]
    await stored(QdPlain, "other")
    # Two ids a run: an ObjectId element is 12 bytes, a type and a short key.
    monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", 2 * 21)
    command_log.clear()
    assert await QdPlain.objects(name__startswith="doomed").async_delete() == 5
    deletes = [
        event.command["deletes"][0]["q"]["$and"][1]["_id"]["$in"]
        for event in command_log.events
        if event.command_name == "delete"
        and event.command["delete"] == QdPlain._get_collection_name()
    ]
    assert deletes == [
        [each.pk for each in documents[start : start + 2]] for start in (0, 2, 4)
    ]
    assert [each.name for each in await QdPlain.objects.async_to_list()] == ["other"]
    assert await files_left() == [b"other"]


async def test_a_delete_listing_nothing_deletes_nothing(
    async_alias: str, command_log: CommandLog, mongodb_uri: str
) -> None:
    """Nothing matched when the files were listed: the count is 0, and a
    document inserted before the delete is sent stays."""
    raw = {"_id": ObjectId(), "name": "doomed"}

    def write(database: Any) -> None:
        database[QdPlain._get_collection_name()].insert_one(raw)

    with after_first_find(command_log, mongodb_uri, write):
        assert await QdPlain.objects(name="doomed").async_delete() == 0
    assert [each.pk for each in await QdPlain.objects.async_to_list()] == [raw["_id"]]


@pytest.mark.parametrize("transaction", [False, True], ids=["none", "own"])
async def test_a_cascaded_document_matching_after_its_files_were_read_keeps_them(
    async_alias: str, command_log: CommandLog, mongodb_uri: str, transaction: bool
) -> None:
    """A cascade deleting documents holding files by its rule's filter (their
    class has no rules, nor receivers) deletes only those whose files it read:
    one referring to a deleted document inserted in between stays, with its
    file. Outside a transaction it was deleted by the filter, its file
    orphaned."""
    root = QdRoot(name="doomed")
    await root.async_save()
    for name in ("a", "b"):
        child = QdChild(parent=root, name=name)
        await child.data.async_put(name.encode())
        await child.async_save()
    later = QdChild(id=ObjectId(), parent=root, name="later")
    await later.data.async_put(b"later")
    raw = later.to_mongo().to_dict()

    def write(database: Any) -> None:
        database[QdChild._get_collection_name()].insert_one(raw)

    collection = QdChild._get_collection_name()
    with after_first_find(command_log, mongodb_uri, write, collection):
        deleted = await QdRoot.objects(name="doomed").async_delete(
            transaction=transaction
        )
    assert deleted == 1
    assert await QdRoot.objects.async_count() == 0
    assert [each.name for each in await QdChild.objects.async_to_list()] == ["later"]
    assert await files_left() == [b"later"]


READS = "qd_reads"


class QdReads(Document):
    name = StringField()
    data = FileField(db_alias=READS, collection_name="qd_files")
    meta = {"db_alias": READS}


async def test_the_files_are_listed_on_the_primary_whatever_the_client_reads(
    mongodb_uri: str,
) -> None:
    """The documents a delete removes are those whose files it listed, so it
    lists them where it deletes, on the primary, also for a client reading
    from secondaries: listed on one, a document not there yet was left (and
    counted out), where MongoEngine's delete removes it. (On this one-member
    set no secondary is found: the delete failed with
    ServerSelectionTimeoutError.)"""
    secondary = {"read_preference": ReadPreference.SECONDARY}
    async with fresh_database(
        READS, mongodb_uri, serverSelectionTimeoutMS=500, **secondary
    ):
        primary = get_async_db(READS).with_options(
            read_preference=ReadPreference.PRIMARY
        )
        for name in ("doomed", "kept"):
            document = QdReads(name=name)
            await document.data.async_put(name.encode())
            await document.async_save()
        assert await QdReads.objects(name="doomed").async_delete() == 1
        names = await primary[QdReads._get_collection_name()].distinct("name")
        assert names == ["kept"]
        files = await primary["qd_files.chunks"].find().to_list()
        assert [raw["data"] for raw in files] == [b"kept"]


@pytest.mark.parametrize("transaction", [False, True], ids=["none", "own"])
async def test_a_cascaded_document_matching_no_more_keeps_its_files(
    async_alias: str, command_log: CommandLog, mongodb_uri: str, transaction: bool
) -> None:
    """A cascade deleting documents holding files by its rule's filter, one
    of them changed to refer to another document after its files were read,
    leaves it (the filter is sent beside the ids) and keeps its file: the
    delete removed fewer than it read, so the files of those still there are
    read and spared. Outside a transaction they were deleted, the document
    left referring to a file gone."""
    root, other = QdRoot(name="doomed"), QdRoot(name="other")
    await root.async_save()
    await other.async_save()
    children = []
    for name in ("a", "b", "c"):
        child = QdChild(parent=root, name=name)
        await child.data.async_put(name.encode())
        await child.async_save()
        children.append(child)
    changed = children[2]

    def write(database: Any) -> None:
        collection = database[QdChild._get_collection_name()]
        collection.update_one({"_id": changed.pk}, {"$set": {"parent": other.pk}})

    collection = QdChild._get_collection_name()
    with after_first_find(command_log, mongodb_uri, write, collection):
        deleted = await QdRoot.objects(name="doomed").async_delete(
            transaction=transaction
        )
    assert deleted == 1
    assert [each.name for each in await QdRoot.objects.async_to_list()] == ["other"]
    [kept] = await QdChild.objects.async_to_list()
    assert (kept.pk, kept.parent.pk) == (changed.pk, other.pk)
    assert await (await QdChild.data.async_get(kept)).async_read() == b"c"
    assert await files_left() == [b"c"]


@pytest.mark.parametrize("again", [False, True])
async def test_a_cascade_cut_short_as_it_reads_the_files_left_keeps_them(
    async_alias: str, command_log: CommandLog, mongodb_uri: str, again: bool
) -> None:
    """A cascade outside a transaction deleting documents holding files by its
    rule's filter, one of them changed to refer to another document after its
    files were read: its task cancelled (as the loop's end does) while it
    reads the files of those its filter left, the step is run again, which
    reads them again, and that document keeps its file; cut short ``again``,
    no file of the cascade is deleted (orphans), that one kept all the same."""
    root, other = QdRoot(name="doomed"), QdRoot(name="other")
    await root.async_save()
    await other.async_save()
    children = []
    for name in ("a", "b", "c"):
        child = QdChild(parent=root, name=name)
        await child.data.async_put(name.encode())
        await child.async_save()
        children.append(child)
    changed = children[2]
    collection = QdChild._get_collection_name()
    finds: list[Any] = []

    def write(database: Any) -> None:
        database[collection].update_one(
            {"_id": changed.pk}, {"$set": {"parent": other.pk}}
        )

    def started(event: Any) -> None:
        CommandLog.started(command_log, event)
        if event.command_name == "find" and event.command["find"] == collection:
            finds.append(event.command["filter"])
            if len(finds) == 2 or (again and len(finds) == 3):  # files of those left
                for each in queryset_module._deleting:
                    each.cancel()

    command_log.started = started  # type: ignore[method-assign]
    with after_first_find(command_log, mongodb_uri, write, collection):
        with pytest.raises(asyncio.CancelledError):
            await QdRoot.objects(name="doomed").async_delete(transaction=False)
    del command_log.started
    reads = finds[1:3]
    assert [each.name for each in await QdRoot.objects.async_to_list()] == ["other"]
    [kept] = await QdChild.objects.async_to_list()
    assert (kept.pk, kept.parent.pk) == (changed.pk, other.pk)
    assert await (await QdChild.data.async_get(kept)).async_read() == b"c"
    assert await files_left() == ([b"a", b"b", b"c"] if again else [b"c"])
    assert reads == [{"_id": {"$in": [each.pk for each in children]}}] * 2


@pytest.mark.parametrize("filters", ["two-rules", "two-runs"])
async def test_one_an_earlier_filter_left_and_a_later_one_deleted_loses_its_files(
    async_alias: str,
    command_log: CommandLog,
    mongodb_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    filters: str,
) -> None:
    """A cascade outside a transaction deleting one class by several filters
    (two rules, or one rule's runs of ids): a document changed after its files
    were read to match the first filter no more, but still the second, is left
    by the first delete and removed by the second. Its file is deleted with
    it: the files of the documents left were read after the first delete, so
    its file was kept, left with no document."""
    doomed = [QdRoot(name="doomed 1"), QdRoot(name="doomed 2")]
    other = QdRoot(name="other")
    for root in [*doomed, other]:
        await root.async_save()
    if filters == "two-rules":
        cls: Any = QdPair
        document = QdPair(first=doomed[0], second=doomed[1], name="x")
        field, value = "first", other.pk
    else:
        monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", 21)
        cls = QdMany
        document = QdMany(parents=doomed, name="x")
        field, value = "parents", [doomed[1].pk]
    await document.data.async_put(b"x")
    await document.async_save()

    def write(database: Any) -> None:
        collection = database[cls._get_collection_name()]
        collection.update_one({"_id": document.pk}, {"$set": {field: value}})

    with after_first_find(command_log, mongodb_uri, write, cls._get_collection_name()):
        deleted = await QdRoot.objects(name__startswith="doomed").async_delete(
            transaction=False
        )
    assert deleted == 2
    assert [each.name for each in await QdRoot.objects.async_to_list()] == ["other"]
    assert await cls.objects.async_to_list() == []
    assert await files_left() == []


@pytest.mark.parametrize("way", ["plain", "session", "rules", "rules-no-transaction"])
async def test_listed_documents_matching_no_more_in_some_runs_keep_their_files(
    async_alias: str,
    command_log: CommandLog,
    mongodb_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    way: str,
) -> None:
    """The listed ids in runs of two: a run with one of its documents changed
    to match no more, a run with its only one changed, a run deleted whole.
    The count is the total of the runs, and the files of the documents left,
    whatever their run, are kept; those of the others deleted."""
    cls = QdPlain if way in ("plain", "session") else QdRuled
    for name in ("a", "b", "c", "d", "e"):
        await stored(cls, f"doomed {name}")
    documents = await cls.objects.order_by("id").async_to_list()
    changed = [documents[1].pk, documents[4].pk]  # runs [a, b], [c, d], [e]
    monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", 2 * 21)

    def write(database: Any) -> None:
        collection = database[cls._get_collection_name()]
        collection.update_many({"_id": {"$in": changed}}, {"$set": {"name": "kept"}})

    with after_first_find(command_log, mongodb_uri, write):
        assert await delete_doomed(cls, way) == 3
    kept = await cls.objects.order_by("id").async_to_list()
    assert [each.pk for each in kept] == changed
    assert await files_left() == [b"doomed b", b"doomed e"]
