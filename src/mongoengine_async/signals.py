"""MongoEngine's signals, sent from async operations.

The signals are MongoEngine's own objects (receivers connected to
``mongoengine.signals.post_save`` see async saves too). Receivers that are
coroutine functions are awaited; plain ones are called. The module has every
name of ``mongoengine.signals`` (``signals_available``, ``Namespace`` for
signals of your own), so that ``from mongoengine import signals`` can become
``from mongoengine_async import signals``.
"""

from __future__ import annotations

import contextlib
import inspect
import types
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

from mongoengine import signals
from mongoengine.signals import (
    Namespace,
    post_bulk_insert,
    post_delete,
    post_init,
    post_save,
    pre_bulk_insert,
    pre_delete,
    pre_init,
    pre_save,
    pre_save_post_validation,
    signals_available,
)

from mongoengine_async.context import receiving
from mongoengine_async.same_named import mongoengine_attribute

__all__ = (
    "Namespace",
    "has_delete_receivers",
    "has_init_receivers",
    "has_receivers",
    "post_bulk_insert",
    "post_delete",
    "post_init",
    "post_save",
    "pre_bulk_insert",
    "pre_delete",
    "pre_init",
    "pre_save",
    "pre_save_post_validation",
    "send",
    "signals_available",
    "unless_muted",
)


def has_receivers(signal: Any, sender: type[Any]) -> bool:
    """Whether ``signal`` has live receivers for ``sender`` (False without blinker,
    and inside ``signal.muted()``, where blinker's ``send`` calls none).

    blinker's ``has_receivers_for`` stays true for a sender once connected, even
    after its receivers were disconnected; ``receivers_for`` looks at who is left.
    Most signals have no receiver at all: their empty ``receivers`` says so first.
    """
    return (
        signals.signals_available
        and bool(signal.receivers)
        and not _muted(signal)
        and signal.has_receivers_for(sender)
        and any(True for _ in signal.receivers_for(sender))
    )


def has_init_receivers() -> bool:
    """Whether ``pre_init`` or ``post_init`` has any receiver, for any sender
    (False without blinker, whose stand-in signals have no ``receivers``)."""
    return signals.signals_available and bool(pre_init.receivers or post_init.receivers)


def has_delete_receivers(sender: type[Any]) -> bool:
    """Whether deleting a ``sender`` document has signal receivers to call."""
    return has_receivers(pre_delete, sender) or has_receivers(post_delete, sender)


def unless_muted(signal: Any, kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
    """``kwargs``, or None while ``signal`` is muted (blinker's ``muted()``):
    what a write cancelled in a muted block passes to the steps that follow
    it once it landed, which then send nothing, as its block's send would
    have (even if the block has ended by then)."""
    if kwargs is None or (signals.signals_available and _muted(signal)):
        return None
    return kwargs


def _muted(signal: Any) -> bool:
    """Whether ``signal`` is in a ``muted()`` block. blinker before 1.6 (a
    plain install keeps the one it finds, as MongoEngine does) has no
    ``muted()``, nor ``is_muted``: its signals are never muted."""
    return getattr(signal, "is_muted", False)


async def send(signal: Any, sender: type[Any], **kwargs: Any) -> None:
    """Call every receiver of ``signal`` for ``sender``, awaiting coroutines."""
    await send_around(signal, sender, None, kwargs)


async def send_around(
    signal: Any,
    sender: type[Any],
    around: Callable[[], contextlib.AbstractContextManager[Any]] | None,
    kwargs: dict[str, Any],
) -> None:
    """:func:`send`, each receiver run inside ``around()``: a plain one
    whole, a coroutine function's body a step at a time (each stretch up to
    its next wait; while it waits, other tasks see what they would without
    ``around``)."""
    if not has_receivers(signal, sender):
        return
    with receiving():  # (a task a receiver starts: in which transaction)
        for receiver in list(signal.receivers_for(sender)):
            if around is None:
                result = receiver(sender, **kwargs)
            else:
                with around():
                    result = receiver(sender, **kwargs)
            if inspect.isawaitable(result):
                await (result if around is None else _stepped(result, around))


@types.coroutine
def _stepped(
    awaitable: Awaitable[Any],
    around: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Generator[Any, Any, Any]:
    """Await ``awaitable``, each step of it (up to its next wait) run inside
    ``around()``; what it waits for is waited for outside it."""
    steps = awaitable.__await__()
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                with around():
                    waited = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value
            try:
                value, error = (yield waited), None
            except GeneratorExit:
                raise
            except BaseException as raised:  # (a cancellation too): into it
                value, error = None, raised
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()


if not TYPE_CHECKING:  # (checkers see this module's own names alone)

    def __getattr__(name: str) -> Any:
        """MongoEngine's ``mongoengine.signals.<name>`` where this module has no
        ``name`` (see :mod:`mongoengine_async.same_named`)."""
        return mongoengine_attribute(__name__, name)
