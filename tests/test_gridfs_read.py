"""``async_read()`` of a whole file outside a session: chunk ranges read by a
few cursors at once, each with PyMongo's checks, so a corrupt file raises what
PyMongo's own read raises."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bson import Binary
from gridfs.asynchronous import AsyncGridFSBucket
from gridfs.errors import CorruptGridFile

from mongoengine_async import (
    Document,
    FileField,
    get_async_connection,
    get_async_db,
    gridfs_read,
)
from mongoengine_async.gridfs import AsyncGridFSProxy
from mongoengine_async.gridfs_read import REPLY_BYTES
from mongoengine_async.testing import CommandLog

MB = 1024 * 1024
BIG = REPLY_BYTES + 3 * MB + 5  # more than one reply: two ranges
DATA = bytes(range(256)) * (BIG // 256) + b"tail!"


class GrArchive(Document):
    file = FileField(collection_name="gr_fs")


async def stored(chunk_size: int = 255 * 1024) -> AsyncGridFSProxy:
    archive = GrArchive()
    await archive.file.async_put(DATA, filename="big.bin", chunk_size=chunk_size)
    await archive.async_save()
    proxy = await GrArchive.file.async_get(await GrArchive.objects.async_get())
    assert proxy is not None
    return proxy


def chunk_finds(log: CommandLog) -> list[dict]:
    return [
        event.command
        for event in log.events
        if event.command.get("find") == "gr_fs.chunks"
    ]


async def pymongos_filter(grid_id: Any, log: CommandLog) -> dict:
    """The chunk filter PyMongo's own read sends (its form differs by version)."""
    bucket = AsyncGridFSBucket(get_async_db(), "gr_fs")
    log.clear()
    assert await (await bucket.open_download_stream(grid_id)).read() == DATA
    (find,) = chunk_finds(log)
    return find["filter"]


async def test_a_big_file_is_read_by_two_cursors_at_once(
    async_alias: str, command_log: CommandLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await stored()
    count = -(-len(DATA) // (255 * 1024))
    files = await pymongos_filter(proxy.grid_id, command_log)
    started: list[int] = []
    both_started = asyncio.Event()
    read_range = gridfs_read._read_range

    async def after_both_start(grid_out: Any, first: int, end: int, last: bool) -> list:
        started.append(first)
        if len(started) == 2:
            both_started.set()
        # Ranges read in turn would never get here for the second one.
        await asyncio.wait_for(both_started.wait(), 10)
        return await read_range(grid_out, first, end, last)

    monkeypatch.setattr(gridfs_read, "_read_range", after_both_start)
    command_log.clear()
    assert await proxy.async_read() == DATA
    assert started == [0, count // 2]

    # Either range's find may reach the server first.
    first, second = sorted(
        chunk_finds(command_log), key=lambda find: "n" in find["filter"]
    )
    assert first["filter"] == files
    assert first["limit"] == count // 2
    assert second["filter"] == {**files, "n": {"$gte": count // 2}}
    assert "limit" not in second
    assert command_log.names == ["find", "find"]  # each range in one reply


async def test_in_a_session_one_cursor_reads_in_turn(
    async_alias: str, command_log: CommandLog
) -> None:
    proxy = await stored()
    async with get_async_connection().start_session() as session:
        command_log.clear()
        assert await proxy.async_read(session=session) == DATA
        lsid = session.session_id
    assert command_log.names == ["find", "getMore"]
    assert [event.command["lsid"] for event in command_log.events] == [lsid] * 2


async def test_an_empty_file_reads_without_a_round_trip(
    async_alias: str, command_log: CommandLog
) -> None:
    archive = GrArchive()
    await archive.file.async_put(b"")
    command_log.clear()
    assert await archive.file.async_read() == b""
    assert command_log.names == []


async def pymongo_error(grid_id: Any) -> CorruptGridFile:
    bucket = AsyncGridFSBucket(get_async_db(), bucket_name="gr_fs")
    stream = await bucket.open_download_stream(grid_id)
    with pytest.raises(CorruptGridFile) as error:
        await stream.read()
    return error.value


async def missing(chunks: Any, grid_id: Any, n: int) -> None:
    await chunks.delete_one({"files_id": grid_id, "n": n})


async def truncated(chunks: Any, grid_id: Any, n: int) -> None:
    await chunks.update_one({"files_id": grid_id, "n": n}, {"$set": {"data": b"x"}})


async def extra(chunks: Any, grid_id: Any, n: int) -> None:
    await chunks.insert_one({"files_id": grid_id, "n": n, "data": Binary(b"x")})


CORRUPTIONS = {  # chunks of 1 MB: 20 of them, the second range from #10
    "missing in the first range": [(missing, 3)],
    "missing last of the first range": [(missing, 9)],
    "truncated in the second range": [(truncated, 12)],
    "missing last chunk": [(missing, 19)],
    "extra chunk": [(extra, 20)],
    "in both ranges": [(truncated, 15), (missing, 4)],
}


@pytest.mark.parametrize("damage", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
async def test_a_corrupt_file_raises_as_pymongo_read(
    async_alias: str, damage: list
) -> None:
    proxy = await stored(chunk_size=MB)
    assert proxy.length == len(DATA) and -(-len(DATA) // MB) == 20
    chunks = get_async_db()["gr_fs.chunks"]
    for corrupt, n in damage:
        await corrupt(chunks, proxy.grid_id, n)

    with pytest.raises(CorruptGridFile) as error:
        await proxy.async_read()
    assert str(error.value) == str(await pymongo_error(proxy.grid_id))
