"""A document class defined again under the same name (a test suite's
``class Book(Document)`` in several tests) replaces the earlier one: the
package's caches by class (plans, homes, prepared collections...) let the
earlier class go, as MongoEngine's registry does, and the new class behaves as
new."""

from __future__ import annotations

import gc
import weakref

import pytest

import mongoengine_async
from conftest import database_of_either_kind
from mongoengine_async import (
    CASCADE,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    ListField,
    ReferenceField,
    SequenceField,
    StringField,
    connect_async,
)
from mongoengine_async.testing import CommandLog

ALIAS = "class-caches"


def _define(version: int) -> tuple[type, ...]:
    class CachedAuthor(Document):
        name = StringField()
        meta = {"db_alias": ALIAS, "collection": "cached_authors"}

    class CachedTag(EmbeddedDocument):
        label = StringField()

    if version == 1:

        class CachedBook(Document):
            title = StringField()
            number = SequenceField(db_alias=ALIAS)
            author = ReferenceField(CachedAuthor, reverse_delete_rule=CASCADE)
            tags = ListField(EmbeddedDocumentField(CachedTag))
            meta = {
                "db_alias": ALIAS,
                "collection": "cached_books",
                "indexes": ["title"],
            }

    else:

        class CachedBook(Document):  # type: ignore[no-redef]
            title = StringField()
            pages = IntField(default=7)
            author = ReferenceField(CachedAuthor, reverse_delete_rule=CASCADE)
            tags = ListField(EmbeddedDocumentField(CachedTag))
            meta = {
                "db_alias": ALIAS,
                "collection": "cached_books",
                "indexes": ["title"],
            }

    return CachedAuthor, CachedTag, CachedBook


async def _use_async(author_cls, tag_cls, book_cls):
    author = author_cls(name="a")
    await author.async_save()
    book = book_cls(title="t", author=author, tags=[tag_cls(label="x")])
    await book.async_save()
    loaded = await book_cls.objects(id=book.id).async_first()
    assert (await loaded.author).name == "a"
    loaded.title = "u"
    await loaded.async_save()
    await book_cls.objects(id=book.id).async_select_related()
    await book_cls.objects.async_in_bulk([book.id])
    await book_cls.objects(author=author).async_update(set__title="w")
    raw = await book_cls.objects.as_pymongo().async_get(id=book.id)
    reloaded = await book_cls.objects.async_get(id=book.id)
    await author.async_delete()  # cascades
    assert await book_cls.objects.async_count() == 0
    return raw, reloaded


def _use_sync(author_cls, tag_cls, book_cls):
    author = author_cls(name="a")
    author.save()
    book = book_cls(title="t", author=author, tags=[tag_cls(label="x")])
    book.save()
    loaded = book_cls.objects(id=book.id).first()
    loaded.title = "u"
    loaded.save()
    list(book_cls.objects.select_related())
    book_cls.objects(author=author).update(set__title="w")
    raw = book_cls.objects.as_pymongo().get(id=book.id)
    reloaded = book_cls.objects.get(id=book.id)
    author.delete()
    assert book_cls.objects.count() == 0
    return raw, reloaded


def _collected(refs: list[weakref.ref]) -> list[str]:
    gc.collect()
    return [ref().__name__ for ref in refs if ref() is not None]


@pytest.fixture
async def database(mongodb_uri):
    async with database_of_either_kind(mongodb_uri, ALIAS, "test_caches") as name:
        yield name


async def test_class_defined_again_is_let_go_on_async_alias(mongodb_uri, database):
    await connect_async(
        database, alias=ALIAS, host=mongodb_uri, uuidRepresentation="standard"
    )
    earlier = _define(1)
    raw, loaded = await _use_async(*earlier)
    assert "number" in raw and "pages" not in raw
    refs = [weakref.ref(cls) for cls in earlier]
    del earlier, raw, loaded
    later = _define(2)
    raw, loaded = await _use_async(*later)
    # The new class's fields, not the earlier one's.
    assert raw["pages"] == 7 and "number" not in raw
    assert loaded.pages == 7 and not hasattr(loaded, "number")
    assert _collected(refs) == []


async def test_class_defined_again_is_let_go_on_sync_alias(mongodb_uri, database):
    mongoengine_async.connect(
        database, alias=ALIAS, host=mongodb_uri, uuidRepresentation="standard"
    )
    earlier = _define(1)
    raw, loaded = _use_sync(*earlier)
    assert "number" in raw and "pages" not in raw
    refs = [weakref.ref(cls) for cls in earlier]
    del earlier, raw, loaded
    later = _define(2)
    raw, loaded = _use_sync(*later)
    assert raw["pages"] == 7 and "number" not in raw
    assert loaded.pages == 7 and not hasattr(loaded, "number")
    assert _collected(refs) == []


async def test_two_live_classes_of_one_name_both_work(mongodb_uri, database):
    """Two modules may each define a class of one name: both keep working
    (the one no longer MongoEngine's registry's is taken in again), and once
    both are seen in use, turning from one to the other no longer prepares
    their collections again (their entries are kept)."""
    log = CommandLog()
    await connect_async(
        database,
        alias=ALIAS,
        host=mongodb_uri,
        uuidRepresentation="standard",
        event_listeners=[log],
    )
    first, second = _define(1), _define(2)
    for round_ in range(3):
        log.clear()
        raw, _loaded = await _use_async(*first)
        assert "number" in raw and "pages" not in raw
        raw, _loaded = await _use_async(*second)
        assert raw["pages"] == 7 and "number" not in raw
        if round_ == 2:  # (the first taken in again in round 1)
            assert log.count("createIndexes") == 0
