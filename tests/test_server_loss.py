"""The server going away mid-operation: a prompt driver error, no hang, no lost data.

Each test runs its own throwaway replica set, so stopping it cannot disturb the
rest of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import PyMongoError

import mongoengine_async.gridfs
from conftest import run_script
from mongoengine_async import (
    CASCADE,
    NULLIFY,
    Document,
    FileField,
    IntField,
    OperationError,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    connect_async,
    disconnect_async,
    get_async_db,
    is_transient,
    signals,
)
from mongoengine_async.testing import ReplicaSet

ALIAS = "lossy"


class LossNote(Document):
    text = StringField()
    n = IntField()
    meta = {"db_alias": ALIAS}


class LossOwner(Document):
    name = StringField()
    meta = {"db_alias": ALIAS}


class LossItem(Document):
    owner = ReferenceField(LossOwner, reverse_delete_rule=CASCADE)
    meta = {"db_alias": ALIAS}


@pytest.fixture
async def server():
    """A replica set of this test's own, connected as alias "lossy"."""
    replica_set = ReplicaSet().start()
    await connect_async(
        db="loss",
        alias=ALIAS,
        host=replica_set.uri,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=1500,
    )
    try:
        yield replica_set
    finally:
        await disconnect_async(ALIAS)
        replica_set.stop()


async def stop(replica_set: ReplicaSet) -> None:
    await asyncio.to_thread(replica_set.stop)


async def test_streaming_raises_when_the_server_goes_away(server):
    await LossNote.objects.async_insert([LossNote(n=n) for n in range(50)])
    seen = []

    async def read_all() -> None:
        async for note in LossNote.objects.order_by("n").batch_size(5):
            seen.append(note.n)
            if len(seen) == 5:
                await stop(server)

    with pytest.raises(PyMongoError):
        await asyncio.wait_for(read_all(), 30)
    assert seen[:5] == [0, 1, 2, 3, 4]
    assert len(seen) < 50


async def test_a_failed_save_keeps_the_changes_to_save_later(server):
    note = await LossNote(text="draft", n=1).async_save()
    note.text = "final"
    await stop(server)
    with pytest.raises(PyMongoError):
        await asyncio.wait_for(note.async_save(), 30)
    assert note.text == "final"
    assert note._get_changed_fields() == ["text"]


async def test_a_cascade_interrupted_by_server_loss_raises_promptly(server):
    owner = await LossOwner(name="o").async_save()
    await LossItem.objects.async_insert([LossItem(owner=owner) for _ in range(20)])
    await stop(server)
    # Its transaction retries transient errors (a lost server is one) for 120 s,
    # as the convenient-transactions spec says, unless a PyMongo timeout ends it.
    # The timeout is an OperationFailure: Document.delete reports it wrapped.
    with pytest.raises(OperationError) as error, pymongo.timeout(3):
        await asyncio.wait_for(owner.async_delete(), 30)
    assert isinstance(error.value.__cause__, pymongo.errors.ExecutionTimeout)
    # The timeout keeps the label of the last attempt's error (docs/delete_rules.md).
    assert is_transient(error.value)


class LossFarOwner(Document):
    """Kept on a replica set of its own (alias ``FAR``), which a test loses."""

    meta = {"db_alias": "lossy_far"}


class LossNearItem(Document):
    owner = ReferenceField(LossFarOwner, reverse_delete_rule=CASCADE)
    meta = {"db_alias": ALIAS}


class LossBox(Document):
    pdf = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class LossLeaf(Document):
    box = ReferenceField(LossBox, reverse_delete_rule=CASCADE)
    pdf = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class StopAtBoxDelete(monitoring.CommandListener):
    """Stops the replica set as the ``at``-th delete of the boxes is sent
    (or, ``then_find``, the first find after a delete failed)."""

    def __init__(self, at: int, then_find: bool = False) -> None:
        self.replica_set: ReplicaSet | None = None  # (set: armed)
        self.at = at
        self.then_find = then_find
        self.deletes = 0
        self.failed_deletes = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.replica_set is None:
            return
        if event.command_name == "find":
            if self.then_find and self.failed_deletes:
                self.then_find = False
                self.replica_set.stop()
        elif (
            event.command_name == "delete"
            and event.command["delete"] == LossBox._get_collection_name()
        ):
            self.deletes += 1
            if self.deletes == self.at:
                self.replica_set.stop()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if self.replica_set is not None and event.command_name == "delete":
            self.failed_deletes += 1


def failed_selections(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The operations whose server selection timed out (PyMongo's log)."""
    return [
        json.loads(record.getMessage())["operation"]
        for record in caplog.records
        if record.name == "pymongo.serverSelection"
        and "Server selection failed" in record.getMessage()
    ]


def waited_one_selection(caplog: pytest.LogCaptureFixture, cut_short: bool) -> bool:
    """Whether a delete that lost its server as its write was sent waited one
    whole server selection: its steps' first read's, or its write retry's
    (which PyMongo may still send to the server it knew: then only the read
    waits), whose selection a client ``timeoutMS`` may cut short (then the
    read waits too)."""
    failed = failed_selections(caplog)
    return failed in (["find"], ["delete", "find"] if cut_short else ["delete"])


@asynccontextmanager
async def lossy_set(
    listener: monitoring.CommandListener | None = None, **options: Any
) -> AsyncIterator[ReplicaSet]:
    """``ALIAS`` connected to a replica set of its own, with ``listener`` (if
    any) and the client ``options``."""
    replica_set = ReplicaSet().start()
    await connect_async(
        db="loss",
        alias=ALIAS,
        host=replica_set.uri,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=1500,
        event_listeners=[] if listener is None else [listener],
        **options,
    )
    try:
        # Its primary known first: a short timeoutMS (options) could run out
        # on a loaded machine before the new set's first write selects it.
        with pymongo.timeout(30):
            await get_async_db(ALIAS).command("ping")
        yield replica_set
    finally:
        await disconnect_async(ALIAS)
        replica_set.stop()


async def until_no_primary(client: Any) -> None:
    """Wait (up to 10 s) until ``client``'s monitor knows no writable server."""
    for _ in range(200):
        if not client.topology_description.has_writable_server():
            return
        await asyncio.sleep(0.05)


@asynccontextmanager
async def stopped_at_box_delete(
    at: int, then_find: bool = False, **options: Any
) -> AsyncIterator[tuple[StopAtBoxDelete, ReplicaSet]]:
    """:func:`lossy_set`, whose replica set the listener stops as the
    ``at``-th delete of the boxes is sent (or ``then_find``: see
    :class:`StopAtBoxDelete`), once armed (its ``replica_set`` set)."""
    cut = StopAtBoxDelete(at, then_find)
    async with lossy_set(cut, **options) as replica_set:
        yield cut, replica_set


async def box_with_a_leaf() -> LossBox:
    """A saved LossBox, and a LossLeaf cascading from it, each with a file."""
    box = LossBox()
    await box.pdf.async_put(b"box")
    await box.async_save()
    leaf = LossLeaf(box=box)
    await leaf.pdf.async_put(b"leaf")
    await leaf.async_save()
    return box


async def test_a_delete_losing_its_server_partway_waits_one_server_selection(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its cleanups (the cascaded documents still there, for their files and
    # post_delete; its own documents still there, for theirs) share one
    # give-up: after one server selection timed out, none is tried, and the
    # delete's own error comes (each used to wait serverSelectionTimeoutMS).
    sent: list[LossLeaf] = []
    receiver = lambda sender, document, **kwargs: sent.append(document)  # noqa: E731
    signals.post_delete.connect(receiver, sender=LossLeaf)
    try:
        async with stopped_at_box_delete(2) as (cut, replica_set):
            for _ in range(4):
                await box_with_a_leaf()
            monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", 2 * 21)
            caplog.set_level("DEBUG", logger="pymongo.serverSelection")
            cut.replica_set = replica_set
            with pytest.raises(pymongo.errors.AutoReconnect) as error:
                await asyncio.wait_for(
                    LossBox.objects.async_delete(transaction=False), 30
                )
            assert cut.deletes == 2
            assert not isinstance(
                error.value, pymongo.errors.ServerSelectionTimeoutError
            )
            assert waited_one_selection(caplog, False), failed_selections(caplog)
            assert sent == []  # (which leaves are gone could not be read)
    finally:
        signals.post_delete.disconnect(receiver, sender=LossLeaf)


async def test_a_document_delete_on_a_lost_server_waits_one_server_selection(
    server: ReplicaSet, caplog: pytest.LogCaptureFixture
) -> None:
    # Its command never sent (its server selection timed out), the document
    # is there: no read asks whether its delete was applied all the same.
    box = LossBox()
    await box.pdf.async_put(b"box")
    await box.async_save()
    await stop(server)
    caplog.set_level("DEBUG", logger="pymongo.serverSelection")
    with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
        await asyncio.wait_for(box.async_delete(transaction=False), 30)
    assert len(failed_selections(caplog)) == 1


@pytest.mark.parametrize("options", [{}, {"timeoutMS": 500}])
async def test_a_document_delete_losing_its_server_waits_one_server_selection(
    caplog: pytest.LogCaptureFixture, options: dict[str, Any]
) -> None:
    # Its rules' cleanup (the cascaded documents still there) and its own
    # (whether it is gone) share one give-up. On a client whose operations
    # time out (timeoutMS) before a whole server selection, each step after
    # the failure waits a whole one (an election may outlast timeoutMS), but
    # the first timing out still gives the client up: the others are not
    # tried.
    async with stopped_at_box_delete(1, **options) as (cut, replica_set):
        box = await box_with_a_leaf()
        caplog.set_level("DEBUG", logger="pymongo.serverSelection")
        cut.replica_set = replica_set
        with pytest.raises(PyMongoError) as error:
            await asyncio.wait_for(box.async_delete(transaction=False), 30)
        assert cut.deletes == 1
        assert not isinstance(error.value, pymongo.errors.ServerSelectionTimeoutError)
        if not options:
            assert isinstance(error.value, pymongo.errors.AutoReconnect)
        assert waited_one_selection(caplog, bool(options)), failed_selections(caplog)


async def test_a_step_whose_retry_finds_no_server_gives_its_client_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The delete's write failing (its connection closed: the cascade's
    # multi delete, not retried), its steps' first read loses the server as
    # it is sent:
    # PyMongo retries it, and a retry whose server selection times out
    # raises the first attempt's error. That selection waited all the same:
    # the client is given up, the other steps are not tried.
    async with stopped_at_box_delete(0, then_find=True) as (cut, replica_set):
        box = await box_with_a_leaf()
        await box._get_collection().database.client.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": 1},
            data={"failCommands": ["delete"], "closeConnection": True},
        )
        caplog.set_level("DEBUG", logger="pymongo.serverSelection")
        cut.replica_set = replica_set
        with pytest.raises(pymongo.errors.AutoReconnect) as error:
            await asyncio.wait_for(box.async_delete(transaction=False), 30)
        assert cut.failed_deletes == 1  # (the leaves': a multi delete, not retried)
        assert "closed" in str(error.value)  # (the delete's own error)
        assert failed_selections(caplog) == ["find"]


async def delete_losing_its_server_before_its_write(
    replica_set: ReplicaSet, caplog: pytest.LogCaptureFixture
) -> pymongo.errors.ServerSelectionTimeoutError:
    """Delete an owner and its three items (``transaction=False``), the
    server lost (and known lost) before the first write: the error raised."""
    owner = await LossOwner(name="o").async_save()
    await LossItem.objects.async_insert([LossItem(owner=owner) for _ in range(3)])
    client = LossOwner._get_collection().database.client

    async def lose_server(sender: Any, document: Any, **kwargs: Any) -> None:
        if document.pk != items[0].pk:
            return
        await stop(replica_set)
        await until_no_primary(client)

    items = await LossItem.objects.order_by("id").async_to_list()
    caplog.set_level("DEBUG", logger="pymongo.serverSelection")
    signals.pre_delete.connect(lose_server, sender=LossItem)
    try:
        with pytest.raises(pymongo.errors.ServerSelectionTimeoutError) as error:
            await asyncio.wait_for(
                LossOwner.objects.async_delete(transaction=False), 30
            )
    finally:
        signals.pre_delete.disconnect(lose_server, sender=LossItem)
    assert not client.topology_description.has_writable_server()
    return error.value


async def test_a_delete_whose_write_times_out_selecting_waits_one_selection(
    server: ReplicaSet, caplog: pytest.LogCaptureFixture
) -> None:
    # Its server lost (and known lost) before its first write, that write
    # times out selecting a server: that client is given up at once, so its
    # cleanup (the items still there, for their post_delete) sends nothing,
    # and that error comes after one wait. Its read waited
    # serverSelectionTimeoutMS again.
    error = await delete_losing_its_server_before_its_write(server, caplog)
    assert failed_selections(caplog) == ["delete"]
    # (Its traceback is the write's: not one through a cleanup given up.)
    frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert "_delete" in frames
    assert "_after_failed_write" not in frames


async def test_a_first_write_cut_short_by_the_client_timeout_reads_nothing_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # On a client whose timeoutMS is shorter than serverSelectionTimeoutMS,
    # the write's selection cut short by it does not tell the server is gone
    # (an election may outlast timeoutMS), but it tells the write was not
    # sent (PyMongo raises a server selection time-out for a write only
    # then): none of the delete's writes sent, nothing changed, no cleanup
    # read waits a whole selection to learn which items are still there.
    async with stopped_at_box_delete(0, timeoutMS=500) as (_, replica_set):
        await delete_losing_its_server_before_its_write(replica_set, caplog)
        assert failed_selections(caplog) == ["delete"]


async def test_a_write_cut_short_after_one_sent_still_cleans_up(
    server: ReplicaSet, caplog: pytest.LogCaptureFixture
) -> None:
    # The cascade's write sent (the items' delete, on their client), the
    # roots' write cut short selecting a server (by the timeoutMS of their
    # client, whose server is lost): its cleanup still reads which items the
    # sent write deleted, and sends their post_delete.
    far = ReplicaSet().start()
    await connect_async(
        db="loss",
        alias="lossy_far",
        host=far.uri,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=1500,
        timeoutMS=500,
    )
    far_client = LossFarOwner._get_collection().database.client
    sent: list[Any] = []

    async def lose_far(sender: Any, document: Any, **kwargs: Any) -> None:
        if sent:  # (once: the first item's)
            return
        sent.append(None)
        await stop(far)
        await until_no_primary(far_client)

    async def note(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    try:
        owner = await LossFarOwner().async_save()
        items = [LossNearItem(owner=owner) for _ in range(3)]
        await LossNearItem.objects.async_insert(items)
        caplog.set_level("DEBUG", logger="pymongo.serverSelection")
        signals.pre_delete.connect(lose_far, sender=LossNearItem)
        signals.post_delete.connect(note, sender=LossNearItem)
        try:
            with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
                await asyncio.wait_for(
                    LossFarOwner.objects.async_delete(transaction=False), 30
                )
        finally:
            signals.pre_delete.disconnect(lose_far, sender=LossNearItem)
            signals.post_delete.disconnect(note, sender=LossNearItem)
        assert failed_selections(caplog) == ["delete"]
        assert await LossNearItem.objects.async_count() == 0
        assert sent[0] is None
        assert sorted(sent[1:]) == sorted(item.pk for item in items)
    finally:
        await disconnect_async("lossy_far")
        far.stop()


class LossHub(Document):
    meta = {"db_alias": ALIAS}


class LossSpoke(Document):
    """Cascaded, with a file: which are gone is read after a failed write."""

    hub = ReferenceField(LossHub, reverse_delete_rule=CASCADE)
    pdf = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class LossMark(Document):
    hub = ReferenceField(LossHub, reverse_delete_rule=NULLIFY)
    meta = {"db_alias": ALIAS}


class NoServerAfterFailedUpdate(monitoring.CommandListener):
    """Once an update failed, no server is selected (the client's
    ``server_selector``): each selection after times out."""

    def __init__(self) -> None:
        self.armed = False
        self.failed_updates = 0

    def select(self, servers: list[Any]) -> list[Any]:
        return [] if self.failed_updates else servers

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if self.armed and event.command_name == "update":
            self.failed_updates += 1


async def test_a_rule_update_whose_retry_finds_no_server_gives_its_client_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The NULLIFY rule's update (a multi update) refused as overloaded:
    # PyMongo retries it all the same, and its retry's server selection
    # times out, which raises the first attempt's error (MongoEngine's
    # "Update failed" wraps it). That selection waited all the same: the
    # client is given up, the spokes' cleanup reads nothing.
    cut = NoServerAfterFailedUpdate()
    async with lossy_set(cut, server_selector=cut.select):
        client = LossHub._get_collection().database.client
        try:
            hub = await LossHub().async_save()
            spoke = LossSpoke(hub=hub)
            await spoke.pdf.async_put(b"spoke")
            await spoke.async_save()
            await LossMark(hub=hub).async_save()
            await client.admin.command(
                "configureFailPoint",
                "failCommand",
                mode={"times": 1},
                data={
                    "failCommands": ["update"],
                    "errorCode": 462,
                    "errorLabels": ["RetryableError", "SystemOverloadedError"],
                },
            )
            caplog.set_level("DEBUG", logger="pymongo.serverSelection")
            cut.armed = True
            with pytest.raises(OperationError) as error:
                await asyncio.wait_for(
                    LossHub.objects.async_delete(transaction=False), 30
                )
            assert cut.failed_updates == 1
            cause = error.value.__cause__  # (the first attempt's)
            assert isinstance(cause, pymongo.errors.OperationFailure)
            assert cause.has_error_label("SystemOverloadedError")
            assert failed_selections(caplog) == ["update"]
        finally:
            cut.failed_updates = 0  # (the client's end selects a server)


class SpokeFiles(monitoring.CommandListener):
    """Counts the reads of the spokes (a failed delete's steps read which
    are gone)."""

    def __init__(self) -> None:
        self.spoke_finds = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get("find") == LossSpoke._get_collection_name():
            self.spoke_finds += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_time_out_the_caller_handles_gives_no_client_up() -> None:
    # A delete run in the caller's task (its pre_save receiver's: the save
    # is in flight), while it handles another client's server selection
    # time-out: its cascade's delete applied, then failed (a write concern
    # error), whose context is that time-out. Not this delete's: its steps
    # still read which spokes are gone and delete their files.
    listener = SpokeFiles()
    elsewhere = pymongo.AsyncMongoClient(
        "mongodb://127.0.0.1:9", serverSelectionTimeoutMS=100
    )
    errors: list[Exception] = []

    async def delete_in_handler(sender: Any, document: Any, **kwargs: Any) -> None:
        try:
            await elsewhere.admin.command("ping")
        except pymongo.errors.ServerSelectionTimeoutError:
            try:
                await document.async_delete(transaction=False)
            except OperationError as error:
                errors.append(error)

    async with lossy_set(listener):
        client = LossHub._get_collection().database.client
        hub = await LossHub().async_save()
        spoke = LossSpoke(hub=hub)
        await spoke.pdf.async_put(b"spoke")
        await spoke.async_save()
        await client.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": 1},
            data={
                "failCommands": ["delete"],
                "writeConcernError": {"code": 64, "errmsg": "waiting timed out"},
            },
        )
        listener.spoke_finds = 0
        signals.pre_save.connect(delete_in_handler, sender=LossHub)
        try:
            await hub.async_save()
        finally:
            signals.pre_save.disconnect(delete_in_handler, sender=LossHub)
            await elsewhere.close()
        [error] = errors
        assert str(error) == (
            "Could not delete document (waiting timed out, full error: "
            "{'code': 64, 'errmsg': 'waiting timed out'})"
        )
        assert await LossSpoke.objects.async_count() == 0
        assert listener.spoke_finds == 3  # (the plan's, then the steps' two)
        files = client["loss"]["fs.files"]
        assert await files.count_documents({}) == 0  # (the spoke's, deleted)


async def test_a_block_whose_server_is_lost_is_aborted_without_a_fence(
    server: ReplicaSet, caplog: pytest.LogCaptureFixture
) -> None:
    # The server lost (and known lost) in a transaction's block, its next
    # write times out selecting a server: the abort is tried, not fenced
    # (the fence would wait for a server too, with nothing on its way).
    client = LossNote._get_collection().database.client
    with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
        async with async_run_in_transaction(alias=ALIAS):
            await LossNote(n=1).async_save()
            await stop(server)
            await until_no_primary(client)
            caplog.set_level("DEBUG", logger="pymongo.serverSelection")
            await LossNote(n=2).async_save()
    assert failed_selections(caplog) == ["insert", "abortTransaction"]


@pytest.mark.parametrize(
    ("caller_timeout", "selections"),
    [
        (None, ["insert", "abortTransaction", "find"]),
        (2.5, ["insert", "abortTransaction"]),
    ],
    ids=["cut short: fenced", "waited longer: not fenced"],
)
async def test_a_block_on_a_client_whose_timeout_is_shorter_than_a_selection(
    caller_timeout: float | None,
    selections: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # On a client whose timeoutMS (500) is shorter than its
    # serverSelectionTimeoutMS (1500), a write of a block whose server is
    # lost times out selecting at 500 ms: that does not tell the server is
    # gone (an election may outlast it), so the abort is fenced, each under
    # a whole server selection (not the client's timeoutMS: see _bounded).
    # Under a longer pymongo.timeout() (2.5 s) it waits more than a whole
    # selection: the server is gone as surely, and the abort is not fenced
    # (it used to be, the client's timeoutMS taken as cutting it short).
    async with lossy_set(timeoutMS=500) as replica_set:
        client = LossNote._get_collection().database.client
        with pytest.raises(pymongo.errors.ServerSelectionTimeoutError) as error:
            async with async_run_in_transaction(alias=ALIAS):
                await LossNote(n=1).async_save()
                await stop(replica_set)
                await until_no_primary(client)
                caplog.set_level("DEBUG", logger="pymongo.serverSelection")
                with (
                    contextlib.nullcontext()
                    if caller_timeout is None
                    else pymongo.timeout(caller_timeout)
                ):
                    await LossNote(n=2).async_save()
        waited = re.search(r", Timeout: ([0-9.]+)s, ", str(error.value))
        assert waited is not None
        if caller_timeout is None:
            assert float(waited[1]) <= 0.5  # (cut short)
        else:
            assert float(waited[1]) > 1.5  # (not cut short)
        assert failed_selections(caplog) == selections


async def test_a_block_raising_another_clients_selection_time_out_is_fenced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A block raises a whole server selection time-out of another client's
    # while its own client's primary is Unknown (its monitor's checks fail,
    # the server is there): its abort is still fenced, an operation the block
    # gave up on may be on its way (it used to be skipped: the time-out was
    # taken as this client's).
    async with lossy_set(appName="fenced") as replica_set:
        client = LossNote._get_collection().database.client
        elsewhere = pymongo.AsyncMongoClient(
            "mongodb://127.0.0.1:9", serverSelectionTimeoutMS=2000
        )
        admin = pymongo.AsyncMongoClient(replica_set.uri, directConnection=True)
        try:
            with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
                async with async_run_in_transaction(alias=ALIAS):
                    await LossNote(n=1).async_save()
                    await admin.admin.command(
                        "configureFailPoint",
                        "failCommand",
                        mode="alwaysOn",
                        data={
                            "failCommands": ["hello", "isMaster"],
                            "appName": "fenced",
                            "closeConnection": True,
                        },
                    )
                    await until_no_primary(client)  # (its checks fail)
                    caplog.set_level("DEBUG", logger="pymongo.serverSelection")
                    await elsewhere.admin.command("ping")
            assert failed_selections(caplog) == ["ping", "abortTransaction", "find"]
        finally:
            await admin.admin.command("configureFailPoint", "failCommand", mode="off")
            await admin.close()
            await elsewhere.close()


_ENDED_WITHOUT_ITS_SERVER = """
import asyncio, time
from mongoengine_async import Document, IntField, connect_async
from mongoengine_async.testing import ReplicaSet

class EndNote(Document):
    n = IntField()

replica_set = ReplicaSet().start()

async def main():
    await connect_async(db="loss", host=replica_set.uri, serverSelectionTimeoutMS=1500)
    await EndNote(n=1).async_save()  # (a session to end: endSessions at the close)
    client = EndNote._get_collection().database.client
    await asyncio.to_thread(replica_set.stop)
    while client.topology_description.has_writable_server():
        await asyncio.sleep(0.05)
    global returned
    returned = time.monotonic()

asyncio.run(main())
print(round(time.monotonic() - returned, 1))
"""


def test_the_loops_end_after_its_server_went_away_waits_one_selection(
    mongodb_uri: str,
) -> None:
    # The loop's end closes the clients still connected: the endSessions of
    # one whose server went away waits for a server as its own close() would
    # (serverSelectionTimeoutMS, 1.5 s here), not the whole 30 s the loop's
    # end gives itself (PyMongo's timeout() replaces the selection's limit).
    waited = float(run_script(_ENDED_WITHOUT_ITS_SERVER, mongodb_uri).stdout)
    assert 1.5 <= waited < 10
