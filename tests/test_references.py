"""Async references against a real mongod: proxies, lazy and generic references,
references inside containers, select_related without N+1, no_dereference.

Round trips are counted with PyMongo command monitoring (``command_log``).
"""

from __future__ import annotations

import asyncio
import copy
import gc
import pickle
import weakref

import mongoengine
import pytest
from bson import DBRef, ObjectId

import mongoengine_async.select_related as select_related_engine
from mongoengine_async import (
    AsyncReferenceProxy,
    AsyncUsageError,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    GenericLazyReferenceField,
    GenericReferenceField,
    IntField,
    LazyReference,
    LazyReferenceField,
    ListField,
    MapField,
    ReferenceField,
    StringField,
    async_no_dereference,
    async_switch_db,
    get_async_db,
)
from mongoengine_async.select_related import select_related
from mongoengine_async.testing import fresh_database

# -- models -------------------------------------------------------------------------


class RefPublisher(Document):
    name = StringField()


class RefAuthor(Document):
    name = StringField()
    publisher = ReferenceField(RefPublisher)


class RefEditor(Document):
    name = StringField()


class RefBook(Document):
    title = StringField()
    pages = IntField()
    author = ReferenceField(RefAuthor)


class RefDbRefBook(Document):
    title = StringField()
    author = ReferenceField(RefAuthor, dbref=True)


class RefLazyBook(Document):
    title = StringField()
    author = LazyReferenceField(RefAuthor)
    author_pt = LazyReferenceField(RefAuthor, passthrough=True)


class RefGenericHolder(Document):
    title = StringField()
    target = GenericReferenceField()
    lazy_target = GenericLazyReferenceField()


class RefCitation(EmbeddedDocument):
    note = StringField()
    author = ReferenceField(RefAuthor)


class RefShelf(Document):
    name = StringField()
    authors = ListField(ReferenceField(RefAuthor))
    by_role = DictField(field=ReferenceField(RefAuthor))
    by_name = MapField(ReferenceField(RefAuthor))
    citation = EmbeddedDocumentField(RefCitation)
    citations = EmbeddedDocumentListField(RefCitation)
    grid = ListField(ListField(ReferenceField(RefAuthor)))


class RefReadingList(Document):
    name = StringField()
    books = ListField(ReferenceField(RefBook))
    editors = ListField(ReferenceField(RefEditor))
    citation = EmbeddedDocumentField(RefCitation)


class RefPerson(Document):
    name = StringField()
    friend = ReferenceField("self")


class RefWriter(Document):
    name = StringField()
    latest = ReferenceField("RefNovel")


class RefNovel(Document):
    title = StringField()
    writer = ReferenceField(RefWriter)


class RefAnimal(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class RefDog(RefAnimal):
    bark = StringField()


class RefKennel(Document):
    animal = ReferenceField(RefAnimal)
    dog = ReferenceField(RefDog)


class RefTaggedBook(Document):
    title = StringField()
    tags = ListField(StringField())
    author = ReferenceField(RefAuthor)
    editor = ReferenceField(RefEditor)
    meta = {"strict": False}


class RefArchivedAuthor(Document):
    """Lives on another alias, in a collection named as RefAuthor's."""

    name = StringField()
    meta = {"db_alias": "ref_archive", "collection": "ref_author"}


class RefArchiveEntry(Document):
    author = ReferenceField(RefAuthor)
    archived = ReferenceField(RefArchivedAuthor)


class RefDogOwner(Document):
    dog = ReferenceField(RefDog)


class RefShelter(Document):
    animal = ReferenceField(RefAnimal)
    owner = ReferenceField(RefDogOwner)


class RefAlpha(Document):
    """Shares its collection with RefBeta; the two classes are unrelated."""

    name = StringField()
    meta = {"collection": "ref_shared"}


class RefBeta(Document):
    label = StringField()
    meta = {"collection": "ref_shared"}


class RefPair(Document):
    alpha = ReferenceField(RefAlpha)
    beta = ReferenceField(RefBeta)


class RefCreature(Document):
    name = StringField()
    meta = {"abstract": True}


class RefElf(RefCreature):
    pass


class RefOrc(RefCreature):
    pass


class RefMisc(Document):
    name = StringField()
    generic_list = ListField(GenericReferenceField())
    lazy_list = ListField(LazyReferenceField(RefAuthor))
    generic_lazy_list = ListField(GenericLazyReferenceField())
    animal = ReferenceField(RefAnimal)
    creature = ReferenceField(RefCreature)
    dict_of_lists = DictField(field=ListField(ReferenceField(RefAuthor)))
    cited = DictField(field=EmbeddedDocumentField(RefCitation))


# -- helpers ------------------------------------------------------------------------


async def raw(cls, pk):
    """The stored document, read with the driver (not through the models)."""
    return await get_async_db()[cls._get_collection_name()].find_one({"_id": pk})


def updates(command_log):
    """The ``u`` parts of every update command sent."""
    return [
        statement["u"]
        for event in command_log.events
        if event.command_name == "update"
        for statement in event.command["updates"]
    ]


async def make_author(name="Ann", publisher=None):
    return await RefAuthor(name=name, publisher=publisher).async_save()


async def make_book(author, title="Book", cls=RefBook):
    book = await cls(title=title, author=author).async_save()
    return await cls.objects.async_get(pk=book.pk)


# -- ReferenceField ----------------------------------------------------------------


async def test_reading_gives_proxy_without_io(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    command_log.clear()

    proxy = book.author
    assert isinstance(proxy, AsyncReferenceProxy)
    assert repr(proxy) == "<AsyncReferenceProxy: author (unfetched)>"
    assert proxy.id == author.id
    assert proxy.pk == author.pk
    assert book.author is proxy  # the same proxy on every read
    assert command_log.count() == 0


async def test_proxy_equality(async_alias, command_log):
    author = await make_author()
    other = await make_author("Bob")
    book = await make_book(author)
    command_log.clear()
    proxy = book.author
    dbref = DBRef("ref_author", author.id)

    assert proxy == author
    assert author == proxy
    assert proxy == author.id
    assert author.id == proxy
    assert proxy == dbref
    assert dbref == proxy
    assert (proxy != author) is False
    assert proxy != other
    assert other != proxy
    assert proxy != other.id
    assert proxy != DBRef("ref_author", other.id)
    assert proxy != DBRef("other_collection", author.id)
    assert hash(proxy) == hash(author.id)
    assert command_log.count() == 0


async def test_await_fetch_async_fetch_cached(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    command_log.clear()
    proxy = book.author

    first = await proxy
    assert isinstance(first, RefAuthor)
    assert first.name == "Ann" and first.pk == author.pk
    assert await proxy.fetch() is first
    assert await proxy.async_fetch() is first
    assert await proxy is first
    assert command_log.count("find") == 1
    assert command_log.count() == 1
    assert repr(proxy) == "<AsyncReferenceProxy: author (fetched)>"

    # After fetching, the field reads as the document itself.
    assert book.author is first
    assert isinstance(book.author, RefAuthor)
    assert command_log.count() == 1


async def test_field_async_fetch_stores_in_instance(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    command_log.clear()

    fetched = await RefBook.author.async_fetch(book)
    assert isinstance(fetched, RefAuthor)
    assert fetched.pk == author.pk
    assert command_log.count("find") == 1
    assert book.author is fetched
    # Already loaded: no further query.
    assert await RefBook.author.async_fetch(book) is fetched
    assert command_log.count("find") == 1


async def test_field_async_fetch_of_empty_reference(async_alias, command_log):
    book = await make_book(None)
    command_log.clear()
    assert book.author is None
    assert await RefBook.author.async_fetch(book) is None
    assert command_log.count() == 0


@pytest.mark.parametrize("cls", [RefBook, RefDbRefBook], ids=["objectid", "dbref"])
async def test_storage_dbref_true_and_false(async_alias, command_log, cls):
    author = await make_author()
    book = await make_book(author, cls=cls)
    stored = (await raw(cls, book.pk))["author"]
    if cls is RefDbRefBook:
        assert isinstance(stored, DBRef)
        assert stored == DBRef("ref_author", author.id)
    else:
        assert type(stored) is ObjectId
        assert stored == author.id

    command_log.clear()
    proxy = book.author
    assert isinstance(proxy, AsyncReferenceProxy)
    assert proxy.id == author.id
    assert proxy == author
    assert command_log.count() == 0
    assert (await proxy).name == "Ann"
    assert command_log.count("find") == 1


@pytest.mark.parametrize("cls", [RefBook, RefDbRefBook], ids=["objectid", "dbref"])
async def test_dangling_reference_raises_does_not_exist(async_alias, cls):
    author = await make_author()
    book = await make_book(author, cls=cls)
    await author.async_delete()

    with pytest.raises(RefAuthor.DoesNotExist) as info:
        await book.author
    assert isinstance(info.value, mongoengine.DoesNotExist)
    message = str(info.value)
    assert "ref_author" in message
    assert str(author.id) in message
    with pytest.raises(RefAuthor.DoesNotExist):
        await book.author.fetch()
    with pytest.raises(mongoengine.DoesNotExist):
        await RefBook.author.async_fetch(book) if cls is RefBook else (
            await RefDbRefBook.author.async_fetch(book)
        )
    # Still a proxy, still unfetched.
    assert isinstance(book.author, AsyncReferenceProxy)
    assert repr(book.author) == "<AsyncReferenceProxy: author (unfetched)>"


@pytest.mark.parametrize("cls", [RefBook, RefDbRefBook], ids=["objectid", "dbref"])
@pytest.mark.parametrize("fetch", [False, True], ids=["read", "fetched"])
async def test_save_after_reading_keeps_stored_value(
    async_alias, command_log, cls, fetch
):
    author = await make_author()
    book = await make_book(author, cls=cls)
    before = await raw(cls, book.pk)

    proxy = book.author
    if fetch:
        await proxy
        assert isinstance(book.author, RefAuthor)

    # Nothing changed: nothing is written.
    command_log.clear()
    await book.async_save()
    assert command_log.count("update") == 0
    assert await raw(cls, book.pk) == before

    # Another field changed: the update leaves the reference alone.
    book.title = "New title"
    command_log.clear()
    await book.async_save()
    assert command_log.count("update") == 1
    (update,) = updates(command_log)
    assert update == {"$set": {"title": "New title"}}
    after = await raw(cls, book.pk)
    assert after == {**before, "title": "New title"}
    assert type(after["author"]) is type(before["author"])


@pytest.mark.parametrize("fetch", [False, True], ids=["read", "fetched"])
async def test_insert_copy_with_proxy_keeps_stored_value(async_alias, fetch):
    """A full write (insert of a copy holding the proxy) stores the same value."""
    author = await make_author()
    for cls in (RefBook, RefDbRefBook):
        book = await make_book(author, cls=cls)
        if fetch:
            await book.author
        before = await raw(cls, book.pk)
        clone = cls(title=book.title, author=book.author)
        await clone.async_save()
        assert (await raw(cls, clone.pk))["author"] == before["author"]
        assert type((await raw(cls, clone.pk))["author"]) is type(before["author"])


async def test_assign_proxy_to_other_document(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    proxy = book.author
    assert isinstance(proxy, AsyncReferenceProxy)

    command_log.clear()
    other = await RefBook(title="Other", author=proxy).async_save()
    assert command_log.count("find") == 0
    assert (await raw(RefBook, other.pk))["author"] == author.id

    dbref_book = await RefDbRefBook(title="D", author=proxy).async_save()
    assert (await raw(RefDbRefBook, dbref_book.pk))["author"] == DBRef(
        "ref_author", author.id
    )

    # Assigned to an existing document and saved as a change.
    third = await make_book(None)
    third.author = proxy
    await third.async_save()
    assert (await raw(RefBook, third.pk))["author"] == author.id

    loaded = await RefBook.objects.async_get(pk=other.pk)
    assert (await loaded.author).name == "Ann"


async def test_query_by_proxy(async_alias, command_log):
    ann = await make_author("Ann")
    bob = await make_author("Bob")
    book = await make_book(ann, "A1")
    await make_book(ann, "A2")
    await make_book(bob, "B1")
    proxy = book.author

    titles = sorted(
        b.title for b in await RefBook.objects(author=proxy).async_to_list()
    )
    assert titles == ["A1", "A2"]
    assert await RefBook.objects(author=proxy).async_count() == 2
    assert await RefBook.objects(author__in=[proxy]).async_count() == 2
    assert await RefBook.objects(author__ne=proxy).async_count() == 1

    dbref_book = await make_book(ann, "D1", cls=RefDbRefBook)
    found = await RefDbRefBook.objects(author=dbref_book.author).async_to_list()
    assert [b.title for b in found] == ["D1"]

    # A fetched reference works the same way.
    await proxy
    assert await RefBook.objects(author=book.author).async_count() == 2


async def test_proxy_attribute_error_is_helpful(async_alias):
    author = await make_author()
    book = await make_book(author)
    with pytest.raises(AttributeError, match="await"):
        book.author.name  # noqa: B018


# -- LazyReferenceField -------------------------------------------------------------


async def test_lazy_reference_async_fetch_cached_and_force(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author, author_pt=author).async_save()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    command_log.clear()

    ref = book.author
    assert isinstance(ref, LazyReference)
    assert ref.pk == author.pk
    assert command_log.count() == 0

    document = await ref.async_fetch()
    assert isinstance(document, RefAuthor) and document.name == "Ann"
    assert command_log.count("find") == 1
    assert await ref.async_fetch() is document
    assert command_log.count("find") == 1
    # Sync fetch of an already-fetched reference needs no I/O.
    assert ref.fetch() is document

    # force=True goes to the server again and sees the change.
    await RefAuthor.objects(pk=author.pk).async_update(set__name="Changed")
    command_log.clear()
    forced = await ref.async_fetch(force=True)
    assert forced.name == "Changed"
    assert command_log.count("find") == 1
    assert await ref.async_fetch() is forced
    assert command_log.count("find") == 1


async def test_lazy_reference_fetch_unfetched_raises(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    command_log.clear()
    with pytest.raises(AsyncUsageError, match="async_fetch"):
        book.author.fetch()
    assert command_log.count() == 0


async def test_lazy_reference_passthrough(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author, author_pt=author).async_save()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    command_log.clear()

    ref = book.author_pt
    assert ref.pk == author.pk
    with pytest.raises(AsyncUsageError, match="async_fetch"):
        ref.name  # noqa: B018
    with pytest.raises(AsyncUsageError, match="async_fetch"):
        ref["name"]
    assert command_log.count() == 0

    await ref.async_fetch()
    assert command_log.count("find") == 1
    assert ref.name == "Ann"
    assert ref["name"] == "Ann"
    assert command_log.count("find") == 1


async def test_lazy_reference_dangling(async_alias):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    await author.async_delete()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    with pytest.raises(RefAuthor.DoesNotExist) as info:
        await book.author.async_fetch()
    assert isinstance(info.value, mongoengine.DoesNotExist)
    assert str(author.pk) in str(info.value)


async def test_lazy_reference_save_keeps_stored_value(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author, author_pt=author).async_save()
    before = await raw(RefLazyBook, saved.pk)
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    await book.author.async_fetch()
    await book.author_pt.async_fetch()
    book.title = "M"
    command_log.clear()
    await book.async_save()
    assert updates(command_log) == [{"$set": {"title": "M"}}]
    assert await raw(RefLazyBook, saved.pk) == {**before, "title": "M"}


# -- Generic references -------------------------------------------------------------


async def test_generic_reference_resolves_class(async_alias, command_log):
    author = await make_author("Ann")
    editor = await RefEditor(name="Eve").async_save()
    h1 = await RefGenericHolder(title="1", target=author).async_save()
    h2 = await RefGenericHolder(title="2", target=editor).async_save()
    one = await RefGenericHolder.objects.async_get(pk=h1.pk)
    two = await RefGenericHolder.objects.async_get(pk=h2.pk)
    command_log.clear()

    p1, p2 = one.target, two.target
    assert isinstance(p1, AsyncReferenceProxy)
    assert isinstance(p2, AsyncReferenceProxy)
    assert repr(p1) == "<AsyncReferenceProxy: target (unfetched)>"
    assert p1.document_type is RefAuthor
    assert p2.document_type is RefEditor
    assert p1.id == author.id and p2.pk == editor.pk
    assert p1 == author and p2 == editor
    assert p1 != editor
    assert command_log.count() == 0

    got1, got2 = await p1, await p2
    assert type(got1) is RefAuthor and got1.name == "Ann"
    assert type(got2) is RefEditor and got2.name == "Eve"
    assert await p1.fetch() is got1
    assert command_log.count("find") == 2
    assert one.target is got1
    assert await RefGenericHolder.target.async_fetch(two) is got2
    assert command_log.count("find") == 2


async def test_generic_reference_field_async_fetch(async_alias, command_log):
    editor = await RefEditor(name="Eve").async_save()
    h = await RefGenericHolder(title="1", target=editor).async_save()
    holder = await RefGenericHolder.objects.async_get(pk=h.pk)
    command_log.clear()
    got = await RefGenericHolder.target.async_fetch(holder)
    assert type(got) is RefEditor
    assert holder.target is got
    assert command_log.count("find") == 1


async def test_generic_lazy_reference_resolves_class(async_alias, command_log):
    author = await make_author("Ann")
    editor = await RefEditor(name="Eve").async_save()
    h1 = await RefGenericHolder(title="1", lazy_target=author).async_save()
    h2 = await RefGenericHolder(title="2", lazy_target=editor).async_save()
    one = await RefGenericHolder.objects.async_get(pk=h1.pk)
    two = await RefGenericHolder.objects.async_get(pk=h2.pk)
    command_log.clear()

    r1, r2 = one.lazy_target, two.lazy_target
    assert isinstance(r1, LazyReference) and isinstance(r2, LazyReference)
    assert r1.document_type is RefAuthor
    assert r2.document_type is RefEditor
    assert r1.pk == author.pk
    assert command_log.count() == 0
    with pytest.raises(AsyncUsageError, match="async_fetch"):
        r1.fetch()

    got1 = await r1.async_fetch()
    got2 = await r2.async_fetch()
    assert type(got1) is RefAuthor and got1.name == "Ann"
    assert type(got2) is RefEditor and got2.name == "Eve"
    assert await r1.async_fetch() is got1
    assert command_log.count("find") == 2
    await r1.async_fetch(force=True)
    assert command_log.count("find") == 3


async def test_generic_references_save_keeps_stored_value(async_alias, command_log):
    author = await make_author("Ann")
    editor = await RefEditor(name="Eve").async_save()
    saved = await RefGenericHolder(
        title="1", target=author, lazy_target=editor
    ).async_save()
    before = await raw(RefGenericHolder, saved.pk)
    assert before["target"]["_cls"] == "RefAuthor"
    assert before["lazy_target"]["_cls"] == "RefEditor"

    for fetch in (False, True):
        holder = await RefGenericHolder.objects.async_get(pk=saved.pk)
        target, lazy = holder.target, holder.lazy_target
        if fetch:
            await target
            await lazy.async_fetch()
            assert type(holder.target) is RefAuthor
        command_log.clear()
        await holder.async_save()
        assert command_log.count("update") == 0
        holder.title = f"t{fetch}"
        await holder.async_save()
        assert updates(command_log) == [{"$set": {"title": f"t{fetch}"}}]
        after = await raw(RefGenericHolder, saved.pk)
        assert after == {**before, "title": f"t{fetch}"}

    # A generic proxy assigned elsewhere stores the same value.
    holder = await RefGenericHolder.objects.async_get(pk=saved.pk)
    copy_ = await RefGenericHolder(title="c", target=holder.target).async_save()
    assert (await raw(RefGenericHolder, copy_.pk))["target"] == before["target"]


# -- containers ---------------------------------------------------------------------


async def make_shelf():
    ann = await make_author("Ann")
    bob = await make_author("Bob")
    cid = await make_author("Cid")
    shelf = await RefShelf(
        name="s",
        authors=[ann, bob],
        by_role={"lead": ann, "second": bob},
        by_name={"cid": cid},
        citation=RefCitation(note="n", author=cid),
        citations=[
            RefCitation(note="a", author=ann),
            RefCitation(note="b", author=bob),
        ],
        grid=[[ann, bob], [cid]],
    ).async_save()
    loaded = await RefShelf.objects.async_get(pk=shelf.pk)
    return loaded, ann, bob, cid


def assert_proxy_of(value, author):
    assert isinstance(value, AsyncReferenceProxy), value
    assert value.id == author.id
    assert value == author


async def test_containers_read_as_proxies(async_alias, command_log):
    shelf, ann, bob, cid = await make_shelf()
    command_log.clear()

    assert len(shelf.authors) == 2
    assert_proxy_of(shelf.authors[0], ann)
    assert_proxy_of(shelf.authors[1], bob)
    assert_proxy_of(shelf.by_role["lead"], ann)
    assert_proxy_of(shelf.by_role["second"], bob)
    assert_proxy_of(shelf.by_name["cid"], cid)
    assert_proxy_of(shelf.citation.author, cid)
    assert_proxy_of(shelf.citations[0].author, ann)
    assert_proxy_of(shelf.citations[1].author, bob)
    assert_proxy_of(shelf.grid[0][0], ann)
    assert_proxy_of(shelf.grid[0][1], bob)
    assert_proxy_of(shelf.grid[1][0], cid)
    assert [a.id for a in shelf.authors] == [ann.id, bob.id]
    assert shelf.authors == [ann, bob]
    assert command_log.count() == 0


async def test_containers_await_items_fills_container(async_alias, command_log):
    shelf, _, bob, _ = await make_shelf()
    command_log.clear()

    first = await shelf.authors[0]
    assert type(first) is RefAuthor and first.name == "Ann"
    assert shelf.authors[0] is first
    assert_proxy_of(shelf.authors[1], bob)

    lead = await shelf.by_role["lead"]
    assert shelf.by_role["lead"] is lead and lead.name == "Ann"
    c = await shelf.by_name["cid"]
    assert shelf.by_name["cid"] is c and c.name == "Cid"
    emb = await shelf.citation.author
    assert shelf.citation.author is emb and emb.name == "Cid"
    emb_list = await shelf.citations[1].author
    assert shelf.citations[1].author is emb_list and emb_list.name == "Bob"
    nested = await shelf.grid[1][0]
    assert shelf.grid[1][0] is nested and nested.name == "Cid"
    nested_fetch = await shelf.grid[0][1].fetch()
    assert shelf.grid[0][1] is nested_fetch and nested_fetch.name == "Bob"
    assert command_log.count("find") == 7
    assert command_log.count() == 7


@pytest.mark.parametrize("fetch", [False, True], ids=["read", "fetched"])
async def test_containers_save_unchanged(async_alias, command_log, fetch):
    shelf, *_ = await make_shelf()
    before = await raw(RefShelf, shelf.pk)

    proxies = [
        shelf.authors[0],
        shelf.authors[1],
        shelf.by_role["lead"],
        shelf.by_name["cid"],
        shelf.citation.author,
        shelf.citations[0].author,
        shelf.citations[1].author,
        shelf.grid[0][0],
        shelf.grid[1][0],
    ]
    if fetch:
        for proxy in proxies:
            await proxy
        assert type(shelf.authors[0]) is RefAuthor
        assert type(shelf.citation.author) is RefAuthor
        assert type(shelf.grid[1][0]) is RefAuthor
    assert shelf._get_changed_fields() == []

    command_log.clear()
    await shelf.async_save()
    assert command_log.count("update") == 0
    shelf.name = "renamed"
    await shelf.async_save()
    assert updates(command_log) == [{"$set": {"name": "renamed"}}]
    assert await raw(RefShelf, shelf.pk) == {**before, "name": "renamed"}


async def test_container_change_still_saved(async_alias):
    """Replacing proxies does not hide real changes from change tracking."""
    shelf, ann, bob, cid = await make_shelf()
    await shelf.authors[0]
    shelf.authors.append(cid)
    shelf.by_role["third"] = cid
    await shelf.async_save()
    stored = await raw(RefShelf, shelf.pk)
    assert stored["authors"] == [ann.id, bob.id, cid.id]
    assert stored["by_role"] == {"lead": ann.id, "second": bob.id, "third": cid.id}


# -- select_related -----------------------------------------------------------------


async def make_library(n_authors=50, n_books=500):
    authors = await RefAuthor.objects.async_insert(
        [RefAuthor(name=f"A{i}") for i in range(n_authors)], load_bulk=False
    )
    await RefBook.objects.async_insert(
        [
            RefBook(title=f"B{i}", pages=i, author=authors[i % n_authors])
            for i in range(n_books)
        ],
        load_bulk=False,
    )
    return authors


async def test_proxy_is_the_stored_dbref_with_its_database_and_extras(async_alias):
    author = await make_author("Ann")
    database = get_async_db().name
    stored = DBRef("ref_author", author.pk, database, note="kept")
    collection = await RefBook._async_get_collection()
    await collection.insert_one({"title": "T", "author": stored})
    book = await RefBook.objects.async_get(title="T")

    proxy = book.author
    assert isinstance(proxy, AsyncReferenceProxy)
    assert (proxy.collection, proxy.id, proxy.database, proxy.note) == (
        "ref_author",
        author.pk,
        database,
        "kept",
    )
    assert proxy == stored and proxy.as_dbref() == stored
    assert book.to_mongo()["author"] == author.pk  # dbref=False stores the id
    assert (await proxy).name == "Ann"


async def test_a_fetched_reference_takes_the_proxys_place(async_alias, command_log):
    ann = await make_author("Ann")
    book = await make_book(ann)
    author = await book.author
    assert book._data["author"] is author  # what cascade saves and walks read

    command_log.clear()
    await book.async_select_related()
    assert command_log.names == []
    assert book.author is author
    author.name = "Anne"
    await book.async_save(cascade=True)
    assert (await RefAuthor.objects.async_get(pk=ann.pk)).name == "Anne"


async def test_reading_references_makes_no_reference_cycles(async_alias):
    ann = await make_author("Ann")
    await make_book(ann)
    await RefShelf(
        authors=[ann], grid=[[ann]], citation=RefCitation(author=ann)
    ).async_save()
    book = await RefBook.objects.async_first()
    shelf = await RefShelf.objects.async_first()
    proxies = [book.author, shelf.authors[0], shelf.grid[0][0], shelf.citation.author]
    assert all(isinstance(proxy, AsyncReferenceProxy) for proxy in proxies)
    await proxies[0]
    await proxies[1]
    held = [weakref.ref(proxy) for proxy in proxies]
    del proxies
    gc.disable()
    try:
        del book, shelf  # freed by reference counting alone: no cycle via a proxy
        assert [ref() for ref in held] == [None] * 4
    finally:
        gc.enable()


async def test_select_related_no_n_plus_one(async_alias, command_log):
    author_ids = await make_library()
    command_log.clear()

    books = await RefBook.objects.async_select_related()
    assert len(books) == 500
    assert command_log.count("find") == 2
    # The 500 books come in batches (getMore); nothing else is sent.
    assert set(command_log.names) <= {"find", "getMore"}
    finds = [e.command for e in command_log.events if e.command_name == "find"]
    assert finds[0]["find"] == "ref_book"
    assert finds[1]["find"] == "ref_author"
    assert len(finds[1]["filter"]["_id"]["$in"]) == 50

    for book in books:
        assert type(book.author) is RefAuthor
        assert book.author.pk == author_ids[book.pages % 50]
        assert book.author.name == f"A{book.pages % 50}"
    # Books sharing an author share the loaded document.
    by_author = {}
    for book in books:
        by_author.setdefault(book.author.pk, book.author)
        assert by_author[book.author.pk] is book.author
    assert command_log.count("find") == 2


async def test_proxy_loop_is_n_plus_one(async_alias, command_log):
    await make_library()
    command_log.clear()

    books = await RefBook.objects.async_to_list()
    assert command_log.count("find") == 1
    for book in books:
        author = await book.author
        assert type(author) is RefAuthor
    assert command_log.count("find") == 501


async def test_select_related_filtered_queryset(async_alias, command_log):
    await make_library(n_authors=10, n_books=40)
    command_log.clear()
    books = await RefBook.objects(pages__lt=5).async_select_related()
    assert sorted(b.pages for b in books) == [0, 1, 2, 3, 4]
    assert all(type(b.author) is RefAuthor for b in books)
    assert command_log.count("find") == 2
    assert len(command_log.events[1].command["filter"]["_id"]["$in"]) == 5


async def test_select_related_through_containers(async_alias, command_log):
    ann, bob, cid = [await make_author(n) for n in ("Ann", "Bob", "Cid")]
    for i in range(5):
        await RefShelf(
            name=f"s{i}",
            authors=[ann, bob],
            by_role={"lead": cid},
            by_name={"x": bob},
            citation=RefCitation(note="n", author=cid),
            citations=[RefCitation(note="a", author=ann)],
            grid=[[ann], [bob, cid]],
        ).async_save()
    command_log.clear()

    shelves = await RefShelf.objects.async_select_related()
    assert len(shelves) == 5
    assert command_log.count("find") == 2
    for shelf in shelves:
        assert [type(a) for a in shelf.authors] == [RefAuthor, RefAuthor]
        assert [a.name for a in shelf.authors] == ["Ann", "Bob"]
        assert type(shelf.by_role["lead"]) is RefAuthor
        assert shelf.by_name["x"].name == "Bob"
        assert shelf.citation.author.name == "Cid"
        assert shelf.citations[0].author.name == "Ann"
        assert [[a.name for a in row] for row in shelf.grid] == [
            ["Ann"],
            ["Bob", "Cid"],
        ]
    assert command_log.count() == 2


async def test_select_related_several_collections(async_alias, command_log):
    ann = await make_author("Ann")
    eve = await RefEditor(name="Eve").async_save()
    ed2 = await RefEditor(name="Ed").async_save()
    books = [await RefBook(title=f"B{i}", author=ann).async_save() for i in range(3)]
    for i in range(4):
        await RefReadingList(
            name=f"r{i}",
            books=books,
            editors=[eve, ed2],
            citation=RefCitation(author=ann),
        ).async_save()
    command_log.clear()

    lists = await RefReadingList.objects.async_select_related()
    # reading lists, books, editors, authors (the citation): one each.
    assert command_log.count("find") == 4
    collections = sorted(e.command["find"] for e in command_log.events)
    assert collections == sorted(
        ["ref_reading_list", "ref_book", "ref_editor", "ref_author"]
    )
    for reading_list in lists:
        assert [b.title for b in reading_list.books] == ["B0", "B1", "B2"]
        assert [e.name for e in reading_list.editors] == ["Eve", "Ed"]
        assert reading_list.citation.author.name == "Ann"
        # max_depth=1: the books' own authors stay proxies.
        assert isinstance(reading_list.books[0].author, AsyncReferenceProxy)
    assert command_log.count() == 4

    command_log.clear()
    lists = await RefReadingList.objects.async_select_related(max_depth=2)
    assert command_log.count("find") == 4  # ann already loaded at depth 1
    for reading_list in lists:
        assert type(reading_list.books[0].author) is RefAuthor
        assert reading_list.books[0].author.name == "Ann"


async def test_select_related_one_query_for_classes_sharing_a_collection(
    async_alias, command_log
):
    cat = await RefAnimal(name="Tom").async_save()
    dog = await RefDog(name="Rex", bark="woof").async_save()
    await RefKennel(animal=cat, dog=dog).async_save()
    await RefKennel(animal=dog, dog=dog).async_save()
    command_log.clear()

    first, second = await RefKennel.objects.order_by("id").async_select_related()
    assert [e.command["find"] for e in command_log.events] == [
        "ref_kennel",
        "ref_animal",
    ]
    assert type(first.animal) is RefAnimal and first.animal.name == "Tom"
    assert type(first.dog) is RefDog and first.dog.bark == "woof"
    assert second.animal is second.dog is first.dog


async def test_select_related_max_depth_two(async_alias, command_log):
    publishers = [await RefPublisher(name=f"P{i}").async_save() for i in range(3)]
    authors = [await make_author(f"A{i}", publishers[i % 3]) for i in range(6)]
    for i in range(30):
        await RefBook(title=f"B{i}", author=authors[i % 6]).async_save()
    command_log.clear()

    books = await RefBook.objects.async_select_related(max_depth=2)
    assert command_log.count("find") == 3
    assert [e.command["find"] for e in command_log.events] == [
        "ref_book",
        "ref_author",
        "ref_publisher",
    ]
    for book in books:
        assert type(book.author) is RefAuthor
        assert type(book.author.publisher) is RefPublisher
        assert book.author.publisher.name == f"P{int(book.author.name[1:]) % 3}"

    command_log.clear()
    books = await RefBook.objects.async_select_related(max_depth=1)
    assert command_log.count("find") == 2
    assert all(isinstance(b.author.publisher, AsyncReferenceProxy) for b in books)


async def test_select_related_reuses_the_results_at_every_level(
    async_alias, command_log
):
    writer = await RefWriter(name="W").async_save()
    await RefNovel(title="first", writer=writer).async_save()
    await RefNovel(title="latest", writer=writer).async_save()
    writer.latest = await RefNovel.objects.async_get(title="latest")
    await writer.async_save()
    command_log.clear()

    novels = await RefNovel.objects.order_by("title").async_select_related(max_depth=2)
    assert command_log.count("find") == 2  # the novels, then the writer
    assert novels[0].writer.latest is novels[1]

    latest = await RefNovel.objects.async_get(title="latest")
    command_log.clear()
    await latest.async_select_related(max_depth=2)
    assert command_log.count("find") == 1  # the writer
    assert latest.writer.latest is latest


async def test_select_related_cycles_terminate(async_alias, command_log):
    a = await RefPerson(name="A").async_save()
    b = await RefPerson(name="B", friend=a).async_save()
    a.friend = b
    await a.async_save()
    me = await RefPerson(name="Me").async_save()
    me.friend = me
    await me.async_save()
    command_log.clear()

    people = await asyncio.wait_for(
        RefPerson.objects.async_select_related(max_depth=5), timeout=10
    )
    # Every target is one of the results themselves: one query in all.
    assert command_log.count("find") == 1
    by_name = {p.name: p for p in people}
    assert by_name["A"].friend is by_name["B"]
    assert by_name["B"].friend is by_name["A"]
    assert by_name["A"].friend.friend is by_name["A"]
    assert by_name["Me"].friend is by_name["Me"]


async def test_select_related_cycle_from_single_document(async_alias, command_log):
    a = await RefPerson(name="A").async_save()
    b = await RefPerson(name="B", friend=a).async_save()
    c = await RefPerson(name="C", friend=b).async_save()
    a.friend = c
    await a.async_save()
    start = await RefPerson.objects.async_get(pk=a.pk)
    command_log.clear()

    await asyncio.wait_for(start.async_select_related(max_depth=5), timeout=10)
    # A -> C -> B -> A: one query for C, one for B, A is known already.
    assert command_log.count("find") == 2
    assert start.friend.name == "C"
    assert start.friend.friend.name == "B"
    assert start.friend.friend.friend is start


async def test_select_related_missing_target_left_as_proxy(async_alias, command_log):
    ann = await make_author("Ann")
    gone = await make_author("Gone")
    await RefBook(title="ok", author=ann).async_save()
    await RefBook(title="dangling", author=gone).async_save()
    await gone.async_delete()
    command_log.clear()

    books = {b.title: b for b in await RefBook.objects.async_select_related()}
    assert command_log.count("find") == 2
    assert type(books["ok"].author) is RefAuthor
    proxy = books["dangling"].author
    assert isinstance(proxy, AsyncReferenceProxy)
    assert proxy.id == gone.id
    with pytest.raises(RefAuthor.DoesNotExist) as info:
        await proxy
    assert str(gone.id) in str(info.value)


async def tagged_books() -> tuple[list, list]:
    """Books with two references each (one absent, one dangling), raw rows included."""
    authors = [await make_author(f"A{i}") for i in range(3)]
    editor = await RefEditor(name="E").async_save()
    gone = ObjectId()
    rows = [
        {
            "title": f"T{i}",
            "tags": ["x"],
            "author": authors[i % 3].pk,
            "editor": editor.pk,
        }
        for i in range(6)
    ]
    rows += [
        {"title": "no author", "editor": editor.pk},
        {"title": "gone", "author": gone},
    ]
    collection = await RefTaggedBook._async_get_collection()
    await collection.insert_many(rows)
    return rows, authors


def loaded_state(book: RefTaggedBook) -> dict:
    """What a loaded book holds, its references by class and id."""
    data = {
        name: (type(value).__name__, value.pk if isinstance(value, Document) else value)
        for name, value in book._data.items()
    }
    flags = (book._initialised, book._created, book._changed_fields, book.__dict__)
    return {"data": data, "flags": flags}


async def test_select_related_joined_while_loading_is_what_the_walk_gives(
    async_alias, command_log, monkeypatch
):
    _, authors = await tagged_books()
    walked = await select_related(
        await RefTaggedBook.objects.order_by("title").async_to_list()
    )
    walks = []
    monkeypatch.setattr(
        select_related_engine, "_walk_document", lambda *a: walks.append(a)
    )
    command_log.clear()

    joined = await RefTaggedBook.objects.order_by("title").async_select_related()
    assert walks == []  # the references were put in place as the books were built
    assert command_log.names == ["find", "find", "find"]  # books, authors, editors
    assert [loaded_state(book) for book in joined] == [
        loaded_state(book) for book in walked
    ]
    by_title = {book.title: book for book in joined}
    assert by_title["T0"].author is by_title["T3"].author  # one document per id
    assert by_title["T0"].editor is by_title["no author"].editor
    assert by_title["T1"].author.name == "A1"
    assert by_title["no author"].author is None
    with pytest.raises(RefAuthor.DoesNotExist):
        await by_title["gone"].author
    assert authors[0].pk == by_title["T0"].author.pk


async def test_select_related_results_stored_otherwise_are_walked(
    async_alias, command_log
):
    rows, _ = await tagged_books()
    collection = await RefTaggedBook._async_get_collection()
    # A key the model does not know sends its book to MongoEngine's loading;
    # the ids the join looked for, found or missing, are not queried again.
    await collection.insert_many(
        [
            {**rows[0], "_id": ObjectId(), "title": "extra", "x": 1},
            {**rows[-1], "_id": ObjectId(), "title": "extra gone", "x": 1},
        ]
    )
    command_log.clear()

    books = {b.title: b for b in await RefTaggedBook.objects.async_select_related()}
    assert command_log.names == ["find", "find", "find"]
    assert type(books["extra"].author) is RefAuthor
    assert books["extra"].author is books["T0"].author
    assert isinstance(books["extra gone"].author, AsyncReferenceProxy)
    assert books["extra gone"].author.id == rows[-1]["author"]

    # A reference stored as a DBRef: every book goes through the walk, the
    # queries stay one per collection.
    await collection.update_one(
        {"title": "T1"}, {"$set": {"author": DBRef("ref_author", rows[1]["author"])}}
    )
    command_log.clear()
    books = {b.title: b for b in await RefTaggedBook.objects.async_select_related()}
    assert command_log.names == ["find", "find", "find"]
    assert books["T1"].author is books["T4"].author
    assert books["T1"].author.name == "A1"
    assert type(books["extra"].editor) is RefEditor


async def test_select_related_join_reaches_the_next_level(async_alias, command_log):
    house = await RefPublisher(name="House").async_save()
    ann = await make_author("Ann", publisher=house)
    await make_book(ann, "One")
    await make_book(ann, "Two")
    command_log.clear()

    books = await RefBook.objects.async_select_related(max_depth=2)
    assert command_log.names == ["find", "find", "find"]
    assert {book.author.publisher.name for book in books} == {"House"}
    assert books[0].author is books[1].author


async def test_select_related_missing_in_container(async_alias):
    ann = await make_author("Ann")
    gone = await make_author("Gone")
    await RefShelf(name="s", authors=[ann, gone]).async_save()
    await gone.async_delete()
    (shelf,) = await RefShelf.objects.async_select_related()
    assert len(shelf.authors) == 2
    assert type(shelf.authors[0]) is RefAuthor
    assert isinstance(shelf.authors[1], AsyncReferenceProxy)
    with pytest.raises(RefAuthor.DoesNotExist):
        await shelf.authors[1]


async def test_document_async_select_related(async_alias, command_log):
    pub = await RefPublisher(name="P").async_save()
    ann = await make_author("Ann", pub)
    shelf = await RefShelf(
        name="s",
        authors=[ann],
        citation=RefCitation(author=ann),
        citations=[RefCitation(author=ann)],
    ).async_save()
    shelf = await RefShelf.objects.async_get(pk=shelf.pk)
    command_log.clear()

    result = await shelf.async_select_related()
    assert result is shelf
    assert command_log.count("find") == 1
    assert type(shelf.authors[0]) is RefAuthor
    assert shelf.citation.author is shelf.authors[0]
    assert isinstance(shelf.authors[0].publisher, AsyncReferenceProxy)

    book = await make_book(ann)
    command_log.clear()
    await book.async_select_related(max_depth=2)
    assert command_log.count("find") == 2
    assert book.author.publisher.name == "P"


async def test_select_related_fills_lazy_references(async_alias, command_log):
    ann = await make_author("Ann")
    bob = await make_author("Bob")
    editor = await RefEditor(name="Eve").async_save()
    for i in range(6):
        await RefLazyBook(
            title=f"L{i}", author=ann if i % 2 else bob, author_pt=ann
        ).async_save()
    await RefGenericHolder(title="g", lazy_target=editor, target=ann).async_save()
    command_log.clear()

    books = await RefLazyBook.objects.async_select_related()
    assert command_log.count("find") == 2
    for book in books:
        assert isinstance(book.author, LazyReference)
        doc = await book.author.async_fetch()
        assert type(doc) is RefAuthor
        assert book.author.fetch() is doc
        assert book.author_pt.name == "Ann"  # passthrough, cached
    assert command_log.count("find") == 2

    command_log.clear()
    (holder,) = await RefGenericHolder.objects.async_select_related()
    assert command_log.count("find") == 3  # holders, editors, authors
    assert (await holder.lazy_target.async_fetch()).name == "Eve"
    assert type(holder.target) is RefAuthor
    assert command_log.count("find") == 3


async def test_select_related_keeps_stored_values(async_alias, command_log):
    shelf, *_ = await make_shelf()
    before = await raw(RefShelf, shelf.pk)
    await shelf.async_select_related()
    assert type(shelf.authors[0]) is RefAuthor
    command_log.clear()
    await shelf.async_save()
    assert command_log.count("update") == 0
    shelf.name = "x"
    await shelf.async_save()
    assert updates(command_log) == [{"$set": {"name": "x"}}]
    assert await raw(RefShelf, shelf.pk) == {**before, "name": "x"}


async def test_select_related_empty_result(async_alias, command_log):
    assert await RefBook.objects.async_select_related() == []
    assert command_log.count("find") == 1


async def test_select_related_unrelated_classes_sharing_a_collection(
    async_alias, command_log
):
    alpha = await RefAlpha(name="a").async_save()
    beta = await RefBeta(label="b").async_save()
    await RefPair(alpha=alpha, beta=beta).async_save()
    command_log.clear()

    (joined,) = await RefPair.objects.async_select_related()
    assert command_log.names == [
        "find",
        "find",
        "find",
    ]  # one per class, as MongoEngine
    (walked,) = await select_related(await RefPair.objects.async_to_list())
    for pair in (joined, walked):
        assert type(pair.alpha) is RefAlpha and pair.alpha.name == "a"
        assert type(pair.beta) is RefBeta and pair.beta.label == "b"


@pytest.fixture
async def archive_alias(async_alias, mongodb_uri):
    """A second async alias, ``ref_archive``, on a database of its own."""
    async with fresh_database("ref_archive", mongodb_uri) as alias:
        yield alias


async def test_select_related_of_using_results_reuses_none_of_them(archive_alias):
    """References point to their class's database (as ``await proxy`` and
    MongoEngine load them), not to where ``using()`` read the results."""
    ann = ObjectId()
    default = await RefPerson._async_get_collection()
    await default.insert_one({"_id": ann, "name": "Ann"})
    async with async_switch_db(RefPerson, archive_alias):
        archive = await RefPerson._async_get_collection()
    await archive.insert_many(
        [{"_id": ann, "name": "Ann, archived"}, {"name": "Bob", "friend": ann}]
    )
    using = RefPerson.objects.using(archive_alias)
    (bob,) = await using.filter(name="Bob").async_to_list()
    assert (await bob.friend).name == "Ann"

    for depth in (1, 2):
        people = await using.order_by("name").async_select_related(max_depth=depth)
        assert [person.name for person in people] == ["Ann, archived", "Bob"]
        assert people[1].friend.name == "Ann"
        assert people[1].friend is not people[0]

    # A document moved with switch_db is where it was moved to.
    archived_ann = await using.filter(name__startswith="Ann").async_first()
    archived_ann.switch_db(archive_alias)
    await archived_ann.async_select_related()
    (bob,) = await using.filter(name="Bob").async_to_list()
    await select_related([archived_ann, bob])
    assert bob.friend.name == "Ann" and bob.friend is not archived_ann


async def test_select_related_looks_for_a_subclass_where_it_is_bound(archive_alias):
    """A subclass bound elsewhere than its parent class (here by
    async_switch_db) is looked for where it is bound, as awaiting does."""
    async with async_switch_db(RefDog, archive_alias):
        rex = await RefDog(name="Rex", bark="woof").async_save()
        await RefKennel(dog=rex).async_save()
        (kennel,) = await RefKennel.objects.async_to_list()
        assert (await kennel.dog).bark == "woof"
        (joined,) = await RefKennel.objects.async_select_related()
        (walked,) = await select_related(await RefKennel.objects.async_to_list())
    for kennel in (joined, walked):
        assert type(kennel.dog) is RefDog and kennel.dog.bark == "woof"


async def test_select_related_builds_a_document_without_cls_as_wanted(async_alias):
    """A referenced document stored without ``_cls`` is built as the class the
    reference wants (the most specific one, if several want it), as awaiting
    does; a stored ``_cls`` still decides."""
    rex, fido, tom = ObjectId(), ObjectId(), ObjectId()
    animals = await RefAnimal._async_get_collection()
    await animals.insert_many(
        [
            {"_id": rex, "name": "Rex"},
            {"_id": fido, "name": "Fido", "bark": "woof"},
            {"_id": tom, "name": "Tom", "_cls": "RefAnimal"},
        ]
    )
    await RefKennel(dog=rex).async_save()
    (kennel,) = await RefKennel.objects.async_select_related()
    assert type(kennel.dog) is RefDog
    await kennel.async_save()  # a RefDog where a RefDog is due

    await RefKennel(dog=fido, animal=fido).async_save()
    await RefKennel(animal=tom).async_save()
    joined = await RefKennel.objects.order_by("id").async_select_related()
    walked = await select_related(
        await RefKennel.objects.order_by("id").async_to_list()
    )
    for first, second, third in (joined, walked):
        assert type(first.dog) is RefDog
        assert type(second.dog) is RefDog and second.dog.bark == "woof"
        assert second.animal is second.dog
        assert type(third.animal) is RefAnimal and third.animal.name == "Tom"


async def test_select_related_rebuilds_as_wanted_a_level_down(async_alias):
    """A document without ``_cls`` loaded as the parent class at one level is
    loaded again when a reference to the subclass wants it further down."""
    rex = ObjectId()
    animals = await RefAnimal._async_get_collection()
    await animals.insert_one({"_id": rex, "name": "Rex"})
    owner = await RefDogOwner(dog=rex).async_save()
    await RefShelter(animal=rex, owner=owner).async_save()

    (shelter,) = await RefShelter.objects.async_select_related(max_depth=2)
    assert type(shelter.animal) is RefAnimal
    assert type(shelter.owner.dog) is RefDog and shelter.owner.dog.name == "Rex"
    await shelter.owner.async_save()  # a RefDog where a RefDog is due


async def test_select_related_of_partial_results_reuses_none_of_them(async_alias):
    ann = await RefPerson(name="Ann").async_save()
    await RefPerson(name="Bob", friend=ann).async_save()
    friends = RefPerson.objects.order_by("name")

    assert [
        friend and friend.name
        for friend in await friends.scalar("friend").async_select_related()
    ] == [None, "Ann"]
    _, bob = await friends.only("friend").async_select_related()
    assert bob.friend.name == "Ann"


async def test_select_related_tells_databases_apart(archive_alias):
    """Two classes in same-named collections of two databases, holding the
    same id: each reference gets the document of its own class."""
    assert RefArchivedAuthor._get_collection_name() == "ref_author"
    ann = await make_author("Ann")
    archived = RefArchivedAuthor(id=ann.id, name="Ann, archived")
    await archived.async_save(force_insert=True)
    await RefArchiveEntry(author=ann, archived=archived).async_save()

    (joined,) = await RefArchiveEntry.objects.async_select_related()
    (walked,) = await select_related(await RefArchiveEntry.objects.async_to_list())
    for entry in (joined, walked):
        assert type(entry.author) is RefAuthor
        assert entry.author.name == "Ann"
        assert type(entry.archived) is RefArchivedAuthor
        assert entry.archived.name == "Ann, archived"


# -- concurrency --------------------------------------------------------------------


async def test_concurrent_fetch_single_query(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    proxy = book.author
    command_log.clear()

    results = await asyncio.gather(*(proxy.fetch() for _ in range(20)))
    assert command_log.count("find") == 1
    assert all(result is results[0] for result in results)
    assert results[0].name == "Ann"


async def test_concurrent_mixed_awaits_single_query(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    proxy = book.author
    command_log.clear()

    async def via_await():
        return await proxy

    async def via_field():
        return await RefBook.author.async_fetch(book)

    awaitables = [via_await() for _ in range(5)]
    awaitables += [proxy.async_fetch() for _ in range(5)]
    awaitables += [via_field() for _ in range(5)]
    results = await asyncio.gather(*awaitables)
    assert command_log.count("find") == 1
    assert len({id(r) for r in results}) == 1


async def test_concurrent_fetch_of_missing_raises_for_all(async_alias):
    author = await make_author()
    book = await make_book(author)
    await author.async_delete()
    proxy = book.author
    results = await asyncio.gather(
        *(proxy.fetch() for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RefAuthor.DoesNotExist) for r in results)


async def test_concurrent_lazy_fetch_single_query(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    reference = book.author
    command_log.clear()

    results = await asyncio.gather(*(reference.async_fetch() for _ in range(200)))
    assert command_log.names == ["find"]
    assert all(result is results[0] for result in results)
    assert results[0].name == "Ann" and book.author.fetch() is results[0]


async def test_concurrent_lazy_fetches_in_two_event_loops(async_alias):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    reference = (await RefLazyBook.objects.async_get(pk=saved.pk)).author
    await asyncio.gather(*(reference.async_fetch() for _ in range(3)))
    await RefAuthor.objects(pk=author.pk).async_update(set__name="Bea")

    async def in_another_loop():
        # A lock kept from the first loop would be bound to it: RuntimeError.
        return await asyncio.gather(
            *(reference.async_fetch(force=True) for _ in range(3))
        )

    results = await asyncio.to_thread(asyncio.run, in_another_loop())
    assert [result.name for result in results] == ["Bea"] * 3


async def test_concurrent_forced_lazy_fetches_each_query(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    reference = (await RefLazyBook.objects.async_get(pk=saved.pk)).author
    command_log.clear()
    fetches = [reference.async_fetch(force=True) for _ in range(3)]
    results = await asyncio.gather(reference.async_fetch(), *fetches)
    assert command_log.names == ["find"] * 4  # one after another
    assert results[-1] is reference.fetch()


async def test_concurrent_lazy_fetch_of_missing_raises_for_all(async_alias):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    await author.async_delete()
    reference = (await RefLazyBook.objects.async_get(pk=saved.pk)).author
    results = await asyncio.gather(
        *(reference.async_fetch() for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(result, RefAuthor.DoesNotExist) for result in results)


# -- async_no_dereference -----------------------------------------------------------


async def test_no_dereference_reads_stored_value(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    dbook = await make_book(author, cls=RefDbRefBook)
    shelf = await RefShelf(name="s", authors=[author]).async_save()
    shelf = await RefShelf.objects.async_get(pk=shelf.pk)
    command_log.clear()

    async with async_no_dereference(RefBook) as cls:
        assert cls is RefBook
        value = book.author
        assert isinstance(value, DBRef)
        assert not isinstance(value, AsyncReferenceProxy)
        assert value.id == author.id
        # Other classes are not affected.
        assert isinstance(dbook.author, AsyncReferenceProxy)
    assert isinstance(book.author, AsyncReferenceProxy)

    # After the proxy exists, no_dereference still gives the stored value.
    async with async_no_dereference(RefBook):
        assert not isinstance(book.author, AsyncReferenceProxy)
        assert book.author == DBRef("ref_author", author.id)

    async with async_no_dereference(RefDbRefBook):
        value = dbook.author
        assert type(value) is DBRef
        assert value == DBRef("ref_author", author.id)

    async with async_no_dereference(RefShelf):
        assert not isinstance(shelf.authors[0], AsyncReferenceProxy)
        assert shelf.authors[0].id == author.id
    assert command_log.count() == 0


async def test_no_dereference_is_per_task(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    command_log.clear()
    inside_entered = asyncio.Event()
    outside_done = asyncio.Event()
    seen = {}

    async def inside():
        async with async_no_dereference(RefBook):
            inside_entered.set()
            await outside_done.wait()
            seen["inside"] = book.author

    async def outside():
        await inside_entered.wait()
        seen["outside"] = book.author
        outside_done.set()

    await asyncio.gather(inside(), outside())
    assert isinstance(seen["outside"], AsyncReferenceProxy)
    assert isinstance(seen["inside"], DBRef)
    assert not isinstance(seen["inside"], AsyncReferenceProxy)
    assert isinstance(book.author, AsyncReferenceProxy)
    assert command_log.count("find") == 0


# -- misc -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
async def test_proxy_copies_are_the_stored_reference(async_alias, how):
    author = await make_author()
    book = await make_book(author)
    holder = await RefGenericHolder(title="g", target=author).async_save()
    holder = await RefGenericHolder.objects.async_get(pk=holder.pk)
    duplicate = {
        "copy": copy.copy,
        "deepcopy": copy.deepcopy,
        "pickle": lambda value: pickle.loads(pickle.dumps(value)),
    }[how]

    copied = duplicate(book.author)
    assert type(copied) is DBRef
    assert copied == DBRef("ref_author", author.id)
    generic = duplicate(holder.target)
    assert generic == {"_cls": "RefAuthor", "_ref": DBRef("ref_author", author.id)}

    # A document copied or pickled after reading gives a working proxy again.
    book_copy = duplicate(book)
    assert isinstance(book_copy.author, AsyncReferenceProxy)
    assert (await book_copy.author).name == "Ann"


async def test_loaded_reference_set_directly(async_alias, command_log):
    """A document assigned in memory is returned as is (no proxy)."""
    author = await make_author()
    book = RefBook(title="t", author=author)
    assert book.author is author
    await book.async_save()
    assert book.author is author
    assert (await raw(RefBook, book.pk))["author"] == author.id


# -- more shapes: generic/lazy items in lists, inheritance, abstract targets -----------


async def test_generic_and_lazy_items_in_lists(async_alias, command_log):
    ann = await make_author("Ann")
    eve = await RefEditor(name="Eve").async_save()
    saved = await RefMisc(
        name="m",
        generic_list=[ann, eve],
        lazy_list=[ann],
        generic_lazy_list=[eve, ann],
    ).async_save()
    before = await raw(RefMisc, saved.pk)
    misc = await RefMisc.objects.async_get(pk=saved.pk)
    command_log.clear()

    first, second = misc.generic_list[0], misc.generic_list[1]
    assert isinstance(first, AsyncReferenceProxy) and first.document_type is RefAuthor
    assert isinstance(second, AsyncReferenceProxy)
    assert second.document_type is RefEditor
    lazy = misc.lazy_list[0]
    assert isinstance(lazy, LazyReference) and lazy.pk == ann.pk
    glazy = misc.generic_lazy_list[0]
    assert isinstance(glazy, LazyReference) and glazy.document_type is RefEditor
    assert command_log.count() == 0

    assert type(await second) is RefEditor
    assert misc.generic_list[1].name == "Eve"
    assert (await lazy.async_fetch()).name == "Ann"
    assert (await misc.generic_lazy_list[1].async_fetch()).name == "Ann"
    assert command_log.count("find") == 3

    command_log.clear()
    await misc.async_save()
    assert command_log.count("update") == 0
    assert await raw(RefMisc, saved.pk) == before


async def test_select_related_generic_and_lazy_lists(async_alias, command_log):
    ann = await make_author("Ann")
    eve = await RefEditor(name="Eve").async_save()
    for i in range(3):
        await RefMisc(
            name=f"m{i}",
            generic_list=[ann, eve],
            lazy_list=[ann],
            generic_lazy_list=[eve, ann],
            dict_of_lists={"a": [ann], "b": [ann, ann]},
        ).async_save()
    command_log.clear()

    rows = await RefMisc.objects.async_select_related()
    # misc, authors, editors
    assert command_log.count("find") == 3
    for misc in rows:
        assert [type(x) for x in misc.generic_list] == [RefAuthor, RefEditor]
        assert misc.lazy_list[0].fetch().name == "Ann"
        assert (await misc.generic_lazy_list[0].async_fetch()).name == "Eve"
        assert misc.generic_lazy_list[1].fetch().name == "Ann"
        assert [a.name for a in misc.dict_of_lists["b"]] == ["Ann", "Ann"]
    assert command_log.count("find") == 3


async def test_select_related_after_proxies_were_read(async_alias, command_log):
    shelf, *_ = await make_shelf()
    proxies = [
        shelf.authors[0],
        shelf.grid[1][0],
        shelf.by_role["lead"],
        shelf.citation.author,
    ]
    assert all(isinstance(p, AsyncReferenceProxy) for p in proxies)
    command_log.clear()
    await shelf.async_select_related()
    assert command_log.count("find") == 1
    assert type(shelf.authors[0]) is RefAuthor
    assert type(shelf.grid[1][0]) is RefAuthor
    assert type(shelf.by_role["lead"]) is RefAuthor
    assert type(shelf.citation.author) is RefAuthor
    assert shelf._get_changed_fields() == []


async def test_dict_of_lists_reads_and_fills(async_alias, command_log):
    ann = await make_author("Ann")
    saved = await RefMisc(name="m", dict_of_lists={"a": [ann]}).async_save()
    misc = await RefMisc.objects.async_get(pk=saved.pk)
    command_log.clear()
    proxy = misc.dict_of_lists["a"][0]
    assert isinstance(proxy, AsyncReferenceProxy)
    assert command_log.count() == 0
    document = await proxy
    assert misc.dict_of_lists["a"][0] is document
    assert command_log.count("find") == 1


async def test_reference_to_subclass_instance(async_alias, command_log):
    dog = await RefDog(name="Rex", bark="woof").async_save()
    saved = await RefMisc(name="m", animal=dog).async_save()
    assert (await raw(RefMisc, saved.pk))["animal"] == dog.pk
    misc = await RefMisc.objects.async_get(pk=saved.pk)
    command_log.clear()
    proxy = misc.animal
    assert isinstance(proxy, AsyncReferenceProxy)
    assert proxy == dog
    loaded = await proxy
    assert type(loaded) is RefDog and loaded.bark == "woof"

    (misc,) = await RefMisc.objects.async_select_related()
    assert type(misc.animal) is RefDog


async def test_reference_to_abstract_class(async_alias, command_log):
    elf = await RefElf(name="Elrond").async_save()
    orc = await RefOrc(name="Azog").async_save()
    m1 = await RefMisc(name="1", creature=elf).async_save()
    m2 = await RefMisc(name="2", creature=orc).async_save()
    stored = (await raw(RefMisc, m1.pk))["creature"]
    assert stored == DBRef("ref_elf", elf.pk, cls="RefElf")
    assert stored.as_doc().get("cls") == "RefElf"

    one = await RefMisc.objects.async_get(pk=m1.pk)
    two = await RefMisc.objects.async_get(pk=m2.pk)
    assert one.creature.document_type is RefElf
    assert two.creature.document_type is RefOrc
    assert type(await one.creature) is RefElf
    assert type(await two.creature) is RefOrc

    command_log.clear()
    rows = {m.name: m for m in await RefMisc.objects.async_select_related()}
    assert command_log.count("find") == 3  # misc, elves, orcs
    assert rows["1"].creature.name == "Elrond"
    assert rows["2"].creature.name == "Azog"

    # Saving keeps the DBRef (with its cls) untouched.
    rows["1"].name = "x"
    await rows["1"].async_save()
    assert (await raw(RefMisc, m1.pk))["creature"].as_doc() == stored.as_doc()


async def test_proxy_into_generic_field(async_alias):
    ann = await make_author("Ann")
    book = await make_book(ann)
    holder = await RefGenericHolder(title="g", target=book.author).async_save()
    stored = (await raw(RefGenericHolder, holder.pk))["target"]
    assert stored == {"_cls": "RefAuthor", "_ref": DBRef("ref_author", ann.pk)}


async def test_embedded_documents_inside_dict(async_alias, command_log):
    ann = await make_author("Ann")
    saved = await RefMisc(
        name="m", cited={"x": RefCitation(note="n", author=ann)}
    ).async_save()
    before = await raw(RefMisc, saved.pk)
    misc = await RefMisc.objects.async_get(pk=saved.pk)
    command_log.clear()
    proxy = misc.cited["x"].author
    assert isinstance(proxy, AsyncReferenceProxy) and proxy == ann
    assert command_log.count() == 0
    assert (await proxy).name == "Ann"
    assert misc.cited["x"].author.name == "Ann"

    (again,) = await RefMisc.objects.async_select_related()
    assert type(again.cited["x"].author) is RefAuthor
    await again.async_save()
    assert await raw(RefMisc, saved.pk) == before


async def test_no_dereference_in_embedded_and_nested(async_alias, command_log):
    shelf, ann, bob, cid = await make_shelf()
    command_log.clear()
    async with async_no_dereference(RefShelf):
        for value, author in (
            (shelf.citation.author, cid),
            (shelf.citations[0].author, ann),
            (shelf.grid[1][0], cid),
            (shelf.by_role["second"], bob),
        ):
            assert isinstance(value, DBRef)
            assert not isinstance(value, AsyncReferenceProxy)
            assert value.id == author.id
    assert isinstance(shelf.citation.author, AsyncReferenceProxy)
    assert isinstance(shelf.citations[0].author, AsyncReferenceProxy)
    assert isinstance(shelf.grid[1][0], AsyncReferenceProxy)
    assert command_log.count() == 0


async def test_select_related_marks_a_held_proxy_fetched(async_alias, command_log):
    author = await RefAuthor(name="held").async_save()
    await RefBook(title="held", author=author).async_save()
    book = await RefBook.objects.async_get(title="held")
    held = book.author
    await book.async_select_related()
    command_log.clear()
    assert (await held).name == "held"
    assert command_log.count() == 0


async def test_awaiting_a_loaded_reference_gives_the_document(async_alias, command_log):
    author = await RefAuthor(name="loaded").async_save()
    await RefBook(title="loaded", author=author).async_save()
    [book] = await RefBook.objects(title="loaded").async_select_related()
    command_log.clear()
    assert await book.author is book.author
    assert (await book.author).name == "loaded"
    assert command_log.count() == 0
