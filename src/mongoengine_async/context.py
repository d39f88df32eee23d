"""Task-local state: the bound session, database/collection switches, no-dereference.

Everything lives in :mod:`contextvars`, so concurrent tasks never see each
other's switches or transactions, while code inside a block still spells the
document class by its own name.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, TypeVar

import mongoengine
import pymongo
from mongoengine.connection import DEFAULT_CONNECTION_NAME
from pymongo import AsyncMongoClient, ReadPreference
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    InvalidOperation,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from mongoengine_async._compat import (
    caller_time_left,
    outside_caller_timeout,
    running_loop_or_none,
    without_pymongo_timeouts,
)
from mongoengine_async.connection import (
    _END_SECONDS,
    _SPENT_SECONDS,
    aliases_served_by,
    connection_of,
    database_of,
    ends_transaction,
    get_async_connection,
    is_sync_connection,
    running_loop,
    serves,
)
from mongoengine_async.detached import (
    acting_task,
    awaiting,
    begin_surely,
    finish_before_close,
    held,
    part_of_task,
    until_done,
)
from mongoengine_async.errors import ForeignSessionError, NestedTransactionError
from mongoengine_async.guards import require_async, sync_alias_error

__all__ = (
    "async_no_dereference",
    "async_run_in_transaction",
    "async_run_transaction",
    "async_switch_collection",
    "async_switch_db",
    "current_session",
    "is_transient",
)

T = TypeVar("T", bound=type)
R = TypeVar("R")

_TRANSIENT = "TransientTransactionError"
_UNKNOWN = "UnknownTransactionCommitResult"

# The sessions bound by async_run_in_transaction in this task, one per client.
_sessions: ContextVar[tuple[AsyncClientSession, ...]] = ContextVar(
    "mongoengine_async_sessions", default=()
)
# The aliases whose transaction async_run_in_transaction/async_run_transaction
# bound in this task, with their connection then (see connection_of).
_transaction_aliases: ContextVar[tuple[tuple[str, object], ...]] = ContextVar(
    "mongoengine_async_transaction_aliases", default=()
)
# The journals of the transactions bound in this task: (session, undos) pairs.
# An undo gives an instance back the bookkeeping a write in the transaction
# changed (a document's ``_created``, changes and id, a file's ``grid_id``).
Journal = list[Callable[[], None]]
_journals: ContextVar[tuple[tuple[AsyncClientSession, Journal], ...]] = ContextVar(
    "mongoengine_async_journals", default=()
)
# The attempts of the transactions bound in this task (see _Attempt).
_attempts: ContextVar[tuple[_Attempt, ...]] = ContextVar(
    "mongoengine_async_attempts", default=()
)
# The switches in effect, by class; a switch binds a new mapping (never changed).
_NO_SWITCH: Mapping[type[Any], str] = MappingProxyType({})
_db_aliases: ContextVar[Mapping[type[Any], str]] = ContextVar(
    "mongoengine_async_db_aliases", default=_NO_SWITCH
)
_collections: ContextVar[Mapping[type[Any], str]] = ContextVar(
    "mongoengine_async_collections", default=_NO_SWITCH
)
_no_dereference: ContextVar[frozenset[type[Any]]] = ContextVar(
    "mongoengine_async_no_dereference", default=frozenset()
)
# True while any of the above is bound in this task: loading a reference, the
# common case, then asks this one variable instead of each of them.
_bound: ContextVar[bool] = ContextVar("mongoengine_async_bound", default=False)

# ``anything_bound()``: whether a session, switch or no-dereference is bound
# in this task (the variable's own ``get``, so asking costs one call).
anything_bound = _bound.get


def read_context() -> tuple[Any, ...] | None:
    """What decides what this task's reads see and where they go (its bound
    sessions and switches): tasks with equal ones read alike. None when
    nothing is bound (most tasks), so comparing costs one test."""
    if not _bound.get():
        return None
    return (_own_sessions(), _attempts.get(), _db_aliases.get(), _collections.get())


def current_session(client: Any = None) -> AsyncClientSession | None:
    """The session bound by ``async_run_in_transaction`` for ``client``, if any.

    Without ``client``: the innermost session bound in this task, if any.
    In a task that outlived the block (or the run of ``fn``) that bound it,
    raises PyMongo's ``InvalidOperation``, as its ended session would: the
    session may be committing, or in the transaction of ``fn``'s next run.
    """
    sessions = _own_sessions()
    if client is None:
        return sessions[-1] if sessions else None
    session = _bound_for(client, sessions)
    if session is not None and _over(session):
        if any(session is left for left in _left_behind.get()):
            return None  # (started once its attempt was over: see receiving)
        raise _ended_attempt_error()
    return session


def _bound_for(
    client: Any, sessions: tuple[AsyncClientSession, ...]
) -> AsyncClientSession | None:
    """The innermost of ``sessions`` (a delete's, see run_on) on ``client``."""
    for session in reversed(sessions):
        if session.client is client:
            return session
    if sessions:
        _refuse_reconnected(client)
    return None


class _Attempt:
    """One run of the code of a transaction of ``session``: the block of
    ``async_run_in_transaction``, or one call of ``async_run_transaction``'s
    ``fn``. The tasks started in it inherit it (a copy of the context); once
    that code ended it is ``over``, while the session lives on: committing or
    aborting, and running ``fn`` again in a new transaction, which a task of
    this attempt must not join (see :func:`current_session`)."""

    __slots__ = ("over", "session")

    def __init__(self, session: AsyncClientSession) -> None:
        self.session = session
        self.over = False


@contextlib.contextmanager
def _attempt(session: AsyncClientSession) -> Iterator[None]:
    """Run the code of one attempt of ``session``'s transaction; over after."""
    attempt = _Attempt(session)
    token = _attempts.set((*_attempts.get(), attempt))
    try:
        yield
    finally:
        attempt.over = True
        _reset(_attempts, token)


def _reset(var: ContextVar[Any], token: Token[Any]) -> None:
    """``var.reset(token)``. A block closed (``GeneratorExit``) in another
    context than its own (its coroutine collected, see
    :func:`_closed_as_collected`, or an async generator finalised by its
    loop) leaves the token: nothing of its task's is set there (a ValueError,
    printed as "Exception ignored"). Closed in its own context (``aclose()``,
    ``contextlib.aclosing``), the value is reset, not left to what follows."""
    closed = _closed_as_collected()  # (before the ValueError replaces it)
    try:
        var.reset(token)
    except ValueError:
        if not closed:
            raise


def _closed_as_collected() -> bool:
    """Whether the running cleanup (an ``except`` or ``finally`` block) is that
    of a coroutine closed (``GeneratorExit``): a task of a closed loop, as it
    is collected (see ``detached.left_undone``). Its loop cannot run anything
    any more: what the cleanup would send or await, it cannot ("There is no
    current event loop", "coroutine ignored GeneratorExit", printed as
    "Exception ignored")."""
    return isinstance(sys.exc_info()[1], GeneratorExit)


def _over(session: AsyncClientSession) -> bool:
    """Whether the attempt of ``session``'s transaction this task inherited
    is over (a task that outlived it: the code that started it ended), but
    for the code of a write on its way in it (see :func:`_settling`)."""
    for attempt in reversed(_attempts.get()):
        if attempt.session is session:
            return attempt.over and not _settling(session)
    return False


def _settling(session: AsyncClientSession) -> bool:
    """Whether the running code is that of a write whose caller was
    cancelled, going on in ``session``'s transaction (see
    :func:`write_on_its_way`: a delete with rules, its signal receivers), in
    the write's task or one it detached in turn: the transaction waits for
    it, so the attempt that started it is not over for it."""
    writes = _unsettled.get(session)
    if not writes:
        return False
    acting = acting_task()  # (the caller, in a detached write's task)
    return acting is not asyncio.current_task() and any(
        (caller := _working_for.get(write)) is not None and caller() is acting
        for write in writes
    )


# The sessions whose attempt was over when a signal receiver was called in
# the rest of a cancelled write going on in their transaction (see receiving).
_left_behind: ContextVar[tuple[AsyncClientSession, ...]] = ContextVar(
    "mongoengine_async_left_behind", default=()
)


def receiving() -> contextlib.AbstractContextManager[None]:
    """Around the call of a signal's receivers. In the rest of a cancelled
    write going on in a transaction once its attempt is over (see
    :func:`_settling`), a task a receiver starts runs outside it: the commit
    waits for the write, not for that task, which would use the session
    beside it. (The receiver itself, part of the write, joins it.)"""
    attempts = _attempts.get()
    if not attempts:  # (most sends: no transaction bound)
        return contextlib.nullcontext()
    over = tuple(
        each.session for each in attempts if each.over and _settling(each.session)
    )
    if not over:
        return contextlib.nullcontext()
    return _leaving_behind(over)


@contextlib.contextmanager
def _leaving_behind(sessions: tuple[AsyncClientSession, ...]) -> Iterator[None]:
    """Mark ``sessions`` as left behind by the tasks started meanwhile."""
    token = _left_behind.set((*_left_behind.get(), *sessions))
    try:
        yield
    finally:
        _reset(_left_behind, token)


def _ended_attempt_error() -> InvalidOperation:
    """What an operation of a task that outlived its transaction's attempt
    raises: the session it inherited is over for it, as once the block
    ended; its transaction then is another attempt's, or none."""
    return InvalidOperation(
        "Cannot use ended session: this task was started in a transaction "
        "(async_run_in_transaction, or an attempt of async_run_transaction) "
        "whose code has ended"
    )


# The sessions bound for one task only (a delete's own transaction, see
# run_on's ``alone``), with (a weak reference to) that task: tasks it starts
# (a signal receiver's) do not inherit them, as they may outlive it.
_owners: weakref.WeakKeyDictionary[AsyncClientSession, Callable[[], Any]] = (
    weakref.WeakKeyDictionary()
)


def _own_sessions() -> tuple[AsyncClientSession, ...]:
    """The sessions bound in this context for the running code: all but
    those bound for another task only (see :func:`acting_task`)."""
    sessions = _sessions.get()
    if not sessions or not _owners:  # (none bound, or no delete's own anywhere)
        return sessions
    acting = acting_task()
    return tuple(
        session
        for session in sessions
        if (owner := _owners.get(session)) is None or owner() is acting
    )


def _refuse_reconnected(client: Any) -> None:
    """Refuse an operation on ``client`` when the alias of a transaction bound
    in this task was connected again since and ``client`` is its new one: the
    operation would run outside the transaction, committed whatever it does."""
    for alias, connection in _transaction_aliases.get():
        if connection_of(alias) is not connection and serves(alias, client):
            raise ForeignSessionError(
                f"alias '{alias}' was disconnected and connected again inside its "
                "transaction (async_run_in_transaction): the transaction's session "
                "belongs to the client it had then, and this operation would run "
                "outside it"
            )


@contextlib.contextmanager
def _transaction_on(alias: str) -> Iterator[None]:
    """Mark ``alias`` as having its transaction bound in this task."""
    token = _transaction_aliases.set(
        (*_transaction_aliases.get(), (alias, connection_of(alias)))
    )
    try:
        yield
    finally:
        _reset(_transaction_aliases, token)


def journal(session: AsyncClientSession | None) -> Journal | None:
    """The journal of the transaction this package bound with ``session``, if
    any: a write in it appends how to undo its change of an instance's
    bookkeeping (should the attempt abort). None outside such transactions."""
    if session is None:
        return None
    for bound, undos in reversed(_journals.get()):
        if bound is session:
            return undos
    return None


def bound_journal(client: Any) -> Journal | None:
    """The journal of the transaction this package bound for ``client`` in
    this task (see :func:`journal`); None for one over for this task (a task
    that outlived its block or attempt), as for none."""
    session = _bound_for(client, _own_sessions())
    return None if session is None or _over(session) else journal(session)


def outside_journal() -> Journal | None:
    """The journal of the innermost transaction this package bound in this
    task, for a write on a client that has none bound (a GridFS file on
    another client than the transaction's), which cannot join it: its undo
    and :func:`on_commit` steps stand in for the transaction. None outside
    such transactions, for those bound for another task only (a task that a
    delete's signal receiver starts: see :func:`_own_sessions`), and for
    those over for this task (a task that outlived the block or attempt that
    started it: nothing would run the steps noted in its journal), passed
    over for the one around them, which the task is still in."""
    journals = _journals.get()
    if not journals:
        return None
    own = _own_sessions()
    for session, undos in reversed(journals):
        if (
            session.in_transaction
            and any(session is bound for bound in own)
            and not _over(session)
        ):
            return undos
    return None


class _OnCommit:
    """A journal entry that changes nothing when the transaction aborts;
    ``step`` runs once it committed (:func:`_committed`), using ``aliases``
    (None: any)."""

    def __init__(
        self, step: Callable[[], Awaitable[Any]], aliases: frozenset[str] | None
    ) -> None:
        self.step = step
        self.aliases = aliases

    def __call__(self) -> None:
        pass  # aborted: the step never runs


def on_commit(
    undos: Journal,
    step: Callable[[], Awaitable[Any]],
    aliases: Iterable[str] | None = None,
) -> None:
    """Run ``step`` once the transaction of journal ``undos`` committed (in
    turn with the other steps), and not at all if it aborts: a write that
    cannot join it (the delete of a file on another client), deferred.
    ``aliases``: those it may use (None: any), whose disconnect waits for it
    once its caller left (see ``finish_before_close``)."""
    undos.append(_OnCommit(step, None if aliases is None else frozenset(aliases)))


class _OnEnd(_OnCommit):
    """An :func:`on_commit` entry whose ``step`` runs whether the transaction
    commits (in turn with those steps) or aborts (in a task of its own,
    outside the caller's ``pymongo.timeout()``, as after a commit: a block
    aborted once it was spent would leave the file orphaned)."""

    def __call__(self) -> None:
        with outside_caller_timeout():
            follow_up(_run_steps([self]), _AFTER_ABORT, True, self.aliases)


def on_end(
    undos: Journal, step: Callable[[], Awaitable[Any]], aliases: Iterable[str]
) -> None:
    """Run ``step`` once the transaction of journal ``undos`` ended, committed
    or aborted: a write outside it that its locks would hold up until then
    (the delete of a file of a document deleted for good, which it wrote).
    ``aliases``: those it uses (see :func:`on_commit`); after an abort, its
    error goes to the loop's exception handler."""
    undos.append(_OnEnd(step, frozenset(aliases)))


class _OnAbort:
    """A journal entry that undoes, when the transaction surely aborted, a
    write outside it (:func:`on_abort`); nothing when its commit's outcome
    is unknown (:func:`_undo`). The work it starts uses ``aliases``."""

    def __init__(self, action: Callable[[], Any], aliases: frozenset[str]) -> None:
        self.action = action
        self.aliases = aliases

    def __call__(self) -> None:
        self.action()


def on_abort(
    undos: Journal, action: Callable[[], Any], aliases: Iterable[str] = ()
) -> None:
    """Call ``action`` if the transaction of journal ``undos`` aborts (this
    attempt), and not when its commit's outcome is unknown (PyMongo's
    ``UnknownTransactionCommitResult`` once its retries ran out: it may have
    committed): the undo of a write outside it that the transaction's
    documents may refer to (the delete of a file put on another client, and
    its proxy's giving back what it held before the put). ``aliases``: those
    the work it starts may use, whose disconnect waits for a commit left
    going on (its failure starts it: see :func:`_committing_aliases`)."""
    undos.append(_OnAbort(action, frozenset(aliases)))


def _commit_steps(undos: Journal) -> list[_OnCommit]:
    """Take the :func:`on_commit` steps out of ``undos`` (each runs once)."""
    steps = [entry for entry in undos if isinstance(entry, _OnCommit)]
    undos[:] = [entry for entry in undos if not isinstance(entry, _OnCommit)]
    return steps


def _aliases_of(steps: list[_OnCommit]) -> frozenset[str] | None:
    """The aliases :func:`on_commit` ``steps`` may use (None: any)."""
    if any(step.aliases is None for step in steps):
        return None
    return frozenset().union(*(step.aliases or () for step in steps))


async def _run_steps(steps: list[_OnCommit]) -> None:
    """Run ``steps`` in turn, each even when one before failed or was
    cancelled (their task cancelled by the loop's end, which waits for it:
    a file's delete goes on in its own task, the files after it were left,
    found by nothing); then raise that cancellation, else the first error.
    In a task of their own, which their receivers disconnecting through
    another task do not wait for (see part_of_task)."""
    part_of_task()
    errors: list[BaseException] = []
    for entry in steps:
        try:
            await entry.step()
        except (Exception, asyncio.CancelledError) as error:
            errors.append(error)
    if errors:
        cancelled = [e for e in errors if isinstance(e, asyncio.CancelledError)]
        raise (cancelled or errors)[0]


_AFTER_COMMIT = "steps after the commit of a transaction"
_AFTER_ABORT = "steps after the abort of a transaction"
# A commit its caller left on its way (what follows it waits for its outcome).
_COMMITTING = (
    "commit of a transaction whose caller was cancelled (and the steps after it)"
)
# An abort (and its fence) its caller, cancelled, left on its way.
_ABORTING = "abort of a transaction whose caller was cancelled"
# The tasks running those steps once their caller left (held until done).
_after_commit_steps: set[asyncio.Future[Any]] = set()


async def _committed(undos: Journal) -> None:
    """The transaction of ``undos`` committed: run its :func:`on_commit`
    steps (a failure raises), outside the caller's ``pymongo.timeout()``:
    cut short by it, they would raise as if the commit failed and leave a
    deleted document's file orphaned. Cancelled meanwhile, or that time-out
    spent first, the call ends (the commit is its outcome) and they go on in
    their task. The disconnect of an alias they may use (another task's)
    waits for them meanwhile too: else it closed the client under a file's
    delete (its chunks stayed)."""
    steps = _commit_steps(undos)
    if steps:
        aliases = _aliases_of(steps)
        work = _run_steps(steps)

        def start() -> asyncio.Future[None]:
            with outside_caller_timeout():
                return asyncio.ensure_future(awaiting(work))

        task = begin_surely(start, work, _AFTER_COMMIT, aliases, _AFTER_COMMIT)
        await _within_time_left(task, lambda task: _after_commit(task, aliases))


async def _within_time_left(
    work: Awaitable[None], hold: Callable[[asyncio.Future[None]], object]
) -> bool:
    """``await work`` in a task outside the caller's ``pymongo.timeout()``
    (``work`` itself if a task), waited at most what is left of it; whether
    it ended (its error raised).
    That time-out spent first (or the caller cancelled), ``hold`` gets the
    task, which goes on: what :func:`_committed` and
    :func:`beyond_caller_timeout` share. (Cancelled once it ended, ``hold``
    gets it too: its error, if any, retrieved there, not lost.)"""
    with outside_caller_timeout():
        task = asyncio.ensure_future(work)
    try:
        await asyncio.wait((task,), timeout=_time_left())
    except BaseException:
        hold(task)
        raise
    if not task.done():
        hold(task)
        return False
    task.result()
    return True


def _time_left() -> float | None:
    """The seconds left of the caller's ``pymongo.timeout()`` (None: none)."""
    left = caller_time_left()
    return None if left is None else max(left, 0.0)


def caller_deadline() -> float | None:
    """When the caller's ``pymongo.timeout()`` runs out, in ``time.monotonic()``
    seconds (None: under none), for :func:`until_caller_deadline`."""
    left = caller_time_left()
    return None if left is None else time.monotonic() + left


@contextlib.contextmanager
def until_caller_deadline(deadline: float | None) -> Iterator[None]:
    """Inside the block (in a task outside the caller's ``pymongo.timeout()``),
    that time-out again while it has time left (``deadline``, from
    :func:`caller_deadline`): what the caller would have run under it is
    bounded by it; once spent (the caller raised it), none."""
    left = None if deadline is None else deadline - time.monotonic()
    if left is None or left <= 0:
        yield
        return
    with pymongo.timeout(left):
        yield


def _after_commit(
    steps: Awaitable[None], aliases: frozenset[str] | None
) -> asyncio.Future[None]:
    """Run ``steps`` (after a commit, their caller gone) in a task held until
    done, which the loop's end waits for, and the disconnect of ``aliases``
    (None: any): else a loop run by hand closed the clients under them (a
    file's chunks stayed, with its document deleted). A transaction bound
    around (another client's block) ends once it is done (see
    :func:`cascade_on_its_way`): the steps may leave it work (a file of
    documents the transaction's cascade joined it for). Outside the caller's
    ``pymongo.timeout()``, as in :func:`_committed`: a block cancelled while
    its commit was on its way starts them from its context."""
    with outside_caller_timeout():
        task = held(steps, _after_commit_steps, _AFTER_COMMIT)
    finish_before_close(task, _AFTER_COMMIT, aliases)
    cascade_on_its_way(task)
    return task


# The writes of cancelled callers still on their way in a transaction, by
# session: the transaction aborts once they settled (an abort sent before its
# first write reached the server would leave that write a transaction of its
# own, never ended, holding its locks until the server's time limit).
_unsettled: weakref.WeakKeyDictionary[AsyncClientSession, set[asyncio.Future[Any]]] = (
    weakref.WeakKeyDictionary()
)
# The task each of those writes works for (its cancelled caller, see
# acting_task), until it settled: see _settling. Both weakly: a write whose
# loop closed first never settles, and the caller's frames hold it.
_working_for: weakref.WeakKeyDictionary[
    asyncio.Future[Any], weakref.ref[asyncio.Task[Any]]
] = weakref.WeakKeyDictionary()


# The helper task of each block (see _Block), which ends its session's
# transaction: see transaction_ending. Weakly: a task left pending by a loop
# closed by hand refers to its session, which would keep both for good.
_ending: weakref.WeakKeyDictionary[
    AsyncClientSession, weakref.ref[asyncio.Future[Any]]
] = weakref.WeakKeyDictionary()


def transaction_ending(client: Any) -> asyncio.Future[Any] | None:
    """The task ending the transaction bound in this task for ``client``
    when its attempt is over for this task but the transaction is not (its
    abort or commit on its way, which may wait for the running code: the
    steps after a cancelled inner block's commit, see
    :func:`cascade_on_its_way`); else None. A write its locks hold up waits
    for that task in a task of its own: awaited here, each waits for the
    other until the server's time limit."""
    session = _bound_for(client, _own_sessions())
    if session is None or not session.in_transaction or not _over(session):
        return None
    ending = _ending.get(session)
    return None if ending is None else ending()


def write_on_its_way(
    session: AsyncClientSession | None, write: asyncio.Future[Any]
) -> None:
    """Note ``write``, a write whose caller was cancelled, that goes on in
    ``session``'s transaction (if in one) until it settles."""
    if session is None or not session.in_transaction or write.done():
        return
    held(write, _unsettled.setdefault(session, set()))
    caller = acting_task()
    if caller is not None:
        _working_for[write] = weakref.ref(caller)
        write.add_done_callback(_settled)


def cascade_on_its_way(write: asyncio.Future[Any]) -> None:
    """Note ``write``, a delete with rules whose caller was cancelled, as on
    its way in every transaction bound in this task, which its cascade may
    join (one of another client's block): each ends once it settled (else
    it committed first: the files the delete deleted later in it, or left
    to its commit, stayed, orphaned)."""
    for session in _live_sessions():
        write_on_its_way(session, write)


def _settled(write: asyncio.Future[Any]) -> None:
    """``write`` (see :func:`write_on_its_way`) settled."""
    _working_for.pop(write, None)


def after_commit(
    session: AsyncClientSession | None,
    action: Callable[[], None],
    now: Callable[[], Awaitable[Any]] | None = None,
) -> bool:
    """Call ``action`` once the transaction this package bound with
    ``session`` (see :func:`journal`) committed, as an :func:`on_commit`
    step; an abort (of this attempt: one run again starts afresh) drops it.
    False, and nothing noted, when ``session`` is no such transaction's (the
    caller's own: its end is the caller's, which nothing here sees).

    With ``now``, what follows a cancelled write that landed in the
    transaction (its signal): a save, delete or insert that the block
    begins before the commit awaits ``now()`` instead, in the transaction,
    first (see :func:`run_follow_ups`): its receivers see the writes in
    their order, as MongoEngine's would."""
    undos = journal(session)
    if undos is None:
        return False
    if now is None:

        async def step() -> None:
            action()

        on_commit(undos, step)
        return True
    assert session is not None  # (journal(None) is None)
    follow = _FollowUp(session, action, now)
    undos.append(follow)
    _pending.setdefault(session, []).append(follow)
    return True


class _FollowUp(_OnCommit):
    """What follows a cancelled write in ``session``'s transaction (see
    :func:`after_commit`): ``later()`` once it committed, unless the block
    ran ``now()`` before; nothing once it aborted."""

    def __init__(
        self,
        session: AsyncClientSession,
        later: Callable[[], None],
        now: Callable[[], Awaitable[Any]],
    ) -> None:
        super().__init__(self._committed, None)  # (its receivers: any alias)
        self.session = session
        self.later = later
        self.now = now
        self.taken = False
        self.signalled = False  # (its steps began sending its signal)

    def take(self) -> bool:
        """Whether it is still to run; no longer pending in any case."""
        if self.taken:
            return False
        self.taken = True
        follows = _pending.get(self.session, [])
        if self in follows:
            follows.remove(self)
        if not follows:
            _pending.pop(self.session, None)
        return True

    def put_back(self) -> None:
        """Pending again, first in line: its steps ran in the block and were
        cut short before they sent its signal (see :func:`run_follow_ups`)."""
        self.taken = False
        _pending.setdefault(self.session, []).insert(0, self)

    async def _committed(self) -> None:
        if self.take():
            self.later()

    def __call__(self) -> None:
        self.take()  # aborted: neither runs


# The follow-ups (see after_commit) not run yet, by the session of their
# transaction.
_pending: weakref.WeakKeyDictionary[AsyncClientSession, list[_FollowUp]] = (
    weakref.WeakKeyDictionary()
)


def follow_ups_pending() -> bool:
    """Whether a transaction bound in this task has follow-ups of cancelled
    writes still to run (see :func:`after_commit`)."""
    # (most writes: none bound, no Python call; then most have no cancelled one)
    return (
        bool(_journals.get())
        and bool(_pending)
        and any(session in _pending for session in _live_sessions())
    )


def _live_sessions() -> list[AsyncClientSession]:
    """The sessions of the transactions bound in this task whose attempt it
    inherited is not over (see :func:`_over`)."""
    return [session for session, _ in _journals.get() if not _over(session)]


async def run_follow_ups() -> None:
    """Run the follow-ups of cancelled writes that landed in the transactions
    bound in this task, in the order of those writes, in this task (their
    receivers' writes join the transaction, as those of a save that
    returned there), each once: a save, delete or insert of the block does it
    first, so that receivers see the signals in MongoEngine's order. One
    cut short by a cancellation before it sent its signal (see
    :func:`signalling`) is pending again, as the steps of a cancelled write
    follow it: in the block's next write, or once it committed."""
    for session in _live_sessions():
        while follows := _pending.get(session):
            follow = follows[0]
            if follow.take():
                await _run_follow_up(follow)


# The follow-up whose steps run_follow_ups runs in this task (see signalling).
_running_follow_up: ContextVar[_FollowUp | None] = ContextVar(
    "mongoengine_async_running_follow_up", default=None
)


async def _run_follow_up(follow: _FollowUp) -> None:
    """``await follow.now()``; put back if cancelled before its signal."""
    token = _running_follow_up.set(follow)
    try:
        await follow.now()
    except asyncio.CancelledError:
        if not follow.signalled:
            follow.put_back()
        raise
    finally:
        _reset(_running_follow_up, token)


def signalling() -> None:
    """The steps of the follow-up :func:`run_follow_ups` runs in this task, if
    any, send its signal now: cut short from here on, they do not run again
    (a receiver cancelled counts as one that raised)."""
    follow = _running_follow_up.get()
    if follow is not None:
        follow.signalled = True


# The tasks of follow_up (the loop keeps only weak references to tasks).
following: set[asyncio.Future[Any]] = set()


def follow_up(
    work: Coroutine[Any, Any, None],
    what: str,
    finish: bool = False,
    aliases: Iterable[str] | None = None,
) -> asyncio.Future[None]:
    """Run ``work``, what a write whose caller was cancelled leaves to do once
    it was applied, in a task of its own, in no transaction of this context;
    its error, which no caller awaits, goes to the loop's exception handler.
    ``finish``: the loop's end waits for it, and the disconnect of any of
    ``aliases`` (None: of any alias; see ``finish_before_close``); with
    ``finish``, that task cancelled before ``work`` began (the loop's end
    cancelling the tasks left as it began: see ``unbegun``), ``work`` runs
    in a new one, else nothing did it (the files of deleted documents
    stayed, found by nothing). Returns the task."""

    def start() -> asyncio.Future[None]:
        with outside_caller_timeout():  # (the caller's, spent, would cut it)
            return held(_unbound(work), following, what)

    if finish:
        return begin_surely(start, work, what, aliases, None)
    task = start()
    task.add_done_callback(lambda _: work.close())  # (never run: loop ended)
    return task


async def beyond_caller_timeout(
    work: Coroutine[Any, Any, None],
    what: str,
    aliases: Iterable[str],
    met: Callable[[], Exception | None] = lambda: None,
) -> None:
    """``await work`` (writes that must follow one applied outside a
    transaction: the deletes of the files of deleted documents) in a task
    outside the caller's ``pymongo.timeout()``, waited at most what is left
    of it: spent first (or the caller cancelled), ``work`` goes on held as a
    :func:`follow_up` with ``finish`` (its error to the loop's exception
    handler), and the call raises what PyMongo did when that time-out cut
    ``work`` short (or the cancellation): ExecutionTimeout if it was spent
    before ``work`` began, as PyMongo sends nothing then, else NetworkTimeout;
    but the error ``work`` met by then, if ``met()`` gives one (as the
    call raises when ``work`` ends in time)."""

    def hold(task: asyncio.Future[None]) -> None:
        held(task, following, what)
        finish_before_close(task, what, aliases)

    spent = _time_left() == 0
    if not await _within_time_left(work, hold):
        if (error := met()) is not None:
            raise error
        message = f"timed out: the caller's pymongo.timeout() ran out before the {what}"
        if spent:
            message += " began (it goes on)"
            raise ExecutionTimeout(
                message, 50, {"ok": 0, "errmsg": message, "code": 50}
            )
        raise NetworkTimeout(f"{message} ended (it goes on)")


async def _unbound(work: Coroutine[Any, Any, None]) -> None:
    """``await work`` without the sessions (transactions) bound in the
    context it was started from: what follows a write outlives them, and
    is no part of them (its write landed by itself, or its transaction
    committed)."""
    unbind_sessions()
    part_of_task()  # (its receivers disconnecting do not wait for it)
    await work


def unbind_sessions() -> None:
    """Unbind every session (transaction) bound in this context: for a task
    of its own (a copy of its creator's context) whose work may outlive them,
    such as the steps after the write of a cancelled save. Switches stay."""
    _sessions.set(())
    _journals.set(())
    _attempts.set(())
    _transaction_aliases.set(())


async def _settle_writes(session: AsyncClientSession) -> None:
    """Wait until the writes of cancelled callers in ``session``'s
    transaction settled (before it commits or aborts)."""
    writes = _unsettled.get(session)
    if writes:
        await asyncio.wait(set(writes))


def _undo(undos: Journal, unknown: bool = False) -> None:
    """Give the instances back what an aborted attempt changed (latest first),
    and empty the journal for the next attempt. ``unknown``: the commit's
    outcome is (it may have committed): the :func:`on_abort` actions are
    skipped."""
    while undos:
        undo = undos.pop()
        if not (unknown and isinstance(undo, _OnAbort)):
            undo()


def _commit_unknown(block: _Block) -> bool:
    """Whether ``with_transaction`` (the ``block``'s helper task, done) failed
    with an unknown commit outcome (``UnknownTransactionCommitResult``, also
    on the error it raised once its time limit passed), or was cancelled (by
    the loop's end) once its commit was on its way, which may have applied
    (sent again, see ``_Block._commit_again``, it did not reply in time)."""
    task = block.task
    if task.cancelled():
        return block.commit_sent()
    error: BaseException | None = task.exception()
    while error is not None:
        if isinstance(error, PyMongoError) and error.has_error_label(_UNKNOWN):
            return True
        error = error.__cause__
    return False


@asynccontextmanager
async def _bind_session(
    session: AsyncClientSession, undos: Journal, alone: bool = False
) -> AsyncIterator[None]:
    """Bind ``session`` (its transaction) and its journal to the task (if
    ``alone``, not to the tasks it starts: see ``_owners``)."""
    token = _journals.set((*_journals.get(), (session, undos)))
    if alone:  # (kept after: the tasks it started hold it in their context)
        task = acting_task()
        _owners[session] = weakref.ref(task) if task else lambda: None
    try:
        async with _bind(_sessions, (*_sessions.get(), session)):
            yield
    finally:
        _reset(_journals, token)


def switched_alias(cls: type[Any]) -> str | None:
    """The alias ``async_switch_db`` set for ``cls`` in this task, if any."""
    return _db_aliases.get().get(cls)


def switched_collection(cls: type[Any]) -> str | None:
    """The collection ``async_switch_collection`` set for ``cls``, if any."""
    return _collections.get().get(cls)


def dereference_disabled(cls: type[Any]) -> bool:
    """Whether ``async_no_dereference(cls)`` is active in this task."""
    return cls in _no_dereference.get()


@asynccontextmanager
async def _bind(var: ContextVar, value: Any) -> AsyncIterator[None]:
    token = var.set(value)
    bound = _bound.set(True)
    try:
        yield
    finally:
        _reset(_bound, bound)
        _reset(var, token)


@asynccontextmanager
async def async_switch_db(cls: T, alias: str) -> AsyncIterator[T]:
    """Make ``cls`` use database alias ``alias`` inside the block (this task only)."""
    _refuse_sync(alias, "async_switch_db", f"switch_db({cls.__name__}, '{alias}')")
    async with _bind(_db_aliases, {**_db_aliases.get(), cls: alias}):
        yield cls


@asynccontextmanager
async def async_switch_collection(cls: T, collection_name: str) -> AsyncIterator[T]:
    """Make ``cls`` use collection ``collection_name`` inside the block."""
    use = f"switch_collection({cls.__name__}, {collection_name!r})"
    _refuse_sync(_alias_now(cls), "async_switch_collection", use)
    async with _bind(_collections, {**_collections.get(), cls: collection_name}):
        yield cls


@asynccontextmanager
async def async_no_dereference(cls: T) -> AsyncIterator[T]:
    """Inside the block, references of ``cls`` read as their stored value."""
    if issubclass(cls, mongoengine.Document):  # (not an embedded class)
        use = f"no_dereference({cls.__name__})"
        _refuse_sync(_alias_now(cls), "async_no_dereference", use)
    async with _bind(_no_dereference, _no_dereference.get() | {cls}):
        yield cls


def _alias_now(cls: type[Any]) -> str:
    """The alias of document class ``cls`` in this task (switched, else meta)."""
    meta = getattr(cls, "_meta", {})
    return switched_alias(cls) or meta.get("db_alias", DEFAULT_CONNECTION_NAME)


def _refuse_sync(alias: str, name: str, use: str) -> None:
    """Refuse to enter block ``name`` for an alias registered as sync: only
    async operations follow the block (a sync one inside raises), and
    MongoEngine's ``use`` (a context manager of
    ``mongoengine.context_managers``) is the sync way. An alias not
    registered (yet) is let through, as by MongoEngine's switch_db."""
    if is_sync_connection(alias):
        raise sync_alias_error(
            alias, "mongoengine_async", name, f"mongoengine.context_managers.{use}"
        )


# A transaction on a sync alias, as MongoEngine 0.29 has none of its own.
_SYNC_WAY = "a session of get_connection() (start_session(), with_transaction())"


@asynccontextmanager
async def async_run_in_transaction(
    alias: str = DEFAULT_CONNECTION_NAME,
    session_kwargs: dict[str, Any] | None = None,
    transaction_kwargs: dict[str, Any] | None = None,
) -> AsyncIterator[AsyncClientSession]:
    """Run the block in one transaction on ``alias``; commit at the end.

    Every async operation of this package inside the block uses the session
    (operations on another client do not). An exception aborts the
    transaction and propagates. The commit follows PyMongo's
    ``with_transaction``; the block itself runs once (see
    :func:`async_run_transaction` to re-run it). Nesting on the same client raises.
    Documents saved (files deleted) in a transaction that aborts are given back
    their state before (new, changes; the file), keeping the ids they got.
    """
    require_async(alias, "mongoengine_async", "async_run_in_transaction", _SYNC_WAY)
    client = get_async_connection(alias)
    with _transaction_on(alias):
        async with run_in_transaction(
            client, session_kwargs, transaction_kwargs
        ) as session:
            yield session


async def async_run_transaction(
    fn: Callable[[], Awaitable[R]],
    alias: str = DEFAULT_CONNECTION_NAME,
    session_kwargs: dict[str, Any] | None = None,
    **transaction_kwargs: Any,
) -> R:
    """``await fn()`` in one transaction on ``alias`` and return its result.

    Runs in PyMongo's ``with_transaction``: on a TransientTransactionError
    (also one MongoEngine wrapped, see :func:`is_transient`) the transaction
    is aborted and ``fn`` runs again; an unknown commit result retries the
    commit; retries stop after 120 s. Nesting on the same client raises.
    Documents saved (files deleted) in an attempt that aborts are given back
    their state before it, so that the next attempt sends them again.
    """
    require_async(alias, "mongoengine_async", "async_run_transaction", _SYNC_WAY)
    client = get_async_connection(alias)
    with _transaction_on(alias):
        return await run_transaction(client, fn, session_kwargs, transaction_kwargs)


def is_transient(error: BaseException | None) -> bool:
    """Whether ``error``, or an error that caused it, is labelled
    TransientTransactionError: running the whole transaction again may succeed.

    MongoEngine reports some driver errors as its own (``OperationError``,
    ``NotUniqueError``) with the driver's error as ``__cause__``. An
    exception group (of a task group) is transient when every error it
    groups is.
    """
    while error is not None:
        if isinstance(error, PyMongoError) and error.has_error_label(_TRANSIENT):
            return True
        if grouped := _grouped(error):
            return all(is_transient(each) for each in grouped)
        error = error.__cause__
    return False


def _refuse_nesting(client: AsyncMongoClient, name: str) -> None:
    """Refuse a transaction inside one of ``client``'s bound in this task; not
    one that is over for it (committed or aborted, its session ended or not,
    or whose attempt is over, the session in the next one's: a task that
    outlived the block or attempt that started it, whose session it
    inherited)."""
    session = _bound_for(client, _own_sessions())
    if session is not None and session.in_transaction and not _over(session):
        raise NestedTransactionError(
            f"{name}() cannot be nested: a transaction is already active in this task"
        )


async def run_transaction(
    client: AsyncMongoClient,
    fn: Callable[[], Awaitable[R]],
    session_kwargs: dict[str, Any] | None = None,
    transaction_kwargs: dict[str, Any] | None = None,
    alone: bool = False,
) -> R:
    """``async_run_transaction`` on ``client`` (one the registry made);
    ``alone``: see :func:`run_on`."""
    _refuse_nesting(client, "async_run_transaction")
    session = client.start_session(**(session_kwargs or {}))
    return await run_on(session, fn, transaction_kwargs, own=True, alone=alone)


async def run_on(
    session: AsyncClientSession,
    fn: Callable[[], Awaitable[R]],
    transaction_kwargs: dict[str, Any] | None = None,
    own: bool = False,
    alone: bool = False,
) -> R:
    """``await fn()`` in a transaction on ``session`` (one in none), as
    ``async_run_transaction`` does; bound to the task meanwhile, before any
    session bound for the same client (an explicit session wins). ``own``:
    the session is ended after (once the transaction ended). ``alone``:
    bound for this task only, not the tasks it starts (the transaction of a
    delete with rules, whose signal receivers may start tasks outliving it).

    ``with_transaction`` runs in a helper task (see :class:`_Block`), ``fn``
    in the caller's: a cancellation, even one delivered at every await (a
    cancel scope), cancels ``fn`` but not the abort (nor a commit in flight),
    which waits for the writes of cancelled callers still on their way.
    """
    block: _Block | None = None
    undos: Journal = []
    try:
        block = _Block(session, transaction_kwargs or {}, again=True)
        try:
            async with _bind_session(session, undos, alone):
                outcome = await block.run(fn, undos)
        except BaseException:
            if not own:  # the caller's session: its next use must come after
                await block.over_even_if_cancelled()
            raise
        await _committed(undos)
        return outcome
    finally:
        _settle_journal(block, undos)
        if own:
            await _end_session(session, block)


class _TransientError(PyMongoError):
    """A transient error MongoEngine wrapped (or an exception group of
    transient errors), relabelled for ``with_transaction`` (which retries
    only PyMongoErrors carrying the label)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error), error_labels=[_TRANSIENT])


async def _run_labelled(fn: Callable[[], Awaitable[R]]) -> R:
    """``await fn()``; a wrapped transient error (or a group of them) is
    raised as a PyMongoError."""
    try:
        return await fn()
    except PyMongoError:
        raise
    except Exception as error:
        if is_transient(error):
            raise _TransientError(error) from error
        raise


@asynccontextmanager
async def run_in_transaction(
    client: AsyncMongoClient,
    session_kwargs: dict[str, Any] | None = None,
    transaction_kwargs: dict[str, Any] | None = None,
) -> AsyncIterator[AsyncClientSession]:
    """``async_run_in_transaction`` on ``client`` (one the registry made)."""
    _refuse_nesting(client, "async_run_in_transaction")
    session = client.start_session(**(session_kwargs or {}))
    block: _Block | None = None
    undos: Journal = []
    try:
        block = _Block(session, transaction_kwargs or {})
        await block.entered()
        async with _bind_session(session, undos):
            try:
                with _attempt(session):
                    yield session
            except BaseException as error:
                await block.failed(error)
                raise
        await block.done()
        await _committed(undos)
    finally:
        _settle_journal(block, undos)
        await _end_session(session, block)


def _settle_journal(block: _Block | None, undos: Journal) -> None:
    """The transaction ended, or its caller left (cancelled) while it ends:
    give the instances back what it changed unless it committed (else run
    the :func:`on_commit` steps its caller left before running), then let
    go of the instances the journal holds. A commit in flight when the caller
    left goes on and may succeed: the instances wait for its outcome (one
    the loop's end cut short is unknown: the :func:`on_abort` undos are
    skipped). Else it cannot commit any more: they are given back at once,
    before its abort ended (their next save, which may come first, sends
    the changes again). (The tasks started meanwhile, PyMongo's monitors on a client's
    first use, a collection's preparation, keep a copy of this task's
    context, and so the journal, as long as they live.)"""

    def settle(ended: _Block) -> asyncio.Future[None] | None:
        task, following = ended.task, None
        if task.cancelled() or task.exception() is not None:
            _undo(undos, _commit_unknown(ended))  # (drops what follows a commit)
        elif steps := _commit_steps(undos):  # (its caller left before them)
            following = _after_commit(_run_steps(steps), _aliases_of(steps))
        undos.clear()
        return following

    try:
        if block is not None and block.over():
            settle(block)
        elif block is not None and block.committing():
            settled = block.task.get_loop().create_future()
            block.task.add_done_callback(lambda _: _settle_then(settle, block, settled))
            aliases = _committing_aliases(block, undos)
            finish_before_close(block.task, _COMMITTING, aliases)
            # (A transaction bound around, another client's block, ends after it.)
            cascade_on_its_way(settled)
        else:
            _undo(undos)
            undos.clear()
    finally:
        if block is not None:
            block.settled()


def _settle_then(
    settle: Callable[[_Block], asyncio.Future[None] | None],
    block: _Block,
    settled: asyncio.Future[None],
) -> None:
    """``settle(block)``, its commit ended; then set ``settled`` done once
    the steps after the commit it started (if any) are, even if it raised:
    a transaction waiting for it (see :func:`cascade_on_its_way`) ends."""
    following = None
    try:
        following = settle(block)
    finally:
        if following is None:
            settled.set_result(None)
        else:
            following.add_done_callback(lambda _: settled.set_result(None))


def _committing_aliases(block: _Block, undos: Journal) -> frozenset[str] | None:
    """The aliases a commit left going on may use (None: any): its client's,
    and those of the work its done callback starts, its :func:`on_commit`
    steps' or (it failed) its :func:`on_abort` actions' (a file delete on
    another alias's bucket: that disconnect must wait for both)."""
    steps = _aliases_of([entry for entry in undos if isinstance(entry, _OnCommit)])
    if steps is None:
        return None
    aborts = (entry.aliases for entry in undos if isinstance(entry, _OnAbort))
    return block.aliases().union(steps, *aborts)


async def _end_session(session: AsyncClientSession, block: _Block | None) -> None:
    """End ``session`` once its transaction's helper task ended: now, or
    (the caller cancelled while the helper aborts or commits) after it."""
    if block is None or block.over():
        await session.end_session()
    else:
        block.end_after()


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark the error of a transaction's helper task retrieved: its caller,
    gone, raised its own."""
    if not task.cancelled():
        task.exception()


class _BlockFailed(Exception):
    """Ends the callback of a block that raised; not a PyMongoError, so
    ``with_transaction`` aborts and does not retry."""


class _Block:
    """PyMongo's ``with_transaction`` around code that runs in the caller's
    task: the block of a context manager, or each attempt of a callback.

    ``with_transaction`` runs in a helper task whose callback waits until
    the caller has run its code; the start, abort and commit (their retries
    and time limit) are PyMongo's. The caller's cancellation does not cancel
    the helper: its abort (or commit) goes on, after the writes of cancelled
    callers settled, and ``end_after`` ends the session after it. A block
    (``again`` false) runs once; a callback (``again``) runs again when
    ``with_transaction`` calls it again.
    """

    def __init__(
        self, session: AsyncClientSession, transaction_kwargs: dict, again: bool = False
    ):
        loop = running_loop()
        self._session = session
        self._again = again
        self._gone = False  # the caller left: no attempt runs any more
        self._entered: asyncio.Future[None] = loop.create_future()
        self._left: asyncio.Future[Any] = loop.create_future()
        self._unsure = False  # an operation may be on its way: fence the abort
        self._committing = False  # the caller's code ran: commit it
        self._end = False  # end the session once with_transaction ended
        self._commit_sent = False  # the callback returned it: the commit follows
        self._outcome: Any = None  # what the callback returned (committed)
        # (The fence's database: the alias may be disconnected meanwhile.)
        self._database = database_of(session.client)
        self._task = asyncio.ensure_future(self._transact(transaction_kwargs))
        # (Done once its journal settled: the work that starts, see settled.)
        self._settled: asyncio.Future[None] = loop.create_future()
        ends_transaction(session.client, self._task)
        ends_transaction(session.client, self._settled)
        _ending[session] = weakref.ref(self._task)

    async def _transact(self, transaction_kwargs: dict) -> Any:
        try:
            return await self._session.with_transaction(
                self._callback, **transaction_kwargs
            )
        except GeneratorExit:
            raise
        except BaseException as error:
            if self._stranded():
                # What PyMongo's with_transaction raised in place of the
                # GeneratorExit (its abort, outside its loop) goes nowhere.
                raise GeneratorExit from None
            if isinstance(error, asyncio.CancelledError) and await self._commit_again():
                return self._outcome
            if self._unsure:
                await self._fence()
            raise
        finally:
            # (See end_after; the abort bounded, see _abort.)
            if self._end and not self._stranded():
                # Never in place of the outcome (a commit that applied read as
                # failed gives the instances back): cut short by the loop's
                # end, the session ends with its client.
                with contextlib.suppress(asyncio.CancelledError, PyMongoError):
                    await _abort(self._session)
                    await self._session.end_session()

    async def _commit_again(self) -> bool:
        """The commit on its way was cancelled (by the loop's end: the caller's
        cancellation never cancels this task): send it again, as PyMongo
        retries a commit (the server applies it once, and replies with its
        outcome), for ``_END_SECONDS`` at most, as long as the loop's end waits
        for other work. True once it committed: else the commit that applied
        (its reply lost) was taken for unknown, and the steps after it (the
        delete of a deleted document's file) never ran. Cancelled again (a
        shutdown cancelling every task, then the loop's end), it is sent once
        more, in the same time. Refused as a TransientTransactionError (the
        server aborted it: NoSuchTransaction), it did not commit, as PyMongo
        takes it (it runs the transaction again): the steps after an abort run."""
        if not self._commit_sent:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _END_SECONDS
        while True:
            # (Spent: PyMongo raises before sending; 0 would be no limit.)
            left = max(deadline - loop.time(), _SPENT_SECONDS)
            try:
                with outside_caller_timeout(), pymongo.timeout(left):
                    await self._session.commit_transaction()
            except PyMongoError as error:
                if error.has_error_label(_TRANSIENT) and not error.has_error_label(
                    _UNKNOWN
                ):
                    self._commit_sent = False  # (aborted, not unknown)
                return False
            except asyncio.CancelledError:
                continue
            return True

    async def _fence(self) -> None:
        """After an abort that followed a cancellation, a time-out, a lost
        connection or a failed commit (see ``_note``): an operation of the
        block cancelled on its way (its connection dropped, so nothing can wait
        for it) may reach the server after the abort and start a transaction
        nobody ends, locking what it touches until the server's time limit.
        One more transaction on the same session ends it: its higher
        transaction number makes the server abort the orphan, or refuse the
        late operation as too old. Its only statement, a read the server
        refuses (``_FENCE_FILTER``), aborts it there: late itself (given up
        after ``_FENCE_SECONDS``, see :func:`_bounded`, and landing after its
        abort), it leaves no transaction of its own open. Its abort ends it on
        this side. Its options are its own, not the client's (which a
        transaction's read could not take: a ``read_preference`` other than
        primary, an unacknowledged write concern): PyMongo would refuse it
        before sending anything."""
        session, database = self._session, self._database
        if database is None or session.has_ended or session.in_transaction:
            return
        collection = session.client[database]["mongoengine_async_fence"]
        with contextlib.suppress(PyMongoError):
            await session.start_transaction(**_FENCE_OPTIONS)
            try:
                await _bounded(collection.find_one(_FENCE_FILTER, session=session))
            finally:
                if not self._stranded():
                    await _abort(session)

    def _stranded(self) -> bool:
        """Whether the running cleanup of the helper task cannot reach its
        loop: its coroutine closed as it is collected (see
        :func:`_closed_as_collected`), or an error raised in the stead of
        that ``GeneratorExit`` (PyMongo's ``with_transaction`` awaits its
        abort as it closes: outside its loop, which fails) where another
        loop runs, or none. The fence and abort would go to that other loop
        (or fail: "There is no current event loop")."""
        loop = running_loop_or_none()
        return _closed_as_collected() or loop is not self._task.get_loop()

    async def _callback(self, _: AsyncClientSession) -> Any:
        # Called again: the block's commit failed with a transient error (a
        # block cannot run again), or the caller left.
        self._committing = self._commit_sent = False
        if self._gone or self._entered.done():
            raise _BlockFailed
        self._entered.set_result(None)
        outcome = _ABANDONED  # (unless the caller's code ran)
        try:
            outcome = await self._left
        finally:  # then with_transaction commits, or aborts (here: see _abort)
            # (In this task: a cancel scope cancelling the caller's every
            # await would not keep the abort waiting for them.)
            if not self._stranded():
                await _settle_writes(self._session)
                if outcome is _ABANDONED:
                    await _abort(self._session)
        if outcome is _ABANDONED:
            raise _BlockFailed
        # A commit that fails, unless its transaction is run again, is fenced:
        # a block that caught its own time-out may leave an operation on its
        # way (the server then knows no transaction yet, and refuses it).
        self._unsure = self._commit_sent = True
        self._outcome = outcome
        return outcome

    @property
    def task(self) -> asyncio.Future[Any]:
        """The helper task: its result is ``with_transaction``'s (committed)."""
        return self._task

    def aliases(self) -> frozenset[str]:
        """The aliases whose disconnect may close the client of the session
        under its commit (see ``finish_before_close``)."""
        return aliases_served_by(self._session.client)

    def settled(self) -> None:
        """Its journal settled (:func:`_settle_journal`): the work that started
        (a file's delete once it aborted) is noted for ``finish_before_close``
        by now, which the close of its client, disconnected, waits for too.
        (Nothing once its loop closed, by hand: no close waits then.)"""
        if not self._settled.done() and not self._settled.get_loop().is_closed():
            self._settled.set_result(None)

    def over(self) -> bool:
        """Whether ``with_transaction`` ended (committed or aborted)."""
        return self._task.done()

    def committing(self) -> bool:
        """Whether the caller's code ran and ``with_transaction`` commits it
        (it may still fail, and run a callback again)."""
        return self._committing and not self._task.done()

    def commit_sent(self) -> bool:
        """Whether ``with_transaction`` went on to commit the caller's code
        (the callback returned it), even if its helper task was cancelled
        meanwhile (the loop's end): that commit may have applied."""
        return self._commit_sent

    async def over_even_if_cancelled(self) -> None:
        """Wait until ``with_transaction`` ended (its abort, fence or commit),
        even when the caller is cancelled again meanwhile (then re-raise that
        cancellation): the session is the caller's own, which its next
        operation may use, and a session runs one operation at a time."""
        await until_done(self._task)

    def end_after(self) -> None:
        """End the session once ``with_transaction`` ended (not under it: an
        ended session cannot abort, and the transaction would stay open on
        the server, locking what it wrote, until its time limit). In the
        helper task, which ``asyncio.run()`` awaits as it ends (the loop cancels
        it): not in a task of its own, which would still run as the loop's
        ``shutdown_asyncgens()`` closes PyMongo's generators it is inside
        (Python 3.10, 3.11 then raised "generator didn't stop after athrow()")."""
        self._end = True
        self._task.add_done_callback(_retrieved)

    def _leave(self, outcome: Any = None, error: BaseException | None = None) -> None:
        """The caller's code ran: hand ``with_transaction`` its ``outcome``
        (to commit) or its ``error`` (to abort, and retry a transient one)."""
        left = self._left
        if self._again:  # for the callback's next call, if any
            loop = left.get_loop()
            self._entered, self._left = loop.create_future(), loop.create_future()
        if error is None:
            self._committing = True
            left.set_result(outcome)
        else:
            left.set_exception(error)

    def _outlived(self, error: BaseException) -> None:
        """The caller was cancelled (``error``) before its code's commit: the
        abort goes on, which ``disconnect_async()`` and the loop's end wait
        for (see ``finish_before_close``). A server stopped at once after
        them (uvicorn re-raises its SIGTERM) would otherwise keep the
        transaction open, locking what it wrote, until its time limit."""
        if isinstance(error, asyncio.CancelledError) and not (
            self._committing or self._task.done()
        ):
            finish_before_close(self._task, _ABORTING, self.aliases())

    def _loop_closed(self) -> bool:
        """Whether the loop of the transaction has closed (``loop.close()``
        without ``shutdown_asyncgens()``): the caller's coroutine, closed
        (``GeneratorExit``) as it is collected, can neither abort nor hand
        ``with_transaction`` anything (nothing runs there). Its cleanup did:
        that failed ("Event loop is closed"), and the rest of it, raising in
        its stead, was printed as "Exception ignored" ("ValueError: <Token
        ...> was created in a different Context")."""
        return self._task.get_loop().is_closed()

    def _abandon(self) -> None:
        """The caller leaves: ``with_transaction`` aborts (unless it is
        committing already) and calls nothing again."""
        self._gone = True
        if not self._left.done() and not self._loop_closed():
            self._left.set_result(_ABANDONED)

    async def _wait(self, *futures: asyncio.Future[Any]) -> None:
        """Wait until one of ``futures`` is done or ``with_transaction``
        ended. The helper task is not cancelled with the caller."""
        try:
            await asyncio.wait(
                (*futures, self._task), return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException as error:
            self._note(error)
            self._outlived(error)
            self._abandon()
            raise

    def _note(self, error: BaseException) -> None:
        """Note an error after which the abort needs a fence (see ``_fence``):
        the caller's cancellation, a time-out or a lost connection, also one
        the block caught and replaced by ``error`` (see ``_on_its_way``)."""
        if _on_its_way(error):
            self._unsure = True

    async def _next(self) -> bool:
        """Wait until the callback is called (True) or ``with_transaction``
        ended (False)."""
        await self._wait(self._entered)
        return self._entered.done()

    async def entered(self) -> None:
        """Wait until the transaction has started (raise if it could not)."""
        if not await self._next():
            self._task.result()

    async def failed(self, error: BaseException | None = None) -> None:
        """The block raised (``error``): let ``with_transaction`` abort. Once
        its transaction sent anything, the abort is fenced (``_fence``): an
        operation the block gave up on (a time-out it caught, then raised
        another error, not while handling it) may still be on its way; not
        when no server could be selected (nothing could be sent)."""
        if self._loop_closed():
            self._gone = True
            return
        if error is not None:
            self._note(error)
            self._outlived(error)
        if not self._session._starting_transaction and not _no_server(
            error, self._session.client
        ):
            self._unsure = True
        self._abandon()
        with contextlib.suppress(_BlockFailed):
            # (Shielded: the caller cancelled again meanwhile, as a cancel
            # scope does, must not cancel the abort.)
            try:
                await asyncio.shield(self._task)
            except asyncio.CancelledError as cancelled:
                self._outlived(cancelled)  # (cancelled during the abort)
                raise

    async def done(self) -> None:
        """The block ran: let ``with_transaction`` commit."""
        self._leave()
        try:
            await self._wait()
            self._task.result()
        except _BlockFailed:
            raise _transient_commit_error() from None

    async def run(self, fn: Callable[[], Awaitable[R]], undos: Journal) -> R:
        """``await fn()`` each time the callback is called; ``with_transaction``'s
        result (``fn``'s, committed)."""
        while await self._next():
            _undo(undos)  # what the attempt before, aborted, changed
            try:
                with _attempt(self._session):
                    outcome = await _run_labelled(fn)
            except PyMongoError as error:
                if not error.has_error_label(_TRANSIENT):
                    await self.failed(error)
                    raise
                self._note(error)  # (if it is not run again in time)
                self._leave(error=error)  # aborted, then run again (in time)
            except BaseException as error:
                await self.failed(error)
                raise
            else:
                self._leave(outcome)
        return self._task.result()


# The time limit of an abort, and of the fence's read (see _bounded), and the
# fence's transaction options and read (see _Block._fence): an unknown
# top-level operator, which the server refuses once the transaction started.
_FENCE_SECONDS = 5
_FENCE_FILTER = {"$mongoengine_async_fence": 1}
_FENCE_OPTIONS: dict[str, Any] = {
    "read_concern": ReadConcern("local"),
    "write_concern": WriteConcern(w=1),
    "read_preference": ReadPreference.PRIMARY,
}


async def _bounded(operation: Awaitable[Any]) -> None:
    """Await ``operation`` (an abort, or its fence's read), giving it up
    after ``_FENCE_SECONDS``, and drop its error. The limit is its own, and
    on this side only: under a ``pymongo.timeout()`` of the caller's,
    expired, PyMongo would not send it, and a limit the server knows (the
    ``maxTimeMS`` of a client's ``timeoutMS``) would make the server drop it
    while it waits for a late operation of the block, the very case it is
    for; given up, it still does its work if it reaches the server. Waited
    by ``asyncio.wait``: ``wait_for`` of Python 3.10 and 3.11 swallows the
    caller's cancellation when the operation ends meanwhile (as the loop's
    end cancels both), and the caller went on as if not cancelled."""
    with without_pymongo_timeouts():
        task = asyncio.ensure_future(operation)
    try:
        await asyncio.wait((task,), timeout=_FENCE_SECONDS)
    finally:
        if not _closed_as_collected():
            await _ended(task)
        elif task.done() and not task.cancelled():
            _drop_error(task)


def _drop_error(task: asyncio.Future[Any]) -> None:
    """Drop the error of ``task`` (of :func:`_bounded`), done as its loop
    closed, as :func:`_ended` does (the fence's read refused, as meant): not
    logged as "never retrieved". Any other is logged so, as nothing can
    raise it now."""
    error = task.exception()
    if error is not None and not isinstance(error, PyMongoError):
        task.get_loop().call_exception_handler(
            {"message": "Task exception was never retrieved", "exception": error}
        )


async def _ended(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` (of :func:`_bounded`) ended, cancelled if not done
    (given up, or the caller cancelled: as ``wait_for``), its error dropped."""
    if not task.done():
        task.cancel()
        await asyncio.wait((task,))
    if not task.cancelled():  # (its error dropped, the caller cancelled too)
        with contextlib.suppress(PyMongoError):
            task.result()


async def _abort(session: AsyncClientSession) -> None:
    """Abort ``session``'s transaction, if any, in ``_FENCE_SECONDS`` at most
    (see :func:`_bounded`): PyMongo's abort has no time limit of its own (a
    server that does not answer would hold the caller as long), and
    ``with_transaction`` then aborts no more."""
    if session.in_transaction:
        await _bounded(session.abort_transaction())


# The errors that may leave an operation of a transaction on its way.
_UNSURE = (
    asyncio.CancelledError,
    asyncio.TimeoutError,
    TimeoutError,
    ConnectionFailure,
)
# The server's code for a transaction it does not know: the operation the
# block sent first (which starts it) may not have reached it yet.
_NO_SUCH_TRANSACTION = 251


def _on_its_way(error: BaseException | None) -> bool:
    """Whether ``error``, or one it was raised from or while handling, or
    one it groups (an ``ExceptionGroup`` of a task group), may have left an
    operation on its way to the server (``_UNSURE``), or says the server
    knows no transaction yet (NoSuchTransaction: an operation that went on
    after the block's first one timed out reached it first)."""
    for each in _chain(error):
        # (No server to send to: nothing was sent.)
        if isinstance(each, _UNSURE) and not isinstance(
            each, ServerSelectionTimeoutError
        ):
            return True
        if isinstance(each, OperationFailure) and each.code == _NO_SUCH_TRANSACTION:
            return True
    return False


def _no_server(error: BaseException | None, client: Any) -> bool:
    """Whether ``error`` (see :func:`_chain`) says no server of ``client``
    could be selected in a whole server selection's time (see
    :func:`_waited_whole`), and ``client`` knows no primary still: a fence
    would wait for one, with nothing on its way. A time-out the block
    handled before it raised may be another client's (this one's server
    there, an operation it gave up on perhaps still on its way)."""
    return (
        any(
            isinstance(each, ServerSelectionTimeoutError)
            and _waited_whole(each, client)
            for each in _chain(error)
        )
        and not client.topology_description.has_writable_server()
    )


# How PyMongo's server selection time-out says how long it waited, and on
# which client's servers (its topology's id, as the client's description says).
_SELECTION_WAITED = re.compile(
    r", Timeout: ([0-9.e+-]+)s, Topology Description: "
    r"<TopologyDescription id: (\w+), "
)
_TOPOLOGY_ID = re.compile(r"<TopologyDescription id: (\w+), ")


def _waited_whole(error: ServerSelectionTimeoutError, client: Any) -> bool:
    """Whether the selection ``error`` is ``client``'s and waited its whole
    ``serverSelectionTimeoutMS`` (or longer, under a longer ``timeoutMS`` or
    ``pymongo.timeout()``): another client's (with a primary Unknown a moment
    here) says nothing of this one's server, and one cut short by a shorter
    one (a primary Unknown a moment, its pool cleared by a network error)
    does not tell that it is gone. PyMongo says both in its message only; a
    message saying neither is taken as cut short."""
    waited = _SELECTION_WAITED.search(str(error))
    ours = _TOPOLOGY_ID.search(repr(client.topology_description))
    return (
        waited is not None
        and ours is not None
        and waited[2] == ours[1]
        and float(waited[1]) >= client.options.server_selection_timeout
    )


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error``, those it was raised from or while handling, and those it
    groups (an ``ExceptionGroup`` of a task group), each once."""
    seen: list[BaseException] = []
    pending = [error]
    while pending:
        error = pending.pop()
        while error is not None and not any(error is each for each in seen):
            yield error
            seen.append(error)
            pending.extend(_grouped(error))
            error = error.__cause__ or error.__context__


def _grouped(error: BaseException) -> list[BaseException]:
    """The errors ``error`` groups, if it is an exception group (Python
    3.11's, or the ``exceptiongroup`` backport's on 3.10)."""
    exceptions = getattr(error, "exceptions", None)
    if not isinstance(exceptions, tuple):
        return []
    return [each for each in exceptions if isinstance(each, BaseException)]


# What the callback of a caller that left gets: it raises _BlockFailed.
_ABANDONED: Any = object()


def _transient_commit_error() -> PyMongoError:
    """What a context manager raises when its commit failed with a
    TransientTransactionError: the block must run again, which only the
    caller can do."""
    return PyMongoError(
        "The commit of async_run_in_transaction() failed with a "
        "TransientTransactionError and the transaction was aborted: run the "
        "block again (async_run_transaction() does that itself)",
        error_labels=[_TRANSIENT],
    )
