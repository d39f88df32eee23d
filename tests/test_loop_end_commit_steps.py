"""A transaction's on-commit steps (the deletes of the files, on another
client, of the documents deleted in it) when ``asyncio.run()`` ends as they
are about to run, or while they run.

``asyncio.run()`` cancels every task still pending before its end waits for
the steps' task (see ``finish_before_close``): made in the last loop
iteration of the main coroutine, that task had not started, and the steps
never ran; begun, it was cancelled in its first file's delete (which goes on
in a task of its own), and the steps after it never ran. Either way the files
of the deleted documents stayed, found by nothing."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from uuid import uuid4

import pytest
from pymongo import MongoClient

from conftest import drop_database_sync, run_script


@pytest.fixture
def database(mongodb_uri: str) -> Iterator[str]:
    """A fresh database name, dropped afterwards."""
    name = f"test_loop_end_steps_{uuid4().hex[:12]}"
    yield name
    with MongoClient(mongodb_uri) as client:
        drop_database_sync(client, name)


_COMMIT_AS_MAIN_ENDS = textwrap.dedent(
    """
    import asyncio, inspect, os
    from pymongo import AsyncMongoClient
    from mongoengine_async import (
        Document, FileField, async_run_in_transaction, connect_async,
        get_async_connection)

    # PyMongo 4.17's checkout generators, finalised under an operation of the
    # work the loop's end waits for, may make one report (docs/index.md).
    CHECKOUT_IS_A_GENERATOR = inspect.isasyncgenfunction(
        getattr(AsyncMongoClient._checkout, "__wrapped__", None))

    def pymongos_checkout(context):
        return (CHECKOUT_IS_A_GENERATOR
                and getattr(context.get("asyncgen"), "__qualname__", "")
                == "AsyncMongoClient._checkout"
                and type(context.get("exception")) is RuntimeError
                and str(context["exception"]) == "generator didn't stop after athrow()")

    class StepFiled(Document):
        data = FileField(db_alias="files", collection_name="step_files")

    reported = []

    def running(name):
        return any(name in task.get_coro().__qualname__
                   for task in asyncio.all_tasks())

    async def main():
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: pymongos_checkout(context)
            or reported.append(context["message"]))
        uri = os.environ["MONGODB_URI"]
        await connect_async("{database}", host=uri, appname="{app}",
                            retryWrites=False)
        # The files' client: another one (its own appname), out of the
        # transaction, whose file deletes wait for its commit.
        await connect_async("{database}", alias="files", host=uri,
                            appname="files{app}")
        for number in range({files}):
            document = StepFiled()
            await document.data.async_put(b"contents %d" % number)
            await document.async_save()
        admin = get_async_connection().admin
        point = {{"configureFailPoint": "failCommand"}}
        entered = (await admin.command({{**point, "mode": {{"times": 1}}, "data": {{
            "failCommands": ["commitTransaction"], "blockConnection": True,
            "blockTimeMS": 300, "appName": "{app}"}}}}))["count"]

        async def delete():
            async with async_run_in_transaction():
                await StepFiled.objects.async_delete()

        before = asyncio.all_tasks()
        asyncio.ensure_future(delete())
        await admin.command({{"waitForFailPoint": "failCommand",
                             "timesEntered": entered + 1, "maxTimeMS": 30000}})
        # The task committing the block's transaction.
        commit, = (task for task in asyncio.all_tasks() - before
                   if "_transact" in task.get_coro().__qualname__)
        while not commit.done():
            await asyncio.sleep(0)
        while {until_deleting} and not running("_delete_both_surely"):
            await asyncio.sleep(0)

    asyncio.run(main())
    print(*reported, sep="\\n")
    """
)


@pytest.mark.parametrize(
    ("files", "until_deleting"),
    [(1, False), (3, True)],
    ids=["as_they_start", "in_the_first_file"],
)
def test_the_files_of_a_transaction_committed_as_main_returns(
    mongodb_uri, database, files, until_deleting
):
    """Documents whose files are on another client deleted in a transaction,
    in a task, and ``main`` returning as soon as it sees the commit ended
    (the steps after it start in a task made in that last iteration), or once
    the delete of the first file is under way (the loop's end cancels the
    steps there). The files of the deleted documents are deleted all the
    same, before the loop closes its clients, nothing reported."""
    script = _COMMIT_AS_MAIN_ENDS.format(
        database=database,
        app=f"steps{uuid4().hex[:8]}",
        files=files,
        until_deleting=until_deleting,
    )
    printed = run_script(script, mongodb_uri).stdout
    assert printed.strip() == ""
    with MongoClient(mongodb_uri) as client:
        stored = client[database]
        assert stored.step_filed.count_documents({}) == 0
        assert stored.step_files.files.count_documents({}) == 0
        assert stored.step_files.chunks.count_documents({}) == 0
