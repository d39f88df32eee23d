"""Lists and dicts whose items MongoEngine's first read walks: on an async alias
the first read gives what MongoEngine's gives on a sync one, without its I/O.

MongoEngine's first read of a container (its ``DeReference``) builds the
documents an untyped container holds (stored with ``_cls``) and wraps every
list and dict in it for change tracking, under its path; the values of the
GeoJSON, geo point and dynamic fields of the embedded documents it holds too.
So a change made through the items read (``for stop in route.stops:
stop["coordinates"] = ...``) is tracked and saved. Each test stores the same
document through the same model on a sync alias (MongoEngine's code) and on an
async one, reads it back, makes the same changes through the items read and
compares what each read gives, ``_get_changed_fields()``, the delta and the
document stored afterwards (read with the driver).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from bson import DBRef, ObjectId
from mongoengine.base.datastructures import BaseDict, BaseList

from conftest import fresh_sync_default
from mongoengine_async import (
    AsyncReferenceProxy,
    DictField,
    Document,
    DynamicField,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    GeoPointField,
    IntField,
    LineStringField,
    ListField,
    MapField,
    PointField,
    SortedListField,
    StringField,
    get_async_db,
)
from mongoengine_async import fields as our_fields
from mongoengine_async.testing import fresh_database
from test_container_reads import shape


class WcItem(EmbeddedDocument):
    n = IntField()


class WcStop(EmbeddedDocument):
    loc = PointField()
    extra = DynamicField()
    points = ListField(PointField())
    tags = ListField(StringField())


class WcTarget(Document):
    name = StringField()


class WcRoute(Document):
    untyped = ListField()
    untyped_map = DictField()
    points = ListField(PointField())
    corners = ListField(GeoPointField())
    lines = ListField(LineStringField())
    extras = ListField(DynamicField())
    sorted_points = SortedListField(PointField())
    named = DictField(PointField())
    geo_map = MapField(GeoPointField())
    nested = ListField(ListField(PointField()))
    stops = EmbeddedDocumentListField(WcStop)
    stop_map = MapField(EmbeddedDocumentField(WcStop))
    stop = EmbeddedDocumentField(WcStop)


def untyped_values() -> dict[str, Any]:
    return {
        "untyped": [WcItem(n=1), "s", [WcItem(n=2)], {"k": WcItem(n=3)}],
        "untyped_map": {"a": WcItem(n=4), "b": [WcItem(n=5)], "c": 1.5},
    }


def change_untyped(route: WcRoute) -> None:
    route.untyped[0].n = 10
    for item in route.untyped[2]:
        item.n = 20
    for item in route.untyped[3].values():
        item.n = 30
    route.untyped_map["a"].n = 40
    for item in route.untyped_map["b"]:
        item.n = 50


def item_values() -> dict[str, Any]:
    return {
        "points": [[1, 2], [3, 4]],
        "corners": [[1, 2]],
        "lines": [[[0, 0], [1, 1]]],
        "extras": [{"a": 1}, [1], "plain"],
        "sorted_points": [[1, 2]],
        "named": {"k": [1, 2]},
        "geo_map": {"k": [1, 2]},
        "nested": [[[1, 2]]],
    }


def change_items(route: WcRoute) -> None:
    for point in route.points:
        point["coordinates"] = [5, 5]
    for corner in route.corners:
        corner[0] = 9
    for line in route.lines:
        line["coordinates"][0] = [7, 7]
    for extra in route.extras:
        if isinstance(extra, dict):
            extra["b"] = 2
        elif isinstance(extra, list):
            extra.append(2)
    for point in route.sorted_points:
        point["coordinates"] = [6, 6]
    for point in route.named.values():
        point["coordinates"] = [7, 7]
    for corner in route.geo_map.values():
        corner[1] = 8
    for points in route.nested:
        for point in points:
            point["coordinates"] = [4, 4]


def embedded_values() -> dict[str, Any]:
    def stop() -> WcStop:
        return WcStop(loc=[1, 2], extra={"a": 1}, points=[[3, 4]], tags=["t"])

    return {"stops": [stop(), stop()], "stop_map": {"k": stop()}, "stop": stop()}


def change_embedded(route: WcRoute) -> None:
    for stop in route.stops:
        stop.loc["coordinates"] = [3, 3]
        stop.extra["b"] = 2
        stop.tags.append("u")
        for point in stop.points:
            point["coordinates"] = [2, 2]
    for stop in route.stop_map.values():
        stop.loc["coordinates"] = [1, 1]
    for point in route.stop.points:  # (tracked before too: a container's own)
        point["coordinates"] = [0, 1]


CASES = {
    "untyped containers of embedded documents": (untyped_values, change_untyped),
    "GeoJSON, geo point and dynamic items": (item_values, change_items),
    "embedded documents holding such values": (embedded_values, change_embedded),
}


def read_all(route: WcRoute, names: list[str]) -> dict[str, Any]:
    """Each container read, with the type and path of everything in it."""
    return {name: shape(getattr(route, name)) for name in names}


def stored(database: Any, route_id: ObjectId) -> dict[str, Any]:
    return {k: v for k, v in database.wc_route.find_one(route_id).items() if k != "_id"}


def outcome_on_sync(
    mongodb_uri: str, values: dict[str, Any], change: Callable[[WcRoute], None]
) -> tuple[Any, ...]:
    with fresh_sync_default(mongodb_uri) as database:
        saved = WcRoute(**values).save()
        route = WcRoute.objects.get(id=saved.id)
        reads = read_all(route, list(values))
        change(route)
        changed = sorted(route._get_changed_fields())
        delta = route._delta()
        route.save()
        return reads, changed, delta, stored(database, saved.id)


async def outcome_on_async(
    mongodb_uri: str, values: dict[str, Any], change: Callable[[WcRoute], None]
) -> tuple[Any, ...]:
    async with fresh_database("default", mongodb_uri):
        saved = await WcRoute(**values).async_save()
        route = await WcRoute.objects.async_get(id=saved.id)
        reads = read_all(route, list(values))
        change(route)
        changed = sorted(route._get_changed_fields())
        delta = route._delta()
        await route.async_save()
        raw = await get_async_db().wc_route.find_one(saved.id)
        return reads, changed, delta, {k: v for k, v in raw.items() if k != "_id"}


@pytest.mark.parametrize("case", list(CASES))
async def test_reads_and_changes_through_items_as_on_a_sync_alias(
    mongodb_uri: str, case: str
) -> None:
    values, change = CASES[case]
    expected = outcome_on_sync(mongodb_uri, values(), change)
    reads, changed, delta, document = await outcome_on_async(
        mongodb_uri, values(), change
    )
    assert reads == expected[0]
    assert changed == expected[1]
    assert delta == expected[2]
    assert document == expected[3]
    assert len(changed) >= len(values())  # a change in every container kept


async def test_select_related_first_then_the_read_builds_the_documents(
    async_alias: str,
) -> None:
    """``async_select_related()`` before the first read (it loads references,
    not embedded documents) leaves the read as it is: the documents built."""
    target = await WcTarget(name="t").async_save()
    values = untyped_values()
    values["untyped"].append(target.to_dbref())
    await WcRoute(**values).async_save()
    [route] = await WcRoute.objects.async_select_related()
    assert [type(item) for item in route.untyped] == [
        WcItem,
        str,
        BaseList,
        BaseDict,
        WcTarget,
    ]
    route.untyped[0].n = 10
    assert route._get_changed_fields() == ["untyped.0.n"]


async def test_references_in_walked_items_still_read_as_proxies(
    async_alias: str, command_log: Any
) -> None:
    target = await WcTarget(name="t").async_save()
    dbref = DBRef("wc_target", target.pk)
    await WcRoute(
        untyped=[WcItem(n=1), dbref, [dbref]], extras=[target, {"k": target}]
    ).async_save()
    route = await WcRoute.objects.async_get()
    command_log.clear()
    item, reference, [nested] = route.untyped
    assert isinstance(item, WcItem)
    assert isinstance(reference, AsyncReferenceProxy) and reference == target
    assert isinstance(nested, AsyncReferenceProxy)
    held, in_dict = route.extras
    assert isinstance(held, AsyncReferenceProxy) and held == target
    assert isinstance(in_dict["k"], AsyncReferenceProxy)
    assert command_log.count() == 0
    assert (await reference).name == "t"


def test_containers_of_scalars_keep_the_plain_read() -> None:
    """Only the item fields whose values may be lists, dicts or documents
    stored with ``_cls`` take the walk; lists of strings, numbers and plain
    embedded documents keep the read without it (decided once per field)."""
    rules = {
        name: field._item_rule()
        for name, field in WcRoute._fields.items()
        if isinstance(field, our_fields.ListField | our_fields.DictField)
    }
    assert not any(rule.plain for rule in rules.values())
    assert WcStop.tags._item_rule().plain
    assert not WcStop.points._item_rule().plain

    class WcPlain(Document):
        words = ListField(StringField())
        numbers = DictField(IntField())
        items = EmbeddedDocumentListField(WcItem)

    assert all(
        field._item_rule().plain and not field._item_rule().walks
        for name, field in WcPlain._fields.items()
        if name != "id"
    )


class WcTagged(Document):
    tags = ListField(StringField())


async def test_documents_held_keep_their_own_lists(async_alias: str) -> None:
    """The walk binds the lists of the documents an untyped list holds to the
    holder (as MongoEngine's does); each document's own read of its list binds
    it back, as MongoEngine's does, so a change to it is the document's own."""
    tagged = await WcTagged(tags=["a"]).async_save()
    await WcRoute(untyped=[tagged.to_dbref()]).async_save()
    [route] = await WcRoute.objects.async_select_related()
    held = route.untyped[0]
    assert isinstance(held, WcTagged)
    held.tags.append("b")
    assert held._get_changed_fields() == ["tags"]
    await held.async_save()
    stored = await get_async_db().wc_tagged.find_one(tagged.pk)
    assert stored["tags"] == ["a", "b"]


class WcNote(EmbeddedDocument):
    tags = ListField(StringField())
    scores = DictField()


class WcBoard(Document):
    notes = EmbeddedDocumentListField(WcNote)


def board_values() -> dict[str, Any]:
    return {"notes": [WcNote(tags=["a"], scores={"k": 1}), WcNote()]}


def change_notes(board: WcBoard) -> list[Any]:
    """Changes through the notes' lists and dicts, one empty as stored: each
    change recorded where MongoEngine records it (the note's own list, or,
    for a container the walk left empty, the board's path)."""
    first, empty = board.notes
    first.tags.append("b")
    empty.tags.append("c")
    empty.scores["j"] = 2
    return [
        list(board._changed_fields),
        [list(note._changed_fields) for note in board.notes],
        sorted(board._get_changed_fields()),
    ]


async def test_embedded_documents_holding_containers_are_walked(
    mongodb_uri: str,
) -> None:
    """The first read of a list of embedded documents whose fields hold lists
    or dicts walks them as MongoEngine's read does: their lists and dicts
    wrapped under the holder's path, so a change through one the walk left
    as it was (an empty one) is the holder's, through a non-empty one the
    note's own (before: always the note's, its lists left as stored)."""
    with fresh_sync_default(mongodb_uri) as database:
        saved = WcBoard(**board_values()).save()
        board = WcBoard.objects.get(id=saved.id)
        expected_reads = shape(board.notes)
        expected = change_notes(board)
        board.save()
        expected_stored = database.wc_board.find_one(saved.id)["notes"]
    async with fresh_database("default", mongodb_uri):
        saved = await WcBoard(**board_values()).async_save()
        board = await WcBoard.objects.async_get(id=saved.id)
        reads = shape(board.notes)
        changes = change_notes(board)
        await board.async_save()
        raw = await get_async_db().wc_board.find_one(saved.id)
    assert changes == expected
    assert changes[0] == ["notes.1.tags", "notes.1.scores.j"]
    assert reads == expected_reads
    assert (
        raw["notes"]
        == expected_stored
        == [
            {"tags": ["a", "b"], "scores": {"k": 1}},
            {"tags": ["c"], "scores": {"j": 2}},
        ]
    )
