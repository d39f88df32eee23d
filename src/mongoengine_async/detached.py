"""Writes that go on when their caller is cancelled.

A write cancelled while it is on its way may be applying on the server: the
client must not forget it. Two ways to let it finish, by what the caller
does meanwhile:

- :func:`detached`: the caller raises the cancellation at once; the write
  goes on in its task, which settles once the write did (a save, modify,
  update or delete of an instance: its turn ends then).
- :func:`to_completion`: the caller waits for the write to finish before it
  raises the cancellation (a GridFS upload aborted: its removal must come
  after its last insert).

And :func:`held`, what keeps such a task (or any other nobody awaits: a
cursor's or a client's closing) alive until it is done.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import inspect
import reprlib
import sys
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

# A task starts at once (runs to its first wait) on Python 3.12+: a loop
# iteration sooner, for the write of every save.
_EAGER: dict[str, Any] = {"eager_start": True} if sys.version_info >= (3, 12) else {}

# What a write whose caller was cancelled leaves to do, for finish_before_close.
CANCELLED_WRITE = "write whose caller was cancelled (and the steps after it)"

# What the task of a write that failed gives (its error was the caller's to
# handle, or nobody's once the caller was cancelled).
FAILED: Any = object()

# The error of each write task that gave FAILED once its caller was cancelled
# (nobody took it), for what settles the write after (see failure()).
_failures: weakref.WeakKeyDictionary[asyncio.Future[Any], Exception] = (
    weakref.WeakKeyDictionary()
)


def failure(
    task: asyncio.Future[Any], outcome: asyncio.Future[Any] | None = None
) -> Exception | None:
    """The error of a :func:`detached` write's ``task`` that failed once its
    caller was cancelled (what the server replied: a refused insert stored
    nothing), or just before the caller, cancelled, resumed: its ``outcome``
    holds that one, which the caller never saw; None otherwise."""
    if outcome is not None and outcome.done() and not outcome.cancelled():
        error = outcome.exception()
        if isinstance(error, Exception):
            return error
    return _failures.get(task)


def held(
    work: Awaitable[T], tasks: set[asyncio.Future[Any]], failure: str | None = None
) -> asyncio.Future[T]:
    """``work``'s task (``work`` itself if a task or future, else a new task
    running it), held in ``tasks`` until it is done: the loop keeps only weak
    references to its tasks. With ``failure``, its error, which no caller
    awaits, goes to the loop's exception handler ("The {failure} failed");
    without, it is left to the task (asyncio reports it if never retrieved)."""
    task = asyncio.ensure_future(work)
    tasks.add(task)
    _holders.setdefault(task, []).append(tasks)
    # (Not a partial: a task's repr shows a partial's arguments, this set of
    # tasks, each repr'ing theirs: over a minute on Python 3.10 for a few.)
    task.add_done_callback(lambda done: _unheld(tasks, done))
    if failure is not None:
        task.add_done_callback(functools.partial(_report, failure))
    return task


# Each task of held() not done yet, with the sets holding it: a task whose loop
# closed first never gets done, and is let go of then (see left_undone).
_holders: dict[asyncio.Future[Any], list[set[asyncio.Future[Any]]]] = {}


def _unheld(tasks: set[asyncio.Future[Any]], task: asyncio.Future[Any]) -> None:
    tasks.discard(task)
    _holders.pop(task, None)


# The tasks the end of their loop waits for (see finish_before_close), with
# what each does (named if its loop closes first: see left_undone).
_finishing: dict[asyncio.Future[Any], str] = {}
# The aliases each of those tasks may need (none noted: any alias), for
# disconnect_async() to wait only for the work that needs the alias it drops.
_needs: dict[asyncio.Future[Any], frozenset[str]] = {}


def finish_before_close(
    task: asyncio.Future[Any], what: str, aliases: Iterable[str] | None = None
) -> asyncio.Future[Any]:
    """Have the end of ``task``'s loop wait for it before closing its clients:
    what a write cancelled as the loop ends leaves to do starts in a task that
    ``asyncio.run()``, which awaits only the tasks it cancelled, would drop
    unfinished. ``what`` says what ``task`` does, as a noun phrase ("delete of
    a file whose caller was cancelled"): the report of a loop that ended
    before it did names it ("The event loop closed before the {what} ended:
    ...", see :func:`left_undone` and :func:`all_finished`). ``aliases``: the
    connections it may use (None: any), those whose disconnect waits for it.
    Returns ``task``."""
    _finishing[task] = what
    if aliases is not None:
        _needs[task] = frozenset(aliases)
    task.add_done_callback(_finished)
    return task


def unbegun(task: asyncio.Future[Any], work: Coroutine[Any, Any, Any]) -> bool:
    """Whether ``task``, whose coroutine awaits ``work`` first thing, was
    cancelled before ``work`` began: ``asyncio.run()`` cancels every task
    left before its end waits for those of :func:`finish_before_close`, and
    one made in the last loop iteration of its main coroutine had not started
    yet (on Python 3.12+ too: such tasks start in the next iteration), so
    its coroutine never ran. ``work``, never begun, can run in a new task."""
    return task.cancelled() and inspect.getcoroutinestate(work) == inspect.CORO_CREATED


# The tasks begin_surely() made once more, held until done.
_begun_again: set[asyncio.Future[Any]] = set()


def begin_surely(
    start: Callable[[], asyncio.Future[T]],
    work: Coroutine[Any, Any, Any],
    what: str,
    aliases: Iterable[str] | None,
    failure: str | None,
    again: bool = True,
) -> asyncio.Future[T]:
    """``start()``: a new task whose coroutine awaits ``work`` first thing,
    which the loop's end waits for (:func:`finish_before_close` with ``what``
    and ``aliases``). That task cancelled before ``work`` began (see
    :func:`unbegun`), ``begin_surely`` once more, the new task held until
    done, its error reported as the ``failure``'s (None: ``start`` sees to
    it): else ``work`` never ran (the files of deleted documents stayed,
    found by nothing). Not ``again``: the caller runs that work again itself
    (the two at once would race). Otherwise ``work`` is closed once that
    task is done (never begun, its loop ended: Python would warn). Returns
    the task."""
    task = start()
    finish_before_close(task, what, aliases)
    task.add_done_callback(
        lambda done: _begin_again(done, start, work, what, aliases, failure, again)
    )
    return task


def _begin_again(
    task: asyncio.Future[Any],
    start: Callable[[], asyncio.Future[Any]],
    work: Coroutine[Any, Any, Any],
    what: str,
    aliases: Iterable[str] | None,
    failure: str | None,
    again: bool,
) -> None:
    """:func:`begin_surely` once more if ``task``, its task of ``work``, was
    cancelled before ``work`` began and ``again``; else ``work`` is closed."""
    if again and unbegun(task, work):
        held(begin_surely(start, work, what, aliases, failure), _begun_again, failure)
    else:
        work.close()


async def awaiting(work: Awaitable[T]) -> T:
    """``await work``: a task's coroutine that awaits ``work`` first thing,
    for :func:`begin_surely` (a task cancelled before its own coroutine
    began closes it, which :func:`unbegun` cannot tell from its end)."""
    return await work


# Ids as the reports name them (see id_repr).
_IDS = reprlib.Repr()
_IDS.maxstring = _IDS.maxother = 80


def id_repr(value: Any) -> str:
    """``repr(value)`` for the ``what`` of :func:`finish_before_close`, naming
    a document or file by its id: shortened (an id of any length, a dict),
    never raising (the cancellation it is made in must go on)."""
    return _IDS.repr(value)


def _finished(task: asyncio.Future[Any]) -> None:
    _finishing.pop(task, None)
    _needs.pop(task, None)


async def all_finished(
    seconds: float,
    waiter: str = "The event loop's end",
    bound: str = "the most it waits for such work and to close its clients",
    aliases: frozenset[str] | None = None,
) -> None:
    """Wait until the tasks of :func:`finish_before_close` on the running
    loop are done (those they start too), ``seconds`` at most: those left
    then (a server that does not answer) are reported to the running loop's
    exception handler, once ("{waiter} stopped waiting for the {what} after
    {seconds} s ({bound}): ..."), and no longer waited for. With ``aliases``
    (their disconnect), those that may use one of them instead, on any
    running loop (an alias goes for all; a loop not running, run by hand
    between its runs, cannot end them meanwhile: nor once it stops, checked
    every ``_RECHECK_SECONDS``). Read from a copy: loops in other threads
    add and drop theirs meanwhile. Not the running task, nor
    those it is part of (see :func:`part_of_task`: a signal receiver's in
    the steps after a cancelled write, disconnecting): it would wait for
    itself; nor the work it is part of (see :func:`part_of`: an upload's data
    source disconnecting)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    watchers: dict[asyncio.Future[Any], asyncio.Future[Any]] = {}
    while pending := _pending(loop, aliases):
        left = deadline - loop.time()
        if left <= 0:
            _gave_up(pending, f"{waiter} stopped waiting", f"{seconds:g} s ({bound})")
            return
        waited = {_on_loop(task, loop, watchers) for task in pending}
        if any(task.get_loop() is not loop for task in pending):
            left = min(left, _RECHECK_SECONDS)  # (its loop may stop meanwhile)
        await asyncio.wait(waited, timeout=left)


# How often all_finished checks that the other loops it waits for still run:
# a loop run by hand may stop (or close) meanwhile, and nothing tells.
_RECHECK_SECONDS = 0.2


def _pending(
    loop: asyncio.AbstractEventLoop, aliases: frozenset[str] | None
) -> set[asyncio.Future[Any]]:
    """The tasks of :func:`finish_before_close` :func:`all_finished` waits for
    now: not the running one; those of ``loop`` (no ``aliases``), or those of
    any running loop that may use one of ``aliases``. A task done stays until
    its callbacks ran (:func:`_finished` drops it): one may start the next
    step (a delete's files), which another thread would not see yet."""
    mine = _own_tasks()
    return {
        task
        for task in _finishing.copy()
        if task not in mine
        and (
            task.get_loop() is loop
            if aliases is None
            else not aliases.isdisjoint(_needs.get(task, aliases))
            and task.get_loop().is_running()
        )
    }


def _own_tasks() -> set[asyncio.Future[Any]]:
    """The running task and those the running code is part of (a task of
    :func:`detached` or of :func:`part_of_task`'s caller it was started
    from: ``asyncio.wait_for``'s on Python 3.11, a TaskGroup's), which it
    would wait for as it waits for itself."""
    acting = _acting.get()
    refs = (*_part_of.get(), *(() if acting is None else acting[1:]))
    return {task for task in (asyncio.current_task(), *(r() for r in refs)) if task}


# The tasks whose code runs here (see part_of_task), and the work of
# finish_before_close it is part of (see part_of), weakly.
_part_of: ContextVar[tuple[Callable[[], asyncio.Future[Any] | None], ...]] = ContextVar(
    "mongoengine_async_part_of", default=()
)


def part_of_task() -> None:
    """Note that the running code, and the tasks it starts, are part of the
    running task: :func:`all_finished` awaited there does not wait for it
    (a signal receiver of the steps after a cancelled write, disconnecting
    through a task of its own). :func:`detached`'s tasks are so already."""
    task = asyncio.current_task()
    if task is not None:
        _part_of.set((*_part_of.get(), weakref.ref(task)))


@contextlib.contextmanager
def part_of(work: asyncio.Future[Any]) -> Iterator[None]:
    """Note that the code run inside, and the tasks it starts, are part of
    ``work``, a future of :func:`finish_before_close` that this code sets
    once done (an upload's): :func:`all_finished` awaited there (an
    upload's data source disconnecting its alias) does not wait for it, which
    it would do for ``_END_SECONDS``, as for itself."""
    token = _part_of.set((*_part_of.get(), weakref.ref(work)))
    try:
        yield
    finally:
        # (A coroutine collected unfinished is closed in another context.)
        with contextlib.suppress(ValueError):
            _part_of.reset(token)


def _on_loop(
    task: asyncio.Future[Any],
    loop: asyncio.AbstractEventLoop,
    watchers: dict[asyncio.Future[Any], asyncio.Future[Any]],
) -> asyncio.Future[Any]:
    """``task`` if of ``loop`` (the running one), else a future of ``loop``
    done once it is (kept in ``watchers``): a task of another loop cannot be
    awaited here, nor its callbacks added from this thread."""
    if task.get_loop() is loop:
        return task
    watcher = watchers.get(task)
    if watcher is None:
        watcher = watchers[task] = loop.create_future()

        def tell(_: asyncio.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # (this loop closed)
                loop.call_soon_threadsafe(_set_done, watcher)

        try:
            task.get_loop().call_soon_threadsafe(task.add_done_callback, tell)
        except RuntimeError:  # (its loop closed meanwhile: it never ends)
            _set_done(watcher)
    return watcher


def _set_done(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def _gave_up(tasks: set[asyncio.Future[Any]], stopped: str, after: str) -> None:
    """Report each of ``tasks``, no longer waited for (``stopped``, ``after``
    some time), once, to the running loop's exception handler (the waiter's:
    a task's own loop may run in another thread)."""
    loop = asyncio.get_running_loop()
    for task in tasks:
        what = _finishing.pop(task, None)
        _needs.pop(task, None)
        if what is not None:
            loop.call_exception_handler(
                {
                    "message": f"{stopped} for the {what} after {after}: the rest"
                    " of it may not be done",
                    "task": task,
                }
            )


def left_undone() -> None:
    """Report each task of :func:`finish_before_close` whose loop closed before
    it ended (``loop.close()`` alone, without ``loop.shutdown_asyncgens()``,
    which waits for them) to that loop's exception handler, once: its work
    will never be done (files left in GridFS), which would go unnoticed.
    Then let go of the tasks of :func:`held` whose loop closed."""
    for task, what in _finishing.copy().items():
        if task.get_loop().is_closed() and _finishing.pop(task, None) is not None:
            _needs.pop(task, None)
            _tell(
                task,
                f"The event loop closed before the {what} ended: the rest of it is"
                " not done (close a loop you run yourself after"
                " loop.run_until_complete(loop.shutdown_asyncgens()), as"
                " asyncio.run() does)",
            )
    _let_go_of_closed()


def _let_go_of_closed() -> None:
    """Drop each task of :func:`held` whose loop closed from its sets: it can
    never end (and so drop itself), and held its coroutine's frame (documents,
    data) until the process exited, each loop closed so adding more."""
    for task in [task for task in _holders.copy() if task.get_loop().is_closed()]:
        for tasks in _holders.pop(task, ()):
            tasks.discard(task)


def _tell(task: asyncio.Future[Any], message: str) -> None:
    """Report ``message`` about ``task`` to its loop's exception handler."""
    task.get_loop().call_exception_handler({"message": message, "task": task})


# (Also for a program whose last loop was closed so: nothing runs after it.)
atexit.register(left_undone)


def _report(failure: str, task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        task.get_loop().call_exception_handler(
            {
                "message": f"The {failure} failed",
                "exception": task.exception(),
                "task": task,
            }
        )


_TaskRef = Callable[[], "asyncio.Task | None"]

# In a task of detached(): (the task it works for, itself), weakly. A task
# started from it copies the pair, and is told apart by the second item.
# Weakly: whatever captures the context there (the selector callback of a
# connection the write opened, for as long as the connection is pooled)
# would keep both tasks, with the write's result (a cursor left unclosed).
_acting: ContextVar[tuple[_TaskRef, _TaskRef] | None] = ContextVar(
    "mongoengine_async_acting", default=None
)


def _no_task() -> None:
    """The weak reference to no task (a write working for none)."""
    return None


def acting_task() -> asyncio.Task | None:
    """The task the running code works for: the current one, or for the
    task of a write that :func:`detached` runs, the one that started it (a
    task that code starts works for itself)."""
    task = asyncio.current_task()
    acting = _acting.get()
    # (No task: a loop callback holding such a task's context, whose own
    # task, collected, reads as None too: it works for no task.)
    if task is not None and acting is not None and acting[1]() is task:
        return acting[0]()
    return task


def detached(
    write: Coroutine[Any, Any, T], caller: asyncio.Task | None = None
) -> tuple[asyncio.Future[T], asyncio.Task]:
    """Run ``write`` in a task of its own: ``(outcome, task)``. The caller
    awaits ``outcome``; its cancellation (the caller's) leaves the task
    running, which settles with the write's result, or :data:`FAILED`. This
    is ``asyncio.shield``, minus two loop iterations (its callbacks). The
    task works for ``caller`` (by default :func:`acting_task`'s answer).

    Use it when the caller must not wait for the write once cancelled, but
    something else must know when it ended (the instance's next write: see
    ``document._settle_in_turn``)."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = asyncio.Future(loop=loop)
    acting = acting_task() if caller is None else caller
    works_for: _TaskRef = _no_task if acting is None else weakref.ref(acting)
    # The task itself, known here before it starts (asyncio.current_task() is
    # three Python calls on 3.11), unless it starts in Task() (3.12+). Let go
    # of as it starts: the task would hold itself.
    made: asyncio.Task | None = None

    async def run() -> Any:
        nonlocal made
        own, made = made or asyncio.current_task(), None
        _acting.set((works_for, weakref.ref(own)))
        try:
            result = await write
        except asyncio.CancelledError:  # the task itself (the loop closing)
            outcome.cancel()
            raise
        except Exception as error:  # the caller's to handle (or not: cancelled)
            if not outcome.done():
                outcome.set_exception(error)
            elif own is not None:  # (the caller cancelled: for its settling)
                # Without its traceback, whose frames (this one) hold the task:
                # the entry would keep its own key alive.
                _failures[own] = error.with_traceback(None)
            return FAILED
        if not outcome.done():
            outcome.set_result(result)
        return result

    task = asyncio.Task(run(), loop=loop, **_EAGER)
    if not _EAGER:
        made = task
    return outcome, task


async def to_completion(coroutine: Any) -> Any:
    """Await ``coroutine``; if the caller is cancelled meanwhile, let it finish
    first, then re-raise the cancellation (its own outcome is dropped).

    Use it when what the caller does once cancelled must come after the
    write (an aborted upload removes its chunks: an insert in flight must not
    land after that removal); else :func:`detached`, which does not wait."""
    task = asyncio.ensure_future(coroutine)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what propagates
        raise


async def until_done(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` is done, even when the caller is cancelled
    meanwhile, again and again as a cancel scope does (then re-raise that
    cancellation once it is): for a caller whose next step must come after
    it (an operation of its own on the session ``task`` uses)."""
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as error:
            cancelled = error
    if cancelled is not None:
        raise cancelled
