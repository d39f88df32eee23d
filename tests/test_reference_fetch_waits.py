"""Concurrent fetches of one proxy wait for the query in flight (proxies.py
``AsyncReferenceProxy.fetch``, a future rather than a lock): cancelling a
waiter leaves the query alone; cancelling the query lets a waiter query again."""

from __future__ import annotations

import asyncio

import pytest

from models_references import RefAuthor, RefLazyBook, make_author, make_book
from mongoengine_async import async_run_in_transaction
from mongoengine_async.testing import CommandLog


class Boom(Exception):
    pass


async def _started(task: asyncio.Task, command_log: CommandLog) -> None:
    """Let ``task`` run until its find is sent."""
    while not command_log.count("find"):
        await asyncio.sleep(0)
        assert not task.done()


async def _loader_and_waiters(command_log: CommandLog) -> tuple:
    """A book, its author's proxy, a fetch whose find is sent, and three
    fetches waiting for it."""
    book = await make_book(await make_author())
    proxy = book.author
    command_log.clear()
    loader = asyncio.ensure_future(proxy.fetch())
    await _started(loader, command_log)
    waiters = [asyncio.ensure_future(proxy.fetch()) for _ in range(3)]
    await asyncio.sleep(0)
    return book, proxy, loader, waiters


async def test_a_cancelled_waiter_leaves_the_query_alone(
    async_alias: str, command_log: CommandLog
) -> None:
    book, _, loader, waiters = await _loader_and_waiters(command_log)
    waiters[0].cancel()
    author = await loader
    assert [await waiter for waiter in waiters[1:]] == [author, author]
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]
    assert (author.name, command_log.count("find")) == ("Ann", 1)
    assert book.author is author


async def test_a_cancelled_query_lets_a_waiter_query_again(
    async_alias: str, command_log: CommandLog
) -> None:
    book, proxy, loader, waiters = await _loader_and_waiters(command_log)
    loader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loader
    authors = await asyncio.gather(*waiters)
    assert all(author is authors[0] for author in authors)
    assert (authors[0].name, command_log.count("find")) == ("Ann", 2)
    assert proxy.fetched and book.author is authors[0]


async def test_a_failed_query_fails_each_waiter_on_its_own(
    async_alias: str, command_log: CommandLog
) -> None:
    author = await make_author()
    book = await make_book(author)
    await author.async_delete()
    proxy = book.author
    command_log.clear()
    results = await asyncio.gather(
        *(proxy.fetch() for _ in range(3)), return_exceptions=True
    )
    assert [type(result) for result in results] == [RefAuthor.DoesNotExist] * 3
    assert command_log.count("find") == 3  # each queried in turn, as with a lock


async def test_a_fetch_in_another_transaction_sends_its_own_query(
    async_alias: str, command_log: CommandLog
) -> None:
    """A fetch outside the transaction whose fetch of the proxy is in flight
    does not wait for it (it would get the transaction's uncommitted read):
    it sends its own query and gets the committed document."""
    author = await make_author()
    book = await make_book(author)
    proxy = book.author
    names: dict[str, str] = {}

    async def in_transaction() -> None:
        async with async_run_in_transaction():
            await RefAuthor.objects(pk=author.pk).async_update(set__name="Uncommitted")
            names["inside"] = (await proxy).name
            raise Boom

    command_log.clear()
    inside = asyncio.ensure_future(in_transaction())
    await _started(inside, command_log)
    names["outside"] = (await proxy.fetch()).name
    with pytest.raises(Boom):
        await inside
    assert names == {"inside": "Uncommitted", "outside": "Ann"}
    finds = [
        e
        for e in command_log.events
        if e.command_name == "find"  # (not the fence of the aborted transaction)
        and e.command["find"] != "mongoengine_async_fence"
    ]
    assert ["lsid" in e.command and "txnNumber" in e.command for e in finds] == [
        True,
        False,
    ]


async def test_a_lazy_fetch_in_another_transaction_sends_its_own_query(
    async_alias: str, command_log: CommandLog
) -> None:
    """As a proxy's: a LazyReference fetch outside the transaction whose fetch
    of it is in flight does not wait for it (it got the transaction's
    uncommitted read)."""
    author = await make_author()
    book = await make_book(author, cls=RefLazyBook)
    reference = book.author
    names: dict[str, str] = {}

    async def in_transaction() -> None:
        async with async_run_in_transaction():
            await RefAuthor.objects(pk=author.pk).async_update(set__name="Uncommitted")
            names["inside"] = (await reference.async_fetch()).name
            raise Boom

    command_log.clear()
    inside = asyncio.ensure_future(in_transaction())
    await _started(inside, command_log)
    names["outside"] = (await reference.async_fetch()).name
    with pytest.raises(Boom):
        await inside
    assert names == {"inside": "Uncommitted", "outside": "Ann"}
    finds = [
        e
        for e in command_log.events
        if e.command_name == "find"  # (not the fence of the aborted transaction)
        and e.command["find"] != "mongoengine_async_fence"
    ]
    assert ["lsid" in e.command and "txnNumber" in e.command for e in finds] == [
        True,
        False,
    ]
