"""CachedReferenceField on async aliases: loading does no I/O, the reference is
a proxy, async_save writes the cache and auto_sync runs on async_save of the
referenced document (without blinker too); sync aliases keep MongoEngine's."""

from __future__ import annotations

import copy
import datetime
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from decimal import Decimal
from typing import Any
from uuid import uuid4

import mongoengine
import pytest
from bson import DBRef, ObjectId, json_util

from conftest import sync_alias_beside
from mongoengine_async import (
    AsyncReferenceProxy,
    AsyncUsageError,
    CachedReferenceField,
    DateTimeField,
    DecimalField,
    DictField,
    Document,
    DynamicDocument,
    DynamicField,
    EmbeddedDocument,
    EmbeddedDocumentField,
    GenericReferenceField,
    IntField,
    InvalidDocumentError,
    ListField,
    NotLoadedError,
    ReferenceField,
    StringField,
    UUIDField,
    ValidationError,
    async_no_dereference,
    deltas,
    get_async_db,
    post_init,
    pre_init,
)


class CrAuthor(Document):
    name = StringField()
    country = StringField()
    age = IntField()


class CrBook(Document):
    title = StringField()
    author = CachedReferenceField(CrAuthor, fields=["name", "country"])


async def _saved(title: str = "First") -> tuple[CrAuthor, CrBook]:
    author = await CrAuthor(name="Ann", country="UK", age=40).async_save()
    book = await CrBook(title=title, author=author).async_save()
    return author, book


async def test_async_save_writes_the_cache(async_alias):
    author, book = await _saved()
    raw = await get_async_db().cr_book.find_one({"_id": book.id})
    assert raw["author"] == {"_id": author.id, "name": "Ann", "country": "UK"}


async def test_loading_does_no_io_and_the_reference_is_a_proxy(
    async_alias, command_log
):
    author, _ = await _saved()
    command_log.clear()
    book = await CrBook.objects.async_get()
    proxy = book.author
    assert command_log.names == ["find"]
    assert isinstance(proxy, AsyncReferenceProxy)
    assert repr(proxy) == "<AsyncReferenceProxy: author (unfetched)>"
    assert proxy.id == author.id and proxy == author
    loaded = await proxy
    assert command_log.names == ["find", "find"]
    assert (loaded.name, loaded.age) == ("Ann", 40)
    assert book.author is loaded
    assert await CrBook.author.async_fetch(book) is loaded


async def test_the_cached_fields_read_from_the_stored_copy_without_io(
    async_alias, command_log
):
    """The copy of the cached fields is in the referring document: read
    without awaiting and without a query (MongoEngine loads the document when
    it loads the referring one); the other fields still need ``await``."""
    author = await CrAuthor(name="Ann", age=40).async_save()  # country: None
    await CrBook(title="First", author=author).async_save()
    await get_async_db().cr_author.update_one({}, {"$set": {"name": "Renamed"}})
    book = await CrBook.objects.async_get()
    command_log.clear()
    proxy = book.author
    assert (proxy.name, proxy.country, proxy.id) == ("Ann", None, author.id)
    assert hasattr(proxy, "name") and not hasattr(proxy, "age")
    with pytest.raises(NotLoadedError) as raised:
        proxy.age  # noqa: B018
    assert str(raised.value) == (
        "'age' is not available on the unloaded reference 'author': "
        "`await` it (or its fetch()) to get the document"
    )
    assert command_log.names == []
    assert isinstance(book.author, AsyncReferenceProxy)  # still unloaded
    loaded = await proxy
    assert (proxy.name, loaded.age) == ("Renamed", 40)  # the document's now


class CrReadingList(Document):
    authors = ListField(CachedReferenceField(CrAuthor, fields=["name"]))
    whole = CachedReferenceField(CrAuthor)  # no fields: MongoEngine caches all


async def test_the_cached_fields_of_listed_references_read_without_io(
    async_alias, command_log
):
    author = await CrAuthor(name="Ann", age=40).async_save()
    await CrReadingList(authors=[author], whole=author).async_save()
    reading = await CrReadingList.objects.async_get()
    command_log.clear()
    [proxy] = reading.authors
    assert (proxy.name, proxy.id) == ("Ann", author.id)
    assert (reading.whole.name, reading.whole.age) == ("Ann", 40)
    assert command_log.names == []
    with pytest.raises(NotLoadedError):
        proxy.age  # noqa: B018


async def test_the_cached_fields_of_a_deleted_target_read_from_the_copy(
    async_alias, command_log
):
    """The referenced document deleted: its copy still reads, with no query,
    whether the reference was loaded plainly or by select_related (which
    marks it missing; the cached fields raised DoesNotExist then). Any other
    field asks to await it, or once marked missing raises DoesNotExist, as
    awaiting does. (MongoEngine's loading queries the document and refuses the
    referring one: see the sync test below.)"""
    author = await CrAuthor(name="Ann", country="UK", age=40).async_save()
    await CrBook(title="First", author=author).async_save()
    await CrReadingList(authors=[author], whole=author).async_save()
    await get_async_db().cr_author.delete_one({"_id": author.id})
    message = (
        f"Trying to dereference unknown document DBRef('cr_author', "
        f"ObjectId('{author.id}')) (reference 'author')"
    )
    plain = await CrBook.objects.async_get()
    [related] = await CrBook.objects.async_select_related()
    [reading] = await CrReadingList.objects.async_select_related()
    assert repr(related.author) == "<AsyncReferenceProxy: author (missing)>"
    command_log.clear()
    for book in (plain, related):
        assert (book.author.name, book.author.country) == ("Ann", "UK")
    assert (reading.authors[0].name, reading.whole.name) == ("Ann", "Ann")
    assert reading.whole.age == 40  # (no fields: every field cached)
    assert command_log.names == []
    with pytest.raises(NotLoadedError):
        plain.author.age  # noqa: B018
    with pytest.raises(CrAuthor.DoesNotExist) as raised:
        related.author.age  # noqa: B018
    assert str(raised.value) == message
    for book in (plain, related):
        with pytest.raises(CrAuthor.DoesNotExist) as raised:
            await book.author
        assert str(raised.value) == message
        assert book.author.name == "Ann"  # (still the copy's)


def test_a_deleted_target_fails_the_sync_load_as_in_mongoengine(sync_default):
    """On a sync alias loading the referring document loads the referenced
    one (MongoEngine's to_python): a deleted one fails it with MongoEngine's
    InvalidDocumentError, as MongoEngine's own classes do."""

    class MeCrAuthor(mongoengine.Document):
        name = mongoengine.StringField()

    class MeCrBook(mongoengine.Document):
        author = mongoengine.CachedReferenceField(MeCrAuthor, fields=["name"])

    errors = []
    for author_class, book_class in ((CrAuthor, CrBook), (MeCrAuthor, MeCrBook)):
        author = author_class(name="Ann").save()
        book_class(author=author).save()
        author_class._get_collection().delete_one({"_id": author.id})
        with pytest.raises(InvalidDocumentError) as raised:
            book_class.objects.get()
        errors.append(str(raised.value).replace(book_class.__name__, "Book"))
    expected = (
        "Invalid data to create a `Book` instance.\n"
        "Field 'author' - 'NoneType' object has no attribute 'get'"
    )
    assert errors == [expected, expected]


class CrNote(EmbeddedDocument):
    text = StringField()
    at = DateTimeField()


class CrRich(Document):
    meta = {"allow_inheritance": True}
    name = StringField(db_field="n")
    born = DateTimeField()
    price = DecimalField(precision=2)
    note = EmbeddedDocumentField(CrNote)
    notes = ListField(EmbeddedDocumentField(CrNote))
    tags = ListField(StringField())
    extra = DictField()
    key = UUIDField(binary=False)
    friend = ReferenceField(CrAuthor)
    friends = ListField(ReferenceField(CrAuthor))
    level = IntField(default=3)
    country = StringField()


class CrRicher(CrRich):
    motto = StringField()


class CrRichShelf(Document):
    rich = CachedReferenceField(CrRich)  # no fields: every field is cached


async def test_the_cached_read_builds_no_document_and_converts_as_loading(
    async_alias, command_log
):
    """Each cached field reads as the loaded document's field (converted by
    its own to_python; a reference as a proxy; absent: the default), with no
    query and no init signal: MongoEngine sends pre_init/post_init only for
    documents it loads, never for a partial copy."""
    author = await CrAuthor(name="Ann").async_save()
    note = CrNote(text="hi", at=datetime.datetime(2024, 5, 6, 7, 8, 9, 123000))
    rich = await CrRicher(
        name="Rich",
        born=datetime.datetime(1990, 1, 2),
        price=Decimal("1.50"),
        note=note,
        notes=[note],
        tags=["a", "b"],
        extra={"k": [1, {"x": 2}]},
        key=uuid4(),
        friend=author,
        friends=[author],
        level=7,
        motto="m",
    ).async_save()
    await CrRichShelf(rich=rich).async_save()
    db = get_async_db()
    await db.cr_rich_shelf.update_one({}, {"$unset": {"rich.level": ""}})
    raw = await db.cr_rich_shelf.find_one()
    assert raw["rich"]["n"] == "Rich" and raw["rich"]["_cls"] == "CrRich.CrRicher"
    assert raw["rich"]["motto"] == "m"  # (the subclass's own field: cached too)
    shelf = await CrRichShelf.objects.async_get()
    names = [n for n in CrRich._fields if n not in ("id", "_cls", "level")]
    inits = []

    def note_init(sender: type, **kwargs: object) -> None:
        inits.append(sender)

    command_log.clear()
    pre_init.connect(note_init)
    post_init.connect(note_init)
    try:
        proxy = shelf.rich
        read = {name: getattr(proxy, name) for name in [*names, "level", "motto"]}
    finally:
        pre_init.disconnect(note_init)
        post_init.disconnect(note_init)
    # Only the embedded notes, whole, as loading builds them (pre and post).
    assert inits == [CrNote] * 4
    assert command_log.names == []
    loaded = await CrRich.objects.async_get()
    for name in names:
        assert read[name] == getattr(loaded, name), name
        assert type(read[name]) is type(getattr(loaded, name)), name
    assert read["level"] == 3  # absent from the copy: the default
    assert read["motto"] == loaded.motto == "m"  # (it was NotLoadedError)
    assert isinstance(read["friend"], AsyncReferenceProxy)
    assert isinstance(read["friends"][0], AsyncReferenceProxy)
    assert isinstance(read["note"], CrNote) and read["note"].at == note.at
    assert (await read["friend"]).name == "Ann"
    assert shelf.rich.friend.name == "Ann"  # the awaited one, kept in the copy


class CrSigNote(EmbeddedDocument):
    text = StringField()
    size = IntField(default=3)


class CrSigAuthor(Document):
    name = StringField()
    note = EmbeddedDocumentField(CrSigNote)
    notes = ListField(EmbeddedDocumentField(CrSigNote))


class CrSigBook(Document):
    author = CachedReferenceField(CrSigAuthor, fields=["name", "note", "notes"])


class MeSigNote(mongoengine.EmbeddedDocument):
    text = mongoengine.StringField()
    size = mongoengine.IntField(default=3)


class MeSigAuthor(mongoengine.Document):
    name = mongoengine.StringField()
    note = mongoengine.EmbeddedDocumentField(MeSigNote)
    notes = mongoengine.ListField(mongoengine.EmbeddedDocumentField(MeSigNote))
    meta = {"db_alias": "cr_sig_sync"}


class MeSigBook(mongoengine.Document):
    author = mongoengine.CachedReferenceField(
        MeSigAuthor, fields=["name", "note", "notes"]
    )
    meta = {"db_alias": "cr_sig_sync"}


async def test_the_embedded_documents_of_a_copy_send_mongoengines_init_signals(
    async_alias, mongodb_uri
):
    """Reading the embedded documents of a cached copy builds them, as
    MongoEngine's loading builds the same values: each sends pre_init and
    post_init once, with the same values and state as MongoEngine's own (a
    receiver setting up their state runs for every one handed out); the
    copy's document itself is no document built, so it sends none."""
    sent: list[tuple] = []

    def pre(sender: type, document: object, values: dict, **kwargs: object) -> None:
        sent.append(("pre_init", sender.__name__[5:], values, sorted(kwargs)))

    def post(sender: type, document: Any, **kwargs: object) -> None:
        shown = dict(document._data) if "Note" in sender.__name__ else None
        state = (document._created, getattr(document, "_changed_fields", None))
        sent.append(("post_init", sender.__name__[5:], shown, state, sorted(kwargs)))

    lists = []
    pre_init.connect(pre)
    post_init.connect(post)
    try:
        with sync_alias_beside("cr_sig_sync", async_alias, mongodb_uri):
            author = MeSigAuthor(name="Ann", note=MeSigNote(text="x"))
            author.notes = [MeSigNote(text="y")]
            MeSigBook(author=author.save()).save()
            sent.clear()
            MeSigBook.objects.get()
            lists.append([each for each in sent if each[1] == "Note"])
        author = CrSigAuthor(name="Ann", note=CrSigNote(text="x"))
        author.notes = [CrSigNote(text="y")]
        await CrSigBook(author=await author.async_save()).async_save()
        book = await CrSigBook.objects.async_get()
        sent.clear()
        proxy = book.author
        assert (proxy.note.text, proxy.notes[0].text, proxy.name) == ("x", "y", "Ann")
        assert (proxy.note.text, proxy.notes[0].text) == ("x", "y")  # (built once)
        lists.append(list(sent))
    finally:
        pre_init.disconnect(pre)
        post_init.disconnect(post)
    expected = [
        ("pre_init", "Note", {"text": "x", "size": 3}, []),
        ("post_init", "Note", {"text": "x", "size": 3}, (False, None), []),
        ("pre_init", "Note", {"text": "y", "size": 3}, []),
        ("post_init", "Note", {"text": "y", "size": 3}, (False, None), []),
    ]
    assert lists == [expected, expected]


async def test_saving_a_loaded_document_keeps_the_stored_cache(
    async_alias, command_log
):
    author, _ = await _saved()
    await get_async_db().cr_author.update_one({}, {"$set": {"name": "Renamed"}})
    book = await CrBook.objects.async_get()
    command_log.clear()
    book.title = "Second"
    await book.async_save()
    copy = await CrBook(title="Copy", author=book.author).async_save()
    assert "find" not in command_log.names  # the proxy was never loaded
    stale = {"_id": author.id, "name": "Ann", "country": "UK"}
    for saved in (book, copy):
        raw = await get_async_db().cr_book.find_one({"_id": saved.id})
        assert raw["author"] == stale
    fresh = await CrBook(title="Fresh", author=await book.author).async_save()
    raw = await get_async_db().cr_book.find_one({"_id": fresh.id})
    assert raw["author"]["name"] == "Renamed"


async def test_validation_still_refuses_other_values(async_alias):
    book = CrBook(title="Bad", author=CrAuthor(name="unsaved"))
    with pytest.raises(ValidationError, match="You can only reference documents"):
        await book.async_save()


class CrShelf(Document):
    """References to a CrAuthor that store no copy of the cached fields."""

    author = ReferenceField(CrAuthor)
    anything = GenericReferenceField()


async def test_a_proxy_without_the_cache_must_be_awaited(async_alias):
    """The cached fields need the document: a proxy from a plain or generic
    reference is refused naming ``await`` (by save and by update); awaited,
    it stores the cache as its document does (MongoEngine's value)."""
    author, book = await _saved()
    await CrShelf(author=author, anything=author).async_save()
    shelf = await CrShelf.objects.async_get()
    for name in ("author", "anything"):
        proxy = getattr(shelf, name)
        message = (
            f"The unloaded reference {name!r} holds no copy of the cached "
            "fields: `await` it and store the document instead"
        )
        with pytest.raises(ValidationError) as raised:
            await CrBook(title="Bad", author=proxy).async_save()
        assert (
            str(raised.value)
            == f"ValidationError (CrBook:None) ({message}: ['author'])"
        )
        with pytest.raises(ValidationError) as raised:
            await CrBook.objects(id=book.id).async_update(set__author=proxy)
        assert str(raised.value) == message
        await proxy
        saved = await CrBook(title=name, author=proxy).async_save()
        await CrBook.objects(id=book.id).async_update(set__author=proxy)
        for pk in (saved.id, book.id):
            raw = await get_async_db().cr_book.find_one({"_id": pk})
            assert raw["author"] == {"_id": author.id, "name": "Ann", "country": "UK"}
    assert await CrBook.objects.async_count() == 3


async def test_update_with_a_cached_proxy_stores_its_cache(async_alias):
    """``set__field=<proxy>`` stores the cache the proxy was read with (a
    filter by the proxy still matches on the id alone)."""
    author, book = await _saved()
    other = await CrBook(title="Other").async_save()
    proxy = (await CrBook.objects.async_get(id=book.id)).author
    assert isinstance(proxy, AsyncReferenceProxy)
    await CrBook.objects(id=other.id).async_update(set__author=proxy)
    raw = await get_async_db().cr_book.find_one({"_id": other.id})
    assert raw["author"] == {"_id": author.id, "name": "Ann", "country": "UK"}
    assert await CrBook.objects(author=proxy).async_count() == 2


async def test_auto_sync_on_async_save_of_the_referenced_document(
    async_alias, command_log
):
    author, book = await _saved()
    other = await CrBook(title="Other", author=author).async_save()
    command_log.clear()
    author.name = "Anne"
    await author.async_save()
    assert command_log.names == ["update", "update"]  # the author, then the books
    for saved in (book, other):
        raw = await get_async_db().cr_book.find_one({"_id": saved.id})
        assert raw["author"] == {"_id": author.id, "name": "Anne", "country": "UK"}

    command_log.clear()
    author.age = 41  # not cached: nothing to sync
    await author.async_save()
    assert command_log.names == ["update"]


async def test_async_sync_all_rewrites_every_cache(async_alias):
    author, book = await _saved()
    await get_async_db().cr_author.update_one({}, {"$set": {"country": "FR"}})
    await CrBook.author.async_sync_all()
    raw = await get_async_db().cr_book.find_one({"_id": book.id})
    assert raw["author"] == {"_id": author.id, "name": "Ann", "country": "FR"}


async def test_sync_all_on_an_async_alias_names_async_sync_all(
    async_alias, command_log
):
    await _saved()
    command_log.clear()
    with pytest.raises(AsyncUsageError) as raised:
        CrBook.author.sync_all()
    assert str(raised.value) == (
        "CrBook.author.sync_all() would block the event loop: alias 'default' "
        "is async (connect_async); use await Model.field.async_sync_all() instead"
    )
    assert command_log.names == []


async def test_query_by_document_or_proxy(async_alias):
    author, book = await _saved()
    loaded = await CrBook.objects.async_get()
    assert (await CrBook.objects(author=author).async_get()).id == book.id
    assert (await CrBook.objects(author=loaded.author).async_get()).id == book.id


async def test_select_related_loads_cached_references(async_alias, command_log):
    author, _ = await _saved()
    await CrBook(title="Second", author=author).async_save()
    command_log.clear()
    books = await CrBook.objects.order_by("title").async_select_related()
    assert command_log.names == ["find", "find"]
    assert [book.author.age for book in books] == [40, 40]
    assert books[0].author is books[1].author


def test_auto_sync_without_blinker(mongodb_uri):
    """A plain install (no blinker): the class is defined and async_save syncs."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["blinker"] = None  # as if it were not installed
        from mongoengine import signals
        assert not signals.signals_available
        from mongoengine_async import *

        class Person(Document):
            name = StringField()

        class Note(Document):
            person = CachedReferenceField(Person, fields=["name"])

        async def main():
            await connect_async(db="{"cr_" + uuid4().hex[:12]}", host="{mongodb_uri}")
            person = await Person(name="Ann").async_save()
            note = await Note(person=person).async_save()
            person.name = "Anne"
            await person.async_save()
            raw = await get_async_db().note.find_one({{"_id": note.id}})
            print(raw["person"]["name"])
            await get_async_connection().drop_database(get_async_db().name)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Anne"


def test_sync_alias_keeps_mongoengine_behaviour(sync_default):
    author = CrAuthor(name="Ann", country="UK", age=40).save()
    book = CrBook(title="First", author=author).save()
    loaded = CrBook.objects.get()
    assert type(loaded.author) is CrAuthor and loaded.author.age == 40
    author.name = "Anne"
    author.save()  # MongoEngine's post_save receiver syncs the cache
    raw = sync_default.cr_book.find_one({"_id": book.id})
    assert raw["author"] == {"_id": author.id, "name": "Anne", "country": "UK"}
    sync_default.cr_author.update_one({}, {"$set": {"country": "FR"}})
    CrBook.author.sync_all()  # MongoEngine's, unguarded on a sync alias
    raw = sync_default.cr_book.find_one({"_id": book.id})
    assert raw["author"] == {"_id": author.id, "name": "Anne", "country": "FR"}


async def test_a_dict_that_is_no_stored_cache_is_refused(async_alias):
    """A dict without the referenced id is no cache read from the database:
    the constructor refuses it as MongoEngine's does (its KeyError), and a
    validation of one assigned refuses it as a value that is no document."""
    with pytest.raises(KeyError, match="_id"):
        CrBook(title="Bad", author={"name": "Ann"})
    book = CrBook(title="Bad")
    book.author = {"name": "Ann"}
    with pytest.raises(ValidationError, match="only accepts documents"):
        await book.async_save()
    assert await get_async_db().cr_book.count_documents({}) == 0


def test_a_dict_on_a_sync_alias_is_refused_as_mongoengine_does(sync_default):
    """On a sync alias no stored cache is kept as a dict (MongoEngine's
    loading builds the document), so a dict assigned, even one holding
    ``_id``, is the user's: validation refuses it as MongoEngine's does. It
    was taken for a stored cache and saved as it was, unchecked."""
    book = CrBook(title="Bad")
    book.author = {"_id": "not an id", "name": 5, "other": 1}
    with pytest.raises(ValidationError, match="only accepts documents"):
        book.save()
    with pytest.raises(ValidationError, match="Only accept a document object"):
        CrBook.author.to_mongo({"_id": "not an id"})
    assert sync_default.cr_book.count_documents({}) == 0


# A CachedReferenceField holding a reference as a ReferenceField stores it (a
# DBRef, or an ObjectId with dbref=False), with no cached copy: the field was a
# ReferenceField before, or another tool wrote the documents.


class CrPlainAuthor(Document):
    name = StringField()
    country = StringField()


class CrPlainBook(Document):
    title = StringField()
    author = CachedReferenceField(CrPlainAuthor, fields=["name"])
    authors = ListField(CachedReferenceField(CrPlainAuthor, fields=["name"]))


async def _plain_book(author_id: Any, stored: str) -> Any:
    """A CrPlainBook stored raw with ``author_id`` as a DBRef or an ObjectId
    (``stored``) in its field and in its list."""
    reference = DBRef("cr_plain_author", author_id) if stored == "dbref" else author_id
    raw = {"title": "Plain", "author": reference, "authors": [reference]}
    await get_async_db().cr_plain_book.insert_one(raw)
    return reference


def _unloaded_message(attribute: str, name: str) -> str:
    return (
        f"{attribute!r} is not available on the unloaded reference {name!r}: "
        "`await` it (or its fetch()) to get the document"
    )


@pytest.mark.parametrize("stored", ["dbref", "objectid"])
async def test_a_plain_reference_reads_as_a_proxy_to_await(
    async_alias, command_log, stored
):
    """Read without I/O as an unloaded ReferenceField is (MongoEngine's sync
    read loads it; this one loaded it with the async client's un-awaited
    coroutine and failed): no copy to read, awaiting loads the document."""
    author = await CrPlainAuthor(name="Ann", country="UK").async_save()
    await _plain_book(author.id, stored)
    book = await CrPlainBook.objects.async_get()
    command_log.clear()
    proxies = [book.author, book.authors[0]]
    assert command_log.names == []
    for proxy, name in zip(proxies, ("author", "authors"), strict=True):
        assert isinstance(proxy, AsyncReferenceProxy)
        assert repr(proxy) == f"<AsyncReferenceProxy: {name} (unfetched)>"
        assert proxy.id == author.id and proxy == author
        with pytest.raises(NotLoadedError) as raised:
            proxy.name  # noqa: B018
        assert str(raised.value) == _unloaded_message("name", name)
        loaded = await proxy
        assert type(loaded) is CrPlainAuthor and loaded.country == "UK"
    assert command_log.names == ["find", "find"]
    assert book.author.name == book.authors[0].name == "Ann"
    assert (await CrPlainBook.author.async_fetch(book)).id == author.id


@pytest.mark.parametrize("stored", ["dbref", "objectid"])
async def test_a_missing_plain_reference_raises_does_not_exist(async_alias, stored):
    missing = ObjectId()
    await _plain_book(missing, stored)
    book = await CrPlainBook.objects.async_get()
    message = (
        "Trying to dereference unknown document "
        f"DBRef('cr_plain_author', ObjectId('{missing}')) (reference 'author')"
    )
    with pytest.raises(CrPlainAuthor.DoesNotExist) as raised:
        await book.author
    assert str(raised.value) == message
    with pytest.raises(CrPlainAuthor.DoesNotExist) as raised:
        await book.authors[0]
    assert str(raised.value) == message.replace("'author'", "'authors'")


@pytest.mark.parametrize("stored", ["dbref", "objectid"])
async def test_saving_keeps_a_plain_reference_as_stored(async_alias, stored):
    """Saved without touching the field, the stored reference stays as it
    was (to_mongo gives it, validation takes it), read or not; the unloaded
    proxy stored in another document (saved, or by an update) stores it too;
    assigning a loaded document stores its cache."""
    author = await CrPlainAuthor(name="Ann", country="UK").async_save()
    reference = await _plain_book(author.id, stored)
    for read in (False, True):
        book = await CrPlainBook.objects.async_get()
        if read:
            assert isinstance(book.author, AsyncReferenceProxy)
            assert isinstance(book.authors[0], AsyncReferenceProxy)
        book.validate()
        as_bson = book.to_mongo()
        assert as_bson["author"] == reference and as_bson["authors"] == [reference]
        book.title = f"Read {read}"
        await book.async_save()
        copy = await CrPlainBook(title="Copy", author=book.author).async_save()
        for pk in (book.id, copy.id):
            raw = await get_async_db().cr_plain_book.find_one({"_id": pk})
            assert type(raw["author"]) is type(reference)
            assert raw["author"] == reference
        assert raw["authors"] == [] and raw["title"] == "Copy"
        raw = await get_async_db().cr_plain_book.find_one({"_id": book.id})
        assert raw["title"] == f"Read {read}" and raw["authors"] == [reference]
        await copy.async_update(set__author=None)
        await CrPlainBook.objects(id=copy.id).async_update(set__author=book.author)
        raw = await get_async_db().cr_plain_book.find_one({"_id": copy.id})
        assert type(raw["author"]) is type(reference) and raw["author"] == reference
        await copy.async_delete()
    book = await CrPlainBook.objects.async_get()
    other = await CrPlainAuthor(name="Bob").async_save()
    book.author, book.authors = other, [await book.authors[0], other]
    fresh = CrPlainBook(title="Fresh", author=await book.author, authors=[author])
    for saved in (await book.async_save(), await fresh.async_save()):
        raw = await get_async_db().cr_plain_book.find_one({"_id": saved.id})
        assert raw["author"] == {"_id": saved.author.id, "name": saved.author.name}
        assert raw["authors"] == [
            {"_id": item.id, "name": item.name} for item in saved.authors
        ]
    assert [item.name for item in book.authors] == ["Ann", "Bob"]


@pytest.mark.parametrize("stored", ["dbref", "objectid"])
async def test_a_plain_reference_assigned_is_refused_as_mongoengine_does(
    async_alias, stored
):
    """A DBRef or ObjectId the user assigns (in place of a stored one, or
    added to a list beside stored ones) is no reference read from the
    database: validation refuses it as MongoEngine's does, and nothing is
    written (it was saved unchecked, as a stored one is kept)."""
    author = await CrPlainAuthor(name="Ann").async_save()
    reference = await _plain_book(author.id, stored)
    other = ObjectId()
    given = DBRef("cr_plain_author", other) if stored == "dbref" else other
    changes: list[tuple[str, Any]] = [
        ("author", lambda book: setattr(book, "author", given)),
        ("authors", lambda book: book.authors.append(given)),
        ("authors", lambda book: setattr(book, "authors", [given])),
    ]
    for name, change in changes:
        book = await CrPlainBook.objects.async_get()
        book.title = "Changed"
        change(book)
        place = "1." if name == "authors" and len(book.authors) == 2 else ""
        message = (
            f"ValidationError (CrPlainBook:{book.id}) ({place}A "
            f"CachedReferenceField only accepts documents: [{name!r}])"
        )
        with pytest.raises(ValidationError) as raised:
            await book.async_save()
        assert str(raised.value) == message
        raw = await get_async_db().cr_plain_book.find_one({"_id": book.id})
        assert raw == {
            "_id": book.id,
            "title": "Plain",
            "author": reference,
            "authors": [reference],
        }
    book = await CrPlainBook.objects.async_get()
    book.author = given
    with pytest.raises(ValidationError) as raised:
        book.to_mongo()
    assert str(raised.value) == "Only accept a document object"
    book = await CrPlainBook.objects.async_get()
    book.author = (await CrPlainBook.objects.async_get()).author.id
    with pytest.raises(ValidationError, match="only accepts documents"):
        book.validate()  # (the id of a proxy of a stored one: the user's)
    book = await CrPlainBook.objects.async_get()
    book.authors  # noqa: B018  (read: its items are proxies)
    for copied in (copy.deepcopy(book), pickle.loads(pickle.dumps(book))):
        copied.title = "Copied"  # (its stored references: still taken)
        await copied.async_save()
        raw = await get_async_db().cr_plain_book.find_one({"_id": book.id})
        assert raw["title"] == "Copied" and raw["authors"] == [reference]
        assert type(raw["authors"][0]) is type(reference)


@pytest.mark.parametrize("stored", ["dbref", "objectid"])
async def test_select_related_loads_plain_references(async_alias, command_log, stored):
    """Loaded, one query for all; a missing one (marked so) raises
    DoesNotExist naming its field when read, and saves as it was stored,
    read or not."""
    author = await CrPlainAuthor(name="Ann", country="UK").async_save()
    await _plain_book(author.id, stored)
    missing = await _plain_book(ObjectId(), stored)
    command_log.clear()
    books = await CrPlainBook.objects.order_by("_id").async_select_related()
    assert command_log.names == ["find", "find"]
    assert books[0].author.country == books[0].authors[0].country == "UK"
    assert type(books[0].author) is CrPlainAuthor
    books[1].title = "Saved before reading"
    await books[1].async_save()
    raw = await get_async_db().cr_plain_book.find_one({"_id": books[1].id})
    assert raw["author"] == missing and raw["authors"] == [missing]
    assert raw["title"] == "Saved before reading"
    for name in ("author", "authors"):
        proxy = getattr(books[1], name)
        proxy = proxy[0] if name == "authors" else proxy
        with pytest.raises(CrPlainAuthor.DoesNotExist) as raised:
            proxy.name  # noqa: B018
        assert str(raised.value).endswith(f" (reference {name!r})")
    books[1].validate()
    assert books[1].to_mongo()["author"] == missing
    book = await CrPlainBook.objects.order_by("_id").async_first()
    assert book is not None
    await book.async_select_related()
    assert book.author.name == book.authors[0].name == "Ann"


@pytest.mark.parametrize("stored", ["dbref", "objectid"])
async def test_reload_and_no_dereference_of_a_plain_reference(async_alias, stored):
    author = await CrPlainAuthor(name="Ann", country="UK").async_save()
    reference = await _plain_book(author.id, stored)
    book = await CrPlainBook.objects.async_get()
    await book.author
    await book.async_reload()
    assert isinstance(book.author, AsyncReferenceProxy)
    assert (await book.author).name == "Ann"
    async with async_no_dereference(CrPlainBook):
        book = await CrPlainBook.objects.async_get()
        # (marked as read from the database: the class is a subclass of its own)
        assert book.author == reference and isinstance(book.author, type(reference))
        assert list(book.authors) == [reference]
    assert isinstance(book.author, AsyncReferenceProxy)


class MePlainAuthor(mongoengine.Document):
    name = mongoengine.StringField()
    country = mongoengine.StringField()
    meta = {"collection": "cr_plain_author"}


class MePlainBook(mongoengine.Document):
    title = mongoengine.StringField()
    author = mongoengine.CachedReferenceField(MePlainAuthor, fields=["name"])
    authors = mongoengine.ListField(
        mongoengine.CachedReferenceField(MePlainAuthor, fields=["name"])
    )
    meta = {"collection": "cr_plain_book"}


def _sync_read(book: Any, name: str) -> tuple[str, Any]:
    """What reading ``name`` of ``book`` gives (its class's name, with our
    test classes' prefix, and its id) or raises (the error's type and text)."""
    try:
        value = getattr(book, name)
    except Exception as error:  # (MongoEngine's own errors are compared)
        return type(error).__name__, str(error)
    if isinstance(value, list):
        return "list", [_sync_value(item) for item in value]
    return _sync_value(value)


def _sync_value(value: Any) -> tuple[str, Any]:
    return type(value).__name__.replace("Me", "Cr"), getattr(value, "id", value)


@pytest.mark.parametrize("stored", ["dbref", "objectid"])
def test_a_plain_reference_on_a_sync_alias_reads_as_in_mongoengine(
    sync_default, stored
):
    """MongoEngine's reads, the same for our classes and its own: a DBRef is
    loaded (in a list, its DeReference fails), an ObjectId left as stored;
    and saving is refused the same way."""
    author = CrPlainAuthor(name="Ann", country="UK").save()
    reference = DBRef("cr_plain_author", author.id) if stored == "dbref" else author.id
    sync_default.cr_plain_book.insert_one(
        {"title": "Plain", "author": reference, "authors": [reference]}
    )
    reads, errors = [], []
    for book_class in (CrPlainBook, MePlainBook):
        book = book_class.objects.get()
        reads.append([_sync_read(book, "author"), _sync_read(book, "authors")])
        with pytest.raises(ValidationError) as raised:
            book.save()
        errors.append(str(raised.value).replace("MePlain", "CrPlain"))
    assert reads[0] == reads[1]
    assert errors[0] == errors[1]
    if stored == "dbref":
        message = "'CachedReferenceField' object has no attribute '_get_db'"
        assert reads[0] == [("CrPlainAuthor", author.id), ("AttributeError", message)]
    else:
        assert reads[0] == [
            ("ObjectId", author.id),
            ("list", [("ObjectId", author.id)]),
        ]


class CrKeyedAuthor(Document):
    key = DynamicField(primary_key=True)
    name = StringField()


class CrKeyedBook(Document):
    title = StringField()
    author = CachedReferenceField(CrKeyedAuthor, fields=["name"])
    authors = ListField(CachedReferenceField(CrKeyedAuthor, fields=["name"]))


@pytest.mark.parametrize("key", ["ann", 7])
async def test_a_bare_id_of_a_class_keyed_otherwise_reads_as_a_proxy(
    async_alias, command_log, key
):
    """The id a ReferenceField(dbref=False) stores for a class whose primary
    key is no ObjectId reads as a stored ObjectId does (it read as the bare
    value, ``await`` raised TypeError and saving the untouched document
    raised ValidationError): a proxy to await, saved as it was stored, read
    as a DBRef inside no_dereference, refused when the user assigns one."""
    await CrKeyedAuthor(key=key, name="Ann").async_save()
    raw = {"title": "Keyed", "author": key, "authors": [key]}
    await get_async_db().cr_keyed_book.insert_one(raw)
    book = await CrKeyedBook.objects.async_get()
    command_log.clear()
    proxies = [book.author, book.authors[0]]
    assert command_log.names == []
    for proxy in proxies:
        assert isinstance(proxy, AsyncReferenceProxy) and proxy.id == key
        assert (await proxy).name == "Ann"
    assert command_log.names == ["find", "find"]
    for copied in (book, copy.deepcopy(book), pickle.loads(pickle.dumps(book))):
        copied.title = "Saved"
        await copied.async_save()
        stored = await get_async_db().cr_keyed_book.find_one({"_id": book.id})
        assert stored == {**raw, "_id": book.id, "title": "Saved"}
        book = await CrKeyedBook.objects.async_get()
    assert type(stored["author"]) is type(key)
    assert (
        json.loads(book.to_json(json_options=json_util.RELAXED_JSON_OPTIONS))["author"]
        == key
    )
    await CrKeyedBook.objects.async_update(set__author=None)
    await CrKeyedBook.objects.async_update(set__author=book.author)
    assert (await get_async_db().cr_keyed_book.find_one())["author"] == key
    async with async_no_dereference(CrKeyedBook):  # (a DBRef, as a stored one)
        book = await CrKeyedBook.objects.async_get()
        reference = DBRef("cr_keyed_author", key)
        assert book.author == reference and list(book.authors) == [reference]
    await CrKeyedAuthor.objects.async_delete()
    book = (await CrKeyedBook.objects.async_select_related())[0]
    message = f"unknown document DBRef('cr_keyed_author', {key!r})"
    with pytest.raises(CrKeyedAuthor.DoesNotExist, match=re.escape(message)):
        book.author.name  # noqa: B018
    book.author = key
    with pytest.raises(ValidationError, match="only accepts documents"):
        await book.async_save()


@pytest.mark.parametrize("stored", ["dbref", "key"])
async def test_the_dbref_of_a_plain_reference_is_the_users_to_assign(
    async_alias, stored
):
    """``as_dbref()`` of the proxy of a stored DBRef (or bare id) is a plain
    DBRef: assigned to a CachedReferenceField it is refused, as MongoEngine
    refuses a DBRef (it was the marked stored value, saved unchecked; for a
    bare id, as the bare id)."""
    if stored == "dbref":
        author = await CrPlainAuthor(name="Ann").async_save()
        await _plain_book(author.id, stored)
        book_cls: Any = CrPlainBook
        expected = DBRef("cr_plain_author", author.id)
    else:
        await CrKeyedAuthor(key="ann", name="Ann").async_save()
        await get_async_db().cr_keyed_book.insert_one({"author": "ann"})
        book_cls, expected = CrKeyedBook, DBRef("cr_keyed_author", "ann")
    book = await book_cls.objects.async_get()
    dbref = book.author.as_dbref()
    assert dbref == expected and type(dbref) is DBRef
    other = await book_cls(title="Other").async_save()
    other.author = dbref
    message = (
        f"ValidationError ({book_cls.__name__}:{other.id}) (A "
        "CachedReferenceField only accepts documents: ['author'])"
    )
    with pytest.raises(ValidationError) as raised:
        await other.async_save()
    assert str(raised.value) == message
    raw = await get_async_db()[book_cls._get_collection_name()].find_one(
        {"_id": other.id}
    )
    assert "author" not in raw


@pytest.mark.parametrize("stored", ["dbref", "objectid", "key"])
async def test_a_save_keeping_loaded_plain_references_takes_the_plain_update(
    async_alias, command_log, stored
):
    """The plain references a load marks hold no change of their own, as the
    DBRef, ObjectId or bare id they are equal to (MongoEngine does not look
    into them): a save of another field builds its update by the plan, not
    by MongoEngine's ``_delta`` (which it left them to), the same update."""
    if stored == "key":
        await CrKeyedAuthor(key="ann", name="Ann").async_save()
        await get_async_db().cr_keyed_book.insert_one(
            {"title": "Keyed", "author": "ann", "authors": ["ann"]}
        )
        book = await CrKeyedBook.objects.async_get()
    else:
        author = await CrPlainAuthor(name="Ann").async_save()
        reference = await _plain_book(author.id, stored)
        book = await CrPlainBook.objects.async_get()
        assert book._data["author"] == reference
    book.title = "Saved"
    expected = {"$set": {"title": "Saved"}}
    assert deltas.plain_update(book, type(book).to_mongo) == expected
    assert {"$set": book._delta()[0]} == expected  # (MongoEngine's own)
    command_log.clear()
    await book.async_save()
    [update] = [e.command for e in command_log.events if e.command_name == "update"]
    assert update["updates"][0]["u"] == expected
    raw = await get_async_db()[type(book)._get_collection_name()].find_one()
    assert (raw["author"], raw["authors"]) == (
        ("ann", ["ann"]) if stored == "key" else (reference, [reference])
    )


class MeKeyedAuthor(mongoengine.Document):
    key = mongoengine.DynamicField(primary_key=True)
    name = mongoengine.StringField()
    meta = {"collection": "cr_keyed_author"}


class MeKeyedBook(mongoengine.Document):
    title = mongoengine.StringField()
    author = mongoengine.CachedReferenceField(MeKeyedAuthor, fields=["name"])
    authors = mongoengine.ListField(
        mongoengine.CachedReferenceField(MeKeyedAuthor, fields=["name"])
    )
    meta = {"collection": "cr_keyed_book"}


class CrDynamicBook(DynamicDocument):
    """Built by MongoEngine's ``__init__`` (no plan for a dynamic document)."""

    title = StringField()
    author = CachedReferenceField(CrPlainAuthor, fields=["name"])
    by_name = DictField(CachedReferenceField(CrPlainAuthor, fields=["name"]))


class MeDynamicBook(mongoengine.DynamicDocument):
    title = mongoengine.StringField()
    author = mongoengine.CachedReferenceField(MePlainAuthor, fields=["name"])
    by_name = mongoengine.DictField(
        mongoengine.CachedReferenceField(MePlainAuthor, fields=["name"])
    )
    meta = {"collection": "cr_dynamic_book"}


_OID = ObjectId()
_GIVEN_TO_CONSTRUCTORS = {
    "dbref": (CrPlainBook, {"author": DBRef("cr_plain_author", _OID)}),
    "objectid": (CrPlainBook, {"author": _OID}),
    "objectids": (CrPlainBook, {"authors": [_OID]}),
    "dbrefs": (CrPlainBook, {"authors": (DBRef("cr_plain_author", _OID),)}),
    "key": (CrKeyedBook, {"author": "ann"}),
    "int key": (CrKeyedBook, {"author": 7}),
    "keys": (CrKeyedBook, {"authors": ["ann"]}),
    "keyed dbref": (CrKeyedBook, {"author": DBRef("cr_keyed_author", "ann")}),
    "dynamic": (CrDynamicBook, {"author": _OID, "extra": 1}),
    "dynamic, dict": (CrDynamicBook, {"by_name": {"ann": _OID}}),
}


@pytest.mark.parametrize("given", list(_GIVEN_TO_CONSTRUCTORS))
async def test_a_plain_reference_given_to_the_constructor_is_refused(
    async_alias, given
):
    """A DBRef, ObjectId or bare id given to the constructor (alone, in a list
    or dict; built by the plan or by MongoEngine's
    ``__init__``) is refused as MongoEngine refuses it: the constructor
    converted it with the load's ``to_python``, which marks it as a load's, so
    it was saved (or inserted) unchecked ("ann" too since the bare ids are
    marked)."""
    cls, values = _GIVEN_TO_CONSTRUCTORS[given]
    theirs = {
        CrPlainBook: MePlainBook,
        CrKeyedBook: MeKeyedBook,
        CrDynamicBook: MeDynamicBook,
    }[cls]
    with pytest.raises(ValidationError) as expected:
        theirs(**values).validate()
    for save in (cls(**values).async_save, lambda: cls.objects.async_create(**values)):
        with pytest.raises(ValidationError) as raised:
            await save()
        assert str(raised.value) == str(expected.value).replace("Me", "Cr", 1)
    with pytest.raises(ValidationError) as expected:  # (insert does not validate)
        theirs(**values).to_mongo()
    with pytest.raises(ValidationError) as raised:
        await cls.objects.async_insert([cls(**values)], load_bulk=False)
    assert str(raised.value) == str(expected.value)
    assert await get_async_db()[cls._get_collection_name()].count_documents({}) == 0


@pytest.mark.parametrize("stored", ["dbref", "objectid", "key"])
async def test_a_loaded_plain_reference_given_to_the_constructor_is_kept(
    async_alias, stored
):
    """A plain reference as a load marks it (read inside no_dereference) is
    saved as stored when given to the constructor, as when assigned (a bare id
    was marked again as a DBRef, and saved as one)."""
    if stored == "key":
        await get_async_db().cr_keyed_book.insert_one({"author": "ann"})
        cls: Any = CrKeyedBook
        reference: Any = "ann"
    else:
        reference = await _plain_book(ObjectId(), stored)
        cls = CrPlainBook
    async with async_no_dereference(cls):
        loaded = (await cls.objects.async_get()).author
    for name, value in (("author", loaded), ("authors", [loaded])):
        book = await cls(title="Copy", **{name: value}).async_save()
        raw = await get_async_db()[cls._get_collection_name()].find_one(
            {"_id": book.id}
        )
        kept = raw[name] if name == "author" else raw[name][0]
        assert kept == reference and type(kept) is type(reference)


_GIVEN_AS_JSON = {
    "dbref": (CrPlainBook, {"author": DBRef("cr_plain_author", _OID)}),
    "objectid": (CrPlainBook, {"author": _OID}),
    "dbrefs": (CrPlainBook, {"authors": [DBRef("cr_plain_author", _OID)]}),
    "key": (CrKeyedBook, {"author": "ann"}),
    "keys": (CrKeyedBook, {"authors": ["ann"]}),
}


@pytest.mark.parametrize("given", list(_GIVEN_AS_JSON))
@pytest.mark.parametrize("through", ["document", "queryset"])
async def test_a_plain_reference_given_as_json_is_refused(async_alias, given, through):
    """A DBRef, ObjectId or bare id in the JSON given to ``from_json`` (the
    document's or the queryset's) is the user's, as given to the constructor:
    refused as MongoEngine refuses it. ``from_json`` converts through
    ``_from_son``, the load's conversion, which marks it as a load's: it was
    saved unchecked."""
    cls, values = _GIVEN_AS_JSON[given]
    theirs = {CrPlainBook: MePlainBook, CrKeyedBook: MeKeyedBook}[cls]
    options = json_util.RELAXED_JSON_OPTIONS
    text = json_util.dumps(values, json_options=options)
    if through == "document":
        ours = cls.from_json(text, created=True, json_options=options)
        expected = theirs.from_json(text, created=True, json_options=options)
    else:
        ours = cls.objects.from_json(f"[{text}]")[0]
        # (MongoEngine's queryset, on no collection: it reads none)
        expected = mongoengine.QuerySet(theirs, None).from_json(f"[{text}]")[0]
    with pytest.raises(ValidationError) as refused:
        expected.validate()
    with pytest.raises(ValidationError) as raised:
        await ours.async_save()
    assert str(raised.value) == str(refused.value).replace("Me", "Cr", 1)
    assert await get_async_db()[cls._get_collection_name()].count_documents({}) == 0


async def test_from_json_keeps_a_stored_cache(async_alias):
    """A cached copy in the JSON (``_id`` and the cached fields) is kept as
    given to the constructor: saved as it is."""
    cache = {"_id": _OID, "name": "Ann"}
    options = json_util.RELAXED_JSON_OPTIONS
    text = json_util.dumps({"title": "T", "author": cache}, json_options=options)
    book = CrPlainBook.from_json(text, created=True, json_options=options)
    await book.async_save()
    raw = await get_async_db().cr_plain_book.find_one({"_id": book.id})
    assert raw["author"] == cache


class CrCrossedNames(DynamicDocument):
    """A field named as the other's stored name (built by ``__init__``)."""

    au = StringField(db_field="x")
    author = CachedReferenceField(CrPlainAuthor, fields=["name"], db_field="au")


async def test_a_field_named_as_a_stored_name_keeps_its_own_value(async_alias):
    """The constructor's values are keyed by field name: ``au`` given beside a
    loaded reference stays ``au``'s (it was taken for the field stored as
    ``au``, the reference replaced by the text, which validation refused)."""
    author = await CrPlainAuthor(name="Ann").async_save()
    reference = DBRef("cr_plain_author", author.id)
    await get_async_db().cr_crossed_names.insert_one({"au": reference})
    async with async_no_dereference(CrCrossedNames):
        loaded = (await CrCrossedNames.objects.async_get()).author
    copied = await CrCrossedNames(author=loaded, au="text").async_save()
    raw = await get_async_db().cr_crossed_names.find_one({"_id": copied.id})
    assert (raw["au"], raw["x"]) == (reference, "text")


@pytest.mark.parametrize("set_by_receiver", ["dbref", "loaded"])
async def test_a_reference_a_pre_init_receiver_sets_is_refused_as_mongoengine_does(
    async_alias, set_by_receiver
):
    """A ``pre_init`` receiver may change the constructor's values: a plain
    reference it sets (one a load read too: the receiver's, not given) is
    refused as MongoEngine refuses it. It was marked by the conversion and
    saved unchecked (the values given held none), or, set in place of the
    one given, replaced by that one."""
    author = await CrPlainAuthor(name="Ann").async_save()
    reference = DBRef("cr_plain_author", author.id)
    await get_async_db().cr_plain_book.insert_one({"author": reference})
    async with async_no_dereference(CrPlainBook):
        loaded = (await CrPlainBook.objects.async_get()).author
    set_value = reference if set_by_receiver == "dbref" else loaded

    def receiver(sender: Any, document: Any, values: dict, **kwargs: Any) -> None:
        values["author"] = set_value

    with pytest.raises(ValidationError) as expected:
        MePlainBook(author=reference).validate()
    pre_init.connect(receiver, sender=CrPlainBook)
    try:
        book = CrPlainBook(title="T", author=DBRef("cr_plain_author", ObjectId()))
    finally:
        pre_init.disconnect(receiver, sender=CrPlainBook)
    assert book._data["author"] == reference
    with pytest.raises(ValidationError) as raised:
        await book.async_save()
    assert str(raised.value) == str(expected.value).replace("Me", "Cr", 1)
    assert await get_async_db().cr_plain_book.count_documents({}) == 1


async def test_a_loaded_reference_a_post_init_receiver_assigns_is_kept(async_alias):
    """What a ``post_init`` receiver assigns is assigned: a loaded plain
    reference is kept as assigning it keeps it (saved as stored), beside a
    plain DBRef given to the constructor, refused still. The constructor's
    values were put back as given after ``post_init``, which unmarked the
    receiver's reference: validation refused it."""
    author = await CrPlainAuthor(name="Ann").async_save()
    reference = DBRef("cr_plain_author", author.id)
    await get_async_db().cr_plain_book.insert_one({"author": reference})
    async with async_no_dereference(CrPlainBook):
        loaded = (await CrPlainBook.objects.async_get()).author

    def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        document.author = loaded

    post_init.connect(receiver, sender=CrPlainBook)
    try:
        book = CrPlainBook(title="Copy")
        refused = CrPlainBook(title="Given", authors=[reference])
    finally:
        post_init.disconnect(receiver, sender=CrPlainBook)
    await book.async_save()
    raw = await get_async_db().cr_plain_book.find_one({"_id": book.id})
    assert raw["author"] == reference and type(raw["author"]) is DBRef
    with pytest.raises(ValidationError) as expected:
        MePlainBook(authors=[reference]).validate()
    with pytest.raises(ValidationError) as raised:
        await refused.async_save()
    assert str(raised.value) == str(expected.value).replace("Me", "Cr", 1)
    assert await get_async_db().cr_plain_book.count_documents({}) == 2
