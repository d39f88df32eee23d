"""The plain path of a reference: once a class's home is kept (its first await),
reading and awaiting a ReferenceField's stored DBRef skips the general checks.

Each test keeps the home first (``_kept``), then shows that the plain path
loads what the general path loads, and that whatever the plain path does not
check for itself sends the read or the await to the general path: a session,
switch or no-dereference bound, MongoEngine's ``switch_db`` or
``no_dereference``, an abstract target, a field replaced meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bson import DBRef
from mongoengine.context_managers import no_dereference, switch_collection, switch_db

from mongoengine_async import (
    AsyncReferenceProxy,
    DictField,
    Document,
    IntField,
    ListField,
    ReferenceField,
    StringField,
    async_no_dereference,
    async_run_in_transaction,
    async_switch_collection,
    async_switch_db,
    get_async_connection,
)


class PlainAuthor(Document):
    name = StringField()
    born = IntField()
    tags = ListField(StringField())
    extra = DictField()
    meta = {"allow_inheritance": True, "indexes": ["name"]}


class PlainPoet(PlainAuthor):
    verse = StringField()


class PlainBook(Document):
    title = StringField()
    author = ReferenceField(PlainAuthor)
    by_dbref = ReferenceField(PlainAuthor, dbref=True)


class PlainBystander(Document):
    """Bound with async_no_dereference only to make the task's state unusual."""

    name = StringField()


class PlainBase(Document):
    meta = {"abstract": True}
    name = StringField()


class PlainConcrete(PlainBase):
    pass


class PlainAbstractHolder(Document):
    target = ReferenceField(PlainBase)


async def _kept() -> None:
    """Keep PlainAuthor's home: await one reference (the general path)."""
    author = await PlainAuthor(name="first").async_save()
    book = await PlainBook(title="first", author=author).async_save()
    await (await PlainBook.objects.async_get(id=book.id)).author


async def _stored_book(author: PlainAuthor, title: str = "t") -> PlainBook:
    """A book referring to ``author`` in both fields, loaded again."""
    book = await PlainBook(title=title, author=author, by_dbref=author).async_save()
    return await PlainBook.objects.async_get(id=book.id)


def _state(document: Any) -> tuple:
    """What a loaded document holds, as a user sees it and as it would save."""
    return (
        type(document),
        document.to_mongo().to_dict(),
        document._get_changed_fields(),
        document._created,
        document._initialised,
    )


AUTHORS = {
    "plain": lambda: PlainAuthor(name="Ann", born=1900),
    "containers": lambda: PlainAuthor(name="Bo", tags=["a", "b"], extra={"k": [1]}),
    "subclass": lambda: PlainPoet(name="Cy", verse="la"),
    "empty": lambda: PlainAuthor(),
}


@pytest.mark.parametrize("field", ["author", "by_dbref"])
@pytest.mark.parametrize("kind", sorted(AUTHORS))
async def test_the_plain_path_loads_what_the_general_path_loads(
    async_alias: str, command_log: Any, field: str, kind: str
) -> None:
    await _kept()
    author = await AUTHORS[kind]().async_save()
    plain_book = await _stored_book(author)
    general_book = await PlainBook.objects.async_get(id=plain_book.id)
    command_log.clear()

    plain = await getattr(plain_book, field)
    async with async_no_dereference(PlainBystander):  # the general path
        general = await getattr(general_book, field)

    assert _state(plain) == _state(general)
    assert plain_book._data[field] is plain and getattr(plain_book, field) is plain
    assert plain_book._get_changed_fields() == []
    finds = [e.command for e in command_log.events if e.command_name == "find"]
    assert [(f["find"], f["filter"], f.get("limit")) for f in finds] == [
        ("plain_author", {"_id": author.id}, 1)
    ] * 2


async def test_a_missing_document_raises_as_on_the_general_path(
    async_alias: str,
) -> None:
    await _kept()
    ghost = await PlainAuthor(name="ghost").async_save()
    books = [await _stored_book(ghost) for _ in range(2)]
    await PlainAuthor.objects(id=ghost.id).async_delete()

    with pytest.raises(PlainAuthor.DoesNotExist) as plain:
        await books[0].author
    async with async_no_dereference(PlainBystander):
        with pytest.raises(PlainAuthor.DoesNotExist) as general:
            await books[1].author
    assert str(plain.value) == str(general.value)
    assert str(ghost.id) in str(plain.value) and "'author'" in str(plain.value)
    assert isinstance(books[0].author, AsyncReferenceProxy)  # tried again next time


async def test_mongoengines_switch_db_is_followed(other_alias: str) -> None:
    await _kept()
    here = await PlainAuthor(name="here").async_save()
    book = await _stored_book(here)
    with switch_db(PlainAuthor, other_alias):
        await PlainAuthor(id=here.id, name="there").async_save()
        assert (await book.author).name == "there"
    assert (await (await _stored_book(here)).author).name == "here"


async def test_mongoengines_switch_collection_is_followed(async_alias: str) -> None:
    """Under it the general path prepares the switched collection (makes its
    indexes), then loads from the collection the DBRef names, as before."""
    await _kept()
    author = await PlainAuthor(name="Ann").async_save()
    book = await _stored_book(author)
    with switch_collection(PlainAuthor, "plain_switched"):
        assert (await book.author).name == "Ann"
    db = PlainAuthor._get_db()
    indexes = await db["plain_switched"].index_information()
    assert indexes.keys() == (await db["plain_author"].index_information()).keys()
    assert len(indexes) == 2


async def test_async_switch_db_is_followed(other_alias: str) -> None:
    await _kept()
    here = await PlainAuthor(name="here").async_save()
    book = await _stored_book(here)
    async with async_switch_db(PlainAuthor, other_alias):
        await PlainAuthor(id=here.id, name="there").async_save()
        assert (await book.author).name == "there"


async def test_a_bound_transaction_is_followed(async_alias: str) -> None:
    await _kept()
    author = await PlainAuthor(name="committed").async_save()
    book = await _stored_book(author)
    async with async_run_in_transaction():
        await PlainAuthor.objects(id=author.id).async_update(set__name="uncommitted")
        assert (await book.author).name == "uncommitted"


async def test_an_explicit_session_is_followed(async_alias: str) -> None:
    await _kept()
    author = await PlainAuthor(name="committed").async_save()
    book = await _stored_book(author)
    async with get_async_connection().start_session() as session:
        await session.start_transaction()
        await PlainAuthor.objects(id=author.id).async_update(
            set__name="uncommitted", session=session
        )
        assert (await book.author.fetch(session=session)).name == "uncommitted"
        assert (await (await _stored_book(author)).author).name == "committed"
        await session.abort_transaction()


async def test_async_no_dereference_reads_the_stored_value(async_alias: str) -> None:
    await _kept()
    author = await PlainAuthor(name="Ann").async_save()
    book = await _stored_book(author)
    async with async_no_dereference(PlainBook):
        assert type(book.author) is DBRef and book.author.id == author.id
    assert isinstance(book.author, AsyncReferenceProxy)


async def test_mongoengines_no_dereference_reads_the_stored_value(
    async_alias: str,
) -> None:
    await _kept()
    author = await PlainAuthor(name="Ann").async_save()
    book = await _stored_book(author)
    with no_dereference(PlainBook):
        assert type(book.author) is DBRef and book.author.id == author.id
    assert isinstance(book.author, AsyncReferenceProxy)


async def test_a_queryset_no_dereference_document_reads_the_stored_value(
    async_alias: str,
) -> None:
    # Its fields are copies that no_dereference() turned off: the class's
    # field, which the plain path used to check, still dereferences.
    await _kept()
    author = await PlainAuthor(name="Ann").async_save()
    book = await _stored_book(author)
    again = await PlainBook.objects.no_dereference().async_get(id=book.id)
    assert type(again.author) is DBRef and again.author.id == author.id
    assert isinstance(book.author, AsyncReferenceProxy)


async def test_a_reference_to_an_abstract_class_loads_the_class_it_names(
    async_alias: str,
) -> None:
    target = await PlainConcrete(name="concrete").async_save()
    holder = await PlainAbstractHolder(target=target).async_save()
    for _ in range(2):  # before and after PlainConcrete's home is kept
        again = await PlainAbstractHolder.objects.async_get(id=holder.id)
        loaded = await again.target
        assert type(loaded) is PlainConcrete and loaded.name == "concrete"


async def test_a_field_set_while_loading_keeps_the_new_value(async_alias: str) -> None:
    await _kept()
    author, other = [await PlainAuthor(name=n).async_save() for n in ("a", "b")]
    book = await _stored_book(author)
    proxy = book.author
    loading = asyncio.ensure_future(proxy.fetch())
    await asyncio.sleep(0)  # the query is in flight
    book.author = other
    assert (await loading).name == "a"
    assert book.author is other and book._data["author"] is other


async def test_concurrent_awaits_share_one_query(
    async_alias: str, command_log: Any
) -> None:
    await _kept()
    author = await PlainAuthor(name="Ann").async_save()
    book = await _stored_book(author)
    command_log.clear()
    proxy = book.author
    loaded = await asyncio.gather(*(proxy for _ in range(5)))
    assert all(document is loaded[0] for document in loaded)
    assert [e.command_name for e in command_log.events] == ["find"]


async def test_a_dbref_naming_another_collection_loads_from_it(
    async_alias: str,
) -> None:
    await _kept()
    author = await PlainAuthor(name="in the class's collection").async_save()
    archive = PlainAuthor._get_db()["plain_archive"]
    await archive.insert_one({"_id": author.id, "name": "in the archive"})
    book = await PlainBook(
        title="t", by_dbref=DBRef("plain_archive", author.id)
    ).async_save()
    again = await PlainBook.objects.async_get(id=book.id)
    assert (await again.by_dbref).name == "in the archive"


async def test_a_loaded_reference_names_the_collection_switched_to(
    async_alias: str,
) -> None:
    """A class with references keeps its loader while nothing is bound; the
    DBRefs it builds follow MongoEngine's switch_collection of the referenced
    class all the same, and the general path's loader (ours bound) alike."""
    author = await PlainAuthor(name="Ann").async_save()
    book = await _stored_book(author)

    async def collection_read() -> str:
        return (
            (await PlainBook.objects.async_get(id=book.id))._data["author"].collection
        )

    assert await collection_read() == "plain_author"
    with switch_collection(PlainAuthor, "plain_elsewhere"):
        assert await collection_read() == "plain_elsewhere"
        async with async_no_dereference(PlainBystander):
            assert await collection_read() == "plain_elsewhere"
    assert await collection_read() == "plain_author"
    async with async_switch_collection(PlainAuthor, "plain_switched_async"):
        assert await collection_read() == "plain_switched_async"


class KeptAuthor(Document):
    name = StringField()


class KeptBook(Document):
    author = ReferenceField(KeptAuthor)


async def test_a_fetch_reuses_the_loader_of_its_class(async_alias, monkeypatch):
    """The loader of a settled class is looked up once for all its fetches;
    a field class method patched afterwards (the plans forgotten) is called
    by the next fetch, as by any load."""
    from unittest import mock

    from mongoengine_async import from_bson

    authors = [await KeptAuthor(name=str(i)).async_save() for i in range(3)]
    for author in authors:
        await KeptBook(author=author).async_save()
    books = await KeptBook.objects.order_by("id").async_to_list()
    assert (await books[0].author).name == "0"
    looked_up = mock.Mock(wraps=from_bson._plan)
    monkeypatch.setattr(from_bson, "_plan", looked_up)
    assert (await books[1].author).name == "1"
    assert looked_up.call_count == 0
    to_python = mock.Mock(side_effect=lambda value: value)
    with mock.patch.object(StringField, "to_python", to_python):
        assert (await books[2].author).name == "2"
    assert to_python.call_count >= 1


async def test_a_join_finds_where_each_reference_points_once(async_alias, monkeypatch):
    """``async_select_related()`` works out where a reference field's class
    lives (its database's client and name) once per joined collection."""
    from unittest import mock

    from mongoengine_async import select_related

    for i in range(3):
        await KeptBook(author=await KeptAuthor(name=str(i)).async_save()).async_save()
    where = mock.Mock(wraps=select_related._where)
    monkeypatch.setattr(select_related, "_where", where)
    books = await KeptBook.objects.async_select_related()
    assert sorted(book.author.name for book in books) == ["0", "1", "2"]
    assert where.call_count == 1
