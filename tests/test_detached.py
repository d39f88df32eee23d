"""``detached.detached`` and ``detached.to_completion``: a write that goes on
once its caller is cancelled. With ``detached`` the caller raises at once and
the write's task settles with its result (or ``FAILED``); with
``to_completion`` the caller waits for the write before it raises."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import weakref
from typing import Any

import pytest

from mongoengine_async.detached import (
    FAILED,
    acting_task,
    all_finished,
    detached,
    finish_before_close,
    held,
    left_undone,
    to_completion,
)


async def write(
    log: list[Any], gate: asyncio.Event | None = None, fail: bool = False
) -> int:
    """A write that ends once ``gate`` is set (at once without one): the
    tests order events by it, never by a delay a loaded machine outlasts."""
    log.append("began")
    if gate is not None:
        await gate.wait()
    await asyncio.sleep(0)  # (a bare yield)
    log.append("ended")
    if fail:
        raise ValueError("failed")
    return 42


async def test_awaited_it_is_the_write() -> None:
    outcome, task = detached(write([]))
    assert await outcome == 42
    assert await task == 42
    outcome, task = detached(write([], fail=True))
    with pytest.raises(ValueError, match="failed"):
        await outcome
    assert await task is FAILED


async def cancel_midway(outcome: asyncio.Future[Any], log: list[Any]) -> None:
    """Cancel a caller awaiting ``outcome`` once its write began; it raises
    at once: in a loop iteration or two, the write held meanwhile."""

    async def caller() -> Any:
        return await outcome

    task = asyncio.ensure_future(caller())
    while not log:  # (the write began)
        await asyncio.sleep(0)
    task.cancel("why")
    for _ in range(10):  # (a caller waiting for the write would not be done)
        await asyncio.sleep(0)
    assert task.done()
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await task
    if sys.version_info >= (3, 11):  # (3.10 drops the message on the way)
        assert cancelled.value.args == ("why",)


async def test_cancelled_the_caller_raises_at_once_and_the_write_goes_on() -> None:
    log: list[Any] = []
    gate = asyncio.Event()
    outcome, task = detached(write(log, gate))
    await cancel_midway(outcome, log)
    assert not task.done()  # (raised while the write goes on)
    gate.set()
    assert await task == 42
    assert log == ["began", "ended"]


async def test_a_failed_write_gone_on_settles_with_failed() -> None:
    log: list[Any] = []
    gate = asyncio.Event()
    outcome, task = detached(write(log, gate, fail=True))
    await cancel_midway(outcome, log)
    gate.set()
    assert await task is FAILED
    assert log == ["began", "ended"]


async def test_cancelled_again_and_again_it_goes_on() -> None:
    log: list[Any] = []
    gate = asyncio.Event()
    outcome, write_task = detached(write(log, gate))

    async def caller() -> Any:
        return await outcome

    task = asyncio.ensure_future(caller())
    while not log:  # (the write began)
        await asyncio.sleep(0)
    for _ in range(5):  # as an anyio cancel scope delivers it
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not write_task.done()
    gate.set()
    assert await write_task == 42
    assert log == ["began", "ended"]


async def test_a_timeout_around_it() -> None:
    log: list[Any] = []
    gate = asyncio.Event()
    outcome, task = detached(write(log, gate))
    timed = asyncio.ensure_future(asyncio.wait_for(outcome, 0.05))
    # (bounded: a caller that waits for the write would wait for ever)
    await asyncio.wait({timed}, timeout=30)
    timed_out, went_on = timed.done(), not task.done()
    gate.set()
    with pytest.raises(asyncio.TimeoutError):  # (not TimeoutError on 3.10)
        await timed
    assert timed_out
    assert went_on
    assert await task == 42
    assert log == ["began", "ended"]


async def test_to_completion_waits_for_the_write() -> None:
    # The write goes on until the test lets it end (a fixed delay measured
    # against the clock failed on a slow machine): the cancelled caller
    # raises only then.
    log: list[Any] = []
    let_end = asyncio.Event()

    async def gated_write() -> int:
        log.append("began")
        await let_end.wait()
        log.append("ended")
        return 42

    async def caller() -> Any:
        try:
            return await to_completion(gated_write())
        except asyncio.CancelledError:
            log.append("caller raised")
            raise

    task = asyncio.ensure_future(caller())
    while not log:  # (the write began)
        await asyncio.sleep(0)
    task.cancel()
    for _ in range(10):  # (a caller not waiting raises in one or two)
        await asyncio.sleep(0)
    assert not task.done()
    let_end.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["began", "ended", "caller raised"]


async def test_a_callback_in_the_context_of_a_collected_write_works_for_no_task() -> (
    None
):
    """A loop callback run in the context of a write's task (captured while
    it ran) works for no task once that task is gone, as outside detached():
    not for the task that started the write."""
    contexts: list[contextvars.Context] = []

    async def capture() -> None:
        contexts.append(contextvars.copy_context())

    outcome, task = detached(capture())
    await outcome
    del task, outcome
    gc.collect()
    seen: list[Any] = []
    asyncio.get_running_loop().call_soon(
        lambda: seen.append(acting_task()), context=contexts[0]
    )
    await asyncio.sleep(0)
    assert seen == [None]


def test_a_loops_end_waits_while_another_threads_loop_adds_tasks() -> None:
    """``all_finished`` (a loop's end, closing its clients) while a loop in
    another thread adds and ends tasks it waits for (its deletes' files):
    it reads the tasks of its own loop undisturbed. It iterated the set the
    other thread changed: "Set changed size during iteration", raised in the
    loop's shutdown, its clients left open."""
    stop = threading.Event()

    async def churn() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            futures = [
                finish_before_close(loop.create_future(), "work") for _ in range(500)
            ]
            for future in futures:
                future.set_result(None)
            await asyncio.sleep(0)

    async def ends() -> None:
        for _ in range(2000):
            await all_finished(60)

    other = threading.Thread(target=asyncio.run, args=(churn(),))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # (threads switching all the time)
    other.start()
    try:
        asyncio.run(ends())
    finally:
        stop.set()
        other.join()
        sys.setswitchinterval(interval)


def test_work_a_loop_closed_by_hand_left_undone_is_reported() -> None:
    """A task of ``finish_before_close`` whose loop was closed by hand
    (``loop.close()`` alone: no ``shutdown_asyncgens()``, which waits for it)
    never ends: its loop's exception handler is told so, once, naming its
    work. Nothing said so: the files of deleted documents stayed, unnoticed.
    Tasks done, or of a loop still open, are not reported."""
    loop = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))

    async def main() -> asyncio.Future[Any]:
        done = finish_before_close(asyncio.ensure_future(asyncio.sleep(0)), "done")
        await done
        return finish_before_close(
            asyncio.ensure_future(asyncio.sleep(3600)), "delete of the files"
        )

    left = loop.run_until_complete(main())
    left_undone()
    assert reported == []  # (its loop is open yet)
    loop.close()
    left_undone()
    left_undone()
    assert reported == [
        {
            "message": "The event loop closed before the delete of the files ended:"
            " the rest of it is not done (close a loop you run yourself after"
            " loop.run_until_complete(loop.shutdown_asyncgens()), as"
            " asyncio.run() does)",
            "task": left,
        }
    ]
    left.get_coro().close()  # type: ignore[union-attr]  # (never awaited otherwise)


def test_work_a_loop_closed_by_hand_left_undone_is_let_go_of() -> None:
    """Such a task, held until done (as a file's delete cut short is), is let
    go of once reported (when a loop next needs a client): it never ends, and
    its set kept it, its coroutine's frame (documents, data) with it, until
    the process exited; one per loop closed so, in a process closing a loop
    of its own per thread or request. Reported once all the same."""
    loop = asyncio.new_event_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
    holding: set[asyncio.Future[Any]] = set()

    async def main() -> weakref.ref[asyncio.Future[Any]]:
        task = held(asyncio.sleep(3600), holding, "sleep")
        return weakref.ref(finish_before_close(task, "delete of the files"))

    left = loop.run_until_complete(main())
    loop.close()
    left_undone()
    left_undone()
    gc.collect()
    assert holding == set()
    assert left() is None
    assert reported == [
        "The event loop closed before the delete of the files ended: the rest of"
        " it is not done (close a loop you run yourself after"
        " loop.run_until_complete(loop.shutdown_asyncgens()), as asyncio.run()"
        " does)",
        "Task was destroyed but it is pending!",  # (asyncio's, as it is collected)
    ]


def test_work_a_loops_end_stops_waiting_for_is_reported_once() -> None:
    """``all_finished(seconds)`` (a loop's end) stops waiting once ``seconds``
    are spent (the server holding that work does not answer): the task left
    is reported then, once, and not again as its loop is closed."""
    loop = asyncio.new_event_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["message"]))

    async def main() -> None:
        work = asyncio.ensure_future(asyncio.sleep(3600))
        finish_before_close(work, "delete of the files")
        await all_finished(0.01)

    loop.run_until_complete(main())
    loop.close()
    left_undone()
    gc.collect()
    assert reported == [
        "The event loop's end stopped waiting for the delete of the files after"
        " 0.01 s (the most it waits for such work and to close its clients): the"
        " rest of it may not be done",
        "Task was destroyed but it is pending!",  # (asyncio's, as it is collected)
    ]


async def test_a_disconnect_waits_for_the_work_a_done_task_of_another_loop_starts() -> (
    None
):
    """A task of another thread's loop is done, its callbacks not run yet
    (one of them starts the next step, a deleted document's files, needing
    the alias too), as a disconnect of that alias looks: it waits for that
    step. It skipped the done task and returned before the step began, so
    the disconnect closed the alias under it."""
    stepped, let_run, waiting = threading.Event(), threading.Event(), threading.Event()
    next_step: list[asyncio.Future[Any]] = []

    async def other_loop() -> None:
        loop = asyncio.get_running_loop()
        write, step = loop.create_future(), loop.create_future()

        def start_next_step(_: Any) -> None:
            next_step.append(finish_before_close(step, "next step", ["a"]))

        write.add_done_callback(start_next_step)
        finish_before_close(write, "write", ["a"])
        write.set_result(None)  # (its callbacks run once this callback ends)
        stepped.set()
        let_run.wait(60)  # (while the disconnect looks)
        await asyncio.to_thread(waiting.wait, 60)
        step.set_result(None)

    thread = threading.Thread(target=asyncio.run, args=(other_loop(),))
    thread.start()
    try:
        assert await asyncio.to_thread(stepped.wait, 60)
        disconnecting = asyncio.ensure_future(all_finished(60, aliases=frozenset("a")))
        await asyncio.sleep(0)
        assert not disconnecting.done()
        let_run.set()
        while not next_step:  # (the step began)
            await asyncio.sleep(0.01)
        assert not disconnecting.done()
        waiting.set()
        await disconnecting
        assert next_step[0].done()
    finally:
        let_run.set()
        waiting.set()
        await asyncio.to_thread(thread.join)


async def test_a_held_tasks_repr_does_not_show_the_others_held() -> None:
    """A held task's repr (in a report to the loop's exception handler, such
    as a task its closed loop left undone) names its done callback, not the
    set of tasks held with it: through their callbacks, each repr'ing that set
    again, Python 3.10 took over a minute to repr one task of a few."""
    tasks: set[asyncio.Future[Any]] = set()
    release = asyncio.Event()
    for _ in range(3):
        held(release.wait(), tasks)
    shown = repr(next(iter(tasks)))
    release.set()
    await asyncio.gather(*tasks)
    assert shown.count("<Task") == 1, shown
