"""A queryset's async_delete finds the file fields on the class itself, not
through MongoEngine's registry by name, which holds only the last class
defined under a name (two modules may each define a ``Report``)."""

from __future__ import annotations

from mongoengine.base import get_document

from mongoengine_async import (
    Document,
    FileField,
    ObjectIdField,
    StringField,
    get_async_db,
)


class FfReport(Document):
    title = StringField()
    pdf = FileField(collection_name="ff_reports")


async def test_files_are_deleted_when_another_class_has_the_same_name(
    async_alias: str,
) -> None:
    report = FfReport(title="Q1")
    await report.pdf.async_put(b"%PDF q1", filename="q1.pdf")
    await report.async_save()
    # Another module's class of the same name, without file fields.
    namesake = type(
        "FfReport", (Document,), {"title": StringField(), "meta": {"collection": "ff"}}
    )
    assert get_document("FfReport") is namesake

    assert await FfReport.objects(title="Q1").async_delete() == 1
    assert await get_async_db()["ff_reports.files"].count_documents({}) == 0
    assert await get_async_db()["ff_reports.chunks"].count_documents({}) == 0


class FfBase(Document):
    meta = {"allow_inheritance": True, "collection": "ff_base"}


class FfWithFile(FfBase):
    key = FileField(collection_name="ff_a")


class FfWithId(FfBase):
    key = ObjectIdField()  # the same name, not a file


class FfInOtherBucket(FfBase):
    key = FileField(collection_name="ff_b")


class FfKept(Document):
    scan = FileField(collection_name="ff_a")


async def test_each_document_deletes_the_files_of_its_own_class(
    async_alias: str,
) -> None:
    # The file fields of every subclass were read by db field, the last
    # class's winning: a subclass's ObjectIdField of that name was taken for
    # a file id (deleting an unrelated file of that id) and another
    # subclass's files were looked for in the wrong bucket (left behind).
    kept = FfKept()
    await kept.scan.async_put(b"not the base's")
    await kept.async_save()
    in_a = FfWithFile()
    await in_a.key.async_put(b"a")
    await in_a.async_save()
    in_b = FfInOtherBucket()
    await in_b.key.async_put(b"b")
    await in_b.async_save()
    await FfWithId(key=kept.scan.grid_id).async_save()

    assert await FfBase.objects.async_delete() == 3
    db = get_async_db()
    assert await db["ff_a.files"].distinct("_id") == [kept.scan.grid_id]
    assert await db["ff_b.files"].count_documents({}) == 0
    assert await db["ff_a.chunks"].distinct("files_id") == [kept.scan.grid_id]
    assert await db["ff_b.chunks"].count_documents({}) == 0
