"""Document methods on an async alias against MongoEngine's own on a sync alias,
for what once differed: inherited indexes listed twice, the primary key's form
after a save, a cascade to a new document, a failed delete's message, abstract
documents, and comparing indexes.

Each case runs the same class both ways: MongoEngine's code on the sync alias
SYNC (``switch_db``), ours on the async alias "default", each on a fresh
database; the stored documents, the values, the errors (type and message) and
the indexes must be the same.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
import pytest
from mongoengine.context_managers import switch_db

import mongoengine_async
from conftest import fresh_sync_default
from mongoengine_async import (
    BooleanField,
    BulkWriteError,
    Document,
    DynamicDocument,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    NotUniqueError,
    ReferenceField,
    StringField,
    UUIDField,
    get_async_db,
)
from mongoengine_async.testing import CommandLog

SYNC = "docparity_sync"


@pytest.fixture
def sync_log() -> CommandLog:
    return CommandLog()


@pytest.fixture
def sync_db(mongodb_uri: str, sync_log: CommandLog) -> Iterator[Any]:
    """Alias SYNC registered with connect() on a fresh database (its commands
    in ``sync_log``); yields that database."""
    with fresh_sync_default(mongodb_uri, sync_log, alias=SYNC) as database:
        yield database


@contextlib.contextmanager
def on_sync(*classes: type) -> Iterator[None]:
    """``classes`` on the sync alias SYNC, where MongoEngine's code runs."""
    with contextlib.ExitStack() as stack:
        for cls in classes:
            stack.enter_context(switch_db(cls, SYNC))
        yield


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as error:
        return ("raised", type(error), str(error))


async def async_outcome(call: Callable[[], Any]) -> Any:
    try:
        return await call()
    except Exception as error:
        return ("raised", type(error), str(error))


def without_reply(message: str) -> str:
    """A server error's message without the reply (its cluster time differs)."""
    return message.split(", full error: ")[0]


def stored(database: Any, name: str) -> list[dict]:
    return list(database[name].find({}, sort=[("_id", 1)]))


async def async_stored(name: str) -> list[dict]:
    return await get_async_db()[name].find({}, sort=[("_id", 1)]).to_list()


def index_keys(information: dict[str, Any]) -> list[tuple[str, Any]]:
    """Each index's name and options (without the version)."""
    return sorted(
        (name, sorted((k, v) for k, v in info.items() if k != "v"))
        for name, info in information.items()
    )


# -- D1: an inherited index listed twice in index_specs ----------------------------


class DpBase(Document):
    created_by = StringField()
    meta = {"abstract": True, "indexes": ["created_by"]}


class DpAnimal(DpBase):
    name = StringField()
    meta = {"allow_inheritance": True}


class DpDog(DpAnimal):
    good = BooleanField(default=True)


class DpItem(Document):
    x = StringField()
    meta = {"allow_inheritance": True, "indexes": ["x"]}


class DpItemAgain(DpItem):  # redeclares its parent's index
    meta = {"indexes": ["x"]}


class DpItemUnique(DpItem):  # the same keys, another option
    meta = {"indexes": [{"fields": ["x"], "unique": True}]}


class DpItemNamed(DpItem):  # the same keys, another name
    meta = {"indexes": [{"fields": ["x"], "name": "x_named"}]}


@pytest.mark.parametrize(
    ("cls", "document"),
    [(DpDog, {"name": "Rex"}), (DpItemAgain, {"x": "a"})],
    ids=["abstract_base", "redeclared"],
)
async def test_index_listed_twice_is_created_once(
    async_alias, command_log, sync_db, cls, document
):
    specs = cls._meta["index_specs"]
    assert specs[0] == specs[1]  # MongoEngine's metaclass lists it twice
    with on_sync(cls):
        cls(**document).save()
    name = cls._get_collection_name()
    command_log.clear()
    await cls(**document).async_save()
    assert command_log.names == ["createIndexes", "insert"]  # one round trip
    (create,) = [e.command for e in command_log.events if "createIndexes" in e.command]
    assert len(create["indexes"]) == 1
    await cls.objects.async_first()
    info = await get_async_db()[name].index_information()
    assert index_keys(info) == index_keys(sync_db[name].index_information())
    command_log.clear()
    await cls.async_ensure_indexes()
    assert command_log.names == ["createIndexes"]


@pytest.mark.parametrize("cls", [DpItemUnique, DpItemNamed], ids=["unique", "named"])
async def test_index_listed_twice_with_other_options_fails_as_mongoengine(
    async_alias, command_log, sync_log, sync_db, cls
):
    """MongoEngine creates the specs one by one: the first exists, the second is
    refused by the server; the same round trips, indexes and error here."""
    with on_sync(cls):
        sync_log.clear()
        theirs = outcome(lambda: cls(x="a").save())
    sent = [name for name in sync_log.names if name == "createIndexes"]
    command_log.clear()
    ours = await async_outcome(lambda: cls(x="a").async_save())
    assert theirs[:2] == ours[:2] == ("raised", pymongo.errors.OperationFailure)
    assert without_reply(ours[2]) == without_reply(theirs[2])
    assert command_log.names == sent == ["createIndexes", "createIndexes"]
    name = cls._get_collection_name()
    info = await get_async_db()[name].index_information()
    assert index_keys(info) == index_keys(sync_db[name].index_information())
    assert await async_stored(name) == stored(sync_db, name) == []


# -- D2: the primary key after a save ----------------------------------------------


class DpKey(EmbeddedDocument):
    a = IntField()


class DpEmbeddedPk(Document):
    key = EmbeddedDocumentField(DpKey, primary_key=True)
    v = IntField()


class DpUuidPk(Document):
    uid = UUIDField(binary=False, primary_key=True)
    v = IntField()


def pk_state(document: Any) -> Any:
    changed = getattr(document, "_changed_fields", None)  # (none yet: a new one)
    return (
        type(document.pk),
        document.pk,
        document.to_mongo().to_dict(),
        None if changed is None else sorted(changed),
        document._created,
    )


@pytest.mark.parametrize(
    ("cls", "make"),
    [
        (DpEmbeddedPk, lambda: DpEmbeddedPk(key=DpKey(a=1), v=1)),
        (
            DpUuidPk,
            lambda: DpUuidPk(uid=uuid.UUID("12345678-1234-5678-1234-567812345678")),
        ),
    ],
    ids=["embedded", "uuid_str"],
)
async def test_saved_primary_key_in_its_python_form(async_alias, sync_db, cls, make):
    with on_sync(cls):
        theirs = make().save()
        their_first = pk_state(theirs)
        theirs.v = 2
        theirs.save()
        their_loaded = cls.objects.first()
        assert their_loaded == theirs
        their_stored = stored(sync_db, cls._get_collection_name())
        inserted = make()
        cls.objects.delete()
        cls.objects.insert([inserted], load_bulk=False)
    ours = await make().async_save()
    assert pk_state(ours) == their_first
    assert type(ours.pk) is not dict  # its Python form, not the stored one
    ours.v = 2
    await ours.async_save()  # again: valid
    assert pk_state(ours) == pk_state(theirs)
    assert await cls.objects.async_first() == ours
    assert await async_stored(cls._get_collection_name()) == their_stored
    # insert() leaves the id it gives as MongoEngine's does (as stored).
    our_inserted = make()
    await cls.objects.async_delete()
    await cls.objects.async_insert([our_inserted], load_bulk=False)
    assert pk_state(our_inserted) == pk_state(inserted)


# -- D3: a cascade to a new document -----------------------------------------------


class DpTag(Document):
    name = StringField(primary_key=True)
    label = StringField()


class DpPost(Document):
    title = StringField()
    tag = ReferenceField(DpTag)


async def test_cascade_saves_a_new_referenced_document(async_alias, sync_db):
    with on_sync(DpTag, DpPost):
        their_tag = DpTag(name="t1", label="L")
        their_post = DpPost(title="p", tag=their_tag).save(cascade=True)
    our_tag = DpTag(name="t1", label="L")
    our_post = await DpPost(title="p", tag=our_tag).async_save(cascade=True)
    assert await async_stored("dp_tag") == stored(sync_db, "dp_tag")
    assert [d["tag"] for d in await async_stored("dp_post")] == ["t1"]
    assert [d["tag"] for d in stored(sync_db, "dp_post")] == ["t1"]
    for ours, theirs in ((our_tag, their_tag), (our_post, their_post)):
        assert ours._changed_fields == theirs._changed_fields == []
        assert ours._created is theirs._created is False


async def test_cascade_save_saves_the_references_not_the_document(async_alias, sync_db):
    """``async_cascade_save()`` does what MongoEngine's ``cascade_save()``
    does: it saves the changed referenced document, with its signals, and
    leaves the document's own change unsaved."""
    sent: list[str] = []

    def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(sender.__name__)

    with on_sync(DpTag, DpPost):
        DpPost(title="p", tag=DpTag(name="t1", label="L").save()).save()
        theirs = DpPost.objects.get(title="p")
        theirs.tag.label = "changed"
        theirs.title = "unsaved"
        with connected(receiver):
            theirs.cascade_save()
    their_signals = sent[:]
    sent.clear()
    tag = await DpTag(name="t1", label="L").async_save()
    await DpPost(title="p", tag=tag).async_save()
    ours = await DpPost.objects.async_get(title="p")
    (await ours.tag).label = "changed"
    ours.title = "unsaved"
    with connected(receiver):
        await ours.async_cascade_save()
    assert sent == their_signals == ["DpTag"]
    assert await async_stored("dp_tag") == stored(sync_db, "dp_tag")
    assert [d["label"] for d in await async_stored("dp_tag")] == ["changed"]
    assert [d["title"] for d in await async_stored("dp_post")] == ["p"]
    assert [d["title"] for d in stored(sync_db, "dp_post")] == ["p"]
    assert ours._changed_fields == theirs._changed_fields == ["title"]


@contextlib.contextmanager
def connected(receiver: Callable[..., None]) -> Iterator[None]:
    """``receiver`` connected to ``post_save`` for the block."""
    mongoengine_async.signals.post_save.connect(receiver)
    try:
        yield
    finally:
        mongoengine_async.signals.post_save.disconnect(receiver)


# -- D4: a failed delete's message -------------------------------------------------


class DpNote(Document):
    name = StringField()


async def test_failed_delete_message(async_alias, sync_db):
    with on_sync(DpNote):
        note = DpNote(name="n").save()
        theirs = outcome(lambda: note.delete(w=5, wtimeout=100))
    ours = await DpNote(name="n").async_save()
    ours = await async_outcome(lambda: ours.async_delete(w=5, wtimeout=100))
    assert theirs[:2] == ours[:2] == ("raised", mongoengine_async.OperationError)
    assert ours[2].startswith("Could not delete document (Not enough data-bearing")
    assert without_reply(ours[2]) == without_reply(theirs[2])


# -- D6: an inserted dynamic document's changes -------------------------------------


class DpDynamic(DynamicDocument):
    name = StringField()


async def test_an_inserted_dynamic_document_lists_pk_then_id_changed(
    async_alias, sync_db
):
    """A dynamic document built by ``_from_son(created=True)`` and inserted
    lists its changes as MongoEngine's ``insert()`` leaves them: ``pk`` (the
    dynamic field ``doc.pk = id`` adds) then ``_id``, though our insert gave
    it its id before the write; its next delta holds them in that order."""
    sons = [{"name": "a", "extra": 1}, {"name": "b"}]
    with on_sync(DpDynamic):
        theirs = [DpDynamic._from_son(dict(son), created=True) for son in sons]
        DpDynamic.objects.insert(theirs[0], load_bulk=False)
        DpDynamic.objects.insert(theirs[1:], load_bulk=True)
    ours = [DpDynamic._from_son(dict(son), created=True) for son in sons]
    await DpDynamic.objects.async_insert(ours[0], load_bulk=False)
    await DpDynamic.objects.async_insert(ours[1:], load_bulk=True)
    for mine, their in zip(ours, theirs, strict=True):
        assert their._changed_fields == ["pk", "_id"]
        assert mine._changed_fields == ["pk", "_id"]
        assert list(mine._delta()[0]) == list(their._delta()[0]) == ["pk", "_id"]


# -- D7: a copy whose write failed, written again ----------------------------------


class DpUnique(Document):
    name = StringField(unique=True)
    age = IntField()


async def write_copy(document: DpUnique, write: str, sync: bool) -> None:
    """Save or insert ``document`` (MongoEngine's way if ``sync``)."""
    if sync:
        document.save() if write == "save" else DpUnique.objects.insert(document)
    elif write == "save":
        await document.async_save()
    else:
        await DpUnique.objects.async_insert(document)


@pytest.mark.parametrize("write", ["save", "insert"])
async def test_a_copy_whose_write_failed_is_stored_whole_when_written_again(
    async_alias, sync_db, write
):
    """A loaded document whose id was cleared (``doc.id = None``: a copy to
    store) whose save or insert failed on a unique key, changed and written
    again: stored whole and no longer new, as MongoEngine stores it. Ours kept
    the id it gave the failed write on a document not new (``_created``): the
    save sent only the changes (``age`` lost), the insert refused it
    (``OperationError: Some documents have ObjectIds``), and then moved the
    id's mark (made by clearing it) last."""

    async def copy_written_twice(sync: bool) -> tuple[list, bool, list]:
        if sync:
            DpUnique.ensure_indexes()
            DpUnique(name="a", age=7).save()
            document = DpUnique.objects.get(name="a")
        else:
            await DpUnique.async_ensure_indexes()
            await DpUnique(name="a", age=7).async_save()
            document = await DpUnique.objects.async_get(name="a")
        document.id = None
        with pytest.raises(NotUniqueError):
            await write_copy(document, write, sync)
        document.name = "b"
        await write_copy(document, write, sync)
        collection = DpUnique._get_collection()
        found = collection.find({"name": "b"}, {"_id": 0})
        stored = list(found) if sync else await found.to_list()
        return stored, document._created, document._changed_fields

    with on_sync(DpUnique):
        theirs = await copy_written_twice(sync=True)
    ours = await copy_written_twice(sync=False)
    # (the id's mark clearing it made stays first after an insert)
    changes = [] if write == "save" else ["_id", "name"]
    assert theirs == ([{"name": "b", "age": 7}], False, changes)
    assert ours == theirs


class DpUniqueDynamic(DynamicDocument):
    name = StringField(unique=True)


@pytest.mark.parametrize("cls", [DpUnique, DpUniqueDynamic])
async def test_documents_inserted_again_after_a_failed_insert_list_changes_so(
    async_alias, sync_db, cls
):
    """Documents built by ``_from_son(created=True)`` whose insert failed (a
    unique key, the list's second one), one changed, inserted again: their
    changes are listed as MongoEngine's ``insert()`` leaves them, the id's
    mark last (after ``pk`` on a dynamic document). The mark the failed
    insert's early id made stayed first: ``['_id', 'name', 'pk']``."""

    async def changes_after_retry(sync: bool) -> list:
        def built() -> list:
            return [cls._from_son({"name": n}, created=True) for n in "axc"]

        documents = built()
        if sync:
            cls.ensure_indexes()
            cls(name="x").save()
            with pytest.raises(BulkWriteError):
                cls.objects.insert(documents)
        else:
            await cls.async_ensure_indexes()
            await cls(name="x").async_save()
            with pytest.raises(BulkWriteError):
                await cls.objects.async_insert(documents)
        documents[1].name = "b"
        for document in documents[1:]:
            if sync:
                cls.objects.insert(document)
            else:
                await cls.objects.async_insert(document)
        return [list(document._changed_fields) for document in documents[1:]]

    with on_sync(cls):
        theirs = await changes_after_retry(sync=True)
    ours = await changes_after_retry(sync=False)
    dynamic = ["pk"] if cls is DpUniqueDynamic else []
    assert theirs == [["name", *dynamic, "_id"], [*dynamic, "_id"]]
    assert ours == theirs


async def insert_unique(documents: list[DpUnique], listed: bool, sync: bool) -> None:
    """Insert ``documents`` as a list, or the second alone (MongoEngine's way
    if ``sync``)."""
    what = documents if listed else documents[1]
    if sync:
        DpUnique.objects.insert(what, load_bulk=False)
    else:
        await DpUnique.objects.async_insert(what, load_bulk=False)


@pytest.mark.parametrize("listed", [False, True])
async def test_documents_whose_insert_was_refused_hold_no_id(
    async_alias, sync_db, command_log, listed
):
    """Documents whose ``async_insert()`` the server refused (a unique key:
    one inserted alone; the second of a list, and the third its ordered
    insert did not reach) hold no id, as MongoEngine's failed ``insert()``
    leaves them: ours kept the ids given before the write, so saved again
    each was a findAndModify and an insert. Now each is one insert. (The
    list's first, stored, keeps its id, where MongoEngine's leaves it none.)"""

    async def refused_then_saved(sync: bool) -> tuple:
        documents = [DpUnique(name=name) for name in ("a", "x", "c")]
        if sync:
            DpUnique.ensure_indexes()
            DpUnique(name="x").save()
        else:
            await DpUnique.async_ensure_indexes()
            await DpUnique(name="x").async_save()
        with pytest.raises(BulkWriteError if listed else NotUniqueError):
            await insert_unique(documents, listed, sync)
        refused = documents[1:] if listed else documents[1:2]
        state = [(document.id, document._created) for document in refused]
        command_log.clear()
        for document in refused:
            document.name = f"{document.name}2"
            document.save() if sync else await document.async_save()
        if not sync:
            assert command_log.names == ["insert"] * len(refused)
            if listed:  # (stored: its id kept)
                assert documents[0].id is not None
        collection = DpUnique._get_collection()
        found = collection.find({}, {"_id": 0, "name": 1}, sort=[("name", 1)])
        stored = list(found) if sync else await found.to_list()
        return state, stored

    with on_sync(DpUnique):
        theirs = await refused_then_saved(sync=True)
    ours = await refused_then_saved(sync=False)
    names = ["a", "c2", "x", "x2"] if listed else ["x", "x2"]
    refused = [(None, True)] * (2 if listed else 1)
    assert theirs == (refused, [{"name": name} for name in names])
    assert ours == theirs


async def test_a_document_listed_twice_whose_second_copy_was_refused_keeps_the_first_id(
    async_alias, command_log
):
    """A new document listed twice in ``async_insert()``, its first copy
    stored and its second refused (a unique key), holds the id its stored
    copy has: it held none (the second copy's id taken back), so saved again
    it was stored twice. Saved again, the stored copy is replaced. (Where
    MongoEngine's failed ``insert()`` leaves it no id, as for a list's first.)"""
    await DpUnique.async_ensure_indexes()
    document = DpUnique(name="a")
    with pytest.raises(BulkWriteError):
        await DpUnique.objects.async_insert([document, document], load_bulk=False)
    stored = await DpUnique._get_collection().find().to_list()
    assert [(copy["_id"], copy["name"]) for copy in stored] == [(document.id, "a")]
    document.name = "b"
    command_log.clear()
    await document.async_save()
    assert command_log.names == ["findAndModify"]
    found = await DpUnique._get_collection().find().to_list()
    assert found == [{"_id": stored[0]["_id"], "name": "b"}]


async def test_a_loaded_document_listed_twice_and_refused_is_left_as_by_mongoengine(
    async_alias, sync_db
):
    """A loaded document, its id cleared, listed twice in an insert the
    server refused from its first copy on (a unique key) holds no id and is
    not new, its changes MongoEngine's: the second copy's early id taken
    back left it new (``_created`` as the first copy's id made it)."""

    async def refused(sync: bool) -> tuple:
        if sync:
            DpUnique.ensure_indexes()
            DpUnique(name="x").save()
            document = DpUnique.objects.get(name="x")
        else:
            await DpUnique.async_ensure_indexes()
            await DpUnique(name="x").async_save()
            document = await DpUnique.objects.async_get(name="x")
        document.pk = None
        with pytest.raises(BulkWriteError):
            if sync:
                DpUnique.objects.insert([document, document], load_bulk=False)
            else:
                await DpUnique.objects.async_insert([document, document])
        return document.pk, document._created, list(document._changed_fields)

    with on_sync(DpUnique):
        theirs = await refused(sync=True)
    ours = await refused(sync=False)
    assert theirs == (None, False, ["_id"])
    assert ours == theirs


async def write_dynamic(document: DpUniqueDynamic, write: str, sync: bool) -> None:
    """Save or insert ``document`` (MongoEngine's way if ``sync``; not loaded
    back after an insert: one round trip)."""
    if sync:
        document.save() if write == "save" else DpUniqueDynamic.objects.insert(
            document, load_bulk=False
        )
    elif write == "save":
        await document.async_save()
    else:
        await DpUniqueDynamic.objects.async_insert(document, load_bulk=False)


@pytest.mark.parametrize("write", ["save", "insert"])
async def test_a_new_document_whose_save_was_refused_holds_no_id(
    async_alias, sync_db, command_log, write
):
    """A new document (``_from_son(created=True)``: a list of changes) whose
    save failed on a unique key holds no id, as MongoEngine leaves it: ours
    kept the id given before the write (marked changed), so saved again it
    was a findAndModify and an insert, and inserted again its changes were
    ``['_id', 'name', 'pk']`` where MongoEngine's are ``['name', 'pk',
    '_id']``. Changed and written again, it is one insert, stored whole."""

    async def refused_then_written(sync: bool) -> tuple:
        document = DpUniqueDynamic._from_son({"name": "a", "n": 1}, created=True)
        if sync:
            DpUniqueDynamic.ensure_indexes()
            DpUniqueDynamic(name="a").save()
        else:
            await DpUniqueDynamic.async_ensure_indexes()
            await DpUniqueDynamic(name="a").async_save()
        with pytest.raises(NotUniqueError):
            await write_dynamic(document, "save", sync)
        refused = (document.id, document._created, list(document._changed_fields))
        document.name = "b"
        command_log.clear()
        await write_dynamic(document, write, sync)
        if not sync:
            assert command_log.names == ["insert"]
        collection = DpUniqueDynamic._get_collection()
        found = collection.find({"name": "b"}, {"_id": 0})
        stored = list(found) if sync else await found.to_list()
        return refused, stored, list(document._changed_fields)

    with on_sync(DpUniqueDynamic):
        theirs = await refused_then_written(sync=True)
    ours = await refused_then_written(sync=False)
    changes = [] if write == "save" else ["name", "pk", "_id"]
    assert theirs == ((None, True, []), [{"name": "b", "n": 1}], changes)
    assert ours == theirs


async def test_a_new_document_too_large_to_send_holds_no_id(
    async_alias, sync_db, command_log
):
    """A new document whose save PyMongo refused before sending it
    (``DocumentTooLarge``: nothing stored) holds no id, as MongoEngine leaves
    it: ours kept the id given before the write, so saved again, made
    smaller, it was a findAndModify and an insert. Now it is one insert."""

    async def refused_then_saved(sync: bool) -> tuple:
        big = "x" * (17 * 1024 * 1024)
        document = DpUniqueDynamic._from_son({"name": "a", "blob": big}, created=True)
        with pytest.raises(pymongo.errors.DocumentTooLarge):
            await write_dynamic(document, "save", sync)
        refused = (document.id, document._created, list(document._changed_fields))
        document.blob = "small"
        command_log.clear()
        await write_dynamic(document, "save", sync)
        if not sync:
            assert command_log.names == ["insert"]
        collection = DpUniqueDynamic._get_collection()
        found = collection.find({}, {"_id": 0})
        stored = list(found) if sync else await found.to_list()
        return refused, stored, list(document._changed_fields)

    with on_sync(DpUniqueDynamic):
        theirs = await refused_then_saved(sync=True)
    ours = await refused_then_saved(sync=False)
    assert theirs == ((None, True, []), [{"name": "a", "blob": "small"}], [])
    assert ours == theirs


class DpHolder(Document):
    title = StringField()
    unique = ReferenceField(DpUnique)


async def test_a_save_whose_cascade_was_refused_is_stored_once(
    async_alias, sync_db, command_log
):
    """A new document saved with ``cascade=True`` whose cascaded save the
    server refused (a unique key) is stored, as MongoEngine's is; MongoEngine's
    leaves it no id, so that saved again it is stored twice. Ours keeps the id
    of the insert that stored it: saved again (the cascade fixed), it is the
    same document, stored once, in as many round trips."""

    async def refused_then_saved(sync: bool) -> tuple:
        held = DpUnique(name="y")
        if sync:
            DpUnique.ensure_indexes()
            DpUnique(name="x").save()
            held.save()
        else:
            await DpUnique.async_ensure_indexes()
            await DpUnique(name="x").async_save()
            await held.async_save()
        held.name = "x"  # (the cascade's update refused)
        holder = DpHolder(title="t", unique=held)
        with pytest.raises(NotUniqueError):
            await write_holder(holder, sync)
        state = (holder.pk is not None, holder._created)
        held.name = "z"
        command_log.clear()
        await write_holder(holder, sync)
        names = None if sync else command_log.names
        collection = DpHolder._get_collection()
        found = collection.find({}, {"_id": 0, "title": 1})
        stored = list(found) if sync else await found.to_list()
        return state, stored, names

    with on_sync(DpUnique, DpHolder):
        theirs = await refused_then_saved(sync=True)
    ours = await refused_then_saved(sync=False)
    assert theirs[:2] == ((False, True), [{"title": "t"}] * 2)
    assert ours == ((True, True), [{"title": "t"}], ["findAndModify", "update"])


async def write_holder(holder: DpHolder, sync: bool) -> None:
    """``holder.save(cascade=True)``, MongoEngine's way if ``sync``."""
    if sync:
        holder.save(cascade=True)
    else:
        await holder.async_save(cascade=True)


# -- D5: abstract documents --------------------------------------------------------


class DpAbstract(Document):
    x = IntField()
    meta = {"abstract": True}


ABSTRACT_CALLS = {
    "save": ("save", {}),
    "save_cascade": ("save", {"cascade": True}),
    "delete": ("delete", {}),
    "reload": ("reload", {}),
    "update": ("update", {"set__x": 2}),
    "update_upsert": ("update", {"set__x": 2, "upsert": True}),
    "modify": ("modify", {"set__x": 2}),
    "select_related": ("select_related", {}),
}


@pytest.mark.parametrize("name", ABSTRACT_CALLS)
async def test_abstract_document_methods(
    async_alias, command_log, sync_db, sync_log, monkeypatch, name
):
    method, options = ABSTRACT_CALLS[name]
    with monkeypatch.context() as patch:  # (switch_db wants its collection)
        patch.setitem(DpAbstract._meta, "db_alias", SYNC)
        theirs = outcome(lambda: getattr(DpAbstract(x=1), method)(**options))
    ours = await async_outcome(
        lambda: getattr(DpAbstract(x=1), f"async_{method}")(**options)
    )
    if isinstance(theirs, DpAbstract):
        assert isinstance(ours, DpAbstract)
    else:
        assert ours == theirs
    assert command_log.names == sync_log.names == []


# -- compare_indexes ---------------------------------------------------------------


class DpCompared(Document):
    name = StringField()
    age = IntField()
    meta = {"indexes": ["name", ("-age", "name")], "allow_inheritance": True}


async def test_async_compare_indexes(async_alias, command_log, sync_db):
    with on_sync(DpCompared):
        their_fresh = DpCompared.compare_indexes()
        sync_db.dp_compared.drop_index("_cls_1_name_1")
        sync_db.dp_compared.create_index([("age", 1)])
        their_changed = DpCompared.compare_indexes()
    command_log.clear()
    assert await DpCompared.async_compare_indexes() == their_fresh
    assert command_log.names == ["createIndexes", "listIndexes"]
    collection = get_async_db().dp_compared
    await collection.drop_index("_cls_1_name_1")
    await collection.create_index([("age", 1)])
    command_log.clear()
    assert await DpCompared.async_compare_indexes() == their_changed
    assert their_changed != their_fresh
    assert command_log.names == ["listIndexes"]


class DpComparedBase(Document):
    name = StringField()
    meta = {"indexes": ["name"], "allow_inheritance": True}


class DpComparedChild(DpComparedBase):
    age = IntField()
    meta = {"indexes": ["age"]}


class DpComparedGrandchild(DpComparedChild):
    size = IntField()
    meta = {"indexes": ["-size"]}


@pytest.mark.parametrize(
    "cls", [DpComparedBase, DpComparedChild], ids=["base", "child"]
)
async def test_async_compare_indexes_creates_those_of_the_hierarchy(
    async_alias, command_log, sync_db, cls
):
    """MongoEngine's compare_indexes() asks each class stored in the collection
    for it (list_indexes), which creates their indexes on first use: ours gave
    the indexes of the subclasses (and bases) not used yet as missing."""
    classes = (DpComparedBase, DpComparedChild, DpComparedGrandchild)
    with on_sync(*classes):
        theirs = cls.compare_indexes()
    assert theirs == {"missing": [], "extra": []}
    command_log.clear()
    assert await cls.async_compare_indexes() == theirs
    assert command_log.names == [*["createIndexes"] * 3, "listIndexes"]
    name = cls._get_collection_name()
    info = await get_async_db()[name].index_information()
    assert index_keys(info) == index_keys(sync_db[name].index_information())


async def test_async_compare_indexes_of_an_abstract_class(
    async_alias, sync_db, monkeypatch
):
    with monkeypatch.context() as patch:
        patch.setitem(DpAbstract._meta, "db_alias", SYNC)
        theirs = outcome(DpAbstract.compare_indexes)
    ours = await async_outcome(DpAbstract.async_compare_indexes)
    assert ours == theirs
    assert theirs[:2] == ("raised", TypeError)
