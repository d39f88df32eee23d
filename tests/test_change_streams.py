"""Change streams as documents (``async_watch``) on the real replica set: the
events and their documents, the filter as ``$match``, resuming, switches,
sessions, closing and cancelling, and no event lost across a stepdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
from collections.abc import Callable
from typing import Any

import pytest
from bson import ObjectId, Timestamp
from pymongo import ReadPreference, monitoring
from pymongo.errors import (
    DuplicateKeyError,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
)

from mongoengine_async import (
    AsyncUsageError,
    ChangeEvent,
    ChangeStream,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    ForeignSessionError,
    GenericEmbeddedDocumentField,
    GeoPointField,
    IntField,
    InvalidQueryError,
    ListField,
    MapField,
    OperationError,
    PointField,
    Q,
    StringField,
    UpdateDescription,
    async_run_in_transaction,
    async_switch_collection,
    async_switch_db,
    disconnect_async,
    get_async_connection,
    get_async_db,
    signals,
)
from mongoengine_async.testing import CommandLog, ReplicaSet, fresh_database

WAIT_SECONDS = 30  # a bound on waiting for events, never a timing assertion
# The collection's events that end a stream, which every filter lets through.
ENDING = {"operationType": {"$in": ["drop", "rename", "invalidate"]}}


def ending_or(match: dict[str, Any]) -> list[dict[str, Any]]:
    """The pipeline of a stream whose filter's ``$match`` is ``match``."""
    return [{"$match": {"$or": [ENDING, match]}}]


class CsPublisher(EmbeddedDocument):
    city = StringField(db_field="c")


class CsShelf(EmbeddedDocument):
    label = StringField(db_field="lb")


class CsBook(Document):
    title = StringField(db_field="t")
    pages = IntField(db_field="p")
    tags = ListField(StringField(), db_field="tg")
    publisher = EmbeddedDocumentField(CsPublisher, db_field="pub")
    shelves = EmbeddedDocumentListField(CsShelf, db_field="sh")
    notes = MapField(EmbeddedDocumentField(CsShelf), db_field="nt")


class CsItem(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class CsTool(CsItem):
    pass


class CsPart(Document):
    name = StringField(db_field="n")
    meta = {"allow_inheritance": True}


class CsGear(CsPart):
    teeth = IntField(db_field="tt")
    shelves = EmbeddedDocumentListField(CsShelf, db_field="sh")


class CsPiece(EmbeddedDocument):
    label = StringField(db_field="lb")
    meta = {"allow_inheritance": True}


class CsCog(CsPiece):
    teeth = IntField(db_field="tt")


class CsCrate(Document):
    piece = EmbeddedDocumentField(CsPiece, db_field="pc")
    pieces = ListField(EmbeddedDocumentField(CsPiece), db_field="pcs")
    anything = GenericEmbeddedDocumentField(db_field="an")


class CsPlace(Document):
    name = StringField()
    point = PointField(db_field="pt")
    spot = GeoPointField()


class CsIndexed(Document):
    name = StringField()
    meta = {"indexes": ["name"]}


async def take(stream: ChangeStream[Any], count: int) -> list[ChangeEvent[Any]]:
    """The next ``count`` events of ``stream`` (fewer if it ends first)."""
    events: list[ChangeEvent[Any]] = []

    async def collect() -> None:
        while len(events) < count and stream.alive:
            event = await stream.try_next()
            if event is not None:
                events.append(event)

    await asyncio.wait_for(collect(), WAIT_SECONDS)  # asyncio.timeout: 3.11+
    return events


async def until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds (bound it with ``wait_for``)."""
    while not condition():
        await asyncio.sleep(0.01)


async def every_event(stream: ChangeStream[Any]) -> list[ChangeEvent[Any]]:
    """Every event of ``stream`` until ``async for`` ends (bounded in time)."""

    async def collect() -> list[ChangeEvent[Any]]:
        return [event async for event in stream]

    return await asyncio.wait_for(collect(), WAIT_SECONDS)


async def nothing_more(stream: ChangeStream[Any]) -> None:
    """Assert ``stream`` has no further event (a marker written last is next)."""
    marker = await CsBook(title="marker").async_save()
    (event,) = await take(stream, 1)
    assert (event.operation_type, event.pk) == ("insert", marker.pk)


# -- the events ----------------------------------------------------------------------


async def test_insert_update_replace_delete_events(async_alias: str) -> None:
    collection = await CsBook._async_get_collection()
    async with CsBook.async_watch() as stream:
        book = await CsBook(title="Dune", pages=412).async_save()
        (inserted,) = await take(stream, 1)
        book.title = "Dune Messiah"
        book.pages = None
        await book.async_save()
        (updated,) = await take(stream, 1)
        await collection.replace_one({"_id": book.pk}, {"t": "Children of Dune"})
        (replaced,) = await take(stream, 1)
        await book.async_delete()
        (deleted,) = await take(stream, 1)

    assert inserted.operation_type == "insert"
    assert inserted.document_key == {"_id": book.pk}
    assert isinstance(inserted.document, CsBook)
    assert (inserted.document.pk, inserted.document.title) == (book.pk, "Dune")
    assert inserted.document.pages == 412
    assert inserted.update_description is None

    assert updated.operation_type == "update"
    assert updated.pk == book.pk
    assert updated.update_description == UpdateDescription(
        updated_fields={"title": "Dune Messiah"},
        removed_fields=["pages"],
        truncated_arrays={},
    )
    # full_document="updateLookup": the document as it is when the event is read
    assert (updated.document.title, updated.document.pages) == ("Dune Messiah", None)

    assert replaced.operation_type == "replace"
    assert replaced.document.title == "Children of Dune"
    assert replaced.document.pages is None

    assert deleted.operation_type == "delete"
    assert deleted.document_key == {"_id": book.pk}
    assert deleted.document is None
    assert deleted.update_description is None
    assert deleted.raw["ns"]["coll"] == CsBook._get_collection_name()
    assert deleted.resume_token == deleted.raw["_id"]


async def test_update_description_maps_nested_db_fields(async_alias: str) -> None:
    book = await CsBook(
        title="Emma",
        tags=["novel"],
        publisher=CsPublisher(city="London"),
        shelves=[CsShelf(label="a"), CsShelf(label="b")],
        notes={"first": CsShelf(label="x")},
    ).async_save()
    async with CsBook.async_watch() as stream:
        await CsBook.objects(id=book.pk).async_update(
            push__tags="classic",
            set__publisher__city="Bath",
            set__shelves__1__label="c",
            set__notes__first__label="y",
            unset__title=True,
        )
        (event,) = await take(stream, 1)
    assert event.update_description == UpdateDescription(
        updated_fields={
            "tags.1": "classic",
            "publisher.city": "Bath",
            "shelves.1.label": "c",
            "notes.first.label": "y",
        },
        removed_fields=["title"],
        truncated_arrays={},
    )
    assert event.document.publisher.city == "Bath"
    assert event.document.notes["first"].label == "y"


async def test_truncated_arrays_are_named_by_attribute(async_alias: str) -> None:
    book = await CsBook(tags=["a", "b", "c", "d"]).async_save()
    collection = await CsBook._async_get_collection()
    async with CsBook.async_watch() as stream:
        await collection.update_one(
            {"_id": book.pk}, [{"$set": {"tg": {"$slice": ["$tg", 2]}}}]
        )
        (event,) = await take(stream, 1)
    assert event.raw["updateDescription"]["truncatedArrays"] == [
        {"field": "tg", "newSize": 2}
    ]
    assert event.update_description == UpdateDescription(
        updated_fields={}, removed_fields=[], truncated_arrays={"tags": 2}
    )


async def test_update_description_names_the_fields_of_embedded_subclasses(
    async_alias: str,
) -> None:
    """An embedded document of a subclass (of the declared class, or held by
    a GenericEmbeddedDocumentField) names its own fields by attribute."""
    crate = await CsCrate(
        piece=CsCog(label="a", teeth=1),
        pieces=[CsPiece(label="b"), CsCog(label="c", teeth=2)],
        anything=CsCog(label="d", teeth=3),
    ).async_save()
    async with CsCrate.async_watch() as stream:
        crate.piece.teeth = 10
        crate.pieces[1].teeth = 20
        crate.anything.teeth = 30
        crate.anything.label = None
        await crate.async_save()
        (event,) = await take(stream, 1)
    assert event.raw["updateDescription"]["updatedFields"] == {
        "pc.tt": 10,
        "pcs.1.tt": 20,
        "an.tt": 30,
    }
    assert event.update_description == UpdateDescription(
        updated_fields={"piece.teeth": 10, "pieces.1.teeth": 20, "anything.teeth": 30},
        removed_fields=["anything.label"],
        truncated_arrays={},
    )


async def test_full_document_none_gives_updates_without_documents(
    async_alias: str,
) -> None:
    book = await CsBook(title="Persuasion").async_save()
    async with CsBook.async_watch(full_document=None) as stream:
        await CsBook.objects(id=book.pk).async_update(set__pages=249)
        (event,) = await take(stream, 1)
    assert event.document is None
    assert event.update_description.updated_fields == {"pages": 249}


async def with_pre_images(document: type[Document]) -> None:
    """Have the server keep the pre-images of ``document``'s collection."""
    collection = await document._async_get_collection()
    await collection.database.command(
        "collMod", collection.name, changeStreamPreAndPostImages={"enabled": True}
    )


async def test_the_document_before_the_change_loads_as_the_model(
    async_alias: str,
) -> None:
    book = await CsBook(
        title="Draft", pages=10, publisher=CsPublisher(city="Oslo")
    ).async_save()
    await with_pre_images(CsBook)
    async with CsBook.async_watch(full_document_before_change="required") as stream:
        book.title = "Final"
        await book.async_save()
        await book.async_delete()
        inserted = await CsBook(title="New").async_save()
        updated, deleted, insert = await take(stream, 3)
    before = updated.document_before_change
    assert isinstance(before, CsBook)
    assert (before.pk, before.title, before.pages) == (book.pk, "Draft", 10)
    assert before.publisher.city == "Oslo"
    assert updated.update_description.updated_fields == {"title": "Final"}
    assert updated.document is None  # looked up when read: deleted since
    assert deleted.document is None
    assert isinstance(deleted.document_before_change, CsBook)
    assert deleted.document_before_change.title == "Final"
    assert (insert.pk, insert.document_before_change) == (inserted.pk, None)


async def test_without_pre_images_an_event_has_no_document_before(
    async_alias: str,
) -> None:
    book = await CsBook(title="Draft").async_save()
    async with CsBook.async_watch() as stream:
        await CsBook.objects(id=book.pk).async_update(set__title="Final")
        (event,) = await take(stream, 1)
    assert "fullDocumentBeforeChange" not in event.raw
    assert event.document_before_change is None


async def test_a_subclass_s_document_before_names_its_fields(
    async_alias: str,
) -> None:
    """With no document after the change (full_document=None), the document
    before it is of the subclass and names the subclass's own fields."""
    gear = await CsGear(name="cog", teeth=8).async_save()
    await with_pre_images(CsPart)
    async with CsPart.async_watch(
        full_document=None, full_document_before_change="whenAvailable"
    ) as stream:
        await CsPart.objects(id=gear.pk).async_update(set__teeth=12)
        (event,) = await take(stream, 1)
    assert event.document is None
    assert type(event.document_before_change) is CsGear
    assert event.document_before_change.teeth == 8
    assert event.update_description.updated_fields == {"teeth": 12}


async def test_a_subclass_stream_takes_the_deletes_of_its_class_by_pre_image(
    async_alias: str,
) -> None:
    """A delete carrying the document before it tells its class: a subclass's
    stream gives only those of its class (and its documents are of it)."""
    box = await CsItem(name="box").async_save()
    saw = await CsTool(name="saw").async_save()
    await with_pre_images(CsItem)
    async with CsTool.async_watch(full_document_before_change="required") as stream:
        await box.async_delete()
        await saw.async_delete()
        hammer = await CsTool(name="hammer").async_save()
        events = await take(stream, 2)
    assert [(e.operation_type, e.pk) for e in events] == [
        ("delete", saw.pk),
        ("insert", hammer.pk),
    ]
    assert type(events[0].document_before_change) is CsTool


async def test_documents_of_subclasses_load_as_their_class(async_alias: str) -> None:
    async with CsItem.async_watch() as stream:
        await CsItem(name="box").async_save()
        await CsTool(name="saw").async_save()
        events = await take(stream, 2)
    assert [type(e.document) for e in events] == [CsItem, CsTool]


async def test_a_base_class_stream_names_a_subclass_s_fields(async_alias: str) -> None:
    gear = await CsGear(name="cog", teeth=8, shelves=[CsShelf(label="a")]).async_save()
    async with CsPart.async_watch() as stream:
        gear.name, gear.teeth = "big cog", 12
        gear.shelves[0].label = "b"
        await gear.async_save()
        (event,) = await take(stream, 1)
    assert type(event.document) is CsGear
    assert event.update_description.updated_fields == {
        "name": "big cog",
        "teeth": 12,
        "shelves.0.label": "b",
    }


async def test_init_receivers_connected_while_streaming_are_called(
    async_alias: str,
) -> None:
    seen: list[str] = []

    def receiver(sender: type, document: CsBook, **kwargs: Any) -> None:
        seen.append(document.title)

    async with CsBook.async_watch() as stream:
        await CsBook(title="before").async_save()
        await take(stream, 1)
        signals.post_init.connect(receiver, sender=CsBook)
        try:
            await CsBook(title="after").async_save()
            seen.clear()  # (the construction above sent post_init too)
            (event,) = await take(stream, 1)
        finally:
            signals.post_init.disconnect(receiver, sender=CsBook)
    assert seen == ["after"]
    assert event.document.title == "after"


# -- the filter ----------------------------------------------------------------------


async def test_a_field_filter_sees_full_documents_only(async_alias: str) -> None:
    thin = await CsBook(title="thin", pages=90).async_save()
    async with CsBook.objects(pages__gte=300).async_watch() as stream:
        thick = await CsBook(title="thick", pages=800).async_save()
        await CsBook(title="short", pages=20).async_save()  # never matches
        await CsBook.objects(id=thin.pk).async_update(set__pages=400)
        await thick.async_delete()  # a delete carries no document: not seen
        events = await take(stream, 2)
        await nothing_more_than_the_filter(stream)
    assert [(e.operation_type, e.pk) for e in events] == [
        ("insert", thick.pk),
        ("update", thin.pk),
    ]
    assert events[1].document.pages == 400


@pytest.mark.parametrize(
    "filter_",
    [
        {"title__ne": "archived"},
        {"title__nin": ["archived"]},
        {"publisher": None},
        {"pages__exists": False},
        {"title__not__startswith": "arch"},
    ],
    ids=["ne", "nin", "None", "exists=False", "not"],
)
async def test_a_filter_a_missing_field_meets_sees_full_documents_only(
    async_alias: str, filter_: dict[str, Any]
) -> None:
    """Not the deletes, nor the updates of a document deleted since (which
    carry no document), of a document the filter never matched."""
    archived = CsBook(title="archived", pages=1, publisher=CsPublisher(city="Oslo"))
    await archived.async_save()
    async with CsBook.objects(**filter_).async_watch() as stream:
        archived.pages = 3
        await archived.async_save()
        await archived.async_delete()
        marker = await CsBook(title="marker").async_save()
        (event,) = await take(stream, 1)
    assert (event.operation_type, event.pk) == ("insert", marker.pk)


@pytest.mark.parametrize(
    "filter_",
    [
        Q(__raw__={"$comment": "the feed"}),
        Q(__raw__={"$and": [{"$comment": "a"}, {"$comment": "b"}]}),
        Q(__raw__={"$or": [{"$comment": "a"}, {"p": 1}]}),
    ],
    ids=["comment", "and", "or"],
)
async def test_a_filter_on_no_field_gives_every_event_as_no_filter(
    async_alias: str, filter_: Q
) -> None:
    """A filter matching every document sees the deletes too (it required a
    full document, as a filter on fields does, and lost them)."""
    assert CsBook.objects(filter_).async_watch().pipeline() == []
    assert (
        CsTool.objects(filter_).async_watch().pipeline()
        == CsTool.async_watch().pipeline()
    )
    async with CsBook.objects(filter_).async_watch() as stream:
        book = await CsBook(title="Emma").async_save()
        await CsBook.objects(id=book.pk).async_update(set__pages=5)
        await book.async_delete()
        events = await take(stream, 3)
    assert [(e.operation_type, e.pk) for e in events] == [
        ("insert", book.pk),
        ("update", book.pk),
        ("delete", book.pk),
    ]


async def test_an_empty_and_is_refused_by_the_server_as_by_a_find(
    async_alias: str,
) -> None:
    """``$and: []`` names no field but is no filter on no field: the server
    refuses it (it was left out of the $match, giving every event)."""
    empty = CsBook.objects(__raw__={"$and": []})
    with pytest.raises(OperationFailure) as found:
        await empty.async_count()
    with pytest.raises(OperationFailure) as watched:
        async with empty.async_watch():
            pass
    assert watched.value.code == found.value.code == 2
    assert "$and" in str(watched.value)


async def test_a_filter_on_the_id_with_a_comment_clause_sees_its_delete(
    async_alias: str,
) -> None:
    """A clause holding only ``$comment`` in an ``$and`` leaves a filter on
    the id one (it required a full document, and lost the delete)."""
    book = await CsBook(title="Emma").async_save()
    other = await CsBook(title="other").async_save()
    filter_ = {"$and": [{"$comment": "feed"}, {"_id": book.pk}]}
    stream = CsBook.objects(__raw__=filter_).async_watch()
    assert stream.pipeline() == ending_or(
        {
            "documentKey": {"$ne": None},
            "$and": [{"$comment": "feed"}, {"documentKey._id": book.pk}],
        }
    )
    async with stream:
        await other.async_delete()
        await book.async_delete()
        (event,) = await take(stream, 1)
    assert (event.operation_type, event.pk) == ("delete", book.pk)


@pytest.mark.parametrize("pre_images", ["whenAvailable", "required"])
async def test_with_pre_images_a_filter_sees_documents_leaving_it(
    async_alias: str, pre_images: str
) -> None:
    """With pre-images, the filter matches the document before the change
    too: an update moving a document out of it and the delete of a document
    in it are seen, the changes of documents never in it are not."""
    thin = await CsBook(title="thin", pages=90).async_save()
    short = await CsBook(title="short", pages=20).async_save()
    big = await CsBook(title="big", pages=500).async_save()
    await with_pre_images(CsBook)
    stream = CsBook.objects(pages__gte=300).async_watch(
        full_document_before_change=pre_images
    )
    assert stream.pipeline() == ending_or(
        {
            "$or": [
                {"fullDocument": {"$ne": None}, "fullDocument.p": {"$gte": 300}},
                {
                    "fullDocumentBeforeChange": {"$ne": None},
                    "fullDocumentBeforeChange.p": {"$gte": 300},
                },
            ]
        }
    )
    async with stream:
        thick = await CsBook(title="thick", pages=800).async_save()
        await CsBook.objects(id=thin.pk).async_update(set__pages=400)  # in
        await CsBook.objects(id=thick.pk).async_update(set__pages=10)  # out
        await CsBook.objects(id=short.pk).async_update(set__pages=30)  # never in
        await big.async_delete()  # was in
        await short.async_delete()  # never in
        events = await take(stream, 4)
        await nothing_more_than_the_filter(stream)
    assert [(e.operation_type, e.pk) for e in events] == [
        ("insert", thick.pk),
        ("update", thin.pk),
        ("update", thick.pk),
        ("delete", big.pk),
    ]
    left = events[2]
    assert (left.document.pages, left.document_before_change.pages) == (10, 800)
    assert (events[3].document, events[3].document_before_change.pages) == (None, 500)


async def nothing_more_than_the_filter(stream: ChangeStream[Any]) -> None:
    """The next matching event is a marker written last (pages=1000)."""
    marker = await CsBook(title="marker", pages=1000).async_save()
    (event,) = await take(stream, 1)
    assert (event.operation_type, event.pk) == ("insert", marker.pk)


async def test_a_filter_on_the_id_sees_every_event_of_that_document(
    async_alias: str,
) -> None:
    watched, other = ObjectId(), ObjectId()
    stream = CsBook.objects(id__in=[watched]).async_watch()
    assert stream.pipeline() == ending_or(
        {"documentKey": {"$ne": None}, "documentKey._id": {"$in": [watched]}}
    )
    async with stream:
        await CsBook(id=other, title="other").async_save()
        book = await CsBook(id=watched, title="watched").async_save()
        await CsBook.objects(id=other).async_update(set__pages=1)
        await CsBook.objects(id=watched).async_update(set__pages=2)
        await book.async_delete()
        events = await take(stream, 3)
    assert [(e.operation_type, e.pk) for e in events] == [
        ("insert", watched),
        ("update", watched),
        ("delete", watched),
    ]


async def test_a_filter_on_ids_by_q_objects_sees_their_deletes(
    async_alias: str,
) -> None:
    """A filter only on the id spelled with Q objects (``$or`` of ids) is a
    filter on the id too: it matches documentKey, deletes included."""
    watched, also, other = ObjectId(), ObjectId(), ObjectId()
    queryset = CsBook.objects(Q(id=watched) | Q(id=also))
    stream = queryset.async_watch()
    assert stream.pipeline() == ending_or(
        {
            "documentKey": {"$ne": None},
            "$or": [{"documentKey._id": watched}, {"documentKey._id": also}],
        }
    )
    mixed = CsBook.objects(Q(id=watched) | Q(pages=1)).async_watch().pipeline()
    assert mixed[0]["$match"]["$or"][1]["fullDocument"] == {"$ne": None}
    async with stream:
        await CsBook(id=other, title="other").async_save()
        book = await CsBook(id=watched, title="watched").async_save()
        await CsBook.objects(id=other).async_delete()
        await book.async_delete()
        events = await take(stream, 2)
    assert [(e.operation_type, e.pk) for e in events] == [
        ("insert", watched),
        ("delete", watched),
    ]


async def test_the_filter_is_mongoengines_query(async_alias: str) -> None:
    stream = CsBook.objects(title__startswith="Du", publisher__city="Paris")
    assert stream.async_watch().pipeline() == ending_or(
        {
            "fullDocument": {"$ne": None},
            "fullDocument.t": re.compile("^Du"),
            "fullDocument.pub.c": "Paris",
        }
    )
    either = CsBook.objects(Q(title="a") | Q(pages=1))
    assert either.async_watch().pipeline() == ending_or(
        {
            "fullDocument": {"$ne": None},
            "$or": [{"fullDocument.t": "a"}, {"fullDocument.p": 1}],
        }
    )
    assert CsBook.async_watch().pipeline() == []
    assert CsTool.async_watch().pipeline() == ending_or(
        {
            "$or": [
                {"fullDocument._cls": "CsItem.CsTool"},
                {
                    "fullDocument": None,
                    "$or": [
                        {"fullDocumentBeforeChange": None},
                        {"fullDocumentBeforeChange._cls": "CsItem.CsTool"},
                    ],
                },
            ]
        }
    )


async def test_filters_a_stream_cannot_apply_are_refused(async_alias: str) -> None:
    with pytest.raises(InvalidQueryError) as error:
        CsBook.objects(__raw__={"$where": "true"}).async_watch().pipeline()
    assert str(error.value) == (
        "a change stream cannot filter with $where: its $match sees change "
        "events, not documents (filter on fields instead)"
    )
    with pytest.raises(InvalidQueryError) as error:
        CsBook.objects.limit(3).async_watch()
    assert str(error.value) == (
        "a change stream cannot apply skip() or limit(): it has no end"
    )


NEAR_REFUSED = (
    "a change stream cannot filter with {}: it orders documents by distance, "
    "which a $match cannot (filter with geo_within_sphere or geo_within_center "
    "instead)"
)


@pytest.mark.parametrize(
    ("query", "operator"),
    [
        ({"point__near": [1, 2]}, "$near"),
        ({"point__near": [1, 2], "point__max_distance": 10}, "$near"),
        ({"spot__near_sphere": [1, 2]}, "$nearSphere"),
        ({"q_obj": Q(name="a") | Q(point__near=[1, 2])}, "$near"),
    ],
)
async def test_near_is_refused_before_the_server_refuses_it(
    async_alias: str, query: dict[str, Any], operator: str
) -> None:
    with pytest.raises(InvalidQueryError) as error:
        async with CsPlace.objects(**query).async_watch():
            pass
    assert str(error.value) == NEAR_REFUSED.format(operator)


async def test_a_stream_filters_by_geo_within(async_alias: str) -> None:
    await CsPlace._async_get_collection()
    near = CsPlace.objects(point__geo_within_sphere=[[1, 2], 0.01])
    async with near.async_watch() as stream:
        await CsPlace(name="far", point=[50, 50]).async_save()
        await CsPlace(name="near", point=[1, 2]).async_save()
        (event,) = await take(stream, 1)
    assert event.document.name == "near"


async def test_where_is_refused_as_a_raw_where(async_alias: str) -> None:
    with pytest.raises(InvalidQueryError) as error:
        CsBook.objects.where("this.pages > 100").async_watch().pipeline()
    assert str(error.value) == (
        "a change stream cannot filter with $where: its $match sees change "
        "events, not documents (filter on fields instead)"
    )


async def test_collation_is_refused(async_alias: str) -> None:
    """The server matches a stream's events without the collation it is given."""
    with pytest.raises(InvalidQueryError) as error:
        CsBook.objects.collation({"locale": "en", "strength": 2}).async_watch()
    assert str(error.value) == (
        "a change stream cannot apply collation(): the server matches change "
        "events by simple binary comparison, whatever collation is given"
    )


async def test_max_time_ms_and_hint_are_refused(async_alias: str) -> None:
    """A query's time limit and index hint have no meaning for a stream."""
    with pytest.raises(InvalidQueryError) as error:
        CsBook.objects.max_time_ms(500).async_watch()
    assert str(error.value) == (
        "a change stream cannot apply max_time_ms(): it has no end "
        "(max_await_time_ms= bounds each wait for events)"
    )
    with pytest.raises(InvalidQueryError) as error:
        CsBook.objects.hint([("t", 1)]).async_watch()
    assert str(error.value) == (
        "a change stream cannot apply hint(): it reads the oplog, "
        "where the collection's indexes do not apply"
    )


async def test_result_shapes_are_refused(async_alias: str) -> None:
    """A stream gives each event's whole document; a queryset asking for
    raw dicts, scalars or some fields is refused, not silently ignored."""
    shaped = [
        CsBook.objects.as_pymongo(),
        CsBook.objects.scalar("title"),
        CsBook.objects.values_list("title"),
        CsBook.objects.only("title"),
        CsBook.objects.exclude("title"),
    ]
    for queryset in shaped:
        with pytest.raises(InvalidQueryError) as error:
            queryset.async_watch()
        assert str(error.value) == (
            "a change stream cannot apply as_pymongo(), scalar(), values_list(), "
            "only() or exclude(): each event carries the whole document "
            "(event.raw['fullDocument'] is the raw one)"
        )
    assert CsBook.objects.only("title").all_fields().async_watch().pipeline() == []


def sent(command_log: CommandLog, name: str) -> dict[str, Any]:
    """The first command ``name`` the log holds."""
    return next(e.command for e in command_log.events if e.command_name == name)


async def test_the_queryset_s_read_settings_and_comment_reach_the_server(
    async_alias: str, command_log: CommandLog
) -> None:
    queryset = (
        CsBook.objects(pages=5)
        .read_preference(ReadPreference.SECONDARY_PREFERRED)
        .read_concern({"level": "majority"})
        .comment("the feed")
        .batch_size(7)
    )
    async with queryset.async_watch() as stream:
        book = await CsBook(title="read", pages=5).async_save()
        (event,) = await take(stream, 1)
    assert event.pk == book.pk
    aggregate, get_more = sent(command_log, "aggregate"), sent(command_log, "getMore")
    assert aggregate["$readPreference"] == {"mode": "secondaryPreferred"}
    assert aggregate["readConcern"] == {"level": "majority"}
    assert (aggregate["comment"], get_more["comment"]) == ("the feed", "the feed")
    assert (aggregate["cursor"], get_more["batchSize"]) == ({"batchSize": 7}, 7)


async def test_a_batch_size_given_to_async_watch_wins(
    async_alias: str, command_log: CommandLog
) -> None:
    async with CsBook.objects.batch_size(7).async_watch(batch_size=2):
        pass
    assert sent(command_log, "aggregate")["cursor"] == {"batchSize": 2}


async def test_none_lets_no_event_through(async_alias: str) -> None:
    """None but the collection's events that end every stream (see
    test_every_stream_ends_with_the_collection_s_event_and_invalidate)."""
    nothing = CsBook.objects(pages=1).none().async_watch(max_await_time_ms=50)
    assert nothing.pipeline() == [{"$match": ENDING}]
    async with CsBook.async_watch() as every, nothing:
        await CsBook(title="any", pages=1).async_save()
        await take(every, 1)  # the insert is in the oplog
        assert await nothing.try_next() is None
        assert await nothing.try_next() is None
        assert nothing.alive


async def test_a_stream_s_pipeline_is_its_own(async_alias: str) -> None:
    """A pipeline read from one stream and changed (to send it elsewhere)
    changes no other stream's."""
    nothing = CsBook.objects.none().async_watch().pipeline()
    nothing[0]["$match"]["operationType"]["$in"].append("insert")
    thick = CsBook.objects(pages__gte=300).async_watch().pipeline()
    thick[0]["$match"]["$or"][0]["operationType"]["$in"].append("delete")
    assert CsBook.objects.none().async_watch().pipeline() == [{"$match": ENDING}]
    assert CsBook.objects(pages__gte=300).async_watch().pipeline() == ending_or(
        {"fullDocument": {"$ne": None}, "fullDocument.p": {"$gte": 300}}
    )


async def test_a_pipeline_shares_no_value_with_its_queryset_or_itself(
    async_alias: str,
) -> None:
    """Changing a value in a pipeline read from a stream changes neither the
    queryset's filter (a ``__raw__`` one was the same dict) nor, with
    pre-images, the filter on the other document (both were one dict)."""
    raw = CsBook.objects(__raw__={"p": {"$gte": 300}})
    changed = raw.async_watch().pipeline()
    changed[0]["$match"]["$or"][1]["fullDocument.p"]["$gte"] = 1
    assert raw._query == {"p": {"$gte": 300}}
    assert raw.async_watch().pipeline() == ending_or(
        {"fullDocument": {"$ne": None}, "fullDocument.p": {"$gte": 300}}
    )
    both = CsBook.objects(pages__gte=300).async_watch(
        full_document_before_change="required"
    )
    changed = both.pipeline()
    after, before = changed[0]["$match"]["$or"][1]["$or"]
    after["fullDocument.p"]["$gte"] = 1
    assert before["fullDocumentBeforeChange.p"] == {"$gte": 300}


# -- resuming ------------------------------------------------------------------------


async def test_resume_after_a_token_and_start_after(async_alias: str) -> None:
    async with CsBook.async_watch() as stream:
        first = await CsBook(title="first").async_save()
        second = await CsBook(title="second").async_save()
        (event,) = await take(stream, 1)
    assert event.pk == first.pk
    third = await CsBook(title="third").async_save()
    async with CsBook.async_watch(resume_after=event.resume_token) as resumed:
        events = await take(resumed, 2)
    assert [e.document.title for e in events] == ["second", "third"]
    async with CsBook.async_watch(start_after=events[0].resume_token) as started:
        (after,) = await take(started, 1)
    assert after.pk == third.pk
    assert second.pk == events[0].pk


async def test_a_stream_not_opened_stands_where_it_was_given_to_start(
    async_alias: str,
) -> None:
    """Closed before it opened (a task cancelled early), a stream's
    resume_token is the one it was given: a new stream from it misses nothing."""
    async with CsBook.async_watch() as stream:
        await CsBook(title="first").async_save()
        (first,) = await take(stream, 1)
    await CsBook(title="second").async_save()
    for given in (
        {"resume_after": first.resume_token},
        {"start_after": first.resume_token},
    ):
        unopened = CsBook.async_watch(**given)
        await unopened.aclose()
        assert unopened.resume_token == first.resume_token
        async with CsBook.async_watch(resume_after=unopened.resume_token) as again:
            (event,) = await take(again, 1)
        assert event.document.title == "second"
    assert CsBook.async_watch().resume_token is None


def watched_books(kind: str, pk: ObjectId) -> ChangeStream[Any]:
    """A stream of CsBook, unfiltered or filtered in each way a $match is made."""
    if kind == "unfiltered":
        return CsBook.async_watch()
    if kind == "by id":
        return CsBook.objects(id=pk).async_watch()
    if kind == "by field":
        return CsBook.objects(pages__gte=5).async_watch()
    return CsBook.objects.none().async_watch()


async def rename_collection(document: type[Document]) -> None:
    """Rename the collection of ``document`` (to ``<name>_renamed``)."""
    collection = await document._async_get_collection()
    await collection.rename(collection.name + "_renamed")


@pytest.mark.parametrize("kind", ["unfiltered", "by id", "by field", "none"])
@pytest.mark.parametrize("ending", ["drop", "rename"])
async def test_every_stream_ends_with_the_collection_s_event_and_invalidate(
    async_alias: str, kind: str, ending: str
) -> None:
    """A dropped or renamed collection ends a stream, whatever its filter, as
    PyMongo's unfiltered stream ends: with that event, then ``invalidate``;
    ``async for`` then stops and the stream is no longer alive."""
    book = await CsBook(title="kept", pages=6).async_save()
    async with watched_books(kind, book.pk) as stream:
        if ending == "drop":
            await CsBook.async_drop_collection()
        else:
            await rename_collection(CsBook)
        events = await every_event(stream)
        assert not stream.alive
    assert [(e.operation_type, e.document, e.pk) for e in events] == [
        (ending, None, None),
        ("invalidate", None, None),
    ]
    assert events[0].raw["ns"]["coll"] == CsBook._get_collection_name()


async def test_a_subclass_stream_ends_with_its_collection_s_events(
    async_alias: str,
) -> None:
    async with CsTool.objects(name="saw").async_watch() as stream:
        await CsItem.async_drop_collection()
        events = await every_event(stream)
    assert [e.operation_type for e in events] == ["drop", "invalidate"]


async def test_an_invalidated_stream_goes_on_with_start_after(
    async_alias: str,
) -> None:
    """A filtered stream ends with an invalidate event when its collection is
    dropped; its token starts a new stream with start_after= only."""
    async with CsBook.objects(pages__gte=5).async_watch() as stream:
        await CsBook(title="kept", pages=6).async_save()
        await take(stream, 1)
        await CsBook.async_drop_collection()
        ending = await take(stream, 3)
        assert [e.operation_type for e in ending] == ["drop", "invalidate"]
        assert not stream.alive
        assert stream.resume_token == ending[-1].resume_token
    await CsBook(title="new", pages=7).async_save()
    with pytest.raises(OperationFailure):
        async with CsBook.async_watch(resume_after=stream.resume_token):
            pass
    async with CsBook.async_watch(start_after=stream.resume_token) as again:
        (event,) = await take(again, 1)
    assert event.document.title == "new"


async def test_start_at_operation_time(async_alias: str) -> None:
    await CsBook(title="before").async_save()
    before = (await get_async_db().command("ping"))["operationTime"]
    since = Timestamp(before.time, before.inc + 1)  # the stream starts there
    await CsBook(title="after").async_save()
    async with CsBook.async_watch(start_at_operation_time=since) as stream:
        (event,) = await take(stream, 1)
    assert event.document.title == "after"


# -- where the stream runs -----------------------------------------------------------


async def test_switch_db_using_and_switch_collection(
    async_alias: str, mongodb_uri: str
) -> None:
    async with fresh_database("cs_other", mongodb_uri):
        async with async_switch_db(CsBook, "cs_other"):
            other_db = CsBook.async_watch()
        async with async_switch_collection(CsBook, "cs_archive"):
            archive = CsBook.objects(pages=1).async_watch()
        using = CsBook.objects.using("cs_other").filter(pages=2).async_watch()
        async with other_db, archive, using:
            await CsBook(title="default", pages=1).async_save()
            async with async_switch_db(CsBook, "cs_other"):
                await CsBook(title="other 1", pages=1).async_save()
                await CsBook(title="other 2", pages=2).async_save()
            async with async_switch_collection(CsBook, "cs_archive"):
                await CsBook(title="archived", pages=1).async_save()
            on_other = await take(other_db, 2)
            (on_archive,) = await take(archive, 1)
            (on_using,) = await take(using, 1)
        other_name = get_async_db("cs_other").name
    assert [e.document.title for e in on_other] == ["other 1", "other 2"]
    assert {e.raw["ns"]["db"] for e in on_other} == {other_name}
    assert on_archive.document.title == "archived"
    assert on_archive.raw["ns"]["coll"] == "cs_archive"
    assert (on_using.document.title, on_using.raw["ns"]["db"]) == (
        "other 2",
        other_name,
    )


async def test_an_explicit_session_is_used(
    async_alias: str, command_log: CommandLog
) -> None:
    async with get_async_connection().start_session() as session:
        async with CsBook.async_watch(session=session):
            pass
        session_id = session.session_id
    (aggregate,) = [e for e in command_log.events if e.command_name == "aggregate"]
    assert aggregate.command["lsid"] == session_id


async def test_a_session_of_another_client_is_refused(
    async_alias: str, mongodb_uri: str
) -> None:
    async with fresh_database("cs_foreign", mongodb_uri):
        other = get_async_connection("cs_foreign")
        async with other.start_session() as session:
            with pytest.raises(ForeignSessionError):
                async with CsBook.async_watch(session=session):
                    pass


IN_TRANSACTION = (
    "a change stream cannot send its {} with a session in a transaction: the "
    "server refuses it there and aborts the transaction (give the stream a "
    "session outside any transaction, or none)"
)


async def test_a_session_in_a_transaction_is_refused_and_the_transaction_kept(
    async_alias: str, command_log: CommandLog
) -> None:
    """The server would refuse the stream and abort the transaction, losing
    the writes made in it before."""
    await CsBook._async_get_collection()  # created outside the transaction
    async with get_async_connection().start_session() as session:
        await session.start_transaction()
        before = await CsBook(title="before").async_save(session=session)
        with pytest.raises(InvalidOperation) as error:
            async with CsBook.async_watch(session=session):
                pass
        after = await CsBook(title="after").async_save(session=session)
        await session.commit_transaction()
    assert str(error.value) == IN_TRANSACTION.format("aggregate")
    assert opened_streams(command_log) == 0
    stored = {book.pk async for book in CsBook.objects}
    assert stored == {before.pk, after.pk}


async def test_a_stream_whose_session_starts_a_transaction_keeps_it(
    async_alias: str, command_log: CommandLog
) -> None:
    """The stream's getMore in its session's transaction would be refused
    and abort it; it is refused before it is sent, and leaving the stream
    (killCursors) keeps the transaction too."""
    await CsBook._async_get_collection()
    async with get_async_connection().start_session() as session:
        async with CsBook.async_watch(session=session) as stream:
            await session.start_transaction()
            book = await CsBook(title="in the transaction").async_save(session=session)
            with pytest.raises(InvalidOperation) as error:
                await stream.try_next()
            with pytest.raises(InvalidOperation):
                await anext(aiter(stream))
        await session.commit_transaction()
    assert str(error.value) == IN_TRANSACTION.format("getMore")
    assert [e.command_name for e in command_log.events].count("getMore") == 0
    assert [b.pk async for b in CsBook.objects] == [book.pk]


async def test_a_stream_opened_in_a_transaction_runs_outside_it(
    async_alias: str,
) -> None:
    """The server refuses $changeStream in a transaction: the bound one is
    not joined, and the stream sees the transaction's writes once committed."""
    await CsBook._async_get_collection()  # created outside the transaction
    async with contextlib.AsyncExitStack() as stack:
        async with async_run_in_transaction():
            stream = await stack.enter_async_context(CsBook.async_watch())
            book = await CsBook(title="in the transaction").async_save()
        (event,) = await take(stream, 1)
    assert (event.operation_type, event.pk) == ("insert", book.pk)


async def test_a_sync_alias_is_refused(sync_default: Any) -> None:
    with pytest.raises(AsyncUsageError) as error:
        CsItem.objects.async_watch()
    assert str(error.value) == (
        "CsItem.objects.async_watch() needs an async alias but 'default' was "
        "registered with connect(); use Model._get_collection().watch() instead, "
        "or connect_async(alias='default')"
    )


async def test_an_abstract_class_is_refused_as_by_drop_collection(
    async_alias: str,
) -> None:
    """As MongoEngine's (and our) drop_collection() of a class with no
    collection, not a KeyError of its meta."""

    class CsAbstract(Document):
        meta = {"abstract": True}

    with pytest.raises(OperationError) as error:
        CsAbstract.async_watch()
    assert str(error.value) == (
        f"Document {CsAbstract} has no collection defined (is it abstract ?)"
    )


async def test_a_sync_alias_is_refused_before_any_command(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    """Model.async_watch() refuses at once: not after creating the class's
    indexes with the sync client (blocking the event loop, or raising its
    ServerSelectionTimeoutError when the server is out of reach)."""
    with pytest.raises(AsyncUsageError) as error:
        CsIndexed.async_watch()
    assert str(error.value) == (
        "CsIndexed.async_watch() needs an async alias but 'default' was "
        "registered with connect(); use Model._get_collection().watch() instead, "
        "or connect_async(alias='default')"
    )
    assert sync_command_log.names == []


# -- closing -------------------------------------------------------------------------


async def cursor_exists(cursor_id: int) -> bool:
    """Whether the server still holds cursor ``cursor_id`` (idle or in use)."""
    admin = get_async_connection().admin
    cursor = await admin.aggregate(
        [
            {"$currentOp": {"idleCursors": True, "allUsers": True}},
            {"$match": {"cursor.cursorId": cursor_id}},
        ]
    )
    return bool(await cursor.to_list(None))


async def cursor_gone(cursor_id: int) -> None:
    """Wait until the server no longer holds cursor ``cursor_id``."""

    async def wait() -> None:
        while await cursor_exists(cursor_id):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), WAIT_SECONDS)


def stream_cursor_id(command_log: CommandLog) -> int:
    """The id of the change stream's cursor, from its first getMore."""
    return next(
        e.command["getMore"] for e in command_log.events if e.command_name == "getMore"
    )


def killed(command_log: CommandLog) -> list[int]:
    """The cursor ids sent in killCursors commands."""
    return [
        cursor_id
        for event in command_log.events
        if event.command_name == "killCursors"
        for cursor_id in event.command["cursors"]
    ]


async def test_aclose_kills_the_cursor(
    async_alias: str, command_log: CommandLog
) -> None:
    stream = CsBook.async_watch()
    assert await stream.try_next() is None
    cursor_id = stream_cursor_id(command_log)
    assert await cursor_exists(cursor_id)
    await stream.aclose()
    assert killed(command_log) == [cursor_id]
    assert not await cursor_exists(cursor_id)
    assert [e async for e in stream] == []  # a closed stream has no more events


async def test_try_next_asks_nothing_once_another_task_left_async_for(
    async_alias: str, command_log: CommandLog
) -> None:
    """A task's ``break`` out of ``async for`` closes the stream for every
    task (once the loop lets its iterator go); another task's ``try_next()``
    then returns None at once, sending nothing (PyMongo's stream would be
    resumed on a new server cursor, read and closed)."""
    await CsBook._async_get_collection()
    stream = CsBook.async_watch()
    assert await stream.try_next() is None  # opened
    await CsBook(title="one").async_save()
    async for event in stream:
        assert event.document.title == "one"
        break
    await asyncio.wait_for(until(lambda: not stream.alive), WAIT_SECONDS)
    command_log.clear()
    assert await stream.try_next() is None
    assert command_log.names == []


def opened_streams(command_log: CommandLog) -> int:
    """How many change streams were opened (aggregate with $changeStream)."""
    return sum(
        1
        for e in command_log.events
        if e.command_name == "aggregate" and "$changeStream" in e.command["pipeline"][0]
    )


async def test_tasks_opening_one_stream_together_open_one_server_stream(
    async_alias: str, command_log: CommandLog
) -> None:
    """Tasks taking the first events of a stream not opened yet share one
    server-side stream: none is left open until garbage collection."""
    await CsBook._async_get_collection()
    stream = CsBook.async_watch()
    assert await asyncio.gather(*(stream.try_next() for _ in range(3))) == [None] * 3
    assert opened_streams(command_log) == 1
    one, two = CsBook(title="one"), CsBook(title="two")
    await one.async_save()
    await two.async_save()
    first, second = await asyncio.gather(take(stream, 1), take(stream, 1))
    assert {first[0].pk, second[0].pk} == {one.pk, two.pk}  # each event once
    cursor_id = stream_cursor_id(command_log)
    await stream.aclose()
    assert killed(command_log) == [cursor_id]


async def stream_cursors() -> set[int]:
    """The ids of the change stream cursors the server holds on CsBook's
    collection, idle or in a getMore."""
    admin = get_async_connection().admin
    namespace = f"{get_async_db().name}.{CsBook._get_collection_name()}"
    cursor = await admin.aggregate(
        [
            {"$currentOp": {"idleCursors": True, "allUsers": True}},
            {"$match": {"ns": namespace, "cursor.cursorId": {"$exists": True}}},
        ]
    )
    return {op["cursor"]["cursorId"] for op in await cursor.to_list(None)}


async def no_stream_cursor_left() -> None:
    """Wait until the server holds no change stream cursor of CsBook's."""

    async def wait() -> None:
        while await stream_cursors():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), WAIT_SECONDS)


async def test_aclose_from_another_task_ends_a_reader_in_a_get_more(
    async_alias: str, command_log: CommandLog
) -> None:
    """The reader's getMore fails (the server killed its cursor under it):
    its ``async for`` ends, as after any close, without that error."""
    await CsBook._async_get_collection()
    stream = CsBook.async_watch(max_await_time_ms=60_000)
    seen: list[ChangeEvent[Any]] = []
    reader = asyncio.create_task(iterate(stream, seen))

    async def in_a_get_more() -> None:
        while command_log.count("getMore") < 1 or not await stream_cursors():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(in_a_get_more(), WAIT_SECONDS)
    await stream.aclose()
    await asyncio.wait_for(reader, WAIT_SECONDS)  # ended, did not raise
    assert seen == []
    assert killed(command_log) == [stream_cursor_id(command_log)]
    await no_stream_cursor_left()


async def test_aclose_racing_a_reader_leaves_it_no_event_and_no_cursor(
    async_alias: str,
) -> None:
    """However far the reader's ``try_next()`` got (before its getMore, with it
    in flight, or the killCursors first: PyMongo then resumes on a new cursor),
    it returns None and the server keeps no cursor of the stream."""
    await CsBook._async_get_collection()
    for steps in range(12):
        stream = CsBook.async_watch(max_await_time_ms=300)
        assert await stream.try_next() is None  # opened
        reader = asyncio.create_task(stream.try_next())
        for _ in range(steps):
            await asyncio.sleep(0)
        await stream.aclose()
        assert await asyncio.wait_for(reader, WAIT_SECONDS) is None
        assert not stream.alive
        await no_stream_cursor_left()


async def test_a_stream_closed_before_it_opened_never_opens(
    async_alias: str, command_log: CommandLog
) -> None:
    """Closed before its first use, or while another task opens it."""
    await CsBook._async_get_collection()
    stream = CsBook.async_watch()
    await stream.aclose()
    assert not stream.alive
    assert await stream.try_next() is None
    async with stream:
        assert [e async for e in stream] == []
    assert opened_streams(command_log) == 0
    opening = CsBook.async_watch(max_await_time_ms=60_000)
    seen: list[ChangeEvent[Any]] = []
    reader = asyncio.create_task(iterate(opening, seen))
    await asyncio.sleep(0)  # the reader is opening the stream
    await opening.aclose()
    await CsBook(title="after closing").async_save()
    await asyncio.wait_for(reader, WAIT_SECONDS)
    assert seen == []
    assert opened_streams(command_log) == 1
    await no_stream_cursor_left()


async def test_a_closed_stream_gives_none_of_its_last_batch(async_alias: str) -> None:
    """PyMongo's closed stream still gives the events left in its last
    batch; a closed ChangeStream gives none."""
    await CsBook._async_get_collection()
    async with CsBook.async_watch() as stream:
        await CsBook.objects.async_insert([CsBook(title=str(n)) for n in range(3)])
        await take(stream, 1)
    assert await stream.try_next() is None


async def test_an_invalidated_or_closed_stream_is_not_alive(async_alias: str) -> None:
    """try_next() of a stream no longer alive returns None at once: a loop
    waiting for an event must test ``alive``."""
    await CsBook(title="dropped").async_save()  # a collection to drop
    stream = CsBook.async_watch()
    assert stream.alive  # not opened yet
    async with stream:
        await CsBook.async_drop_collection()
        events = await take(stream, 3)
        assert [e.operation_type for e in events] == ["drop", "invalidate"]
        assert not stream.alive
        assert await stream.try_next() is None
    closed = CsBook.async_watch()
    async with closed:
        assert closed.alive
    assert not closed.alive


async def test_leaving_async_with_kills_the_cursor(
    async_alias: str, command_log: CommandLog
) -> None:
    async with CsBook.async_watch() as stream:
        await CsBook(title="one").async_save()
        await take(stream, 1)
    cursor_id = stream_cursor_id(command_log)
    assert killed(command_log) == [cursor_id]
    assert not await cursor_exists(cursor_id)


async def test_break_kills_the_cursor(
    async_alias: str, command_log: CommandLog
) -> None:
    await CsBook._async_get_collection()
    feed = CsBook.async_watch()
    assert await feed.try_next() is None  # opened before the write
    await CsBook(title="one").async_save()
    async for event in feed:
        assert event.document.title == "one"
        break
    cursor_id = stream_cursor_id(command_log)
    await cursor_gone(cursor_id)  # the generator's finaliser closes it
    assert killed(command_log) == [cursor_id]


async def test_a_stream_let_go_unclosed_has_its_cursor_killed(
    async_alias: str, command_log: CommandLog
) -> None:
    """A stream dropped without aclose() (a local of a function that raised,
    or of a loop ending) has its cursor killed by the client's cleanup once
    unreferenced, as PyMongo's: nothing of it refers to itself, which would
    keep it (and its cursor, 10 minutes past a loop's end) until the cyclic
    garbage collector ran, here off."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        feed = CsBook.async_watch()
        assert await feed.try_next() is None  # opened
        del feed
        await cursor_gone(stream_cursor_id(command_log))
    finally:
        if collecting:
            gc.enable()


async def iterate(stream: ChangeStream[Any], seen: list[ChangeEvent[Any]]) -> None:
    """Collect the events of ``stream`` until cancelled."""
    async for event in stream:
        seen.append(event)


async def test_cancelling_the_task_kills_the_cursor(
    async_alias: str, command_log: CommandLog
) -> None:
    """The task is cancelled in a getMore the server holds (60 s of
    ``max_await_time_ms``, with no write to end it) begun after an event."""
    await CsBook._async_get_collection()
    seen: list[ChangeEvent[Any]] = []
    get_mores_at_event: list[int] = []  # getMores sent when each event came

    async def read() -> None:
        async for event in CsBook.async_watch(max_await_time_ms=60_000):
            seen.append(event)
            get_mores_at_event.append(command_log.count("getMore"))

    task = asyncio.create_task(read())

    async def get_mores_past(count: int) -> None:
        while command_log.count("getMore") <= count:
            await asyncio.sleep(0.01)

    async def an_event() -> None:
        while not seen:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(get_mores_past(0), WAIT_SECONDS)  # opened before the write
    await CsBook(title="one").async_save()
    await asyncio.wait_for(an_event(), WAIT_SECONDS)
    await asyncio.wait_for(get_mores_past(get_mores_at_event[0]), WAIT_SECONDS)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cursor_id = stream_cursor_id(command_log)
    assert killed(command_log) == [cursor_id]
    await cursor_gone(cursor_id)
    assert [e.document.title for e in seen] == ["one"]


# -- failover ------------------------------------------------------------------------


FAILOVER_INSERTS = 60


async def insert_until_acknowledged(pk: ObjectId, number: int) -> None:
    """Insert the book ``pk``, retrying through the election (a duplicate key
    means an earlier attempt was applied)."""

    async def insert() -> None:
        while True:
            try:
                await CsBook(id=pk, pages=number).async_save(force_insert=True)
                return
            except DuplicateKeyError:
                return
            except PyMongoError:
                await asyncio.sleep(0.1)

    await asyncio.wait_for(insert(), 90)


async def read_pages(stream: ChangeStream[Any], pages: list[int]) -> None:
    """Collect the page numbers of the inserted books until all are there."""
    async for event in stream:
        pages.append(event.document.pages)
        if len(pages) == FAILOVER_INSERTS:
            return


def stream_servers(log: CommandLog) -> list[str]:
    """The servers a change stream was opened on, PyMongo's resumes included."""
    return [
        "{}:{}".format(*event.connection_id)
        for event in log.events
        if event.command_name == "aggregate"
        and "$changeStream" in event.command["pipeline"][0]
    ]


async def test_no_event_is_lost_across_a_stepdown(replica_set_3: ReplicaSet) -> None:
    """The primary steps down (the stream's cursor stays on it, now a
    secondary), then that member is killed: PyMongo resumes the stream on
    another member, and every insert comes once, in order."""
    log = CommandLog()
    async with fresh_database(
        "default",
        replica_set_3.uri,
        w="majority",
        serverSelectionTimeoutMS=30_000,
        event_listeners=[log],
    ):
        await CsBook._async_get_collection()
        pages: list[int] = []
        async with CsBook.async_watch() as stream:
            reader = asyncio.create_task(read_pages(stream, pages))
            for number in range(FAILOVER_INSERTS):
                if number == FAILOVER_INSERTS // 3:
                    stepped = await asyncio.to_thread(replica_set_3.step_down)
                if number == 2 * FAILOVER_INSERTS // 3:
                    await asyncio.to_thread(replica_set_3.kill, stepped)
                await insert_until_acknowledged(ObjectId(), number)
            await asyncio.wait_for(reader, 90)
    assert pages == list(range(FAILOVER_INSERTS))  # none lost, none twice
    first, *resumed = stream_servers(log)
    assert first == stepped.host
    assert resumed, "the stream was never resumed"
    assert stepped.host not in resumed


async def test_a_resume_off_a_killed_member_leaves_the_client_quiet(
    replica_set_3: ReplicaSet, caplog: pytest.LogCaptureFixture
) -> None:
    """The member a stream reads from is killed and PyMongo resumes the stream
    on another: the cursor it replaced died with its server. The client sends
    it no kill (it would wait a server selection timeout for the dead member,
    holding up the client's background cleanup or its close, then log an
    error), and closes without a word right after."""
    caplog.set_level("ERROR", logger="pymongo")
    async with fresh_database(
        "default", replica_set_3.uri, w="majority", serverSelectionTimeoutMS=5_000
    ):
        await CsBook._async_get_collection()
        async with CsBook.async_watch(max_await_time_ms=100) as stream:
            await insert_until_acknowledged(ObjectId(), 1)
            events = await take(stream, 1)
            await asyncio.to_thread(replica_set_3.kill, replica_set_3.primary())
            await insert_until_acknowledged(ObjectId(), 2)
            events += await take(stream, 1)
        await disconnect_async()
    assert [event.document.pages for event in events] == [1, 2]
    assert [record.getMessage() for record in caplog.records] == []


class GetMores(monitoring.CommandListener):
    """Counts the getMore commands sent and those that failed."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed_count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent += event.command_name == "getMore"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to count."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failed_count += event.command_name == "getMore"


async def test_a_resume_cancelled_off_a_killed_member_leaves_the_client_quiet(
    replica_set_3: ReplicaSet, caplog: pytest.LogCaptureFixture
) -> None:
    """The member a stream reads from is killed under its getMore, and the
    task reading it is cancelled while PyMongo resumes the stream (waiting for
    the set to elect a new primary): the stream, left on the cursor that died
    with its server, closes without sending it a kill, and the client closes
    without a word right after."""
    caplog.set_level("ERROR", logger="pymongo")
    get_mores = GetMores()
    async with fresh_database(
        "default",
        replica_set_3.uri,
        w="majority",
        serverSelectionTimeoutMS=5_000,
        event_listeners=[get_mores],
    ):
        await CsBook._async_get_collection()
        async with CsBook.async_watch(max_await_time_ms=20_000) as stream:
            await insert_until_acknowledged(ObjectId(), 1)
            await take(stream, 1)
            sent = get_mores.sent
            reading = asyncio.create_task(take(stream, 1))
            await asyncio.wait_for(until(lambda: get_mores.sent > sent), WAIT_SECONDS)
            await asyncio.to_thread(replica_set_3.kill, replica_set_3.primary())
            # Its getMore failed: PyMongo resumes, waiting for a new primary.
            await asyncio.wait_for(
                until(lambda: get_mores.failed_count == 1), WAIT_SECONDS
            )
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            assert not stream.alive
        await disconnect_async()  # at once, as the set may still be electing
    assert [record.getMessage() for record in caplog.records] == []
