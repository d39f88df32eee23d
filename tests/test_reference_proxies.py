"""ReferenceField on an async alias: a proxy read without I/O, awaited once,
equal to what it refers to, stored unchanged, usable in queries.

Round trips are counted with PyMongo command monitoring (``command_log``).
"""

from __future__ import annotations

import copy
import gc
import pickle
import uuid
import weakref

import mongoengine
import pytest
from bson import DBRef, ObjectId

from models_references import (
    RefAuthor,
    RefBook,
    RefCitation,
    RefDbRefBook,
    RefDog,
    RefEditor,
    RefElf,
    RefGenericHolder,
    RefMisc,
    RefOrc,
    RefShelf,
    make_author,
    make_book,
    raw,
    updates,
)
from mongoengine_async import (
    AsyncReferenceProxy,
    CachedReferenceField,
    Document,
    NotLoadedError,
    ReferenceField,
    StringField,
    UUIDField,
    ValidationError,
    get_async_db,
)

# -- ReferenceField -----------------------------------------------------------------


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
    # The proxy itself stays a reference; its error no longer says "unloaded".
    with pytest.raises(AttributeError, match="fetched already"):
        proxy.name  # noqa: B018

    # After fetching, the field reads as the document itself.
    assert book.author is first
    assert isinstance(book.author, RefAuthor)
    assert command_log.count() == 1


async def test_setting_a_field_on_a_proxy_is_refused(async_alias, command_log):
    """``book.author.name = "Z"`` on the proxy, not the document: refused
    (nothing sent). The proxy kept the value alone, read it back, and a save
    of either document never wrote it."""
    author = await make_author()
    book = await make_book(author)
    proxy = book.author
    command_log.clear()
    unloaded = (
        r"^'name' cannot be set on the unloaded reference 'author': `await` it "
        r"\(or its fetch\(\)\) and set it on the document$"
    )
    with pytest.raises(NotLoadedError, match=unloaded):
        proxy.name = "Z"
    with pytest.raises(NotLoadedError, match="not available on the unloaded"):
        proxy.name  # noqa: B018
    assert command_log.count() == 0
    fetched = await proxy
    assert fetched.name == "Ann"
    with pytest.raises(AttributeError, match=r"^'name' cannot be set on the refer"):
        proxy.name = "Z"
    assert fetched.name == "Ann"
    assert (await RefAuthor.objects.async_get(pk=author.pk)).name == "Ann"


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


async def test_proxy_of_another_class_is_refused_as_its_document(async_alias):
    """A proxy passes MongoEngine's check (it is a DBRef): its class is
    checked as a document's, with MongoEngine's message for the document."""
    editor = await RefEditor(name="Eve").async_save()
    holder = await RefGenericHolder(target=editor).async_save()
    proxy = (await RefGenericHolder.objects.async_get(pk=holder.pk)).target
    assert isinstance(proxy, AsyncReferenceProxy)
    for make in (lambda v: RefBook(author=v), lambda v: RefShelf(authors=[v])):
        errors = []
        for value in (editor, proxy):
            with pytest.raises(ValidationError) as raised:
                await make(value).async_save()
            errors.append((str(raised.value), raised.value.to_dict()))
        assert errors[0] == errors[1]
    assert "A ReferenceField only accepts DBRef" in errors[0][0]
    assert await RefBook.objects.async_count() == 0
    assert await RefShelf.objects.async_count() == 0


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


async def test_an_unloaded_proxys_field_raises_not_loaded_error(async_alias):
    """The public error for data not loaded yet, as a passthrough lazy
    reference's or a file's metadata raise it: it was a bare AttributeError,
    which ``except NotLoadedError`` (or AsyncUsageError) did not catch."""
    author = await make_author()
    book = await make_book(author)
    with pytest.raises(NotLoadedError, match="await"):
        book.author.name  # noqa: B018
    assert getattr(book.author, "name", "default") == "default"
    assert not hasattr(book.author, "name")


class RefCoded(Document):
    code = StringField(primary_key=True)
    name = StringField()


class RefKeyed(Document):
    key = UUIDField(primary_key=True, binary=False)  # stored as a string
    name = StringField()


class RefCodeUser(Document):
    coded = ReferenceField(RefCoded)
    cached_coded = CachedReferenceField(RefCoded, fields=["name"])
    keyed = ReferenceField(RefKeyed)
    cached_keyed = CachedReferenceField(RefKeyed, fields=["name"])


async def test_the_primary_key_reads_by_its_own_name_without_io(
    async_alias, command_log
):
    """The id is in the stored reference: ``proxy.code`` (the primary key
    field's name) reads it as ``id``/``pk`` do, as the loaded document's
    field gives it (a UUID, stored as a string), from a plain reference and
    a cached one alike; it raised NotLoadedError."""
    coded = await RefCoded(code="c1", name="One").async_save()
    keyed = await RefKeyed(key=uuid.uuid4(), name="Two").async_save()
    await RefCodeUser(
        coded=coded, cached_coded=coded, keyed=keyed, cached_keyed=keyed
    ).async_save()
    user = await RefCodeUser.objects.async_get()
    command_log.clear()
    for proxy in (user.coded, user.cached_coded):
        assert isinstance(proxy, AsyncReferenceProxy)
        assert (proxy.code, proxy.pk) == ("c1", "c1")
    for proxy in (user.keyed, user.cached_keyed):
        assert isinstance(proxy, AsyncReferenceProxy)
        assert proxy.key == keyed.key and isinstance(proxy.key, uuid.UUID)
    assert command_log.names == []
    with pytest.raises(NotLoadedError):
        user.coded.name  # noqa: B018
    assert (await user.coded).code == "c1"
    await coded.async_delete()  # a missing one still reads it, as ``id``
    [user] = await RefCodeUser.objects.async_select_related()
    assert repr(user.coded) == "<AsyncReferenceProxy: coded (missing)>"
    assert user.coded.code == "c1"
    with pytest.raises(RefCoded.DoesNotExist):
        user.coded.name  # noqa: B018


# -- what a proxy is and what replaces it -------------------------------------------


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


async def test_awaiting_a_loaded_reference_gives_the_document(async_alias, command_log):
    author = await RefAuthor(name="loaded").async_save()
    await RefBook(title="loaded", author=author).async_save()
    [book] = await RefBook.objects(title="loaded").async_select_related()
    command_log.clear()
    assert await book.author is book.author
    assert (await book.author).name == "loaded"
    assert command_log.count() == 0


# -- targets with inheritance: subclasses, abstract classes -------------------------


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
