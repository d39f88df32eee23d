"""Generic (and generic lazy) references on an async alias: the class comes
from the stored ``_cls``, the stored value is kept on save."""

from __future__ import annotations

from typing import Any

import pytest
from bson import DBRef

from conftest import fresh_sync_default
from models_references import (
    RefAnimal,
    RefAuthor,
    RefBook,
    RefDog,
    RefEditor,
    RefGenericHolder,
    RefKennel,
    make_author,
    make_book,
    raw,
    updates,
)
from mongoengine_async import (
    AsyncReferenceProxy,
    AsyncUsageError,
    CachedReferenceField,
    Document,
    DynamicField,
    GenericLazyReferenceField,
    GenericReferenceField,
    LazyReference,
    ListField,
    ValidationError,
)
from mongoengine_async.testing import fresh_database


async def test_generic_reference_resolves_class(async_alias, command_log):
    author = await make_author("Ann")
    editor = await RefEditor(name="Eve").async_save()
    h1 = await RefGenericHolder(title="1", target=author).async_save()
    h2 = await RefGenericHolder(title="2", target=editor).async_save()
    one = await RefGenericHolder.objects.async_get(pk=h1.pk)
    two = await RefGenericHolder.objects.async_get(pk=h2.pk)
    command_log.clear()

    p1, p2 = one.target, two.target
    assert isinstance(p1, AsyncReferenceProxy)
    assert isinstance(p2, AsyncReferenceProxy)
    assert repr(p1) == "<AsyncReferenceProxy: target (unfetched)>"
    assert p1.document_type is RefAuthor
    assert p2.document_type is RefEditor
    assert p1.id == author.id and p2.pk == editor.pk
    assert p1 == author and p2 == editor
    assert p1 != editor
    assert command_log.count() == 0

    got1, got2 = await p1, await p2
    assert type(got1) is RefAuthor and got1.name == "Ann"
    assert type(got2) is RefEditor and got2.name == "Eve"
    assert await p1.fetch() is got1
    assert command_log.count("find") == 2
    assert one.target is got1
    assert await RefGenericHolder.target.async_fetch(two) is got2
    assert command_log.count("find") == 2


async def test_generic_reference_field_async_fetch(async_alias, command_log):
    editor = await RefEditor(name="Eve").async_save()
    h = await RefGenericHolder(title="1", target=editor).async_save()
    holder = await RefGenericHolder.objects.async_get(pk=h.pk)
    command_log.clear()
    got = await RefGenericHolder.target.async_fetch(holder)
    assert type(got) is RefEditor
    assert holder.target is got
    assert command_log.count("find") == 1


async def test_generic_lazy_reference_resolves_class(async_alias, command_log):
    author = await make_author("Ann")
    editor = await RefEditor(name="Eve").async_save()
    h1 = await RefGenericHolder(title="1", lazy_target=author).async_save()
    h2 = await RefGenericHolder(title="2", lazy_target=editor).async_save()
    one = await RefGenericHolder.objects.async_get(pk=h1.pk)
    two = await RefGenericHolder.objects.async_get(pk=h2.pk)
    command_log.clear()

    r1, r2 = one.lazy_target, two.lazy_target
    assert isinstance(r1, LazyReference) and isinstance(r2, LazyReference)
    assert r1.document_type is RefAuthor
    assert r2.document_type is RefEditor
    assert r1.pk == author.pk
    assert command_log.count() == 0
    with pytest.raises(AsyncUsageError, match="async_fetch"):
        r1.fetch()

    got1 = await r1.async_fetch()
    got2 = await r2.async_fetch()
    assert type(got1) is RefAuthor and got1.name == "Ann"
    assert type(got2) is RefEditor and got2.name == "Eve"
    assert await r1.async_fetch() is got1
    assert command_log.count("find") == 2
    await r1.async_fetch(force=True)
    assert command_log.count("find") == 3


async def test_generic_references_save_keeps_stored_value(async_alias, command_log):
    author = await make_author("Ann")
    editor = await RefEditor(name="Eve").async_save()
    saved = await RefGenericHolder(
        title="1", target=author, lazy_target=editor
    ).async_save()
    before = await raw(RefGenericHolder, saved.pk)
    assert before["target"]["_cls"] == "RefAuthor"
    assert before["lazy_target"]["_cls"] == "RefEditor"

    for fetch in (False, True):
        holder = await RefGenericHolder.objects.async_get(pk=saved.pk)
        target, lazy = holder.target, holder.lazy_target
        if fetch:
            await target
            await lazy.async_fetch()
            assert type(holder.target) is RefAuthor
        command_log.clear()
        await holder.async_save()
        assert command_log.count("update") == 0
        holder.title = f"t{fetch}"
        await holder.async_save()
        assert updates(command_log) == [{"$set": {"title": f"t{fetch}"}}]
        after = await raw(RefGenericHolder, saved.pk)
        assert after == {**before, "title": f"t{fetch}"}

    # A generic proxy assigned elsewhere stores the same value.
    holder = await RefGenericHolder.objects.async_get(pk=saved.pk)
    copy_ = await RefGenericHolder(title="c", target=holder.target).async_save()
    assert (await raw(RefGenericHolder, copy_.pk))["target"] == before["target"]


async def test_proxy_into_generic_field(async_alias):
    ann = await make_author("Ann")
    book = await make_book(ann)
    holder = await RefGenericHolder(title="g", target=book.author).async_save()
    stored = (await raw(RefGenericHolder, holder.pk))["target"]
    assert stored == {"_cls": "RefAuthor", "_ref": DBRef("ref_author", ann.pk)}


class RefLazyChoices(Document):
    any_target = GenericLazyReferenceField()
    author_only = GenericLazyReferenceField(choices=[RefAuthor])


def _stored_targets(stored: dict, author_id: Any) -> dict:
    """The stored references, the author's id replaced by a marker."""
    marker = DBRef("ref_author", "AUTHOR")
    return {
        name: {**value, "_ref": marker} if value["_ref"].id == author_id else value
        for name, value in stored.items()
        if name != "_id"
    }


async def test_proxy_into_generic_lazy_field_as_mongoengine_stores_it(
    mongodb_uri: str,
) -> None:
    """A reference read on an async alias (a proxy) assigned to a
    GenericLazyReferenceField, with choices or without, validates and stores
    as MongoEngine's read of it (the document) does on a sync alias, and
    reads back as a LazyReference."""
    with fresh_sync_default(mongodb_uri) as database:
        ann = RefAuthor(name="Ann").save()
        book = RefBook.objects.get(pk=RefBook(title="B", author=ann).save().pk)
        holder = RefLazyChoices(any_target=book.author, author_only=book.author)
        holder.validate()
        holder.save()
        expected = _stored_targets(database.ref_lazy_choices.find_one(), ann.pk)
    async with fresh_database("default", mongodb_uri):
        ann = await make_author("Ann")
        book = await make_book(ann)
        assert isinstance(book.author, AsyncReferenceProxy)
        holder = RefLazyChoices(any_target=book.author, author_only=book.author)
        holder.validate()
        await holder.async_save()
        stored = await raw(RefLazyChoices, holder.pk)
        loaded = await RefLazyChoices.objects.async_get(pk=holder.pk)
        assert isinstance(loaded.author_only, LazyReference)
        assert (await loaded.author_only.async_fetch()).name == "Ann"
    assert _stored_targets(stored, ann.pk) == expected
    assert expected["author_only"] == {
        "_cls": "RefAuthor",
        "_ref": DBRef("ref_author", "AUTHOR"),
    }


class RefCachedHolder(Document):
    author = CachedReferenceField(RefAuthor, fields=["name"])


class RefGenericSlots(Document):
    target = GenericReferenceField()
    targets = ListField(GenericReferenceField())
    anything = DynamicField()
    dog_only = GenericReferenceField(choices=[RefDog])


async def test_cached_proxy_into_generic_fields_stores_a_generic_reference(
    async_alias: str,
) -> None:
    """A proxy read from a CachedReferenceField (its stored value is the
    cache) goes into generic fields as the document does, by save, update
    and query, and reads back as a reference."""
    ann = await make_author("Ann")
    await RefCachedHolder(author=ann).async_save()
    proxy = (await RefCachedHolder.objects.async_first()).author
    generic = {"_cls": "RefAuthor", "_ref": DBRef("ref_author", ann.pk)}
    dynamic = {"_ref": DBRef("ref_author", ann.pk), "_cls": "RefAuthor"}
    saved = await RefGenericSlots(
        target=proxy, targets=[proxy], anything=proxy
    ).async_save()
    updated = await RefGenericSlots().async_save()
    await RefGenericSlots.objects(pk=updated.pk).async_update(
        set__target=proxy, push__targets=proxy, set__anything=proxy
    )
    for pk in (saved.pk, updated.pk):
        stored = await raw(RefGenericSlots, pk)
        assert stored["target"] == generic and stored["targets"] == [generic]
        assert stored["anything"] == dynamic
        back = await RefGenericSlots.objects.async_get(pk=pk)
        assert (await back.target).name == "Ann"
        assert (await back.targets[0]).name == (await back.anything).name == "Ann"
    assert await RefGenericSlots.objects(target=proxy).async_count() == 2
    assert await RefGenericSlots.objects(targets=proxy).async_count() == 2


async def test_proxy_of_a_possible_subclass_into_generic_field_needs_await(
    async_alias: str,
) -> None:
    """A ReferenceField stores no class: an unloaded proxy of a class with
    subclasses is refused by generic fields (storing the base class would
    mismatch queries and choices); loaded, it stores the document's class."""
    dog = await RefDog(name="Rex").async_save()
    kennel = await RefKennel(animal=dog).async_save()
    proxy = (await RefKennel.objects.async_get(pk=kennel.pk)).animal
    message = (
        "The unloaded reference 'animal' may be a subclass of RefAnimal: "
        "`await` it and store the document instead"
    )
    with pytest.raises(ValidationError) as raised:
        await RefGenericSlots(target=proxy).async_save()
    assert (
        str(raised.value)
        == f"ValidationError (RefGenericSlots:None) ({message}: ['target'])"
    )
    with pytest.raises(ValidationError, match=message):
        await RefGenericSlots.objects.async_update(set__target=proxy)
    assert await RefGenericSlots.objects.async_count() == 0

    await proxy
    saved = await RefGenericSlots(target=proxy, dog_only=proxy).async_save()
    stored = await raw(RefGenericSlots, saved.pk)
    generic = {"_cls": "RefAnimal.RefDog", "_ref": DBRef("ref_animal", dog.pk)}
    assert stored["target"] == stored["dog_only"] == generic
    assert RefAnimal._subclasses == ("RefAnimal", "RefAnimal.RefDog")
