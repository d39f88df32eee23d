"""Reading a whole GridFS file with a few chunk cursors at once.

One cursor is a chain of round trips: the server builds a reply of up to 16 MB
of chunks only when the client, having decoded the previous one, asks for it.
Splitting the chunks into ranges read at once lets the server fill one reply
while the client decodes another. Each range is PyMongo's own chunk iterator,
so a missing, truncated or extra chunk raises the same ``CorruptGridFile``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

from gridfs.asynchronous import AsyncGridOut
from pymongo.asynchronous.cursor import AsyncCursor

from mongoengine_async._compat import AsyncGridOutChunkIterator
from mongoengine_async.batches import kill_soon, open_find

__all__ = ("PARALLEL_READS", "OpenedChunks", "read_whole")

PARALLEL_READS = 2
"""How many chunk cursors one whole-file read runs at once, at most."""

REPLY_BYTES = 16 * 1024 * 1024
"""The most a server reply to ``find``/``getMore`` carries: a range per reply."""


class _OpenedCursor(AsyncCursor[Any]):
    """PyMongo's cursor whose find (its first batch) is sent by
    :func:`~mongoengine_async.batches.open_find`."""

    async def next(self) -> Any:
        await open_find(self)
        return await super().next()


class OpenedChunks(AsyncGridOutChunkIterator):
    """PyMongo's chunk iterator, its cursors' finds sent by
    :func:`~mongoengine_async.batches.open_find`: a read cancelled while a
    find is on its way (the first, or the one PyMongo sends again when the
    server lost the cursor, ``CursorNotFound``) leaves no chunk cursor on the
    server. Nor does one cancelled midway (a ``getMore`` on its way) by a
    cancel scope, which also cancels PyMongo's ``killCursors``
    (:func:`~mongoengine_async.batches.kill_soon`)."""

    def _create_cursor(self) -> None:
        super()._create_cursor()
        cast(AsyncCursor[Any], self._cursor).__class__ = _OpenedCursor  # not yet used

    async def _next_with_retry(self) -> Any:
        try:
            return await super()._next_with_retry()
        except asyncio.CancelledError:
            kill_soon(self._cursor)
            raise


class _ChunkRange(OpenedChunks):
    """PyMongo's chunk iterator, its cursor limited to the chunks before
    ``end`` (None: every chunk to the end of the file)."""

    end: int | None = None

    def _create_cursor(self) -> None:
        super()._create_cursor()
        if self.end is not None:
            cast(AsyncCursor[Any], self._cursor).limit(self.end - self._next_chunk)


async def _read_range(grid_out: AsyncGridOut, first: int, end: int, last: bool) -> list:
    """The data of chunks ``first`` to ``end`` (excluded); for the ``last``
    range, an extra non-empty chunk after them raises as in PyMongo's read."""
    chunks = _ChunkRange(grid_out, grid_out._chunks, None, first)
    chunks.end = None if last else end
    try:
        pieces = [(await chunks.next())["data"] for _ in range(first, end)]
        if last:
            try:
                await chunks.next()
            except StopAsyncIteration:
                pass
        return pieces
    finally:
        await chunks.close()


async def read_whole(grid_out: AsyncGridOut) -> bytes:
    """Every byte of the file of ``grid_out`` (opened, in no session: a
    session must not run two commands at once)."""
    length, chunk_size = int(grid_out.length), int(grid_out.chunk_size)
    count = -(-length // chunk_size)
    if count == 0:
        return b""
    parts = min(PARALLEL_READS, -(-length // REPLY_BYTES))
    bounds = [count * part // parts for part in range(parts + 1)]
    ranges = await asyncio.gather(
        *(
            _read_range(grid_out, first, end, end == count)
            for first, end in itertools.pairwise(bounds)
        ),
        return_exceptions=True,  # every range ends, its cursor closed
    )
    data: list[bytes] = []
    for pieces in ranges:  # the first corrupt chunk's error, as a read in turn
        if isinstance(pieces, BaseException):
            raise pieces
        data.extend(pieces)
    return b"".join(data)
