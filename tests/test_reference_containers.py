"""References inside lists, dicts, maps and embedded documents: read as
proxies without I/O, filled in place when awaited, saved unchanged."""

from __future__ import annotations

import pytest

from models_references import (
    RefAuthor,
    RefCitation,
    RefEditor,
    RefMisc,
    RefShelf,
    make_author,
    make_shelf,
    raw,
    updates,
)
from mongoengine_async import (
    AsyncReferenceProxy,
    LazyReference,
)


def assert_proxy_of(value, author):
    assert isinstance(value, AsyncReferenceProxy), value
    assert value.id == author.id
    assert value == author


async def test_containers_read_as_proxies(async_alias, command_log):
    shelf, ann, bob, cid = await make_shelf()
    command_log.clear()

    assert len(shelf.authors) == 2
    assert_proxy_of(shelf.authors[0], ann)
    assert_proxy_of(shelf.authors[1], bob)
    assert_proxy_of(shelf.by_role["lead"], ann)
    assert_proxy_of(shelf.by_role["second"], bob)
    assert_proxy_of(shelf.by_name["cid"], cid)
    assert_proxy_of(shelf.citation.author, cid)
    assert_proxy_of(shelf.citations[0].author, ann)
    assert_proxy_of(shelf.citations[1].author, bob)
    assert_proxy_of(shelf.grid[0][0], ann)
    assert_proxy_of(shelf.grid[0][1], bob)
    assert_proxy_of(shelf.grid[1][0], cid)
    assert [a.id for a in shelf.authors] == [ann.id, bob.id]
    assert shelf.authors == [ann, bob]
    assert command_log.count() == 0


async def test_containers_await_items_fills_container(async_alias, command_log):
    shelf, _, bob, _ = await make_shelf()
    command_log.clear()

    first = await shelf.authors[0]
    assert type(first) is RefAuthor and first.name == "Ann"
    assert shelf.authors[0] is first
    assert_proxy_of(shelf.authors[1], bob)

    lead = await shelf.by_role["lead"]
    assert shelf.by_role["lead"] is lead and lead.name == "Ann"
    c = await shelf.by_name["cid"]
    assert shelf.by_name["cid"] is c and c.name == "Cid"
    emb = await shelf.citation.author
    assert shelf.citation.author is emb and emb.name == "Cid"
    emb_list = await shelf.citations[1].author
    assert shelf.citations[1].author is emb_list and emb_list.name == "Bob"
    nested = await shelf.grid[1][0]
    assert shelf.grid[1][0] is nested and nested.name == "Cid"
    nested_fetch = await shelf.grid[0][1].fetch()
    assert shelf.grid[0][1] is nested_fetch and nested_fetch.name == "Bob"
    assert command_log.count("find") == 7
    assert command_log.count() == 7


@pytest.mark.parametrize("fetch", [False, True], ids=["read", "fetched"])
async def test_containers_save_unchanged(async_alias, command_log, fetch):
    shelf, *_ = await make_shelf()
    before = await raw(RefShelf, shelf.pk)

    proxies = [
        shelf.authors[0],
        shelf.authors[1],
        shelf.by_role["lead"],
        shelf.by_name["cid"],
        shelf.citation.author,
        shelf.citations[0].author,
        shelf.citations[1].author,
        shelf.grid[0][0],
        shelf.grid[1][0],
    ]
    if fetch:
        for proxy in proxies:
            await proxy
        assert type(shelf.authors[0]) is RefAuthor
        assert type(shelf.citation.author) is RefAuthor
        assert type(shelf.grid[1][0]) is RefAuthor
    assert shelf._get_changed_fields() == []

    command_log.clear()
    await shelf.async_save()
    assert command_log.count("update") == 0
    shelf.name = "renamed"
    await shelf.async_save()
    assert updates(command_log) == [{"$set": {"name": "renamed"}}]
    assert await raw(RefShelf, shelf.pk) == {**before, "name": "renamed"}


async def test_container_change_still_saved(async_alias):
    """Replacing proxies does not hide real changes from change tracking."""
    shelf, ann, bob, cid = await make_shelf()
    await shelf.authors[0]
    shelf.authors.append(cid)
    shelf.by_role["third"] = cid
    await shelf.async_save()
    stored = await raw(RefShelf, shelf.pk)
    assert stored["authors"] == [ann.id, bob.id, cid.id]
    assert stored["by_role"] == {"lead": ann.id, "second": bob.id, "third": cid.id}


async def test_generic_and_lazy_items_in_lists(async_alias, command_log):
    ann = await make_author("Ann")
    eve = await RefEditor(name="Eve").async_save()
    saved = await RefMisc(
        name="m",
        generic_list=[ann, eve],
        lazy_list=[ann],
        generic_lazy_list=[eve, ann],
    ).async_save()
    before = await raw(RefMisc, saved.pk)
    misc = await RefMisc.objects.async_get(pk=saved.pk)
    command_log.clear()

    first, second = misc.generic_list[0], misc.generic_list[1]
    assert isinstance(first, AsyncReferenceProxy) and first.document_type is RefAuthor
    assert isinstance(second, AsyncReferenceProxy)
    assert second.document_type is RefEditor
    lazy = misc.lazy_list[0]
    assert isinstance(lazy, LazyReference) and lazy.pk == ann.pk
    glazy = misc.generic_lazy_list[0]
    assert isinstance(glazy, LazyReference) and glazy.document_type is RefEditor
    assert command_log.count() == 0

    assert type(await second) is RefEditor
    assert misc.generic_list[1].name == "Eve"
    assert (await lazy.async_fetch()).name == "Ann"
    assert (await misc.generic_lazy_list[1].async_fetch()).name == "Ann"
    assert command_log.count("find") == 3

    command_log.clear()
    await misc.async_save()
    assert command_log.count("update") == 0
    assert await raw(RefMisc, saved.pk) == before


async def test_dict_of_lists_reads_and_fills(async_alias, command_log):
    ann = await make_author("Ann")
    saved = await RefMisc(name="m", dict_of_lists={"a": [ann]}).async_save()
    misc = await RefMisc.objects.async_get(pk=saved.pk)
    command_log.clear()
    proxy = misc.dict_of_lists["a"][0]
    assert isinstance(proxy, AsyncReferenceProxy)
    assert command_log.count() == 0
    document = await proxy
    assert misc.dict_of_lists["a"][0] is document
    assert command_log.count("find") == 1


async def test_embedded_documents_inside_dict(async_alias, command_log):
    ann = await make_author("Ann")
    saved = await RefMisc(
        name="m", cited={"x": RefCitation(note="n", author=ann)}
    ).async_save()
    before = await raw(RefMisc, saved.pk)
    misc = await RefMisc.objects.async_get(pk=saved.pk)
    command_log.clear()
    proxy = misc.cited["x"].author
    assert isinstance(proxy, AsyncReferenceProxy) and proxy == ann
    assert command_log.count() == 0
    assert (await proxy).name == "Ann"
    assert misc.cited["x"].author.name == "Ann"

    (again,) = await RefMisc.objects.async_select_related()
    assert type(again.cited["x"].author) is RefAuthor
    await again.async_save()
    assert await raw(RefMisc, saved.pk) == before
