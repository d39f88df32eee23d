"""A queryset kept while its alias is disconnected and connected again as the
other kind (sync <-> async): every terminal refuses it saying so."""

from __future__ import annotations

import pytest

import mongoengine_async
from conftest import database_of_either_kind
from mongoengine_async import (
    AsyncUsageError,
    Document,
    StringField,
    connect_async,
    disconnect_async,
)


class KindNote(Document):
    text = StringField()
    meta = {"db_alias": "kind-changes", "collection": "kind_notes"}


ALIAS = "kind-changes"
WAS_ASYNC = (
    "KindNote.objects.{name}() cannot run: it was made while alias "
    "'kind-changes' was async (connect_async()), and the alias is sync "
    "(connect()) now; make it again to use the sync API, or "
    "disconnect('kind-changes') and connect_async(alias='kind-changes')"
)
WAS_SYNC = (
    "KindNote.objects.{name}() cannot run: it was made while alias "
    "'kind-changes' was sync (connect()), and the alias is async "
    "(connect_async()) now; make it again to use the async API, or "
    "await disconnect_async('kind-changes') and connect(alias='kind-changes')"
)


@pytest.fixture
async def database(mongodb_uri):
    async with database_of_either_kind(mongodb_uri, ALIAS, "test_kind") as name:
        yield name


async def _async_terminals(queryset):
    yield "async_count", lambda: queryset.async_count()
    yield "async_to_list", lambda: queryset.async_to_list()
    yield "async_first", lambda: queryset.async_first()
    yield "async_get", lambda: queryset.async_get()
    yield "async_update", lambda: queryset.async_update(set__text="changed")
    yield "async_delete", lambda: queryset.async_delete()


def _sync_terminals(queryset):
    return [
        ("count", lambda: queryset.count()),
        ("__iter__", lambda: list(queryset)),
        ("first", lambda: queryset.first()),
        ("get", lambda: queryset.get()),
        ("update", lambda: queryset.update(set__text="changed")),
        ("delete", lambda: queryset.delete()),
        ("__getitem__", lambda: queryset[0]),
    ]


async def test_kept_async_queryset_on_alias_now_sync(mongodb_uri, database):
    await connect_async(
        database, alias=ALIAS, host=mongodb_uri, uuidRepresentation="standard"
    )
    await KindNote(text="kept").async_save()
    kept = KindNote.objects(text="kept")
    await disconnect_async(ALIAS)
    mongoengine_async.connect(
        database, alias=ALIAS, host=mongodb_uri, uuidRepresentation="standard"
    )
    async for name, terminal in _async_terminals(kept):
        with pytest.raises(AsyncUsageError) as caught:
            await terminal()
        assert type(caught.value) is AsyncUsageError
        assert str(caught.value) == WAS_ASYNC.format(name=name)
    with pytest.raises(AsyncUsageError) as caught:
        [note async for note in kept]
    assert str(caught.value) == WAS_ASYNC.format(name="__aiter__")
    for name, terminal in _sync_terminals(kept):
        with pytest.raises(AsyncUsageError) as caught:
            terminal()
        assert type(caught.value) is AsyncUsageError
        assert str(caught.value) == WAS_ASYNC.format(name=name)
    # Made again, the queryset works on the sync alias; nothing was changed.
    assert [note.text for note in KindNote.objects(text="kept")] == ["kept"]


async def test_kept_sync_queryset_on_alias_now_async(mongodb_uri, database):
    mongoengine_async.connect(
        database, alias=ALIAS, host=mongodb_uri, uuidRepresentation="standard"
    )
    KindNote(text="kept").save()
    kept = KindNote.objects(text="kept")
    mongoengine_async.disconnect(ALIAS)
    await connect_async(
        database, alias=ALIAS, host=mongodb_uri, uuidRepresentation="standard"
    )
    async for name, terminal in _async_terminals(kept):
        with pytest.raises(AsyncUsageError) as caught:
            await terminal()
        assert type(caught.value) is AsyncUsageError
        assert str(caught.value) == WAS_SYNC.format(name=name)
    for name, terminal in _sync_terminals(kept):
        with pytest.raises(AsyncUsageError) as caught:
            terminal()
        assert type(caught.value) is AsyncUsageError
        assert str(caught.value) == WAS_SYNC.format(name=name)
    # Made again, the queryset works on the async alias; nothing was changed.
    assert [note.text async for note in KindNote.objects(text="kept")] == ["kept"]


async def _all_refused(document, message: str) -> None:
    """Each async and sync write or read of ``document`` raises ``message``."""
    for name in ("async_save", "async_reload", "async_delete"):
        with pytest.raises(AsyncUsageError) as caught:
            await getattr(document, name)()
        assert str(caught.value) == message.format(name=name)
    for name in ("save", "reload", "delete"):
        with pytest.raises(AsyncUsageError) as caught:
            getattr(document, name)()
        assert str(caught.value) == message.format(name=name)


async def test_switched_document_on_alias_now_sync(mongodb_uri, database):
    other = f"{database}_other"
    await connect_async(
        database, alias=ALIAS, host=mongodb_uri, uuidRepresentation="standard"
    )
    await connect_async(
        other, alias="kind-other", host=mongodb_uri, uuidRepresentation="standard"
    )
    try:
        moved = KindNote(text="moved").switch_db("kind-other")
        await moved.async_save()
        await disconnect_async("kind-other")
        mongoengine_async.connect(
            other, alias="kind-other", host=mongodb_uri, uuidRepresentation="standard"
        )
        message = (
            "KindNote.{name}() cannot run: it was made while alias 'kind-other' "
            "was async (connect_async()), and the alias is sync (connect()) now; "
            "make it again to use the sync API, or disconnect('kind-other') and "
            "connect_async(alias='kind-other')"
        )
        await _all_refused(moved, message)
        # Made again on the sync alias, it is there.
        assert KindNote.objects.using("kind-other").get().text == "moved"
    finally:
        if mongoengine_async.is_sync_connection("kind-other"):
            mongoengine_async.get_connection("kind-other").drop_database(other)
            mongoengine_async.disconnect("kind-other")
        await disconnect_async("kind-other")


async def test_switched_document_on_alias_now_async(mongodb_uri, database):
    """A document moved by switch_db() to a sync alias that is async now is
    refused by its sync and async methods naming that alias, though another
    sync alias (the class's) shares the client its collection is of."""
    other = f"{database}_other"
    settings = {"host": mongodb_uri, "uuidRepresentation": "standard"}
    mongoengine_async.connect(database, alias=ALIAS, **settings)
    mongoengine_async.connect(other, alias="kind-other", **settings)
    try:
        moved = KindNote(text="moved").switch_db("kind-other").save()
        mongoengine_async.disconnect("kind-other")
        await connect_async(other, alias="kind-other", **settings)
        message = (
            "KindNote.{name}() cannot run: it was made while alias 'kind-other' "
            "was sync (connect()), and the alias is async (connect_async()) now; "
            "make it again to use the async API, or await "
            "disconnect_async('kind-other') and connect(alias='kind-other')"
        )
        moved.text = "changed"
        await _all_refused(moved, message)
        # Made again on the async alias, it is there, unchanged.
        found = await KindNote.objects.using("kind-other").async_get()
        assert found.text == "moved"
    finally:
        if mongoengine_async.is_async_connection("kind-other"):
            await mongoengine_async.get_async_connection("kind-other").drop_database(
                other
            )
            await disconnect_async("kind-other")
        mongoengine_async.disconnect("kind-other")
