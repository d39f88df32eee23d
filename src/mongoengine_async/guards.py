"""Misuse guards: blocking calls on async aliases, async calls on sync aliases.

A sync I/O method used on an async alias would block the event loop (or hand a
coroutine to MongoEngine); an async method on a sync alias has no async client.
Both raise :class:`~mongoengine_async.errors.AsyncUsageError` at once, naming the
method to use instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeGuard

import mongoengine
from mongoengine.connection import DEFAULT_CONNECTION_NAME

from mongoengine_async.connection import (
    is_async_connection,
    is_sync_connection,
    registered_twice,
    sync_registration,
    undefined_alias_error,
)
from mongoengine_async.errors import AsyncUsageError

__all__ = (
    "blocking_call_error",
    "guard_blocking_methods",
    "is_plain_async_document",
    "kind_changed_error",
    "plain_document_error",
    "require_async",
    "sync_alias_error",
    "unguarded",
)


def blocking_call_error(
    target: str, name: str, alias: str, use: str
) -> AsyncUsageError:
    """The error for a blocking ``target.name()`` on async ``alias``; on an
    alias that is sync now, made while it was async (see
    :func:`kind_changed_error`)."""
    if is_sync_connection(alias):
        return kind_changed_error(target, name, alias, now_async=False)
    return AsyncUsageError(
        f"{target}.{name}() would block the event loop: alias '{alias}' is async "
        f"(connect_async); use {use} instead{registered_twice(alias)}"
    )


def kind_changed_error(
    target: str, name: str, alias: str, *, now_async: bool
) -> AsyncUsageError:
    """The error for ``target.name()`` on what was made (a queryset, a
    ``switch_db()`` document) while ``alias`` was of the other kind, then
    disconnected and connected again as a sync alias (``now_async`` False) or
    an async one: it holds a collection of the other kind's client."""
    if now_async:
        was, now, again = "sync (connect())", "async (connect_async())", "async"
        back = f"await disconnect_async('{alias}') and connect(alias='{alias}')"
    else:
        was, now, again = "async (connect_async())", "sync (connect())", "sync"
        back = f"disconnect('{alias}') and connect_async(alias='{alias}')"
    return AsyncUsageError(
        f"{target}.{name}() cannot run: it was made while alias '{alias}' was "
        f"{was}, and the alias is {now} now; make it again to use the {again} "
        f"API, or {back}"
    )


def require_async(alias: str, target: str, name: str, use: str) -> None:
    """Raise unless ``alias`` is async; ``use`` names the sync alternative."""
    if is_async_connection(alias):
        return
    if not is_sync_connection(alias):
        raise undefined_alias_error(alias)
    raise sync_alias_error(alias, target, name, use)


def sync_alias_error(alias: str, target: str, name: str, use: str) -> AsyncUsageError:
    """The error for an async ``target.name()`` on ``alias``, registered with
    connect() or register_connection(); the hint spells ``alias=`` (a bare
    first argument is the db)."""
    return AsyncUsageError(
        f"{target}.{name}() needs an async alias but '{alias}' was registered "
        f"with {sync_registration(alias)}; use {use} instead, or "
        f"connect_async(alias='{alias}')"
    )


def is_plain_async_document(cls: Any) -> TypeGuard[type[Any]]:
    """Whether ``cls`` is a ``mongoengine.Document`` (not ours) whose alias is async."""
    return (
        isinstance(cls, type)
        and issubclass(cls, mongoengine.Document)
        and not hasattr(cls, "_is_async")
        and is_async_connection(_alias_in_meta(cls))
    )


def _alias_in_meta(cls: Any) -> str:
    """The alias a MongoEngine document class declares."""
    return cls._meta.get("db_alias", DEFAULT_CONNECTION_NAME)


def plain_document_error(cls: type[Any], where: str) -> AsyncUsageError:
    """The error for the ``mongoengine.Document`` subclass ``cls`` met ``where``."""
    alias = _alias_in_meta(cls)
    return AsyncUsageError(
        f"{cls.__name__} is a mongoengine.Document on async alias '{alias}' "
        f"({where}): MongoEngine's Document knows no async alias; subclass "
        "mongoengine_async.Document instead (from mongoengine_async import *)"
    )


def guard_blocking_methods(
    cls: type[Any],
    uses: dict[str, str],
    describe: Callable[[Any], tuple],
    error: Callable[[Any, str, str, str, str], Exception] | None = None,
    starts: Callable[[Any, str], None] | None = None,
) -> None:
    """Replace each method ``name`` that ``cls`` inherits by a version that
    refuses async aliases; ``uses[name]`` says what to call instead and
    ``describe(obj)`` returns ``(is_async, target, alias)`` for the receiver.
    ``error(receiver, target, name, alias, use)``, if given, makes the error
    raised (else :func:`blocking_call_error`); ``starts(receiver, name)``, if
    given, is called before a method runs on a sync alias. On sync aliases it
    calls the inherited method as it is at the call: MongoEngine's, or the one of this
    package's that overrides it, looked up past ``cls`` each time (one patched
    since on a base, ``mock.patch.object(mongoengine.Document, "save", ...)``
    or on our ``BaseQuerySet``, is called, as MongoEngine calls it).
    """
    for name, use in uses.items():
        raw = _inherited(cls, name)
        is_classmethod = isinstance(raw, classmethod)
        function = raw.__func__ if is_classmethod else raw
        guarded = _guarded(function, name, use, describe, cls, error, starts)
        _GUARDS.add(guarded)
        setattr(cls, name, classmethod(guarded) if is_classmethod else guarded)


# The functions guard_blocking_methods() set (see unguarded()).
_GUARDS: set[Callable] = set()


def unguarded(cls: type[Any], name: str) -> Any:
    """The method ``name`` that a call on ``cls`` runs on a sync alias: the
    class attribute past the guards (None: there is none)."""
    for base in cls.__mro__:
        method = vars(base).get(name)
        if method is not None and method not in _GUARDS:
            return method
    return None


def _inherited(cls: type[Any], name: str) -> Any:
    """The attribute ``name`` that ``cls`` inherits, as its bases define it."""
    for base in cls.__mro__[1:]:
        if name in vars(base):
            return vars(base)[name]
    raise AttributeError(f"{cls.__name__} inherits no {name!r}")


def _guarded(
    function: Callable,
    name: str,
    use: str,
    describe: Callable,
    owner: type[Any],
    error: Callable[[Any, str, str, str, str], Exception] | None = None,
    starts: Callable[[Any, str], None] | None = None,
) -> Callable:
    """``function`` refusing async aliases; the method it calls is looked up
    past ``owner`` at each call (``function``, unless patched since), after
    ``starts(receiver, name)`` if given."""

    @functools.wraps(function)
    def guarded(receiver: Any, *args: Any, **kwargs: Any) -> Any:
        is_async, target, alias = describe(receiver)
        if is_async:
            if error is not None:
                raise error(receiver, target, name, alias, use)
            raise blocking_call_error(target, name, alias, use)
        if starts is not None:
            starts(receiver, name)
        return getattr(super(owner, receiver), name)(*args, **kwargs)

    return guarded
