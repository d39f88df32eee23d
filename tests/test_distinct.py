"""``async_distinct`` gives what MongoEngine's ``distinct`` gives on a sync alias:
referenced documents loaded (one query per referenced collection), embedded
documents built, the stored values under ``no_dereference()``."""

from __future__ import annotations

from typing import Any

import pytest
from bson import DBRef, ObjectId
from mongoengine.errors import FieldDoesNotExist

from conftest import fresh_sync_default
from mongoengine_async import (
    DictField,
    Document,
    DynamicField,
    EmbeddedDocument,
    EmbeddedDocumentField,
    GenericEmbeddedDocumentField,
    GenericReferenceField,
    IntField,
    LazyReferenceField,
    ListField,
    MapField,
    ReferenceField,
    StringField,
    async_no_dereference,
    signals,
)
from mongoengine_async.testing import fresh_database


class DiAuthor(Document):
    name = StringField()


class DiTag(Document):
    name = StringField()


class DiPart(EmbeddedDocument):
    number = IntField()
    by = ReferenceField(DiAuthor, dbref=True)


class DiBook(Document):
    author = ReferenceField(DiAuthor)
    editor = ReferenceField(DiAuthor, dbref=True, db_field="ed")
    authors = ListField(ReferenceField(DiAuthor))
    anything = GenericReferenceField()
    lazy = LazyReferenceField(DiAuthor)
    part = EmbeddedDocumentField(DiPart)
    parts = ListField(EmbeddedDocumentField(DiPart))
    title = StringField()
    by_key = MapField(ReferenceField(DiAuthor))
    nested = ListField(ListField(ReferenceField(DiAuthor)))
    generic_part = GenericEmbeddedDocumentField()
    generic_parts = ListField(GenericEmbeddedDocumentField())


PATHS = [
    "author",
    "editor",
    "authors",
    "anything",
    "lazy",
    "part",
    "parts",
    "part.by",
    "parts.number",
    "title",
    "by_key",
    "nested",
    "generic_part",
    "generic_parts",
]


def books(ann: Any, bob: Any, tag: Any) -> list[Any]:
    gone = DiAuthor(id=ObjectId(), name="gone")  # never saved: a missing target
    return [
        DiBook(
            author=ann,
            editor=bob,
            authors=[ann, bob],
            anything=tag,
            lazy=ann,
            part=DiPart(number=1, by=ann),
            parts=[DiPart(number=2), DiPart(number=3, by=bob)],
            title="one",
            by_key={"first": ann, "second": bob},
            nested=[[ann], [bob, ann]],
            generic_part=DiPart(number=4),
            generic_parts=[DiPart(number=5), DiPart(number=6)],
        ),
        DiBook(
            author=gone,
            editor=gone,
            authors=[gone, ann],
            anything=bob,
            title="two",
            by_key={"first": gone},
            nested=[[gone]],
        ),
    ]


def described(value: Any) -> Any:
    """``value`` comparable across aliases: documents by class and name,
    embedded ones by their data, anything else by type and value."""
    if isinstance(value, DiPart):
        return ("DiPart", value.number, described(value.by))
    if isinstance(value, Document):
        return (type(value).__name__, value.name)
    if isinstance(value, DBRef):  # a proxy is one too
        return ("DBRef", value.collection)
    if isinstance(value, ObjectId):
        return "ObjectId"
    if isinstance(value, dict):
        return sorted((key, described(item)) for key, item in value.items())
    if isinstance(value, list):
        return [described(item) for item in value]
    return (type(value).__name__, value)


def listed(distinct: Any, path: str) -> Any:
    """MongoEngine's distinct values at ``path``, described and sorted; or
    the type of the error it raises there."""
    try:
        return sorted(map(repr, map(described, distinct(path))))
    except Exception as error:  # (MongoEngine's own bugs)
        return type(error).__name__


async def distinct_both_ways(mongodb_uri: str, command_log: Any) -> tuple:
    """Every path's distinct values and no_dereference() ones, MongoEngine's on
    a sync alias then ours on an async one; and our commands for one path."""
    with fresh_sync_default(mongodb_uri):
        ann, bob, tag = (
            DiAuthor(name="ann").save(),
            DiAuthor(name="bob").save(),
            DiTag(name="tag").save(),
        )
        for book in books(ann, bob, tag):
            book.save()
        theirs = {path: listed(DiBook.objects.distinct, path) for path in PATHS}
        raw_theirs = {
            path: listed(DiBook.objects.no_dereference().distinct, path)
            for path in PATHS
        }
    async with fresh_database("default", mongodb_uri, event_listeners=[command_log]):
        ann = await DiAuthor(name="ann").async_save()
        bob = await DiAuthor(name="bob").async_save()
        tag = await DiTag(name="tag").async_save()
        for book in books(ann, bob, tag):
            await book.async_save()
        ours, raw_ours = {}, {}
        for path in PATHS:
            values = await DiBook.objects.async_distinct(path)
            ours[path] = sorted(map(repr, map(described, values)))
            raw = await DiBook.objects.no_dereference().async_distinct(path)
            raw_ours[path] = sorted(map(repr, map(described, raw)))
        command_log.clear()
        await DiBook.objects.async_distinct("authors")
        names = command_log.names
    return theirs, ours, raw_theirs, raw_ours, names


async def test_distinct_values_are_mongoengine_s(
    mongodb_uri: str, command_log: Any
) -> None:
    theirs, ours, raw_theirs, raw_ours, names = await distinct_both_ways(
        mongodb_uri, command_log
    )
    # MongoEngine's DeReference fails on an embedded document holding a
    # DBRef (it takes the field for a class); ours builds it.
    assert (theirs.pop("part"), theirs.pop("parts")) == ("AttributeError",) * 2
    assert ours.pop("part") == [repr(("DiPart", 1, ("DiAuthor", "ann")))]
    assert ours.pop("parts") == [
        repr(("DiPart", 2, ("NoneType", None))),
        repr(("DiPart", 3, ("DiAuthor", "bob"))),
    ]
    # Per path, as MongoEngine's differ from one another.
    assert ours == theirs
    assert ours["authors"] == [
        repr(("DBRef", "di_author")),  # the missing target, as stored
        repr(("DiAuthor", "ann")),
        repr(("DiAuthor", "bob")),
    ]
    assert ours["anything"] == [repr(("DiAuthor", "bob")), repr(("DiTag", "tag"))]
    # Containers of references: loaded in the maps and inner lists too.
    assert ours["by_key"] == [
        repr([("first", ("DBRef", "di_author"))]),
        repr([("first", ("DiAuthor", "ann")), ("second", ("DiAuthor", "bob"))]),
    ]
    assert ours["nested"] == [
        repr([("DBRef", "di_author")]),
        repr([("DiAuthor", "ann")]),
        repr([("DiAuthor", "bob"), ("DiAuthor", "ann")]),
    ]
    # Generic embedded documents are built, as MongoEngine's DeReference does.
    assert ours["generic_part"] == [repr(("DiPart", 4, ("NoneType", None)))]
    assert ours["generic_parts"] == [
        repr(("DiPart", 5, ("NoneType", None))),
        repr(("DiPart", 6, ("NoneType", None))),
    ]
    assert ours["lazy"] == [repr("ObjectId")]  # lazy references stay ids
    assert raw_ours == raw_theirs
    assert raw_ours["author"] == [repr("ObjectId")] * 2
    # One distinct, one query for the referenced collection.
    assert names == ["distinct", "find"]


async def test_distinct_of_embedded_documents_stored_as_null(
    mongodb_uri: str,
) -> None:
    # MongoEngine's distinct fails there (it builds DiPart(**None)).
    async with fresh_database("default", mongodb_uri):
        await DiBook(part=DiPart(number=1), parts=[DiPart(number=2)]).async_save()
        collection = await DiBook._async_get_collection()
        await collection.insert_one({"part": None, "parts": [None]})
        parts = await DiBook.objects.async_distinct("part")
        assert [described(part) for part in parts] == [
            ("NoneType", None),
            ("DiPart", 1, ("NoneType", None)),
        ]
        parts = await DiBook.objects.async_distinct("parts")
        assert [described(part) for part in parts] == [
            ("NoneType", None),
            ("DiPart", 2, ("NoneType", None)),
        ]


async def test_distinct_inside_async_no_dereference(
    mongodb_uri: str, command_log: Any
) -> None:
    # As MongoEngine's distinct inside no_dereference(cls): the stored values.
    async with fresh_database("default", mongodb_uri, event_listeners=[command_log]):
        ann = await DiAuthor(name="ann").async_save()
        bob = await DiAuthor(name="bob").async_save()
        tag = await DiTag(name="tag").async_save()
        for book in books(ann, bob, tag):
            await book.async_save()
        raw = {}
        for path in PATHS:
            values = await DiBook.objects.no_dereference().async_distinct(path)
            raw[path] = sorted(map(repr, map(described, values)))
        command_log.clear()
        async with async_no_dereference(DiBook):
            for path in PATHS:
                values = await DiBook.objects.async_distinct(path)
                assert sorted(map(repr, map(described, values))) == raw[path], path
        assert set(command_log.names) == {"distinct"}


class DiPiece(EmbeddedDocument):
    number = IntField()
    meta = {"allow_inheritance": True}


class DiPieceSub(DiPiece):
    extra = IntField()


class DiLegacy(Document):
    pieces = MapField(EmbeddedDocumentField(DiPiece))
    anything = GenericEmbeddedDocumentField()


# As an older MongoEngine stored a subclass's _cls: its dotted path.
LEGACY = [
    {"pieces": {"a": {"_cls": "DiPiece.DiPieceSub", "number": 1, "extra": 2}}},
    {"pieces": {"a": {"_cls": "DiPiece", "number": 3}}},
    {"anything": {"_cls": "DiPiece.DiPieceSub", "number": 4}},
]


def legacy_described(value: Any) -> Any:
    if isinstance(value, DiPiece):
        return (type(value).__name__, value.number)
    if isinstance(value, dict):
        return sorted((key, legacy_described(item)) for key, item in value.items())
    return value


async def test_distinct_of_embedded_documents_with_an_old_style_cls(
    mongodb_uri: str,
) -> None:
    """A stored ``_cls`` of an older MongoEngine (``DiPiece.DiPieceSub``),
    which its get_document still resolves: MongoEngine's distinct builds the
    subclass's document, ours left the stored dict in a map or a generic
    embedded field."""
    theirs = {}
    with fresh_sync_default(mongodb_uri):
        DiLegacy._get_collection().insert_many([dict(raw) for raw in LEGACY])
        for path in ("pieces", "pieces.a", "anything"):
            values = DiLegacy.objects.distinct(path)
            theirs[path] = sorted(map(repr, map(legacy_described, values)))
    async with fresh_database("default", mongodb_uri):
        collection = await DiLegacy._async_get_collection()
        await collection.insert_many([dict(raw) for raw in LEGACY])
        for path, expected in theirs.items():
            values = await DiLegacy.objects.async_distinct(path)
            assert sorted(map(repr, map(legacy_described, values))) == expected
    assert theirs["pieces.a"] == [repr(("DiPiece", 3)), repr(("DiPieceSub", 1))]
    assert theirs["anything"] == [repr(("DiPieceSub", 4))]


class DiPlainPart(EmbeddedDocument):
    number = IntField()


class DiRenamedPart(Document):
    part = EmbeddedDocumentField(DiPlainPart, db_field="p")


async def test_distinct_of_an_embedded_document_field_stored_renamed(
    mongodb_uri: str,
) -> None:
    """Over an ``EmbeddedDocumentField`` with a ``db_field`` of its own,
    MongoEngine's ``distinct`` gives the stored dicts (it looks the field up
    by its stored name, which no field has); ours builds the embedded
    documents, as for any other such field (docs/querysets.md)."""
    with fresh_sync_default(mongodb_uri):
        DiRenamedPart(part=DiPlainPart(number=1)).save()
        theirs = DiRenamedPart.objects.distinct("part")
    assert [(type(value).__name__, dict(value)) for value in theirs] == [
        ("BaseDict", {"number": 1})
    ]
    async with fresh_database("default", mongodb_uri):
        await DiRenamedPart(part=DiPlainPart(number=1)).async_save()
        ours = await DiRenamedPart.objects.async_distinct("part")
    assert [(type(value), value.number, value._created) for value in ours] == [
        (DiPlainPart, 1, True)
    ]


class DiHolder(Document):
    labels = MapField(StringField())
    parts = DictField(EmbeddedDocumentField(DiPlainPart))
    loose = DictField()
    grid = ListField(ListField(IntField()))
    by_key = MapField(ReferenceField(DiAuthor))


HOLDER_PATHS = ["labels", "parts", "loose", "grid", "loose.a.b", "by_key"]


def shape(value: Any) -> Any:
    """``value``'s containers by type and ``_name`` (the path MongoEngine's
    tracked ones carry), down to the leaves' types."""
    if isinstance(value, dict):
        items = {key: shape(item) for key, item in value.items()}
        return (type(value).__name__, getattr(value, "_name", None), items)
    if isinstance(value, list):
        items = [shape(item) for item in value]
        return (type(value).__name__, getattr(value, "_name", None), items)
    return type(value).__name__


async def test_distinct_containers_are_mongoengine_s(mongodb_uri: str) -> None:
    """Over a MapField, a DictField (of embedded documents or untyped) and a
    list of lists, MongoEngine's ``distinct`` gives a ``BaseList`` of
    ``BaseDict``/``BaseList`` named by their path, down to the dicts inside;
    ours gave plain lists and dicts. No result of a map of references stays
    a plain list there."""

    def holder() -> Any:
        loose = {"a": {"b": [{"c": 1}]}, "z": {}}
        parts = {"k": DiPlainPart(number=2)}
        return DiHolder(labels={"a": "x"}, parts=parts, loose=loose, grid=[[1], []])

    with fresh_sync_default(mongodb_uri):
        holder().save()
        theirs = {path: shape(DiHolder.objects.distinct(path)) for path in HOLDER_PATHS}
        theirs["none"] = shape(DiHolder.objects(labels={}).distinct("by_key"))
    async with fresh_database("default", mongodb_uri):
        await holder().async_save()
        ours = {
            path: shape(await DiHolder.objects.async_distinct(path))
            for path in HOLDER_PATHS
        }
        ours["none"] = shape(await DiHolder.objects(labels={}).async_distinct("by_key"))
    assert ours == theirs
    assert theirs["labels"] == (
        "BaseList",
        "labels",
        [("BaseDict", "labels.0", {"a": "str"})],
    )
    assert theirs["parts"][2] == [
        ("BaseDict", "parts.0", {"k": ("BaseDict", "parts.0.k", {"number": "int"})})
    ]
    assert theirs["grid"][2][0] == ("BaseList", "grid.0", [])
    assert theirs["by_key"] == ("BaseList", "by_key", [("BaseDict", "by_key.0", {})])
    assert theirs["none"] == ("list", None, [])


class DiNote(EmbeddedDocument):
    tags = ListField(StringField())
    scores = DictField()
    words = ListField(StringField())


class DiLoose(Document):
    anything = DynamicField()
    items = ListField()


def held_shape(value: Any) -> Any:
    """``shape``, and an embedded document as its class with the shape of
    each field's value as held in ``_data``."""
    if isinstance(value, DiNote):
        fields = {name: held_shape(value._data.get(name)) for name in value._fields}
        return ("DiNote", fields, value._data.get("_cls"))
    if isinstance(value, dict):
        items = {key: held_shape(item) for key, item in dict.items(value)}
        return (type(value).__name__, getattr(value, "_name", None), items)
    if isinstance(value, list):
        items = [held_shape(item) for item in list.__iter__(value)]
        return (type(value).__name__, getattr(value, "_name", None), items)
    return type(value).__name__


async def test_distinct_documents_held_untyped_are_walked(mongodb_uri: str) -> None:
    """The embedded documents a DynamicField or an untyped list holds (stored
    with ``_cls``) come out of ``distinct`` as MongoEngine's ``DeReference``
    walk builds them: their empty lists and dicts wrapped and bound to them
    (no path), the others plain; ours loaded them with ``_from_son``, every
    one plain."""

    def loose() -> Any:
        note = DiNote(tags=["a"], scores={}, words=[])
        return DiLoose(anything=note, items=[DiNote(tags=[], scores={"k": 1})])

    with fresh_sync_default(mongodb_uri):
        loose().save()
        theirs = [
            held_shape(DiLoose.objects.distinct(p)) for p in ("anything", "items")
        ]
    async with fresh_database("default", mongodb_uri):
        await loose().async_save()
        ours = [
            held_shape(await DiLoose.objects.async_distinct(path))
            for path in ("anything", "items")
        ]
    assert ours == theirs
    assert theirs[0][2][0][1] == {
        "tags": ("list", None, ["str"]),
        "scores": ("BaseDict", None, {}),
        "words": ("BaseList", None, []),
    }


class DiKeyed(Document):
    note = EmbeddedDocumentField(DiNote)


async def test_distinct_of_a_key_no_field_has_fails_as_mongoengine(
    mongodb_uri: str,
) -> None:
    """A stored embedded document holding a key its class has no field for
    (a ``set__note__0`` update stores one): MongoEngine's ``distinct`` builds
    it with the constructor, whose ``pre_init`` gets the values walked (a
    ``BaseList`` named by its path) before ``FieldDoesNotExist``; ours raised
    the same error from ``_from_son``, its ``pre_init`` given them as stored."""
    seen: list[Any] = []

    def pre_init(sender: Any, document: Any, values: Any, **kwargs: Any) -> None:
        seen.append({key: held_shape(value) for key, value in values.items()})

    stored = {"note": {"0": ["a"], "tags": ["b"]}}
    signals.pre_init.connect(pre_init, sender=DiNote)
    try:
        with fresh_sync_default(mongodb_uri) as database:
            database.di_keyed.insert_one(dict(stored))
            with pytest.raises(FieldDoesNotExist) as theirs:
                DiKeyed.objects.distinct("note")
            theirs_seen = list(seen)
        seen.clear()
        async with fresh_database("default", mongodb_uri):
            collection = await DiKeyed._async_get_collection()
            await collection.insert_one(dict(stored))
            with pytest.raises(FieldDoesNotExist) as ours:
                await DiKeyed.objects.async_distinct("note")
    finally:
        signals.pre_init.disconnect(pre_init, sender=DiNote)
    assert str(ours.value) == str(theirs.value)
    assert seen == theirs_seen
    assert theirs_seen == [
        {
            "0": ("BaseList", "note.0.0", ["str"]),
            "tags": ("BaseList", "note.0.tags", ["str"]),
        }
    ]
