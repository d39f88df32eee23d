"""Document classes reached as classes, never looked up by name.

MongoEngine's registry by name (``get_document``) holds only the last class
defined under a name: two modules may each define a ``Report``, and a lookup of
a class's ``_subclasses`` names would then find the other one.

The caches keyed by class register here, so that a class defined again under
the same name (as a test suite does) lets the earlier one go.
"""

from __future__ import annotations

import weakref
from collections.abc import MutableMapping
from typing import Any, TypeVar

from mongoengine_async._compat import document_registry

__all__ = ("forget", "keyed_by_class", "taken_in", "with_subclasses")

_Cache = TypeVar("_Cache", bound=MutableMapping[Any, Any])


def with_subclasses(cls: type[Any]) -> list[type[Any]]:
    """``cls`` and every subclass of it (at any depth), ``cls`` first."""
    classes = [cls]
    for each in classes:  # the list grows as subclasses are found
        classes.extend(sub for sub in each.__subclasses__() if sub not in classes)
    return classes


# -- caches by class, and classes defined again ----------------------------------

# The caches that hold document classes as keys (or in tuple keys): plans,
# prepared collections, homes... Each entry may hold its class (and the plan
# its generated code) for good.
_caches: list[MutableMapping[Any, Any]] = []
# By MongoEngine class name (``_class_name``): the class last taken into a
# cache under that name (weakly: it may go once no cache holds it).
_latest: weakref.WeakValueDictionary[str, type[Any]] = weakref.WeakValueDictionary()


def keyed_by_class(cache: _Cache) -> _Cache:
    """Register ``cache``, whose keys are classes or tuples holding classes:
    the entries of a class defined again are dropped (see :func:`taken_in`)."""
    _caches.append(cache)
    return cache


def taken_in(cls: type[Any]) -> None:
    """Note that a cache takes ``cls`` in (on a miss, not on every use).

    A class defined again under the same name (a test suite's ``class
    Book(Document)`` in each test) replaces the earlier one in MongoEngine's
    registry, which then lets it go; the caches here would keep it, with its
    fields and plans, for good. The first time the new class is taken in, the
    entries of the earlier one (no longer the registry's) are dropped. A class
    still in use although another took its name (two modules each defining a
    ``Report``) is taken in again when next used, and is dropped again only
    when yet another class of that name is defined.
    """
    name = getattr(cls, "_class_name", None)
    if not isinstance(name, str):
        return
    earlier = _latest.get(name)
    if earlier is cls:
        return
    _latest[name] = cls
    if earlier is not None and document_registry.get(name) is not earlier:
        forget(earlier)


def forget(cls: type[Any]) -> None:
    """Drop every cache entry of ``cls``."""
    for cache in _caches:
        for key in list(cache):  # (another thread's may come and go meanwhile)
            if key is cls or (
                isinstance(key, tuple) and any(part is cls for part in key)
            ):
                cache.pop(key, None)
