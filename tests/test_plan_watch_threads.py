"""A plan built in one thread while another thread's refresh forgets every plan
(a field setting or field method changed) is not kept: kept, it would be
stale (built from the old values) and unwatched (its watch forgotten), so the
change would never be seen. Each test pauses the building thread right after
its plan is built, before it is kept, and makes the change meanwhile (or
makes the change where another thread's refresh could be)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import mongoengine
import pytest
from bson import ObjectId

from mongoengine_async import Document, StringField, from_bson, plan_watch, to_bson


class _Upper(StringField):
    def to_python(self, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class PwChosen(Document):
    s = StringField(choices=["a", "b"])


class PwLoaded(Document):
    s = _Upper()


class PwOwned(Document):  # (loaded by one test only)
    s = _Upper()


class PwUnloaded(Document):  # (loaded by one test only)
    s = _Upper()


def _built_paused(
    module: Any, build: Callable[[], Any], change: Callable[[], None]
) -> None:
    """``build()`` in a thread whose plan (``module._Plan``) pauses once built,
    while this thread makes ``change()``; then the thread keeps its plan."""
    built, go = threading.Event(), threading.Event()
    original = module._Plan
    module._Plan = _pausing(original, built, go)
    try:
        _in_builder(build, change, built, go)
    finally:
        module._Plan = original


def _pausing(plan: Any, built: threading.Event, go: threading.Event) -> Any:
    """``plan`` (a module's ``_Plan``), one built in the thread named
    ``builder`` pausing once built: ``built`` set, until ``go``."""

    class Paused(plan):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if threading.current_thread().name == "builder":
                built.set()
                assert go.wait(10)

    return Paused


def _in_builder(
    build: Callable[[], Any],
    change: Callable[[], None],
    built: threading.Event,
    go: threading.Event,
) -> None:
    """``build()`` in a thread named ``builder``, which the caller's patch
    pauses (``built`` set, waiting for ``go``); ``change()`` meanwhile."""
    errors: list[BaseException] = []
    builder = _builder(build, errors)
    try:
        builder.start()
        assert built.wait(10)
        change()
    finally:
        go.set()
        builder.join(10)
    assert not errors, errors


def _builder(build: Callable[[], Any], errors: list[BaseException]) -> threading.Thread:
    """A thread named ``builder`` running ``build()``, its error in ``errors``."""

    def run() -> None:
        try:
            build()
        except BaseException as error:  # (checked by the caller)
            errors.append(error)

    return threading.Thread(target=run, name="builder")


@pytest.fixture
def choices_restored() -> Iterator[None]:
    yield
    PwChosen.s.choices = ["a", "b"]
    plan_watch.refresh(PwChosen)


def test_a_write_plan_built_across_a_change_of_choices_is_not_kept(
    choices_restored: None,
) -> None:
    def change() -> None:
        PwChosen.s.choices = ["a"]
        PwChosen(s="a").validate()  # (its refresh forgets every plan)

    _built_paused(to_bson, lambda: PwChosen(s="a").validate(), change)
    with pytest.raises(mongoengine.ValidationError, match="must be one of"):
        PwChosen(s="b").validate()  # as MongoEngine's validate


def test_a_load_plan_built_across_a_patched_to_python_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    son = {"_id": ObjectId(), "s": "x"}

    def change() -> None:
        monkeypatch.setattr(_Upper, "to_python", lambda self, value: f"{value}!")
        from_bson.from_son(PwLoaded, dict(son))  # (its refresh forgets every plan)

    _built_paused(from_bson, lambda: from_bson.from_son(PwLoaded, dict(son)), change)
    assert from_bson.from_son(PwLoaded, dict(son)).s == "x!"


def test_keep_drops_a_plan_whose_build_a_refresh_crossed() -> None:
    """The mechanism: a plan kept after a refresh forgot every plan (from the
    stamp read before its build) is dropped; one kept with no refresh
    between stays."""
    cache: dict[type, Any] = {}
    since = plan_watch.generation()
    assert plan_watch.keep(cache, PwChosen, "plan", since) == "plan"
    assert cache == {PwChosen: "plan"}
    cache.clear()
    since = plan_watch.generation()
    from_bson.from_son(PwChosen, {"_id": ObjectId(), "s": "a"})  # (watched)
    PwChosen.s.choices = ["b"]
    try:
        plan_watch.refresh(PwChosen)  # the change met: every plan forgotten
        assert plan_watch.keep(cache, PwChosen, "stale", since) == "stale"
        assert cache == {}
    finally:
        PwChosen.s.choices = ["a", "b"]
        plan_watch.refresh(PwChosen)


def test_a_reference_loader_made_across_a_change_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``owned_loader`` (a reference's fetch) keeps the loader it made: made
    from a plan that a refresh forgot between its check and its store, it is
    not kept (kept, no later refresh would forget it)."""
    son = {"_id": ObjectId(), "s": "x"}
    built, go = threading.Event(), threading.Event()
    slot = from_bson._Plan.__dict__["owning_loader"]

    class Paused(from_bson._Plan):  # type: ignore[misc, name-defined]
        @property
        def owning_loader(self) -> Any:
            value = slot.__get__(self)
            if (
                threading.current_thread().name == "builder"
                and sys._getframe(1).f_code is from_bson.owned_loader.__code__
            ):  # owned_loader's check of the loader it made, before its store
                built.set()
                assert go.wait(10)
            return value

        @owning_loader.setter
        def owning_loader(self, value: Any) -> None:
            slot.__set__(self, value)

    def change() -> None:
        monkeypatch.setattr(_Upper, "to_python", lambda self, value: f"{value}!")
        from_bson.from_son(PwOwned, dict(son))  # (its refresh forgets every plan)

    monkeypatch.setattr(from_bson, "_Plan", Paused)
    _in_builder(lambda: from_bson.owned_loader(PwOwned), change, built, go)
    assert from_bson.owned_loader(PwOwned)(dict(son)).s == "x!"


def test_a_plan_built_while_a_refresh_forgets_is_watched(
    monkeypatch: pytest.MonkeyPatch, choices_restored: None
) -> None:
    """A plan of one class built while a refresh (a change of another class)
    forgets every plan is watched, or not kept: unwatched, no later change of
    its class would be seen. The builder runs where another thread could: as
    the refresh clears the watches, finding the old watch of its class."""
    son = {"_id": ObjectId(), "s": "x"}
    PwUnloaded(s="x").validate()  # watched (its write plan), no load plan yet
    PwChosen(s="a").validate()
    assert PwUnloaded not in from_bson._plans
    built, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    builder = _builder(lambda: from_bson._plan(PwUnloaded), errors)

    class Clearing(dict[type, Any]):
        def clear(self) -> None:
            if not built.is_set():  # (the refresh below)
                builder.start()
                assert built.wait(10)
            super().clear()

    watches = Clearing(plan_watch._watches)
    monkeypatch.setattr(from_bson, "_Plan", _pausing(from_bson._Plan, built, go))
    monkeypatch.setattr(plan_watch, "_watches", watches)
    try:
        PwChosen.s.choices = ["a"]
        PwChosen(s="a").validate()  # (its refresh forgets every plan)
    finally:
        go.set()
        builder.join(10)
    assert not errors, errors
    monkeypatch.undo()
    plan_watch._watches.clear()
    plan_watch._watches.update(watches)
    monkeypatch.setattr(_Upper, "to_python", lambda self, value: f"{value}!")
    assert from_bson.from_son(PwUnloaded, dict(son)).s == "x!"


def test_a_change_made_while_a_refresh_compares_is_seen(
    monkeypatch: pytest.MonkeyPatch, choices_restored: None
) -> None:
    """A refresh that finds only the fields' volatile attributes changed
    takes a new copy of their settings: a change made while it compares
    (another thread's) is not in it, and the next refresh meets it."""
    PwChosen(s="b").validate()  # (watched)
    PwChosen.s.set_auto_dereferencing(False)  # volatile: a copy taken anew
    differs = plan_watch._differs

    def changed_meanwhile(live: dict[str, Any], snapshot: dict[str, Any]) -> bool:
        result = differs(live, snapshot)
        PwChosen.s.choices = ["a"]
        return result

    monkeypatch.setattr(plan_watch, "_differs", changed_meanwhile)
    PwChosen(s="a").validate()
    monkeypatch.undo()
    with pytest.raises(mongoengine.ValidationError, match="must be one of"):
        PwChosen(s="b").validate()  # as MongoEngine's validate
