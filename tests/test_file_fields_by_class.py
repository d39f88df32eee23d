"""A queryset's async_delete finds the file fields on the class itself, not
through MongoEngine's registry by name, which holds only the last class
defined under a name (two modules may each define a ``Report``)."""

from __future__ import annotations

from mongoengine.base import get_document

from mongoengine_async import Document, FileField, StringField, get_async_db


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
