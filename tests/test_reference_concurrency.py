"""Concurrent fetches of one reference (proxy or lazy): one query for all,
the same error for all, locks not tied to one event loop."""

from __future__ import annotations

import asyncio
import threading

from models_references import (
    RefAuthor,
    RefBook,
    RefLazyBook,
    make_author,
    make_book,
)


async def test_concurrent_fetch_single_query(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    proxy = book.author
    command_log.clear()

    results = await asyncio.gather(*(proxy.fetch() for _ in range(20)))
    assert command_log.count("find") == 1
    assert all(result is results[0] for result in results)
    assert results[0].name == "Ann"


async def test_concurrent_mixed_awaits_single_query(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    proxy = book.author
    command_log.clear()

    async def via_await():
        return await proxy

    async def via_field():
        return await RefBook.author.async_fetch(book)

    awaitables = [via_await() for _ in range(5)]
    awaitables += [proxy.async_fetch() for _ in range(5)]
    awaitables += [via_field() for _ in range(5)]
    results = await asyncio.gather(*awaitables)
    assert command_log.count("find") == 1
    assert len({id(r) for r in results}) == 1


async def test_concurrent_fetch_of_missing_raises_for_all(async_alias):
    author = await make_author()
    book = await make_book(author)
    await author.async_delete()
    proxy = book.author
    results = await asyncio.gather(
        *(proxy.fetch() for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RefAuthor.DoesNotExist) for r in results)


async def test_concurrent_lazy_fetch_single_query(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    book = await RefLazyBook.objects.async_get(pk=saved.pk)
    reference = book.author
    command_log.clear()

    results = await asyncio.gather(*(reference.async_fetch() for _ in range(200)))
    assert command_log.names == ["find"]
    assert all(result is results[0] for result in results)
    assert results[0].name == "Ann" and book.author.fetch() is results[0]


async def test_concurrent_lazy_fetches_in_two_event_loops(async_alias):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    reference = (await RefLazyBook.objects.async_get(pk=saved.pk)).author
    await asyncio.gather(*(reference.async_fetch() for _ in range(3)))
    await RefAuthor.objects(pk=author.pk).async_update(set__name="Bea")

    async def in_another_loop():
        # A lock kept from the first loop would be bound to it: RuntimeError.
        return await asyncio.gather(
            *(reference.async_fetch(force=True) for _ in range(3))
        )

    results = await asyncio.to_thread(asyncio.run, in_another_loop())
    assert [result.name for result in results] == ["Bea"] * 3


async def test_concurrent_forced_lazy_fetches_each_query(async_alias, command_log):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    reference = (await RefLazyBook.objects.async_get(pk=saved.pk)).author
    command_log.clear()
    fetches = [reference.async_fetch(force=True) for _ in range(3)]
    results = await asyncio.gather(reference.async_fetch(), *fetches)
    assert command_log.names == ["find"] * 4  # one after another
    assert results[-1] is reference.fetch()


async def test_concurrent_lazy_fetch_of_missing_raises_for_all(async_alias):
    author = await make_author()
    saved = await RefLazyBook(title="L", author=author).async_save()
    await author.async_delete()
    reference = (await RefLazyBook.objects.async_get(pk=saved.pk)).author
    results = await asyncio.gather(
        *(reference.async_fetch() for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(result, RefAuthor.DoesNotExist) for result in results)


async def test_one_reference_fetched_at_once_by_threads_with_their_own_loops(
    async_alias,
):
    """Threads running loops of their own await the same proxy and lazy
    reference at the same moment: each gets the document (a future or lock of
    one loop must not be waited for, or resolved, on another)."""
    author = await make_author()
    saved = await make_book(author=author)
    lazy_saved = await RefLazyBook(title="L", author=author).async_save()
    threads = 4

    async def fetch_all(reference, barrier, force: bool):
        barrier.wait()  # all threads, then all fetch at once
        fetch = reference.async_fetch(force=True) if force else reference.fetch()
        return (await asyncio.wait_for(fetch, 10)).name

    async def trial(force: bool) -> list[str]:
        if force:
            reference = (await RefLazyBook.objects.async_get(pk=lazy_saved.pk)).author
        else:
            reference = (await RefBook.objects.async_get(pk=saved.pk)).author
        barrier = threading.Barrier(threads)

        def in_a_thread():
            return asyncio.run(fetch_all(reference, barrier, force))

        return await asyncio.gather(
            *(asyncio.to_thread(in_a_thread) for _ in range(threads))
        )

    for force in (False, True):
        for _ in range(5):
            assert await trial(force) == ["Ann"] * threads
