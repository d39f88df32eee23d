"""Delete rules reach the classes of a cascade as classes, not through
MongoEngine's registry by name, which holds only the last class defined under
a name (two modules may each define a ``Book``)."""

from __future__ import annotations

from typing import Any

from bson import DBRef
from mongoengine.base import get_document

from mongoengine_async import (
    CASCADE,
    Document,
    ReferenceField,
    StringField,
    get_async_db,
    signals,
)


class DrnAuthor(Document):
    name = StringField()


class DrnBook(Document):
    title = StringField()
    author = ReferenceField(DrnAuthor, reverse_delete_rule=CASCADE)


class DrnPet(Document):
    name = StringField()
    meta = {"abstract": True}


class DrnDog(DrnPet):
    pass


class DrnKennel(Document):
    label = StringField()
    pet = ReferenceField(DrnPet, reverse_delete_rule=CASCADE)


def _namesake(name: str, meta: dict) -> type:
    """Another module's class named ``name``, now the one the registry finds."""
    namesake = type(name, (Document,), {"title": StringField(), "meta": meta})
    assert get_document(name) is namesake
    return namesake


async def test_cascaded_documents_signal_when_another_class_has_the_same_name(
    async_alias: str,
) -> None:
    author = await DrnAuthor(name="Ann").async_save()
    await DrnBook(title="First", author=author).async_save()
    _namesake("DrnBook", {"collection": "drn_other_books"})  # no receivers
    seen = []

    def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append((sender, document.title))

    signals.pre_delete.connect(receiver, sender=DrnBook)
    try:
        await author.async_delete()
    finally:
        signals.pre_delete.disconnect(receiver, sender=DrnBook)
    assert seen == [(DrnBook, "First")]
    assert await DrnBook.objects.async_count() == 0


async def test_abstract_references_cascade_when_another_class_has_the_same_name(
    async_alias: str,
) -> None:
    rex = await DrnDog(name="Rex").async_save()
    await DrnKennel(label="rex's", pet=rex).async_save()
    spared = await DrnKennel(label="empty").async_save()
    stored = await get_async_db()["drn_kennel"].find_one({"label": "rex's"})
    assert stored is not None
    assert stored["pet"] == DBRef("drn_dog", rex.pk, cls="DrnDog")
    _namesake("DrnDog", {"abstract": True})  # abstract: stores no DBRefs

    await rex.async_delete()

    assert await DrnKennel.objects.async_scalar("label") == ["empty"]
    assert await DrnKennel.objects.async_get() == spared
    assert await DrnDog.objects.async_count() == 0
