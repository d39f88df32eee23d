"""The names a module of this package lacks that MongoEngine's module of the
same name has (``connection``, ``document``, ``errors``, ``fields``,
``queryset``, ``signals``): code changing only ``import mongoengine as me`` to
``import mongoengine_async as me`` still reads ``me.queryset.visitor.Q``,
``me.errors.MongoEngineException``, ``me.connection.DEFAULT_HOST``... as
MongoEngine's own objects; but one of MongoEngine's public objects (of
``mongoengine.__all__``) that its module merely imports, such as
``mongoengine.document.get_db`` or ``mongoengine.fields.Document``, as
this package's (``mongoengine_async.get_db``, ``mongoengine_async.Document``):
the one the import changed means. Each of those modules has a ``__getattr__``
(a module one, PEP 562; ``connection``'s module class's) calling
:func:`mongoengine_attribute`; its own names, the ones of MongoEngine's
``__all__`` among them, are found first.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ("mongoengine_attribute",)


def mongoengine_attribute(module: str, name: str) -> Any:
    """``mongoengine.<last part of module>.<name>``, for the module ``module``
    of this package, which has no ``name``; else the AttributeError Python
    raises. Dunder names are never looked up there: ``__path__`` (which our
    modules, not packages, lack) would make ``import module.submodule`` load
    a second copy of MongoEngine's submodule under our name."""
    if not name.startswith("__"):
        theirs = importlib.import_module("mongoengine." + module.rpartition(".")[2])
        try:
            found = getattr(theirs, name)
        except AttributeError:
            pass
        else:
            return _ours_for(name, found)
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


def _ours_for(name: str, found: Any) -> Any:
    """This package's ``name`` if ``found`` is MongoEngine's public object of
    that name (``mongoengine.get_db`` imported by ``mongoengine.document``),
    else ``found``."""
    mongoengine = importlib.import_module("mongoengine")
    if name in mongoengine.__all__ and getattr(mongoengine, name) is found:
        return getattr(importlib.import_module("mongoengine_async"), name)
    return found
