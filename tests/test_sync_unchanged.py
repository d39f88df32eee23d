"""On a connect() alias the package's models behave exactly like MongoEngine's."""

from __future__ import annotations

import copy
import inspect
import pickle
from collections.abc import Callable
from datetime import datetime
from typing import Any
from unittest import mock
from uuid import uuid4

import mongoengine
import pytest
from bson import DBRef
from mongoengine.base import _document_registry
from mongoengine.queryset import transform
from mongoengine.queryset.base import BaseQuerySet

import mongoengine_async
from conftest import sync_alias_beside
from mongoengine_async import (
    AsyncUsageError,
    DateTimeField,
    DictField,
    Document,
    DynamicDocument,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    FileField,
    IntField,
    ListField,
    MapField,
    NotUniqueError,
    ReferenceField,
    SortedListField,
    StringField,
    connection,
    get_async_db,
)


class SyncAuthor(Document):
    name = StringField(required=True, unique=True)
    born = IntField()


class SyncBook(Document):
    title = StringField()
    pages = IntField()
    author = ReferenceField(SyncAuthor)
    tags = ListField(StringField())
    meta = {"allow_inheritance": True}


class SyncNovel(SyncBook):
    genre = StringField()


class SyncNote(DynamicDocument):
    text = StringField()


class SyncAttachment(EmbeddedDocument):
    file = FileField(required=True)
    note = StringField()


class SyncLetter(Document):
    attachment = EmbeddedDocumentField(SyncAttachment)


def test_save_query_count_iterate(sync_default):
    tolkien = SyncAuthor(name="Tolkien", born=1892).save()
    assert isinstance(tolkien, mongoengine.Document)
    SyncBook(title="The Hobbit", pages=310, author=tolkien, tags=["x"]).save()
    SyncNovel(title="LOTR", pages=1200, author=tolkien, genre="fantasy").save()

    raw = sync_default.sync_book.find_one({"title": "LOTR"})
    assert raw["_cls"] == "SyncBook.SyncNovel"
    assert raw["author"] == tolkien.id

    assert SyncBook.objects.count() == 2
    assert SyncNovel.objects.count() == 1
    assert len(SyncBook.objects) == 2
    assert bool(SyncBook.objects(pages__gt=1000))
    assert not SyncBook.objects(pages__gt=5000)
    titles = [book.title for book in SyncBook.objects.order_by("pages")]
    assert titles == ["The Hobbit", "LOTR"]
    assert SyncBook.objects.order_by("-pages")[0].title == "LOTR"
    assert type(SyncBook.objects.get(title="LOTR")) is SyncNovel
    assert SyncBook.objects.first() is not None
    assert SyncBook.objects.sum("pages") == 1510
    assert SyncBook.objects.distinct("title") == ["LOTR", "The Hobbit"]
    assert SyncBook.objects.scalar("pages").order_by("pages")[0] == 310
    with pytest.raises(SyncBook.DoesNotExist):
        SyncBook.objects.get(title="Missing")
    aggregated = list(
        SyncBook.objects.aggregate([{"$group": {"_id": None, "n": {"$sum": 1}}}])
    )
    assert aggregated == [{"_id": None, "n": 2}]


def test_reference_auto_dereference(sync_default):
    author = SyncAuthor(name="Le Guin", born=1929).save()
    SyncBook(title="Earthsea", author=author).save()
    book = SyncBook.objects.get(title="Earthsea")
    # A plain MongoEngine read: the reference is the document itself.
    assert type(book.author) is SyncAuthor
    assert book.author.name == "Le Guin"
    assert book.author.born == 1929
    with mongoengine.context_managers.no_dereference(SyncBook):
        plain = SyncBook.objects.get(title="Earthsea")
        assert isinstance(plain.author, DBRef)


def test_update_delta_reload_delete(sync_default):
    book = SyncBook(title="Draft", pages=1).save()
    book.pages = 2
    book.save()
    assert sync_default.sync_book.find_one({"_id": book.id})["pages"] == 2
    SyncBook.objects(id=book.id).update(inc__pages=5, push__tags="t")
    book.reload()
    assert book.pages == 7
    assert book.tags == ["t"]
    assert book.modify(set__title="Final") is True
    assert sync_default.sync_book.find_one({"_id": book.id})["title"] == "Final"
    book.delete()
    assert sync_default.sync_book.count_documents({}) == 0


def test_unique_and_dynamic(sync_default):
    SyncAuthor(name="Same").save()
    with pytest.raises(NotUniqueError):
        SyncAuthor(name="Same").save()
    note = SyncNote(text="hi", mood="good").save()
    assert sync_default.sync_note.find_one({"_id": note.id})["mood"] == "good"
    assert SyncNote.objects.get(mood="good").text == "hi"


async def test_same_classes_work_async(async_alias):
    """The classes used synchronously above are the async ones on async aliases."""
    author = await SyncAuthor(name="Async", born=2000).async_save()
    await SyncNovel(title="Async book", author=author, genre="sf").async_save()
    raw = await get_async_db().sync_book.find_one({})
    assert raw["_cls"] == "SyncBook.SyncNovel"
    assert await SyncBook.objects.async_count() == 1
    book = await SyncBook.objects.async_get()
    assert type(book) is SyncNovel
    assert book.author.pk == author.pk
    assert (await book.author.async_fetch()).name == "Async"


# -- MongoEngine's own suite, run through this package, found these --------------


class SyncWord(EmbeddedDocument):
    word = StringField()


class SyncSection(EmbeddedDocument):
    heading = ListField(StringField())
    words = EmbeddedDocumentListField(SyncWord)


class SyncArticle(Document):
    section = EmbeddedDocumentField(SyncSection)
    sections = ListField(EmbeddedDocumentField(SyncSection))


class SyncEvent(Document):
    at = DateTimeField()


def test_pull_from_a_list_inside_an_embedded_document(sync_default):
    """$pull addresses the list with dots, as MongoEngine builds it (which
    compares exact field classes); the server refuses the nested form."""
    update = transform.update(SyncArticle, pull__section__words__word="b")
    assert update == {"$pull": {"section.words": {"word": "b"}}}
    assert transform.update(SyncArticle, pull__section__heading="h1") == {
        "$pull": {"section.heading": "h1"}
    }
    words = [SyncWord(word="a"), SyncWord(word="b")]
    article = SyncArticle(section=SyncSection(heading=["h1", "h2"], words=words))
    article.save()
    SyncArticle.objects(id=article.id).update(
        pull__section__words__word="b", pull__section__heading="h1"
    )
    stored = sync_default.sync_article.find_one({"_id": article.id})
    assert stored["section"] == {"heading": ["h2"], "words": [{"word": "a"}]}


@pytest.mark.parametrize(
    "field",
    [
        ListField(StringField()),
        SortedListField(IntField()),
        EmbeddedDocumentListField(SyncWord),
        DictField(),
        MapField(ListField(IntField())),
    ],
    ids=lambda field: type(field).__name__,
)
def test_container_fields_report_mongoengines_class(field):
    """Our container fields show MongoEngine's class of the same name as
    ``__class__`` (for its exact-class checks) and stay ours when copied or
    pickled (every protocol)."""
    ours = type(field)
    assert field.__class__ is getattr(mongoengine.fields, ours.__name__)
    assert isinstance(field, ours)
    copies = [copy.copy(field), copy.deepcopy(field)]
    copies += [
        pickle.loads(pickle.dumps(field, protocol))
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    ]
    for other in copies:
        assert type(other) is ours
        assert vars(other).keys() == vars(field).keys()
        assert type(getattr(other, "field", None)) is type(
            getattr(field, "field", None)
        )


def test_a_subclass_of_our_container_field_reports_itself():
    class Tags(ListField):
        pass

    assert Tags(StringField()).__class__ is Tags


def test_embedded_list_read_after_its_owner_is_gone(sync_default):
    """An embedded document holds its owner weakly; reading its list fields
    once the owner is gone gives the values, as with MongoEngine."""
    words = [SyncWord(word="x")]
    SyncArticle(sections=[SyncSection(heading=["a", "b"], words=words)]).save()
    assert SyncArticle.objects.first().sections[0].heading == ["a", "b"]
    assert SyncArticle.objects.first().sections[0].words[0].word == "x"


async def test_embedded_list_read_after_its_owner_is_gone_async(async_alias):
    """The same on an async alias, where the owner walk does run."""
    words = [SyncWord(word="x")]
    await SyncArticle(sections=[SyncSection(heading=["a"], words=words)]).async_save()
    assert (await SyncArticle.objects.async_first()).sections[0].heading == ["a"]
    assert (await SyncArticle.objects.async_first()).sections[0].words[0].word == "x"


def test_resetting_mongoengines_registry_through_our_connection_module(mongodb_uri):
    """MongoEngine's tests reset its sync registry by assigning the globals of
    ``from mongoengine import connection``; through our module that must still
    reset MongoEngine's, so the next ``connect()`` may use other settings."""
    name = f"test_sync_{uuid4().hex[:12]}"
    options = {"host": mongodb_uri, "uuidRepresentation": "standard"}
    first = mongoengine_async.connect(db=name, **options)
    try:
        assert connection._connections is mongoengine.connection._connections
        assert connection._connections["default"] is first
        connection._connection_settings = {}
        connection._connections = {}
        connection._dbs = {}
        assert mongoengine.connection._connections == {}
        assert mongoengine.connection._connection_settings == {}
        second = mongoengine_async.connect(db=name, tz_aware=True, **options)
        assert second is not first
        SyncEvent(at=datetime(2024, 1, 2, 3, 4)).save()
        assert SyncEvent.objects.get().at.tzinfo is not None
    finally:
        first.drop_database(name)
        first.close()
        mongoengine_async.disconnect()


def test_hierarchy_leaves_our_base_classes_out(sync_default):
    """Class hierarchy metadata is MongoEngine's: our Document and
    DynamicDocument are no superclass and no registered document."""
    assert SyncBook._superclasses == ()
    assert SyncNovel._superclasses == ("SyncBook",)
    assert SyncBook._subclasses == ("SyncBook", "SyncBook.SyncNovel")
    assert SyncNote._superclasses == ()
    assert SyncNovel._class_name == "SyncBook.SyncNovel"
    assert "Document" not in _document_registry
    assert "DynamicDocument" not in _document_registry
    SyncNovel(title="Dune").save()
    assert sync_default.sync_book.find_one()["_cls"] == "SyncBook.SyncNovel"
    assert type(SyncBook.objects.get()) is SyncNovel


class SyncLater(Document):
    n = IntField()


async def test_class_used_with_using_on_an_async_alias_then_on_a_sync_one(mongodb_uri):
    """MongoEngine's switch_db (behind using()) caches the collection it saw on
    entry; an async alias's collection must not outlive the alias."""
    name = f"test_later_{uuid4().hex[:12]}"
    await mongoengine_async.connect_async(
        db=name, host=mongodb_uri, uuidRepresentation="standard"
    )
    try:
        assert await SyncLater.objects.using("default").async_count() == 0
    finally:
        await mongoengine_async.disconnect_async()
    mongoengine_async.connect(db=name, host=mongodb_uri, uuidRepresentation="standard")
    try:
        SyncLater(n=3).save()
        assert SyncLater.objects.get().n == 3
        assert mongoengine_async.get_db().sync_later.count_documents({"n": 3}) == 1
    finally:
        mongoengine_async.get_db().client.drop_database(name)
        mongoengine_async.disconnect()


def _noting(calls: list[str], name: str, original: Any) -> Any:
    """A stand-in for ``original`` (a function or classmethod) that notes
    ``name`` in ``calls`` and does what it did."""
    if isinstance(original, classmethod):
        method = original.__func__

        def noting_class(cls: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return method(cls, *args, **kwargs)

        return classmethod(noting_class)

    def noting(receiver: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return original(receiver, *args, **kwargs)

    return noting


@pytest.mark.parametrize(
    ("owner", "name", "use"),
    [
        (mongoengine.Document, "save", lambda book: book.save()),
        (mongoengine.Document, "reload", lambda book: book.reload()),
        (mongoengine.Document, "update", lambda book: book.update(set__pages=2)),
        (mongoengine.Document, "modify", lambda book: book.modify(set__pages=3)),
        (mongoengine.Document, "delete", lambda book: book.delete()),
        (mongoengine.Document, "ensure_indexes", lambda book: book.ensure_indexes()),
        (mongoengine.QuerySet, "count", lambda book: SyncBook.objects.count()),
        (mongoengine.QuerySet, "first", lambda book: SyncBook.objects.first()),
        (BaseQuerySet, "update", lambda book: SyncBook.objects.update(set__pages=4)),
        (
            BaseQuerySet,
            "insert",
            lambda book: SyncBook.objects.insert([SyncBook(title="i")]),
        ),
        (
            mongoengine.QuerySet,
            "insert",
            lambda book: SyncBook.objects.insert(SyncBook(title="j")),
        ),
    ],
)
def test_mongoengine_methods_patched_on_its_classes_are_called(
    sync_default: Any, owner: type, name: str, use: Callable[[Any], Any]
) -> None:
    """A method of MongoEngine's Document or QuerySet patched on MongoEngine's
    class (an application's monkeypatch of ``mongoengine.Document.save``, a
    test's ``mock.patch.object``) is called through our classes on a sync
    alias, as through MongoEngine's own."""
    book = SyncBook(title="t", pages=1).save()
    calls: list[str] = []
    original = inspect.getattr_static(owner, name)
    with mock.patch.object(owner, name, _noting(calls, name, original)):
        use(book)
    assert calls == [name]


def test_an_embedded_documents_unset_file_field_holds_an_empty_proxy(sync_default):
    """An embedded document built without its file holds an empty GridFSProxy
    from its construction, as with MongoEngine, so a required FileField left
    unset validates and the document saves without the file."""
    attachment = SyncAttachment(note="n")
    held = attachment._data["file"]
    assert isinstance(held, mongoengine.fields.GridFSProxy)
    assert held.grid_id is None
    letter = SyncLetter(attachment=attachment).save()
    assert sync_default.sync_letter.find_one() == {
        "_id": letter.id,
        "attachment": {"note": "n"},
    }


def _forward_fields(module: Any, target: str) -> dict[str, Any]:
    """Containers of references to ``target``, a class never defined."""
    return {
        "refs": module.ListField(module.ReferenceField(target)),
        "lazies": module.ListField(module.LazyReferenceField(target)),
        "by_key": module.MapField(module.ReferenceField(target)),
        "name": module.StringField(),
    }


SyncEarlyNote = type(
    "SyncEarlyNote",
    (EmbeddedDocument,),
    _forward_fields(mongoengine_async, "SyncNeverDefined"),
)
MeEarlyNote = type(
    "MeEarlyNote",
    (mongoengine.EmbeddedDocument,),
    _forward_fields(mongoengine, "MeNeverDefined"),
)
SyncEarlyHolder = type(
    "SyncEarlyHolder",
    (Document,),
    {
        **_forward_fields(mongoengine_async, "SyncNeverDefined"),
        "note": EmbeddedDocumentField(SyncEarlyNote),
        "meta": {"db_alias": "sync_early"},
    },
)
MeEarlyHolder = type(
    "MeEarlyHolder",
    (mongoengine.Document,),
    {
        **_forward_fields(mongoengine, "MeNeverDefined"),
        "note": mongoengine.EmbeddedDocumentField(MeEarlyNote),
        "meta": {"db_alias": "sync_early", "collection": "sync_early_holder"},
    },
)


def _read(document: Any, name: str) -> Any:
    """``document.<name>``, or the type of its error."""
    try:
        return getattr(document, name)
    except Exception as error:  # (compared with MongoEngine's)
        return type(error)


async def test_containers_of_references_to_a_class_not_defined_yet(
    async_alias, mongodb_uri
):
    """With an async alias connected, a document (embedded or not) holding
    lists and maps of references to a class not defined yet is built, saved
    and read as with MongoEngine, which looks that class up only to
    dereference; ours raised NotRegistered when it was built."""
    with sync_alias_beside("sync_early", async_alias, mongodb_uri):
        ours = SyncEarlyHolder(name="h", note=SyncEarlyNote(name="n")).save()
        theirs = MeEarlyHolder.objects.get(pk=ours.pk)
        for document in (ours, SyncEarlyHolder.objects.get(pk=ours.pk)):
            for mine, expected in ((document, theirs), (document.note, theirs.note)):
                assert {**mine._data, "note": None} == {**expected._data, "note": None}
                for name in ("refs", "lazies", "by_key"):
                    assert _read(mine, name) == _read(expected, name), name
                assert mine._changed_fields == expected._changed_fields == []
    stored = await get_async_db().sync_early_holder.find_one()
    assert stored == {
        "_id": ours.pk,
        "refs": [],
        "lazies": [],
        "by_key": {},
        "name": "h",
        "note": {"refs": [], "lazies": [], "by_key": {}, "name": "n"},
    }


class SyncEarlyFile(EmbeddedDocument):
    file = FileField(db_alias="sync_early")


class SyncEarlyFiler(Document):
    attachment = EmbeddedDocumentField(SyncEarlyFile)
    meta = {"db_alias": "sync_early"}


async def test_an_embedded_document_built_with_a_files_data(async_alias, mongodb_uri):
    """``Attachment(file=b"...")`` stores the file as MongoEngine does on a sync
    alias, and on an async alias refuses the blocking write naming
    ``async_put``; both raised AttributeError (no ``_instance`` in ``__init__``)."""
    with sync_alias_beside("sync_early", async_alias, mongodb_uri):
        attachment = SyncEarlyFile(file=b"data")
        assert type(attachment._data["file"]) is mongoengine_async.GridFSProxy
        filer = SyncEarlyFiler(attachment=attachment).save()
        assert SyncEarlyFiler.objects.get().attachment.file.read() == b"data"
    stored = await get_async_db().sync_early_filer.find_one()
    assert stored == {"_id": filer.pk, "attachment": {"file": attachment.file.grid_id}}
    files = await get_async_db().fs.files.find({}, {"length": 1}).to_list()
    assert files == [{"_id": attachment.file.grid_id, "length": 4}]
    with pytest.raises(AsyncUsageError) as error:
        SyncAttachment(file=b"data")
    assert str(error.value) == (
        "Assigning data to SyncAttachment.file would block the event loop: the "
        "file lives on an async alias; use `await SyncAttachment.file.async_put("
        "data, instance=document)` instead"
    )
    assert await get_async_db().fs.files.count_documents({}) == 1
