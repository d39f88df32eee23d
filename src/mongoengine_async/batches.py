"""Reading a whole result at once: the batch size that asks for it in one
reply, and building or walking the batch with the cyclic GC paused; and
killing the server cursor of a read cancelled midway, or while the command
opening it was in flight, or left with results nobody will read; and the
iterator ``async for`` steps through those reads (:class:`Iteration`).

Used by the queryset, the delete rules, select_related, GridFS and change
streams alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator
from operator import attrgetter
from types import FunctionType
from typing import TYPE_CHECKING, Any, TypeVar

from mongoengine_async._compat import apply_client_timeout
from mongoengine_async.detached import detached, held
from mongoengine_async.errors import AsyncUsageError

__all__ = (
    "WHOLE_RESULT",
    "Iteration",
    "by_id",
    "close_soon",
    "gc_paused",
    "kill_soon",
    "leave",
    "materialise_all",
    "open_find",
    "opened",
    "read_list",
    "replies",
    "started",
    "stopped",
)

T = TypeVar("T")

# The batch size that asks for a whole result: the server's first reply holds
# 101 documents unless asked for more, and replies are capped at 16 MB anyway,
# so a caller that wants every result saves a round trip per query.
WHOLE_RESULT = 2**31 - 1

_ENDED = {
    "loop": (
        "{} was begun on an event loop that has shut down since (asyncio.run() "
        "returned), which closed it: the results it had not given yet were not "
        "read. {} on the running loop"
    ),
    "shutdown": (
        "{} was closed by its event loop's end (shutdown_asyncgens() closes every "
        "async generator of the loop at once): the rest of it was not read. {}"
    ),
    "cancelled": (
        "{} was cancelled while it read, which ended it: the results it had not "
        "given yet were not read. {}"
    ),
}


class Iteration(AsyncGenerator[T, None]):
    """What ``async for`` steps through over a queryset, an aggregation, a
    file or a change stream: their async generator, with no call of ours per
    result (``__anext__`` is the generator's own, read in C), that raises
    ``AsyncUsageError`` instead of ending silently once the generator was
    closed by its loop's shutdown or cancelled mid-read (:func:`stopped`).
    An async generator still for its users (``asend``, ``athrow``,
    ``aclose``; ``isinstance(it, AsyncGenerator)``), as it was before."""

    __slots__ = (
        "__weakref__",
        "_again",
        "_anext",
        "_closing",
        "_generator",
        "_what",
        "_why",
    )

    if TYPE_CHECKING:

        def __anext__(self) -> Coroutine[Any, Any, T]: ...

    else:
        __anext__ = property(attrgetter("_anext"))

    def __init__(
        self,
        start: Callable[[weakref.ref[Iteration[T]]], AsyncGenerator[T, None]],
        what: str,
        again: str = "Iterate again (a new async for)",
    ) -> None:
        self._what = what
        self._again = again
        self._closing = False
        self._why = ""
        self._generator = start(weakref.ref(self))
        self._anext = self._generator.__anext__

    def __aiter__(self) -> Iteration[T]:
        return self

    def asend(self, value: None) -> Coroutine[Any, Any, T]:
        """A step, as an async generator's ``asend()`` (the read ignores
        ``value``); raising as ``__anext__`` does once stopped."""
        if self._why:
            return self._refuse()
        return self._generator.asend(value)

    async def athrow(self, *error: Any) -> T:
        """Raise ``error`` at the read's ``yield``, as an async generator's
        ``athrow()``: that ends the read, and its next steps end (no error).
        Refused while a step reads (``RuntimeError``), the read goes on as it
        was, still raising if its loop ends (:func:`stopped`)."""
        self._closing = self._closing or not self._reading()
        return await self._generator.athrow(*error)

    async def aclose(self) -> None:
        """Close the read (as an async generator's ``aclose()``): the next
        steps end the iteration. Refused while a step reads, as ``athrow``."""
        self._closing = self._closing or not self._reading()
        await self._generator.aclose()

    def _reading(self) -> bool:
        """Whether a step runs the generator (which refuses to be closed then)."""
        return bool(getattr(self._generator, "ag_running", False))  # (native's)

    def __reduce__(self) -> Any:
        """Refused, as an async generator's: a copy would step the same read
        (``copy.copy`` too, which the slots would otherwise allow)."""
        raise TypeError("cannot pickle 'async_generator' object")

    async def _refuse(self) -> T:
        raise AsyncUsageError(_ENDED[self._why].format(self._what, self._again))


def stopped(iteration: weakref.ref[Iteration[Any]], why: str) -> None:
    """Called by the generator of ``iteration`` as it stops, left at a yield
    (``why="loop"``) or cancelled mid-read: unless the iteration is gone
    (``break``, its finaliser) or closed it itself, its next steps raise
    instead of reporting the end of results that were never read."""
    stepped = iteration()
    if stepped is not None and not stepped._closing:
        stepped._why = why
        stepped._anext = stepped._refuse


async def started(first_step: Awaitable[T], iteration: weakref.ref[Any]) -> T:
    """``await first_step``, what the generator of ``iteration`` awaits before
    its reads, the iteration stopped (:func:`stopped`) if cancelled meanwhile."""
    try:
        return await first_step
    except asyncio.CancelledError:
        stopped(iteration, "cancelled")
        raise


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
    a batch of more than a few; through ``materialise.batch`` where it has
    one (a loader of ``from_bson.py``: no call per raw it takes whole).

    Only a function's own ``batch`` counts: a mock standing for a class's
    ``_from_son`` (a test's spy) makes one up when asked, and is called."""
    batch = (
        vars(materialise).get("batch") if type(materialise) is FunctionType else None
    )
    if len(raws) < PAUSE_FROM:
        return [materialise(raw) for raw in raws] if batch is None else batch(raws)
    with gc_paused():
        return [materialise(raw) for raw in raws] if batch is None else batch(raws)


def by_id(raws: list, build: Callable[[list], list]) -> dict:
    """``in_bulk``'s dict from each raw result's ``_id`` to what ``build``
    makes of it (a list of results for a list of raws; a loader takes the
    raws as its own, so the ids are read first). A raw without an ``_id`` (a
    projection excluding it) fails as MongoEngine's loop, which loads a result
    before reading its id: the error of loading it or one before, else KeyError.
    """
    try:
        ids = [raw["_id"] for raw in raws]
    except KeyError:
        ids = None  # (the errors raised next are not chained to this one)
    if ids is not None:
        return dict(zip(ids, build(raws), strict=True))
    build(raws[: next(i for i, raw in enumerate(raws) if "_id" not in raw) + 1])
    raise KeyError("_id")


def replies(cursor: Any) -> Iterator[list[dict]]:
    """The results of a PyMongo ``cursor``, one list per reply of the server:
    the first of each through ``next(cursor)`` (which sends the find or the
    getMore, as iterating does), the rest taken from its buffer at once."""
    for first in cursor:
        buffered = cursor._data
        run = [first, *buffered]
        buffered.clear()
        yield run


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


async def leave(cursor: Any, at_yield: bool) -> None:
    """Close ``cursor`` as the async generator reading it ends: awaited (its
    ``killCursors``), as ``async with cursor`` does, unless the generator was
    left ``at_yield``: a ``break``, ``aclose()``, its finaliser, or the end
    of ``asyncio.run()`` with it unfinished. The cursor then goes to the
    client's background cleanup (:func:`kill_soon`), nothing awaited: as the
    loop ends, the finaliser's ``aclose()`` is cancelled before it starts,
    which throws that cancellation in at the yield, then ``GeneratorExit``
    into whatever the cleanup awaits (PyMongo's reply to the
    ``killCursors``), leaving PyMongo's tasks pending as the loop closes
    ("Task was destroyed but it is pending!")."""
    if at_yield:
        kill_soon(cursor)
    else:
        await cursor.close()


async def opened(
    opening: Coroutine[Any, Any, T],
    cursor_of: Callable[[T], Any],
    session: Any = None,
) -> T:
    """``await opening``, the command that opens a server cursor (a find, an
    aggregate, a change stream's), in a task of its own that the caller's
    cancellation does not cancel (:func:`~mongoengine_async.detached.detached`).

    Cancelled while that command is on its way, PyMongo never learns the id
    of the cursor the server opens for it, and the server keeps the cursor
    for 10 minutes. Here the caller raises at once, the command goes on, and
    the cursor it opened (``cursor_of(result)``) is killed once its reply
    came (:func:`kill_soon`). In ``session``'s transaction, the commit or
    abort waits for it, as for a cancelled write.
    """
    from mongoengine_async.context import write_on_its_way

    result: list[T] = []

    async def open_cursor() -> T:
        result.append(await opening)
        return result[0]

    outcome, task = detached(open_cursor())
    try:
        return await outcome
    except asyncio.CancelledError:

        def kill_opened(_: asyncio.Task) -> None:
            if result:  # the command succeeded: a cursor to kill, if not used up
                kill_soon(cursor_of(result[0]))

        task.add_done_callback(kill_opened)
        write_on_its_way(session, task)
        raise


async def open_find(cursor: Any) -> None:
    """Send ``cursor``'s find (its first batch), in :func:`opened`'s task."""
    if cursor._id is None and not cursor._killed and not cursor._empty:
        await opened(cursor._refresh(), lambda _: cursor, cursor.session)


@apply_client_timeout  # the client's timeoutMS, as PyMongo's to_list() applies it
async def read_list(
    cursor: Any, length: int | None = None, one_match: bool = False
) -> list:
    """``await cursor.to_list(length)`` of a find's cursor, with its server
    cursor killed when the read is cancelled, during the find
    (:func:`opened`) or midway (:func:`kill_soon`: a result of more than one
    reply, 16 MB each, has getMores to cancel), or once ``length`` results
    were read and more are left (:func:`close_soon`).

    A query that ``one_match`` at most (by ``_id``) has its whole result in
    the first reply, and the server keeps no cursor for it: its find is
    sent inline (the task of :func:`opened` would cost the hottest read)."""
    try:
        if not one_match:
            await open_find(cursor)
        results = await cursor.to_list(length)
    except asyncio.CancelledError:
        kill_soon(cursor)
        raise
    if cursor._id and not cursor._killed:  # results left unread
        close_soon(cursor)
    return results


# The tasks of close_soon() (the loop keeps weak references only).
_closing: set[asyncio.Future[Any]] = set()


def close_soon(cursor: Any) -> None:
    """Close ``cursor`` (``killCursors``, and its implicit session back to
    the pool) in a task of its own, for a read that leaves results unread
    (``async_to_list(n)``): at once, not at PyMongo's cleanup of a cursor
    garbage-collected unclosed, and without delaying the read. A cursor of
    an explicit session (a transaction's) goes to :func:`kill_soon`, whose
    ``killCursors`` does not use the session: a task of its own would use it
    alongside the caller's next operation."""
    if cursor.session is not None:
        kill_soon(cursor)
        return
    held(_close(cursor), _closing)


async def _close(cursor: Any) -> None:
    try:
        await cursor.close()
    except asyncio.CancelledError:  # the loop closing
        kill_soon(cursor)
        raise
    except Exception:  # (a server gone meanwhile): the client's cleanup retries
        kill_soon(cursor)
