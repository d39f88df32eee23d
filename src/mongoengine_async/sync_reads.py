"""Sync reads through the generated loaders: MongoEngine's results, built faster.

On a ``connect()`` alias, MongoEngine's ``QuerySet`` builds each result with
``_from_son``; :class:`FastSyncReads` (a base of our querysets) builds it
with the class's loader from :mod:`mongoengine_async.from_bson` instead, which
gives identical documents. Everything else (cursors, the result cache, ``get``,
``first``, ``len``) is MongoEngine's own code, which reads through
``__next__`` and ``__getitem__`` (a chunk of the result cache takes the
results the cursor has buffered straight from it, in one call of the loader's
batch, leaving the cache and the buffer as MongoEngine's when one fails to
load); ``in_bulk`` (which
MongoEngine's ``select_related()`` and the dereferencing of reference lists
call) builds its documents the same way, and so does the read of a single reference
(:func:`load_referenced`); ``select_related()`` joins while it builds them, when
the class allows (:mod:`~mongoengine_async.sync_select_related`). The loader
is kept while what it settles for a batch (no-dereference loading, init signal
receivers, the class's plan, the collections the references name) stays the
same, and made again when any of it changes:
checked before each document that ``next()`` returns, and once for each chunk
MongoEngine's result cache pulls in, where nothing runs between the documents.

Each of these steps aside, and MongoEngine's own method runs, while the method
it does the work of is patched on MongoEngine's class (``mock.patch.object(
BaseQuerySet, "__next__", ...)``), or the queryset's class resolves it to
another than ours (a user's ``queryset_class``, a patch on our class): checked
once per call, per chunk, or (``__next__``) at a queryset's first result.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from itertools import repeat, starmap
from types import FunctionType
from typing import TYPE_CHECKING, Any

import mongoengine.queryset.queryset as me_queryset
from bson import DBRef
from mongoengine.dereference import DeReference
from mongoengine.errors import DoesNotExist
from mongoengine.queryset.base import BaseQuerySet

from mongoengine_async.batches import by_id, replies
from mongoengine_async.from_bson import Load, loader, loader_key, owned_loader
from mongoengine_async.guards import unguarded
from mongoengine_async.sync_select_related import select_related_joined

if TYPE_CHECKING:
    from mongoengine_async._typing import MongoEngineQuerySet
else:  # checkers see MongoEngine's class through the typed stub _typing.pyi;
    # the base of both QuerySet and QuerySetNoCache (queryset.py) is BaseQuerySet.
    MongoEngineQuerySet = BaseQuerySet

__all__ = ("FastSyncReads", "library_methods", "load_referenced", "mongoengines_own")

# The methods MongoEngine's list(queryset) goes through, outermost first, and
# the property its select_related() reads the references with.
_LISTING = ("__iter__", "_iter_results", "_populate_cache", "__next__")
_JOINING = (*_LISTING, "_dereference")

# The methods of MongoEngine's querysets whose work ours do (or skip), as its
# QuerySet and QuerySetNoCache had them when the package was imported: one
# patched since on its BaseQuerySet, QuerySet or QuerySetNoCache
# (``mock.patch.object(BaseQuerySet, "__next__", ...)``) is called instead, as
# MongoEngine's queryset calls it.
_MONGOENGINE_CLASSES = (me_queryset.QuerySet, me_queryset.QuerySetNoCache)
_TAKEN = (*_JOINING, "__getitem__", "in_bulk", "select_related")
_MONGOENGINE_METHODS = {
    name: tuple(getattr(klass, name, None) for klass in _MONGOENGINE_CLASSES)
    for name in _TAKEN
}

# The methods MongoEngine's DeReference (select_related()) reads and puts the
# references in place with, as MongoEngine defined them.
_DEREFERENCE_METHODS = (
    "__call__",
    "_find_references",
    "_fetch_objects",
    "_attach_objects",
)
_DEREFERENCE_AS = operator.attrgetter(*_DEREFERENCE_METHODS)
_AS_IMPORTED_DEREFERENCE = _DEREFERENCE_AS(DeReference)

# For each of those names, the methods our querysets and MongoEngine's define
# under it (filled by library_methods() once the classes are made): a
# queryset class resolving the name to any other (a user's queryset_class
# overriding it, or one patched on our class) has it called where
# MongoEngine's code calls it.
# (None: the class has no such method, nor has MongoEngine's.)
_LIBRARY_METHODS: dict[str, set[Any]] = {name: {None} for name in _TAKEN}


def library_methods(*classes: type[Any]) -> None:
    """Note the methods of ``_TAKEN`` that ``classes`` (ours, made by this
    package) and their bases define now, as the library's own."""
    for klass in classes:
        for base in klass.__mro__:
            for name in _TAKEN:
                if name in vars(base):
                    _LIBRARY_METHODS[name].add(getattr(base, name))


def mongoengines_own(name: str) -> bool:
    """Whether MongoEngine's querysets have the method ``name`` that they had
    when the package was imported (not one patched since)."""
    caching, not_caching = _MONGOENGINE_METHODS[name]
    return (
        getattr(me_queryset.QuerySet, name, None) is caching
        and getattr(me_queryset.QuerySetNoCache, name, None) is not_caching
    )


class FastSyncReads(MongoEngineQuerySet):
    """MongoEngine's queryset, its results built by the generated loaders."""

    # (loader_key, loader) of the last result built; not cloned.
    _fast_loader: tuple[tuple, Load] | None = None
    # The loader settled for the chunk the result cache is pulling in, if any.
    _chunk_loader: Load | None = None
    # Whether ``__next__`` builds the results itself (MongoEngine's not patched),
    # settled at its first call and again for each chunk of the result cache:
    # None until then; not cloned.
    _next_is_ours: bool | None = None

    def _loader(self, auto_dereference: bool) -> Load:
        """``loader(self._document, auto_dereference)``, kept while its key holds;
        it owns the raw results it is given (the cursor's, read for it only)."""
        key = loader_key(self._document, auto_dereference)
        held = self._fast_loader
        if held is None or held[0] != key:
            load = loader(self._document, auto_dereference, owned=True)
            held = self._fast_loader = (key, load)
        return held[1]

    def _load(self, raw: dict) -> Any:
        """``self._document._from_son(raw, _auto_dereference=...)``, faster."""
        load = self._chunk_loader or self._loader(self._auto_dereference)
        return load(raw)

    def __getstate__(self) -> dict:
        """MongoEngine's pickled state, without the loader (made again)."""
        state = super().__getstate__()
        state.pop("_fast_loader", None)
        state.pop("_next_is_ours", None)
        return state

    def _populate_cache(self) -> None:
        """MongoEngine's (the next chunk of results into the cache, through
        ``__next__``), the loader settled once for the whole chunk, and the
        results the cursor holds already built straight from its buffer."""
        self._next_is_ours = mongoengines_own("__next__")
        if self._as_pymongo or not mongoengines_own("_populate_cache"):
            super()._populate_cache()  # (raw results need no loader)
            return
        load = self._chunk_loader = self._loader(self._auto_dereference)
        try:
            cache = self._result_cache
            if cache is not None and self._takes_from_buffer():
                self._fill_chunk(cache, load)
            else:
                super()._populate_cache()
        finally:
            self.__dict__.pop("_chunk_loader", None)

    def _takes_from_buffer(self) -> bool:
        """Whether ``__next__`` would only pop each buffered result and load it:
        documents (no scalars), more to come, ``__next__`` not overridden."""
        return (
            self._has_more
            and not (self._scalar or self._none or self._empty)
            and not self._overrides("__next__")
        )

    def _fill_chunk(self, cache: list[Any], load: Load) -> None:
        """What MongoEngine's ``_populate_cache`` does with ``next(self)``, the
        results the cursor has buffered popped and loaded here, through the
        loader's batch where it has one (no call per document); the rest (the
        first result, a getMore, the end) through ``next(self)``. A refresh
        gives the cursor a new buffer: it is looked up for each run of it."""
        cursor = self._cursor
        batch = _batch_of(load)
        left = me_queryset.ITER_CHUNK_SIZE
        try:
            while left:
                buffered = cursor._data
                if not buffered:
                    cache.append(next(self))
                    left -= 1
                    continue
                taken = min(left, len(buffered))
                # Each result popped as it is loaded, as next(self) pops it:
                # a failing one leaves the cache holding those before it and
                # the buffer those after it, MongoEngine's state.
                popped = starmap(buffered.popleft, repeat((), taken))
                if batch is None:
                    cache.extend(map(load, popped))
                else:
                    _load_batch(batch, popped, taken, cache)
                left -= taken
        except StopIteration:
            self._has_more = False

    def __next__(self) -> Any:
        """MongoEngine's ``__next__``, the document built by the loader."""
        ours = self._next_is_ours
        if ours is None:
            ours = self._next_is_ours = mongoengines_own("__next__")
        if not ours:  # (the typed stub's BaseQuerySet has no __next__)
            return super().__next__()  # type: ignore[misc]  # pyright: ignore[reportAttributeAccessIssue]
        if self._none or self._empty:
            raise StopIteration
        raw = next(self._cursor)
        if self._as_pymongo:
            return raw
        document = self._load(raw)
        return self._get_scalar(document) if self._scalar else document

    def __getitem__(self, key: Any) -> Any:
        """MongoEngine's ``queryset[i]`` (``first()`` too), the document built
        by the loader; slices are MongoEngine's."""
        if (
            isinstance(key, slice)
            or not isinstance(key, int)
            or not mongoengines_own("__getitem__")
        ):
            return super().__getitem__(key)
        queryset = self.clone()
        queryset._empty = False
        if queryset._scalar:
            return queryset._get_scalar(queryset._load(queryset._cursor[key]))
        if queryset._as_pymongo:
            return queryset._cursor[key]
        return queryset._load(queryset._cursor[key])

    def select_related(self, max_depth: int = 1) -> list[Any]:
        """MongoEngine's ``select_related``: the results, their references
        loaded; joined while they are built when their class allows it
        (:mod:`~mongoengine_async.sync_select_related`)."""
        operator.iadd(max_depth, 1)  # MongoEngine's first step: its TypeError
        joined = None
        if mongoengines_own("select_related") and self._joins_as_mongoengine():
            joined = select_related_joined(self.clone(), max_depth)
        return super().select_related(max_depth) if joined is None else joined

    def _joins_as_mongoengine(self) -> bool:
        """Whether MongoEngine's ``select_related()`` would list the results,
        read and put the references in place only through MongoEngine's own
        methods (or ours doing their work), which the join does instead."""
        return (
            not any(map(self._overrides, _JOINING))
            and _DEREFERENCE_AS(DeReference) == _AS_IMPORTED_DEREFERENCE
        )

    def _overrides(self, name: str) -> bool:
        """Whether the method ``name`` MongoEngine's code would call on this
        queryset is not the library's own: one of a user's ``queryset_class``,
        one patched on our classes (past the guard of a blocking method) or on
        MongoEngine's."""
        return unguarded(type(self), name) not in _LIBRARY_METHODS[
            name
        ] or not mongoengines_own(name)

    def in_bulk(self, object_ids: Any) -> dict[Any, Any]:
        """MongoEngine's ``in_bulk`` (the same query; a dict from id to
        result), the documents built by one loader."""
        if not mongoengines_own("in_bulk"):
            return super().in_bulk(object_ids)
        raws = self._collection.find({"_id": {"$in": object_ids}}, **self._cursor_args)
        # As MongoEngine's: scalars before as_pymongo() (listing goes the other
        # way), loaded dereferencing whatever is set.
        if self._as_pymongo and not self._scalar:
            return {raw["_id"]: raw for raw in raws}
        build = self._in_bulk_build()
        found: dict[Any, Any] = {}
        for run in replies(raws):  # each reply loaded before the next is asked for
            found.update(by_id(run, build))
        return found

    def _in_bulk_build(self) -> Callable[[list], list]:
        """What ``in_bulk`` makes of a reply's raws, as MongoEngine's: scalars
        (loaded dereferencing whatever is set), else documents in one batch."""
        if self._scalar:
            load = self._loader(True)
            return lambda run: [self._get_scalar(load(raw)) for raw in run]
        load = self._loader(self._auto_dereference)
        batch = _batch_of(load)
        return batch if batch is not None else lambda run: list(map(load, run))


def _batch_of(load: Load) -> Callable[..., list] | None:
    """The loader's own ``batch`` (``batches.materialise_all``'s rule: a mock
    standing for ``_from_son`` makes one up when asked), or None."""
    return vars(load).get("batch") if type(load) is FunctionType else None


def _load_batch(batch: Any, sons: Iterator[dict], count: int, cache: list) -> None:
    """``cache.extend(map(load, sons))`` (``count`` of them) through the
    loader's ``batch``: on an error, the documents built before it are added."""
    documents = [None] * count
    try:
        batch(sons, documents)
    finally:
        if documents[-1] is None:  # a son failed: keep the documents before it
            del documents[sum(document is not None for document in documents) :]
        cache.extend(documents)


def load_referenced(ref_cls: type[Any], dbref: DBRef) -> Any:
    """MongoEngine's blocking read of one reference (``_lazy_load_ref`` of its
    reference fields, on sync aliases), the document built by the loader."""
    raw = ref_cls._get_db().dereference(dbref)
    if raw is None:
        raise DoesNotExist(f"Trying to dereference unknown document {dbref}")
    return owned_loader(ref_cls)(raw)  # the reply is this document's alone
