"""What a cancelled write leaves to do once applied, when ``asyncio.run()``
ends as that work is about to start.

``asyncio.run()`` cancels every task still pending before its end waits for
the work a cancelled write left (see ``finish_before_close``): a task made in
the last loop iteration of the main coroutine has not started then, and its
coroutine never runs. The files of the documents a cancelled delete removed
were left so, found by nothing: either its follow-up task (the write ended
in main's last iteration) or, begun, the task deleting its first file (the
write ended one iteration before).

The same for a transaction's on-commit steps (the deletes of the files, on
another client, of the documents deleted in it): made in main's last loop
iteration, their task had not started and the steps never ran; begun, it was
cancelled in its first file's delete, and the steps after it never ran."""

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
    name = f"test_loop_end_{uuid4().hex[:12]}"
    yield name
    with MongoClient(mongodb_uri) as client:
        drop_database_sync(client, name)


# What each script below starts with: the reports the loop's exception
# handler gets go to ``reported`` (printed at the end), but those PyMongo
# 4.17's checkout generators may make, finalised under an operation of the
# work the loop's end waits for (docs/index.md).
_REPORTS = textwrap.dedent(
    """
    import asyncio, inspect, os
    from pymongo import AsyncMongoClient

    CHECKOUT_IS_A_GENERATOR = inspect.isasyncgenfunction(
        getattr(AsyncMongoClient._checkout, "__wrapped__", None))

    def pymongos_checkout(context):
        return (CHECKOUT_IS_A_GENERATOR
                and getattr(context.get("asyncgen"), "__qualname__", "")
                in ("AsyncMongoClient._checkout", "Pool.checkout",
                    "AsyncMongoClient._conn_from_server")
                and type(context.get("exception")) is RuntimeError
                and str(context["exception"]) in (
                    "generator didn't stop after athrow()",
                    "aclose(): asynchronous generator is already running"))

    reported = []

    def report_to_list():
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: pymongos_checkout(context)
            or reported.append(context["message"]))
    """
)


_DELETE_AS_MAIN_ENDS = textwrap.dedent(
    """
    from mongoengine_async import (
        Document, FileField, connect_async, get_async_connection)

    class EndFiled(Document):
        data = FileField(collection_name="end_files")

    async def main():
        report_to_list()
        await connect_async("{database}", host=os.environ["MONGODB_URI"],
                            appname="{app}", retryWrites=False)
        documents = [EndFiled() for _ in range(2)]
        for number, document in enumerate(documents):
            await document.data.async_put(b"contents %d" % number)
            await document.async_save()
        admin = get_async_connection().admin
        point = {{"configureFailPoint": "failCommand"}}
        entered = (await admin.command({{**point, "mode": {{"times": 1}}, "data": {{
            "failCommands": ["delete"], "blockConnection": True,
            "blockTimeMS": 300, "appName": "{app}"}}}}))["count"]
        before = asyncio.all_tasks()
        deleting = asyncio.ensure_future({delete})
        await admin.command({{"waitForFailPoint": "failCommand",
                             "timesEntered": entered + 1, "maxTimeMS": 30000}})
        # The task the delete's write goes on in once its caller is cancelled.
        write, = (task for task in asyncio.all_tasks() - before
                  if "detached" in task.get_coro().__qualname__)
        deleting.cancel()
        while not write.done():  # returns in the iteration it ended, or next
            await asyncio.sleep({pause})

    asyncio.run(main())
    print(*reported, sep="\\n")
    """
)


@pytest.mark.parametrize(
    "delete",
    ["documents[0].async_delete()", "EndFiled.objects.async_delete()"],
    ids=["document", "queryset"],
)
@pytest.mark.parametrize("pause", ["1e-6", "0"], ids=["timer", "next_iteration"])
def test_the_files_of_a_delete_whose_write_ends_as_main_returns(
    mongodb_uri, database, delete, pause
):
    """A delete (a document's, a queryset's) cancelled while its write is
    held on the server, and ``main`` returning as soon as it sees that write
    ended: polled by a timer (woken after the reply's I/O, it returns in the
    iteration the write ended: the steps after it start in a task made in
    the last iteration) or at the next iteration (returning one iteration
    later: those steps begin, the task deleting a file they make in the last
    iteration does not). The files of the deleted documents are deleted all
    the same, before the loop closes its client, nothing reported. The
    documents' delete had applied: they stayed, found by nothing."""
    script = _REPORTS + _DELETE_AS_MAIN_ENDS.format(
        database=database, app=f"end{uuid4().hex[:8]}", delete=delete, pause=pause
    )
    printed = run_script(script, mongodb_uri).stdout
    assert printed.strip() == ""
    with MongoClient(mongodb_uri) as client:
        stored = client[database]
        gone = 1 if delete.startswith("documents[0]") else 2
        assert stored.end_filed.count_documents({}) == 2 - gone
        assert stored.end_files.files.count_documents({}) == 2 - gone
        assert stored.end_files.chunks.count_documents({}) == 2 - gone


_COMMIT_AS_MAIN_ENDS = textwrap.dedent(
    """
    from mongoengine_async import (
        Document, FileField, async_run_in_transaction, connect_async,
        get_async_connection)

    class StepFiled(Document):
        data = FileField(db_alias="files", collection_name="step_files")

    def running(name):
        return any(name in task.get_coro().__qualname__
                   for task in asyncio.all_tasks())

    async def main():
        report_to_list()
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
    script = _REPORTS + _COMMIT_AS_MAIN_ENDS.format(
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


_FILES_DELETED_AS_MAIN_ENDS = textwrap.dedent(
    """
    from mongoengine_async import (
        Document, FileField, connect_async, get_async_connection)

    class PoolFiled(Document):
        data = FileField(collection_name="pool_files")

    async def main():
        report_to_list()
        await connect_async("{database}", host=os.environ["MONGODB_URI"],
                            appname="{app}")
        documents = [PoolFiled() for _ in range(2)]
        for number, document in enumerate(documents):
            await document.data.async_put(b"contents %d" % number)
            await document.async_save()
        admin = get_async_connection().admin
        await admin.command({{"configureFailPoint": "failCommand",
                             "mode": {{"times": 1}}, "data": {{
            "failCommands": ["delete"], "blockConnection": True,
            "blockTimeMS": 300, "appName": "{app}"}}}})
        go = asyncio.Event()

        async def delete(document):
            await go.wait()
            await document.data.async_delete()

        for document in documents:
            asyncio.ensure_future(delete(document))
        await asyncio.sleep(0)
        go.set()  # the deletes begin in main's last iteration

    asyncio.run(main())
    print(*reported, sep="\\n")
    """
)


def test_files_whose_deletes_begin_as_main_returns_share_one_connection(
    mongodb_uri, database
):
    """Two files' deletes begun as ``main`` returns (their tasks, made in its
    last iteration, cancelled before they began: run again as the loop ends),
    on a client of one connection, the first delete held on the server: the
    second waits for that connection as ``shutdown_asyncgens()`` begins. It
    finalises PyMongo's async generators, among them the one lending an
    operation its implicit session (``_tmp_session``), which ended the
    session under the waiting delete: it was never sent ("Cannot use ended
    session"), its file left. Both files are deleted, nothing reported."""
    script = _REPORTS + _FILES_DELETED_AS_MAIN_ENDS.format(
        database=database, app=f"pool{uuid4().hex[:8]}"
    )
    printed = run_script(script, mongodb_uri).stdout
    assert printed.strip() == ""
    with MongoClient(mongodb_uri) as client:
        stored = client[database]
        assert stored.pool_files.files.count_documents({}) == 0
        assert stored.pool_files.chunks.count_documents({}) == 0


_READS_AFTER_A_FAILED_DELETE = textwrap.dedent(
    """
    import mongoengine_async.gridfs
    from pymongo import monitoring
    from mongoengine_async import (
        Document, FileField, IntField, connect_async, get_async_connection)

    mongoengine_async.gridfs.LISTED_IDS_BYTES = 1  # a run of ids per document

    class PartFiled(Document):
        id = IntField(primary_key=True)
        data = FileField(db_alias="files", collection_name="part_files")

    started = []

    class Started(monitoring.CommandListener):
        def started(self, event):
            started.append(event.command_name)

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    async def main():
        report_to_list()
        uri = os.environ["MONGODB_URI"]
        # One connection: the reads after the delete's error wait for it.
        await connect_async("{database}", host=uri, appname="{app}",
                            retryWrites=False, maxPoolSize=1,
                            event_listeners=[Started()])
        await connect_async("{database}", alias="files", host=uri,
                            appname="files{app}")
        for number in range(2):
            document = PartFiled(id=number)
            await document.data.async_put(b"contents %d" % number)
            await document.async_save()
        pointing = AsyncMongoClient(uri)  # (connections of its own)
        admin = pointing.admin
        point = {{"configureFailPoint": "failCommand"}}
        # The delete of the second run of ids fails (the first applied).
        entered = (await admin.command({{**point, "mode": {{"skip": 1}}, "data": {{
            "failCommands": ["delete"], "errorCode": 2, "blockConnection": True,
            "blockTimeMS": 300, "appName": "{app}"}}}}))["count"]
        deleting = asyncio.ensure_future(
            PartFiled.objects.order_by("id").async_delete(
                write_concern={{"w": "majority"}}))
        await admin.command({{"waitForFailPoint": "failCommand",
                             "timesEntered": entered + 1, "maxTimeMS": 30000}})
        # Takes the connection as the failed delete gives it back; the reads
        # after its error wait for it as main returns.
        holding = asyncio.ensure_future(get_async_connection().admin.command(
            {{"sleep": 1, "millis": 3000, "lock": "none"}}))
        while "sleep" not in started:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        await admin.command({{**point, "mode": "off"}})
        await pointing.close()

    asyncio.run(main())
    print(*reported, sep="\\n")
    """
)


def test_the_reads_after_a_failed_delete_as_main_returns(mongodb_uri, database):
    """A delete (majority write concern, with files) failing on the server
    partway, its first run of ids applied, whose reads of what it left (in a
    causally consistent session of their own) wait for a connection as
    ``main`` returns: the loop's end cancels them, and they go on in a task
    of their own, begun then, which that end waits for, on their way as
    ``shutdown_asyncgens()`` begins. It finalises every async generator: the
    package lent those reads their session through one of its own
    (``after_failure``), which ended the session under them ("Cannot use
    ended session"): the file of the document deleted stayed, found by
    nothing, and two errors reported. It is deleted; the document the delete
    left keeps its file; nothing reported."""
    script = _REPORTS + _READS_AFTER_A_FAILED_DELETE.format(
        database=database, app=f"part{uuid4().hex[:8]}"
    )
    printed = run_script(script, mongodb_uri).stdout
    assert printed.strip() == ""
    with MongoClient(mongodb_uri) as client:
        stored = client[database]
        assert [raw["_id"] for raw in stored.part_filed.find()] == [1]
        assert stored.part_files.files.count_documents({}) == 1
        assert stored.part_files.chunks.count_documents({}) == 1


_UPLOAD_BEGUN_AS_MAIN_RETURNS = textwrap.dedent(
    """
    import io
    from mongoengine_async import Document, FileField, connect_async
    from mongoengine_async.gridfs import UPLOAD_BATCH_BYTES

    class UpFiled(Document):
        data = FileField(collection_name="up_files")

    data = os.urandom(2 * UPLOAD_BATCH_BYTES + 1000)
    uploads = []

    async def pieces():
        for start in range(0, len(data), 100_000):
            yield data[start:start + 100_000]

    async def main():
        report_to_list()
        await connect_async("{database}", host=os.environ["MONGODB_URI"])
        await UpFiled.objects.async_count()

        async def upload_once_cancelled():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                # Begun by the loop's end cancelling this task: the end waits
                # for the upload, on its way as shutdown_asyncgens() begins.
                uploads.append(asyncio.ensure_future(
                    UpFiled().data.async_put({source})))
                raise

        asyncio.ensure_future(upload_once_cancelled())
        await asyncio.sleep(0)

    asyncio.run(main())
    error = uploads[0].exception()
    print(*reported, sep="\\n")
    print("raised:", type(error).__name__, error)
    """
)


@pytest.mark.parametrize(
    ("source", "stored"),
    [("io.BytesIO(data)", False), ("pieces()", False), ("data", True)],
    ids=["file", "async_generator", "bytes"],
)
def test_an_upload_whose_data_is_read_as_the_loop_ends(
    mongodb_uri, database, source, stored
):
    """An upload the loop's end waits for (begun as it cancels the tasks
    left), reading its data (a file, an async generator) as that end's
    ``shutdown_asyncgens()`` begins. It closes every async generator of the
    loop: the upload's read of its data too, which so ended at the piece it
    had given, and the upload stored the bytes read until then as the whole
    file (a quarter of a megabyte of sixteen), nothing reported. It raises
    AsyncUsageError, storing nothing. Bytes, given whole, are stored whole."""
    script = _REPORTS + _UPLOAD_BEGUN_AS_MAIN_RETURNS.format(
        database=database, source=source
    )
    printed = run_script(script, mongodb_uri).stdout.splitlines()
    with MongoClient(mongodb_uri) as client:
        files = list(client[database].up_files.files.find())
        chunks = client[database].up_files.chunks.count_documents({})
    if stored:
        assert printed == ["", "raised: NoneType None"]
        assert [raw["length"] for raw in files] == [2 * 8 * 1024 * 1024 + 1000]
        assert chunks == -(-files[0]["length"] // files[0]["chunkSize"])
        return
    assert printed == [
        "",
        "raised: AsyncUsageError The read of the data to store was closed by its"
        " event loop's end (shutdown_asyncgens() closes every async generator of"
        " the loop at once): the rest of it was not read. Nothing of the file was"
        " stored: store it before the event loop ends",
    ]
    assert files == []
    assert chunks == 0


def test_the_files_of_a_delete_at_the_loop_end_under_resource_warnings_as_errors(
    mongodb_uri, database
):
    """The delete of :func:`test_the_files_of_a_delete_whose_write_ends_as_main_returns`
    (its steps re-run as the loop ends), ResourceWarnings raised as errors
    (``-W error``): each operation of those steps, begun once
    ``shutdown_asyncgens()`` had begun, begins PyMongo's ``_tmp_session``
    generator, which the loop warned of ("asynchronous generator ... was
    scheduled after loop.shutdown_asyncgens() call"), raised in the
    operation: the file's chunks stayed, found by nothing, and "The delete of
    a file whose caller was cancelled failed" reported. Both go, nothing
    reported."""
    script = (
        "import warnings\nwarnings.simplefilter('error', ResourceWarning)\n"
        + _REPORTS
        + _DELETE_AS_MAIN_ENDS.format(
            database=database,
            app=f"end{uuid4().hex[:8]}",
            delete="documents[0].async_delete()",
            pause="1e-6",
        )
    )
    printed = run_script(script, mongodb_uri).stdout
    assert printed.strip() == ""
    with MongoClient(mongodb_uri) as client:
        stored = client[database]
        assert stored.end_filed.count_documents({}) == 1
        assert stored.end_files.files.count_documents({}) == 1
        assert stored.end_files.chunks.count_documents({}) == 1
