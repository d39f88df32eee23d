"""Sync reads through the generated loaders: MongoEngine's results, built faster.

On a ``connect()`` alias, MongoEngine's ``QuerySet`` builds each result with
``_from_son``; :class:`FastSyncReads` (the base of our ``QuerySet``) builds it
with the class's loader from :mod:`mongoengine_async.from_bson` instead, which
gives identical documents. Everything else (cursors, the result cache, ``get``,
``first``, ``len``) is MongoEngine's own code, which reads through
``__next__`` and ``__getitem__``. The loader is kept while what it settles for a
batch (no-dereference loading, init signal receivers, the collections the
references name) stays the same, and made again when any of it changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mongoengine.queryset.queryset as me_queryset

from mongoengine_async.from_bson import Load, loader, loader_key

if TYPE_CHECKING:
    from mongoengine_async._typing import MongoEngineQuerySet
else:  # checkers see MongoEngine's class through the typed stub _typing.pyi
    MongoEngineQuerySet = me_queryset.QuerySet

__all__ = ("FastSyncReads",)


class FastSyncReads(MongoEngineQuerySet):
    """MongoEngine's QuerySet, its results built by the generated loaders."""

    # (loader_key, loader) of the last result built; not cloned.
    _fast_loader: tuple[tuple, Load] | None = None

    def _load(self, raw: dict) -> Any:
        """``self._document._from_son(raw, _auto_dereference=...)``, faster."""
        auto = self._auto_dereference
        key = loader_key(self._document, auto)
        held = self._fast_loader
        if held is None or held[0] != key:
            held = self._fast_loader = (key, loader(self._document, auto))
        return held[1](raw)

    def __getstate__(self) -> dict:
        """MongoEngine's pickled state, without the loader (made again)."""
        state = super().__getstate__()
        state.pop("_fast_loader", None)
        return state

    def __next__(self) -> Any:
        """MongoEngine's ``__next__``, the document built by the loader."""
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
        if isinstance(key, slice) or not isinstance(key, int):
            return super().__getitem__(key)
        queryset = self.clone()
        queryset._empty = False
        if queryset._scalar:
            return queryset._get_scalar(queryset._load(queryset._cursor[key]))
        if queryset._as_pymongo:
            return queryset._cursor[key]
        return queryset._load(queryset._cursor[key])
