"""The caches kept by class (plans, homes, prepared collections, field
lookups) let go of a class defined again under the same name, as a test
defining its models does: MongoEngine's registry keeps only the last class of
a name, so with MongoEngine the earlier ones are collected, and so with ours."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from conftest import fresh_sync_default
from mongoengine_async import (
    CASCADE,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    ReferenceField,
    SequenceField,
    StringField,
)

ROUNDS = 5


def define() -> tuple[Any, Any, Any]:
    """The models of one test, defined again on each call."""

    class CcPlace(EmbeddedDocument):
        city = StringField()

    class CcOwner(Document):
        name = StringField()
        number = SequenceField()
        place = EmbeddedDocumentField(CcPlace)
        meta = {"indexes": ["name"]}

    class CcPet(Document):
        owner = ReferenceField(CcOwner, reverse_delete_rule=CASCADE)
        age = IntField()

    return CcPlace, CcOwner, CcPet


def alive(refs: list[weakref.ref]) -> int:
    gc.collect()
    return sum(ref() is not None for ref in refs)


async def test_classes_defined_again_are_collected_async(async_alias: str) -> None:
    refs: list[weakref.ref] = []
    for _ in range(ROUNDS):
        place, owner_class, pet_class = define()
        owner = await owner_class(name="x", place=place(city="c")).async_save()
        await pet_class(owner=owner, age=1).async_save()
        owner.name = "y"
        await owner.async_save()
        [pet] = await pet_class.objects(owner=owner).async_select_related()
        assert pet.owner.name == "y"
        await pet_class.objects(pk=pet.pk).async_get()
        assert [p.age async for p in pet_class.objects] == [1]
        await owner.async_delete()
        assert await pet_class.objects.async_count() == 0
        refs += [weakref.ref(place), weakref.ref(owner_class), weakref.ref(pet_class)]
        del place, owner_class, pet_class, owner, pet
    assert alive(refs) <= 3  # the last round's, which MongoEngine's registry holds


def test_classes_defined_again_are_collected_sync(mongodb_uri: str) -> None:
    refs: list[weakref.ref] = []
    with fresh_sync_default(mongodb_uri):
        for _ in range(ROUNDS):
            place, owner_class, pet_class = define()
            owner = owner_class(name="x", place=place(city="c")).save()
            pet_class(owner=owner, age=1).save()
            owner.name = "y"
            owner.save()
            [pet] = pet_class.objects(owner=owner).select_related()
            assert pet.owner.name == "y"
            assert [p.age for p in pet_class.objects] == [1]
            owner.delete()
            refs += [
                weakref.ref(place),
                weakref.ref(owner_class),
                weakref.ref(pet_class),
            ]
            del place, owner_class, pet_class, owner, pet
    assert alive(refs) <= 3
