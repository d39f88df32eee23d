"""Document async I/O against a real mongod: save, delta updates, delete, reload..."""

from __future__ import annotations

import asyncio
import copy
import pickle

import mongoengine
import pytest
from bson import DBRef, ObjectId
from pymongo import WriteConcern

import mongoengine_async
from conftest import fresh_sync_default, sync_alias_beside
from mongoengine_async import (
    AsyncUsageError,
    DictField,
    Document,
    DynamicDocument,
    DynamicEmbeddedDocument,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    InvalidQueryError,
    ListField,
    MapField,
    NotUniqueError,
    ReferenceField,
    SaveConditionError,
    StringField,
    ValidationError,
    get_async_db,
)
from mongoengine_async import signals as async_signals
from mongoengine_async.testing.clients import CommandLog, fresh_database


class DocAddress(EmbeddedDocument):
    city = StringField()
    street = StringField()


class DocPerson(Document):
    name = StringField(required=True)
    age = IntField()
    nickname = StringField()
    tags = ListField(StringField())
    address = EmbeddedDocumentField(DocAddress)
    extra = DictField()
    version = IntField(default=1)


class DocNested(Document):
    """Containers of containers, and embedded documents in a list."""

    lists = MapField(ListField(IntField()))
    grid = ListField(ListField(IntField()))
    groups = MapField(ListField(ReferenceField(DocPerson)))
    places = ListField(EmbeddedDocumentField(DocAddress))
    n = IntField(default=0)


class DocLoose(DynamicEmbeddedDocument):
    label = StringField()


class DocHolder(Document):
    loose = EmbeddedDocumentField(DocLoose)


class DocW0(Document):
    v = IntField()


class DocW0Sync(Document):
    """DocW0's collection on a sync alias: MongoEngine's own save."""

    v = IntField()
    meta = {"db_alias": "doc_w0_sync", "collection": "doc_w0"}


class DocUniqueUser(Document):
    email = StringField(unique=True)


class DocIndexed(Document):
    name = StringField()
    age = IntField()
    meta = {"indexes": ["name", ("-age", "name")]}


class DocAnimal(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class DocDog(DocAnimal):
    bark = StringField()


class DocCat(DocAnimal):
    lives = IntField(default=9)


class DocBase(Document):
    created_by = StringField(default="system")
    label = StringField()
    meta = {"abstract": True}


class DocConcrete(DocBase):
    value = IntField()


class DocCustomCollection(Document):
    name = StringField()
    meta = {"collection": "my_custom_things"}


class DocDynamic(DynamicDocument):
    name = StringField()


class DocSignalled(Document):
    name = StringField()


# What the _mark_as_changed of DocMarking and MarkingSync were called with.
_MARKED: list[tuple[str, str]] = []


class _Marking:
    """A _mark_as_changed of a class's own, recording each key."""

    def _mark_as_changed(self, key):
        _MARKED.append((type(self).__name__, key))
        super()._mark_as_changed(key)


class DocMarking(_Marking, Document):
    name = StringField()
    meta = {"collection": "doc_marking"}


class MarkingSync(_Marking, mongoengine.Document):
    """DocMarking's collection on a sync alias, MongoEngine's own class."""

    name = StringField()
    meta = {"db_alias": "doc_marking_sync", "collection": "doc_marking"}


def _db():
    return get_async_db()


def _updates(command_log):
    return [e.command for e in command_log.events if e.command_name == "update"]


# -- insert ---------------------------------------------------------------------------


async def test_async_save_inserts(async_alias):
    person = DocPerson(name="Ada", age=36, tags=["math"])
    result = await person.async_save()
    assert result is person
    assert isinstance(person.id, ObjectId)
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw == {
        "_id": person.id,
        "name": "Ada",
        "age": 36,
        "tags": ["math"],
        "extra": {},
        "version": 1,
    }
    assert person._get_changed_fields() == []
    assert person._created is False


async def test_async_save_with_own_id_inserts(async_alias):
    own = ObjectId()
    await DocPerson(id=own, name="Own").async_save()
    raw = await _db().doc_person.find_one({"_id": own})
    assert raw["name"] == "Own"


async def test_a_class_own_mark_as_changed_sees_an_inserts_id(async_alias, mongodb_uri):
    """A new document's id, given as it is inserted, is marked as changed
    through its class's own ``_mark_as_changed``, as MongoEngine's save and
    insert mark it (MongoEngine's own is skipped for a document without a
    list of changes, where it does nothing)."""
    with sync_alias_beside("doc_marking_sync", async_alias, mongodb_uri):
        MarkingSync(name="a").save()
        MarkingSync.objects.insert([MarkingSync(name="b")])
        theirs = [key for _, key in _MARKED]
        _MARKED.clear()
        await DocMarking(name="a").async_save()
        await DocMarking.objects.async_insert([DocMarking(name="b")])
    assert theirs == ["id", "id"]
    assert _MARKED == [("DocMarking", "id"), ("DocMarking", "id")]
    assert await _db().doc_marking.count_documents({}) == 4


# -- delta updates ----------------------------------------------------------------


async def test_update_sends_only_changed_field(async_alias, command_log):
    person = await DocPerson(name="Ada", age=36, nickname="A").async_save()
    command_log.clear()
    person.age = 37
    await person.async_save()
    assert command_log.names == ["update"]
    (update,) = _updates(command_log)
    assert len(update["updates"]) == 1
    statement = update["updates"][0]
    assert statement["q"] == {"_id": person.id}
    assert statement["u"] == {"$set": {"age": 37}}
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["age"] == 37
    assert raw["name"] == "Ada"
    assert raw["nickname"] == "A"


async def test_update_nested_embedded_field(async_alias, command_log):
    person = await DocPerson(
        name="Ada", address=DocAddress(city="London", street="Main")
    ).async_save()
    command_log.clear()
    person.address.city = "Paris"
    await person.async_save()
    (update,) = _updates(command_log)
    assert update["updates"][0]["u"] == {"$set": {"address.city": "Paris"}}
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["address"] == {"city": "Paris", "street": "Main"}


async def test_update_list_append(async_alias, command_log):
    person = await DocPerson(name="Ada", tags=["a", "b"]).async_save()
    command_log.clear()
    person.tags.append("c")
    await person.async_save()
    (update,) = _updates(command_log)
    assert update["updates"][0]["u"] == {"$set": {"tags": ["a", "b", "c"]}}
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["tags"] == ["a", "b", "c"]


async def test_update_list_item(async_alias, command_log):
    person = await DocPerson(name="Ada", tags=["a", "b"]).async_save()
    command_log.clear()
    person.tags[1] = "z"
    await person.async_save()
    (update,) = _updates(command_log)
    assert update["updates"][0]["u"] == {"$set": {"tags.1": "z"}}
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["tags"] == ["a", "z"]


async def test_update_set_to_none_unsets(async_alias, command_log):
    person = await DocPerson(name="Ada", age=3, nickname="A").async_save()
    command_log.clear()
    person.nickname = None
    person.age = 4
    await person.async_save()
    (update,) = _updates(command_log)
    assert update["updates"][0]["u"] == {
        "$set": {"age": 4},
        "$unset": {"nickname": 1},
    }
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert "nickname" not in raw
    assert raw["age"] == 4


async def test_save_without_changes_sends_nothing(async_alias, command_log):
    person = await DocPerson(name="Ada").async_save()
    command_log.clear()
    await person.async_save()
    assert command_log.count() == 0


async def test_loaded_document_update_is_delta(async_alias, command_log):
    oid = ObjectId()
    await _db().doc_person.insert_one({"_id": oid, "name": "Raw", "age": 1})
    # A document loaded from the db (not created locally) sends a delta too.
    person = await DocPerson.objects.async_get(pk=oid)
    command_log.clear()
    person.age = 2
    await person.async_save()
    (update,) = _updates(command_log)
    assert update["updates"][0]["u"] == {"$set": {"age": 2}}
    assert await _db().doc_person.find_one({"_id": oid}) == {
        "_id": oid,
        "name": "Raw",
        "age": 2,
    }


# -- save options ---------------------------------------------------------------------


async def test_save_condition_met(async_alias):
    person = await DocPerson(name="Ada", version=1).async_save()
    person.name = "Ada L."
    person.version = 2
    await person.async_save(save_condition={"version": 1})
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["name"] == "Ada L."
    assert raw["version"] == 2


async def test_save_condition_not_met(async_alias):
    person = await DocPerson(name="Ada", version=1).async_save()
    await _db().doc_person.update_one({"_id": person.id}, {"$set": {"version": 5}})
    person.name = "Changed"
    person.version = 2
    with pytest.raises(SaveConditionError, match="Race condition"):
        await person.async_save(save_condition={"version": 1})
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["name"] == "Ada"
    assert raw["version"] == 5


async def test_save_condition_with_operator(async_alias):
    person = await DocPerson(name="Ada", age=10).async_save()
    person.name = "Older"
    with pytest.raises(SaveConditionError):
        await person.async_save(save_condition={"age__gt": 10})
    await person.async_save(save_condition={"age__gte": 10})
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["name"] == "Older"


async def test_save_condition_not_a_mapping_raises_mongoengines_error(async_alias):
    # A Q as save_condition: MongoEngine's save raises TypeError building the
    # selector (query(**save_condition)); ours raised AttributeError first.
    person = await DocPerson(name="Ada", age=10).async_save()
    person.name = "Older"
    with pytest.raises(TypeError, match="must be a mapping, not Q"):
        await person.async_save(save_condition=mongoengine_async.Q(age=10))
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["name"] == "Ada"


async def test_force_insert_existing_id(async_alias):
    person = await DocPerson(name="Ada").async_save()
    clone = DocPerson(id=person.id, name="Other")
    with pytest.raises(NotUniqueError):
        await clone.async_save(force_insert=True)
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["name"] == "Ada"
    assert await _db().doc_person.count_documents({}) == 1


async def test_unique_index_violation(async_alias):
    await DocUniqueUser(email="a@example.com").async_save()
    with pytest.raises(NotUniqueError):
        await DocUniqueUser(email="a@example.com").async_save()
    assert await _db().doc_unique_user.count_documents({}) == 1
    other = await DocUniqueUser(email="b@example.com").async_save()
    other.email = "a@example.com"
    with pytest.raises(NotUniqueError):
        await other.async_save()
    raw = await _db().doc_unique_user.find_one({"_id": other.id})
    assert raw["email"] == "b@example.com"


async def test_write_concern_passed(async_alias, command_log):
    person = DocPerson(name="Ada")
    await person.async_save(write_concern={"w": 1, "j": True})
    (insert,) = [e.command for e in command_log.events if e.command_name == "insert"]
    assert insert["writeConcern"] == {"w": 1, "j": True}
    command_log.clear()
    person.age = 5
    await person.async_save(write_concern={"w": "majority"})
    (update,) = _updates(command_log)
    assert update["writeConcern"] == {"w": "majority"}
    assert (await _db().doc_person.find_one({"_id": person.id}))["age"] == 5


@pytest.mark.parametrize(
    "write_concern", [{"w": -1}, {"wtimeout": "x"}, {"nope": 1}], ids=str
)
async def test_an_invalid_write_concern_raises_only_when_a_save_writes(
    async_alias, mongodb_uri, command_log, write_concern
):
    """MongoEngine's save makes the write concern only for its write: a stored
    document with no change saves (nothing sent) whatever it is given; with a
    change, PyMongo's error, nothing written. async_save raised for both."""
    with sync_alias_beside("doc_w0_sync", async_alias, mongodb_uri):
        mine, theirs = DocW0Sync(v=1).save(), await DocW0(v=2).async_save()
        assert mine.save(write_concern=write_concern) is mine
        command_log.clear()
        assert await theirs.async_save(write_concern=write_concern) is theirs
        assert _updates(command_log) == []

        mine.v, theirs.v = 10, 20
        with pytest.raises((TypeError, ValueError)) as sync_error:
            mine.save(write_concern=write_concern)
        with pytest.raises((TypeError, ValueError)) as async_error:
            await theirs.async_save(write_concern=write_concern)
    assert type(async_error.value) is type(sync_error.value)
    assert str(async_error.value) == str(sync_error.value)
    assert _updates(command_log) == []
    assert mine._changed_fields == theirs._changed_fields == ["v"]
    stored = await _db().doc_w0.find({}, {"_id": 0}).sort("v").to_list(None)
    assert stored == [{"v": 1}, {"v": 2}]


async def test_unacknowledged_write_concern(async_alias):
    person = await DocPerson(name="Ada").async_save(write_concern={"w": 0})
    # w=0 is fire-and-forget; the document still arrives.
    for _ in range(100):
        if await _db().doc_person.find_one({"_id": person.id}):
            break
        await asyncio.sleep(0.01)
    assert (await _db().doc_person.find_one({"_id": person.id}))["name"] == "Ada"


async def _stored_values(expected: list[int]) -> list[int]:
    """The ``v`` of the DocW0 documents, once they are ``expected`` (or after
    two seconds): unacknowledged writes arrive a moment later."""
    for _ in range(200):
        values = sorted(raw["v"] for raw in await _db().doc_w0.find().to_list(None))
        if values == expected:
            break
        await asyncio.sleep(0.01)
    return values


async def test_unacknowledged_save_of_a_change_as_mongoengine(async_alias, mongodb_uri):
    """w=0: no result to read. MongoEngine's save returns, sends post_save and
    clears the changes; with a save_condition it fails reading the result
    (a TypeError, after the write). The async save does the same."""
    posted = []

    def post_save(sender, document, **kwargs):
        posted.append((sender.__name__, kwargs["created"]))

    async_signals.post_save.connect(post_save)
    try:
        with sync_alias_beside("doc_w0_sync", async_alias, mongodb_uri):
            first, second = await DocW0(v=1).async_save(), await DocW0(v=2).async_save()
            posted.clear()
            mine = DocW0Sync.objects.get(id=first.id)
            theirs = await DocW0.objects.async_get(id=second.id)
            mine.v, theirs.v = 10, 20
            assert mine.save(write_concern={"w": 0}) is mine
            assert await theirs.async_save(write_concern={"w": 0}) is theirs
            assert posted == [("DocW0Sync", False), ("DocW0", False)]
            assert mine._changed_fields == theirs._changed_fields == []
            assert await _stored_values([10, 20]) == [10, 20]

            mine.v, theirs.v = 11, 21
            with pytest.raises(TypeError) as sync_error:
                mine.save(write_concern={"w": 0}, save_condition={"v": 10})
            with pytest.raises(TypeError) as async_error:
                await theirs.async_save(
                    write_concern={"w": 0}, save_condition={"v": 20}
                )
        assert str(async_error.value) == str(sync_error.value)
        assert str(async_error.value) == "'NoneType' object is not subscriptable"
        assert mine._changed_fields == theirs._changed_fields == ["v"]
    finally:
        async_signals.post_save.disconnect(post_save)


async def test_a_change_by_another_task_after_the_write_is_saved_next(
    async_alias, command_log
):
    """A change another task makes while the save awaits its steps after the
    write (a coroutine post_save receiver here) stays for the next save; the
    receiver's own change is cleared, as MongoEngine clears it."""
    person = await DocPerson(name="Ada", age=1).async_save()
    written = asyncio.Event()
    resume = asyncio.Event()

    async def post_save(sender, document, **kwargs):
        document.nickname = "by the receiver"
        written.set()
        await resume.wait()

    async def other_task():
        await written.wait()
        person.age = 42  # a field the save sent, changed again
        person.tags = ["new"]
        resume.set()

    person.name, person.age = "Ann", 2
    async_signals.post_save.connect(post_save, sender=DocPerson)
    try:
        await asyncio.gather(person.async_save(), other_task())
    finally:
        async_signals.post_save.disconnect(post_save, sender=DocPerson)
    assert person._changed_fields == ["age", "tags"]
    command_log.clear()
    await person.async_save()
    assert _updates(command_log)[0]["updates"][0]["u"] == {
        "$set": {"age": 42, "tags": ["new"]}
    }
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert (stored["name"], stored["age"], stored["tags"]) == ("Ann", 42, ["new"])
    assert "nickname" not in stored and person._changed_fields == []


async def test_a_change_made_while_the_save_is_awaited_is_saved_next(
    async_alias, command_log
):
    """The save clears only the changes it sent: one made while its write is
    on its way (another task) is sent by the next save."""
    person = await DocPerson(name="Ada", age=1).async_save()

    async def change_while_sent(**changes):
        """Save ``person``; once the write is sent, make ``changes``."""
        command_log.clear()
        save = asyncio.create_task(person.async_save())
        while not set(command_log.names) & {"insert", "update"}:
            await asyncio.sleep(0)
        for name, value in changes.items():
            setattr(person, name, value)
        await save

    person.age = 2
    await change_while_sent(age=3, nickname="A")  # the field sent, and another
    assert sorted(person._changed_fields) == ["age", "nickname"]
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert (stored["age"], stored.get("nickname")) == (2, None)
    command_log.clear()
    await person.async_save()
    assert _updates(command_log)[0]["updates"][0]["u"] == {
        "$set": {"age": 3, "nickname": "A"}
    }
    assert person._changed_fields == []

    person = DocPerson(name="Bo")  # a new document: its insert
    await change_while_sent(age=7)
    assert person._changed_fields == ["age"] and not person._created
    await person.async_save()
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert (stored["name"], stored["age"]) == ("Bo", 7)


async def test_a_change_inside_an_embedded_document_while_saving_is_saved_next(
    async_alias, command_log
):
    """A change another task makes inside an embedded document while the
    write is on its way is the embedded document's own: it is kept (in the
    embedded document's own list, as MongoEngine keeps it) for the next save,
    for a stored document and for a new one; replaced afterwards, the
    embedded document takes it away with it."""
    person = await DocPerson(name="Ada", address=DocAddress(city="Oslo")).async_save()

    async def change_while_sent(change):
        command_log.clear()
        save = asyncio.create_task(person.async_save())
        while not set(command_log.names) & {"insert", "update"}:
            await asyncio.sleep(0)
        change()
        await save

    person.age = 2
    await change_while_sent(lambda: setattr(person.address, "city", "Rome"))
    assert person._get_changed_fields() == ["address.city"]
    assert (person._changed_fields, person.address._changed_fields) == ([], ["city"])
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert (stored["age"], stored["address"]["city"]) == (2, "Oslo")
    command_log.clear()
    await person.async_save()
    assert _updates(command_log)[0]["updates"][0]["u"] == {
        "$set": {"address.city": "Rome"}
    }
    assert person._get_changed_fields() == []

    person = DocPerson(name="Bo", address=DocAddress(city="Oslo"))  # its insert
    person.address.street = "Main"  # a change the insert sends
    await change_while_sent(lambda: setattr(person.address, "city", "Rome"))
    assert person._get_changed_fields() == ["address.city"]
    await person.async_save()
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert stored["address"] == {"city": "Rome", "street": "Main"}
    assert person._get_changed_fields() == []

    person.age = 3
    await change_while_sent(lambda: setattr(person.address, "city", "Oslo"))
    assert (person._changed_fields, person.address._changed_fields) == ([], ["city"])
    person.address = DocAddress(street="High")  # replaced: its change goes too
    await person.async_save()
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert stored["address"] == {"street": "High"}
    assert person._get_changed_fields() == []


@pytest.mark.parametrize(
    ("read", "kept"),
    [
        # A change made while the write was awaited (nickname) or before the
        # read (age) stays unless the read replaced its value.
        (lambda person: person.async_reload("name"), ["age", "nickname", "tags"]),
        (lambda person: person.async_reload(), ["tags"]),
        (lambda person: person.async_modify(inc__version=1), ["tags"]),
    ],
    ids=["reload-some", "reload", "modify"],
)
async def test_a_read_during_post_save_keeps_the_changes_it_leaves(
    async_alias, command_log, read, kept
):
    """Another task reloads (or modifies) the document while its save awaits
    a post_save receiver: the changes the read leaves, and those made after
    it, stay for the next save, which sends them and no value the read
    replaced (those are the stored ones)."""
    person = await DocPerson(name="Ada", age=1, tags=[]).async_save()
    written, resume = asyncio.Event(), asyncio.Event()

    async def post_save(sender, document, **kwargs):
        written.set()
        await resume.wait()

    async def other_task():
        while "update" not in command_log.names:  # the write is on its way
            await asyncio.sleep(0)
        person.nickname = "meanwhile"
        await written.wait()
        person.age = 42
        await read(person)
        person.tags = ["after"]
        resume.set()

    person.name = "Ann"
    command_log.clear()
    async_signals.post_save.connect(post_save, sender=DocPerson)
    try:
        await asyncio.gather(person.async_save(), other_task())
    finally:
        async_signals.post_save.disconnect(post_save, sender=DocPerson)
    assert sorted(person._changed_fields) == kept
    # Another writer's value: kept unless the instance changed it since.
    await _db().doc_person.update_one({"_id": person.id}, {"$set": {"nickname": "X"}})
    await person.async_save()
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert stored.pop("nickname") == ("meanwhile" if "nickname" in kept else "X")
    assert stored == {
        key: value
        for key, value in person.to_mongo().to_dict().items()
        if key != "nickname"
    }


@pytest.mark.parametrize(
    ("read", "kept"),
    [
        (
            lambda person: person.async_reload("name"),
            ["address.city", "address.street"],
        ),
        (lambda person: person.async_reload(), ["address.street"]),
        (lambda person: person.async_reload("address"), ["address.street"]),
        (lambda person: person.async_modify(inc__version=1), ["address.street"]),
    ],
    ids=["reload-some", "reload", "reload-embedded", "modify"],
)
async def test_a_read_during_post_save_keeps_the_embedded_changes_it_leaves(
    async_alias, read, kept
):
    """As above, inside an embedded document the read replaces: a change made
    in it before the read is not sent again (its value is the stored one,
    which another writer may have changed since), one made in the embedded
    document the read put in is kept for the next save."""
    person = await DocPerson(
        name="Ada", address=DocAddress(city="A", street="S")
    ).async_save()
    written, resume = asyncio.Event(), asyncio.Event()

    async def post_save(sender, document, **kwargs):
        written.set()
        await resume.wait()

    async def other_task():
        await written.wait()
        person.address.city = "before"
        await read(person)
        person.address.street = "after"
        resume.set()

    person.name = "Ann"
    async_signals.post_save.connect(post_save, sender=DocPerson)
    try:
        await asyncio.gather(person.async_save(), other_task())
    finally:
        async_signals.post_save.disconnect(post_save, sender=DocPerson)
    assert sorted(person._get_changed_fields()) == kept
    # Another writer's value: kept unless the instance changed it since.
    await _db().doc_person.update_one(
        {"_id": person.id}, {"$set": {"address.city": "X"}}
    )
    await person.async_save()
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert stored["address"] == {
        "city": "before" if "address.city" in kept else "X",
        "street": "after",
    }


async def test_a_save_begun_during_another_saves_post_save_keeps_later_changes(
    async_alias, command_log
):
    """A second save of the instance runs while the first awaits its
    post_save receiver; a change made while the second one's write is on its
    way is kept for the next save: the first save, ending later, clears what
    was sent, not that change."""
    person = await DocPerson(name="Ada", age=1).async_save()
    resume = asyncio.Event()

    async def post_save(sender, document, **kwargs):
        if asyncio.current_task().get_name() == "first":
            await resume.wait()

    async_signals.post_save.connect(post_save, sender=DocPerson)
    try:
        person.age = 2
        first = asyncio.create_task(person.async_save(), name="first")
        while "update" not in command_log.names:
            await asyncio.sleep(0)
        command_log.clear()
        person.nickname = "A"
        second = asyncio.create_task(person.async_save())
        while "update" not in command_log.names:
            await asyncio.sleep(0)
        person.tags = ["meanwhile"]  # while the second write is on its way
        await second
        resume.set()
        await first
    finally:
        async_signals.post_save.disconnect(post_save, sender=DocPerson)
    assert person._changed_fields == ["tags"]
    command_log.clear()
    await person.async_save()
    assert _updates(command_log)[0]["updates"][0]["u"] == {
        "$set": {"tags": ["meanwhile"]}
    }
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert (stored["age"], stored["nickname"], stored["tags"]) == (
        2,
        "A",
        ["meanwhile"],
    )


async def test_a_post_save_receiver_may_pickle_or_copy_the_document(async_alias):
    """While the save awaits its post_save receivers, the document pickles and
    deep-copies as MongoEngine's does (its changes as a plain list)."""
    copies = []

    def keep_copies(sender, document, **kwargs):
        copies.append(pickle.loads(pickle.dumps(document)))
        copies.append(copy.deepcopy(document))

    person = await DocPerson(name="Ada", age=1).async_save()
    person.age = 2
    async_signals.post_save.connect(keep_copies, sender=DocPerson)
    try:
        await person.async_save()
    finally:
        async_signals.post_save.disconnect(keep_copies, sender=DocPerson)
    for kept in copies:
        assert type(kept._changed_fields) is list and kept._changed_fields == ["age"]
        assert (kept.name, kept.age) == ("Ada", 2)


async def test_a_change_from_another_thread_during_post_save_is_saved_next(
    async_alias,
):
    """A thread (no event loop running in it) that changes the document
    while the save awaits its post_save receiver: the change is made, and
    kept for the next save."""
    resume = asyncio.Event()

    async def post_save(sender, document, **kwargs):
        await resume.wait()

    def rename(document):
        document.nickname = "from a thread"

    person = await DocPerson(name="Ada", age=1).async_save()
    person.age = 2
    async_signals.post_save.connect(post_save, sender=DocPerson)
    try:
        save = asyncio.create_task(person.async_save())
        while type(person._changed_fields) is list:  # (until post_save runs)
            await asyncio.sleep(0)
        await asyncio.to_thread(rename, person)
        resume.set()
        await save
    finally:
        async_signals.post_save.disconnect(post_save, sender=DocPerson)
    assert person._changed_fields == ["nickname"]
    await person.async_save()
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert (stored["age"], stored["nickname"]) == (2, "from a thread")


async def test_changes_by_another_task_during_post_save_inside_embedded_documents(
    async_alias, command_log
):
    """While the save awaits its post_save receiver, another task changes an
    embedded document, and a new document's field: both are kept for the
    next save; the receiver's own change inside the embedded document is
    cleared, as MongoEngine clears it."""
    written = asyncio.Event()
    resume = asyncio.Event()

    async def post_save(sender, document, **kwargs):
        document.address.street = "by the receiver"
        written.set()
        await resume.wait()

    async def save_while(person, change):
        written.clear()
        resume.clear()
        save = asyncio.create_task(person.async_save())
        await written.wait()
        change()
        resume.set()
        await save

    person = await DocPerson(name="Ada", address=DocAddress(city="Oslo")).async_save()
    person.age = 2
    async_signals.post_save.connect(post_save, sender=DocPerson)
    try:
        await save_while(person, lambda: setattr(person.address, "city", "Rome"))
        fresh = DocPerson(name="Bo", address=DocAddress(city="Oslo"))
        await save_while(fresh, lambda: setattr(fresh, "age", 7))
    finally:
        async_signals.post_save.disconnect(post_save, sender=DocPerson)
    assert person._get_changed_fields() == ["address.city"]
    assert fresh._get_changed_fields() == ["age"]
    command_log.clear()
    await person.async_save()
    assert _updates(command_log)[0]["updates"][0]["u"] == {
        "$set": {"address.city": "Rome"}
    }
    await fresh.async_save()
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert (stored["age"], stored["address"]) == (2, {"city": "Rome"})
    stored = await _db().doc_person.find_one({"_id": fresh.id})
    assert (stored["age"], stored["address"]) == (7, {"city": "Oslo"})


async def test_a_list_item_set_by_another_task_during_post_save_is_saved_next(
    async_alias, command_log
):
    """Another task sets one item of a list field while the save awaits its
    post_save receiver: the next save sends the list (not both the list and
    its item, which the server refuses as conflicting paths)."""
    written = asyncio.Event()
    resume = asyncio.Event()

    async def post_save(sender, document, **kwargs):
        written.set()
        await resume.wait()

    person = await DocPerson(name="Ada", tags=["a", "b"]).async_save()
    person.tags = ["a", "c"]
    async_signals.post_save.connect(post_save, sender=DocPerson)
    try:
        save = asyncio.create_task(person.async_save())
        await written.wait()
        person.tags[0] = "z"
        resume.set()
        await save
    finally:
        async_signals.post_save.disconnect(post_save, sender=DocPerson)
    assert person._changed_fields == ["tags"]
    await person.async_save()
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert stored["tags"] == ["z", "c"]


async def test_a_save_during_a_new_documents_post_save_sends_the_later_changes(
    async_alias,
):
    """A second save of a document whose insert awaits its post_save receiver
    sends the changes made while the insert was on its way."""
    awaiting, resume = asyncio.Event(), asyncio.Event()

    async def post_save(sender, document, **kwargs):
        if kwargs["created"]:
            awaiting.set()
            await resume.wait()

    person = DocPerson(name="Ada")
    async_signals.post_save.connect(post_save, sender=DocPerson)
    try:
        first = asyncio.create_task(person.async_save())
        while person.pk is None:  # (until the insert is on its way)
            await asyncio.sleep(0)
        person.age = 3
        await awaiting.wait()  # the insert returned: post_save awaits
        await person.async_save()
        stored = await _db().doc_person.find_one({"_id": person.id})
        assert stored["age"] == 3
        resume.set()
        await first
    finally:
        async_signals.post_save.disconnect(post_save, sender=DocPerson)
    assert person._changed_fields == []


async def test_changes_inside_embedded_documents_while_sent_are_sent_next(
    async_alias, command_log
):
    """An embedded document holds its own changes, which the save clears as
    MongoEngine's does: one made there while the write is on its way (by
    another task) is kept by its whole path and sent by the next save."""

    async def change_while_sent(document, change):
        command_log.clear()
        save = asyncio.create_task(document.async_save())
        while not set(command_log.names) & {"insert", "update"}:
            await asyncio.sleep(0)
        change()
        await save

    def move():
        person.address.city = "Nice"  # the field sent, and another
        person.address.street = "Rue B"

    person = await DocPerson(name="Ada", address=DocAddress(city="Paris")).async_save()
    person.address.city = "Lyon"
    await change_while_sent(person, move)
    stored = await _db().doc_person.find_one({"_id": person.id})
    assert stored["address"] == {"city": "Lyon"}
    assert sorted(person._get_changed_fields()) == ["address.city", "address.street"]
    command_log.clear()
    await person.async_save()
    assert _updates(command_log)[0]["updates"][0]["u"] == {
        "$set": {"address.city": "Nice", "address.street": "Rue B"}
    }
    assert person._get_changed_fields() == []

    def rename():
        doc.places[0].city = "C"

    doc = DocNested(places=[DocAddress(city="A")])  # a new document: its insert
    await change_while_sent(doc, rename)
    assert doc._get_changed_fields() == ["places.0.city"]
    doc.places[0].city = "B"
    await change_while_sent(doc, rename)
    await doc.async_save()
    stored = await _db().doc_nested.find_one({"_id": doc.id})
    assert stored["places"] == [{"city": "C"}]
    assert doc._get_changed_fields() == []

    def grow():  # the list changed too: sent whole next time, nothing else
        doc.places[0].city = "E"
        doc.places.append(DocAddress(city="F"))

    doc.places = [DocAddress(city="D")]  # the whole list sent, then changed inside
    await change_while_sent(doc, rename)
    assert doc._get_changed_fields() == ["places.0.city"]
    await change_while_sent(doc, grow)
    assert doc._get_changed_fields() == ["places"]
    await doc.async_save()
    stored = await _db().doc_nested.find_one({"_id": doc.id})
    assert stored["places"] == [{"city": "E"}, {"city": "F"}]


async def test_a_save_clears_what_it_sent_inside_embedded_documents(async_alias):
    """No change is left behind by a save, also inside an embedded document
    holding another in a dynamic field (stored with its ``_cls``)."""
    holder = await DocHolder(loose=DocLoose(label="a")).async_save()
    holder.loose.extra = DocAddress(city="Paris")
    holder.loose.label = "b"
    await holder.async_save()
    assert holder._get_changed_fields() == []
    holder = await DocHolder.objects.async_get(id=holder.id)
    holder.loose.extra.city = "Lyon"
    await holder.async_save()
    assert holder._get_changed_fields() == []
    stored = await _db().doc_holder.find_one({"_id": holder.id})
    assert stored["loose"]["extra"] == {"_cls": "DocAddress", "city": "Lyon"}


async def test_validation_error_writes_nothing(async_alias, command_log):
    with pytest.raises(ValidationError) as excinfo:
        await DocPerson(age=3).async_save()
    assert "name" in excinfo.value.errors
    with pytest.raises(ValidationError):
        await DocPerson(name="Ada", age="not a number").async_save()
    assert "insert" not in command_log.names
    assert "update" not in command_log.names
    assert await _db().doc_person.count_documents({}) == 0


async def test_validation_error_on_update_writes_nothing(async_alias):
    person = await DocPerson(name="Ada", age=1).async_save()
    person.age = "bad"
    with pytest.raises(ValidationError):
        await person.async_save()
    assert (await _db().doc_person.find_one({"_id": person.id}))["age"] == 1


async def test_validate_false_skips_validation(async_alias):
    person = await DocPerson(age=3).async_save(validate=False)
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["age"] == 3
    assert "name" not in raw


# -- delete / reload ------------------------------------------------------------------


async def test_async_delete(async_alias):
    keep = await DocPerson(name="Keep").async_save()
    gone = await DocPerson(name="Gone").async_save()
    result = await gone.async_delete()
    assert result is None
    assert await _db().doc_person.find_one({"_id": gone.id}) is None
    assert await _db().doc_person.find_one({"_id": keep.id}) is not None


async def test_async_reload_all_fields(async_alias):
    person = await DocPerson(name="Ada", age=1, tags=["x"]).async_save()
    await _db().doc_person.update_one(
        {"_id": person.id},
        {"$set": {"name": "Ada2", "age": 2, "tags": ["y", "z"]}},
    )
    person.nickname = "local"
    reloaded = await person.async_reload()
    assert reloaded is person
    assert person.name == "Ada2"
    assert person.age == 2
    assert person.tags == ["y", "z"]
    # A full reload discards local changes.
    assert person.nickname is None
    assert person._get_changed_fields() == []


async def test_async_reload_one_field(async_alias):
    person = await DocPerson(name="Ada", age=1).async_save()
    await _db().doc_person.update_one(
        {"_id": person.id}, {"$set": {"name": "Ada2", "age": 2}}
    )
    person.nickname = "local"
    await person.async_reload("age")
    assert person.age == 2
    assert person.name == "Ada"
    assert person.nickname == "local"
    assert person._get_changed_fields() == ["nickname"]


@pytest.mark.parametrize("how", ["reload", "modify"])
async def test_containers_of_containers_keep_their_changes_after(async_alias, how):
    """MongoEngine's reload and modify rebuild a container of containers with
    the inner ones named by their key alone (``k``, not ``lists.k``), which
    its first read renames: a change made in them is saved under its whole
    path, as MongoEngine marks it (it was lost, or refused)."""
    ada = await DocPerson(name="Ada").async_save()
    bob = await DocPerson(name="Bob").async_save()
    doc = await DocNested(
        lists={"k": [1]}, grid=[[1], [2]], groups={"g": [ada]}
    ).async_save()
    if how == "reload":
        await doc.async_reload()
    else:
        assert await doc.async_modify(inc__n=1)
    doc.lists["k"].append(2)
    doc.grid[1][0] = 3
    doc.groups["g"].append(bob)
    assert sorted(doc._get_changed_fields()) == ["grid.1.0", "groups.g", "lists.k"]
    await doc.async_save()
    stored = await _db().doc_nested.find_one({"_id": doc.id})
    assert (stored["lists"], stored["grid"]) == ({"k": [1, 2]}, [[1], [3]])
    assert stored["groups"] == {"g": [ada.id, bob.id]}


async def test_async_reload_deleted_document(async_alias):
    person = await DocPerson(name="Ada").async_save()
    await _db().doc_person.delete_one({"_id": person.id})
    with pytest.raises(DocPerson.DoesNotExist):
        await person.async_reload()


async def test_async_reload_unsaved_document(async_alias):
    with pytest.raises(DocPerson.DoesNotExist):
        await DocPerson(name="Never").async_reload()


@pytest.mark.parametrize("max_depth", ["2", None], ids=repr)
async def test_async_reload_max_depth_of_another_type_raises_mongoengines_error(
    async_alias, mongodb_uri, command_log, max_depth
):
    """MongoEngine's reload(max_depth=...) gives it to select_related(), whose
    TypeError it raises before reading; async_reload took any max_depth."""
    with sync_alias_beside("doc_w0_sync", async_alias, mongodb_uri):
        mine, theirs = DocW0Sync(v=1).save(), await DocW0(v=2).async_save()
        with pytest.raises(TypeError) as sync_error:
            mine.reload(max_depth=max_depth)
        command_log.clear()
        with pytest.raises(TypeError) as async_error:
            await theirs.async_reload(max_depth=max_depth)
    assert str(async_error.value) == str(sync_error.value)
    assert command_log.count("find") == 0
    await theirs.async_reload(max_depth=3)  # a number: unused, as before


# -- modify / update ------------------------------------------------------------------


async def test_async_modify_applies_and_reloads(async_alias):
    person = await DocPerson(name="Ada", age=1).async_save()
    await _db().doc_person.update_one({"_id": person.id}, {"$set": {"nickname": "n"}})
    assert await person.async_modify(inc__age=5, set__name="Ada!") is True
    assert person.age == 6
    assert person.name == "Ada!"
    # Reloaded: also sees what someone else wrote.
    assert person.nickname == "n"
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["age"] == 6
    assert raw["name"] == "Ada!"


async def test_async_modify_query_matches(async_alias):
    person = await DocPerson(name="Ada", age=1).async_save()
    assert await person.async_modify(query={"age": 1}, set__age=2) is True
    assert person.age == 2
    assert (await _db().doc_person.find_one({"_id": person.id}))["age"] == 2


async def test_async_modify_query_mismatch(async_alias):
    person = await DocPerson(name="Ada", age=1).async_save()
    assert await person.async_modify(query={"age": 99}, set__age=2) is False
    assert person.age == 1
    assert (await _db().doc_person.find_one({"_id": person.id}))["age"] == 1


async def test_async_modify_other_document_query(async_alias):
    person = await DocPerson(name="Ada", age=1).async_save()
    other = await DocPerson(name="Bob", age=1).async_save()
    with pytest.raises(InvalidQueryError):
        await person.async_modify(query={"id": other.id}, set__age=2)
    assert await _db().doc_person.count_documents({"age": 2}) == 0


async def test_async_modify_deleted_document(async_alias):
    person = await DocPerson(name="Ada", age=1).async_save()
    await _db().doc_person.delete_one({"_id": person.id})
    assert await person.async_modify(set__age=2) is False
    assert await _db().doc_person.count_documents({}) == 0


async def test_async_update_document(async_alias):
    person = await DocPerson(name="Ada", age=1, tags=["a"]).async_save()
    other = await DocPerson(name="Bob", age=1).async_save()
    assert await person.async_update(inc__age=2, push__tags="b") == 1
    raw = await _db().doc_person.find_one({"_id": person.id})
    assert raw["age"] == 3
    assert raw["tags"] == ["a", "b"]
    # Only this document is touched; the in-memory one is not reloaded.
    assert (await _db().doc_person.find_one({"_id": other.id}))["age"] == 1
    assert person.age == 1


async def test_async_update_unsaved_document(async_alias):
    with pytest.raises(mongoengine_async.OperationError, match="not yet saved"):
        await DocPerson(name="Ada").async_update(set__age=1)
    assert await _db().doc_person.count_documents({}) == 0


# -- indexes / collections ---------------------------------------------------------


async def test_async_ensure_indexes_and_list_indexes(async_alias):
    await DocIndexed.async_ensure_indexes()
    info = await _db().doc_indexed.index_information()
    keys = sorted(tuple(spec["key"]) for spec in info.values())
    assert keys == sorted([(("_id", 1),), (("name", 1),), (("age", -1), ("name", 1))])
    listed = await DocIndexed.async_list_indexes()
    assert sorted(map(tuple, listed)) == sorted(
        [(("_id", 1),), (("name", 1),), (("age", -1), ("name", 1))]
    )


async def test_indexes_created_on_first_save(async_alias):
    await DocIndexed(name="x", age=1).async_save()
    info = await _db().doc_indexed.index_information()
    assert len(info) == 3


async def test_async_drop_collection(async_alias):
    await DocIndexed(name="x", age=1).async_save()
    assert "doc_indexed" in await _db().list_collection_names()
    await DocIndexed.async_drop_collection()
    assert "doc_indexed" not in await _db().list_collection_names()
    # Indexes are recreated on next use.
    await DocIndexed(name="y", age=2).async_save()
    info = await _db().doc_indexed.index_information()
    assert len(info) == 3
    assert await DocIndexed.objects.async_count() == 1


async def test_meta_indexes_created_once_under_concurrency(async_alias, command_log):
    await asyncio.gather(
        *(DocIndexed(name=f"n{i}", age=i).async_save() for i in range(50))
    )
    assert command_log.count("createIndexes") == 1
    assert command_log.count("insert") == 50
    await asyncio.gather(*(DocIndexed.objects.async_count() for _ in range(10)))
    assert command_log.count("createIndexes") == 1
    assert await _db().doc_indexed.count_documents({}) == 50
    info = await _db().doc_indexed.index_information()
    assert len(info) == 3


async def test_async_get_collection(async_alias):
    collection = await DocIndexed._async_get_collection()
    assert collection.name == "doc_indexed"
    assert collection.database.name == _db().name
    assert len(await collection.index_information()) == 3


# -- inheritance, abstract, collection names, dynamic ---------------------------------


async def test_inheritance_stores_cls(async_alias):
    dog = await DocDog(name="Rex", bark="woof").async_save()
    cat = await DocCat(name="Tom").async_save()
    animal = await DocAnimal(name="Generic").async_save()
    raw = {d["name"]: d async for d in _db().doc_animal.find({})}
    assert raw["Rex"]["_cls"] == "DocAnimal.DocDog"
    assert raw["Rex"]["bark"] == "woof"
    assert raw["Tom"]["_cls"] == "DocAnimal.DocCat"
    assert raw["Tom"]["lives"] == 9
    assert raw["Generic"]["_cls"] == "DocAnimal"
    assert {dog.id, cat.id, animal.id} == {d["_id"] for d in raw.values()}
    # The _cls index exists.
    info = await _db().doc_animal.index_information()
    assert any(spec["key"] == [("_cls", 1)] for spec in info.values())


async def test_inheritance_queries(async_alias):
    await DocDog(name="Rex", bark="woof").async_save()
    await DocCat(name="Tom").async_save()
    await DocAnimal(name="Generic").async_save()
    everything = await DocAnimal.objects.order_by("name").async_to_list()
    assert [type(a) for a in everything] == [DocAnimal, DocDog, DocCat]
    assert everything[1].bark == "woof"
    assert everything[2].lives == 9
    dogs = await DocDog.objects.async_to_list()
    assert [(type(d), d.name) for d in dogs] == [(DocDog, "Rex")]
    assert await DocCat.objects.async_count() == 1
    assert await DocAnimal.objects.async_count() == 3
    fetched = await DocAnimal.objects.async_get(name="Tom")
    assert type(fetched) is DocCat


async def test_abstract_base_fields(async_alias):
    item = await DocConcrete(label="L", value=3).async_save()
    raw = await _db().doc_concrete.find_one({"_id": item.id})
    assert raw == {"_id": item.id, "created_by": "system", "label": "L", "value": 3}
    loaded = await DocConcrete.objects.async_get(label="L")
    assert loaded.created_by == "system"
    assert loaded.value == 3


async def test_custom_collection(async_alias):
    thing = await DocCustomCollection(name="x").async_save()
    names = await _db().list_collection_names()
    assert "my_custom_things" in names
    assert "doc_custom_collection" not in names
    assert (await _db().my_custom_things.find_one({"_id": thing.id}))["name"] == "x"
    assert (await DocCustomCollection.objects.async_first()).name == "x"


async def test_dynamic_document(async_alias, command_log):
    doc = DocDynamic(name="dyn", colour="red", sizes=[1, 2])
    doc.weight = 4.5
    await doc.async_save()
    raw = await _db().doc_dynamic.find_one({"_id": doc.id})
    assert raw == {
        "_id": doc.id,
        "name": "dyn",
        "colour": "red",
        "sizes": [1, 2],
        "weight": 4.5,
    }
    loaded = await DocDynamic.objects.async_get(colour="red")
    assert loaded.weight == 4.5
    assert loaded.sizes == [1, 2]
    command_log.clear()
    loaded.colour = "blue"
    loaded.shape = "round"
    await loaded.async_save()
    (update,) = _updates(command_log)
    assert update["updates"][0]["u"] == {"$set": {"colour": "blue", "shape": "round"}}
    raw = await _db().doc_dynamic.find_one({"_id": doc.id})
    assert raw["colour"] == "blue"
    assert raw["shape"] == "round"


# -- signals ------------------------------------------------------------------------


async def test_save_and_delete_signals(async_alias):
    calls = []

    def pre_save(sender, document, **kwargs):
        calls.append(("pre_save", sender, document.name, kwargs.get("extra")))

    def post_save(sender, document, created, **kwargs):
        calls.append(("post_save", sender, document.name, created))

    def pre_delete(sender, document, **kwargs):
        calls.append(("pre_delete", sender, document.name))

    def post_delete(sender, document, **kwargs):
        calls.append(("post_delete", sender, document.name))

    async_signals.pre_save.connect(pre_save, sender=DocSignalled)
    async_signals.post_save.connect(post_save, sender=DocSignalled)
    async_signals.pre_delete.connect(pre_delete, sender=DocSignalled)
    async_signals.post_delete.connect(post_delete, sender=DocSignalled)
    try:
        doc = DocSignalled(name="a")
        await doc.async_save(signal_kwargs={"extra": 42})
        doc.name = "b"
        await doc.async_save()
        await doc.async_delete()
        # Other classes do not trigger the receivers.
        await DocPerson(name="x").async_save()
    finally:
        async_signals.pre_save.disconnect(pre_save, sender=DocSignalled)
        async_signals.post_save.disconnect(post_save, sender=DocSignalled)
        async_signals.pre_delete.disconnect(pre_delete, sender=DocSignalled)
        async_signals.post_delete.disconnect(post_delete, sender=DocSignalled)
    assert calls == [
        ("pre_save", DocSignalled, "a", 42),
        ("post_save", DocSignalled, "a", True),
        ("pre_save", DocSignalled, "b", None),
        ("post_save", DocSignalled, "b", False),
        ("pre_delete", DocSignalled, "b"),
        ("post_delete", DocSignalled, "b"),
    ]


async def test_coroutine_signal_receivers_are_awaited(async_alias):
    seen = []

    async def post_save(sender, document, created, **kwargs):
        # The document is in the database when post_save runs.
        raw = await get_async_db().doc_signalled.find_one({"_id": document.id})
        await asyncio.sleep(0)
        seen.append(("post_save", raw["name"], created))

    async def pre_delete(sender, document, **kwargs):
        raw = await get_async_db().doc_signalled.find_one({"_id": document.id})
        seen.append(("pre_delete", raw is not None))

    async def post_delete(sender, document, **kwargs):
        raw = await get_async_db().doc_signalled.find_one({"_id": document.id})
        seen.append(("post_delete", raw is not None))

    async_signals.post_save.connect(post_save, sender=DocSignalled)
    async_signals.pre_delete.connect(pre_delete, sender=DocSignalled)
    async_signals.post_delete.connect(post_delete, sender=DocSignalled)
    try:
        doc = await DocSignalled(name="c").async_save()
        await doc.async_delete()
    finally:
        async_signals.post_save.disconnect(post_save, sender=DocSignalled)
        async_signals.pre_delete.disconnect(pre_delete, sender=DocSignalled)
        async_signals.post_delete.disconnect(post_delete, sender=DocSignalled)
    assert seen == [
        ("post_save", "c", True),
        ("pre_delete", True),
        ("post_delete", False),
    ]


async def test_pre_save_receiver_can_change_document(async_alias):
    async def pre_save(sender, document, **kwargs):
        document.name = document.name.upper()

    async_signals.pre_save.connect(pre_save, sender=DocSignalled)
    try:
        doc = await DocSignalled(name="lower").async_save()
    finally:
        async_signals.pre_save.disconnect(pre_save, sender=DocSignalled)
    raw = await get_async_db().doc_signalled.find_one({"_id": doc.id})
    assert raw["name"] == "LOWER"


async def test_mongoengine_signals_are_the_same_objects():
    import mongoengine.signals

    assert async_signals.post_save is mongoengine.signals.post_save
    assert async_signals.pre_delete is mongoengine.signals.pre_delete


async def test_instances_are_mongoengine_documents(async_alias):
    import mongoengine

    doc = await DocPerson(name="x").async_save()
    assert isinstance(doc, mongoengine.Document)
    assert isinstance(await DocDynamic(name="y").async_save(), mongoengine.Document)


# -- clean, cascade, more signals, delete write concern --------------------------------


class DocCleaned(Document):
    name = StringField()
    slug = StringField()

    def clean(self):
        self.slug = (self.name or "").lower().replace(" ", "-")


class DocOwner(Document):
    name = StringField()


class DocOwned(Document):
    title = StringField()
    owner = mongoengine_async.ReferenceField(DocOwner)


async def test_clean_runs_unless_disabled(async_alias):
    cleaned = await DocCleaned(name="Hello World").async_save()
    raw = await _db().doc_cleaned.find_one({"_id": cleaned.id})
    assert raw["slug"] == "hello-world"
    raw_doc = await DocCleaned(name="No Clean").async_save(clean=False)
    raw = await _db().doc_cleaned.find_one({"_id": raw_doc.id})
    assert "slug" not in raw


async def test_cascade_save(async_alias):
    owner = await DocOwner(name="before").async_save()
    owned = await DocOwned(title="t", owner=owner).async_save()
    owner.name = "after"
    owned.title = "t2"
    await owned.async_save()
    # Without cascade only the document itself is written.
    assert (await _db().doc_owner.find_one({"_id": owner.id}))["name"] == "before"
    owned.title = "t3"
    await owned.async_save(cascade=True)
    assert (await _db().doc_owner.find_one({"_id": owner.id}))["name"] == "after"
    assert (await _db().doc_owned.find_one({"_id": owned.id}))["title"] == "t3"


async def test_a_cascade_keeps_a_change_made_during_the_referenced_write(
    async_alias, command_log
):
    """A change another task makes to a referenced document while the
    cascade's save of it is on its way stays for its next save (the cascade
    does not clear its changes once more, after its save cleared what it sent)."""
    owner = await DocOwner(name="before").async_save()
    owned = await DocOwned(title="t", owner=owner).async_save()
    owner.name = "after"
    command_log.clear()
    saving = asyncio.create_task(owned.async_save(cascade=True))
    while "update" not in command_log.names:  # the owner's write is on its way
        await asyncio.sleep(0)
    owner.name = "meanwhile"
    await saving
    assert owner._changed_fields == ["name"]
    await owner.async_save()
    assert (await _db().doc_owner.find_one({"_id": owner.id}))["name"] == "meanwhile"


class DocPress(Document):
    name = StringField()


class DocByline(Document):
    name = StringField()
    press = mongoengine_async.ReferenceField(DocPress)
    article = mongoengine_async.ReferenceField("DocArticle")

    def __str__(self) -> str:  # reads a reference, as models' __str__ often do
        return f"{self.name} ({self.press.name})"


class DocArticle(Document):
    title = StringField()
    byline = mongoengine_async.ReferenceField(DocByline)


def _writes(log: CommandLog) -> list[tuple[str, str]]:
    """The inserts and updates ``log`` recorded: name and collection, in order."""
    return [
        (e.command_name, e.command[e.command_name])
        for e in log.events
        if e.command_name in ("insert", "update")
    ]


@pytest.mark.parametrize("loads_the_press", [False, True])
async def test_a_cascade_cycle_saves_a_document_whose_data_cannot_be_shown_once(
    async_alias, command_log, loads_the_press
):
    """A cascade counts each document it visits by its data (MongoEngine's
    key, str of it) and by itself: the article's data shows its byline,
    whose __str__ reads its unloaded press (NotLoadedError), so the article
    was left uncounted and the byline's reference back to it either raised
    NotLoadedError after both writes or, once a pre_save receiver loaded the
    press, made its key and saved it a second time."""
    press = await DocPress(name="P").async_save()
    await DocByline(name="B", press=press).async_save()
    byline = await DocByline.objects.async_get()  # its press: an unloaded proxy
    article = await DocArticle(title="T", byline=byline).async_save()
    byline.article, article.title = article, "T2"

    async def load_press(sender: type, document: DocByline, **kwargs: object) -> None:
        await document.press

    if loads_the_press:
        async_signals.pre_save.connect(load_press, sender=DocByline)
    command_log.clear()
    try:
        await article.async_save(cascade=True)
    finally:
        async_signals.pre_save.disconnect(load_press, sender=DocByline)
    assert _writes(command_log) == [("update", "doc_article"), ("update", "doc_byline")]
    stored = await _db().doc_byline.find_one({"_id": byline.id})
    assert stored["article"] == article.id
    assert (await _db().doc_article.find_one({"_id": article.id}))["title"] == "T2"


class DocShelf(Document):
    name = StringField()
    article = mongoengine_async.ReferenceField(DocArticle)


async def test_a_cascade_saves_a_referenced_document_whose_data_cannot_be_shown(
    async_alias, command_log
):
    """Not only the starting document: a referenced one whose data cannot be
    shown (its byline's __str__ reads the unloaded press) made no key
    (NotLoadedError, raised after the shelf's write, the article unsaved);
    it is saved, once."""
    press = await DocPress(name="P").async_save()
    await DocByline(name="B", press=press).async_save()
    byline = await DocByline.objects.async_get()  # its press: an unloaded proxy
    article = await DocArticle(title="T", byline=byline).async_save()
    shelf = await DocShelf(name="S", article=article).async_save()
    shelf.name, article.title = "S2", "T2"
    command_log.clear()
    await shelf.async_save(cascade=True)
    assert _writes(command_log) == [("update", "doc_shelf"), ("update", "doc_article")]
    assert (await _db().doc_article.find_one({"_id": article.id}))["title"] == "T2"
    assert (await _db().doc_shelf.find_one({"_id": shelf.id}))["name"] == "S2"
    assert article._changed_fields == []


class DocDesk(Document):
    name = StringField()


class DocFeature(Document):
    title = StringField()
    byline = mongoengine_async.ReferenceField(DocByline)
    desk = mongoengine_async.ReferenceField(DocDesk)


class MeDocPress(mongoengine.Document):
    name = mongoengine.StringField()
    meta = {"db_alias": "doc_feature_sync"}


class MeDocByline(mongoengine.Document):
    name = mongoengine.StringField()
    press = mongoengine.ReferenceField(MeDocPress)
    meta = {"db_alias": "doc_feature_sync"}

    def __str__(self) -> str:
        return f"{self.name} ({self.press.name})"


class MeDocDesk(mongoengine.Document):
    name = mongoengine.StringField()
    meta = {"db_alias": "doc_feature_sync"}


class MeDocFeature(mongoengine.Document):
    title = mongoengine.StringField()
    byline = mongoengine.ReferenceField(MeDocByline)
    desk = mongoengine.ReferenceField(MeDocDesk)
    meta = {"db_alias": "doc_feature_sync"}


@pytest.mark.parametrize("press", ["none", "deleted"])
async def test_a_cascade_saves_from_a_document_whose_str_raises(
    async_alias, mongodb_uri, command_log, press
):
    """MongoEngine's cascade makes no key of the document it starts from; a
    cascade here makes one (a reference back to it is not saved again), and
    an error showing its data failed the save after its write, the desk left
    unsaved: the byline's __str__ reading a press that is None
    (AttributeError), or deleted and found missing by select_related
    (DoesNotExist). MongoEngine's own classes save both."""
    with sync_alias_beside("doc_feature_sync", async_alias, mongodb_uri):
        me_press = MeDocPress(name="P").save()
        me_byline = MeDocByline(name="B", press=None if press == "none" else me_press)
        me_desk = MeDocDesk(name="D").save()
        me_feature = MeDocFeature(title="T", byline=me_byline.save(), desk=me_desk)
        me_feature.save()
        me_press.delete()
        me_feature = MeDocFeature.objects.get()
        me_feature.desk.name, me_feature.title = "D2", "T2"
        me_feature.save(cascade=True)
        assert (MeDocFeature.objects.get().title, MeDocDesk.objects.get().name) == (
            "T2",
            "D2",
        )
    saved_press = await DocPress(name="P").async_save()
    byline = DocByline(name="B", press=None if press == "none" else saved_press)
    await byline.async_save()
    await saved_press.async_delete()
    [byline] = await DocByline.objects.async_select_related()
    desk = await DocDesk(name="D").async_save()
    feature = await DocFeature(title="T", byline=byline, desk=desk).async_save()
    desk.name, feature.title = "D2", "T2"
    command_log.clear()
    await feature.async_save(cascade=True)
    assert _writes(command_log) == [("update", "doc_feature"), ("update", "doc_desk")]
    assert (await _db().doc_desk.find_one({"_id": desk.id}))["name"] == "D2"
    assert (await _db().doc_feature.find_one({"_id": feature.id}))["title"] == "T2"
    desk.name = "D3"
    await feature.async_cascade_save()  # (the same count of the document)
    assert (await _db().doc_desk.find_one({"_id": desk.id}))["name"] == "D3"


class DocPair(Document):
    first = mongoengine_async.ReferenceField(DocFeature)
    second = mongoengine_async.ReferenceField(DocFeature)


class MePair(mongoengine.Document):
    first = mongoengine.ReferenceField(MeDocFeature)
    second = mongoengine.ReferenceField(MeDocFeature)
    meta = {"db_alias": "doc_feature_sync"}


def _updated_collections(log: CommandLog) -> list[str]:
    """The collections of the updates ``log`` recorded, in order."""
    return [e.command["update"] for e in log.events if e.command_name == "update"]


async def test_a_cascade_saves_two_copies_whose_data_cannot_be_shown_once(
    async_alias, command_log, mongodb_uri, sync_command_log
):
    """Two Python copies of one feature with the same change: MongoEngine's
    cascade keys them by their data (equal) and saves the feature once. Here
    their byline's __str__ reads its unloaded press, so their data could not
    be shown and each copy counted by itself alone: saved twice. The data is
    shown without what cannot be (the byline by its data): saved once."""
    with fresh_sync_default(mongodb_uri, sync_command_log, alias="doc_feature_sync"):
        me_byline = MeDocByline(name="B", press=MeDocPress(name="P").save()).save()
        MeDocFeature(title="T", byline=me_byline).save()
        copies = [MeDocFeature.objects.get() for _ in range(2)]
        for copied in copies:
            copied.title, copied.byline = "T2", MeDocByline.objects.get()
        sync_command_log.clear()
        MePair(first=copies[0], second=copies[1]).save(cascade=True)
        assert _updated_collections(sync_command_log) == ["me_doc_feature"]
    press = await DocPress(name="P").async_save()
    await DocByline(name="B", press=press).async_save()
    await DocFeature(title="T").async_save()
    copies = [await DocFeature.objects.async_get() for _ in range(2)]
    for copied in copies:  # (each byline's press: an unloaded proxy)
        copied.title, copied.byline = "T2", await DocByline.objects.async_get()
    command_log.clear()
    await DocPair(first=copies[0], second=copies[1]).async_save(cascade=True)
    assert _updated_collections(command_log) == ["doc_feature"]
    stored = await _db().doc_feature.find_one()
    assert (stored["title"], stored["byline"]) == ("T2", copies[0].byline.id)


class DocReel(Document):
    name = StringField()


class DocTake(Document):
    title = StringField()
    reel = mongoengine_async.ReferenceField(DocReel)
    any_reel = mongoengine_async.GenericReferenceField()


class DocCut(Document):
    first = mongoengine_async.ReferenceField(DocTake)
    second = mongoengine_async.ReferenceField(DocTake)


async def _take_copies(fetched: str) -> list[DocTake]:
    """Two Python copies of one stored take, given the same change; the
    first with its reference ``fetched`` loaded, the second without."""
    reel = await DocReel(name="R").async_save()
    await DocTake(title="T", reel=reel, any_reel=reel).async_save()
    copies = [await DocTake.objects.async_get() for _ in range(2)]
    await getattr(DocTake, fetched).async_fetch(copies[0])
    for copied in copies:
        copied.title = "T2"
    return copies


@pytest.mark.parametrize("loaded_first", [True, False])
@pytest.mark.parametrize("fetched", ["reel", "any_reel"])
async def test_a_cascade_saves_two_copies_in_different_load_states_once(
    async_alias, command_log, fetched, loaded_first
):
    """Two copies of one take with the same change, one with its reference
    loaded (unchanged), the other not: the cascade would save nothing through
    that reference, so the copies key alike (the reference by its collection
    and id) and the take is written once, whichever comes first."""
    copies = await _take_copies(fetched)
    first, second = copies if loaded_first else copies[::-1]
    command_log.clear()
    await DocCut(first=first, second=second).async_save(cascade=True)
    assert _updated_collections(command_log) == ["doc_take"]
    stored = await _db().doc_take.find_one()
    assert (stored["title"], stored["reel"]) == ("T2", copies[0].reel.id)


async def test_a_cascade_still_saves_a_changed_reference_of_a_second_copy(
    async_alias, command_log
):
    """The copy whose loaded reference has a change of its own keys apart
    from the one without it (as in MongoEngine, by their data): both are
    saved, and the cascade saves the reference's change."""
    copies = await _take_copies("reel")
    copies[0].reel.name = "R2"
    command_log.clear()
    await DocCut(first=copies[1], second=copies[0]).async_save(cascade=True)
    updated = ["doc_take", "doc_take", "doc_reel"]
    assert _updated_collections(command_log) == updated
    assert (await _db().doc_reel.find_one())["name"] == "R2"
    assert (await _db().doc_take.find_one())["title"] == "T2"


async def test_a_cascade_saves_copies_referring_to_other_databases_apart(
    async_alias, command_log
):
    """Two copies of one take with the same change but references to one reel
    id in two databases (DBRefs a generic reference stores whole): their data
    differ as stored, so both are saved, as in MongoEngine, the second's
    reference last."""
    reel = await DocReel(name="R").async_save()
    await DocTake(title="T", any_reel=reel).async_save()
    copies = [await DocTake.objects.async_get() for _ in range(2)]
    for copied, database in zip(copies, ["one", "two"], strict=True):
        copied.title = "T2"
        copied.any_reel = DBRef("doc_reel", reel.id, database)
    command_log.clear()
    await DocCut(first=copies[0], second=copies[1]).async_save(cascade=True)
    assert _updated_collections(command_log) == ["doc_take", "doc_take"]
    stored = await _db().doc_take.find_one()
    assert stored["any_reel"] == DBRef("doc_reel", reel.id, "two")


async def test_delete_write_concern(async_alias, command_log):
    person = await DocPerson(name="Ada").async_save()
    command_log.clear()
    await person.async_delete(w=1, j=True)
    (delete,) = [e.command for e in command_log.events if e.command_name == "delete"]
    assert delete["writeConcern"] == {"w": 1, "j": True}
    assert await _db().doc_person.count_documents({}) == 0


async def test_pre_save_post_validation_and_bulk_insert_signals(async_alias):
    calls = []

    async def post_validation(sender, document, created, **kwargs):
        calls.append(("pre_save_post_validation", document.name, created))

    def pre_bulk(sender, documents, **kwargs):
        calls.append(("pre_bulk_insert", [d.name for d in documents]))

    async def post_bulk(sender, documents, loaded, **kwargs):
        count = await get_async_db().doc_signalled.count_documents({})
        calls.append(("post_bulk_insert", [d.name for d in documents], loaded, count))

    async_signals.pre_save_post_validation.connect(post_validation, sender=DocSignalled)
    async_signals.pre_bulk_insert.connect(pre_bulk, sender=DocSignalled)
    async_signals.post_bulk_insert.connect(post_bulk, sender=DocSignalled)
    try:
        doc = await DocSignalled(name="one").async_save()
        doc.name = "one!"
        await doc.async_save()
        await DocSignalled.objects.async_insert(
            [DocSignalled(name="two"), DocSignalled(name="three")]
        )
    finally:
        async_signals.pre_save_post_validation.disconnect(
            post_validation, sender=DocSignalled
        )
        async_signals.pre_bulk_insert.disconnect(pre_bulk, sender=DocSignalled)
        async_signals.post_bulk_insert.disconnect(post_bulk, sender=DocSignalled)
    assert calls == [
        ("pre_save_post_validation", "one", True),
        ("pre_save_post_validation", "one!", False),
        ("pre_bulk_insert", ["two", "three"]),
        ("post_bulk_insert", ["two", "three"], True, 3),
    ]


# -- where saves go once the class's collection is known -------------------------------


class DocMajority(Document):
    """Writes with a write concern of its own (a ``_get_collection`` override)."""

    name = StringField()

    @classmethod
    def _get_collection(cls):
        collection = super()._get_collection()
        return collection.with_options(write_concern=WriteConcern(w="majority"))


async def _names(collection_name: str, db=None) -> list[str]:
    found = (db or _db())[collection_name].find({}, sort=[("name", 1)])
    return [raw["name"] async for raw in found]


async def test_saves_after_the_first_honour_switch_db(async_alias, mongodb_uri):
    """Once saves of a class go where it lives without resolving it again, a
    document moved with switch_db() still goes (and updates) where it was moved."""
    await DocPerson(name="first").async_save()
    await DocPerson(name="second").async_save()
    async with fresh_database("doc-other", mongodb_uri):
        moved = await DocPerson(name="moved").switch_db("doc-other").async_save()
        moved.age = 7
        await moved.async_save()
        other = mongoengine_async.get_async_db("doc-other")
        assert [raw async for raw in other.doc_person.find({}, {"tags": 0})] == [
            {"_id": moved.id, "name": "moved", "age": 7, "extra": {}, "version": 1}
        ]
    assert await _names("doc_person") == ["first", "second"]


async def test_saves_use_the_classs_own_get_collection(async_alias, command_log):
    """A class that makes its collection itself (here with a write concern)
    gets every save on that collection, not only the first."""
    first = await DocMajority(name="a").async_save()
    await DocMajority(name="b").async_save()
    first.name = "a2"
    await first.async_save()
    writes = [e.command for e in command_log.events if e.command_name in _WRITES]
    assert [w["writeConcern"] for w in writes] == [{"w": "majority"}] * 3
    assert await _names("doc_majority") == ["a2", "b"]


_WRITES = ("insert", "update")


async def test_saves_after_a_drop_recreate_the_indexes(async_alias):
    """A save after async_drop_collection creates the collection and its meta
    indexes again, however many saves came before."""
    for i in range(3):
        await DocUniqueUser(email=f"u{i}@example.com").async_save()
    await DocUniqueUser.async_drop_collection()
    await DocUniqueUser(email="a@example.com").async_save()
    with pytest.raises(NotUniqueError):
        await DocUniqueUser(email="a@example.com").async_save()
    assert len(await _db().doc_unique_user.index_information()) == 2


async def test_async_save_on_an_alias_reconnected_sync_names_async_save(mongodb_uri):
    """An alias used by async saves, then disconnected and connected with
    connect(): the next async_save raises the error that names it."""
    async with fresh_database("doc-switched", mongodb_uri):
        for name in ("a", "b"):
            await DocOnSwitched(name=name).async_save()
    mongoengine_async.connect(
        "doc-sync",
        alias="doc-switched",
        host=mongodb_uri,
        uuidRepresentation="standard",
    )
    try:
        with pytest.raises(AsyncUsageError) as error:
            await DocOnSwitched(name="c").async_save()
        assert str(error.value).startswith(
            "DocOnSwitched.async_save() needs an async alias but 'doc-switched'"
        )
    finally:
        mongoengine_async.disconnect("doc-switched")


class DocOnSwitched(Document):
    name = StringField()
    meta = {"db_alias": "doc-switched"}


async def test_a_post_save_receiver_connected_during_a_save_is_called(async_alias):
    """Signals are looked up as each is sent: a post_save receiver connected
    while the save runs (here by a pre_save receiver) is called by that save."""
    calls = []

    def post_save(sender, document, created, **kwargs):
        calls.append((document.name, created))

    def pre_save(sender, document, **kwargs):
        async_signals.post_save.connect(post_save, sender=DocSignalled)

    async_signals.pre_save.connect(pre_save, sender=DocSignalled)
    try:
        await DocSignalled(name="one").async_save()
    finally:
        async_signals.pre_save.disconnect(pre_save, sender=DocSignalled)
        async_signals.post_save.disconnect(post_save, sender=DocSignalled)
    await DocSignalled(name="two").async_save()
    assert calls == [("one", True)]
