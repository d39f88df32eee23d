"""MongoEngine's ``reverse_delete_rule``s for async deletes.

The rules are MongoEngine's (``cls._meta["delete_rules"]``: which referring
class and field, and what to do). A delete is planned before anything is
written: the CASCADE closure is collected level by level, then every DENY is
checked, and only then NULLIFY, PULL and the deletes run. Each step is one
batched query per rule and level, never one per referring document; a class
whose deleted ids nothing needs is deleted by the rule's filter, its ids never
fetched. When the deployment has transactions the whole delete runs in one.
Ids (and stored references) are sent in runs under the 16 MB command limit
(:func:`~mongoengine_async.gridfs.id_runs`), one command each: a delete of
some 700,000 documents names more than one command holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import operator
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import bson
import mongoengine
from bson import DBRef
from bson.codec_options import CodecOptions
from mongoengine.context_managers import set_write_concern
from mongoengine.errors import InvalidQueryError, LookUpError, OperationError
from mongoengine.queryset import CASCADE, DENY, DO_NOTHING, NULLIFY, PULL, transform
from mongoengine.queryset.queryset import ITER_CHUNK_SIZE
from pymongo import AsyncMongoClient, ReadPreference
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import ServerSelectionTimeoutError
from pymongo.read_concern import ReadConcern
from pymongo.server_type import SERVER_TYPE
from pymongo.topology_description import TOPOLOGY_TYPE

from mongoengine_async import signals
from mongoengine_async.batches import WHOLE_RESULT, materialise_all, read_list
from mongoengine_async.classes import with_subclasses
from mongoengine_async.context import (
    async_switch_collection,
    follow_up,
    journal,
    on_commit,
    run_on,
    run_transaction,
)
from mongoengine_async.gridfs import (
    Listed,
    Matching,
    Unreachable,
    delete_files,
    delete_files_of_deleted,
    delete_once_committed,
    file_aliases,
    file_projection,
    files_of,
    id_runs,
    listed,
    not_held,
    on_primary,
    run_again_if_cut_short,
    stored_files,
    stored_files_and_ids,
)
from mongoengine_async.operation import Operation, session_for

__all__ = (
    "CancelledAfterFailure",
    "RootFiles",
    "aliases_of_delete",
    "check_rules",
    "delete_each",
    "delete_matching",
    "has_rules",
    "runs_own_transaction",
)


class CancelledAfterFailure(asyncio.CancelledError):
    """A cancellation (its loop's end) cutting short the steps after a write
    of a delete that failed outside a transaction (see
    ``_DeletePlan._after_failed_write``): the delete failed, so it is not
    planned and sent again as one cut short is (its cascaded documents
    would get ``pre_delete`` twice). Its ``__cause__`` is the write's error."""


@dataclass
class RootFiles:
    """The files of the documents a queryset delete matched and their ids,
    read by its plan's own read of its matches (in its transaction: one
    read, what the transaction deletes), for the caller to delete once
    they are gone. Filled in place once the plan ran (each attempt's)."""

    files: list = field(default_factory=list)
    ids: list = field(default_factory=list)


def _rules(cls: type[Any]) -> list[tuple[type[Any], str, int]]:
    """The active rules of ``cls``: (referring class, field name, rule)."""
    return [
        (referrer, name, rule)
        for (referrer, name), rule in (cls._meta.get("delete_rules") or {}).items()
        if rule != DO_NOTHING and not referrer._meta.get("abstract")
    ]


def has_rules(cls: type[Any]) -> bool:
    """Whether a delete of ``cls``'s documents applies delete rules (a
    cascade of writes, in a transaction of its own unless told otherwise)."""
    return bool(_rules(cls))


def check_rules(cls: type[Any]) -> None:
    """Raise MongoEngine's InvalidQueryError for a rule of ``cls`` it cannot
    apply (a name that is no path, ``pull_all`` on a path) for a delete that
    matched nothing (a delete that sends no rule's query, or a document
    gone): its queryset delete builds every rule's query and update all the
    same, its DENY rules' first. (One matching something refuses them in its
    plan: a DENY rule that finds a referrer raises its OperationError first.)"""
    for referrer, name, rule in sorted(_rules(cls), key=lambda each: each[2] != DENY):
        _field_path(referrer, name)
        if rule == PULL:
            _pull(referrer, name, [])


async def runs_own_transaction(
    cls: type[Any], operation: Operation, atomic: bool = True
) -> bool:
    """Whether a delete of ``cls``'s documents (``operation`` resolved, its
    write concern the delete's) runs in a transaction of its own, which a
    cancellation aborts; else its writes are sent one by one outside one, or
    in the caller's transaction."""
    return (
        has_rules(cls)
        and _acknowledged(operation)
        and await _own_transaction(operation, atomic)
    )


async def _own_transaction(operation: Operation, atomic: bool) -> bool:
    """Whether a delete with rules to apply runs in a transaction of its own:
    ``atomic``, the operation's session in none, the deployment has them."""
    return (
        atomic
        and not _in_transaction(operation.session)
        and await _supports_transactions(operation.collection.database.client)
    )


def _reachable(cls: type[Any]) -> list[type[Any]]:
    """Every class a delete of ``cls`` may read or write, through its rules."""
    found: list[type[Any]] = []
    walked = {cls}  # whose rules are followed: a CASCADE referrer's, once
    pending = [cls]
    while pending:
        for referrer, _, rule in _rules(pending.pop()):
            # A CASCADE plans (and so reads) its documents under the classes
            # whose rules it applies, a subclass no rule names too.
            reached = _rule_classes(referrer) if rule == CASCADE else [referrer]
            for each in reached:
                if each not in found:
                    found.append(each)
                if rule == CASCADE and each not in walked:
                    walked.add(each)
                    pending.append(each)
    return found


def aliases_of_delete(cls: type[Any], alias: str) -> frozenset[str]:
    """The aliases a delete of ``cls``'s documents on ``alias`` may use: that
    one, its rules' classes', and the file fields' of all these (a bucket on
    a db_alias of its own): what its disconnect waits for (signal receivers
    aside). For ``finish_before_close``."""
    reached = _reachable(cls)
    classes = (cls, *reached)
    return frozenset(
        {alias, *(each._db_alias() for each in reached)}.union(
            *(file_aliases(each) for each in classes)
        )
    )


async def _supports_transactions(client: AsyncMongoClient) -> bool:
    """Whether the deployment has transactions: all but a standalone server.

    Decided from what the client knows of the topology, which on a replica set
    (``replicaSet=`` given, or discovered) or a sharded cluster is enough even
    with no primary known; when the client knows no server yet, a ``ping``
    waits for server selection first (bounded by serverSelectionTimeoutMS).
    """
    topology = client.topology_description
    undecided = (TOPOLOGY_TYPE.Unknown, TOPOLOGY_TYPE.Single)
    if topology.topology_type in undecided and not topology.has_known_servers:
        await client.admin.command("ping")
        topology = client.topology_description
    if topology.topology_type != TOPOLOGY_TYPE.Single:
        return True
    [server] = topology.server_descriptions().values()
    return server.server_type != SERVER_TYPE.Standalone


async def delete_matching(
    runs: list[Any],
    operation: Operation,
    atomic: bool = True,
    cascade_refs: set | None = None,
    followed: Callable[[int | None], None] | None = None,
    failed: list[Exception] | None = None,
    unreachable: Unreachable | None = None,
    root_files: RootFiles | None = None,
    aborts: bool = False,
    collated: Any = None,
) -> int | None:
    """Delete what ``runs`` match (querysets or ``Matching``s of one class,
    each a delete of its own: a queryset's runs of listed ids; none when
    it listed none, and nothing is sent), its ``operation`` resolved,
    applying the delete rules; the total count.

    With rules to apply, ``atomic`` and a deployment with transactions, the
    whole delete runs in one transaction (or joins the caller's). Documents
    whose id is in ``cascade_refs`` are left out of CASCADE deletes, as in
    MongoEngine's ``delete(cascade_refs=...)``. The caller cancelled while
    that transaction of its own commits, which goes on, once it committed the
    files of the cascaded documents are deleted in a task of their own, then
    ``followed(deleted)`` is called, told how many of the matches it deleted
    (to start the caller's own steps after the delete), as after a cancelled
    write that landed; so too when cancelled after it committed, while those
    files are deleted. Their delete failing once the documents are gone for
    good (in no transaction of the caller's), the error goes to ``failed`` if
    given, for the caller to raise after its own steps (its documents' files,
    ``post_delete``), which it must not skip. A write failing outside a
    transaction, the steps after it try nothing on a client ``unreachable``
    gave up (shared with the caller's own steps after that error), as a
    write's server selection timing out gives it up. Given
    ``root_files`` (a delete with rules in a transaction), the plan reads
    the matches' files with their ids, and fills it. ``aborts``: the
    transaction the operation's session is in is one this package started
    (a queryset's one-by-one delete's own), which any error of the delete
    aborts: a document's delete in it may go first, as in one of its own.
    ``collated``: the queryset when it has a ``collation()`` or a ``hint()``,
    which its rules apply under (see :meth:`_DeletePlan._as_iterated`): even
    with no runs (none listed without the collation), what it matches under
    it has its rules applied, as in MongoEngine.
    """
    if not runs and (
        collated is None
        or collated._collation is None  # (through a hint(), none listed either)
        or not _rules(collated._document)
    ):
        return 0 if _acknowledged(operation) else None  # (nothing would change)
    cls = runs[0]._document if runs else collated._document
    queries = [run._query for run in runs]
    unreachable = Unreachable() if unreachable is None else unreachable
    if not _rules(cls):
        deletes = [await _delete(operation, query, unreachable) for query in queries]
        return _total(deletes)
    acknowledged = _acknowledged(operation)
    joined = _in_transaction(operation.session)  # the caller's transaction
    files: list = []
    # Those of documents deleted in another client's transaction, per its
    # operation (see files_by_transaction).
    joined_files: list[tuple[Operation, list]] = []
    late: list[Exception] = []  # a cascaded post_delete receiver's error
    committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    counted: list[int | None] = [None]  # the last run's count

    async def delete(run: Operation) -> int | None:  # a fresh plan on each run
        plan = _DeletePlan(cls, run, cascade_refs, unreachable, collated)
        # A transaction of the delete's own, which any error aborts.
        own_transaction = _in_transaction(run.session) and not joined
        first = (
            (own_transaction or aborts)
            and root_files is None
            and plan.may_go_first(queries)
        )
        deleted = await plan.run(queries, first, root_files is not None)
        if root_files is not None:
            root_files.files[:], root_files.ids[:] = plan.root_files, plan.root_ids
        files[:], joined_files[:] = await plan.files_by_transaction(own_transaction)
        late[:] = [] if plan.error is None else [plan.error]
        counted[:] = [deleted]
        if own_transaction:
            _note_commit(run.session, committed)
        return deleted

    try:
        deleted = await _under_rules(cls, operation, atomic and acknowledged, delete)
    except asyncio.CancelledError:
        committed.add_done_callback(
            lambda _: _follow_commit(
                list(files), operation, _told(followed, counted[0]), joined_files
            )
        )
        raise
    # The files of the cascaded documents, once they are gone (committed).
    if not committed.done():  # (the caller's steps after it are its own)
        # (Which follow if cancelled.)
        await _joined_files_of_deleted(joined_files, files, operation, failed)
        await _files_of_deleted(delete_files_of_deleted, files, operation, failed)
        _raise_late(late, failed)
        return deleted if acknowledged else None
    for joined_operation, group in joined_files:  # (in no await: registered)
        _delete_once_committed(joined_operation, group)
    try:
        await _files_of_deleted(delete_files, files, operation, failed)
    except asyncio.CancelledError:
        _follow_commit(list(files), operation, _told(followed, deleted))
        raise
    return deleted if acknowledged else None


async def _joined_files_of_deleted(
    joined_files: list[tuple[Operation, list]],
    files: list,
    operation: Operation,
    failed: list[Exception] | None,
) -> None:
    """Delete each group of ``joined_files`` through the operation of the
    other client's transaction it was deleted in (an error aborts it).
    Cancelled meanwhile, the groups not done are deleted once that
    transaction commits, and ``files`` (the documents deleted for good) in a
    task of their own: else all of them stayed, orphaned."""
    for index, (joined_operation, group) in enumerate(joined_files):
        try:
            await _files_of_deleted(delete_files, group, joined_operation, failed)
        except asyncio.CancelledError:
            for later, rest in joined_files[index:]:  # (one gone is no error)
                _delete_once_committed(later, rest)
            if files:
                _follow_commit(list(files), operation, None)
            raise


def _delete_once_committed(operation: Operation, files: list) -> None:
    """Delete ``files`` (in no session) once the transaction of the
    ``operation``'s session commits; nothing if it aborts."""
    undos = journal(operation.session)
    assert undos is not None  # (another client's transaction, bound)
    delete_once_committed(files, undos)


def _told(
    followed: Callable[[int | None], None] | None, deleted: int | None
) -> Callable[[], None] | None:
    """``followed``, the caller's steps after the delete, told how many of
    its matches it deleted (its files spare those of the ones it left)."""
    return None if followed is None else functools.partial(followed, deleted)


def _total(counts: list[int | None]) -> int | None:
    """The sum of the ``counts`` of deletes, None when one is unknown
    (unacknowledged)."""
    known = [count for count in counts if count is not None]
    return sum(known) if len(known) == len(counts) else None


def _raise_late(late: list[Exception], failed: list[Exception] | None) -> None:
    """Raise the error of a cascaded document's ``post_delete`` receiver
    (``late``: outside a transaction, the cascade written and its files
    deleted) now, or put it first in ``failed`` when given, for the caller
    to raise after its own steps (its documents' files, ``post_delete``)."""
    if not late:
        return
    if failed is None:
        raise late[0]
    failed.insert(0, late[0])


async def _files_of_deleted(
    delete: Callable[[list, Operation], Awaitable[None]],
    files: list,
    operation: Operation,
    failed: list[Exception] | None,
) -> None:
    """``await delete(files, operation)``, the files of deleted documents; its
    error goes to ``failed`` (when given) unless in a transaction, which it
    aborts (the documents are kept then: nothing else follows)."""
    try:
        await delete(files, operation)
    except Exception as error:
        session = operation.session
        if failed is None or (session is not None and session.in_transaction):
            raise
        failed.append(error)


def _note_commit(session: AsyncClientSession | None, committed: asyncio.Future) -> None:
    """Set ``committed`` once the delete's own transaction (on ``session``)
    committed: also when its caller left (cancelled) while it committed."""
    undos = journal(session)
    assert undos is not None  # (the delete's own transaction, bound)

    async def step() -> None:
        if not committed.done():
            committed.set_result(None)

    on_commit(undos, step)


def _follow_commit(
    files: list,
    operation: Operation,
    followed: Callable[[], None] | None,
    joined_files: Iterable[tuple[Operation, list]] = (),
) -> None:
    """The delete's own transaction committed, its caller gone: delete the
    files of the cascaded documents in a task of their own (in no session:
    the caller's may be in use again), then start the caller's steps after
    the delete (``followed``), in that order, as a delete that returned;
    those of ``joined_files`` once their transaction commits."""
    for joined_operation, group in joined_files:
        _delete_once_committed(joined_operation, group)
    alone = replace(operation, session=None)
    follow_up(
        _files_then(files, alone, followed),
        "delete of the files of documents a cancelled delete deleted",
        finish=True,
        aliases={proxy.db_alias for proxy in files},
    )


async def _files_then(
    files: list, operation: Operation, followed: Callable[[], None] | None
) -> None:
    """Delete ``files`` (each even when cancelled meanwhile), then call
    ``followed``, also when one failed: the documents are gone."""
    try:
        await delete_files(files, operation, surely=True)
    finally:
        if followed is not None:
            followed()


def _acknowledged(operation: Operation) -> bool:
    """Whether the delete's writes are acknowledged (MongoEngine's write concern
    over the collection's). An unacknowledged delete (w=0) runs without a
    transaction of its own, as MongoEngine's does: PyMongo would drop w=0 in
    one, and refuses to start one whose write concern is unacknowledged."""
    with set_write_concern(operation.collection, operation.write_concern) as target:
        return bool(target.write_concern.acknowledged)


async def delete_each(queryset: Any, operation: Operation, atomic: bool = True) -> int:
    """Delete the matches one by one with ``Document.async_delete`` (as
    MongoEngine does with skip/limit or delete receivers); returns the count.
    Each where the queryset read it (``using()``, a switch of its class: see
    :func:`_move_where_read`; MongoEngine's deletes it where its class is),
    listed on the primary.

    With rules to apply, ``atomic`` and a deployment with transactions, all of
    it runs in one transaction (or joins the caller's). In one of its own,
    each document's ``post_delete`` is sent once it committed: once, though
    a transient error ran it again, and never for a delete rolled back.
    """
    cls = queryset._document
    # (Asked now: an explicit session in none is the one its own starts on.)
    callers = _in_transaction(operation.session)
    read_from = queryset._alias(), operation.collection.name
    # Listed where the deletes go, as the plan's reads are.
    listing = queryset.read_preference(ReadPreference.PRIMARY)

    async def delete_chunk(chunk: list[Any], run: Operation) -> None:
        own = _in_transaction(run.session) and not callers
        for document in chunk:
            await _move_where_read(document, *read_from)  # (in run's session)
            await document.async_delete(
                transaction=atomic,
                session=run.session,
                _post_delete_on_commit=own,
                **run.write_concern,
            )

    async def delete_all(run: Operation) -> int:
        # The documented per-document calls, kept on purpose: MongoEngine sends
        # each document's delete signals through its own delete(). Its loop
        # builds the documents a chunk at a time (its result cache) before it
        # deletes them: init and delete signals come in the same order here.
        count = 0
        chunk: list[Any] = []
        async for document in listing.async_iter(session=run.session):
            chunk.append(document)
            if len(chunk) == ITER_CHUNK_SIZE:
                await delete_chunk(chunk, run)
                count, chunk = count + len(chunk), []
        await delete_chunk(chunk, run)
        return count + len(chunk)

    if not _rules(cls):
        return await delete_all(operation)
    atomic = atomic and _acknowledged(operation)
    return await _under_rules(cls, operation, atomic, delete_all)


async def _move_where_read(document: Any, alias: str, name: str) -> None:
    """Switch ``document`` to the ``alias`` and collection ``name`` it was read
    from when its class is elsewhere: a ``using()`` queryset's, or one of a
    class switched by ``async_switch_db``/``async_switch_collection`` (which
    do not switch its subclasses) reading a subclass's document."""
    cls = type(document)
    if cls._get_collection_name() != name:
        async with async_switch_collection(cls, name):
            document.switch_db(alias)
    elif cls._db_alias() != alias:
        document.switch_db(alias)


def _in_transaction(session: AsyncClientSession | None) -> bool:
    return session is not None and session.in_transaction


async def _under_rules(
    cls: type[Any], operation: Operation, atomic: bool, delete: Callable
) -> Any:
    """``await delete(operation)`` for ``cls``, whose delete rules apply: in a
    transaction of its own when ``atomic``, the operation's session is in none
    and the deployment has them. The transaction is started on the operation's
    session when it has one (an explicit ``session=``, which wins over a
    transaction bound to the task), else on a new session.

    Prepares every collection the delete may touch first: a collection's first
    use creates it and its indexes, which inside the transaction would make the
    transaction's reads fail (SnapshotUnavailable).
    """
    for referrer in _reachable(cls):
        await operation.on(referrer)
    client = operation.collection.database.client
    if await _own_transaction(operation, atomic):
        if operation.session is not None:  # an explicit session without one
            options = _transaction_options(operation, operation.session)
            return await run_on(
                operation.session, lambda: delete(operation), options, alone=True
            )

        async def in_transaction() -> Any:
            return await delete(replace(operation, session=session_for(client)))

        options = _transaction_options(operation)
        return await run_transaction(client, in_transaction, None, options, alone=True)
    return await delete(operation)


# Read concern levels a transaction refuses, and the level it reads at instead.
_TRANSACTION_READ_CONCERN = {"linearizable": "majority", "available": "local"}


def _transaction_options(
    operation: Operation, session: AsyncClientSession | None = None
) -> dict[str, Any]:
    """The options of a delete's own transaction (on ``session`` when it is an
    explicit one): the write concern given to the delete, which inside a
    transaction only its commit can carry; reads on the primary, the only ones
    a transaction allows, whatever the connection's read preference; and, when
    the connection's read concern is a level transactions refuse, the nearest
    one they allow. Anything else is the session's or the client's default."""
    options: dict[str, Any] = {"read_preference": ReadPreference.PRIMARY}
    if operation.write_concern:
        with set_write_concern(operation.collection, operation.write_concern) as target:
            options["write_concern"] = target.write_concern
    defaults = session.options.default_transaction_options if session else None
    if defaults is None or defaults.read_concern is None:
        level = _TRANSACTION_READ_CONCERN.get(
            operation.collection.read_concern.level or ""
        )
        if level:
            options["read_concern"] = ReadConcern(level)
    return options


async def _delete(
    operation: Operation, query: dict, unreachable: Unreachable
) -> int | None:
    """Delete what ``query`` matches in the operation's collection; its
    server selection timing out, ``unreachable`` gives up its client."""
    with (
        unreachable.noting(operation.collection.database.client),
        set_write_concern(operation.collection, operation.write_concern) as target,
    ):
        result = await target.delete_many(query, session=operation.session)
    return result.deleted_count if result.acknowledged else None


class _Spared(NamedTuple):
    """The pks a delete's CASCADE rules spare, as a referring class stores
    them: those ids, their :func:`_id_key`, and whether they fit in one run
    beside a run of references (some 700,000 ids take a while to measure),
    else a rule's documents are found by id, the spared ones left out as they
    are read, as planned ids are."""

    ids: list
    keys: set
    by_query: bool


class _DeletePlan:
    """The documents a delete removes: per class, the ids in the order they were
    found; for a class whose ids nothing needs, the filters that match them."""

    def __init__(
        self,
        root: type[Any],
        operation: Operation,
        spared: set | None = None,
        unreachable: Unreachable | None = None,
        collated: Any = None,
    ):
        self.root = root
        self.collated = collated  # the queryset, when it has a collation()/hint()
        self.operation = operation  # on the root's collection (switch_db, using())
        self.spared = list(spared or ())  # pks no CASCADE rule deletes
        # Those as each referring class stores them (see _spared; None: as
        # given).
        self.spared_as: dict[type[Any] | None, _Spared] = {}
        self.ids: dict[type[Any], list] = {}
        # The position (see self.kept_from) each class of self.ids was first
        # planned at in MongoEngine's depth-first order: its DENY rules' turn.
        self.first_at: dict[type[Any], tuple[int, ...]] = {root: ()}
        # The ids planned per collection: a class hierarchy shares one, where a
        # document may be reached through its own class or a parent class
        # (each by its _id_key, the id itself as value).
        self.planned: dict[str | None, dict] = {}
        self.root_ids: list = []
        # How many of them the queryset's hint() left out (see _as_iterated).
        self.unlisted_roots = 0
        self.files: list = []  # of the cascaded documents, to delete after
        self.file_classes: dict[int, type[Any]] = {}  # (by id()) their class
        # No cascaded document is sent delete signals (whose receivers could
        # change its files): those found by id have their files read with
        # their ids, in one read (the documents read kept here, per class
        # read, until _find_files).
        receivers = map(signals.has_delete_receivers, _reachable(root))
        self.files_with_ids = not any(receivers)
        self.read_with_files: list[tuple[type[Any], list[dict]]] = []
        # The stored cascaded documents a class with delete receivers was
        # planned under (read whole with their ids), with their class, in the
        # order found, until _load_for_signals builds them; and the
        # (collection, _id_key) of those built, whose files their documents
        # give (_find_files).
        self.read_for_signals: list[tuple[type[Any], dict]] = []
        self.loaded_keys: set[tuple[str, Any]] = set()
        # The (collection, _id_key) of cascaded documents planned, their own
        # rules applied, but not deleted (see _keep, _resolve_kept).
        self.kept: set[tuple[str, Any]] = set()
        # Per (collection, _id_key) of a document listed under a collation
        # alone (kept by its read's delete): the positions (rule indices from
        # the root, MongoEngine's depth-first order) from which cascade_refs
        # hold it (none: never); and the positions of the reads matching it
        # without the collation (each deletes it, unless held there); each
        # with the cascade_refs it is in (see self.scopes).
        self.kept_from: dict[tuple[str, Any], set[tuple[tuple, tuple]]] = {}
        self.reached: dict[tuple[str, Any], set[tuple[tuple, tuple]]] = {}
        # The positions of the reads of a class with delete receivers:
        # MongoEngine deletes each of those with its own delete(), which
        # starts cascade_refs afresh below it.
        self.one_by_one: set[tuple[int, ...]] = set()
        # Per (collection, _id_key) of a document read, the cascade_refs of
        # the queries that read it: () the root's, else (position, _id_key)
        # of the document deleted one by one they start at (none: the root's).
        self.scopes: dict[tuple[str, Any], frozenset[tuple]] = {}
        # Whether a read may list some under a collation alone (else no
        # read's matches are noted in self.reached).
        self.may_keep = bool(collated is not None and collated._collation) or any(
            _matching(each).get("collation") for each in _reachable(root)
        )
        # The roots kept, planned unread: their files (signals) are taken
        # from the first cascade reading them (left out if still kept).
        self.untaken: set[tuple[str, Any]] = set()
        # The documents a manager's hint() left out, deleted by a filter (per
        # read: their class, ids); the position of the read of each (by
        # collection and _id_key), until a read before its delete lists it.
        self.unlisted: list[tuple[type[Any], list]] = []
        self.unlisted_at: dict[tuple[str, Any], tuple[int, ...]] = {}
        self.root_files: list = []  # of the roots, when the plan lists them
        self.deleted: int | None = None  # the roots' count
        # A post_delete receiver's error once all was written (no transaction).
        self.error: Exception | None = None
        # The cascaded documents whose signals are sent (loaded before any write).
        self.loaded: list[Any] = []
        self.filters: list[tuple[type[Any], dict]] = []
        # Those filters, restricted to the documents whose files were found
        # (in runs of ids), with those ids (None: no file fields).
        self.by_filters: list[tuple[type[Any], list[dict], list | None]] = []
        self.deny_referrers = _deny_referrers(root)
        # The clients given up after a failed write (see _after_failed_write).
        self.unreachable = Unreachable() if unreachable is None else unreachable
        # Whether a write of the plan may have been sent (see _sending).
        self.sent = False

    def _needs_ids(self, cls: type[Any]) -> bool:
        """Whether the delete must know which ``cls`` documents it removes: for
        their own rules or delete receivers (of ``cls`` or a subclass: the
        documents are planned as the rule reaching them first says, as
        MongoEngine applies the rules in turn), or as referrers a DENY check
        leaves out. Else one filter deletes them."""
        return cls in self.deny_referrers or any(
            _rules(each) or signals.has_delete_receivers(each)
            for each in with_subclasses(cls)
        )

    def _add(self, cls: type[Any], ids: list) -> list:
        """Plan the ``ids`` of ``cls`` not planned yet (as ``cls`` or as another
        class of its collection); returns those."""
        known = self._planned(cls)
        new = []
        for object_id in ids:
            key = _id_key(object_id)
            if key not in known:
                known[key] = object_id
                new.append(object_id)
        self.ids.setdefault(cls, []).extend(new)
        return new

    def _planned(self, cls: type[Any]) -> dict:
        """The ids planned in the collection of ``cls``, whatever their class
        (by their :func:`_id_key`)."""
        return self.planned.setdefault(cls._get_collection_name(), {})

    def _deleted(self, cls: type[Any]) -> dict:
        """The ids planned in the collection of ``cls`` (by their
        :func:`_id_key`) but those the delete keeps (``self.kept``)."""
        name = cls._get_collection_name()
        planned = self._planned(cls)
        if not self.kept:
            return planned
        return {key: pk for key, pk in planned.items() if (name, key) not in self.kept}

    def may_go_first(self, queries: list[dict]) -> bool:
        """Whether the root, one document by ``_id`` (one query), may be
        deleted before its cascade is read, when an abort would undo it: no
        DENY to check first, no receiver of a cascaded document to find it
        gone, no ``collation()`` to read its matches under (a string id may
        match others under it: see :meth:`_as_iterated`)."""
        return (
            len(queries) == 1
            and self.collated is None
            and list(queries[0]) == ["_id"]
            and not isinstance(queries[0]["_id"], dict)
            and not self.deny_referrers
            and not any(map(signals.has_delete_receivers, _reachable(self.root)))
        )

    async def run(
        self, queries: list[dict], root_first: bool = False, files: bool = False
    ) -> int | None:
        """Delete what ``queries`` match (runs of one delete) and apply the
        rules; ``root_first`` (see :meth:`may_go_first`) saves the round trip
        reading the root's id; ``files``: the read of the roots lists their
        files too (``self.root_files``)."""
        if root_first:
            [query] = queries
            self.deleted = await self._send_delete(self.operation, query)
            if self.deleted == 0:  # gone already: nothing cascades from it
                check_rules(self.root)
                return 0
            self.root_ids = [query["_id"]]
            listed = None
        else:
            listed = await self._listed()  # (first: see _as_iterated)
            self.root_ids = [
                object_id
                for query in queries
                for object_id in await self._read_root(query, files)
            ]
            if not self.root_ids:
                check_rules(self.root)
        iterated = await self._as_iterated(listed)
        try:
            await self._collect_cascade(iterated)
        except InvalidQueryError:  # a CASCADE rule refused
            await self._check_deny()  # (MongoEngine checks DENY rules first)
            raise
        await self._check_deny()
        updates = self._updates()  # before any write: a rule may be refused
        self.loaded = loaded = self._load_for_signals()
        signal = False  # (a step not run again: its receivers had it)
        steps: list[tuple[Callable[[], Awaitable[Any]], bool]] = [
            *((functools.partial(_pre_delete, each), signal) for each in loaded),
            (self._find_files, True),
            # First: an update may change what they match.
            (self._delete_by_filters, True),
            (functools.partial(self._apply_updates, updates), True),
            (self._delete_cascaded, True),
        ]
        if not root_first:
            steps.append((self._delete_roots, True))
        written = len(steps)  # (the steps after: the post_delete signals)
        steps += [(functools.partial(_post_delete, each), signal) for each in loaded]
        # (The first write: after the pre_delete signals and the files' read.)
        await self._apply(steps, written, len(loaded) + 1)
        return self.deleted

    async def _listed(self) -> list | None:
        """With a ``collation()`` or a ``hint()``, the ids the queryset's
        iteration lists (see :meth:`_as_iterated`), else None."""
        if self.collated is None:
            return None
        queryset = self.collated
        hint = None if queryset._hint == -1 else queryset._hint
        return await _ids(
            self.operation, queryset._query, collation=queryset._collation, hint=hint
        )

    async def _as_iterated(self, found: list | None) -> list:
        """The root ids the rules apply to: with a ``collation()`` or a
        ``hint()``, what the queryset's iteration lists (``found``), as
        MongoEngine's rules query it (``field__in=queryset``); its
        ``delete_many``, sent without them, deletes ``self.root_ids``: those
        matched under the collation alone are kept (``self.kept``), those the
        hint leaves out (a sparse index not holding them) deleted without
        their rules applied. Outside a transaction that listing is read
        before the roots' ids, as MongoEngine's rules read before its delete:
        a document matching in between is deleted without its rules applied,
        never kept with them applied; one matching after the ids were read
        (a queryset with file fields lists them first) is left alone."""
        if found is None:
            return self.root_ids
        listed = set(map(_id_key, found))
        roots = [pk for pk in self.root_ids if _id_key(pk) in listed]
        # (Not planned: a rule reaching one applies its rules, as MongoEngine's
        # cascade_refs do not hold it; that rule's delete then removes it.)
        self.unlisted_roots = len(self.root_ids) - len(roots)
        deleted = set(map(_id_key, self.root_ids))
        kept = [pk for pk in found if _id_key(pk) not in deleted]
        if kept and not _in_transaction(self.operation.session):
            late = set(map(_id_key, await self._matching_now(kept)))
            kept = [pk for pk in kept if _id_key(pk) not in late]
        self._keep(self.root, dict.fromkeys(map(_id_key, kept), _ROOT_SCOPES), ())
        name = self.root._get_collection_name()
        self.untaken = {(name, _id_key(pk)) for pk in kept}
        return [*roots, *kept]

    async def _matching_now(self, kept: list) -> list:
        """Those of the ``kept`` root ids the queryset matches without its
        collation now: they came to match after its ids were read (outside a
        transaction), which leaves them alone (a read a run)."""
        assert self.collated is not None  # (kept: listed under it)
        query = self.collated._query
        return [
            pk
            for run in self._runs(kept)
            for pk in await _ids(
                self.operation, {"$and": [query, {"_id": {"$in": run}}]}
            )
        ]

    async def _read_root(self, query: dict, files: bool) -> list:
        """The ids of the roots ``query`` matches; with their ``files`` (kept
        in ``self.root_files``) when asked, in the same read."""
        if not files:
            return await _ids(self.operation, query)
        matching = Matching(self.root, query)
        found, ids = await stored_files_and_ids(matching, self.operation)
        self.root_files += found
        return await _ids(self.operation, query) if ids is None else ids

    async def _apply(
        self,
        steps: list[tuple[Callable[[], Awaitable[Any]], bool]],
        written: int,
        writing: int,
    ) -> None:
        """Run the ``steps`` in turn, each with whether it is run again when
        cut short. Outside a transaction, cut short by a cancellation (its
        loop's end cancelling the task a cancelled delete goes on in), the
        step is run again (a write, which may have been applied or not; not
        a signal) and those after it, and the cascaded documents' files
        deleted, before the cancellation is raised: the writes before it
        were applied, and a delete planned again would not find the
        documents they deleted (their files, their ``post_delete``). A write
        (a step from ``writing`` on) failing there, the cascaded documents
        gone have their files deleted and their ``post_delete`` sent before
        the error is raised (:meth:`_after_failed_write`). Steps from
        ``written`` on are the ``post_delete`` signals (see :meth:`_step`)."""
        for number, (step, again) in enumerate(steps):
            try:
                if not await self._step(step, number >= written):
                    return
            except asyncio.CancelledError:
                if _in_transaction(self.operation.session):
                    raise  # (aborted: nothing of it stays)
                start = number if again else number + 1
                await self._go_on(steps, start, written, writing)
                alone = replace(self.operation, session=None)
                await delete_files(self.files, alone, surely=True)
                raise
            except Exception as error:
                if self._may_have_written(number >= writing):
                    await self._after_write_error(error)
                raise

    async def _go_on(
        self,
        steps: list[tuple[Callable[[], Awaitable[Any]], bool]],
        start: int,
        written: int,
        writing: int,
    ) -> None:
        """Run the ``steps`` from ``start`` on, once cut short by a cancellation
        outside a transaction (see :meth:`_apply`). A write sent again failing
        (a step from ``writing`` on), the cascaded documents the writes before
        it deleted have their files deleted and their ``post_delete`` sent
        before its error is raised, as when no cancellation came first."""
        for later, (rest, _) in enumerate(steps[start:], start):
            try:
                if not await self._step(rest, later >= written):
                    return  # (its error dropped: the loop is ending)
            except Exception as error:
                if self._may_have_written(later >= writing):
                    await self._after_write_error(error)
                raise

    def _may_have_written(self, writing: bool) -> bool:
        """Whether a step failing outside a transaction (a ``writing`` one,
        from the first write on) may leave writes of the plan applied, for
        :meth:`_after_failed_write` to clean up after. With none sent (the
        first one's server selection timed out) nothing changed, and its
        reads would only wait for a server no write reached."""
        return writing and self.sent and not _in_transaction(self.operation.session)

    async def _send_delete(self, operation: Operation, query: dict) -> int | None:
        """:func:`_delete` of a write of the plan (see :meth:`_sending`)."""
        with self._sending():
            return await _delete(operation, query, self.unreachable)

    @contextlib.contextmanager
    def _sending(self) -> Iterator[None]:
        """Around a write of the plan: notes that it may have been sent
        (``self.sent``), unless it raised a server selection time-out, which
        PyMongo raises for a write only when it sent nothing (a retry's
        selection timing out raises the first attempt's error instead)."""
        try:
            yield
        except ServerSelectionTimeoutError:
            raise
        except BaseException:
            self.sent = True
            raise
        self.sent = True

    async def _after_write_error(self, error: Exception) -> None:
        """:meth:`_after_failed_write`, after ``error``; cut short by a
        cancellation (its loop's end), it is run again, as the steps a
        cancellation cuts short are (no ``post_delete`` sent twice), then
        :class:`CancelledAfterFailure` is raised."""
        try:
            await run_again_if_cut_short(self._after_failed_write)
        except CancelledAfterFailure:
            raise
        except asyncio.CancelledError as cancelled:
            raise CancelledAfterFailure(*cancelled.args) from error

    async def _after_failed_write(self, signalled: set[int]) -> None:
        """A write failed outside a transaction, those before it applied: the
        cascaded documents they deleted would keep their files, held by no
        document, and never send their ``post_delete`` (MongoEngine's walk,
        one document at a time, sends those of the documents it deleted).
        Which are gone is read on the primary, where the writes went (a query
        per class and run of ids); that read failing, no ``post_delete`` is
        sent (one may still be there); none to a document in ``signalled``
        (the ``id()`` of those sent one, which it adds to). A server selection
        timing out, nothing more is tried on its client (``self.unreachable``):
        the write's error comes without more waits. The documents of a class
        on a client with a transaction bound (the caller's, which its writes
        joined) are read in it (see :meth:`_ids_there`)."""
        if self.files:
            await self._files_of_gone()
        ids: dict[type[Any], list] = {}
        for each in self.loaded:
            ids.setdefault(type(each), []).append(_stored_pk(each))
        there: set = set()  # (class, id as BSON) of the loaded documents there
        codecs: dict[type[Any], CodecOptions] = {}
        try:
            for cls, pks in ids.items():
                operation = await self.operation.on(cls)
                codecs[cls] = codec = operation.collection.codec_options
                found = await self._ids_there(operation, pks)
                there.update((cls, _as_bson(pk, codec)) for pk in found)
        except Exception:
            return  # (the write's error is raised)
        for document in self.loaded:
            cls = type(document)
            key = (cls, _as_bson(_stored_pk(document), codecs[cls]))
            if key in there or id(document) in signalled:
                continue
            signalled.add(id(document))
            if not await self._step(functools.partial(_post_delete, document), True):
                return  # (a receiver raised: the write's error is raised)

    async def _ids_there(self, operation: Operation, pks: list) -> list:
        """Which of ``pks`` are still there (a query per run of ids), for
        :meth:`_after_failed_write`. In a transaction (another client's, which
        the plan's writes joined) they are read in it, where its deletes are
        gone (its commit keeps them so); that read failing (the server
        aborted it: a write conflict), all count as there, as its abort
        keeps them, and the other classes' documents are still read."""
        found: list = []
        try:
            for run in self._runs(pks):
                found += await self.unreachable.ids_there(
                    operation, {"_id": {"$in": run}}, len(run)
                )
        except Exception:
            if not _in_transaction(operation.session):
                raise
            return list(pks)
        return found

    async def _files_of_gone(self) -> None:
        """After a write step failed outside a transaction (the writes before
        it applied), delete the files of the cascaded documents gone, read as
        those of the ones still there are (which keep theirs), as the caller
        would have. Its own error is dropped for the step's: the files it
        could not delete (or check) are left, orphaned, never a held one lost.
        Those of a class on a client with a transaction bound are read in it
        (their delete in it too), or outside it once it aborted (see
        :meth:`_ids_there`): its documents are there, and keep them. Each
        file is deleted alone: one whose delete fails in that transaction
        (aborted) leaves the others' deletes to go on."""
        listed_cascade = [
            *self._cascaded(),
            *((cls, ids) for cls, _, ids in self.by_filters if ids is not None),
        ]
        files = self.files
        try:
            for cls, ids in listed_cascade:
                operation = await self.operation.on(cls)
                files = await self._not_held(files, operation, Listed(cls, ids, 0))
            rest, joined = await self.files_by_transaction(files=files)
        except Exception:
            return  # (not checked: kept)
        alone = [(self.operation, each) for each in rest]
        in_joined = [(in_it, each) for in_it, group in joined for each in group]
        for operation, each in [*alone, *in_joined]:
            with contextlib.suppress(Exception):
                await delete_files([each], operation, unreachable=self.unreachable)

    async def _not_held(self, files: list, operation: Operation, left: Listed) -> list:
        """``files`` but those the documents ``left`` lists still hold, read
        after a failed write (:func:`not_held`); in the transaction the
        operation's session is in (another client's) while it is usable,
        else outside it (see :meth:`_ids_there`)."""
        try:
            return await not_held(files, operation, left, self.unreachable, True)
        except Exception:
            if not _in_transaction(operation.session):
                raise
        alone = replace(operation, session=None)  # (aborted: they are there)
        return await not_held(files, alone, left, self.unreachable, True)

    async def _step(self, step: Callable[[], Awaitable[Any]], written: bool) -> bool:
        """``await step()``; whether the steps go on. One run once all was
        ``written`` (a ``post_delete``) that raises outside a transaction ends
        them: its error is kept in ``self.error``, for the caller to raise
        once the files of the documents, gone, are deleted."""
        try:
            await step()
        except Exception as error:
            if not written or _in_transaction(self.operation.session):
                raise
            self.error = error
            return False
        return True

    def _runs(self, values: list) -> list[list]:
        """``values`` (ids, stored references) in runs, each one command's;
        none for no values: a query of ``$in: []`` matches nothing (a delete
        matching nothing, a class none of whose documents were new)."""
        if not values:
            return []
        return id_runs(values, self.operation.collection.codec_options)

    def _referring(
        self, referrer: type[Any], name: str, cls: type[Any], ids: list
    ) -> list[list]:
        """How ``referrer``'s ``name`` stores references to ``ids`` of
        ``cls``, in runs (for :func:`_referring` and :func:`_pull`)."""
        return self._runs(_stored_values(_reference_field(referrer, name), cls, ids))

    async def _delete_roots(self) -> None:
        """Delete the root documents, by the ids planned (a delete a run)."""
        self.deleted = _total(
            [
                await self._send_delete(self.operation, {"_id": {"$in": run}})
                for run in self._runs(self.root_ids)
            ]
        )

    async def _collect_cascade(self, root_ids: list) -> None:
        """Plan the CASCADE closure of ``root_ids``, level by level; each
        class's ids with their position (see ``self.kept_from``): the rule
        indices from the root that reached them first. The deletes by filter
        are built once all is read: a kept document found later may come
        first in MongoEngine's depth-first order, which then spares it."""
        frontier: list[tuple[type[Any], list, tuple[int, ...]]] = [
            (self.root, self._add(self.root, root_ids), ())
        ]
        by_filter: list[tuple[type[Any], str, type[Any], list, tuple]] = []
        while frontier:
            next_frontier = []
            for cls, ids, path in frontier:
                for index, (referrer, name, rule) in enumerate(_rules(cls)):
                    if rule != CASCADE:
                        continue
                    runs = self._referring(referrer, name, cls, ids)
                    spared = self._spared(referrer)
                    if not await self._through_hint(referrer, name, runs, spared):
                        continue
                    position = (*path, index)
                    below = self._scopes_below(referrer, name, cls, ids, path)
                    if not self._needs_ids(referrer) and spared.by_query:
                        groups = self._grouped(referrer, name, cls, ids, below)
                        by_filter.append((referrer, name, cls, groups, position))
                        continue
                    found = await self._cascade_by_ids(
                        referrer, name, runs, position, below
                    )
                    for each, new in found:
                        first = self.first_at.get(each, position)
                        self.first_at[each] = min(first, position)
                        next_frontier.append((each, new, position))
            frontier = next_frontier
        self._filter_unlisted()
        for referrer, name, cls, groups, position in by_filter:
            self._filter_by_rule(referrer, name, cls, groups, position)

    def _filter_by_rule(
        self,
        referrer: type[Any],
        name: str,
        cls: type[Any],
        groups: list[tuple[frozenset, list]],
        position: tuple[int, ...],
    ) -> None:
        """Plan the filters deleting the ``referrer`` documents whose ``name``
        refers to the ``cls`` ids of ``groups`` (see :meth:`_grouped`), the
        kept ones held at ``position`` left out: the groups leaving out the
        same ones share their filters (a run of ids each, not one a group)."""
        spared = self._spared(referrer).ids
        planned = self._planned(referrer)
        held = self._held_by_scope(referrer, position)
        by_exclude: dict[tuple, tuple[list, list]] = {}
        for scopes, group in groups:
            kept = [planned[key] for key in _held_in_all(held, scopes)]
            exclude = [*spared, *kept]
            key = tuple(map(_id_key, exclude))
            by_exclude.setdefault(key, (exclude, []))[1].extend(group)
        self.filters += [
            (referrer, _referring(referrer, name, run, exclude))
            for exclude, ids in by_exclude.values()
            for run in self._referring(referrer, name, cls, ids)
        ]

    def _held_by_scope(
        self, referrer: type[Any], position: tuple[int, ...]
    ) -> dict[Any, dict]:
        """The kept documents of the ``referrer``'s collection that MongoEngine's
        ``cascade_refs`` hold at ``position``, which its query there leaves out
        (``pk__nin``): their :func:`_id_key` (as a dict's keys, in the order
        kept), per cascade_refs holding them (see ``self.scopes``; ``None``:
        all of the collection's, for a query in none). One pass a rule, not
        one per group: a group per document deleted one by one above."""
        name = referrer._get_collection_name()
        held: dict[Any, dict] = {}
        for (collection, key), starts in self.kept_from.items():
            if collection != name:
                continue
            held.setdefault(None, {})[key] = None
            for start, scope in starts:
                if start <= position:
                    held.setdefault(scope, {})[key] = None
        return held

    def _scopes_below(
        self, referrer: type[Any], name: str, cls: type[Any], ids: list, path: tuple
    ) -> dict[Any, frozenset]:
        """The cascade_refs (see ``self.scopes``) the query of the rule
        (``referrer``, ``name``) runs in for each of the ``ids`` of ``cls``
        read at ``path``, by the :func:`_id_key` of the reference as stored:
        its own when deleted one by one, else those it was read in. Only for
        a delete that may keep documents (else none is asked)."""
        if not self.may_keep:
            return {}
        reference_field = _reference_field(referrer, name)
        collection = cls._get_collection_name()
        below = {}
        for pk in ids:
            key = _id_key(pk)
            if path in self.one_by_one:
                scopes = frozenset({(path, key)})
            else:
                scopes = self.scopes.get((collection, key), _ROOT_SCOPES)
            for value in _stored_values(reference_field, cls, [pk]):
                below[_id_key(value)] = scopes
        return below

    async def _through_hint(
        self, referrer: type[Any], name: str, runs: list[list], spared: _Spared
    ) -> bool:
        """Whether a CASCADE to ``referrer`` documents (no delete receivers,
        its manager with a ``hint()``) goes on: MongoEngine deletes them only
        when its manager's ``count()`` finds one through the hint (a sparse
        index may hold none), then all its filter matches. Read until one is
        found, a run at a time: one more round trip, only with a hint."""
        counting = _counting(referrer)
        if counting["hint"] is None or signals.has_delete_receivers(referrer):
            return True  # (receivers: their read goes through it, see _iteration)
        referring = await self.operation.on(referrer)
        exclude = spared.ids if spared.by_query else None
        for run in runs:
            query = _referring(referrer, name, run, exclude)
            found = await on_primary(referring.collection).find_one(
                query, {"_id": 1}, session=referring.session, **counting
            )
            if found is not None:
                return True
        return False

    def _grouped(
        self,
        referrer: type[Any],
        name: str,
        cls: type[Any],
        ids: list,
        below: dict[Any, frozenset],
    ) -> list[tuple[frozenset, list]]:
        """The ``ids`` of ``cls`` grouped by the cascade_refs the rule's query
        runs in for them (``below``, see :meth:`_scopes_below`): one group,
        the root's, when the delete keeps none; a query (a filter) each."""
        if not below:
            return [(_ROOT_SCOPES, ids)]
        reference_field = _reference_field(referrer, name)
        groups: dict[frozenset, list] = {}
        for pk in ids:
            [stored, *_] = _stored_values(reference_field, cls, [pk])
            groups.setdefault(below[_id_key(stored)], []).append(pk)
        return list(groups.items())

    async def _cascade_by_ids(
        self,
        referrer: type[Any],
        name: str,
        runs: list[list],
        position: tuple,
        below: dict[Any, frozenset],
    ) -> list[tuple[type[Any], list]]:
        """Plan the ``referrer`` documents whose ``name`` holds a reference of
        ``runs`` (a query each), read by the rule at ``position`` (see
        ``self.kept_from``), in the cascade_refs ``below`` gives per
        reference (see :meth:`_scopes_below`); returns the ids new to the
        plan, per class."""
        referring = await self.operation.on(referrer)
        classes = _rule_classes(referrer)
        # Whole documents, which their signals are sent (see _load_for_signals).
        whole = signals.has_delete_receivers(referrer)
        if whole:
            self.one_by_one.add(position)
        # (MongoEngine iterates them through the manager: its sort, collation,
        # hint)
        iteration = _iteration(referrer) if whole else _matching(referrer)
        projection = file_projection(referrer) if self.files_with_ids else {}
        found: dict[type[Any], list] = {}
        spared = self._spared(referrer)
        collection = referrer._get_collection_name()
        for run in runs:
            planned = [
                pk
                for key, pk in self._deleted(referrer).items()
                if not (self.unlisted_at and self._revivable(collection, key, position))
            ]
            exclude = (  # (with them, the planned ones fit no more when they don't)
                self._sendable([*planned, *spared.ids]) if spared.by_query else None
            )
            query = _referring(referrer, name, run, exclude, whole)
            fields = None if whole else projection
            if fields is not None and len(set(below.values())) > 1:
                fields = {**fields, _db_field(referrer, name): 1}  # (see _scoped)
            read = await _found_by_class(referring, query, classes, fields, iteration)
            scoped = self._scoped(referrer, name, read, below)
            self._revive(referrer, read, position)
            fresh = self._plan_found(found, read, spared.keys)
            # (Their _id_key, matched without collation nor hint: deleted.)
            matched = {_id_key(raw["_id"]) for _, raw in read}
            if iteration and not whole:
                matched_ids = await _ids(referring, query)
                listed, matched = matched, set(map(_id_key, matched_ids))
                kept = listed - matched - spared.keys
                scopes = {key: scoped.get(key, _ROOT_SCOPES) for key in kept}
                self._keep(referrer, scopes, position)
                self._unlisted(referrer, matched_ids, read, spared.keys, position)
            everywhere = frozenset().union(*below.values())  # (a hint left out)
            reach = {key: scoped.get(key, everywhere) for key in matched}
            self._reach(referrer, reach, position)
            # (Their files, the kept ones' left out once all is planned.)
            taken = [
                (each, raw) for each, raw in read if self._take(collection, raw, fresh)
            ]
            if whole:  # (in the order found, whatever their class)
                self.read_for_signals += [
                    (each, raw)
                    for each, raw in taken
                    if signals.has_delete_receivers(each)
                ]
            if projection:  # (the files of the documents new to the plan)
                self.read_with_files.append((referrer, [raw for _, raw in taken]))
        return [(each, new) for each, new in found.items() if new]

    def _unlisted(
        self,
        referrer: type[Any],
        matched: list,
        read: list,
        spared: set,
        position: tuple[int, ...],
    ) -> None:
        """Plan the ``matched`` ``referrer`` ids (a rule's filter matches them)
        its manager's ``hint()`` left out of the ``read`` at ``position``
        (a sparse index not holding them), but the ``spared`` and planned
        ones, as deleted by a filter: MongoEngine's ``delete_many`` deletes
        them, but its class's rules apply only to what its iteration, through
        the hint, lists (another class's read may list one: see
        :meth:`_revive`)."""
        listed = {_id_key(raw["_id"]) for _, raw in read}
        known = self._planned(referrer)
        name = referrer._get_collection_name()
        unlisted = []
        for pk in matched:
            key = _id_key(pk)
            if key not in listed and key not in spared and key not in known:
                known[key] = pk
                unlisted.append(pk)
                self.unlisted_at[(name, key)] = position
        self.unlisted.append((referrer, unlisted))

    def _revivable(self, name: str, key: Any, position: tuple[int, ...]) -> bool:
        """Whether the document (of collection ``name``, its ``key``) a hint
        left out is still there for a read at ``position`` in MongoEngine's
        depth-first walk: before the ``delete_many`` ending the subtree of
        the read that left it out."""
        at = self.unlisted_at.get((name, key))
        return at is not None and (position < at or position[: len(at)] == at)

    def _revive(self, cls: type[Any], read: list, position: tuple[int, ...]) -> None:
        """Unplan the documents of ``read`` (of ``cls``'s collection, at
        ``position``) a hint left out, still there then (see
        :meth:`_revivable`): that read plans them, its class's rules applied
        to them, as MongoEngine's query there lists them."""
        name = cls._get_collection_name()
        planned = self._planned(cls)
        for _, raw in read:
            key = _id_key(raw["_id"])
            if self._revivable(name, key, position):
                del self.unlisted_at[(name, key)], planned[key]

    def _filter_unlisted(self) -> None:
        """Delete by filter (their ids, in runs) the documents a hint left out
        that no read revived."""
        for cls, ids in self.unlisted:
            name = cls._get_collection_name()
            left = [pk for pk in ids if (name, _id_key(pk)) in self.unlisted_at]
            self.filters += [(cls, {"_id": {"$in": run}}) for run in self._runs(left)]

    def _scoped(
        self, referrer: type[Any], name: str, read: list, below: dict[Any, frozenset]
    ) -> dict[Any, frozenset]:
        """The cascade_refs each document ``read`` by the rule (``referrer``,
        ``name``) was read in, by its :func:`_id_key`: those of the references
        it holds (see :meth:`_scopes_below`), noted in ``self.scopes``."""
        if not below:
            return {}
        distinct = set(below.values())
        path = _db_field(referrer, name)
        reference_field = _reference_field(referrer, name)
        collection = referrer._get_collection_name()
        scoped = {}
        for _, raw in read:
            key = _id_key(raw["_id"])
            if len(distinct) == 1:
                [scopes] = distinct
            else:
                held = _references_in(raw, path, reference_field)
                scopes = frozenset().union(*(below.get(each, ()) for each in held))
            scoped[key] = scopes
            known = self.scopes.get((collection, key), frozenset())
            self.scopes[(collection, key)] = known | scopes
        return scoped

    def _keep(
        self, cls: type[Any], keys: dict[Any, frozenset], position: tuple[int, ...]
    ) -> None:
        """Note the ``cls`` documents (their :func:`_id_key`, with the
        cascade_refs they were read in) read at ``position`` under a
        collation but matched only under it, the roots' ones excepted:
        MongoEngine applies the class's rules to what its iteration lists,
        then deletes what its ``delete_many`` (sent without the collation)
        matches; its ``cascade_refs`` hold them from the class's first
        CASCADE rule within its collection on (if any)."""
        name = cls._get_collection_name()
        roots = set(map(_id_key, self.root_ids)) if cls is self.root else set()
        rules = enumerate(_rules(cls))
        within = [
            index
            for index, (referrer, _, rule) in rules
            if rule == CASCADE and referrer._get_collection_name() == name
        ]
        start = (*position, within[0]) if within else None
        for key, scopes in keys.items():
            if key not in roots:
                starts = self.kept_from.setdefault((name, key), set())
                starts.update((start, scope) for scope in scopes if start)
        self._resolve_kept()

    def _reach(
        self, cls: type[Any], keys: dict[Any, frozenset], position: tuple[int, ...]
    ) -> None:
        """Note the ``cls`` documents (their :func:`_id_key`, with the
        cascade_refs of the queries matching them) a rule's query at
        ``position`` matches without collation: deleted by its
        ``delete_many``, unless kept earlier (see :meth:`_resolve_kept`)."""
        if not self.may_keep:
            return
        name = cls._get_collection_name()
        for key, scopes in keys.items():
            reached = self.reached.setdefault((name, key), set())
            reached.update((position, scope) for scope in scopes)
        self._resolve_kept()

    def _resolve_kept(self) -> None:
        """``self.kept``: the documents listed under a collation alone that no
        query deletes, as in MongoEngine's depth-first walk: none matches them
        without collation, or only ones whose ``cascade_refs`` already hold
        them (which their ``pk__nin`` leaves out)."""
        self.kept = {
            key
            for key, starts in self.kept_from.items()
            if all(self._held(starts, at) for at in self.reached.get(key, ()))
        }

    def _held(self, starts: set[tuple[tuple, tuple]], at: tuple[tuple, tuple]) -> bool:
        """Whether MongoEngine's query at ``at`` (a position, the cascade_refs
        it runs in) leaves out a kept document its ``cascade_refs`` hold from
        one of ``starts``: added to them before (depth-first), in the same set
        (each document deleted one by one has cascade_refs of its own)."""
        position, scope = at
        return any(start <= position and held == scope for start, held in starts)

    def _spared(self, referrer: type[Any]) -> _Spared:
        """The spared pks as ``referrer`` stores them, as MongoEngine's query
        of them (``pk__nin``) converts them (a ``UUIDField(binary=False)``'s
        UUID to its string); measured once a class, once a delete for the
        classes that store them as given (most pks)."""
        if referrer in self.spared_as:
            return self.spared_as[referrer]
        ids = transform.query(referrer, pk__nin=self.spared)["_id"]["$nin"]
        as_given = all(map(operator.is_, ids, self.spared))
        spared = self.spared_as.get(None) if as_given else None
        if spared is None:
            keys = set(map(_id_key, ids))
            spared = _Spared(ids, keys, self._sendable(ids) is not None)
            if as_given:
                self.spared_as[None] = spared
        self.spared_as[referrer] = spared
        return spared

    def _plan_found(
        self,
        found: dict[type[Any], list],
        read: list[tuple[type[Any], dict]],
        spared: set,
    ) -> set:
        """Plan the documents ``read`` (with their class) but the ``spared``
        ones (their :func:`_id_key`), adding their ids new to the plan to
        ``found`` (per class); the :func:`_id_key` of those."""
        ids: dict[type[Any], list] = {}
        for each, raw in read:
            if _id_key(raw["_id"]) not in spared:
                ids.setdefault(each, []).append(raw["_id"])
        fresh: set = set()
        for each, kept in ids.items():
            new = self._add(each, kept)
            found.setdefault(each, []).extend(new)
            fresh.update(map(_id_key, new))
        return fresh

    def _sendable(self, exclude: list) -> list | None:
        """``exclude`` (ids a rule's query leaves out) when it fits in one run
        beside the run of references, else None: the caller leaves them out
        as it reads (a delete planning some 700,000 ids of a collection)."""
        return exclude if len(self._runs(exclude)) <= 1 else None

    async def _check_deny(self) -> None:
        """Refuse the delete as MongoEngine's first ``DENY`` rule finding a
        referrer left: the classes in its depth-first order (the position
        each was first planned at), each class's rules in their order."""
        by_turn = sorted(
            self.ids.items(), key=lambda item: self.first_at.get(item[0], ())
        )
        for cls, ids in by_turn:
            for referrer, name, rule in _rules(cls):
                if rule != DENY:
                    continue
                if await self._refers(referrer, name, cls, ids):
                    raise OperationError(
                        f"Could not delete document ({referrer.__name__}.{name} "
                        "refers to it)"
                    )

    async def _refers(
        self, referrer: type[Any], name: str, cls: type[Any], ids: list
    ) -> bool:
        """Whether a ``referrer`` document the delete keeps refers to ``ids``
        of ``cls`` by ``name`` (a DENY rule's check, a query a run)."""
        referring = await self.operation.on(referrer)
        planned = self._deleted(referrer)
        exclude = self._sendable(list(planned.values()))
        counting = _counting(referrer)
        gone = self._filtered(referrer)
        for run in self._referring(referrer, name, cls, ids):
            query = _referring(referrer, name, run, exclude)
            if gone:
                query = {"$and": [query, {"$nor": gone}]}
            if exclude is not None:
                found = await on_primary(referring.collection).find_one(
                    query, {"_id": 1}, session=referring.session, **counting
                )
                if found is not None:
                    return True
            elif await _any_outside(referring, query, planned, counting):
                return True
        return False

    def _filtered(self, referrer: type[Any]) -> list[dict]:
        """The filters deleting documents of the ``referrer``'s collection
        (another class's, say its parent's, whose manager matches more): what
        they match goes with the delete, so refers to nothing left."""
        where = (referrer._meta.get("db_alias"), referrer._get_collection_name())
        return [
            query
            for cls, query in self.filters
            if (cls._meta.get("db_alias"), cls._get_collection_name()) == where
        ]

    def _load_for_signals(self) -> list:
        """Build the cascaded documents planned under a class with delete
        receivers: MongoEngine deletes those one by one (each planned under its
        own class, see :func:`_rule_classes`), the others in a batch, which
        sends no signal, whatever receivers their subclass has.

        Each document once, to be sent with its own class as the sender, as
        ``document.delete()`` does, built from the read that planned it (no
        read of its own), in the order found. The root documents are not
        included: their signals are the caller's (``Document.async_delete``
        or the queryset).
        """
        read, self.read_for_signals = self.read_for_signals, []
        read = [
            (cls, raw) for cls, raw in read if self._not_kept(cls, [raw])
        ]  # (those a delete keeps get no signal)
        # Their stored ids (the loader owns the raws): a pk may load as
        # another value, a UUIDField(binary=False)'s UUID of a string.
        keys = [(cls._get_collection_name(), _id_key(raw["_id"])) for cls, raw in read]
        built: dict[int, Any] = {}  # (by position in the read)
        for cls in dict.fromkeys(cls for cls, _ in read):
            places = [place for place, (each, _) in enumerate(read) if each is cls]
            # The documented queryset's loading, kept: receivers get documents.
            documents = materialise_all(
                cls.objects._materialiser(), [read[place][1] for place in places]
            )
            built.update(zip(places, documents, strict=True))
        loaded = []
        for place, key in enumerate(keys):
            document = built[place]
            if signals.has_delete_receivers(type(document)):
                self.loaded_keys.add(key)
                loaded.append(document)
        return loaded

    async def _find_files(self) -> None:
        """The GridFS files of the cascaded documents (those found by id: read
        with their ids; those sent signals: held by their documents, after
        their ``pre_delete``; else one query per class with file fields), for
        the caller to delete once the documents are gone; and the deletes by
        filter restricted to the documents read."""
        found = [
            (cls, each)
            for cls, read in self.read_with_files
            for each in files_of(self._not_kept(cls, read), cls)
        ]
        found += [
            (type(document), each)
            for document in self.loaded
            for each in _held_files(document)
        ]
        matches = [
            (cls, {"_id": {"$in": run}})
            for cls, ids in self._cascaded()
            for run in self._runs(self._not_loaded(cls, ids))
            if not self.files_with_ids  # (else read with the ids)
        ]
        for cls, query in matches:
            operation = await self.operation.on(cls)
            found += [
                (cls, each)
                for each in await stored_files(Matching(cls, query), operation)
            ]
        self.by_filters = []
        for cls, query in self.filters:
            operation = await self.operation.on(cls)
            matching = Matching(cls, query)
            files, ids = await stored_files_and_ids(matching, operation)
            found += [(cls, each) for each in files]
            # Only the documents whose files were read: one matching since
            # would lose its files (outside a transaction's snapshot).
            codec_options = operation.collection.codec_options
            if ids is None:
                runs = [matching]
            else:  # (none read: a delete of none of them matches nothing)
                runs = listed(matching, ids, codec_options) if ids else []
            self.by_filters.append((cls, [run._query for run in runs], ids))
        self.files = [each for _, each in found]  # (found again if run again)
        self.file_classes = {id(each): cls for cls, each in found}

    async def files_by_transaction(
        self, own: bool = False, files: list | None = None
    ) -> tuple[list, list[tuple[Operation, list]]]:
        """``files`` (``self.files`` if not given) split: outside a
        transaction of the caller's (in none, or in the delete's ``own``),
        those of documents deleted in another client's transaction (which the
        plan joined), with its operation, to delete in it (one on a client
        outside it once it commits: its abort brings the documents back,
        holding them); the others."""
        files = self.files if files is None else files
        if _in_transaction(self.operation.session) and not own:
            return files, []
        rest: list = []
        joined: dict[int, tuple[Operation, list]] = {}
        for each in files:
            cls = self.file_classes.get(id(each))
            operation = None if cls is None else await self.operation.on(cls)
            if operation is None or not self._joins(operation.session):
                rest.append(each)
                continue
            joined.setdefault(id(operation.session), (operation, []))[1].append(each)
        return rest, list(joined.values())

    def _joins(self, session: AsyncClientSession | None) -> bool:
        """Whether ``session`` is in another transaction than the delete's."""
        return session is not self.operation.session and _in_transaction(session)

    def _take(self, name: str, raw: dict, fresh: set) -> bool:
        """Whether a cascaded document read (``raw``, of collection ``name``)
        gives its files and its signals: new to the plan (its ``fresh`` keys),
        or a root kept read for the first time (both left out if it stays
        kept: see :meth:`_not_kept`)."""
        key = _id_key(raw["_id"])
        if key in fresh:
            return True
        if (name, key) not in self.untaken:
            return False
        self.untaken.discard((name, key))
        return True

    def _not_kept(self, cls: type[Any], read: list[dict]) -> list[dict]:
        """The documents ``read`` of ``cls`` but those the delete keeps."""
        name = cls._get_collection_name()
        return [raw for raw in read if (name, _id_key(raw["_id"])) not in self.kept]

    def _not_loaded(self, cls: type[Any], ids: list) -> list:
        """Those of the planned ``ids`` of ``cls`` not built for signals."""
        name = cls._get_collection_name()
        return [pk for pk in ids if (name, _id_key(pk)) not in self.loaded_keys]

    def _updates(self) -> list[tuple[type[Any], dict, dict]]:
        """The NULLIFY and PULL updates to apply: (referrer, query, update)."""
        updates = []
        for cls, ids in self.ids.items():
            for referrer, name, rule in _rules(cls):
                if rule not in (NULLIFY, PULL):
                    continue
                for run in self._referring(referrer, name, cls, ids):
                    update = (
                        {"$unset": {_db_field(referrer, name): 1}}
                        if rule == NULLIFY
                        else _pull(referrer, name, run)
                    )
                    updates.append(
                        (referrer, _referring(referrer, name, run, None), update)
                    )
        return updates

    async def _apply_updates(self, updates: list[tuple[type[Any], dict, dict]]) -> None:
        """Send the NULLIFY/PULL ``updates`` (referring class, filter, update),
        an ``update_many`` each where its class is, failing as MongoEngine's."""
        from mongoengine_async.queryset import _update_errors  # (imports this)

        for referrer, query, update in updates:
            referring = await self.operation.on(referrer)
            with (
                self._sending(),
                set_write_concern(
                    referring.collection, referring.write_concern
                ) as target,
                _update_errors(),  # MongoEngine's "Update failed (...)"
                # (Inside it: PyMongo's error, a retry's selection time-out
                # its context, not MongoEngine's wrapping it.)
                self.unreachable.noting(referring.collection.database.client),
            ):
                await target.update_many(query, update, session=referring.session)

    async def _delete_by_filters(self) -> None:
        """Delete the cascaded documents of the classes no step needs the ids
        of, each rule and level with one delete by its filter (for a class
        with file fields, and ids in runs, the documents whose files it read).
        One of those changed meanwhile to match its filter no more is left:
        when fewer were deleted than read, the files of those still there are
        read and kept (outside a transaction's snapshot), once every filter's
        delete was sent: a later filter may delete one an earlier one left."""
        left: list[tuple[Operation, Listed]] = []
        for cls, queries, ids in self.by_filters:
            operation = await self.operation.on(cls)
            counts = [await self._send_delete(operation, query) for query in queries]
            if ids is not None:
                left.append((operation, Listed(cls, ids, _total(counts))))
        for operation, listed_left in left:
            self.files = await not_held(self.files, operation, listed_left)

    def _cascaded(self) -> list[tuple[type[Any], list]]:
        """The planned ids but the root's, per class."""
        cascaded = []
        for cls, ids in self.ids.items():
            if cls is self.root:  # its cascaded documents are in its own collection
                ids = ids[len(self.root_ids) - self.unlisted_roots :]
            if self.kept:
                name = cls._get_collection_name()
                ids = [pk for pk in ids if (name, _id_key(pk)) not in self.kept]
            if ids:
                cascaded.append((cls, ids))
        return cascaded

    async def _delete_cascaded(self) -> None:
        """Delete every planned document but the root's (documents of the root
        class reached by cascade are not counted, as in MongoEngine) in
        MongoEngine's order: its depth-first walk deletes a document's
        referrers before it, the rules' in their order (see
        :meth:`_deleted_before`). Outside a transaction, a delete failing
        partway thus never leaves a document referring by CASCADE to one
        deleted: out of reach of the next delete of the root, which finds it
        through that one."""
        for cls, ids in sorted(self._cascaded(), key=self._deleted_before):
            cascaded = await self.operation.on(cls)
            for run in self._runs(ids):
                await self._send_delete(cascaded, {"_id": {"$in": run}})

    def _deleted_before(self, planned: tuple[type[Any], list]) -> tuple[float, ...]:
        """The sort key of a class's planned ids in MongoEngine's delete
        order (a depth-first walk's post-order): its first position (the rule
        indices from the root) followed by a bound above every index, so that
        a position reached below it (a longer one) sorts first, and a
        sibling's by its rule's index."""
        return (*self.first_at.get(planned[0], ()), math.inf)


def _held_files(document: Any) -> list:
    """The files ``document`` holds (its file fields' values as it would store
    them), as MongoEngine's ``delete()`` deletes a document's own: a
    ``pre_delete`` receiver may have replaced one."""
    cls = type(document)
    wanted = file_projection(cls)
    stored = {
        field.db_field: field.to_mongo(document._data[name])
        for name, field in cls._fields.items()
        if field.db_field in wanted and document._data.get(name) is not None
    }
    return files_of([{**stored, "_cls": cls._class_name}], cls)


async def _pre_delete(document: Any) -> None:
    """A cascaded document's ``pre_delete``, a step of :meth:`_DeletePlan.run`."""
    await signals.send(signals.pre_delete, type(document), document=document)


async def _post_delete(document: Any) -> None:
    """A cascaded document's ``post_delete``, a step of :meth:`_DeletePlan.run`."""
    await signals.send(signals.post_delete, type(document), document=document)


def _deny_referrers(root: type[Any]) -> set[type[Any]]:
    """The referring classes of every DENY rule a delete of ``root`` may check."""
    return {
        referrer
        for cls in (root, *_reachable(root))
        for referrer, _, rule in _rules(cls)
        if rule == DENY
    }


def _rule_classes(referrer: type[Any]) -> list[type[Any]]:
    """The classes whose rules apply to the ``referrer`` documents a CASCADE
    deletes: each document's own class when ``referrer`` has delete receivers
    (MongoEngine then deletes them one by one, each with its own class's
    rules), else ``referrer`` alone (its queryset's delete applies its rules)."""
    if signals.has_delete_receivers(referrer):
        return with_subclasses(referrer)
    return [referrer]


def _counting(referrer: type[Any]) -> dict[str, Any]:
    """How MongoEngine's DENY check counts the ``referrer`` documents (a
    ``count()`` of its ``objects``), as ``find()`` options: under the
    manager's collation, through its ``hint()`` (a sparse index leaves out
    the documents it does not hold)."""
    queryset = referrer.objects
    hint = None if queryset._hint == -1 else queryset._hint
    return {"collation": queryset._collation, "hint": hint}


def _matching(referrer: type[Any]) -> dict[str, Any]:
    """The ``find()`` options of MongoEngine's iteration of ``referrer.objects``
    that change what it matches: its collation, its ``hint()`` (a sparse
    index lists only the documents it holds); a class's rules are applied to
    the documents ``field__in=<that queryset>`` lists, for a class with rules
    of its own (else nothing iterates them: its ``delete_many``, sent without
    them, deletes them)."""
    if not _rules(referrer):
        return {}
    queryset = referrer.objects
    options = {"collation": queryset._collation, "hint": queryset._hint}
    return {name: value for name, value in options.items() if value not in (None, -1)}


def _iteration(referrer: type[Any]) -> dict[str, Any]:
    """How MongoEngine's one-by-one delete of the ``referrer`` documents a
    CASCADE reaches iterates them (its ``objects``), as ``find()`` options:
    the manager's ``order_by``, else the class's default ``ordering``; the
    manager's collation, which it matches and sorts with; its ``hint()``,
    whose index gives the order when no sort does."""
    queryset = referrer.objects
    sort = queryset._ordering or None
    ordering = referrer._meta.get("ordering")
    if queryset._ordering is None and ordering:
        sort = queryset._get_order_by(ordering)
    hint = None if queryset._hint == -1 else queryset._hint
    return {"sort": sort, "collation": queryset._collation, "hint": hint}


async def _found_by_class(
    operation: Operation,
    query: dict,
    classes: list[type[Any]],
    projection: dict | None,
    iteration: dict[str, Any],
) -> list[tuple[type[Any], dict]]:
    """The documents matching ``query`` (their id, and the fields of
    ``projection``, with their ``_cls`` then; whole when it is None), read
    with the ``find()`` options of ``iteration`` (see :func:`_iteration`),
    each with its class of ``classes`` (by ``_cls``; the first class for
    documents of none of the others), in the order read. Listing files too,
    as the plan's every read: on the primary, where its writes go (a lagging
    secondary misses a referrer just written, or lists the files a document
    held before)."""
    fields = None if projection is None else {"_id": 1, **projection}
    if fields is not None and (projection or len(classes) > 1):
        fields["_cls"] = 1
    cursor = on_primary(operation.collection).find(
        query,
        fields,
        batch_size=WHOLE_RESULT,
        session=operation.session,
        **iteration,
    )
    read = await read_list(cursor)
    if len(classes) == 1:
        return [(classes[0], raw) for raw in read]
    names = {each._class_name: each for each in classes}
    return [(names.get(raw.get("_cls"), classes[0]), raw) for raw in read]


async def _any_outside(
    operation: Operation, query: dict, planned: dict, counting: dict[str, Any]
) -> bool:
    """Whether a document matching ``query`` (read with the ``find()``
    options of ``counting``, see :func:`_counting`) is not of the ``planned``
    ids: read until the first such one (their ids only), on the primary."""
    cursor = on_primary(operation.collection).find(
        query, {"_id": 1}, session=operation.session, **counting
    )
    try:
        async for raw in cursor:
            if _id_key(raw["_id"]) not in planned:
                return True
    finally:
        await cursor.close()
    return False


async def _ids(operation: Operation, query: dict, **options: Any) -> list:
    """The ids matching ``query`` in the operation's collection (read with
    the ``find()`` ``options`` given), read on the primary, where the delete
    goes."""
    cursor = on_primary(operation.collection).find(
        query,
        {"_id": 1},
        batch_size=WHOLE_RESULT,
        session=operation.session,
        **options,
    )
    return [raw["_id"] for raw in await read_list(cursor)]


def _held_in_all(held: dict[Any, dict], scopes: frozenset) -> list:
    """The :func:`_id_key` of the documents ``held`` (see
    :meth:`_DeletePlan._held_by_scope`) in each of ``scopes``, in the order
    the plan kept them."""
    [first, *rest] = scopes or [None]
    return [
        key
        for key in held.get(first, {})
        if all(key in held.get(scope, ()) for scope in rest)
    ]


# The cascade_refs of the root's delete alone (see _DeletePlan.scopes).
_ROOT_SCOPES: frozenset[tuple] = frozenset({()})


def _references_in(raw: dict, path: str, reference_field: Any) -> list:
    """The :func:`_id_key` of the references ``raw`` holds at the dotted
    ``path`` (through lists), as :func:`_stored_values` gives them."""
    values: list[Any] = [raw]
    for part in path.split("."):
        values = [
            each[part]
            for each in _items(values)
            if isinstance(each, dict) and part in each
        ]
    if _is_generic(reference_field) or _is_cached(reference_field):
        inner = "_ref" if _is_generic(reference_field) else "_id"
        values = [each.get(inner) for each in _items(values) if isinstance(each, dict)]
    return [_id_key(each) for each in _items(values)]


def _items(values: list) -> list:
    """``values`` with each list among them replaced by its items."""
    return [
        each
        for value in values
        for each in (value if isinstance(value, list) else [value])
    ]


def _field_path(referrer: type[Any], name: str) -> list:
    """The fields of a rule's field ``name``, a MongoEngine path: a rule
    registered by hand may name a reference in an embedded document
    (``"info__author"``), as MongoEngine's rule queries take it. A name that
    is no such path raises what MongoEngine's query raises."""
    try:
        return referrer._lookup_field(name.split("__"))
    except LookUpError as error:
        raise InvalidQueryError(error) from error


def _reference_field(referrer: type[Any], name: str) -> Any:
    """The reference field behind ``name`` (the item field for lists)."""
    field = _field_path(referrer, name)[-1]
    return getattr(field, "field", None) or field


def _db_field(referrer: type[Any], name: str) -> str:
    """Where ``name`` is stored (its fields' ``db_field``s, dotted)."""
    return ".".join(field.db_field for field in _field_path(referrer, name))


def _is_generic(reference_field: Any) -> bool:
    return isinstance(reference_field, mongoengine.GenericReferenceField)


def _is_cached(reference_field: Any) -> bool:
    """A CachedReferenceField: stores ``{"_id": <id>, <cached fields>}``."""
    return isinstance(reference_field, mongoengine.CachedReferenceField)


def _stored_values(reference_field: Any, cls: type[Any], ids: list) -> list:
    """How references to ``ids`` of ``cls`` are stored by ``reference_field``."""
    if _is_generic(reference_field):
        return [DBRef(cls._get_collection_name(), object_id) for object_id in ids]
    document_type: Any = getattr(reference_field, "document_type", None)
    if isinstance(reference_field, mongoengine.ReferenceField) and (
        document_type._meta.get("abstract")
    ):
        # Stored as DBRef(collection, id, cls=<the referenced document's class>).
        collection = cls._get_collection_name()
        return [
            DBRef(collection, object_id, cls=each._class_name)
            for each in with_subclasses(cls)
            if not each._meta.get("abstract")
            for object_id in ids
        ]
    if _is_cached(reference_field):  # compared with its "_id"
        id_field = document_type._fields[document_type._meta["id_field"]]
        return [id_field.to_mongo(object_id) for object_id in ids]
    return [reference_field.to_mongo(object_id) for object_id in ids]


def _referring(
    referrer: type[Any],
    name: str,
    values: list,
    exclude: list | None,
    as_iterated: bool = False,
) -> dict:
    """The raw query for ``referrer`` documents whose ``name`` holds one of
    ``values`` (references as :func:`_stored_values` stores them), but those
    of ``exclude``. ``as_iterated``: with ``_id: {"$nin": exclude}`` even for
    none, as MongoEngine's one-by-one cascade queries (``pk__nin``), for the
    server to pick the same plan, and so send them in the same order."""
    reference_field = _reference_field(referrer, name)
    path = _db_field(referrer, name)
    if _is_generic(reference_field):
        path = f"{path}._ref"
    elif _is_cached(reference_field):
        path = f"{path}._id"
    query: dict[str, Any] = {path: {"$in": values}}
    if exclude or (as_iterated and exclude is not None):
        query["_id"] = {"$nin": exclude}
    manager_query = _manager_query(referrer)
    if query.keys() & manager_query.keys():
        return {"$and": [query, manager_query]}
    return {**query, **manager_query}


def _manager_query(referrer: type[Any]) -> dict:
    """What ``referrer.objects`` matches, as MongoEngine applies each rule through
    it (``document_cls.objects(field__in=...)``): a custom manager's filter (say,
    only active documents) limits what the rule touches. The default manager
    only has the class's ``_cls`` condition, read without compiling a query."""
    queryset = referrer.objects
    if not queryset._query_obj and queryset._mongo_query is None:
        return queryset._cls_query
    return queryset._query


def _pull(referrer: type[Any], name: str, values: list) -> dict:
    """The update pulling ``values`` (stored references) out of ``name``."""
    path = _db_field(referrer, name)
    if "." in path:  # refused by MongoEngine's pull_all, before anything is sent
        raise InvalidQueryError("pullAll operations only support a single field depth")
    reference_field = _reference_field(referrer, name)
    if _is_generic(reference_field):
        return {"$pull": {path: {"_ref": {"$in": values}}}}
    if _is_cached(reference_field):
        return {"$pull": {path: {"_id": {"$in": values}}}}
    return {"$pull": {path: {"$in": values}}}


def _stored_pk(document: Any) -> Any:
    """``document``'s id as stored (a ``UUIDField(binary=False)``'s string):
    what a query of ``_id`` matches and a read of it gives back."""
    cls = type(document)
    return cls._fields[cls._meta["id_field"]].to_mongo(document.pk)


def _as_bson(value: Any, codec_options: CodecOptions) -> bytes:
    """An id ``value`` as BSON, compared as stored: a value read back may be
    another Python value (a ``BinaryField``'s ``Binary``, read as ``bytes``)."""
    return bson.encode({"_id": value}, codec_options=codec_options)


def _id_key(value: Any) -> Any:
    """A stored id ``value`` as a set's key: itself, or for an embedded
    document's (an ``EmbeddedDocumentField(primary_key=True)``: a dict,
    unhashable) its items in order, as the server compares them; a value
    PyMongo gives unhashable (a ``Decimal128Field``'s ``Decimal128``, a
    ``DBRef`` holding one, whose hash raises) as its BSON."""
    if isinstance(value, dict):
        return (dict, tuple((name, _id_key(item)) for name, item in value.items()))
    if isinstance(value, list):
        return (list, tuple(map(_id_key, value)))
    try:
        hash(value)
    except TypeError:
        return (type(value), bson.encode({"": value}))
    return value
