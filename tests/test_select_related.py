"""select_related without N+1: one query per collection and level, through
containers, lazy and generic references, cycles, inheritance and databases.

Round trips are counted with PyMongo command monitoring (``command_log``).
"""

from __future__ import annotations

import asyncio
import math

import mongoengine
import pytest
from bson import DBRef, ObjectId, json_util

import mongoengine_async.select_related as select_related_engine
from models_references import (
    RefAlpha,
    RefAnimal,
    RefArchivedAuthor,
    RefArchiveEntry,
    RefAuthor,
    RefBeta,
    RefBook,
    RefCitation,
    RefDog,
    RefDogOwner,
    RefEditor,
    RefGenericHolder,
    RefKennel,
    RefLazyBook,
    RefMisc,
    RefNovel,
    RefPair,
    RefPerson,
    RefPublisher,
    RefReadingList,
    RefShelf,
    RefShelter,
    RefTaggedBook,
    RefWriter,
    make_author,
    make_book,
    make_shelf,
    raw,
    updates,
)
from mongoengine_async import (
    AsyncReferenceProxy,
    DictField,
    Document,
    DynamicDocument,
    DynamicField,
    EmbeddedDocument,
    EmbeddedDocumentField,
    GenericReferenceField,
    LazyReference,
    ListField,
    ReferenceField,
    StringField,
    async_switch_db,
)
from mongoengine_async.select_related import select_related
from mongoengine_async.testing import fresh_database


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


@pytest.mark.parametrize(("max_depth", "levels"), [(0.5, 1), (1.5, 2)])
async def test_a_fractional_max_depth_counts_as_a_level(
    async_alias, command_log, max_depth, levels
):
    """MongoEngine's select_related() compares its depths with max_depth, so
    1.5 reaches as deep as 2; ours raised range()'s TypeError."""
    book = await make_book(await make_author("Ann", await RefPublisher().async_save()))
    command_log.clear()
    (loaded,) = await RefBook.objects.async_select_related(max_depth)
    assert command_log.count("find") == 1 + levels
    assert (await book.async_select_related(max_depth)) is book
    assert command_log.count("find") == 2 * levels + 1
    for document in (loaded, book):
        assert type(document.author) is RefAuthor
        publisher = document.author.publisher
        assert isinstance(publisher, AsyncReferenceProxy) is (levels == 1)


async def test_an_infinite_max_depth_loads_every_level(async_alias, command_log):
    """``max_depth=math.inf`` (which MongoEngine's select_related() takes)
    loads every level there is; ours raised math.ceil()'s OverflowError."""
    book = await make_book(await make_author("Ann", await RefPublisher().async_save()))
    (loaded,) = await RefBook.objects.async_select_related(math.inf)
    assert (await book.async_select_related(math.inf)) is book
    for document in (loaded, book):
        assert type(document.author) is RefAuthor
        assert type(document.author.publisher) is RefPublisher


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


async def test_a_cascade_saves_each_shared_document_once(async_alias, command_log):
    # select_related shares one object per stored document (MongoEngine's
    # gives copies): a document referring to itself, or two referring to each
    # other, hold the very document being saved. The cascade saved it twice
    # (it counted only the documents it cascaded to as visited); MongoEngine's
    # saves such a document twice too when it holds the same object.
    a = await RefPerson(name="A").async_save()
    b = await RefPerson(name="B", friend=a).async_save()
    a.friend = b
    await a.async_save()
    me = await RefPerson(name="Me").async_save()
    me.friend = me
    await me.async_save()
    by_name = {p.name: p for p in await RefPerson.objects.async_select_related()}
    assert by_name["Me"].friend is by_name["Me"]
    for person in by_name.values():
        person.name += "!"
    command_log.clear()

    await by_name["Me"].async_save(cascade=True)
    assert command_log.names == ["update"]
    await by_name["A"].async_save(cascade=True)  # and B, changed, once
    assert command_log.names == ["update", "update", "update"]
    updated = [event.command["updates"][0]["q"]["_id"] for event in command_log.events]
    assert updated == [me.pk, a.pk, b.pk]
    await by_name["B"].async_save(cascade=True)  # saved already: nothing changed
    assert command_log.count("update") == 3
    collection = await RefPerson._async_get_collection()
    stored = {raw["_id"]: raw["name"] async for raw in collection.find()}
    assert stored == {me.pk: "Me!", a.pk: "A!", b.pk: "B!"}


class SrPress(Document):
    name = StringField()


class SrByline(Document):
    name = StringField()
    press = ReferenceField(SrPress)

    def __str__(self) -> str:  # reads a reference, as models' __str__ often do
        return f"{self.name} ({self.press.name})"


class SrArticle(Document):
    title = StringField()
    byline = ReferenceField(SrByline)


async def test_a_cascade_saves_when_a_referenced_str_reads_an_unloaded_reference(
    async_alias, command_log
):
    # Counting the starting document as visited shows its data (MongoEngine's
    # key: str of it), so the __str__ of each document it references: one
    # reading its own unloaded reference raised NotLoadedError after the
    # write (the id left unset), where the cascade shows no such document.
    press = await SrPress(name="P").async_save()
    await SrByline(name="B", press=press).async_save()
    byline = await SrByline.objects.async_get()  # its press: an unloaded proxy
    command_log.clear()
    article = await SrArticle(title="T", byline=byline).async_save(cascade=True)
    assert article.pk is not None and command_log.names == ["insert"]
    article.title, byline.name = "T2", "B2"  # the byline changed: saved too
    await article.async_save(cascade=True)
    assert command_log.names == ["insert", "update", "update"]
    assert (await SrArticle.objects.async_get()).title == "T2"
    assert (await SrByline.objects.async_get()).name == "B2"


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


async def test_select_related_missing_target_reads_as_missing(async_alias):
    # Looked up and not found: reading it raises DoesNotExist, as MongoEngine's
    # read of such a reference does (not the AttributeError asking to await it),
    # on the joining path, the walk, and a document's own select_related.
    ann = await make_author("Ann")
    gone = await make_author("Gone")
    await RefBook(title="dangling", author=gone).async_save()
    await RefBook(title="ok", author=ann).async_save()
    await gone.async_delete()
    dbref = repr(DBRef("ref_author", gone.id))

    joined = {b.title: b for b in await RefBook.objects.async_select_related()}
    walked = await select_related(
        await RefBook.objects(title="dangling").async_to_list()
    )
    one = await RefBook.objects.async_get(title="dangling")
    await one.async_select_related()
    for book in (joined["dangling"], walked[0], one):
        proxy = book.author
        assert isinstance(proxy, AsyncReferenceProxy)
        assert proxy.id == gone.id and proxy == DBRef("ref_author", gone.id)
        assert repr(proxy) == "<AsyncReferenceProxy: author (missing)>"
        with pytest.raises(mongoengine.DoesNotExist) as info:
            proxy.name  # noqa: B018
        assert isinstance(info.value, RefAuthor.DoesNotExist)
        assert str(info.value) == (
            f"Trying to dereference unknown document {dbref} (reference 'author')"
        )
        with pytest.raises(RefAuthor.DoesNotExist) as awaited:
            await proxy  # queries again, and raises the same
        assert str(awaited.value) == str(info.value)
    assert joined["ok"].author.name == "Ann"

    # Saving keeps the stored reference.
    book = joined["dangling"]
    assert book.to_mongo()["author"] == gone.id
    book.title = "still dangling"
    await book.async_save()
    stored = await (await RefBook._async_get_collection()).find_one({"_id": book.pk})
    assert stored == {"_id": book.pk, "title": "still dangling", "author": gone.id}

    # Stored again since: awaiting the proxy loads it.
    await (await RefAuthor._async_get_collection()).insert_one(
        {"_id": gone.id, "name": "Back"}
    )
    assert (await joined["dangling"].author).name == "Back"


class SrMissingHolder(Document):
    pages = ListField()
    extras = DictField()
    target = DynamicField()
    title = StringField()


async def test_a_missing_target_in_untyped_containers_is_saved_as_stored(
    async_alias,
):
    # MongoEngine's to_mongo() and validate() ask hasattr(value, "to_mongo"),
    # "items", "validate"... of untyped items and a DynamicField's value: the
    # missing proxy answered DoesNotExist, so the document could no longer be
    # saved, validated or dumped (MongoEngine keeps a DBRef and saves it).
    # Reading one of its document's fields still raises DoesNotExist.
    gone = await make_author("Gone")
    holder = SrMissingHolder(
        pages=[gone.to_dbref(), "text"], extras={"x": gone.to_dbref()}, target=gone
    )
    await holder.async_save()
    collection = await SrMissingHolder._async_get_collection()
    before = await collection.find_one()
    await gone.async_delete()
    [loaded] = await SrMissingHolder.objects.async_select_related()
    for proxy in (loaded.pages[0], loaded.extras["x"], loaded.target):
        assert repr(proxy).endswith("(missing)>")
        assert not hasattr(proxy, "to_mongo")
        with pytest.raises(RefAuthor.DoesNotExist):
            proxy.name  # noqa: B018
    loaded.validate()
    assert loaded.to_mongo().to_dict() == before
    assert loaded.to_json(json_options=json_util.RELAXED_JSON_OPTIONS)
    loaded.title = "kept"
    await loaded.async_save()
    assert await collection.find_one() == {**before, "title": "kept"}


class SrDynamicTarget(DynamicDocument):
    name = StringField()


class SrDynamicHolder(Document):
    target = ReferenceField(SrDynamicTarget)
    targets = ListField(ReferenceField(SrDynamicTarget))
    title = StringField()


async def test_a_missing_dynamic_target_raises_does_not_exist_for_any_name(
    async_alias,
):
    # MongoEngine raises DoesNotExist for any read of a reference to a deleted
    # document; a missing proxy raised it for a declared field but a plain
    # AttributeError for a DynamicDocument's undeclared (dynamic) field. Any
    # name now raises the DoesNotExist, which is also an AttributeError for
    # the names that are not declared fields (hasattr() answers, the document
    # is saved as stored).
    gone = SrDynamicTarget(name="Gone", extra=5)
    await gone.async_save()
    await SrDynamicHolder(target=gone, targets=[gone], title="t").async_save()
    collection = await SrDynamicHolder._async_get_collection()
    before = await collection.find_one()
    await gone.async_delete()
    dbref = repr(DBRef("sr_dynamic_target", gone.id))
    [holder] = await SrDynamicHolder.objects.async_select_related()
    for proxy, name in ((holder.target, "target"), (holder.targets[0], "targets")):
        assert repr(proxy).endswith("(missing)>")
        message = f"Trying to dereference unknown document {dbref} (reference {name!r})"
        with pytest.raises(SrDynamicTarget.DoesNotExist, match=r"\(reading 'extra'\)"):
            proxy.extra  # noqa: B018
        for attribute in ("extra", "name", "anything"):
            with pytest.raises(mongoengine.DoesNotExist) as info:
                getattr(proxy, attribute)
            assert isinstance(info.value, SrDynamicTarget.DoesNotExist)
            assert str(info.value).startswith(message)
        assert not hasattr(proxy, "extra") and not hasattr(proxy, "to_mongo")
        assert getattr(proxy, "extra", None) is None
    holder.validate()
    holder.title = "kept"
    await holder.async_save()
    assert await collection.find_one() == {**before, "title": "kept"}


# -- joining while loading ----------------------------------------------------------


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


# -- containers, documents, lazy and generic references -----------------------------


async def test_select_related_missing_in_container(async_alias):
    ann = await make_author("Ann")
    gone = await make_author("Gone")
    await RefShelf(name="s", authors=[ann, gone]).async_save()
    await gone.async_delete()
    (shelf,) = await RefShelf.objects.async_select_related()
    assert len(shelf.authors) == 2
    assert type(shelf.authors[0]) is RefAuthor
    assert isinstance(shelf.authors[1], AsyncReferenceProxy)
    with pytest.raises(RefAuthor.DoesNotExist, match="reference 'authors'"):
        shelf.authors[1].name  # noqa: B018
    with pytest.raises(RefAuthor.DoesNotExist):
        await shelf.authors[1]
    await shelf.async_save()
    stored = await (await RefShelf._async_get_collection()).find_one()
    assert stored["authors"] == [ann.id, gone.id]


class SrGenericList(Document):
    target = GenericReferenceField()
    targets = ListField(GenericReferenceField())


async def test_a_missing_generic_target_in_a_list_reads_as_missing(async_alias):
    # MongoEngine leaves the stored {"_cls", "_ref"} dict in the list (and a
    # DBRef in a list of ReferenceFields), while its single field raises
    # DoesNotExist when read. Here each is a proxy marked missing, as a
    # missing item of a list of ReferenceFields: reading a field raises the
    # DoesNotExist naming the reference, and saving writes what was stored.
    ann = await make_author("Ann")
    gone = await make_author("Gone")
    await SrGenericList(target=gone, targets=[ann, gone]).async_save()
    collection = await SrGenericList._async_get_collection()
    before = await collection.find_one()
    await gone.async_delete()
    [holder] = await SrGenericList.objects.async_select_related()
    assert type(holder.targets[0]) is RefAuthor
    dbref = repr(DBRef("ref_author", gone.id))
    for proxy, name in ((holder.target, "target"), (holder.targets[1], "targets")):
        assert repr(proxy) == f"<AsyncReferenceProxy: {name} (missing)>"
        assert proxy.id == gone.id
        with pytest.raises(RefAuthor.DoesNotExist) as raised:
            proxy.name  # noqa: B018
        assert str(raised.value) == (
            f"Trying to dereference unknown document {dbref} (reference {name!r})"
        )
    await holder.async_save()
    holder.targets.append(ann)
    await holder.async_save()
    after = await collection.find_one()
    assert after == {**before, "targets": [*before["targets"], before["targets"][0]]}


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


@pytest.mark.parametrize("max_depth", ["2", None, [1]], ids=repr)
async def test_a_max_depth_of_another_type_raises_mongoengines_error(
    async_alias, command_log, max_depth
):
    """MongoEngine's select_related() (of a queryset, of a document) first adds
    1 to max_depth: its TypeError, raised before anything is sent (ours
    raised others, compared with 0 or given to range())."""
    book = await make_book(await make_author("Ann", None))
    command_log.clear()
    for ours, theirs in (
        (RefBook.objects.async_select_related, mongoengine.QuerySet.select_related),
        (book.async_select_related, mongoengine.Document.select_related),
    ):
        with pytest.raises(TypeError) as expected:
            theirs(None, max_depth)  # (raised before it reads its self)
        with pytest.raises(TypeError) as raised:
            await ours(max_depth)
        assert str(raised.value) == str(expected.value)
    assert command_log.names == []


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


async def test_select_related_marks_a_held_proxy_fetched(async_alias, command_log):
    author = await RefAuthor(name="held").async_save()
    await RefBook(title="held", author=author).async_save()
    book = await RefBook.objects.async_get(title="held")
    held = book.author
    await book.async_select_related()
    command_log.clear()
    assert (await held).name == "held"
    assert command_log.count() == 0


# -- classes, collections and databases ---------------------------------------------


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
    # Several fields: each row a list, as MongoEngine's select_related() makes.
    rows = await friends.scalar("name", "friend").async_select_related()
    assert rows == [["Ann", None], ["Bob", ann]]
    assert type(rows[1][1]) is RefPerson


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


class SrEmbeddedRefs(EmbeddedDocument):
    author = ReferenceField(RefAuthor)
    authors = ListField(ReferenceField(RefAuthor))


class SrOuter(EmbeddedDocument):
    inner = EmbeddedDocumentField(SrEmbeddedRefs)


class SrUntyped(Document):
    anything = DictField()
    items = ListField()


async def test_select_related_loads_references_of_embedded_in_untyped_containers(
    async_alias, command_log
):
    """An untyped DictField()/ListField() keeps an embedded document as stored
    until read: its references (stored ids) are loaded as those of a field."""
    ann, bob, cy, dee = [
        await make_author(name) for name in ("Ann", "Bob", "Cy", "Dee")
    ]
    saved = await SrUntyped(
        anything={"emb": SrEmbeddedRefs(author=ann, authors=[bob])},
        items=[SrOuter(inner=SrEmbeddedRefs(author=cy)), dee.to_dbref()],
    ).async_save()
    stored = await raw(SrUntyped, saved.pk)
    command_log.clear()

    (holder,) = await SrUntyped.objects.async_select_related()
    assert command_log.names == ["find", "find"]  # the holders, the authors
    embedded, outer = holder.anything["emb"], holder.items[0]
    assert type(embedded.author) is RefAuthor and embedded.author.name == "Ann"
    assert [type(a) for a in embedded.authors] == [RefAuthor]
    assert embedded.authors[0].name == "Bob"
    assert type(outer.inner.author) is RefAuthor and outer.inner.author.name == "Cy"
    assert holder.items[1].name == "Dee"
    assert command_log.names == ["find", "find"]
    await holder.async_save()  # loading changed nothing to be saved
    assert await raw(SrUntyped, saved.pk) == stored
