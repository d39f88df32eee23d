"""``select_related`` loads what awaiting each reference loads.

A differential check on seeded random data: every kind of reference (plain,
stored as a DBRef, generic, lazy; in lists, dicts and embedded documents),
string and int keys, a class hierarchy with and without stored ``_cls``,
references to missing documents, a same-named collection in a second
database, depths 1 to 3 and every entry point. Each result is compared, as
a tree of values, with the same documents whose references are awaited one
by one.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from bson import DBRef, ObjectId
from mongoengine.base import BaseDocument
from mongoengine.errors import DoesNotExist

from mongoengine_async import (
    AsyncReferenceProxy,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    GenericLazyReferenceField,
    GenericReferenceField,
    IntField,
    LazyReference,
    LazyReferenceField,
    ListField,
    ReferenceField,
    StringField,
    async_no_dereference,
)
from mongoengine_async.errors import AsyncUsageError
from mongoengine_async.select_related import select_related
from mongoengine_async.testing import fresh_database


class EqAnimal(Document):
    name = StringField()
    buddy = ReferenceField("EqAnimal")
    meta = {"allow_inheritance": True}


class EqDog(EqAnimal):
    owner = ReferenceField("EqOwner")


class EqCat(EqAnimal):
    pass


class EqKeyed(Document):
    id = StringField(primary_key=True)
    pet = ReferenceField(EqAnimal)


class EqNumbered(Document):
    id = IntField(primary_key=True)
    dog = ReferenceField(EqDog)
    things = ListField(GenericReferenceField())


class EqArchived(Document):
    """Same collection name as EqAnimal's, in the archive database."""

    name = StringField()
    meta = {"db_alias": "eq_archive", "collection": "eq_animal"}


class EqNote(EmbeddedDocument):
    who = ReferenceField(EqAnimal)
    anything = GenericReferenceField()


class EqOwner(Document):
    name = StringField()
    animal = ReferenceField(EqAnimal)
    dog = ReferenceField(EqDog)
    dog_dbref = ReferenceField(EqDog, dbref=True)
    anything = GenericReferenceField()
    lazy = LazyReferenceField(EqAnimal)
    lazy_anything = GenericLazyReferenceField()
    animals = ListField(ReferenceField(EqAnimal))
    dogs_by_key = DictField(field=ReferenceField(EqDog))
    things = ListField(GenericReferenceField())
    lazy_dogs = ListField(LazyReferenceField(EqDog))
    keyed = ReferenceField(EqKeyed)
    numbered = ReferenceField(EqNumbered)
    other = ReferenceField("self")
    archived = ReferenceField(EqArchived)
    note = EmbeddedDocumentField(EqNote)


class EqShelf(Document):
    """Only ReferenceFields stored as ObjectIds (one renamed): loaded by joining."""

    animal = ReferenceField(EqAnimal)
    dog = ReferenceField(EqDog)
    owner = ReferenceField(EqOwner)
    archived = ReferenceField(EqArchived)
    pet = ReferenceField(EqAnimal, db_field="p")


CLASSES = [EqOwner, EqShelf, EqAnimal, EqDog, EqKeyed, EqNumbered]
STORED_CLS = {
    "EqAnimal": "EqAnimal",
    "EqDog": "EqAnimal.EqDog",
    "EqCat": "EqAnimal.EqCat",
}


@pytest.fixture
async def eq_archive(async_alias, mongodb_uri):
    async with fresh_database("eq_archive", mongodb_uri) as alias:
        yield alias


async def seed(rng: random.Random) -> None:
    """A few documents of each class whose references point at random (some
    at documents that do not exist)."""
    animal_ids = [ObjectId() for _ in range(8)]  # the last one is never stored
    owner_ids = [ObjectId() for _ in range(6)]
    kind = {
        id_: rng.choice(["EqAnimal", "EqDog", "EqCat", "EqDog"]) for id_ in animal_ids
    }
    dogs = [id_ for id_ in animal_ids[:7] if kind[id_] == "EqDog"]

    def animal() -> ObjectId | None:
        return rng.choice([*animal_ids, None])

    def dog() -> ObjectId | None:
        return rng.choice([*dogs, animal_ids[7], None])

    def generic() -> dict | None:
        roll, id_ = rng.random(), animal()
        if roll < 0.4:
            return id_ and {"_cls": kind[id_], "_ref": DBRef("eq_animal", id_)}
        if roll < 0.6:
            return {"_cls": "EqKeyed", "_ref": DBRef("eq_keyed", rng.choice("abcd"))}
        if roll < 0.8:
            return {
                "_cls": "EqNumbered",
                "_ref": DBRef("eq_numbered", rng.randrange(4)),
            }
        return {"_cls": "EqOwner", "_ref": DBRef("eq_owner", rng.choice(owner_ids))}

    def stored(**fields: Any) -> dict:
        return {
            name: value
            for name, value in fields.items()
            if value is not None and value != [] and value != {}
        }

    animals = []
    for id_ in animal_ids[:7]:
        document = stored(_id=id_, name=str(id_)[-4:], buddy=animal())
        if kind[id_] != "EqAnimal" or rng.random() < 0.7:  # some without _cls
            document["_cls"] = STORED_CLS[kind[id_]]
        if kind[id_] == "EqDog":
            document["owner"] = rng.choice(owner_ids)
        animals.append(document)
    await (await EqAnimal._async_get_collection()).insert_many(animals)
    await (await EqArchived._async_get_collection()).insert_many(
        [{"_id": id_, "name": "archived"} for id_ in animal_ids[:4]]
    )
    await (await EqKeyed._async_get_collection()).insert_many(
        [stored(_id=key, pet=animal()) for key in "abc"]
    )
    await (await EqNumbered._async_get_collection()).insert_many(
        [stored(_id=n, dog=dog(), things=[generic(), generic()]) for n in range(3)]
    )
    owners = []
    for n, id_ in enumerate(owner_ids):
        dbref = dog()
        owners.append(
            stored(
                _id=id_,
                name=f"owner {n}",
                animal=animal(),
                dog=dog(),
                dog_dbref=dbref and DBRef("eq_animal", dbref),
                anything=generic(),
                lazy=animal(),
                lazy_anything=generic(),
                animals=[a for a in (animal(), animal(), animal()) if a],
                dogs_by_key={f"k{k}": d for k in range(2) if (d := dog())},
                things=[g for g in (generic(), generic(), generic()) if g],
                lazy_dogs=[d for d in (dog(),) if d],
                keyed=rng.choice("abcd"),
                numbered=rng.randrange(4),
                other=rng.choice(owner_ids),
                archived=rng.choice(animal_ids[:5]),
                note=stored(who=animal(), anything=generic()),
            )
        )
    await (await EqOwner._async_get_collection()).insert_many(owners)
    await (await EqShelf._async_get_collection()).insert_many(
        [
            stored(
                animal=animal(),
                dog=dog(),
                owner=rng.choice([*owner_ids, ObjectId()]),
                archived=rng.choice(animal_ids[:5]),
                p=animal(),
            )
            for _ in range(5)
        ]
    )


MISSING = "missing"


async def awaited(reference: Any) -> Any:
    """The referenced document, loaded the way one reference is: by awaiting."""
    try:
        if isinstance(reference, AsyncReferenceProxy):
            return await reference
        if isinstance(reference, LazyReference):
            return await reference.async_fetch()
    except DoesNotExist:
        return MISSING
    return reference


async def loaded(reference: Any) -> Any:
    """The referenced document if it is loaded already (no I/O)."""
    if isinstance(reference, AsyncReferenceProxy):
        return await reference if reference.fetched else MISSING
    if isinstance(reference, LazyReference):
        try:
            return reference.fetch()  # the cached document, or AsyncUsageError
        except AsyncUsageError:
            return MISSING
    return reference


def is_reference(value: Any) -> bool:
    """A document, a reference to one, or a generic reference as stored."""
    return isinstance(value, Document | DBRef) or (
        isinstance(value, dict) and "_ref" in value
    )


def reference_id(reference: Any) -> Any:
    if isinstance(reference, dict):
        return reference["_ref"].id
    return reference.pk if isinstance(reference, Document) else reference.id


async def tree(value: Any, depth: int, load) -> Any:
    """``value`` as plain data, its references followed ``depth`` levels deep
    through ``load`` (a reference left as stored counts as missing)."""
    if isinstance(value, EmbeddedDocument):
        return await document_tree(value, depth, load)
    if is_reference(value):
        if depth == 0:
            return ("reference", reference_id(value))
        target = await load(value)
        if not isinstance(target, Document):
            return (MISSING, reference_id(value))
        return await document_tree(target, depth - 1, load)
    if isinstance(value, dict):
        return {key: await tree(item, depth, load) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [await tree(item, depth, load) for item in value]
    return value


async def document_tree(document: BaseDocument, depth: int, load) -> dict:
    fields = [name for name in document._fields if name != "_cls"]
    return {
        "class": type(document).__name__,
        **{name: await tree(getattr(document, name), depth, load) for name in fields},
    }


async def trees(documents: list, depth: int, load) -> list:
    return [await document_tree(document, depth, load) for document in documents]


@pytest.mark.parametrize("seed_number", range(2))
async def test_every_entry_point_loads_what_awaiting_loads(eq_archive, seed_number):
    await seed(random.Random(seed_number))
    for cls in CLASSES:
        queryset = cls.objects.order_by("id")
        for depth in (1, 2, 3):
            expected = await trees(await queryset.async_to_list(), depth, awaited)
            one_by_one = await queryset.async_to_list()
            for document in one_by_one:
                await document.async_select_related(max_depth=depth)
            for entry, documents in (
                ("queryset", await queryset.async_select_related(max_depth=depth)),
                ("list", await select_related(await queryset.async_to_list(), depth)),
                ("document", one_by_one),
            ):
                got = await trees(documents, depth, loaded)
                assert got == expected, (cls.__name__, depth, entry)
    for depth in (1, 2, 3):  # the documents of every class in one list
        expected = await trees(await every_document(), depth, awaited)
        documents = await select_related(await every_document(), depth)
        assert await trees(documents, depth, loaded) == expected, depth


async def every_document() -> list:
    return [
        document
        for cls in CLASSES
        for document in await cls.objects.order_by("id").async_to_list()
    ]


PARTIAL = [
    (EqOwner, "only", ("other", "dog", "name")),
    (EqOwner, "only", ("animals", "things", "note")),
    (EqOwner, "exclude", ("name",)),
    (EqAnimal, "only", ("buddy",)),
    (EqDog, "only", ("owner", "buddy")),
    (EqShelf, "only", ("owner",)),
    (EqNumbered, "only", ("things",)),
]


async def test_partial_and_undereferenced_results(eq_archive):
    await seed(random.Random(100))
    for cls, how, fields in PARTIAL:
        queryset = getattr(cls.objects.order_by("id"), how)(*fields)
        for depth in (1, 2, 3):
            expected = await trees(await queryset.async_to_list(), depth, awaited)
            documents = await queryset.async_select_related(max_depth=depth)
            assert await trees(documents, depth, loaded) == expected, (cls, fields)
    for cls in CLASSES:
        queryset = cls.objects.order_by("id")
        for depth in (1, 2):
            expected = await trees(await queryset.async_to_list(), depth, awaited)
            undereferenced = queryset.no_dereference()
            documents = await undereferenced.async_select_related(max_depth=depth)
            assert await trees(documents, depth, loaded) == expected, cls
            async with async_no_dereference(cls):
                documents = await queryset.async_select_related(max_depth=depth)
            assert await trees(documents, depth, loaded) == expected, cls
