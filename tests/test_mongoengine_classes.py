"""MongoEngine's own classes on async aliases: an AsyncUsageError naming the
class, the field and the fix, before any I/O; sync aliases are unaffected."""

from __future__ import annotations

import mongoengine
import pytest
from bson import DBRef, ObjectId

from mongoengine_async import (
    AsyncUsageError,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    GenericReferenceField,
    LazyReferenceField,
    ListField,
    ReferenceField,
    StringField,
    get_async_db,
)


class OwnAuthor(Document):
    name = StringField()


class OwnBook(Document):
    title = StringField()
    author = mongoengine.ReferenceField(OwnAuthor)


class OwnSpot(EmbeddedDocument):
    label = StringField()
    book = mongoengine.GenericReferenceField()


class OwnShelf(Document):
    spots = ListField(EmbeddedDocumentField(OwnSpot))


class OwnLibrary(Document):
    books = mongoengine.ListField(mongoengine.ReferenceField(OwnBook))


class OwnArchive(Document):
    scan = mongoengine.FileField()


class OwnPlainPublisher(mongoengine.Document):
    name = mongoengine.StringField()


class OwnImprint(Document):
    publisher = ReferenceField(OwnPlainPublisher)


class OwnLoose(Document):
    thing = GenericReferenceField()


BOOK_ERROR = (
    "OwnBook.author is mongoengine.ReferenceField, which does blocking I/O on "
    "async alias 'default': use mongoengine_async.ReferenceField "
    "(from mongoengine_async import *)"
)


async def test_reference_field_of_mongoengine_raises_before_any_io(
    async_alias, command_log
):
    command_log.clear()
    with pytest.raises(AsyncUsageError) as excinfo:
        await OwnBook.objects.async_first()
    assert str(excinfo.value) == BOOK_ERROR
    assert command_log.count() == 0
    author = await OwnAuthor(name="Ann").async_save()
    with pytest.raises(AsyncUsageError) as excinfo:  # not cached as prepared
        await OwnBook(title="First", author=author).async_save()
    assert str(excinfo.value) == BOOK_ERROR
    assert await get_async_db().own_book.count_documents({}) == 0


async def test_field_inside_an_embedded_document_is_named_by_its_path(async_alias):
    with pytest.raises(AsyncUsageError) as excinfo:
        await OwnShelf(spots=[OwnSpot(label="a")]).async_save()
    assert str(excinfo.value) == (
        "OwnShelf.spots.book is mongoengine.GenericReferenceField, which does "
        "blocking I/O on async alias 'default': use "
        "mongoengine_async.GenericReferenceField (from mongoengine_async import *)"
    )


@pytest.mark.parametrize(
    ("model", "message_start"),
    [
        (OwnLibrary, "OwnLibrary.books is mongoengine.ListField, "),
        (OwnArchive, "OwnArchive.scan is mongoengine.FileField, "),
    ],
)
async def test_container_and_file_fields(async_alias, model, message_start):
    with pytest.raises(AsyncUsageError) as excinfo:
        await model.objects.async_to_list()
    assert str(excinfo.value).startswith(message_start)
    assert "which does blocking I/O on async alias 'default'" in str(excinfo.value)


@pytest.mark.parametrize("name", ["SequenceField", "DynamicField"])
async def test_fields_that_do_io_when_read_or_written(async_alias, name):
    model = type(
        f"Own{name}Holder", (Document,), {"value": getattr(mongoengine, name)()}
    )
    with pytest.raises(AsyncUsageError) as excinfo:
        await model.objects.async_first()
    assert str(excinfo.value) == (
        f"Own{name}Holder.value is mongoengine.{name}, which does blocking I/O on "
        f"async alias 'default': use mongoengine_async.{name} "
        "(from mongoengine_async import *)"
    )


async def test_mongoengine_containers_without_references_work(async_alias):
    class OwnLabels(Document):
        tags = mongoengine.ListField(mongoengine.StringField())
        counts = mongoengine.DictField(mongoengine.IntField())

    await OwnLabels(tags=["a", "b"], counts={"a": 1}).async_save()
    loaded = await OwnLabels.objects.async_get()
    assert (loaded.tags, loaded.counts) == (["a", "b"], {"a": 1})


async def test_reference_to_a_mongoengine_document_names_the_fix(async_alias):
    with pytest.raises(AsyncUsageError) as excinfo:
        await OwnImprint.objects.async_count()
    assert str(excinfo.value) == (
        "OwnPlainPublisher is a mongoengine.Document on async alias 'default' "
        "(OwnImprint.publisher refers to it): MongoEngine's Document knows no "
        "async alias; subclass mongoengine_async.Document instead "
        "(from mongoengine_async import *)"
    )


async def test_generic_reference_to_a_mongoengine_document_names_the_fix(
    async_alias, command_log
):
    dbref = DBRef("own_plain_publisher", ObjectId())
    await get_async_db().own_loose.insert_one(
        {"thing": {"_cls": "OwnPlainPublisher", "_ref": dbref}}
    )
    loose = await OwnLoose.objects.async_get()
    command_log.clear()
    with pytest.raises(AsyncUsageError) as excinfo:
        loose.thing  # noqa: B018
    assert str(excinfo.value).startswith(
        "OwnPlainPublisher is a mongoengine.Document on async alias 'default' "
        "(OwnLoose.thing refers to it): "
    )
    assert command_log.count() == 0


class OwnEarly(Document):
    name = StringField()
    writer = ReferenceField("OwnDefinedLater")
    readers = ListField(ReferenceField("OwnDefinedLater"))
    lazy = LazyReferenceField("OwnDefinedLater")


async def test_a_reference_to_a_class_not_defined_yet(async_alias):
    """MongoEngine looks a class a reference names up only to dereference:
    the model's first use counts, saves and loads before it is defined (the
    model check raised NotRegistered); defined later as a mongoengine.Document,
    a read of the reference names the fix."""
    assert await OwnEarly.objects.async_count() == 0
    early = await OwnEarly(name="e").async_save()
    raw = await get_async_db().own_early.find_one()
    assert raw == {"_id": early.id, "name": "e", "readers": []}
    dbref = DBRef("own_defined_later", ObjectId())
    await get_async_db().own_early.update_one(
        {"_id": early.id}, {"$set": {"writer": dbref}}
    )
    loaded = await OwnEarly.objects.async_get()
    assert (loaded.name, loaded.readers) == ("e", [])

    class OwnDefinedLater(mongoengine.Document):
        pass

    with pytest.raises(AsyncUsageError) as excinfo:
        loaded.writer  # noqa: B018
    assert str(excinfo.value).startswith(
        "OwnDefinedLater is a mongoengine.Document on async alias 'default' "
        "(OwnEarly.writer refers to it): "
    )


class OwnQuerySet(mongoengine.QuerySet):
    def titled(self):
        return self.filter(title__ne=None)


class OwnCatalogue(Document):
    title = StringField()
    meta = {"queryset_class": OwnQuerySet}


CATALOGUE_ERROR = (
    "OwnCatalogue's meta queryset_class OwnQuerySet is a mongoengine QuerySet, "
    "which knows no async alias ('default'): subclass mongoengine_async.QuerySet "
    "(from mongoengine_async import *)"
)


async def test_mongoengine_queryset_class_names_the_fix(async_alias, command_log):
    """MongoEngine's QuerySet has no async terminal ("no attribute
    'async_first'") and iterates an AsyncCursor as a sync one."""
    command_log.clear()
    for use in [lambda: OwnCatalogue.objects, lambda: OwnCatalogue().async_save()]:
        with pytest.raises(AsyncUsageError) as excinfo:
            await use()  # (objects raises before anything is awaited)
        assert str(excinfo.value) == CATALOGUE_ERROR
    assert command_log.count() == 0


def test_sync_alias_keeps_mongoengine_behaviour(sync_default):
    author = OwnAuthor(name="Ann").save()
    OwnBook(title="First", author=author).save()
    OwnArchive().save()
    book = OwnBook.objects.get()
    assert book.author == author and book.author.name == "Ann"
    publisher = OwnPlainPublisher(name="P").save()
    OwnImprint(publisher=publisher).save()
    assert OwnImprint.objects.get().publisher.name == "P"
    OwnCatalogue(title="T").save()
    assert [c.title for c in OwnCatalogue.objects.titled()] == ["T"]
