"""QuerySet async terminals and MongoEngine chaining, against a real mongod."""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from types import FrameType
from typing import Any

import mongoengine
import pytest
from bson import ObjectId
from mongoengine.errors import BulkWriteError
from pymongo import ReadPreference
from pymongo.asynchronous.command_cursor import AsyncCommandCursor

from conftest import sync_alias_beside
from mongoengine_async import (
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FloatField,
    IntField,
    InvalidQueryError,
    ListField,
    LookUpError,
    NotUniqueError,
    OperationError,
    Q,
    ReferenceField,
    StringField,
    from_bson,
    get_async_db,
)


class QsAddress(EmbeddedDocument):
    city = StringField()
    zip = StringField()


class QsPerson(Document):
    name = StringField()
    age = IntField()
    score = FloatField()
    tags = ListField(StringField())
    points = ListField(IntField())
    address = EmbeddedDocumentField(QsAddress)
    meta = {"indexes": ["name", "age"]}


class QsUnique(Document):
    key = StringField(unique=True)


class QsShape(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class QsCircle(QsShape):
    radius = IntField()


class QsAuthor(Document):
    name = StringField()


class QsBook(Document):
    title = StringField()
    author = ReferenceField(QsAuthor)


PEOPLE = [
    ("Alice", 30, 1.5, ["a", "b"], [1, 2], "Paris"),
    ("Bob", 25, 2.5, ["b"], [3], "London"),
    ("Carol", 35, 3.0, [], [], "Paris"),
    ("Dave", 40, 4.0, ["c"], [4, 5, 6], "Berlin"),
    ("Eve", 22, 5.0, ["a"], [10], "London"),
]


def _db():
    return get_async_db()


async def _people():
    docs = [
        QsPerson(
            name=name,
            age=age,
            score=score,
            tags=tags,
            points=points,
            address=QsAddress(city=city),
        )
        for name, age, score, tags, points, city in PEOPLE
    ]
    return await QsPerson.objects.async_insert(docs)


def _commands(command_log, name):
    return [e.command for e in command_log.events if e.command_name == name]


# -- reading -------------------------------------------------------------------------


async def test_async_to_list_and_length(async_alias):
    await _people()
    everyone = await QsPerson.objects.order_by("name").async_to_list()
    assert [p.name for p in everyone] == ["Alice", "Bob", "Carol", "Dave", "Eve"]
    assert all(isinstance(p, QsPerson) for p in everyone)
    assert everyone[0].address.city == "Paris"
    first_two = await QsPerson.objects.order_by("name").async_to_list(2)
    assert [p.name for p in first_two] == ["Alice", "Bob"]


@pytest.mark.parametrize("length", [0, -1])
async def test_async_to_list_of_no_length_sends_nothing(
    async_alias, command_log, length
):
    """PyMongo's ``to_list()`` refuses a length that is not positive: refused
    before the find is sent (sent first, it left its server cursor open)."""
    await _people()
    command_log.clear()
    with pytest.raises(ValueError, match="length must be greater than 0"):
        await QsPerson.objects.batch_size(2).async_to_list(length)
    assert _commands(command_log, "find") == []


@pytest.mark.parametrize("length", ["2", 1.5, True])
async def test_async_to_list_of_a_length_not_an_integer_sends_nothing(
    async_alias, command_log, length
):
    """A length that is not an integer was compared with 0 ('<=' not
    supported), or became the find's batch size (a TypeError naming
    batch_size, or the server's OperationFailure for True)."""
    await _people()
    command_log.clear()
    with pytest.raises(TypeError, match="length must be an integer"):
        await QsPerson.objects.async_to_list(length)
    assert _commands(command_log, "find") == []


async def test_filter_and_q_objects(async_alias):
    await _people()
    older = await QsPerson.objects.filter(age__gt=30).order_by("age").async_to_list()
    assert [p.name for p in older] == ["Carol", "Dave"]
    either = await (
        QsPerson.objects(Q(age__lt=23) | Q(name="Alice")).order_by("name")
    ).async_to_list()
    assert [p.name for p in either] == ["Alice", "Eve"]
    both = await QsPerson.objects(
        Q(address__city="London") & Q(age__gte=25)
    ).async_to_list()
    assert [p.name for p in both] == ["Bob"]
    in_list = (
        await QsPerson.objects(tags__in=["c", "b"]).order_by("-name").async_to_list()
    )
    assert [p.name for p in in_list] == ["Dave", "Bob", "Alice"]
    embedded = await QsPerson.objects(address__city="Berlin").async_to_list()
    assert [p.name for p in embedded] == ["Dave"]


async def test_order_limit_skip_slice(async_alias):
    await _people()
    by_age = QsPerson.objects.order_by("-age")
    assert [p.name for p in await by_age.limit(2).async_to_list()] == ["Dave", "Carol"]
    assert [p.name for p in await by_age.skip(3).async_to_list()] == ["Bob", "Eve"]
    assert [p.name for p in await by_age.skip(1).limit(2).async_to_list()] == [
        "Carol",
        "Alice",
    ]
    assert [p.name for p in await by_age[2:5].async_to_list()] == [
        "Alice",
        "Bob",
        "Eve",
    ]
    assert [p.name for p in await by_age[3:].async_to_list()] == ["Bob", "Eve"]
    assert [p.name for p in await by_age[:1].async_to_list()] == ["Dave"]
    assert await by_age[2:2].async_to_list() == []


async def test_slice_sends_skip_and_limit(async_alias, command_log):
    await _people()
    command_log.clear()
    await QsPerson.objects.order_by("age")[1:3].async_to_list()
    (find,) = _commands(command_log, "find")
    assert find["skip"] == 1
    assert find["limit"] == 2
    assert find["sort"] == {"age": 1}


async def test_async_first(async_alias):
    assert await QsPerson.objects.async_first() is None
    await _people()
    youngest = await QsPerson.objects.order_by("age").async_first()
    assert youngest.name == "Eve"
    assert await QsPerson.objects(name="Nobody").async_first() is None


async def test_only_and_exclude(async_alias, command_log):
    await _people()
    command_log.clear()
    alice = await QsPerson.objects.only("name").async_get(name="Alice")
    (find,) = _commands(command_log, "find")
    assert find["projection"] == {"name": 1}
    assert alice.name == "Alice"
    assert alice.age is None
    assert alice.address is None
    bob = await QsPerson.objects.exclude("tags", "address").async_get(name="Bob")
    assert bob.age == 25
    assert bob.tags == []
    assert bob.address is None


async def test_hint(async_alias, command_log):
    await _people()
    command_log.clear()
    result = await QsPerson.objects(age__gt=20).hint([("age", 1)]).async_to_list()
    assert len(result) == 5
    (find,) = _commands(command_log, "find")
    assert find["hint"] == {"age": 1}
    # A hint naming no index is rejected by the server.
    with pytest.raises(Exception, match="hint"):
        await QsPerson.objects.hint([("score", 1)]).async_to_list()


async def test_collation(async_alias, command_log):
    await _people()
    command_log.clear()
    found = await (
        QsPerson.objects(name="alice")
        .collation({"locale": "en", "strength": 2})
        .async_to_list()
    )
    assert [p.name for p in found] == ["Alice"]
    (find,) = _commands(command_log, "find")
    assert find["collation"] == {"locale": "en", "strength": 2}
    assert await QsPerson.objects(name="alice").async_to_list() == []
    assert (
        await QsPerson.objects(name="alice")
        .collation({"locale": "en", "strength": 2})
        .async_count()
        == 1
    )


async def test_batch_size_streams_with_getmore(async_alias, command_log):
    await QsPerson.objects.async_insert(
        [QsPerson(name=f"p{i:03}", age=i) for i in range(100)], load_bulk=False
    )
    command_log.clear()
    seen = []
    getmores_at = []
    async for person in QsPerson.objects.order_by("age").batch_size(10):
        seen.append(person.age)
        getmores_at.append(command_log.count("getMore"))
    assert seen == list(range(100))
    (find,) = _commands(command_log, "find")
    assert find["batchSize"] == 10
    assert command_log.count("getMore") >= 9
    # Streaming: document i arrives after at most i // 10 getMores.
    assert all(count <= i // 10 for i, count in enumerate(getmores_at))
    assert getmores_at[9] == 0
    assert getmores_at[10] == 1


async def test_async_to_list_batch_size(async_alias, command_log):
    await QsPerson.objects.async_insert(
        [QsPerson(name=f"p{i}", age=i) for i in range(30)], load_bulk=False
    )
    command_log.clear()
    result = await QsPerson.objects.batch_size(7).async_to_list()
    assert len(result) == 30
    assert command_log.count("getMore") >= 4


async def test_async_to_list_asks_for_the_whole_result_at_once(
    async_alias, command_log
):
    await QsPerson.objects.async_insert(
        [QsPerson(name=f"p{i}", age=i) for i in range(300)], load_bulk=False
    )
    command_log.clear()
    people = await QsPerson.objects.order_by("age").async_to_list()
    assert [p.age for p in people] == list(range(300))
    # One reply, where the server's default first batch (101) needs a getMore.
    assert command_log.names == ["find"]

    command_log.clear()
    first = await QsPerson.objects.order_by("age").async_to_list(150)
    assert [p.age for p in first] == list(range(150))
    (find,) = _commands(command_log, "find")
    assert find["batchSize"] == 150
    assert command_log.count("getMore") == 0


async def test_comment(async_alias, command_log):
    await _people()
    command_log.clear()
    await QsPerson.objects.comment("find the people").async_to_list()
    (find,) = _commands(command_log, "find")
    assert find["comment"] == "find the people"


async def test_max_time_ms(async_alias, command_log):
    await _people()
    command_log.clear()
    result = await QsPerson.objects.max_time_ms(5000).async_to_list()
    assert len(result) == 5
    (find,) = _commands(command_log, "find")
    assert find["maxTimeMS"] == 5000
    command_log.clear()
    assert (await QsPerson.objects.max_time_ms(4000).async_first()) is not None
    (find,) = _commands(command_log, "find")
    assert find["maxTimeMS"] == 4000


async def test_read_preference(async_alias, command_log):
    await _people()
    command_log.clear()
    result = await QsPerson.objects.read_preference(
        ReadPreference.SECONDARY_PREFERRED
    ).async_to_list()
    assert len(result) == 5
    (find,) = _commands(command_log, "find")
    assert find["$readPreference"] == {"mode": "secondaryPreferred"}


async def test_no_sub_classes(async_alias):
    await QsShape(name="plain").async_save()
    await QsCircle(name="round", radius=2).async_save()
    everything = await QsShape.objects.order_by("name").async_to_list()
    assert [type(s) for s in everything] == [QsShape, QsCircle]
    only_base = await QsShape.objects.no_sub_classes().async_to_list()
    assert [(type(s), s.name) for s in only_base] == [(QsShape, "plain")]
    assert await QsShape.objects.no_sub_classes().async_count() == 1
    circles = await QsCircle.objects.async_to_list()
    assert [c.radius for c in circles] == [2]


async def test_no_sub_classes_after_a_slice(async_alias):
    """A slice builds the filter document (to raise MongoEngine's errors at
    once) without keeping it: the queryset sliced, and the slice, still take
    a no_sub_classes() chained after (it no longer changed the filter)."""
    await QsShape(name="plain").async_save()
    await QsCircle(name="round", radius=2).async_save()
    shapes = QsShape.objects(name__exists=True)
    shapes[0:5]
    assert await shapes.no_sub_classes().async_count() == 1
    assert await QsShape.objects[0:5].no_sub_classes().async_count() == 1


async def test_none(async_alias, command_log):
    await _people()
    command_log.clear()
    empty = QsPerson.objects.none()
    assert await empty.async_to_list() == []
    assert await empty.async_count() == 0
    assert await empty.async_first() is None
    assert await empty.async_exists() is False
    assert [p async for p in empty] == []
    assert await empty.async_update(set__age=1) == 0
    assert await empty.async_delete() == 0
    assert "find" not in command_log.names
    assert "update" not in command_log.names
    assert "delete" not in command_log.names
    assert await _db().qs_person.count_documents({"age": 1}) == 0
    assert await _db().qs_person.count_documents({}) == 5


async def test_scalar_and_values_list(async_alias):
    await _people()
    names = await QsPerson.objects.order_by("age").async_scalar("name")
    assert names == ["Eve", "Bob", "Alice", "Carol", "Dave"]
    pairs = (
        await QsPerson.objects(age__lt=30)
        .order_by("age")
        .async_values_list("name", "age")
    )
    assert pairs == [("Eve", 22), ("Bob", 25)]
    cities = await QsPerson.objects(name="Dave").async_scalar("address__city")
    assert cities == ["Berlin"]
    streamed = [n async for n in QsPerson.objects.order_by("name").scalar("name")]
    assert streamed == ["Alice", "Bob", "Carol", "Dave", "Eve"]


async def test_as_pymongo(async_alias):
    people = await _people()
    raw = await QsPerson.objects(name="Bob").as_pymongo().async_to_list()
    assert raw == [
        {
            "_id": people[1].id,
            "name": "Bob",
            "age": 25,
            "score": 2.5,
            "tags": ["b"],
            "points": [3],
            "address": {"city": "London"},
        }
    ]
    first = await QsPerson.objects(name="Bob").only("age").as_pymongo().async_first()
    assert first == {"_id": people[1].id, "age": 25}


async def test_async_for_streams_documents(async_alias):
    await _people()
    names = [p.name async for p in QsPerson.objects(age__gte=30).order_by("name")]
    assert names == ["Alice", "Carol", "Dave"]
    # The same queryset can be iterated twice.
    qs = QsPerson.objects.order_by("age")
    assert [p.age async for p in qs] == [22, 25, 30, 35, 40]
    assert [p.age async for p in qs] == [22, 25, 30, 35, 40]


async def test_async_for_early_break_closes_cursor(async_alias, command_log):
    await QsPerson.objects.async_insert(
        [QsPerson(name=f"p{i}", age=i) for i in range(50)], load_bulk=False
    )
    command_log.clear()
    seen = []
    async for person in QsPerson.objects.order_by("age").batch_size(5):
        seen.append(person.age)
        if len(seen) == 3:
            break
    assert seen == [0, 1, 2]
    assert command_log.count("getMore") == 0


# -- get ------------------------------------------------------------------------


async def test_async_get(async_alias):
    await _people()
    bob = await QsPerson.objects.async_get(name="Bob")
    assert bob.age == 25
    carol = await QsPerson.objects(address__city="Paris").async_get(age__gt=30)
    assert carol.name == "Carol"
    dave = await QsPerson.objects.async_get(Q(name="Dave"))
    assert dave.age == 40


async def test_async_get_does_not_exist(async_alias):
    await _people()
    with pytest.raises(QsPerson.DoesNotExist) as excinfo:
        await QsPerson.objects.async_get(name="Nobody")
    assert excinfo.type is QsPerson.DoesNotExist
    assert str(excinfo.value) == "QsPerson matching query does not exist."


async def test_async_get_multiple_objects(async_alias):
    await _people()
    with pytest.raises(QsPerson.MultipleObjectsReturned) as excinfo:
        await QsPerson.objects.async_get(address__city="Paris")
    assert excinfo.type is QsPerson.MultipleObjectsReturned
    assert str(excinfo.value) == "2 or more items returned, instead of 1"


async def test_async_with_id(async_alias):
    people = await _people()
    found = await QsPerson.objects.async_with_id(people[2].id)
    assert found.name == "Carol"
    assert await QsPerson.objects.async_with_id(ObjectId()) is None
    with pytest.raises(InvalidQueryError):
        await QsPerson.objects(name="Carol").async_with_id(people[2].id)


async def test_async_in_bulk(async_alias, command_log):
    people = await _people()
    ids = [people[0].id, people[3].id, ObjectId()]
    command_log.clear()
    found = await QsPerson.objects.async_in_bulk(ids)
    assert command_log.names == ["find"]
    assert set(found) == {people[0].id, people[3].id}
    assert found[people[0].id].name == "Alice"
    assert found[people[3].id].name == "Dave"
    assert isinstance(found[people[3].id], QsPerson)
    raw = await QsPerson.objects.as_pymongo().async_in_bulk([people[1].id])
    assert raw[people[1].id]["name"] == "Bob"


async def test_async_insert_loads_back_in_one_reply(async_alias, command_log):
    people = [QsPerson(name=f"p{i:03}", age=i) for i in range(150)]
    await QsPerson.objects.async_first()  # the collection and its indexes
    command_log.clear()
    loaded = await QsPerson.objects.async_insert(people)
    assert command_log.names == ["insert", "find"]  # no getMore after 101
    assert [person.name for person in loaded] == [f"p{i:03}" for i in range(150)]


# -- counting and aggregating --------------------------------------------------------


async def test_async_count(async_alias):
    assert await QsPerson.objects.async_count() == 0
    await _people()
    assert await QsPerson.objects.async_count() == 5
    assert await QsPerson.objects(age__gte=30).async_count() == 3
    limited = QsPerson.objects.order_by("age").skip(1).limit(2)
    assert await limited.async_count() == 5
    assert await limited.async_count(with_limit_and_skip=True) == 2
    assert await QsPerson.objects.skip(4).async_count(with_limit_and_skip=True) == 1
    assert await QsPerson.objects[1:3].async_count(with_limit_and_skip=True) == 2


_BAD_CURSOR_SETTINGS = {
    "negative skip": lambda queryset: queryset.skip(-1),
    "text skip": lambda queryset: queryset.skip("1"),
    "float skip": lambda queryset: queryset.skip(1.0),
    "text limit": lambda queryset: queryset.limit("2"),
    "negative batch size": lambda queryset: queryset.batch_size(-1),
    "text batch size": lambda queryset: queryset.batch_size("5"),
}


@pytest.mark.parametrize("with_limit_and_skip", [False, True])
@pytest.mark.parametrize("setting", list(_BAD_CURSOR_SETTINGS))
async def test_async_count_refuses_what_mongoengines_cursor_refuses(
    async_alias, mongodb_uri, setting, with_limit_and_skip
):
    # MongoEngine's count() builds its cursor, whose setters raise; ours
    # counted regardless (or sent the value for the server to refuse).
    await _people()
    chain = _BAD_CURSOR_SETTINGS[setting]
    with sync_alias_beside("qs_count_sync", async_alias, mongodb_uri) as alias:

        class QsCountPerson(mongoengine.Document):
            meta = {"db_alias": alias, "collection": "qs_person"}

        with pytest.raises((TypeError, ValueError)) as sync_error:
            chain(QsCountPerson.objects).count(with_limit_and_skip)
    with pytest.raises(type(sync_error.value)) as error:
        await chain(QsPerson.objects).async_count(with_limit_and_skip)
    assert str(error.value) == str(sync_error.value)
    assert await QsPerson.objects.skip(0).batch_size(0).async_count(True) == 5


@pytest.mark.parametrize("with_limit_and_skip", [False, None, 0, True])
async def test_async_count_of_limit_0_as_mongoengines(
    async_alias, mongodb_uri, with_limit_and_skip
):
    # MongoEngine's count() gives 0 for limit(0) only when with_limit_and_skip
    # is False itself; ours gave 0 for any falsy value.
    await _people()
    with sync_alias_beside("qs_count_sync", async_alias, mongodb_uri) as alias:

        class QsCountPerson(mongoengine.Document):
            meta = {"db_alias": alias, "collection": "qs_person"}

        expected = QsCountPerson.objects.limit(0).skip(1).count(with_limit_and_skip)
    counted = await QsPerson.objects.limit(0).skip(1).async_count(with_limit_and_skip)
    skipped = 4 if with_limit_and_skip else 5
    assert counted == expected == (0 if with_limit_and_skip is False else skipped)


async def test_async_exists(async_alias):
    assert await QsPerson.objects.async_exists() is False
    await _people()
    assert await QsPerson.objects.async_exists() is True
    assert await QsPerson.objects(name="Bob").async_exists() is True
    assert await QsPerson.objects(name="Nobody").async_exists() is False


async def test_async_exists_of_scalars_whose_first_is_none(async_alias):
    # MongoEngine's bool(queryset) asks first(), which gives the first
    # match's scalar: None for a missing value, so False although it matches.
    await QsPerson(name="Nameless").async_save()
    assert await QsPerson.objects.scalar("age").async_exists() is True
    assert await QsPerson.objects.values_list("age", "score").async_exists() is True
    assert await QsPerson.objects.scalar("age").as_pymongo().async_exists() is True
    assert await QsPerson.objects(name="Nobody").scalar("age").async_exists() is False


async def test_async_distinct(async_alias):
    await _people()
    cities = await QsPerson.objects.async_distinct("address.city")
    assert sorted(cities) == ["Berlin", "London", "Paris"]
    tags = await QsPerson.objects(age__lt=35).async_distinct("tags")
    assert sorted(tags) == ["a", "b"]
    addresses = await QsPerson.objects(name="Bob").async_distinct("address")
    assert len(addresses) == 1
    assert isinstance(addresses[0], QsAddress)
    assert addresses[0].city == "London"


async def test_async_sum_and_average(async_alias):
    await _people()
    assert await QsPerson.objects.async_sum("age") == 152
    assert await QsPerson.objects(address__city="Paris").async_sum("age") == 65
    assert await QsPerson.objects.async_average("score") == pytest.approx(3.2)
    assert await QsPerson.objects(name="Nobody").async_sum("age") == 0
    # ListFields are unwound.
    assert await QsPerson.objects.async_sum("points") == 31
    assert await QsPerson.objects(name="Dave").async_average("points") == 5


async def test_async_aggregate_await(async_alias, command_log):
    await _people()
    command_log.clear()
    qs = QsPerson.objects(age__gte=25).order_by("-age").skip(1).limit(2)
    cursor = await qs.async_aggregate([{"$project": {"_id": 0, "name": 1}}])
    assert isinstance(cursor, AsyncCommandCursor)
    assert await cursor.to_list(None) == [{"name": "Carol"}, {"name": "Alice"}]
    (aggregate,) = _commands(command_log, "aggregate")
    assert aggregate["pipeline"] == [
        {"$match": {"age": {"$gte": 25}}},
        {"$sort": {"age": -1}},
        # MongoEngine's order: limit (widened by skip) before skip.
        {"$limit": 3},
        {"$skip": 1},
        {"$project": {"_id": 0, "name": 1}},
    ]


async def test_async_aggregate_async_for(async_alias):
    await _people()
    pipeline = [
        {"$group": {"_id": "$address.city", "n": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]
    results = [doc async for doc in QsPerson.objects.async_aggregate(pipeline)]
    assert results == [
        {"_id": "Berlin", "n": 1},
        {"_id": "London", "n": 2},
        {"_id": "Paris", "n": 2},
    ]
    filtered = [
        doc async for doc in QsPerson.objects(age__lt=30).async_aggregate(pipeline)
    ]
    assert filtered == [{"_id": "London", "n": 2}]


async def test_async_aggregate_takes_mongoengine_s_unpacked_stages(
    async_alias, command_log
):
    """Stages as separate arguments (or a list then more stages): MongoEngine
    0.29's deprecated form, accepted with its DeprecationWarning."""
    await _people()
    match, project = {"$match": {"name": "Bob"}}, {"$project": {"_id": 0, "age": 1}}
    command_log.clear()
    for args in [(match, project), ([match], project)]:
        with pytest.warns(DeprecationWarning, match=r"un unpacked list \(\*pipeline\)"):
            rows = [row async for row in QsPerson.objects.async_aggregate(*args)]
        assert rows == [{"age": 25}]
    pipelines = [c["pipeline"] for c in _commands(command_log, "aggregate")]
    assert pipelines == [[match, project]] * 2


async def test_an_async_aggregate_never_used_warns(async_alias, command_log):
    """An aggregation dropped without being awaited or iterated (a forgotten
    ``await``: its ``$out`` never ran) warns, as a coroutine never awaited
    does; one awaited, or iterated even partly, does not."""
    await _people()
    command_log.clear()
    with pytest.warns(RuntimeWarning) as caught:
        QsPerson.objects.async_aggregate([{"$out": "qs_person_copy"}])
        gc.collect()
    assert [str(warning.message) for warning in caught] == [
        "QsPerson's async_aggregate() was never awaited nor iterated: "
        "its pipeline was not run"
    ]
    assert command_log.names == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cursor = await QsPerson.objects.async_aggregate([{"$match": {}}])
        await cursor.close()
        async for _ in QsPerson.objects.async_aggregate([{"$match": {}}]):
            break
        rows = QsPerson.objects.async_aggregate([{"$out": "qs_person_copy"}])
        assert [row async for row in rows] == []
        del rows, cursor
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert command_log.count("aggregate") == 3


async def test_an_async_aggregate_is_a_coroutine_to_asyncio(async_alias, command_log):
    """Aggregations handed to ``gather()`` in a task cancelled before they ran
    (a request cancelled at once) do not warn, as coroutines do not: they
    warned "never awaited nor iterated", their wrapping coroutine thrown the
    cancellation before awaiting them. ``create_task`` and task groups take
    them as coroutines."""
    await _people()
    pipeline = [{"$match": {"name": "Bob"}}, {"$project": {"_id": 0, "age": 1}}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        async def handler() -> None:
            await asyncio.gather(
                QsPerson.objects.async_aggregate(pipeline),
                QsPerson.objects.async_aggregate(pipeline),
            )

        task = asyncio.create_task(handler())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    cursor = await asyncio.create_task(QsPerson.objects.async_aggregate(pipeline))
    assert await cursor.to_list() == [{"age": 25}]
    (cursor,) = await asyncio.gather(QsPerson.objects.async_aggregate(pipeline))
    assert await cursor.to_list() == [{"age": 25}]


async def test_an_async_aggregate_runs_once(async_alias, command_log):
    """An aggregation object runs its pipeline once, as a coroutine: awaiting,
    iterating or stepping it again (``create_task`` then ``await``, ``close``
    then ``await``) raises RuntimeError, and a ``$merge`` is not applied twice."""
    await _people()
    await _db().qs_plays.delete_many({})
    merge = [
        {"$match": {"name": "Bob"}},
        {"$project": {"_id": "$name", "n": {"$literal": 1}}},
        {
            "$merge": {
                "into": "qs_plays",
                "whenMatched": [{"$set": {"n": {"$add": ["$n", "$$new.n"]}}}],
            }
        },
    ]
    message = (
        "QsPerson's async_aggregate() was already awaited, iterated or closed: "
        "call async_aggregate() again to run the pipeline again"
    )
    aggregation = QsPerson.objects.async_aggregate(merge)
    await asyncio.create_task(aggregation)
    with pytest.raises(RuntimeError) as raised:
        await aggregation
    assert str(raised.value) == message
    with pytest.raises(RuntimeError, match="already awaited"):
        async for _ in aggregation:
            pass
    iterated = QsPerson.objects.async_aggregate(merge)
    assert [row async for row in iterated] == []
    with pytest.raises(RuntimeError, match="already awaited"):
        await iterated
    closed = QsPerson.objects.async_aggregate(merge)
    closed.close()
    with pytest.raises(RuntimeError, match="already awaited"):
        await closed
    assert await _db().qs_plays.find_one({}) == {"_id": "Bob", "n": 2}
    assert command_log.count("aggregate") == 2


async def test_async_explain(async_alias):
    await _people()
    plan = await QsPerson.objects(name="Bob").async_explain()
    assert isinstance(plan, dict)
    assert "queryPlanner" in plan
    assert plan["queryPlanner"]["namespace"].endswith(".qs_person")


# -- writing ------------------------------------------------------------------------


async def test_async_create(async_alias):
    person = await QsPerson.objects.async_create(name="New", age=1)
    assert isinstance(person.id, ObjectId)
    raw = await _db().qs_person.find_one({"_id": person.id})
    assert raw["name"] == "New"
    assert raw["age"] == 1


async def test_async_insert_one_command(async_alias, command_log):
    docs = [QsPerson(name=f"n{i}", age=i) for i in range(25)]
    await QsPerson.objects.async_first()  # prepare the collection first
    command_log.clear()
    inserted = await QsPerson.objects.async_insert(docs)
    assert command_log.count("insert") == 1
    (insert,) = _commands(command_log, "insert")
    assert len(insert["documents"]) == 25
    assert [p.name for p in inserted] == [f"n{i}" for i in range(25)]
    assert all(isinstance(p.id, ObjectId) for p in inserted)
    assert await _db().qs_person.count_documents({}) == 25
    raw_ids = {d["_id"] async for d in _db().qs_person.find({})}
    assert raw_ids == {p.id for p in inserted}


@pytest.mark.parametrize("load_bulk", [True, False])
async def test_async_insert_of_an_empty_list_sends_nothing(
    async_alias, command_log, load_bulk
):
    """An empty list inserts nothing and returns [] (docs/querysets.md), after
    both bulk signals with no documents; it read back its nothing with a find
    ``{"_id": {"$in": []}}``."""
    sent = []

    def receiver(sender, documents, **kwargs):
        sent.append((sender, list(documents), kwargs))

    await QsPerson.objects.async_first()
    command_log.clear()
    mongoengine.signals.pre_bulk_insert.connect(receiver, sender=QsPerson)
    mongoengine.signals.post_bulk_insert.connect(receiver, sender=QsPerson)
    try:
        assert await QsPerson.objects.async_insert([], load_bulk=load_bulk) == []
    finally:
        mongoengine.signals.pre_bulk_insert.disconnect(receiver, sender=QsPerson)
        mongoengine.signals.post_bulk_insert.disconnect(receiver, sender=QsPerson)
    assert command_log.names == []
    assert sent == [(QsPerson, [], {}), (QsPerson, [], {"loaded": load_bulk})]


async def test_async_insert_load_bulk_false(async_alias, command_log):
    await QsPerson.objects.async_first()
    command_log.clear()
    ids = await QsPerson.objects.async_insert(
        [QsPerson(name="x"), QsPerson(name="y")], load_bulk=False
    )
    assert command_log.names == ["insert"]
    assert len(ids) == 2
    assert all(isinstance(i, ObjectId) for i in ids)
    single = await QsPerson.objects.async_insert(QsPerson(name="z"))
    assert isinstance(single, QsPerson)
    assert single.name == "z"
    assert await _db().qs_person.count_documents({}) == 3


async def test_async_insert_of_documents_built_by_init_raises_nothing_inside(
    async_alias,
):
    """Documents built by ``__init__`` (no list of changes until saved) are
    given their early ids without reading ``_changed_fields`` through the
    class's attribute, which raises AttributeError inside for each of them
    (insert_bulk: 3 calls and an exception a document)."""
    code = from_bson._ChangedFields.__get__.__code__
    reads = [0]

    def hook(frame: FrameType, event: str, _: Any) -> None:
        if event == "call" and frame.f_code is code:
            reads[0] += 1

    people = [QsPerson(name="x"), QsPerson(name="y")]
    sys.setprofile(hook)
    try:
        ids = await QsPerson.objects.async_insert(people, load_bulk=False)
    finally:
        sys.setprofile(None)
    assert reads == [0]
    assert ids == [person.pk for person in people]
    stored = await _db().qs_person.find({}, {"name": 1}).sort("name").to_list()
    assert stored == [{"_id": ids[0], "name": "x"}, {"_id": ids[1], "name": "y"}]


async def test_async_insert_duplicate(async_alias):
    """As MongoEngine's insert: NotUniqueError for one document, BulkWriteError
    for a list (its first documents are inserted)."""
    await QsUnique.objects.async_insert([QsUnique(key="a")])
    with pytest.raises(NotUniqueError, match=r"^Could not save document .*E11000"):
        await QsUnique.objects.async_insert(QsUnique(key="a"))
    with pytest.raises(BulkWriteError, match=r"^Bulk write error: .*'code': 11000"):
        await QsUnique.objects.async_insert([QsUnique(key="b"), QsUnique(key="a")])
    assert await QsUnique.objects.order_by("key").scalar("key").async_to_list() == [
        "a",
        "b",
    ]


async def test_async_insert_rejects_saved_documents(async_alias):
    person = await QsPerson(name="saved").async_save()
    with pytest.raises(OperationError, match="ObjectIds"):
        await QsPerson.objects.async_insert([person])
    with pytest.raises(OperationError, match="aren't instances"):
        await QsPerson.objects.async_insert([QsAuthor(name="x")])
    assert await _db().qs_person.count_documents({}) == 1


async def test_async_update_operators(async_alias):
    people = await _people()
    alice, bob = people[0].id, people[1].id
    assert await QsPerson.objects(name="Alice").async_update(inc__age=5) == 1
    assert await QsPerson.objects(name="Alice").async_update(push__tags="z") == 1
    await QsPerson.objects(name="Alice").async_update(add_to_set__tags="a")
    await QsPerson.objects(name="Alice").async_update(add_to_set__tags="new")
    await QsPerson.objects(name="Alice").async_update(pull__points=1)
    await QsPerson.objects(name="Alice").async_update(unset__score=True)
    await QsPerson.objects(name="Alice").async_update(set__address__city="Rome")
    raw = await _db().qs_person.find_one({"_id": alice})
    assert raw["age"] == 35
    assert raw["tags"] == ["a", "b", "z", "new"]
    assert raw["points"] == [2]
    assert "score" not in raw
    assert raw["address"] == {"city": "Rome"}
    # Other documents untouched.
    raw_bob = await _db().qs_person.find_one({"_id": bob})
    assert raw_bob["age"] == 25
    assert raw_bob["address"] == {"city": "London"}


async def test_async_update_many_and_one(async_alias):
    await _people()
    assert await QsPerson.objects(address__city="London").async_update(inc__age=1) == 2
    assert await _db().qs_person.count_documents({"age": {"$in": [26, 23]}}) == 2
    assert (
        await QsPerson.objects(address__city="Paris").async_update_one(set__score=0.0)
        == 1
    )
    assert await _db().qs_person.count_documents({"score": 0.0}) == 1
    assert await QsPerson.objects(name="Nobody").async_update(inc__age=1) == 0


async def test_async_update_upsert(async_alias):
    assert (
        await QsPerson.objects(name="Zed").async_update(set__age=50, upsert=True) == 1
    )
    raw = await _db().qs_person.find_one({"name": "Zed"})
    assert raw["age"] == 50
    result = await QsPerson.objects(name="Zed").async_update_one(
        inc__age=1, upsert=True, full_result=True
    )
    assert result.matched_count == 1
    assert await _db().qs_person.count_documents({"name": "Zed"}) == 1
    assert (await _db().qs_person.find_one({"name": "Zed"}))["age"] == 51


async def test_an_upsert_by_pipeline_stores_the_class(async_alias):
    """An upsert of a class with inheritance stores ``_cls`` when its update
    is a pipeline too (MongoEngine's update fails there with a TypeError), so
    the class's querysets find the document."""
    shapes = QsShape.objects(name="pipe")
    pipeline = [{"$set": {"name": {"$concat": ["$name", "d"]}}}]
    assert await shapes.async_update(upsert=True, __raw__=pipeline) == 1
    raw = await _db().qs_shape.find_one({}, {"_id": 0})
    assert raw == {"name": "piped", "_cls": "QsShape"}
    assert [shape.name async for shape in QsShape.objects] == ["piped"]
    circles = QsCircle.objects(radius=2)
    circle = await circles.async_upsert_one(__raw__=[{"$set": {"name": "c"}}])
    assert (await _db().qs_shape.find_one({"radius": 2}))["_cls"] == "QsShape.QsCircle"
    assert circle is not None and (circle.name, circle.radius) == ("c", 2)
    # A matched document keeps its own class: a circle updated through the
    # base class's queryset is still a circle.
    await QsShape.objects(radius=2).async_update(
        upsert=True, __raw__=[{"$set": {"name": "c2"}}]
    )
    raw = await _db().qs_shape.find_one({"radius": 2}, {"_id": 0})
    assert raw == {"_cls": "QsShape.QsCircle", "radius": 2, "name": "c2"}


async def test_an_upsert_through_the_base_class_keeps_a_subclass_document(
    async_alias,
):
    """An upsert through a base class's queryset gives an inserted document
    the base's ``_cls`` and leaves a matched subclass document a subclass one
    (MongoEngine's ``$set`` of ``_cls`` made it a base document, which then
    failed to load: FieldDoesNotExist for the subclass's fields)."""
    await QsCircle(name="c", radius=2).async_save()
    shapes = QsShape.objects(radius=2)
    assert await shapes.async_update(upsert=True, set__name="x") == 1
    raw = await _db().qs_shape.find_one({"radius": 2}, {"_id": 0})
    assert raw == {"_cls": "QsShape.QsCircle", "name": "x", "radius": 2}
    assert [type(shape) async for shape in QsShape.objects] == [QsCircle]
    await QsShape.objects(name="new").async_update(upsert=True, set__name="new")
    raw = await _db().qs_shape.find_one({"name": "new"}, {"_id": 0})
    assert raw == {"_cls": "QsShape", "name": "new"}


async def test_an_upsert_keeps_the_users_own_set_on_insert_of_the_class(
    async_alias,
):
    """A ``_cls`` the upsert's own ``$setOnInsert`` gives (to insert a subclass
    document through the base class's queryset) is kept: it was replaced by
    the queryset's class (a base document inserted, silently). And the
    ``$setOnInsert`` of a ``__raw__`` update is the user's dict, left as it
    was: the queryset's ``_cls`` was written into it, and went with it to the
    next update that sent it."""
    shapes = QsShape.objects(name="a")
    await shapes.async_update(upsert=True, set_on_insert___cls="QsShape.QsCircle")
    raw = await _db().qs_shape.find_one({"name": "a"}, {"_id": 0})
    assert raw == {"_cls": "QsShape.QsCircle", "name": "a"}
    update = {"$setOnInsert": {"_cls": "QsShape.QsCircle", "radius": 3}}
    await QsShape.objects(name="b").async_upsert_one(__raw__=update)
    raw = await _db().qs_shape.find_one({"name": "b"}, {"_id": 0})
    assert raw == {"_cls": "QsShape.QsCircle", "name": "b", "radius": 3}
    update = {"$setOnInsert": {"radius": 4}}
    await QsShape.objects(name="c").async_update(upsert=True, __raw__=update)
    assert update == {"$setOnInsert": {"radius": 4}}
    await QsPerson.objects(name="d").async_update(upsert=True, __raw__=update)
    raw = await _db().qs_person.find_one({"name": "d"}, {"_id": 0})
    assert raw == {"name": "d", "radius": 4}
    raw = await _db().qs_shape.find_one({"name": "c"}, {"_id": 0})
    assert raw == {"_cls": "QsShape", "name": "c", "radius": 4}


async def test_async_update_errors(async_alias):
    await _people()
    with pytest.raises(OperationError, match="No update parameters"):
        await QsPerson.objects.async_update()
    with pytest.raises(InvalidQueryError, match='Cannot resolve field "no_such'):
        await QsPerson.objects.async_update(set__no_such_field=1)
    with pytest.raises(InvalidQueryError):
        await QsPerson.objects.async_update(frobnicate__age=1)
    assert await _db().qs_person.count_documents({"age": 1}) == 0


async def test_async_upsert_one(async_alias):
    await _people()
    bob = await QsPerson.objects(name="Bob").async_upsert_one(set__age=26)
    assert isinstance(bob, QsPerson)
    assert bob.age == 26
    assert (await _db().qs_person.find_one({"name": "Bob"}))["age"] == 26
    new = await QsPerson.objects(name="Fred").async_upsert_one(set__age=60)
    assert new.name == "Fred"
    assert new.age == 60
    assert (await _db().qs_person.find_one({"_id": new.id}))["age"] == 60
    assert await _db().qs_person.count_documents({}) == 6


async def test_async_modify(async_alias):
    await _people()
    before = await QsPerson.objects(name="Bob").async_modify(inc__age=1)
    assert before.age == 25
    after = await QsPerson.objects(name="Bob").async_modify(new=True, inc__age=1)
    assert after.age == 27
    assert (await _db().qs_person.find_one({"name": "Bob"}))["age"] == 27
    first = await QsPerson.objects.order_by("age").async_modify(
        new=True, set__score=9.5
    )
    assert first.name == "Eve"
    assert first.score == 9.5
    assert await QsPerson.objects(name="Nobody").async_modify(set__age=1) is None
    assert await _db().qs_person.count_documents({"age": 1}) == 0


@pytest.mark.parametrize("new", [False, True])
async def test_async_modify_keeps_the_stored_order_as_mongoengines_modify(
    async_alias, mongodb_uri, new
):
    """The document async_modify returns has its ``_data`` keys in the stored
    order (``_cls`` included), as MongoEngine's ``modify()`` and our other
    reads give it, not in the fields' declaration order."""
    db = _db()
    person = {"_id": ObjectId(), "points": [1], "address": {"city": "Oslo"}}
    person.update(tags=["t"], score=1.5, age=20, name="Ola")  # every field
    # Each class's own circle (its _cls query does not see the other's).
    circles = [
        {"_id": ObjectId(), "radius": 2, "name": "c", "_cls": f"{name}.{sub}"}
        for name, sub in [("QsShape", "QsCircle"), ("MeQsShape", "MeQsCircle")]
    ]
    await db.qs_person.insert_one(person)
    await db.qs_shape.insert_many(circles)
    with sync_alias_beside("qs_modify_sync", async_alias, mongodb_uri) as alias:

        class MeQsPerson(mongoengine.Document):
            name = mongoengine.StringField()
            age = mongoengine.IntField()
            score = mongoengine.FloatField()
            tags = mongoengine.ListField(mongoengine.StringField())
            points = mongoengine.ListField(mongoengine.IntField())
            address = mongoengine.EmbeddedDocumentField(QsAddress)
            meta = {"db_alias": alias, "collection": "qs_person"}

        class MeQsShape(mongoengine.Document):
            name = mongoengine.StringField()
            meta = {"db_alias": alias, "collection": "qs_shape"}
            meta["allow_inheritance"] = True

        class MeQsCircle(MeQsShape):
            radius = mongoengine.IntField()

        expected = [
            MeQsPerson.objects(name="Ola").modify(new=new, inc__age=1),
            MeQsShape.objects(name="c").modify(new=new, inc__radius=1),
        ]
    modified = [
        await QsPerson.objects(name="Ola").async_modify(new=new, inc__age=1),
        await QsShape.objects(name="c").async_modify(new=new, inc__radius=1),
    ]
    read = [await QsPerson.objects.async_get(), await QsShape.objects.async_get()]
    for ours, theirs, again in zip(modified, expected, read, strict=True):
        assert list(ours._data) == list(theirs._data) == list(again._data)
        assert list(ours._data) != list(ours._fields_ordered)
        assert ours._changed_fields == theirs._changed_fields == []
        ours_stored, theirs_stored = ours.to_mongo(), theirs.to_mongo()
        for key in ("_id", "_cls", "age"):  # (one person modified twice)
            ours_stored.pop(key, None)
            theirs_stored.pop(key, None)
        assert ours_stored == theirs_stored
    assert (modified[0].age, modified[1].radius) == ((22, 3) if new else (21, 2))
    assert type(modified[1]) is QsCircle


async def test_async_modify_remove(async_alias):
    await _people()
    removed = await QsPerson.objects(name="Dave").async_modify(remove=True)
    assert removed.name == "Dave"
    assert await _db().qs_person.find_one({"name": "Dave"}) is None
    assert await _db().qs_person.count_documents({}) == 4
    with pytest.raises(OperationError, match="Conflicting parameters"):
        await QsPerson.objects(name="Eve").async_modify(remove=True, new=True)
    assert await _db().qs_person.count_documents({}) == 4


async def test_async_modify_upsert(async_alias):
    created = await QsPerson.objects(name="Gina").async_modify(
        upsert=True, new=True, set__age=33
    )
    assert created.name == "Gina"
    assert created.age == 33
    raw = await _db().qs_person.find_one({"_id": created.id})
    assert raw["age"] == 33
    nothing = await QsPerson.objects(name="Hank").async_modify(upsert=True, set__age=1)
    assert nothing is None
    assert await _db().qs_person.count_documents({"name": "Hank"}) == 1


async def test_async_delete_returns_count(async_alias):
    await _people()
    assert await QsPerson.objects(address__city="London").async_delete() == 2
    assert await _db().qs_person.count_documents({}) == 3
    assert await QsPerson.objects(name="Nobody").async_delete() == 0
    assert await QsPerson.objects.async_delete() == 3
    assert await _db().qs_person.count_documents({}) == 0


async def test_async_delete_with_limit(async_alias):
    await _people()
    assert await QsPerson.objects.order_by("age").limit(2).async_delete() == 2
    remaining = sorted([d["name"] async for d in _db().qs_person.find({})])
    assert remaining == ["Alice", "Carol", "Dave"]


# -- references ---------------------------------------------------------------------


async def test_async_select_related(async_alias, command_log):
    authors = await QsAuthor.objects.async_insert(
        [QsAuthor(name=f"a{i}") for i in range(3)]
    )
    await QsBook.objects.async_insert(
        [QsBook(title=f"b{i}", author=authors[i % 3]) for i in range(9)]
    )
    command_log.clear()
    books = await QsBook.objects.order_by("title").async_select_related()
    assert command_log.names == ["find", "find"]
    assert [type(b.author) for b in books] == [QsAuthor] * 9
    assert [b.author.name for b in books] == [f"a{i % 3}" for i in range(9)]


async def test_async_select_related_of_scalars_and_raw_results(
    async_alias, command_log
):
    author = await QsAuthor(name="Ursula").async_save()
    await QsBook(title="Earthsea", author=author).async_save()
    command_log.clear()
    pairs = await QsBook.objects.scalar("title", "author").async_select_related()
    assert command_log.names == ["find", "find"]
    assert [(title, type(a), a.name) for title, a in pairs] == [
        ("Earthsea", QsAuthor, "Ursula")
    ]
    with pytest.raises(InvalidQueryError, match="cannot be combined with as_pymongo"):
        await QsBook.objects.as_pymongo().async_select_related()


async def test_async_select_related_of_many_targets_in_one_reply_each(
    async_alias, command_log
):
    authors = await QsAuthor.objects.async_insert(
        [QsAuthor(name=f"a{i:03}") for i in range(150)]
    )
    await QsBook.objects.async_insert(
        [QsBook(title=f"b{i:03}", author=author) for i, author in enumerate(authors)],
        load_bulk=False,
    )
    command_log.clear()
    books = await QsBook.objects.order_by("title").async_select_related()
    assert command_log.names == ["find", "find"]
    assert [b.author.name for b in books] == [f"a{i:03}" for i in range(150)]


async def test_document_async_select_related(async_alias, command_log):
    author = await QsAuthor(name="Ursula").async_save()
    book = await QsBook(title="Earthsea", author=author).async_save()
    loaded = await QsBook.objects.async_get(pk=book.pk)
    command_log.clear()
    assert await loaded.async_select_related() is loaded
    assert command_log.names == ["find"]
    assert type(loaded.author) is QsAuthor
    assert loaded.author.name == "Ursula"


async def test_bad_field_names_and_operators(async_alias):
    await _people()
    with pytest.raises(InvalidQueryError, match="Cannot resolve field"):
        await QsPerson.objects(no_such_field=1).async_to_list()
    with pytest.raises(InvalidQueryError):
        await QsPerson.objects(age__frobnicate=1).async_count()
    # only() resolves its fields at once, raising MongoEngine's LookUpError.
    with pytest.raises(LookUpError, match="Cannot resolve field"):
        QsPerson.objects.order_by("name").only("nope")


async def test_write_concern_on_queryset_writes(async_alias, command_log):
    await QsPerson.objects.async_first()
    command_log.clear()
    await QsPerson.objects.async_insert(
        [QsPerson(name="w", age=1)], load_bulk=False, write_concern={"w": 1}
    )
    await QsPerson.objects(name="w").async_update(
        inc__age=1, write_concern={"w": "majority"}
    )
    await QsPerson.objects(name="w").async_delete(write_concern={"w": 1, "j": True})
    (insert,) = _commands(command_log, "insert")
    (update,) = _commands(command_log, "update")
    (delete,) = _commands(command_log, "delete")
    assert insert["writeConcern"] == {"w": 1}
    assert update["writeConcern"] == {"w": "majority"}
    assert delete["writeConcern"] == {"w": 1, "j": True}
    assert await _db().qs_person.count_documents({}) == 0


async def test_async_modify_applies_array_filters(async_alias):
    await QsPerson(name="Arr", points=[1, 5, 9]).async_save()
    updated = await QsPerson.objects(name="Arr").async_modify(
        new=True,
        __raw__={"$set": {"points.$[p]": 0}},
        array_filters=[{"p": {"$gt": 4}}],
    )
    assert updated.points == [1, 0, 0]
    raw = await (await QsPerson._async_get_collection()).find_one({"name": "Arr"})
    assert raw["points"] == [1, 0, 0]
