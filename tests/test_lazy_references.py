"""LazyReferenceField on an async alias: ``async_fetch`` (cached, forced),
passthrough, dangling references, stored values kept on save."""

from __future__ import annotations

import copy
import pickle

import mongoengine
import pytest

from models_references import (
    RefAuthor,
    RefLazyBook,
    make_author,
    raw,
    updates,
)
from mongoengine_async import (
    AsyncUsageError,
    BooleanField,
    DictField,
    Document,
    GenericLazyReferenceField,
    LazyReference,
    LazyReferenceField,
    ListField,
    MapField,
    StringField,
    queryset_manager,
)


async def test_lazy_reference_async_fetch_cached_and_force(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author, author_pt=author).async_save()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    command_log.clear()

    ref = book.author
    assert isinstance(ref, LazyReference)
    assert ref.pk == author.pk
    assert command_log.count() == 0

    document = await ref.async_fetch()
    assert isinstance(document, RefAuthor) and document.name == "Ann"
    assert command_log.count("find") == 1
    assert await ref.async_fetch() is document
    assert command_log.count("find") == 1
    # Sync fetch of an already-fetched reference needs no I/O.
    assert ref.fetch() is document

    # force=True goes to the server again and sees the change.
    await RefAuthor.objects(pk=author.pk).async_update(set__name="Changed")
    command_log.clear()
    forced = await ref.async_fetch(force=True)
    assert forced.name == "Changed"
    assert command_log.count("find") == 1
    assert await ref.async_fetch() is forced
    assert command_log.count("find") == 1


async def test_lazy_reference_fetch_unfetched_raises(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    command_log.clear()
    with pytest.raises(AsyncUsageError) as raised:
        book.author.fetch()
    assert str(raised.value) == (
        f"{book.author!r}.fetch() would block the event loop: alias "
        f"'{async_alias}' is async (connect_async); use "
        "`await reference.async_fetch()` instead"
    )
    assert command_log.count() == 0


async def test_lazy_reference_passthrough(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author, author_pt=author).async_save()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    command_log.clear()

    ref = book.author_pt
    assert ref.pk == author.pk
    with pytest.raises(AsyncUsageError, match="async_fetch"):
        ref.name  # noqa: B018
    with pytest.raises(AsyncUsageError, match="async_fetch"):
        ref["name"]
    assert command_log.count() == 0

    await ref.async_fetch()
    assert command_log.count("find") == 1
    assert ref.name == "Ann"
    assert ref["name"] == "Ann"
    assert command_log.count("find") == 1


async def test_unfetched_passthrough_answers_hasattr_copy_and_pickle(
    async_alias, command_log
):
    # hasattr() and getattr() with a default answer (the error is also an
    # AttributeError, naming the attribute), with no I/O; copies and pickles
    # are the same reference (they raised AsyncUsageError, or lost the id).
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author, author_pt=author).async_save()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    command_log.clear()
    ref = book.author_pt
    assert not hasattr(ref, "name")
    assert getattr(ref, "nope", None) is None
    with pytest.raises(AttributeError, match=r"'name' of the unfetched.*async_fetch"):
        ref.name  # noqa: B018
    for copied in (copy.copy(ref), pickle.loads(pickle.dumps(ref))):
        assert type(copied) is LazyReference and copied == ref
        assert (copied.pk, copied.passthrough) == (author.pk, True)
        assert copied.document_type is RefAuthor
    plain = pickle.loads(pickle.dumps(book.author))
    assert (plain.pk, plain.passthrough) == (author.pk, False)
    assert command_log.count() == 0

    document = await ref.async_fetch()
    copied = pickle.loads(pickle.dumps(ref))
    assert copied.name == "Ann" and copied.fetch().pk == document.pk


async def test_lazy_reference_dangling(async_alias):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    await author.async_delete()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    with pytest.raises(RefAuthor.DoesNotExist) as info:
        await book.author.async_fetch()
    assert isinstance(info.value, mongoengine.DoesNotExist)
    # MongoEngine's fetch() is objects.get(pk=...): its message.
    assert str(info.value) == "RefAuthor matching query does not exist."


async def test_lazy_reference_save_keeps_stored_value(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author, author_pt=author).async_save()
    before = await raw(RefLazyBook, saved.pk)
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    await book.author.async_fetch()
    await book.author_pt.async_fetch()
    book.title = "M"
    command_log.clear()
    await book.async_save()
    assert updates(command_log) == [{"$set": {"title": "M"}}]
    assert await raw(RefLazyBook, saved.pk) == {**before, "title": "M"}


class RefLazyContainers(Document):
    generic_list = ListField(GenericLazyReferenceField())
    generic_dict = DictField(GenericLazyReferenceField())
    dbref_list = ListField(LazyReferenceField(RefAuthor, dbref=True))
    dbref_map = MapField(LazyReferenceField(RefAuthor, dbref=True))
    id_map = MapField(LazyReferenceField(RefAuthor))


async def test_lazy_references_in_dicts_read_as_in_lists(async_alias, command_log):
    """The items of a DictField/MapField of (generic) lazy references read as
    the items of a ListField of them do: LazyReferences with ``async_fetch``
    (MongoEngine's DictField loads a generic one's document, and fails on a
    map of DBRef-stored ones); reading and saving change nothing stored."""
    author = await make_author()
    saved = await RefLazyContainers(
        generic_list=[author],
        generic_dict={"k": author},
        dbref_list=[author],
        dbref_map={"k": author},
        id_map={"k": author},
    ).async_save()
    before = await raw(RefLazyContainers, saved.pk)
    loaded = await RefLazyContainers.objects.async_get(pk=saved.pk)
    command_log.clear()
    items = {
        "generic_list": loaded.generic_list[0],
        "generic_dict": loaded.generic_dict["k"],
        "dbref_list": loaded.dbref_list[0],
        "dbref_map": loaded.dbref_map["k"],
        "id_map": loaded.id_map["k"],
    }
    for name, item in items.items():
        assert type(item) is LazyReference, name
        assert (item.document_type, item.pk) == (RefAuthor, author.pk), name
    assert command_log.count() == 0
    for name, item in items.items():
        assert (await item.async_fetch()).name == "Ann", name
    assert loaded.generic_dict["k"] is items["generic_dict"]  # kept in place
    assert loaded._get_changed_fields() == []
    await loaded.async_save()
    assert await raw(RefLazyContainers, saved.pk) == before
    [joined] = await RefLazyContainers.objects(pk=saved.pk).async_select_related()
    assert joined.generic_dict["k"].fetch().name == "Ann"  # loaded: no I/O


class LzParent(Document):
    name = StringField()
    hidden = BooleanField(default=False)
    meta = {"allow_inheritance": True}

    @queryset_manager
    def objects(doc_cls, queryset):
        return queryset.filter(hidden=False)


class LzChild(LzParent):
    pass


class LzHolder(Document):
    child = LazyReferenceField(LzChild)
    parent = LazyReferenceField(LzParent)


async def test_lazy_reference_fetch_is_mongoengines_objects_get(
    async_alias, command_log
):
    """MongoEngine's fetch() is ``document_type.objects.get(pk=...)``: the
    class's manager and class filter apply, and its DoesNotExist."""
    parent = await LzParent(name="parent").async_save()
    hidden = await LzParent(name="hidden", hidden=True).async_save()
    child = await LzChild(name="child").async_save()
    holders = await LzHolder._async_get_collection()
    await holders.insert_one({"child": parent.pk, "parent": hidden.pk})
    holder = await LzHolder.objects.async_first()
    command_log.clear()

    with pytest.raises(LzChild.DoesNotExist) as not_a_child:
        await holder.child.async_fetch()  # a LzParent is no LzChild
    assert str(not_a_child.value) == "LzParent.LzChild matching query does not exist."
    with pytest.raises(LzParent.DoesNotExist) as filtered:
        await holder.parent.async_fetch()  # its manager leaves it out
    assert str(filtered.value) == "LzParent matching query does not exist."
    assert command_log.names == ["find", "find"]

    holder = await LzHolder(child=child, parent=parent).async_save()
    holder = await LzHolder.objects.async_get(pk=holder.pk)
    assert (await holder.child.async_fetch()).name == "child"
    assert (await holder.parent.async_fetch()).name == "parent"


class LzPlainParent(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class LzPlainChild(LzPlainParent):
    pass


class LzPlainHolder(Document):
    child = LazyReferenceField(LzPlainChild)


async def test_select_related_fills_lazy_references_as_their_fetch_would(
    async_alias, command_log
):
    """select_related gives a LazyReference what its async_fetch would
    (MongoEngine's ``objects.get``): a reference to a class with a manager of
    its own stays unfetched (only the fetch applies its filter), one to a
    document its class filter refuses too; the others are loaded."""
    parent = await LzParent(name="parent").async_save()
    hidden = await LzParent(name="hidden", hidden=True).async_save()
    holders = await LzHolder._async_get_collection()
    await holders.insert_one({"child": parent.pk, "parent": hidden.pk})
    for holder in (
        (await LzHolder.objects.async_select_related())[0],
        await (await LzHolder.objects.async_first()).async_select_related(),
    ):
        assert holder.child._cached_doc is None and holder.parent._cached_doc is None
        with pytest.raises(LzChild.DoesNotExist):
            await holder.child.async_fetch()  # a LzParent is no LzChild
        with pytest.raises(LzParent.DoesNotExist):
            await holder.parent.async_fetch()  # its manager leaves it out

    plain_parent = await LzPlainParent(name="parent").async_save()
    plain_child = await LzPlainChild(name="child").async_save()
    plain_holders = await LzPlainHolder._async_get_collection()
    await plain_holders.insert_one({"child": plain_parent.pk})
    await LzPlainHolder(child=plain_child).async_save()
    command_log.clear()
    wrong, right = await LzPlainHolder.objects.order_by("id").async_select_related()
    assert command_log.names == ["find", "find"]  # the holders, the children
    assert right.child.fetch().name == "child"  # loaded: no I/O
    assert wrong.child._cached_doc is None
    with pytest.raises(LzPlainChild.DoesNotExist):
        await wrong.child.async_fetch()
