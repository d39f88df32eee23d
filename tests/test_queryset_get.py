"""async_get and async_with_id filter a shallow copy of the queryset (queryset.py
``_filtered_view``) instead of MongoEngine's clones: it must send the query
MongoEngine's chain ``order_by().limit(2).filter(...)`` sends, in one round
trip, and leave the queryset it was called on as it was."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from bson import DBRef, Decimal128, ObjectId
from bson.int64 import Int64
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import ReadPreference

from mongoengine_async import (
    DateTimeField,
    DecimalField,
    Document,
    DynamicDocument,
    FloatField,
    IntField,
    InvalidQueryError,
    Q,
    QuerySet,
    ReferenceField,
    SequenceField,
    StringField,
    UUIDField,
    async_switch_collection,
)
from mongoengine_async.queryset import IdQuery
from mongoengine_async.testing import CommandLog


class GetPerson(Document):
    name = StringField()
    age = IntField()
    meta = {"ordering": ["-age"], "indexes": ["name"]}


class GetShape(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class GetCircle(GetShape):
    radius = IntField()


# Commands differ in their session and cluster time only.
_VOLATILE = {"lsid", "$clusterTime", "txnNumber", "$readPreference"}


def _find(command_log: CommandLog) -> dict[str, Any]:
    """The one find command sent since the log was cleared, without its
    session fields."""
    assert command_log.names == ["find"]
    (event,) = command_log.events
    return {k: v for k, v in event.command.items() if k not in _VOLATILE}


async def _sent_by(command_log: CommandLog, run: Any) -> tuple[Any, dict[str, Any]]:
    command_log.clear()
    result = await run()
    return result, _find(command_log)


QUERYSETS = {
    "plain": lambda: GetPerson.objects,
    "filtered": lambda: GetPerson.objects(age__gte=30),
    "ordered": lambda: GetPerson.objects.order_by("name"),
    "limited and skipped": lambda: GetPerson.objects.skip(0).limit(10),
    "only": lambda: GetPerson.objects.only("name"),
    "exclude": lambda: GetPerson.objects.exclude("age"),
    "hint": lambda: GetPerson.objects.hint([("name", 1)]),
    "comment": lambda: GetPerson.objects.comment("why"),
    "batch size": lambda: GetPerson.objects.batch_size(5),
    "max time": lambda: GetPerson.objects.max_time_ms(5000),
    "collation": lambda: GetPerson.objects.collation({"locale": "en"}),
    "no timeout": lambda: GetPerson.objects.timeout(False),
    "read preference": lambda: GetPerson.objects.read_preference(
        ReadPreference.PRIMARY_PREFERRED
    ),
    "as_pymongo": lambda: GetPerson.objects.as_pymongo(),
    "scalar": lambda: GetPerson.objects.scalar("name"),
}

FILTERS = {
    "by name": ((), {"name": "Alice"}),
    "several": ((), {"name__ne": "x", "age": 30}),
    "Q object": ((Q(name="Alice") | Q(name="Nobody"),), {}),
    "Q and keywords": ((Q(age__gt=20),), {"name": "Alice"}),
    "raw": ((), {"__raw__": {"name": "Alice"}}),
    "none": ((), {}),
}


@pytest.mark.parametrize("make", QUERYSETS.values(), ids=list(QUERYSETS))
@pytest.mark.parametrize("q_objs,query", FILTERS.values(), ids=list(FILTERS))
async def test_get_sends_mongoengines_query(
    async_alias: str,
    command_log: CommandLog,
    make: Any,
    q_objs: tuple,
    query: dict[str, Any],
) -> None:
    await GetPerson(name="Alice", age=30).async_save()
    queryset = make()
    by_chain = queryset.order_by().limit(2).filter(*q_objs, **query)
    expected, expected_find = await _sent_by(
        command_log, lambda: by_chain.async_to_list(2)
    )
    got, find = await _sent_by(
        command_log, lambda: queryset.async_get(*q_objs, **query)
    )
    assert find == expected_find
    assert [got] == expected


async def test_get_by_id_is_one_find_by_id(
    async_alias: str, command_log: CommandLog
) -> None:
    alice = await GetPerson(name="Alice", age=30).async_save()
    command_log.clear()
    got = await GetPerson.objects.async_get(id=alice.id)
    assert (got.name, got.pk) == ("Alice", alice.pk)
    (find,) = [event.command for event in command_log.events]
    assert (find["filter"], find["limit"], "sort" in find) == (
        {"_id": alice.id},
        2,
        False,
    )


async def _idle_cursors(collection: Any) -> list[dict[str, Any]]:
    """The server cursors left open on ``collection`` (this test's database)."""
    admin = collection.database.client.admin
    stages = [
        {"$currentOp": {"idleCursors": True}},
        {"$match": {"type": "idleCursor", "ns": collection.full_name}},
    ]
    return await (await admin.aggregate(stages)).to_list(None)


@pytest.mark.parametrize("model", [GetPerson, GetCircle])
async def test_a_get_by_id_leaves_no_server_cursor(
    async_alias: str, command_log: CommandLog, model: type[Any]
) -> None:
    """``async_get(id=...)`` awaits PyMongo's to_list directly, without
    read_list's closing of what a read leaves: its find asks a first reply
    with room for the two matches it reads, so the server keeps no cursor for
    it (one reply, no getMore, nothing to kill), even when the query is more
    than the id (a subclass's ``_cls`` filter: no single-document plan, a
    reply of one document would leave a cursor). (``objects(id=...)``'s
    ``async_to_list`` goes through read_list, which closes what it leaves.)"""
    saved = await model(name="Alice").async_save()
    command_log.clear()
    assert await model.objects.async_get(id=saved.pk) == saved
    assert command_log.names == ["find"]
    assert await _idle_cursors(model._get_collection()) == []


async def test_get_on_a_subclass_keeps_its_cls_filter(
    async_alias: str, command_log: CommandLog
) -> None:
    await GetShape(name="square").async_save()
    circle = await GetCircle(name="circle", radius=2).async_save()
    for queryset in (GetCircle.objects, GetShape.objects.no_sub_classes()):
        by_chain = queryset.order_by().limit(2).filter(name__ne="x")
        expected = functools.partial(by_chain.async_to_list, 2)
        _, expected_find = await _sent_by(command_log, expected)
        _, find = await _sent_by(
            command_log, functools.partial(queryset.async_get, name__ne="x")
        )
        assert find == expected_find
    got = await GetCircle.objects.async_get(name__ne="x")
    assert (type(got), got.pk) == (GetCircle, circle.pk)
    with pytest.raises(GetShape.MultipleObjectsReturned):
        await GetShape.objects.async_get(name__ne="x")
    square = await GetShape.objects.no_sub_classes().async_get(name__ne="x")
    assert (type(square), square.name) == (GetShape, "square")


async def test_get_leaves_the_queryset_as_it_was(async_alias: str) -> None:
    await GetPerson(name="Alice", age=30).async_save()
    await GetPerson(name="Bob", age=40).async_save()
    queryset = GetPerson.objects(age__gte=30).order_by("name").limit(5)
    before = {
        name: getattr(queryset, name)
        for name in ("_query_obj", "_ordering", "_limit", "_empty", "_loaded_fields")
    }
    query = dict(queryset._query)
    alice = await queryset.async_get(name="Alice")
    assert alice.age == 30
    after = {name: getattr(queryset, name) for name in before}
    assert all(after[name] is before[name] for name in before)
    assert (queryset._ordering, queryset._limit) == ([("name", 1)], 5)
    assert queryset._query == query
    assert "clone" not in vars(queryset)
    assert [p.name for p in await queryset.async_to_list()] == ["Alice", "Bob"]


async def test_get_refuses_what_filter_refuses(async_alias: str) -> None:
    refused: list[tuple[tuple, dict[str, Any]]] = [
        (("name",), {}),  # not a Q object
        ((), {"name": {"$ne": "x"}}),  # an operator as a value (query_values.py)
    ]
    for q_objs, query in refused:
        with pytest.raises(InvalidQueryError) as by_filter:
            GetPerson.objects.filter(*q_objs, **query)
        with pytest.raises(InvalidQueryError) as by_get:
            await GetPerson.objects.async_get(*q_objs, **query)
        assert str(by_get.value) == str(by_filter.value)


UNFILTERED = {name: make for name, make in QUERYSETS.items() if name != "filtered"}


@pytest.mark.parametrize("make", UNFILTERED.values(), ids=list(UNFILTERED))
async def test_with_id_sends_mongoengines_query(
    async_alias: str, command_log: CommandLog, make: Any
) -> None:
    alice = await GetPerson(name="Alice", age=30).async_save()
    queryset = make()
    by_filter = queryset.filter(pk=alice.pk)
    expected, expected_find = await _sent_by(command_log, by_filter.async_first)
    got, find = await _sent_by(
        command_log, functools.partial(queryset.async_with_id, alice.pk)
    )
    assert (find, got) == (expected_find, expected)
    assert "clone" not in vars(queryset) and not queryset._query_obj


async def test_get_by_an_id_that_is_missing(async_alias: str) -> None:
    with pytest.raises(GetPerson.DoesNotExist) as excinfo:
        await GetPerson.objects.async_get(id=ObjectId())
    assert str(excinfo.value) == "GetPerson matching query does not exist."


# -- by id: queryset.py's IdQuery against MongoEngine's transform ----------------


class GetByInt(Document):
    number = IntField(primary_key=True)


class GetByCode(Document):
    code = StringField(primary_key=True, db_field="c", max_length=5)


class GetByUuid(Document):
    key = UUIDField(primary_key=True)


class GetByUuidText(Document):
    key = UUIDField(primary_key=True, binary=False)


class GetDynamic(DynamicDocument):
    pass


_OID = ObjectId()
_UUID = uuid.uuid4()
_Make = Callable[[], Any]

# (queryset, the id stored, filters by id: equal to it, or refused by the id field)
BY_ID: dict[str, tuple[_Make, Any, list[dict[str, Any]]]] = {
    "ObjectId": (
        lambda: GetPerson.objects,
        _OID,
        [
            *({"id": _OID}, {"pk": _OID}, {"id": str(_OID)}, {"pk": None}),
            *({"id": "not an id"}, {"pk": 12}, {"id": [_OID]}),
        ],
    ),
    "subclass": (lambda: GetCircle.objects, _OID, [{"id": _OID}, {"pk": str(_OID)}]),
    "dynamic": (lambda: GetDynamic.objects, _OID, [{"id": _OID}, {"pk": "x"}]),
    "int": (
        lambda: GetByInt.objects,
        5,
        [{"number": 5}, {"pk": "5"}, {"pk": 5.0}, {"pk": "five"}, {"pk": [5]}],
    ),
    "str, db_field": (
        lambda: GetByCode.objects,
        "abc",
        [{"code": "abc"}, {"pk": "abc"}, {"pk": "toolong"}, {"pk": 12}],
    ),
    "UUID": (
        lambda: GetByUuid.objects,
        _UUID,
        [{"key": _UUID}, {"pk": str(_UUID)}, {"pk": "nope"}],
    ),
    "UUID as text": (
        lambda: GetByUuidText.objects,
        _UUID,
        [{"key": _UUID}, {"pk": str(_UUID)}, {"pk": 3}],
    ),
}


async def _outcome(
    command_log: CommandLog, run: Callable[[], Any]
) -> tuple[list[dict[str, Any]], tuple[Any, ...]]:
    """The finds sent by ``run`` and its result, or the error it raised."""
    command_log.clear()
    try:
        outcome: tuple[Any, ...] = ("returned", await run())
    except Exception as error:
        outcome = ("raised", type(error), str(error))
    finds = [
        {k: v for k, v in event.command.items() if k not in _VOLATILE}
        for event in command_log.events
    ]
    return finds, outcome


async def _get_and_chain(
    command_log: CommandLog, make: _Make, query: dict[str, Any]
) -> None:
    """async_get(**query) sends the find of MongoEngine's chain, and returns its
    one result, or raises DoesNotExist, or the error the chain raises."""
    queryset = make()
    chain = queryset.order_by().limit(2).filter(**query)
    expected_finds, expected = await _outcome(
        command_log, lambda: chain.async_to_list(2)
    )
    finds, got = await _outcome(command_log, lambda: queryset.async_get(**query))
    assert finds == expected_finds, query
    if expected[0] == "raised":
        assert got == expected, query
    elif expected[1]:
        assert got == ("returned", *expected[1]), query
    else:
        assert got[:2] == ("raised", queryset._document.DoesNotExist), query


@pytest.mark.parametrize("switched", [False, True], ids=["own", "switched"])
@pytest.mark.parametrize(("make", "stored", "filters"), BY_ID.values(), ids=list(BY_ID))
async def test_get_by_id_sends_mongoengines_query(
    async_alias: str,
    command_log: CommandLog,
    make: _Make,
    stored: Any,
    filters: list[dict[str, Any]],
    switched: bool,
) -> None:
    """For every kind of primary key, value (converted or refused) and
    collection, async_get by id sends the find MongoEngine's chain sends and
    gives its result, or raises the same error."""
    document_cls = make()._document
    kwargs = {"name": "circle"} if document_cls is GetCircle else {}
    if not switched:
        await document_cls(pk=stored, **kwargs).async_save()
        for query in filters:
            await _get_and_chain(command_log, make, query)
        return
    async with async_switch_collection(document_cls, "get_by_id_elsewhere"):
        await document_cls(pk=stored, **kwargs).async_save()
        for query in filters:
            await _get_and_chain(command_log, make, query)


class GetByDecimal(Document):
    amount = DecimalField(primary_key=True, precision=2)


class GetByFloat(Document):
    ratio = FloatField(primary_key=True)


class GetByDate(Document):
    when = DateTimeField(primary_key=True)


class GetByReference(Document):
    person = ReferenceField(GetPerson, primary_key=True)


class GetBySequence(Document):
    number = SequenceField(primary_key=True)


ID_KINDS = [
    *(GetPerson, GetCircle, GetDynamic, GetByInt, GetByCode, GetByUuid, GetByUuidText),
    *(GetByDecimal, GetByFloat, GetByDate, GetByReference, GetBySequence),
]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=13),
    st.builds(ObjectId),
    st.builds(lambda: str(ObjectId())),
    st.uuids(),
    st.uuids().map(str),
    st.decimals(),
    st.datetimes(),
    st.dates(),
    st.lists(st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.builds(Int64, st.integers(-(2**63), 2**63 - 1)),
    st.just(Decimal128("1.5")),
    st.builds(lambda: DBRef("get_person", ObjectId())),
    st.builds(lambda: GetPerson(id=ObjectId())),
    st.builds(GetPerson),
)


def _compiled(query: Q, document_cls: type) -> tuple[Any, ...]:
    """``query.to_query(document_cls)``, or its error; as repr, which shows
    the types and treats a NaN as equal to itself."""
    try:
        return ("compiled", repr(query.to_query(document_cls)))
    except Exception as error:
        return ("raised", type(error), str(error))


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(ID_KINDS), st.booleans(), ANY_VALUE)
def test_id_query_compiles_as_mongoengines(
    document_cls: type, by_pk: bool, value: Any
) -> None:
    """For any primary key kind and any value, IdQuery gives the filter
    MongoEngine's compiler gives, or raises its error."""
    key = "pk" if by_pk else document_cls._meta["id_field"]
    assert _compiled(IdQuery(**{key: value}), document_cls) == _compiled(
        Q(**{key: value}), document_cls
    )


class FilterLog(QuerySet):
    """A queryset class with its own filter, which async_get must still call."""

    calls: list[dict[str, Any]] = []

    def filter(self, *q_objs: Any, **query: Any) -> Any:
        FilterLog.calls.append(query)
        return super().filter(*q_objs, **query)


class GetLogged(Document):
    meta = {"queryset_class": FilterLog}


async def test_get_by_id_calls_a_queryset_classs_own_filter(async_alias: str) -> None:
    document = await GetLogged().async_save()
    FilterLog.calls.clear()
    got = await GetLogged.objects.async_get(id=document.id)
    assert (got.pk, FilterLog.calls) == (document.pk, [{"id": document.id}])


class RawFilter(QuerySet):
    """A queryset class whose filter gives its results as PyMongo's dicts."""

    def filter(self, *q_objs: Any, **query: Any) -> Any:
        return super().filter(*q_objs, **query).as_pymongo()


class GetRaw(Document):
    name = StringField()
    meta = {"queryset_class": RawFilter}


@pytest.mark.parametrize("query", [{"name": "Alice"}, {"id": None}])
async def test_get_loads_as_the_queryset_its_filter_gives(
    async_alias: str, query: dict[str, Any]
) -> None:
    """MongoEngine's get() reads from what filter() returns: a queryset
    class's filter that asks for dicts gets a dict, by id too."""
    alice = await GetRaw(name="Alice").async_save()
    query = {"id": alice.id} if "id" in query else query
    got = await GetRaw.objects.async_get(**query)
    assert got == {"_id": alice.id, "name": "Alice"}
