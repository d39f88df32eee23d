"""A plan built in one thread while another thread's refresh forgets every plan
(a field setting or field method changed) is not kept: kept, it would be
stale (built from the old values) and unwatched (its watch forgotten), so the
change would never be seen. Each test pauses the building thread right after
its plan is built, before it is kept, and makes the change meanwhile."""

from __future__ import annotations

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


def _built_paused(
    module: Any, build: Callable[[], Any], change: Callable[[], None]
) -> None:
    """``build()`` in a thread whose plan (``module._Plan``) pauses once built,
    while this thread makes ``change()``; then the thread keeps its plan."""
    built, go = threading.Event(), threading.Event()
    original = module._Plan

    class Paused(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if threading.current_thread().name == "builder":
                built.set()
                assert go.wait(10)

    module._Plan = Paused
    errors: list[BaseException] = []

    def run() -> None:
        try:
            build()
        except BaseException as error:  # (checked below)
            errors.append(error)

    builder = threading.Thread(target=run, name="builder")
    try:
        builder.start()
        assert built.wait(10)
        change()
    finally:
        go.set()
        builder.join(10)
        module._Plan = original
    assert not errors, errors


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
