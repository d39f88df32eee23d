"""Reading a whole result at once: the batch size that asks for it in one
reply, and building or walking the batch with the cyclic GC paused; and
killing the server cursor of a read cancelled midway.

Used by the queryset, the delete rules and select_related alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ("WHOLE_RESULT", "gc_paused", "kill_soon", "materialise_all", "read_all")

# The batch size that asks for a whole result: the server's first reply holds
# 101 documents unless asked for more, and replies are capped at 16 MB anyway,
# so a caller that wants every result saves a round trip per query.
WHOLE_RESULT = 2**31 - 1


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a batch of documents is built or walked.

    Building thousands of documents in one go allocates many containers that
    all survive, so the collector would run again and again over a growing
    heap for nothing (it freed nothing: measured at 40% of a 10,000-document
    load). Only for code that never awaits: nothing else runs meanwhile.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


# Below this many results the collector has little to walk, and pausing it
# would cost more than it saves (a get() or first() builds one document).
PAUSE_FROM = 64


def materialise_all(materialise: Callable[[Any], Any], raws: list) -> list:
    """``[materialise(raw) for raw in raws]``, with the cyclic GC paused for
    a batch of more than a few."""
    if len(raws) < PAUSE_FROM:
        return [materialise(raw) for raw in raws]
    with gc_paused():
        return [materialise(raw) for raw in raws]


def kill_soon(cursor: Any) -> None:
    """Have the client's background task kill ``cursor`` on the server, for a
    read that was cancelled (call it on ``asyncio.CancelledError``).

    PyMongo closes the cursor of a cancelled read, awaiting its
    ``killCursors``; a cancellation delivered again at every await (an anyio
    cancel scope: Starlette's streaming response on a client disconnect,
    ``anyio.move_on_after``) cancels that too, after PyMongo marked the cursor
    closed, and the server keeps the cursor for 10 minutes. Here the cursor
    goes to PyMongo's cleanup of a cursor garbage-collected unclosed; one
    PyMongo did close gets a second ``killCursors``, which the server ignores.
    """
    if cursor is None or not cursor._id:
        return  # used up on the server, or never opened
    cursor._killed = False
    cursor._die_no_lock()


async def read_all(cursor: Any) -> list:
    """``await cursor.to_list(None)``, with the server cursor killed
    (:func:`kill_soon`) when the read is cancelled midway: a result of more
    than one reply (16 MB each) has getMores to cancel."""
    try:
        return await cursor.to_list(None)
    except asyncio.CancelledError:
        kill_soon(cursor)
        raise
