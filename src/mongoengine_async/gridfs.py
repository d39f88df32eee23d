"""GridFS files on async aliases, with PyMongo's ``gridfs.asynchronous``.

A :class:`AsyncGridFSProxy` is what a ``FileField`` reads as on an async alias.
Reading it does no I/O; its ``async_*`` methods store, load, stream, replace and
delete the file. Files are written exactly as MongoEngine's sync ``GridFSProxy``
writes them (``filename``, ``contentType``, ``metadata`` and any extra keyword
as fields of the files document), so sync and async code read each other's
files.

Streaming is chunk by chunk in both directions, with memory bounded by a few
chunks: uploads send their chunks in batches of about
:data:`UPLOAD_BATCH_BYTES` (PyMongo alone buffers up to 48 MB before its first
insert) and downloads read the chunks with cursor batches of about
:data:`DOWNLOAD_BATCH_BYTES` (PyMongo alone asks the server for up to 16 MB at
a time). An upload that fails or is cancelled midway is
aborted: the chunks (and files document) it wrote are removed before the
exception propagates, and only those: with an ``_id`` that another file
already has, that file is left intact (``FileExists``), as with PyMongo. The
removal needs the server: when the upload failed because it stopped answering,
the removal usually fails too (its error is dropped for the upload's), and the
chunks stay, as after PyMongo's ``abort()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import inspect
import io
import operator
import sys
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

import bson
import mongoengine
import pymongo.errors
from bson.codec_options import CodecOptions
from gridfs import GridOut
from gridfs.asynchronous import AsyncGridIn, AsyncGridOut
from gridfs.errors import FileExists, NoFile
from gridfs.grid_file_shared import DEFAULT_CHUNK_SIZE
from mongoengine.base import BaseDocument
from mongoengine.connection import DEFAULT_CONNECTION_NAME, ConnectionFailure
from mongoengine.fields import GridFSError, GridFSProxy
from pymongo import ReadPreference
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.errors import InvalidOperation
from pymongo.read_concern import ReadConcern
from pymongo.topology_description import TOPOLOGY_TYPE

from mongoengine_async._compat import (
    AsyncGridOutChunkIterator,
    caller_time_left,
    running_loop_or_none,
)
from mongoengine_async.batches import (
    WHOLE_RESULT,
    Iteration,
    kill_soon,
    read_list,
    started,
    stopped,
)
from mongoengine_async.classes import with_subclasses
from mongoengine_async.connection import (
    aliases_served_by,
    ends_transaction,
    get_async_collection,
    get_async_connection,
    is_async_connection,
    is_sync_connection,
    on_running_loop,
    running_loop,
    sync_registration,
)
from mongoengine_async.connection import selection_cut_short as _selection_cut_short
from mongoengine_async.context import (
    Journal,
    beyond_caller_timeout,
    bound_journal,
    follow_up,
    journal,
    on_abort,
    on_commit,
    on_end,
    outside_journal,
    transaction_ending,
)
from mongoengine_async.detached import (
    begin_surely,
    finish_before_close,
    held,
    id_repr,
    part_of,
    to_completion,
)
from mongoengine_async.errors import AsyncUsageError, NotLoadedError
from mongoengine_async.gridfs_read import OpenedChunks, read_whole
from mongoengine_async.guards import (
    blocking_call_error,
    guard_blocking_methods,
    sync_alias_error,
)
from mongoengine_async.operation import Operation, own_session, session_for
from mongoengine_async.proxies import alias_of, is_async_class, owner_class
from mongoengine_async.resend import sent_again_once

if TYPE_CHECKING:  # RefusesAsync is only mixed into MongoEngine's GridFSProxy
    from mongoengine.fields import GridFSProxy as _GridFSProxyMixin
else:
    _GridFSProxyMixin = object

__all__ = (
    "DOWNLOAD_BATCH_BYTES",
    "LISTED_IDS_BYTES",
    "UPLOAD_BATCH_BYTES",
    "AsyncGridFSProxy",
    "Listed",
    "Matching",
    "RefusesAsync",
    "RefusesAsyncImage",
    "Unreachable",
    "after_failure",
    "alone_past_timeout",
    "delete_files",
    "delete_files_of_deleted",
    "delete_unheld",
    "file_projection",
    "files_of",
    "has_file_fields",
    "id_runs",
    "listed",
    "not_held",
    "on_primary",
    "past_timeout",
    "run_again_if_cut_short",
    "stored_files",
    "stored_files_and_ids",
)

UPLOAD_BATCH_BYTES = 8 * 1024 * 1024
"""About how many bytes of chunks one insert carries (measured: 8 MB uploads a
64 MB file as fast as PyMongo's 48 MB buffer, 4 MB was 25% slower)."""

DOWNLOAD_BATCH_BYTES = 4 * 1024 * 1024
"""About how many bytes of chunks one cursor batch of a download carries."""


# -- bounded upload and download, on PyMongo's AsyncGridIn / AsyncGridOut ------------


_NOTHING, _OURS, _UNKNOWN = "nothing", "ours", "unknown"


class _BoundedGridIn(AsyncGridIn):
    """PyMongo's AsyncGridIn, sending its chunks every :data:`UPLOAD_BATCH_BYTES`.

    AsyncGridIn keeps chunks in memory until 48 MB are buffered; forcing the
    flush sooner changes nothing else (chunk numbering, indexes and the files
    document stay PyMongo's). It also notes whether the chunks of its id are
    its own (``written``), for :func:`_remove_partial`: the first batch holds
    chunk 0, which the unique ``files_id_1_n_1`` index gives to one upload.
    """

    # Declared on the class: AsyncGridIn keeps other attributes in the files document.
    written = _NOTHING
    """Whether the chunks of this id are this upload's: _NOTHING before its
    first insert, or when that insert wrote no chunk (chunk 0 was another
    file's: FileExists); _OURS once it wrote one; _UNKNOWN when it failed
    without saying what it wrote (a network error, say)."""

    async def _flush_data(self, data: Any, force: bool = False) -> None:
        # Before: a failure there wrote nothing. Sent again after a step-down
        # (index creations are no retryable writes).
        await sent_again_once(self._coll, self._ensure_indexes, self._session)
        buffered = self._buffered_docs_size + len(data)
        sending = bool(self._buffered_docs or data)
        try:
            await super()._flush_data(
                data, force=force or buffered >= UPLOAD_BATCH_BYTES
            )
        except BaseException as error:
            if self.written == _NOTHING:
                self.written = _written_by(error)
            raise
        if sending and not self._buffered_docs:  # sent, and inserted
            self.written = _OURS


def _written_by(error: BaseException) -> str:
    """What the failed (ordered) insert of a first batch of chunks wrote,
    from the BulkWriteError that PyMongo's FileExists (or write error) was
    raised from."""
    seen: BaseException | None = error
    for _ in range(4):
        if isinstance(seen, pymongo.errors.BulkWriteError):
            return _OURS if seen.details.get("nInserted") else _NOTHING
        if seen is None:
            break
        seen = seen.__context__
    return _UNKNOWN


async def _remove_partial(grid_in: _BoundedGridIn, error: BaseException) -> None:
    """Remove what the failed upload of ``grid_in`` stored, and nothing else.

    PyMongo's ``abort`` deletes every chunk and the files document of the id,
    which with an ``_id`` already taken (FileExists) is another file's. Here
    the chunks go when they are this upload's (or it cannot tell and no other
    file has the id); the files document when this upload inserted it
    (matched by its ``uploadDate`` too), that is when ``close`` got that far
    and the error is not that the id exists.
    """
    root, session = grid_in._coll, grid_in._session
    file_id = grid_in._file["_id"]
    uploaded = grid_in._file.get("uploadDate")  # set just before the insert
    written = grid_in.written
    if written == _UNKNOWN:
        others: dict[str, Any] = {"_id": {"$eq": file_id}}
        if uploaded is not None:
            others["uploadDate"] = {"$ne": uploaded}
        other = await root.files.find_one(others, {"_id": 1}, session=session)
        written = _NOTHING if other is not None else _OURS
    if written == _OURS:
        await _delete_chunks(root, file_id, session)
    if uploaded is not None and not isinstance(error, FileExists):
        await root.files.delete_one(
            {"_id": {"$eq": file_id}, "uploadDate": uploaded}, session=session
        )


class _BatchedChunks(OpenedChunks):
    """PyMongo's chunk iterator, asking for ``batch`` chunks per batch (None:
    PyMongo's default, up to 16 MB)."""

    batch: int | None = None

    def _create_cursor(self) -> None:
        super()._create_cursor()
        if self.batch is not None:
            cast(AsyncCursor[Any], self._cursor).batch_size(self.batch)


def _collection_on_this_loop(key: str) -> property:
    """An attribute holding a collection (set: kept in the instance's
    ``__dict__`` under ``key``) that reads as that collection on the running
    loop's client (:func:`_on_this_loop`)."""

    def get(self: Any) -> AsyncCollection:
        return _on_this_loop(self.__dict__[key])

    def set_(self: Any, collection: AsyncCollection) -> None:
        self.__dict__[key] = collection

    return property(get, set_)


class _GridOut(AsyncGridOut):
    """PyMongo's AsyncGridOut whose chunk iterators, which PyMongo makes (for
    the first read, and for a read after ``seek()``), are made
    :class:`_BatchedChunks` of ``batch`` chunks per cursor batch as they are
    set: no chunk cursor is left behind by a cancelled read, seek or not.

    Its collections are those of the running loop's client (as a queryset's):
    the AsyncGridOut of ``proxy.async_get()`` got in one ``asyncio.run()`` and
    read in the next read on the first loop's client, which PyMongo refused
    ("Cannot use AsyncMongoClient in different event loop")."""

    batch: int | None = None

    _chunks = _collection_on_this_loop("_chunks_collection")
    _files = _collection_on_this_loop("_files_collection")

    @property
    def _chunk_iter(self) -> Any:
        """The chunk iterator of the read under way; None (a new one is made
        at the read's position, as after ``seek()``) when it was made on
        another loop's client (its cursor cannot go on here; closed with that
        client or not, it is let go)."""
        chunks = self.__dict__.get("_batched_chunks")
        if chunks is not None and _on_this_loop(chunks._chunks) is not chunks._chunks:
            self.__dict__["_batched_chunks"] = chunks = None
        return chunks

    @_chunk_iter.setter
    def _chunk_iter(self, chunks: Any) -> None:
        if type(chunks) is AsyncGridOutChunkIterator:  # PyMongo's, not yet used
            chunks.__class__ = _BatchedChunks
            cast(_BatchedChunks, chunks).batch = self.batch
        self.__dict__["_batched_chunks"] = chunks


def _on_this_loop(collection: AsyncCollection) -> AsyncCollection:
    """``collection`` on the running loop's client for its alias (itself when
    no loop runs, or when it is on that client already)."""
    if running_loop_or_none() is None:
        return collection
    return on_running_loop(collection)


def _open_stream(
    root: AsyncCollection,
    file_document: dict,
    session: Any,
    batch_bytes: int | None = DOWNLOAD_BATCH_BYTES,
) -> AsyncGridOut:
    """An AsyncGridOut over ``file_document`` whose chunk cursors fetch about
    ``batch_bytes`` per round trip (None: PyMongo's default, up to 16 MB),
    and are opened by :class:`OpenedChunks`."""
    grid_out = _GridOut(root, file_document=file_document, session=session)
    if batch_bytes is not None:
        chunk_size = int(file_document.get("chunkSize") or DEFAULT_CHUNK_SIZE)
        grid_out.batch = max(1, -(-batch_bytes // chunk_size))
    return grid_out


def _pieces(data: Any, read_size: int) -> Iteration[bytes]:
    """The bytes of ``data``, a piece at a time (:func:`_pieces_of`), raising
    ``AsyncUsageError`` instead of ending once the loop's end closed the read
    (``shutdown_asyncgens()`` closes every async generator of the loop at
    once, and so ended it at the ``yield`` an upload the loop's end waits for
    had reached: that upload stored the bytes read so far as the whole file,
    nothing reported; the data's own async generator was closed so too)."""
    return Iteration(
        functools.partial(_pieces_until_closed, data, read_size),
        "The read of the data to store",
        "Nothing of the file was stored: store it before the event loop ends",
    )


async def _pieces_until_closed(
    data: Any, read_size: int, iteration: weakref.ref[Iteration[bytes]]
) -> AsyncGenerator[bytes, None]:
    """The generator :func:`_pieces` steps through: :func:`_pieces_of`, its
    iteration stopped (see ``batches.stopped``) when it is closed at a
    ``yield`` by anything but its own iteration (the loop's end), but after
    bytes given whole: nothing was left to read."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
        return
    at_yield = False
    try:
        async for piece in _pieces_of(data, read_size):
            at_yield = True
            yield piece
            at_yield = False
    finally:
        if at_yield:
            stopped(iteration, "shutdown")


async def _pieces_of(data: Any, read_size: int) -> AsyncIterator[bytes]:
    """The bytes of ``data``: bytes, a (sync or async) binary file object, a
    (sync or async) iterable of bytes, or the file of an
    :class:`AsyncGridFSProxy` (streamed), a piece at a time."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
        return
    if isinstance(data, AsyncGridFSProxy):  # another file: a copy of its bytes
        if data.grid_id is None:
            raise TypeError(
                f"can only store the content of a file proxy that holds a file, "
                f"not of {data!r} (no file)"
            )
        async for piece in data.async_iter_chunks(read_size):
            yield piece
        return
    read = getattr(data, "read", None)
    if read is not None:
        if inspect.iscoroutinefunction(read):
            while piece := await read(read_size):
                yield piece
        elif isinstance(data, io.BytesIO):
            while piece := read(read_size):
                yield piece
        else:  # a real file: read it off the event loop; a cancelled upload
            # returns once the read in flight is done, as the caller may then
            # close or reuse the file
            while piece := await to_completion(asyncio.to_thread(read, read_size)):
                yield piece
        return
    if hasattr(data, "__aiter__"):
        async for piece in data:
            yield piece
        return
    if isinstance(data, Iterable) and not isinstance(data, str):
        for piece in data:
            yield piece
        return
    raise TypeError(
        "can only store bytes, a binary file object or an (async) iterable of "
        f"bytes, not {type(data).__name__}"
    )


def _as_bytes(piece: Any, encoding: str | None) -> bytes:
    """A piece of the file as bytes: str encoded, any bytes-like object
    (bytearray, memoryview, ...) copied as ``b"".join`` would."""
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, str):
        if encoding is None:
            raise TypeError("must specify an encoding for file in order to write str")
        return piece.encode(encoding)
    try:
        return memoryview(piece).tobytes()
    except TypeError:
        raise TypeError(
            f"can only store pieces of bytes (or str with an encoding), not "
            f"{type(piece).__name__}"
        ) from None


async def upload(
    root: AsyncCollection, data: Any, session: Any = None, **file_kwargs: Any
) -> dict:
    """Store ``data`` as a new file in bucket ``root``; return its files document.

    ``file_kwargs`` become fields of the files document as with MongoEngine's
    ``GridFSProxy.put`` (``filename``, ``content_type``, ``metadata``, ...).
    On any exception or cancellation the partial upload is removed (see
    :func:`_remove_partial`: never another file's chunks or files document).
    The disconnect of an alias of ``root``'s client, and the loop's end, wait
    for it (see :func:`under_way`).
    """
    grid_in = _BoundedGridIn(root, session=session, **file_kwargs)
    with under_way(root, f"upload of file {id_repr(grid_in._file['_id'])}"):
        return await _written(grid_in, data, file_kwargs)


async def upload_under_way(
    root: AsyncCollection, data: Any, session: Any = None, **file_kwargs: Any
) -> dict:
    """:func:`upload` for a caller inside :func:`under_way` already, whose
    wait covers this upload and what it does after (an image's put: its
    thumbnail's upload, its image's, and the thumbnail's delete if the image
    failed)."""
    grid_in = _BoundedGridIn(root, session=session, **file_kwargs)
    return await _written(grid_in, data, file_kwargs)


async def _written(grid_in: _BoundedGridIn, data: Any, file_kwargs: dict) -> dict:
    """Write ``data`` to ``grid_in`` and close it (see :func:`upload`)."""
    if isinstance(data, str):
        data = _as_bytes(data, file_kwargs.get("encoding"))
    chunk_size = int(grid_in.chunk_size or DEFAULT_CHUNK_SIZE)
    try:
        pending: list[bytes] = []
        pending_size = 0
        async for piece in _pieces(data, chunk_size):
            piece = _as_bytes(piece, file_kwargs.get("encoding"))
            pending.append(piece)
            pending_size += len(piece)
            if pending_size >= chunk_size:
                block = pending[0] if len(pending) == 1 else b"".join(pending)
                pending.clear()
                pending_size = 0
                await to_completion(grid_in.write(block))
        if pending:
            await to_completion(grid_in.write(b"".join(pending)))
        await to_completion(grid_in.close())
    except BaseException as error:
        if isinstance(error, GeneratorExit):  # (collected, its loop closed)
            raise  # nothing can run: reported by left_undone
        try:
            await to_completion(_remove_partial(grid_in, error))
        except Exception:  # the upload's own error is the one to report
            pass
        raise
    return _as_read(grid_in._coll, grid_in._file)


@contextlib.contextmanager
def under_way(root: AsyncCollection, what: str) -> Iterator[None]:
    """Have ``disconnect_async()`` of an alias of ``root``'s client (another
    task's) and the loop's end wait until the code inside has ended, its
    partial upload removed if it failed (``finish_before_close``; ``what``:
    the upload, "upload of file ObjectId('...')", named in the reports with
    " to {bucket}" added): else they closed the client under it,
    between two of its inserts or between an insert in flight and its
    removal, and its chunks stayed, found by nothing. Not the code inside
    itself (see ``detached.part_of``: a data source disconnecting), which
    would wait for itself."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()
    aliases = aliases_served_by(root.database.client)
    finish_before_close(ended, f"{what} to {root.name}", aliases)
    try:
        with part_of(ended):
            yield
    finally:
        if not loop.is_closed():  # (else reported: left_undone)
            ended.set_result(None)


def _as_read(root: AsyncCollection, file_document: dict) -> dict:
    """``file_document`` as the database would return it (dates, Int64, ...)."""
    return bson.decode(
        bson.encode(file_document), codec_options=root.database.codec_options
    )


# -- the proxy --------------------------------------------------------------------


class AsyncGridFSProxy(GridFSProxy):
    """A file of a ``FileField`` on an async alias.

    ``grid_id`` is known without I/O; ``length``, ``filename``,
    ``content_type``, ``upload_date`` and ``metadata`` come from the files
    document once :meth:`async_get` or :meth:`async_put` has run (None before).
    ``async for chunk in proxy`` streams the file chunk by chunk.
    """

    grid_id: Any  # set by GridFSProxy's __init__

    def __init__(
        self,
        grid_id: Any = None,
        key: str | None = None,
        instance: Any = None,
        db_alias: str = DEFAULT_CONNECTION_NAME,
        collection_name: str = "fs",
        field: Any = None,
    ):
        super().__init__(grid_id, key, instance, db_alias, collection_name)
        self._file: Any = None  # the files document (a dict), once loaded
        self._field = field
        # For a copy (_copy_for): the document holding the proxy copied, whose
        # transaction its writes belong to (_undos).
        self._holder: Any = None

    # -- where the file lives ----------------------------------------------------

    def _root(self) -> AsyncCollection:
        """The bucket's root collection (``<collection_name>``), for an
        operation on the running loop."""
        if not is_async_connection(self.db_alias):
            raise alias_error(self)
        running_loop()
        return get_async_collection(self.db_alias, self.collection_name)

    def _session(
        self, root: AsyncCollection, explicit: AsyncClientSession | None = None
    ) -> AsyncClientSession | None:
        """``explicit`` (refused unless a session of the bucket's client), else
        the bound transaction's session for that client, if any."""
        client = root.database.client
        return session_for(client, own_session(self._describe(), client, explicit))

    def _describe(self) -> str:
        where = f"GridFS bucket {self.collection_name!r} (alias {self.db_alias!r})"
        key = self._key()
        return f"{where}, field {key!r}" if key else where

    def _key(self) -> str | None:
        """The field's name, also for a proxy bound to no document yet."""
        return self.key or getattr(self._field, "name", None)

    def _missing(self, grid_id: Any) -> NoFile:
        return NoFile(f"no file with id {grid_id!r} in {self._describe()}")

    # -- metadata (no I/O) ---------------------------------------------------------

    def _file_value(self, name: str) -> Any:
        return self._file.get(name) if self.loaded else None

    # The fields of the files document that MongoEngine's proxy reads through
    # its GridOut (None when the document lacks them, as there), read by the
    # same GridOut properties: PyMongo's DeprecationWarning of content_type,
    # md5 and aliases comes as through MongoEngine's.

    def _grid_out_value(self, name: str) -> Any:
        """GridOut's ``name`` of the loaded files document; None before."""
        if not self.loaded:
            return None
        return getattr(GridOut, name).fget(_Opened(self._file))

    @property
    def length(self) -> int | None:
        """Size in bytes (None until loaded)."""
        return self._grid_out_value("length")

    @property
    def filename(self) -> str | None:
        return self._grid_out_value("filename")

    @property
    def content_type(self) -> str | None:
        """``contentType`` of the files document (as GridOut's, not the one
        its ``metadata`` may hold)."""
        return self._grid_out_value("content_type")

    @property
    def upload_date(self) -> Any:
        return self._grid_out_value("upload_date")

    @property
    def metadata(self) -> Any:
        return self._grid_out_value("metadata")

    @property
    def chunk_size(self) -> int | None:
        return self._grid_out_value("chunk_size")

    @property
    def name(self) -> str | None:
        """``filename`` (GridOut's alias of it)."""
        return self._grid_out_value("name")

    @property
    def md5(self) -> str | None:
        """``md5`` of the files document (PyMongo 4 writes none)."""
        return self._grid_out_value("md5")

    @property
    def aliases(self) -> list[str] | None:
        return self._grid_out_value("aliases")

    @property
    def _id(self) -> Any:
        """The files document's ``_id`` (GridOut's; ``grid_id`` once loaded)."""
        return self._grid_out_value("_id")

    @property
    def closed(self) -> bool | None:
        """GridOut's ``closed``: False once loaded (MongoEngine's proxy keeps
        its GridOut open); None before."""
        return False if self.loaded else None

    @property
    def loaded(self) -> bool:
        """Whether this proxy holds the files document of its current ``grid_id``
        (read or written by it)."""
        return self._file is not None and self._file.get("_id") == self.grid_id

    def __getattr__(self, name: str) -> Any:
        # Reached for names that are not attributes: extra fields of the files
        # document (e.g. ``width`` of an image). Never does I/O. Also reached
        # when a property raised an AttributeError (a NotLoadedError): raise
        # the property's own error again, not this method's.
        attribute = getattr(type(self), name, None)
        if isinstance(attribute, property):
            return attribute.__get__(self, type(self))
        if not name.startswith("_") and callable(getattr(AsyncGridOut, name, None)):
            raise self._grid_out_method_error(name)
        if not name.startswith("_"):
            file_document = self.__dict__.get("_file")
            grid_id = self.__dict__.get("grid_id")
            if file_document is None or file_document.get("_id") != grid_id:
                if grid_id is not None:
                    raise not_loaded_error(self, name)
            elif name in file_document:
                return file_document[name]
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}"
        )

    def _grid_out_method_error(self, name: str) -> NotLoadedError:
        """The error for a method of GridOut, which MongoEngine's proxy calls
        on its GridOut (blocking): it names the AsyncGridOut's (an
        AttributeError too: ``hasattr()`` answers)."""
        _check_alias(self)
        awaited = inspect.iscoroutinefunction(getattr(AsyncGridOut, name))
        use = f"`{'await ' if awaited else ''}(await proxy.async_get()).{name}()`"
        error = blocking_call_error(type(self).__name__, name, self.db_alias, use)
        return NotLoadedError(str(error))

    @property
    def fs(self) -> Any:
        if not is_async_connection(self.db_alias):
            raise alias_error(self)
        raise NotLoadedError(  # an AttributeError too: hasattr() answers
            f"{type(self).__name__}.fs is a blocking GridFS: alias "
            f"{self.db_alias!r} is async (connect_async); use the async_* methods"
        )

    def delete(self) -> None:
        """MongoEngine's blocking delete: refused (use :meth:`async_delete`),
        except on a proxy that holds no file, where there is nothing to delete.

        ``Document.delete()`` calls it for each file field: a document on a
        sync alias whose file field is on an async alias deletes its file with
        ``await document.field.async_delete()`` first, then ``delete()``
        deletes the document.
        """
        if self.grid_id is None:
            self.gridout = None
            self._mark_as_changed()  # as MongoEngine's delete
            return
        _check_alias(self)
        instance = self.instance
        if isinstance(instance, BaseDocument) and not is_async_class(
            owner_class(instance)
        ):
            document = owner_class(instance).__name__
            raise AsyncUsageError(
                f"{type(instance).__name__}.{self.key}.delete() cannot run: the "
                f"file lives on async alias '{self.db_alias}' (connect_async), "
                f"deleting it needs `await document.{self.key}.async_delete()`; "
                f"{document} is on sync alias '{alias_of(owner_class(instance))}', "
                "so delete the file that way first, then document.delete() "
                "deletes the document"
            )
        raise blocking_call_error(
            type(self).__name__, "delete", self.db_alias, "await proxy.async_delete()"
        )

    # -- I/O ---------------------------------------------------------------------

    async def async_get(
        self,
        instance: BaseDocument | None = None,
        *,
        session: AsyncClientSession | None = None,
    ) -> Any:
        """The stored file (an AsyncGridOut, reading from its start, in
        ``session`` if given), refreshing this proxy's metadata; None when the
        proxy holds no file or the file is gone, as MongoEngine's ``get()``.

        The seed's spelling ``await doc.file.async_get(doc)`` is
        ``await Model.file.async_get(doc)``: the proxy, metadata loaded, or None.
        """
        if instance is not None:
            field = self._field_of(instance)
            return await field.async_get(instance, session=session)
        if self.grid_id is None:
            return None
        try:
            await self._fetch_file(session)
        except NoFile:
            return None
        root = self._root()
        return _open_stream(root, self._file, self._session(root, session))

    def _field_of(self, instance: Any) -> Any:
        """The file field of ``instance`` this proxy is the value of."""
        is_document = isinstance(instance, BaseDocument)
        field = instance._fields.get(self.key) if is_document else None
        if not hasattr(field, "async_get"):
            raise TypeError(
                f"{type(self).__name__}.async_get() takes the document holding "
                f"the file (field {self.key!r}), not {instance!r}"
            )
        return field

    async def _fetch_file(self, session: AsyncClientSession | None = None) -> None:
        """Load the files document of ``grid_id`` (``NoFile`` when it is gone)."""
        root = self._root()
        file_document = await root.files.find_one(
            {"_id": self.grid_id}, session=self._session(root, session)
        )
        if file_document is None:
            raise self._missing(self.grid_id)
        self._file = file_document

    async def _stream(
        self,
        batch_bytes: int | None = DOWNLOAD_BATCH_BYTES,
        session: AsyncClientSession | None = None,
    ) -> Any:
        """A fresh AsyncGridOut (from the cached files document when loaded)."""
        if self.grid_id is None:
            return None
        if not self.loaded:
            await self._fetch_file(session)
        root = self._root()
        session = self._session(root, session)
        return _open_stream(root, self._file, session, batch_bytes)

    async def async_read(
        self, size: int = -1, *, session: AsyncClientSession | None = None
    ) -> bytes | None:
        """The file's bytes (the first ``size`` bytes when ``size >= 0``).

        Each call reads from the start of the file; for pieces in turn use
        ``async for chunk in proxy`` or the AsyncGridOut of :meth:`async_get`.
        None when the proxy holds no file; a ``size`` not an integer raises
        ``TypeError``.
        """
        try:  # (before any I/O; what PyMongo's read takes: __index__)
            size = operator.index(size)
        except TypeError:
            raise TypeError(f"size must be an integer, not {size!r}") from None
        # The whole result is in memory anyway: fetch as much per round trip.
        grid_out = await self._stream(None if size < 0 else size, session)
        if grid_out is None:
            return None
        # Several cursors at once, but a session runs one command at a time.
        at_once = size < 0 and self._session(self._root(), session) is None
        try:
            return await (read_whole(grid_out) if at_once else grid_out.read(size))
        finally:
            await grid_out.close()

    def async_iter_chunks(
        self,
        chunk_size: int | None = None,
        *,
        session: AsyncClientSession | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Yield the file's bytes as stored chunks, or in pieces of
        ``chunk_size`` bytes; memory stays bounded whatever the file size.
        A ``chunk_size`` below 1 raises ``ValueError``. Carried past the end
        of its loop, it raises rather than ending."""
        return Iteration(
            functools.partial(self._chunks, chunk_size, session),
            f"An async for over a file of {self._describe()}",
        )

    async def _chunks(
        self,
        chunk_size: int | None,
        session: AsyncClientSession | None,
        iteration: weakref.ref[Iteration[bytes]],
    ) -> AsyncGenerator[bytes, None]:
        """The generator :meth:`async_iter_chunks` steps through."""
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size!r}")
        grid_out = await started(self._stream(session=session), iteration)
        if grid_out is None:
            return
        at_yield = False  # (see batches.leave)
        try:
            while True:
                if chunk_size is None:
                    piece = await grid_out.readchunk()
                else:
                    piece = await grid_out.read(chunk_size)
                if not piece:
                    return
                at_yield = True
                yield piece
                at_yield = False
        except asyncio.CancelledError:
            if not at_yield:
                stopped(iteration, "cancelled")
            raise
        finally:
            if at_yield:  # its chunk cursor killed soon
                stopped(iteration, "loop")
                chunks = grid_out._chunk_iter
                if chunks is not None:
                    kill_soon(chunks._cursor)
            else:
                await grid_out.close()

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self.async_iter_chunks()

    def _check_empty(self) -> None:
        if self.grid_id:
            raise GridFSError(
                f"This document already has a file ({self.grid_id}) in field "
                f"{self._key()!r}. Either delete it (`await proxy.async_delete()`) or "
                "call `await proxy.async_replace(...)` to overwrite it"
            )

    async def async_put(
        self,
        data: Any,
        filename: str | None = None,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        session: AsyncClientSession | None = None,
        **kwargs: Any,
    ) -> AsyncGridFSProxy:
        """Store ``data`` (bytes, a binary file object, an async iterator or
        async file of bytes, or another file's proxy, whose bytes are copied)
        chunk by chunk, in ``session`` if given; returns this proxy.

        Extra keywords become fields of the files document, as with
        MongoEngine's ``put``. Raises ``GridFSError`` when the proxy already
        holds a file (use :meth:`async_replace`).
        """
        self._check_empty()
        file_kwargs = _file_kwargs(filename, content_type, metadata, kwargs)
        await self._store(data, file_kwargs, session)
        return self

    async def _store(
        self, data: Any, file_kwargs: dict, session: AsyncClientSession | None
    ) -> None:
        root = self._root()
        session = self._session(root, session)
        stored = await upload(root, data, session, **file_kwargs)
        if self.grid_id:  # another task's put filled the proxy meanwhile: it won
            await _delete_file(root, stored["_id"], session)
            self._check_empty()
        undos = self._undos(session)
        self._took(stored, self._journal(undos, uploaded=[stored["_id"]]))

    def _took(self, stored: dict, marked: list[str] | None) -> None:
        """Hold the file ``stored`` (its files document), the field marked as
        changed; ``marked`` (of :meth:`_journal`) notes the marks that adds."""
        self._file = stored
        self.grid_id = stored["_id"]
        self.gridout = None
        self._mark_noting(marked)

    def _mark_noting(self, marked: list[str] | None) -> None:
        """Mark the field as changed; the marks that adds go to ``marked``
        (of :meth:`_journal`, for its undo), if given."""
        before = list(self._changed_marks())
        self._mark_as_changed()
        if marked is not None:
            marked.extend(k for k in self._changed_marks() if k not in before)

    async def async_delete(
        self, missing_ok: bool = False, *, session: AsyncClientSession | None = None
    ) -> None:
        """Delete the file and its chunks; afterwards ``grid_id`` is None.

        Does nothing when the proxy holds no file. A missing file raises
        ``gridfs.errors.NoFile`` naming the id, unless ``missing_ok``.
        Runs in ``session``, else inside ``async_run_in_transaction`` as part
        of the transaction.
        """
        if self.grid_id is None:
            return
        session = self._session(self._root(), session)
        await self._delete(missing_ok, session, self._undos(session))

    async def _delete(
        self,
        missing_ok: bool,
        session: AsyncClientSession | None,
        undos: Journal | None,
    ) -> None:
        """:meth:`async_delete` in ``session`` (resolved), recorded in the
        journal ``undos`` (of :meth:`_undos`), if any."""
        grid_id = self.grid_id
        if grid_id is None:
            return
        root = self._root()
        marked = self._journal(undos)
        deleted = await _delete_in(root, grid_id, session, undos, not missing_ok)
        self.grid_id = None
        self.gridout = None
        self._file = None
        self._mark_noting(marked)
        if not deleted and not missing_ok:
            raise self._missing(grid_id)

    def _undos(self, session: AsyncClientSession | None) -> Journal | None:
        """The journal of the transaction a write of this file in ``session``
        (resolved) belongs to: the one bound with ``session``; with none (the
        bucket's client has no transaction bound in this task), the one bound
        for the client of the document holding the file (for a proxy that no
        document holds yet, the innermost one bound), which the write cannot
        join: the journal stands in for it (:func:`_delete_in`,
        :meth:`_journal`). None when the write is in no such transaction (or
        one over for the task: a task that outlived its block or attempt)."""
        if session is not None:
            return journal(session)
        undos = outside_journal()
        holder = self.instance
        if holder is None:  # a copy's: the document of the proxy copied
            holder = self.__dict__.get("_holder")
        if undos is None or not isinstance(holder, BaseDocument):
            return undos
        cls = owner_class(holder)
        if not (issubclass(cls, mongoengine.Document) and is_async_class(cls)):
            return None  # (a sync document: in no async transaction)
        return bound_journal(get_async_connection(alias_of(cls)))

    def _journal(
        self, undos: Journal | None, uploaded: list | None = None, put: bool = False
    ) -> list[str] | None:
        """In the transaction of journal ``undos`` (:meth:`_undos`), if any,
        record how to give this proxy back what it holds, should the
        transaction abort: its file, whose delete the transaction undid (or
        deferred, see :func:`_delete_in`). A file ``uploaded`` outside the
        transaction (on another client: a transaction on the bucket's client
        refuses uploads) is deleted by the undo too, in a task of its own, so
        that it is not left orphaned (not when the commit's outcome is
        unknown: a committed document may refer to it, see ``on_abort``).
        Then the proxy keeps that file (``uploaded`` or ``put``: the write
        took a file uploaded outside), its field marked as changed: the next
        save stores it whether the commit applied or not, never the old value.

        Returns the list the caller fills with the changed-field marks its
        write adds to the instance: the undo drops those (only those, and not
        once the field holds another value), so the instance's
        ``_get_changed_fields()`` is what it was before; None outside one."""
        if undos is None:
            return None
        state = self.grid_id, self.gridout, self._file
        marked: list[str] = []
        root = self._root() if uploaded else None

        def undo() -> None:
            self.grid_id, self.gridout, self._file = state
            if not self._held():
                return  # the field was set again in the block: a change to save
            changed = self._changed_marks()
            for key in marked:
                if key in changed:
                    changed.remove(key)

        if put or uploaded:  # (kept with the upload, see on_abort)
            on_abort(undos, undo)
        else:
            undos.append(undo)
        if root is not None and uploaded:  # (kept if the commit may have been)
            delete = functools.partial(_delete_files, root, uploaded)
            aliases = aliases_served_by(root.database.client)
            on_abort(undos, lambda: _delete_aborted(delete, root), aliases)
        return marked

    def _changed_marks(self) -> list[str]:
        """The instance's ``_changed_fields`` (a list to change in place), or
        an empty list when the proxy has no document that keeps one."""
        changed = getattr(self.instance, "_changed_fields", None)
        return changed if isinstance(changed, list) else []

    def _held(self) -> bool:
        """Whether the instance's field holds this proxy (or a list of them does)."""
        data = getattr(self.instance, "_data", None)
        if not isinstance(data, dict) or self.key is None:
            return False
        value = data.get(self.key)
        if isinstance(value, (list, tuple)):
            return any(item is self for item in value)
        return value is self

    async def async_replace(
        self,
        data: Any,
        filename: str | None = None,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        session: AsyncClientSession | None = None,
        **kwargs: Any,
    ) -> Any:
        """Store ``data`` as the new file, then delete the old one (in
        ``session`` if given); returns the new id. If the upload fails the old
        file is left untouched.

        With ``_id=`` the old file's own id, the new file takes its place:
        the old one is deleted first, as MongoEngine's ``replace`` does (so a
        failed upload then leaves no file)."""
        if self.grid_id is not None and kwargs.get("_id") == self.grid_id:
            if isinstance(data, AsyncGridFSProxy) and data == self:
                raise TypeError(  # deleted first, its content would be gone
                    f"cannot replace the file {self.grid_id!r} by its own content "
                    "under its own id (the old file is deleted first): replace "
                    "it without _id=, or put a copy elsewhere first"
                )
            resolved = self._session(self._root(), session)
            if resolved is None and self._undos(resolved) is not None:
                raise InvalidOperation(  # its delete waits for the commit
                    f"cannot replace the file {self.grid_id!r} under its own id "
                    f"in a transaction on another client than its own "
                    f"({self._describe()}): the transaction cannot undo that "
                    "delete, so it is deferred until the commit, and the new "
                    "file would find the old one there; replace it without "
                    "_id=, or outside the transaction"
                )
            await self.async_delete(missing_ok=True, session=session)
            await self.async_put(
                data, filename, content_type, metadata, session=session, **kwargs
            )
            return self.grid_id
        fresh = self._copy_for(None)
        await fresh.async_put(
            data, filename, content_type, metadata, session=session, **kwargs
        )
        # The file held now (another replace's, perhaps, done meanwhile) goes.
        old = self._copy_for(self.grid_id)
        root = self._root()
        undos = self._undos(self._session(root, session))
        self._took(fresh._file, self._journal(undos, put=True))
        await old.async_delete(missing_ok=True, session=session)
        return self.grid_id

    def _copy_for(self, grid_id: Any) -> AsyncGridFSProxy:
        """A proxy on the same bucket holding ``grid_id``, bound to no document
        (its writes in the transaction of this one's document, if any)."""
        copied = type(self)(
            grid_id,
            key=self.key,
            db_alias=self.db_alias,
            collection_name=self.collection_name,
            field=self._field,
        )
        copied._holder = self.instance
        if self.instance is None:
            copied._holder = self.__dict__.get("_holder")
        return copied

    # -- plumbing ----------------------------------------------------------------

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["gridout"] = None
        state["newfile"] = None
        return state

    def __copy__(self) -> AsyncGridFSProxy:
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__getstate__())
        return copied

    def __str__(self) -> str:
        if self.grid_id is None:
            return f"<{type(self).__name__}: <no file>>"
        filename = self.filename if self._file is not None else "<not loaded>"
        return f"<{type(self).__name__}: {filename} ({self.grid_id})>"


class _Opened:
    """What a property of PyMongo's (sync) GridOut reads: an opened GridOut's
    files document."""

    def __init__(self, file_document: dict) -> None:
        self._file = file_document

    def open(self) -> None:
        pass  # opened: its files document is here


def not_loaded_error(proxy: AsyncGridFSProxy, name: str) -> NotLoadedError:
    """The error for ``proxy.name`` read before its files document is loaded."""
    return NotLoadedError(
        f"{type(proxy).__name__}.{name} needs the file's metadata: `await "
        "proxy.async_get()` first (reading it here would block)"
    )


def _file_kwargs(
    filename: str | None, content_type: str | None, metadata: Any, extra: dict
) -> dict:
    """The files-document fields, spelled as MongoEngine's sync ``put`` stores them."""
    file_kwargs = dict(extra)
    if filename is not None:
        file_kwargs["filename"] = filename
    if content_type is not None:
        file_kwargs["content_type"] = content_type
    if metadata is not None:
        file_kwargs["metadata"] = metadata
    return file_kwargs


# Deletes of files whose caller was cancelled, going on (held until done).
_CUT_SHORT = "delete of a file whose caller was cancelled"
_cut_short: set[asyncio.Future[Any]] = set()


async def _delete_file(
    root: AsyncCollection, grid_id: Any, session: Any, again: bool = True
) -> bool:
    """Delete a file's document and chunks (:func:`_delete_both`); whether
    the document existed.

    Once the files document's delete is on its way, the chunks' must follow,
    or they stay, found by nothing: a caller cancelled meanwhile leaves the
    two going on in a task of their own; with a session of its own, it waits
    for them first (its next command on the session must come after); in a
    transaction, whose abort undoes both, they stop with it. In no session,
    the loop's end and the disconnect of an alias of the bucket's client
    (another task's) wait for them: else it closed the client between the
    two. Their task cancelled before they began (the loop's end cancelling
    the tasks left as it began: see ``begin_surely``) runs them ``again`` in
    a new one, unless the caller does so itself.
    """
    if session is not None:
        deleting = _delete_both(root, grid_id, session)
        if session.in_transaction:
            return await deleting
        return await to_completion(deleting)
    aliases = aliases_served_by(root.database.client)
    deleting = _delete_both(root, grid_id, None)
    task = begin_surely(
        lambda: asyncio.ensure_future(_delete_both_surely(root, grid_id, deleting)),
        deleting,
        # (Named: what is left of it is that file's, in that bucket.)
        f"delete of file {id_repr(grid_id)} of {root.name}",
        aliases,
        _CUT_SHORT,
        again,
    )
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            what = (
                f"delete of file {id_repr(grid_id)} of {root.name} whose caller was"
                " cancelled"
            )
            finish_before_close(held(task, _cut_short, _CUT_SHORT), what, aliases)
        raise


async def _delete_both_surely(
    root: AsyncCollection, grid_id: Any, deleting: Coroutine[Any, Any, bool]
) -> bool:
    """``await deleting`` (:func:`_delete_both` in no session), sent again if
    cancelled itself (its loop ending: ``asyncio.run()`` cancels the tasks
    left, this one too, and waits for them): the files document's delete may
    have reached the server, and the chunks' must follow."""
    try:
        return await deleting
    except asyncio.CancelledError:
        await _delete_both(root, grid_id, None)
        raise


async def _delete_both(root: AsyncCollection, grid_id: Any, session: Any) -> bool:
    """The two deletes ``AsyncGridFSBucket.delete`` sends, sent on the
    collections so that they also run inside a transaction (PyMongo refuses
    GridFS there); whether the file existed: its files document, or chunks
    left by a delete whose chunks' delete failed (retried, it is done then).
    In no session, in one of their own: PyMongo's implicit session is lent by
    an async generator, which the loop's end finalises (``shutdown_asyncgens()``)
    under deletes it waits for, ending that session before they were sent."""
    if session is None:
        client = root.database.client
        async with client.start_session(causal_consistency=False) as own:
            return await _delete_both(root, grid_id, own)
    files = await root.files.delete_one({"_id": {"$eq": grid_id}}, session=session)
    chunks = await _delete_chunks(root, grid_id, session)
    return files.deleted_count > 0 or chunks > 0


async def _delete_chunks(root: AsyncCollection, file_id: Any, session: Any) -> int:
    """Delete the chunks of file ``file_id``, through a failover too; how
    many there were.

    A delete of many documents is no retryable write: PyMongo does not send it
    again after an error a retryable write is retried on (a primary stepping
    down, a lost connection), and the chunks would stay, their files document
    gone. The delete is idempotent, so it is sent once more then, as PyMongo
    sends a retryable write; not in a transaction, which is retried as a whole.
    """
    query = {"files_id": {"$eq": file_id}}
    delete = functools.partial(root.chunks.delete_many, query, session=session)
    result = await sent_again_once(root.chunks, delete, session)
    return result.deleted_count


async def _delete_in(
    root: AsyncCollection,
    grid_id: Any,
    session: Any,
    undos: Journal | None,
    asks: bool = False,
) -> bool:
    """Delete a file (:func:`_delete_file`) in ``session``; whether its files
    document existed. Outside the transaction of journal ``undos`` (in no
    session: the bucket is on another client), which cannot undo the delete,
    the delete waits until that transaction commits, and is dropped if it
    aborts (the document that holds the file is kept then); whether the file
    exists is then read only if the caller ``asks`` (a round trip): True if not.
    In no session nor journal, with a block of ours bound for the bucket's
    client (the file of a document deleted outside it), the delete waits
    until that block's transaction ended (:func:`_delete_after_block`)."""
    if session is not None or (undos is None and not _block_around(root)):
        return await _delete_file(root, grid_id, session)
    if undos is None:
        _delete_after_block(root, grid_id)
    else:
        _defer_delete(root, grid_id, undos)
    if not asks:
        return True
    return await root.files.find_one({"_id": {"$eq": grid_id}}, {"_id": 1}) is not None


def delete_once_committed(proxies: list[AsyncGridFSProxy], undos: Journal) -> None:
    """Delete the files of ``proxies`` (in no session) once the transaction
    of journal ``undos`` commits, and not if it aborts. Their buckets are
    looked up now: an alias disconnected before the commit cannot fail it
    (see :func:`_deferred_file_delete`)."""
    for proxy in proxies:
        if proxy.grid_id is not None:
            _defer_delete(proxy._root(), proxy.grid_id, undos)


def _defer_delete(root: AsyncCollection, grid_id: Any, undos: Journal) -> None:
    """Delete file ``grid_id`` of bucket ``root`` once the transaction of
    journal ``undos`` commits (:func:`_deferred_file_delete`)."""
    delete = functools.partial(_deferred_file_delete, root, grid_id)
    on_commit(undos, delete, aliases_served_by(root.database.client))


async def _deferred_file_delete(root: AsyncCollection, grid_id: Any) -> None:
    """The delete of a file :func:`_defer_delete` deferred, its transaction
    committed. Its client closed meanwhile (``disconnect_async`` in the
    block: no alias serves it any more), it cannot run: reported to the
    loop's exception handler, not raised (the transaction committed; the
    file stays, orphaned). A block of ours bound for the bucket's client,
    it waits until that block ended (:func:`_delete_after_block`; one over
    for this task but not ended: :func:`_delete_once_ended`)."""
    if _block_around(root):
        _delete_after_block(root, grid_id)
        return
    ending = transaction_ending(root.database.client)
    if ending is not None:
        _delete_once_ended(ending, root, grid_id)
        return
    try:
        await _delete_file(root, grid_id, None)
    except pymongo.errors.InvalidOperation as error:
        if aliases_served_by(root.database.client):
            raise
        asyncio.get_running_loop().call_exception_handler(
            {
                "message": f"The delete of file {grid_id!r} in bucket "
                f"{root.name!r}, once a transaction committed, did not run: "
                "its client was closed before the commit",
                "exception": error,
            }
        )


def _block_around(root: AsyncCollection) -> bool:
    """Whether a transaction of ours (a block) is bound in this task for the
    client of bucket ``root``."""
    return bound_journal(root.database.client) is not None


def _delete_after_block(root: AsyncCollection, grid_id: Any) -> None:
    """Delete file ``grid_id`` of bucket ``root`` outside any transaction once
    the block bound for its client ended, committed or aborted (its document,
    deleted outside it, is gone either way): deleted at once, the delete
    would wait for the locks of that block (which wrote the file) until the
    server killed its transaction; in it, its abort would bring it back."""
    undos = cast(Journal, bound_journal(root.database.client))
    delete = functools.partial(_deferred_file_delete, root, grid_id)
    on_end(undos, delete, aliases_served_by(root.database.client))


_ONCE_ENDED = "delete of a file once the block on its client ended"


def _delete_once_ended(
    ending: asyncio.Future[Any], root: AsyncCollection, grid_id: Any
) -> None:
    """Delete file ``grid_id`` of bucket ``root`` in a task of its own once
    ``ending`` (see ``transaction_ending``: a block over for this task whose
    transaction wrote the file, its abort on its way) is done: that abort may
    wait for the running steps (an inner block's, its caller cancelled during
    its commit), and the delete, sent now, for that block's lock on the file.
    The client, its alias disconnected meanwhile, closes after it, as after
    that block (``ends_transaction``): else closed under it once the block
    ended (its chunks stayed, found by nothing)."""
    client = root.database.client
    deleting = follow_up(
        _deleted_after(ending, root, grid_id),
        _ONCE_ENDED,
        True,
        aliases_served_by(client),
    )
    ends_transaction(client, deleting)


async def _deleted_after(
    ending: asyncio.Future[Any], root: AsyncCollection, grid_id: Any
) -> None:
    """:func:`_deferred_file_delete` once ``ending`` is done. Cancelled
    meanwhile (the loop's end: ``asyncio.run()`` cancels the tasks left, the
    block's too, and waits for them), it still waits, deletes, then raises:
    else the file of the deleted document stayed, found by nothing."""
    try:
        await asyncio.wait((ending,))
    except asyncio.CancelledError:
        await _deleted_after(ending, root, grid_id)
        raise
    await _deferred_file_delete(root, grid_id)


_ABORTED_UPLOAD = "delete of a file uploaded in a transaction that aborted"
# Those deletes, held until done (nobody awaits them).
_aborted_uploads: set[asyncio.Future[Any]] = set()


def _delete_aborted(
    delete: Callable[[], Awaitable[Any]], root: AsyncCollection, again: bool = True
) -> None:
    """Run ``delete()`` (of an aborted transaction's uploads, in bucket
    ``root``) in a task held until done, which the loop's end waits for, and
    the disconnect of an alias of the bucket's client: that end cancelling the
    block (``asyncio.run()``), its client was closed under the delete (the
    chunks stayed, found by nothing). That task cancelled (``asyncio.run()``
    cancels the tasks left before its end waits for these: begun or not, the
    delete was cut short), ``delete()`` runs ``again`` in a new one, once."""
    task = held(delete(), _aborted_uploads, _ABORTED_UPLOAD)
    finish_before_close(task, _ABORTED_UPLOAD, aliases_served_by(root.database.client))
    if again:
        task.add_done_callback(functools.partial(_delete_cancelled, delete, root))


def _delete_cancelled(
    delete: Callable[[], Awaitable[Any]], root: AsyncCollection, task: asyncio.Future
) -> None:
    """:func:`_delete_aborted` once more if ``task``, its first, was cancelled."""
    if task.cancelled():
        _delete_aborted(delete, root, False)


async def _delete_files(root: AsyncCollection, grid_ids: list) -> None:
    """Delete the files ``grid_ids`` (no session), each even when one failed.
    Cut short, :func:`_delete_aborted` runs this again whole: a file's delete
    does not run again on its own besides (the two at once, as the loop ends,
    would race its ``shutdown_asyncgens()``)."""
    errors = []
    for grid_id in grid_ids:
        try:
            await _delete_file(root, grid_id, None, again=False)
        except Exception as error:
            errors.append(error)
    if errors:
        raise errors[0]


def _field_words(proxy: GridFSProxy) -> tuple[str, str]:
    """``(kind, where)``: the file field's class name and what to call the
    file in a message (``Model.field``, else the bucket)."""
    instance, key = proxy.instance, proxy.key
    field = instance._fields.get(key) if instance is not None and key else None
    if field is not None:
        return type(field).__name__, f"{type(instance).__name__}.{key}"
    item: Any = getattr(proxy, "_field", None)  # a proxy bound to no document yet
    owner = getattr(item, "owner_document", None)
    if owner is not None and item.name:
        return type(item).__name__, f"{owner.__name__}.{item.name}"
    return "FileField", f"GridFS bucket {proxy.collection_name!r}"


def unconnected_error(proxy: GridFSProxy) -> ConnectionFailure:
    """The error for a file field whose own ``db_alias`` has no connection;
    when its document's alias is another, it says a FileField does not
    follow it (the usual cause)."""
    kind, where = _field_words(proxy)
    hint = ""
    if _document_alias(proxy) not in (None, proxy.db_alias):
        hint = (
            f" (a {kind} does not follow its document's db_alias; pass "
            f"{kind}(db_alias=...))"
        )
    return ConnectionFailure(
        f"{where}: the {kind}'s alias '{proxy.db_alias}' has no connection{hint}"
    )


def _document_alias(proxy: GridFSProxy) -> str | None:
    """The alias of the document class holding ``proxy``'s file field (None
    for a proxy of no document, or of an embedded document held by none)."""
    if proxy.instance is not None:
        owner: type[Any] | None = owner_class(proxy.instance)
    else:
        owner = getattr(getattr(proxy, "_field", None), "owner_document", None)
    if owner is None or not issubclass(owner, mongoengine.Document):
        return None
    return alias_of(owner)


def alias_error(proxy: GridFSProxy) -> Exception:
    """The error for an async proxy whose alias is not async: unconnected
    (:func:`unconnected_error`) or sync (the file field of an async document
    keeps its own alias, registered with ``connect()`` or
    ``register_connection()``)."""
    if not is_sync_connection(proxy.db_alias):
        return unconnected_error(proxy)
    kind, where = _field_words(proxy)
    return AsyncUsageError(
        f"{where}: the {kind}'s alias '{proxy.db_alias}' was registered with "
        f"{sync_registration(proxy.db_alias)} (sync), but its file reads as an "
        "async proxy, which needs an "
        f"async alias (a {kind} does not follow its document's db_alias; pass "
        f"{kind}(db_alias=...) naming an async alias, or "
        f"connect_async(alias='{proxy.db_alias}'))"
    )


def _check_alias(proxy: AsyncGridFSProxy) -> None:
    if not is_async_connection(proxy.db_alias):
        raise alias_error(proxy)


# -- the files of deleted documents ---------------------------------------------------


def _file_fields(cls: type[Any]) -> dict[str, Any]:
    """The file fields of ``cls``, by db field: the item field for lists and
    dicts of files."""
    found: dict[str, Any] = {}
    for field in cls._fields.values():
        item = getattr(field, "field", None)
        if isinstance(field, mongoengine.FileField) or isinstance(
            item, mongoengine.FileField
        ):
            found[field.db_field] = item or field
    return found


def has_file_fields(cls: type[Any]) -> bool:
    """Whether documents of ``cls`` (or of a subclass) may hold files: a
    delete of them lists those."""
    return bool(file_projection(cls))


def file_aliases(cls: type[Any]) -> set[str]:
    """The aliases of the file fields of ``cls`` and its subclasses (their
    GridFS buckets): those a delete of its documents deletes files on."""
    return {
        field.db_alias
        for each in with_subclasses(cls)
        for field in _file_fields(each).values()
    }


def _stored_ids(value: Any) -> list:
    """The file ids stored in a file field's value (an id, a list or a dict)."""
    if isinstance(value, dict):
        value = list(value.values())
    return [i for i in (value if isinstance(value, list) else [value]) if i]


async def stored_files(queryset: Any, operation: Operation) -> list[AsyncGridFSProxy]:
    """The files held by the documents ``queryset`` matches (one query, only
    when its class has file fields), to delete once the documents are gone."""
    return (await stored_files_and_ids(queryset, operation))[0]


async def stored_files_and_ids(
    queryset: Any, operation: Operation
) -> tuple[list[AsyncGridFSProxy], list | None]:
    """:func:`stored_files`, and the ids of the documents that query read
    (None when its class has no file fields: no query): the documents
    whose files those are, what a delete sent again may delete.

    Each document's file fields are those of its own class (its ``_cls``):
    subclasses may give one name to a file field and to another field, or to
    file fields of different buckets."""
    cls = queryset._document
    projection = file_projection(cls)
    if not projection:
        return [], None
    collection = on_primary(operation.collection)
    cursor = collection.find(
        queryset._query,
        {**projection, "_cls": 1},
        batch_size=WHOLE_RESULT,  # 101 documents and more: one reply
        session=operation.session,
        max_time_ms=max_time_ms(collection),
    )
    found = await read_list(cursor)
    return files_of(found, cls), [raw["_id"] for raw in found]


def file_projection(cls: type[Any]) -> dict[str, int]:
    """The projection of the file fields of ``cls`` and its subclasses (empty
    when none has one): a read of documents to delete lists their files."""
    return {
        db_field: 1 for each in with_subclasses(cls) for db_field in _file_fields(each)
    }


def files_of(found: list[dict], cls: type[Any]) -> list[AsyncGridFSProxy]:
    """The files the stored ``cls`` documents ``found`` hold (read with
    :func:`file_projection` and their ``_cls``), refused by
    :func:`check_deletable` if one cannot be deleted."""
    by_class = {each._class_name: _file_fields(each) for each in with_subclasses(cls)}
    proxies = [
        field.get_async_proxy(grid_id, None)
        for raw in found
        for db_field, field in _fields_of(raw, by_class, cls).items()
        for grid_id in _stored_ids(raw.get(db_field))
    ]
    check_deletable(proxies)
    return proxies


def on_primary(collection: AsyncCollection) -> AsyncCollection:
    """``collection`` read on the primary, where the delete of the documents
    listed goes: listed on a secondary lagging behind, one there already
    would be left out of the delete (and its files of their delete)."""
    if collection.read_preference == ReadPreference.PRIMARY:
        return collection
    return collection.with_options(read_preference=ReadPreference.PRIMARY)


@dataclasses.dataclass(frozen=True)
class Matching:
    """What ``stored_files`` and ``delete_matching`` read of a queryset: the
    class and raw query."""

    _document: type[Any]
    _query: dict


# The BSON bytes of the ids one delete of listed documents names at most: with
# the query beside them, well under the server's 16 MB limit on a command.
LISTED_IDS_BYTES = 4 * 1024 * 1024


def listed(queryset: Any, ids: list, codec_options: CodecOptions) -> list[Matching]:
    """What ``queryset`` still matches among ``ids``, the documents whose
    files :func:`stored_files_and_ids` listed (one inserted or changed to
    match since would lose its files): runs of ids of LISTED_IDS_BYTES at
    most, one delete each; never none."""
    runs = id_runs(ids, codec_options)
    return [Matching(queryset._document, _among(queryset._query, run)) for run in runs]


def _among(query: dict, ids: list) -> dict:
    """``query`` restricted to the documents of ``ids`` (unchanged when it is
    one ``_id`` that ``ids`` holds alone: a document's own delete)."""
    if list(query) == ["_id"] and ids == [query["_id"]]:
        return query
    among = {"_id": {"$in": ids}}
    return {"$and": [query, among]} if query else among


def id_runs(ids: list, codec_options: CodecOptions) -> list[list]:
    """``ids`` (or any values a query lists) cut in runs of LISTED_IDS_BYTES
    at most (as array elements, keys of up to 7 digits), in order; one run at
    least: a command naming each run stays under the 16 MB limit."""
    runs: list[list] = [[]]
    size = 0
    for value in ids:
        element = (
            _OBJECT_ID_ELEMENT
            if type(value) is bson.ObjectId  # (the usual id: no encoding)
            else _element_bytes(value, codec_options)
        )
        if runs[-1] and size + element > LISTED_IDS_BYTES:
            runs.append([])
            size = 0
        runs[-1].append(value)
        size += element
    return runs


def _element_bytes(value: Any, codec_options: CodecOptions) -> int:
    """The bytes of ``value`` as an array element, its key up to 7 digits
    (``{"": value}`` has 7 bytes around the value: 2 less than such a key)."""
    return len(bson.encode({"": value}, codec_options=codec_options)) + 2


_OBJECT_ID_ELEMENT = _element_bytes(bson.ObjectId(), bson.DEFAULT_CODEC_OPTIONS)


def _fields_of(raw: dict, by_class: dict[str, dict], cls: type[Any]) -> dict:
    """The file fields of the class of the stored document ``raw``: its
    ``_cls``, else its closest known superclass, else ``cls``."""
    class_name = raw.get("_cls")
    while isinstance(class_name, str) and class_name:
        if class_name in by_class:
            return by_class[class_name]
        class_name = class_name.rpartition(".")[0]
    return by_class[cls._class_name]


def check_deletable(proxies: list[AsyncGridFSProxy]) -> None:
    """Refuse, before a document is deleted, a file of it that cannot be (its
    field's alias is not async): the document would be gone, the file left."""
    for proxy in proxies:
        _check_alias(proxy)


class Unreachable:
    """The clients whose server selection timed out in one delete (a write of
    it, or its steps after an error: its files' deletes, its cleanup reads),
    for those steps: nothing more is tried on them, each command would wait
    ``serverSelectionTimeoutMS`` in turn (and so would the loop's end waiting
    for them). A selection cut short by the client's ``timeoutMS`` (an
    election outlasting it) gives no client up: see :func:`_selection_cut_short`."""

    def __init__(self) -> None:
        self.timed_out: list[tuple[Any, Exception]] = []  # (client, its error)

    def _error(self, client: Any) -> Exception | None:
        """The server selection time-out ``client`` was given up on, if it was."""
        return next((error for each, error in self.timed_out if each is client), None)

    def skips(self, client: Any) -> bool:
        """Whether a command on ``client`` is not tried (its selection timed out)."""
        return self._error(client) is not None

    @contextlib.contextmanager
    def noting(self, client: Any) -> Iterator[None]:
        """Around a command on ``client`` (a delete's write): its server
        selection timing out, ``client`` is given up (for the steps after),
        unless the client's ``timeoutMS`` cut it short."""
        handled = sys.exc_info()[1]  # (the caller's, as the command starts)
        try:
            yield
        except pymongo.errors.PyMongoError as error:
            timed_out = _selection_timed_out(error, handled)
            # (Cut short, the steps after try it.)
            if timed_out is not None and not _selection_cut_short(client):
                self.timed_out.append((client, timed_out))
            raise

    @contextlib.contextmanager
    def trying(self, client: Any) -> Iterator[None]:
        """Around a command on ``client`` (a step after the delete's write): a
        client given up raises (a copy of) its server selection time-out at
        once, whose traceback (a write's error, the caller's) stays as it
        was; else the command runs under a whole server selection's time
        (see :func:`_whole_selection`), and one timing out now is given up."""
        given_up = self._error(client)
        if given_up is not None:
            raise copy.copy(given_up)
        handled = sys.exc_info()[1]  # (the caller's, as the command starts)
        try:
            with _whole_selection(client):
                yield
        except pymongo.errors.PyMongoError as error:
            timed_out = _selection_timed_out(error, handled)
            if timed_out is not None:
                self.timed_out.append((client, timed_out))
            raise

    async def ids_there(self, operation: Operation, query: dict, expected: int) -> list:
        """The ids of the documents ``query`` matches in the operation's
        collection (of ``expected`` at most), read as :func:`after_failure`
        says: a cleanup's read of what a failed delete left, a document there
        in one of its reads is there (an id may come twice)."""
        found: list = []
        async with after_failure(operation) as readings:
            for reading in readings:
                if len(found) >= expected:
                    break
                collection = reading.collection
                with self.trying(collection.database.client):
                    cursor = collection.find(
                        query,
                        {"_id": 1},
                        batch_size=WHOLE_RESULT,
                        session=reading.session,
                        max_time_ms=max_time_ms(collection),
                    )
                    found += [raw["_id"] for raw in await read_list(cursor)]
        return found


def _selection_timed_out(
    error: pymongo.errors.PyMongoError, handled: BaseException | None
) -> pymongo.errors.ServerSelectionTimeoutError | None:
    """The server selection time-out ``error`` is, or that PyMongo raised it
    while handling: a retry whose selection timed out raises the first
    attempt's error instead (the selection waited all the same). Not the
    error the caller was handling as the command started (``handled``):
    any error raised in it has that one as its context, a time-out of
    another command's (another client's, perhaps), not of this one."""
    if isinstance(error, pymongo.errors.ServerSelectionTimeoutError):
        return error
    context = error.__context__
    if (
        isinstance(context, pymongo.errors.ServerSelectionTimeoutError)
        and context is not handled
    ):
        return context
    return None


def _whole_selection(client: Any) -> contextlib.AbstractContextManager[Any]:
    """The time limit of a step after a delete's write: ``client``'s
    ``serverSelectionTimeoutMS`` in place of its shorter ``timeoutMS``, for the
    server selection and the command together (``pymongo.timeout``; a block
    of the caller's still bounds it): a delete that failed through an
    election has its steps run once the next primary is there, not its
    cascaded documents' files left; a read at majority may wait as long."""
    if not _selection_cut_short(client):
        return contextlib.nullcontext()
    return pymongo.timeout(client.options.server_selection_timeout)


class after_failure:  # (named as a function: ``async with after_failure(op)``)
    """The operations the reads after a delete failed (outside a transaction)
    run as, in order, a document or file found by one of them being there:
    on the primary, where the delete went (a lagging secondary shows a
    document it deleted as there). Unless the delete asked the primary's
    acknowledgement alone (w 0 or 1), the primary's own data (a document
    written since the majority's, which an unapplied delete left, is there),
    then at read concern "majority" in the same causally consistent session
    (see :meth:`_causal_session`): a delete not majority-committed, which a
    rollback may undo, reads as not applied, and its documents keep their
    files (an orphan costs space, a lost file is lost data); one the primary
    had is waited for (``afterClusterTime``), not read in an older snapshot
    (a next primary's first moments).

    An async context manager of its own, not an async generator: the loop's
    end (``shutdown_asyncgens()``) finalises every async generator of the
    loop at once, and so ended the session of these reads under them when
    they were on their way then (the steps after a cancelled delete, which
    that end waits for): "Cannot use ended session", the files of the
    documents the delete removed kept, found by nothing."""

    def __init__(self, operation: Operation) -> None:
        self._operation = operation
        self._own: AsyncClientSession | None = None  # (ended on exit)

    async def __aenter__(self) -> list[Operation]:
        operation = self._operation
        primary = dataclasses.replace(
            operation, collection=on_primary(operation.collection)
        )
        if _primary_alone(operation):
            return [primary]
        primary = dataclasses.replace(primary, session=self._causal_session(primary))
        majority = primary.collection.with_options(read_concern=ReadConcern("majority"))
        return [primary, dataclasses.replace(primary, collection=majority)]

    async def __aexit__(self, *exc_info: object) -> None:
        own, self._own = self._own, None
        if own is not None:
            await own.end_session()

    def _causal_session(self, operation: Operation) -> AsyncClientSession | None:
        """The session of the reads after a failed delete: the operation's
        when causally consistent, else one of its own (ended on exit), so the
        read at majority waits for what the read on the primary saw (PyMongo
        sends its ``operationTime`` as ``afterClusterTime``); none on a
        single server (a standalone refuses a session; no election there to
        wait through)."""
        session = operation.session
        if session is not None and session.options.causal_consistency:
            return session
        client = operation.collection.database.client
        if client.topology_description.topology_type == TOPOLOGY_TYPE.Single:
            return session
        self._own = client.start_session(causal_consistency=True)
        return self._own


def max_time_ms(collection: AsyncCollection) -> int | None:
    """The ``maxTimeMS`` of a read of ``collection``: at read concern
    majority (the reads after a failed delete, see :func:`after_failure`),
    its client's ``serverSelectionTimeoutMS``, as long as those steps wait
    for a server (one of a collection whose creation no majority has yet
    waits for it, forever with the secondaries lost; given up, the files
    stay); else none. Under ``timeoutMS`` PyMongo sends the time left."""
    if collection.read_concern.level != "majority":
        return None
    return round(collection.database.client.options.server_selection_timeout * 1000)


def _primary_alone(operation: Operation) -> bool:
    """Whether the operation's writes ask the primary's acknowledgement alone
    (w 0 or 1): a delete that may roll back is then the user's choice."""
    w = operation.write_concern.get(
        "w", operation.collection.write_concern.document.get("w")
    )
    return isinstance(w, int) and w <= 1


async def run_again_if_cut_short(steps: Callable[[set[int]], Awaitable[None]]) -> None:
    """``await steps(signalled)``, the steps after a delete that failed outside
    a transaction; cut short by a cancellation (its loop's end), they are run
    once more, as the steps a cancellation cuts short are, then the
    cancellation is raised. ``signalled``, the ``id()`` of the documents sent
    ``post_delete`` (the steps add to it), sends none twice."""
    signalled: set[int] = set()
    try:
        await steps(signalled)
    except asyncio.CancelledError:
        with contextlib.suppress(asyncio.CancelledError):
            await steps(signalled)
        raise


async def delete_files(
    proxies: list[AsyncGridFSProxy],
    operation: Operation,
    surely: bool = False,
    unreachable: Unreachable | None = None,
) -> None:
    """Delete these files (one already gone is no error), in the operation's
    session when they live on its client; on another client, once the
    transaction the documents' delete is in (if this package bound it)
    committed (:func:`_delete_in`). Outside a transaction, each even when
    one failed (the documents are gone: a file not tried would be left,
    orphaned), then the first error is raised; ``surely`` (a task of its own
    following a cancelled delete, which its loop's end cancels in turn),
    each even when cancelled meanwhile, then the cancellation is raised.
    But none on a client ``unreachable`` gave up (a fresh one if not given).
    Outside a transaction, under a ``pymongo.timeout()`` of the caller's, in
    no session, outside that time-out (:func:`beyond_caller_timeout`): cut
    short by it, they were left, found by nothing."""
    alone = alone_past_timeout(proxies, operation)
    if alone is None:
        await _delete_each(proxies, operation, surely, unreachable)
    else:
        await past_timeout(proxies, _delete_each(proxies, alone, True, unreachable))


def alone_past_timeout(
    proxies: list[AsyncGridFSProxy], operation: Operation
) -> Operation | None:
    """The operation, in no session (the steps may outlive the call, and the
    caller use its session meanwhile), for the steps after the documents'
    delete for the files ``proxies`` (reads, deletes) to run beyond the
    caller's ``pymongo.timeout()`` (:func:`past_timeout`): under one, outside
    a transaction (whose abort keeps the documents). None: no such steps."""
    session = operation.session
    if not proxies or caller_time_left() is None:
        return None
    if session is not None and session.in_transaction:
        return None
    return dataclasses.replace(operation, session=None)


async def past_timeout(
    proxies: list[AsyncGridFSProxy], steps: Coroutine[Any, Any, None]
) -> None:
    """``await steps`` for the files ``proxies`` of deleted documents beyond
    the caller's ``pymongo.timeout()`` (:func:`beyond_caller_timeout`): cut
    short by it, the files were left, found by nothing."""
    aliases = {proxy.db_alias for proxy in proxies}
    met = _Met({id(proxy) for proxy in proxies})
    await beyond_caller_timeout(
        _noted(proxies, steps, met),
        "delete of the files of deleted documents",
        aliases,
        met.first,
    )


@dataclasses.dataclass
class _Met:
    """The errors the deletes of the files ``ids`` (their proxies' ``id()``)
    beyond a caller's time-out met (see :func:`_noted`): the caller, no
    longer waiting, raises the first, as it would once they ended; then it
    is not reported again as they end. Not those of other files deleted in
    that task (a ``post_delete`` receiver's delete): not the caller's."""

    ids: set[int]
    errors: list[Exception] = dataclasses.field(default_factory=list)
    raised: Exception | None = None

    def first(self) -> Exception | None:
        """The first error met (now raised by the caller), if any."""
        self.raised = self.errors[0] if self.errors else None
        return self.raised


# The errors met by the files' deletes of this task beyond its caller's
# time-out (see _noted), for that caller (and the tasks it starts): None else.
_met: ContextVar[_Met | None] = ContextVar("mongoengine_async_met", default=None)


# The task deleting each file beyond its caller's time-out (by the proxy's
# id(): the task's steps hold the proxy), which its other deletes wait for.
# Held weakly: one its loop, closed by hand, left pending would be kept for
# good (its coroutine, documents and files' data), its steps never ending.
_past_timeout: dict[int, weakref.ref[asyncio.Task[Any]]] = {}


async def _noted(
    proxies: list[AsyncGridFSProxy], steps: Coroutine[Any, Any, None], met: _Met
) -> None:
    """``await steps``, this task noted as deleting ``proxies`` meanwhile: a
    caller cancelled as it waited leaves it going on, and its own steps (a
    follow-up's delete of those files) wait for it, not send them twice.
    The errors of those deletes go to ``met``; one its caller raised is not
    raised again (reported: see ``beyond_caller_timeout``)."""
    task = asyncio.current_task()
    assert task is not None
    noted = weakref.ref(task)  # (what the steps' end, even collected, drops)
    for proxy in proxies:
        _past_timeout[id(proxy)] = noted
    _met.set(met)
    try:
        await steps
    except Exception as error:
        if error is not met.raised:
            raise
    finally:
        for proxy in proxies:
            if _past_timeout.get(id(proxy)) is noted:
                del _past_timeout[id(proxy)]


async def _after_past_timeout(proxy: AsyncGridFSProxy) -> None:
    """Once another task of this loop deleting ``proxy`` beyond its caller's
    time-out (:func:`_noted`) ended: the file is gone then (its ``grid_id``
    None), and not deleted twice at once."""
    noted = _past_timeout.get(id(proxy))
    task = None if noted is None else noted()
    if task is None or task is asyncio.current_task():
        return
    if task.get_loop() is asyncio.get_running_loop():
        await asyncio.wait((task,))


async def _delete_each(
    proxies: list[AsyncGridFSProxy],
    operation: Operation,
    surely: bool,
    unreachable: Unreachable | None,
) -> None:
    """The deletes of :func:`delete_files`, in turn."""
    undos = journal(operation.session)
    errors: list[BaseException] = []
    unreachable = Unreachable() if unreachable is None else unreachable
    for proxy in proxies:
        client = proxy._root().database.client
        if unreachable.skips(client):
            continue
        session = _session_of_file(operation, client)
        try:
            await _after_past_timeout(proxy)
            with unreachable.trying(client):
                await proxy._delete(
                    True, session, undos if session is None else journal(session)
                )
        except asyncio.CancelledError as cancelled:
            if not surely:
                raise
            errors.insert(0, cancelled)  # (what is raised, once all were tried)
        except Exception as error:
            if session is not None and session.in_transaction:
                raise  # aborted: it deletes nothing more
            errors.append(error)
            if (met := _met.get()) is not None and id(proxy) in met.ids:
                met.errors.append(error)
    if errors:
        raise errors[0]


def _session_of_file(operation: Operation, client: Any) -> AsyncClientSession | None:
    """The session the delete of a file on ``client`` of documents the
    ``operation`` deleted runs in: the operation's, on its client; else none,
    not a transaction bound for ``client`` that the documents' delete is not
    in (its abort would bring the file back, the documents gone: orphaned)."""
    session = operation.session
    return session if session is not None and session.client is client else None


@dataclasses.dataclass(frozen=True)
class Listed:
    """The documents of ``cls`` whose files a delete listed (``ids``), and how
    many it deleted (None: unacknowledged, not known)."""

    cls: type[Any]
    ids: list
    deleted: int | None

    def all_gone(self) -> bool:
        """Whether the delete surely removed every one: not when its count is
        not known (unacknowledged), as one it left may hold a listed file."""
        return self.deleted is not None and self.deleted >= len(self.ids)


async def delete_files_of_deleted(
    proxies: list[AsyncGridFSProxy],
    operation: Operation,
    left: Listed | None = None,
    unreachable: Unreachable | None = None,
    failed: bool = False,
) -> None:
    """:func:`delete_files` of documents already deleted, but those a listed
    document the delete left holds (see :func:`delete_unheld`): a caller
    cancelled meanwhile, outside a transaction (whose abort keeps the
    documents and files), leaves them all deleted in a task of its own, as
    they would stay, found by nothing (``Document.async_delete`` has its own
    follow-up). ``unreachable``, ``failed``: see :func:`delete_unheld`."""
    try:
        await delete_unheld(proxies, operation, left, False, unreachable, failed)
    except asyncio.CancelledError:
        session = operation.session
        if proxies and (session is None or not session.in_transaction):
            # (Not in the caller's session: it may use it meanwhile.)
            alone = dataclasses.replace(operation, session=None)
            follow_up(
                delete_unheld(proxies, alone, left, True, unreachable, failed),
                "delete of the files of documents a cancelled delete deleted",
                finish=True,
                aliases={proxy.db_alias for proxy in proxies},
            )
        raise


async def delete_unheld(
    proxies: list[AsyncGridFSProxy],
    operation: Operation,
    left: Listed | None,
    surely: bool = False,
    unreachable: Unreachable | None = None,
    failed: bool = False,
) -> None:
    """:func:`delete_files` of ``proxies`` but those the ``left`` documents
    still there hold: one listed that the delete left (changed meanwhile to
    match its query no more) keeps its files. Read only when the delete
    removed fewer than it listed; ``surely`` and cancelled while they are
    read, they are read again, then deleted, before the cancellation is
    raised. A file that read could not check (it failed, or was cancelled
    again) is kept, as all are then: a live document may hold it (an
    orphan costs space, a lost file is lost data). Nothing is tried on a
    client ``unreachable`` gave up (the steps after one delete's error share
    one), and one whose server selection times out is given up. ``failed``:
    see :func:`not_held`. Under the caller's ``pymongo.timeout()``, outside a
    transaction, the reads too run beyond it (see :func:`delete_files`): cut
    short, they kept the files of the documents gone, found by nothing."""
    alone = alone_past_timeout(proxies, operation)
    if alone is not None:
        steps = delete_unheld(proxies, alone, left, True, unreachable, failed)
        await past_timeout(proxies, steps)
        return
    unreachable = Unreachable() if unreachable is None else unreachable
    try:
        proxies = await not_held(proxies, operation, left, unreachable, failed)
    except asyncio.CancelledError:
        if not surely:
            raise
        proxies = await not_held(proxies, operation, left, unreachable, failed)
        await delete_files(proxies, operation, True, unreachable)
        raise
    await delete_files(proxies, operation, surely, unreachable)


async def not_held(
    proxies: list[AsyncGridFSProxy],
    operation: Operation,
    left: Listed | None,
    unreachable: Unreachable | None = None,
    failed: bool = False,
) -> list[AsyncGridFSProxy]:
    """``proxies`` but the files the listed documents still there hold (one
    query per run of ids, when the delete removed fewer than it listed; none
    when there is no file to keep); after a delete that ``failed``, a file
    held in one of the reads :func:`after_failure` names is held. Its client
    given up by ``unreachable``, it raises that server selection time-out
    without a query."""
    if not proxies or left is None or left.all_gone():
        return proxies
    codec_options = operation.collection.codec_options
    client = operation.collection.database.client
    unreachable = Unreachable() if unreachable is None else unreachable
    held: set[tuple[str, str, Any]] = set()
    async with contextlib.AsyncExitStack() as reads:
        readings = (
            await reads.enter_async_context(after_failure(operation))
            if failed
            else [operation]
        )
        for reading in readings:
            for run in listed(Matching(left.cls, {}), left.ids, codec_options):
                with unreachable.trying(client):
                    found = await stored_files(run, reading)
                held.update(_file_key(each) for each in found)
            if all(_file_key(each) in held for each in proxies):
                break
    return [each for each in proxies if _file_key(each) not in held]


def _file_key(proxy: AsyncGridFSProxy) -> tuple[str, str, Any]:
    """What tells one stored file from another: its bucket and id."""
    return proxy.db_alias, proxy.collection_name, proxy.grid_id


_BLOCKING = {  # and delete, defined above
    "get": "await proxy.async_get()",
    "put": "await proxy.async_put(data)",
    "read": "await proxy.async_read()",
    "replace": "await proxy.async_replace(data)",
    "new_file": "await proxy.async_put(data)",
    "write": "await proxy.async_put(data)",
    "writelines": "await proxy.async_put(data)",
}


def _describe(proxy: AsyncGridFSProxy) -> tuple[bool, str, str]:
    _check_alias(proxy)  # a sync or unconnected alias has an error of its own
    return True, type(proxy).__name__, proxy.db_alias


guard_blocking_methods(AsyncGridFSProxy, _BLOCKING, _describe)


# -- async methods of a sync alias's proxies -----------------------------------------


def _refusing(name: str, sync_name: str) -> Callable[..., Any]:
    """A method ``name`` that raises at once, naming ``sync_name`` to use."""

    def refuse(self: GridFSProxy, *args: Any, **kwargs: Any) -> Any:
        raise self._refusal(name, sync_name)

    refuse.__name__ = refuse.__qualname__ = name
    refuse.__doc__ = f"Refused: the file is on a sync alias; use ``{sync_name}``."
    return refuse


class RefusesAsync(_GridFSProxyMixin):
    """For MongoEngine's GridFSProxy, what a file field reads as on a sync
    alias: its async methods raise ``AsyncUsageError`` naming the sync one
    (MongoEngine's proxy would read the file, blocking, then raise a bare
    AttributeError)."""

    def _refusal(self, name: str, sync_name: str) -> Exception:
        if not is_sync_connection(self.db_alias):
            return unconnected_error(self)
        target = f"{type(self.instance).__name__}.{self.key}"
        use = f"document.{self.key}.{sync_name}"
        return sync_alias_error(self.db_alias, target, name, use)

    async_get = _refusing("async_get", "get()")
    async_put = _refusing("async_put", "put(data)")
    async_read = _refusing("async_read", "read()")
    async_iter_chunks = _refusing("async_iter_chunks", "read()")
    __aiter__ = async_iter_chunks  # `async for chunk in proxy` (was a TypeError)
    async_delete = _refusing("async_delete", "delete()")
    async_replace = _refusing("async_replace", "replace(data)")


class RefusesAsyncImage(RefusesAsync):
    """:class:`RefusesAsync` for MongoEngine's ImageGridFsProxy."""

    async_thumbnail = _refusing("async_thumbnail", "thumbnail")
