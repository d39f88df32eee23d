"""On a sync alias, references behave exactly as in MongoEngine (auto-dereference).

The same kinds of models as in models_references.py, connected with the guarded
``mongoengine_async.connect``; plain ``def`` tests, no event loop.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
from uuid import uuid4

import mongoengine
import pytest
from bson import DBRef, ObjectId

import mongoengine_async
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
    LazyReference,
    LazyReferenceField,
    ListField,
    MapField,
    ReferenceField,
    StringField,
    get_connection,
    get_db,
)
from mongoengine_async.testing import CommandLog


class SyncRefPublisher(Document):
    name = StringField()


class SyncRefAuthor(Document):
    name = StringField()
    publisher = ReferenceField(SyncRefPublisher)


class SyncRefEditor(Document):
    name = StringField()


class SyncRefBook(Document):
    title = StringField()
    author = ReferenceField(SyncRefAuthor)


class SyncRefDbRefBook(Document):
    title = StringField()
    author = ReferenceField(SyncRefAuthor, dbref=True)


class SyncRefCitation(EmbeddedDocument):
    author = ReferenceField(SyncRefAuthor)


class SyncRefShelf(Document):
    name = StringField()
    authors = ListField(ReferenceField(SyncRefAuthor))
    by_role = DictField(field=ReferenceField(SyncRefAuthor))
    by_name = MapField(ReferenceField(SyncRefAuthor))
    citation = EmbeddedDocumentField(SyncRefCitation)
    citations = EmbeddedDocumentListField(SyncRefCitation)
    grid = ListField(ListField(ReferenceField(SyncRefAuthor)))


class SyncRefLazyBook(Document):
    title = StringField()
    author = LazyReferenceField(SyncRefAuthor)
    author_pt = LazyReferenceField(SyncRefAuthor, passthrough=True)


class SyncRefGenericHolder(Document):
    title = StringField()
    target = GenericReferenceField()
    lazy_target = GenericLazyReferenceField()


@pytest.fixture
def sync_db(mongodb_uri):
    """Alias "default" connected synchronously to a fresh database."""
    log = CommandLog()
    name = f"test_sync_{uuid4().hex[:12]}"
    mongoengine_async.connect(
        db=name,
        alias="default",
        host=mongodb_uri,
        uuidRepresentation="standard",
        event_listeners=[log],
    )
    try:
        yield log
    finally:
        try:
            get_connection("default").drop_database(name)
        finally:
            mongoengine_async.disconnect("default")


def raw(cls, pk):
    return get_db()[cls._get_collection_name()].find_one({"_id": pk})


def test_reference_auto_dereferences(sync_db):
    ann = SyncRefAuthor(name="Ann").save()
    saved = SyncRefBook(title="b", author=ann).save()
    book = SyncRefBook.objects.get(pk=saved.pk)
    sync_db.clear()

    author = book.author
    assert type(author) is SyncRefAuthor
    assert not isinstance(author, AsyncReferenceProxy)
    assert author.name == "Ann" and author == ann
    assert sync_db.count("find") == 1
    assert book.author is author  # dereferenced once
    assert sync_db.count("find") == 1


def test_dbref_storage_and_dereference(sync_db):
    ann = SyncRefAuthor(name="Ann").save()
    saved = SyncRefDbRefBook(title="b", author=ann).save()
    assert raw(SyncRefDbRefBook, saved.pk)["author"] == DBRef("sync_ref_author", ann.pk)
    plain = SyncRefBook(title="p", author=ann).save()
    assert type(raw(SyncRefBook, plain.pk)["author"]) is ObjectId
    book = SyncRefDbRefBook.objects.get(pk=saved.pk)
    assert type(book.author) is SyncRefAuthor and book.author.name == "Ann"


def test_dangling_reference_as_in_mongoengine(sync_db):
    ann = SyncRefAuthor(name="Ann").save()
    saved = SyncRefBook(title="b", author=ann).save()
    ann.delete()
    book = SyncRefBook.objects.get(pk=saved.pk)
    with pytest.raises(mongoengine.DoesNotExist):
        book.author  # noqa: B018


def test_save_after_read_keeps_stored_value(sync_db):
    ann = SyncRefAuthor(name="Ann").save()
    saved = SyncRefBook(title="b", author=ann).save()
    before = raw(SyncRefBook, saved.pk)
    book = SyncRefBook.objects.get(pk=saved.pk)
    assert book.author.name == "Ann"
    book.title = "c"
    book.save()
    assert raw(SyncRefBook, saved.pk) == {**before, "title": "c"}


def test_containers_are_dereferenced(sync_db):
    ann = SyncRefAuthor(name="Ann").save()
    bob = SyncRefAuthor(name="Bob").save()
    saved = SyncRefShelf(
        name="s",
        authors=[ann, bob],
        by_role={"lead": ann},
        by_name={"b": bob},
        citation=SyncRefCitation(author=ann),
        citations=[SyncRefCitation(author=bob)],
        grid=[[ann], [bob]],
    ).save()
    before = raw(SyncRefShelf, saved.pk)
    shelf = SyncRefShelf.objects.get(pk=saved.pk)

    assert [type(a) for a in shelf.authors] == [SyncRefAuthor, SyncRefAuthor]
    assert [a.name for a in shelf.authors] == ["Ann", "Bob"]
    assert type(shelf.by_role["lead"]) is SyncRefAuthor
    assert shelf.by_name["b"].name == "Bob"
    assert type(shelf.citation.author) is SyncRefAuthor
    assert shelf.citations[0].author.name == "Bob"
    assert [[a.name for a in row] for row in shelf.grid] == [["Ann"], ["Bob"]]

    shelf.name = "t"
    shelf.save()
    assert raw(SyncRefShelf, saved.pk) == {**before, "name": "t"}


def test_lazy_reference_fetch(sync_db):
    ann = SyncRefAuthor(name="Ann").save()
    saved = SyncRefLazyBook(title="l", author=ann, author_pt=ann).save()
    book = SyncRefLazyBook.objects.get(pk=saved.pk)
    sync_db.clear()

    ref = book.author
    assert isinstance(ref, LazyReference)
    assert sync_db.count() == 0
    document = ref.fetch()
    assert type(document) is SyncRefAuthor and document.name == "Ann"
    assert ref.fetch() is document
    assert sync_db.count("find") == 1
    ref.fetch(force=True)
    assert sync_db.count("find") == 2
    # passthrough fetches synchronously, as in MongoEngine.
    assert book.author_pt.name == "Ann"
    assert sync_db.count("find") == 3


def test_lazy_reference_copies_keep_the_reference(sync_db):
    # MongoEngine's copy of a fetched passthrough reference works (through its
    # document); ours did not (its state was our own slot only): copies and
    # pickles are now the same reference, fetched or not.
    ann = SyncRefAuthor(name="Ann").save()
    saved = SyncRefLazyBook(title="l", author=ann, author_pt=ann).save()
    book = SyncRefLazyBook.objects.get(pk=saved.pk)
    assert book.author_pt.name == "Ann"  # fetched, as in MongoEngine
    for ref in (book.author_pt, book.author):
        for copied in (copy.copy(ref), pickle.loads(pickle.dumps(ref))):
            assert type(copied) is LazyReference and copied == ref
            assert (copied.pk, copied.passthrough) == (ann.pk, ref.passthrough)
    assert copy.copy(book.author_pt).name == "Ann"


def test_async_fetch_on_sync_alias_refuses(sync_db):
    ann = SyncRefAuthor(name="Ann").save()
    saved = SyncRefLazyBook(title="l", author=ann).save()
    book = SyncRefLazyBook.objects.get(pk=saved.pk)
    with pytest.raises(AsyncUsageError):
        asyncio.run(book.author.async_fetch())


def test_generic_references(sync_db):
    ann = SyncRefAuthor(name="Ann").save()
    eve = SyncRefEditor(name="Eve").save()
    one = SyncRefGenericHolder(title="1", target=ann, lazy_target=eve).save()
    two = SyncRefGenericHolder(title="2", target=eve, lazy_target=ann).save()
    one = SyncRefGenericHolder.objects.get(pk=one.pk)
    two = SyncRefGenericHolder.objects.get(pk=two.pk)
    assert type(one.target) is SyncRefAuthor
    assert type(two.target) is SyncRefEditor
    assert type(one.lazy_target.fetch()) is SyncRefEditor
    assert two.lazy_target.fetch().name == "Ann"


def test_select_related(sync_db):
    pub = SyncRefPublisher(name="P").save()
    authors = [SyncRefAuthor(name=f"A{i}", publisher=pub).save() for i in range(5)]
    for i in range(20):
        SyncRefBook(title=f"B{i}", author=authors[i % 5]).save()
    sync_db.clear()

    books = SyncRefBook.objects.select_related()
    assert len(books) == 20
    assert all(type(book.author) is SyncRefAuthor for book in books)
    assert sync_db.count("find") == 2

    shelf = SyncRefShelf(name="s", authors=authors[:2]).save()
    shelf = SyncRefShelf.objects.get(pk=shelf.pk)
    shelf.select_related()
    assert [a.name for a in shelf.authors] == ["A0", "A1"]


def test_no_dereference_sync(sync_db):
    ann = SyncRefAuthor(name="Ann").save()
    saved = SyncRefBook(title="b", author=ann).save()
    book = SyncRefBook.objects.get(pk=saved.pk)
    with mongoengine.context_managers.no_dereference(SyncRefBook):
        assert type(book.author) is DBRef
        assert book.author == DBRef("sync_ref_author", ann.pk)
    assert type(book.author) is SyncRefAuthor
