"""Images on async aliases: an ``ImageField`` reads as :class:`AsyncImageGridFSProxy`.

MongoEngine's own image pipeline (resize, thumbnail, format; Pillow) runs
unchanged in a worker thread with its GridFS writes captured; the files are then
stored with the bounded uploads of :mod:`mongoengine_async.gridfs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from gridfs.asynchronous import AsyncGridOut
from gridfs.errors import NoFile
from mongoengine.errors import ValidationError
from mongoengine.fields import ImageGridFsProxy
from pymongo.asynchronous.client_session import AsyncClientSession

from mongoengine_async.connection import running_loop
from mongoengine_async.context import Journal
from mongoengine_async.detached import id_repr, to_completion
from mongoengine_async.errors import NotLoadedError
from mongoengine_async.gridfs import (
    AsyncGridFSProxy,
    _delete_file,
    _delete_in,
    _file_kwargs,
    _pieces,
    not_loaded_error,
    under_way,
    upload_under_way,
)

__all__ = ("AsyncImageGridFSProxy",)


class _Captured:
    """Stands in for the GridFS of MongoEngine's ImageGridFsProxy.put, keeping
    what it would store (bytes and file fields) under ids made up front."""

    def __init__(self) -> None:
        self.files: list[tuple[ObjectId, bytes, dict]] = []

    def put(self, file_obj: Any, **kwargs: Any) -> ObjectId:
        file_id = kwargs.pop("_id", None) or ObjectId()
        self.files.append((file_id, file_obj.read(), kwargs))
        return file_id


class _Holder:
    """The bits of a document MongoEngine's ImageGridFsProxy.put looks at."""

    def __init__(self, key: str, field: Any) -> None:
        self._fields = {key: field}

    def _mark_as_changed(self, key: str) -> None:
        pass


class _ImageWork(ImageGridFsProxy):
    """MongoEngine's ImageGridFsProxy.put (resize, thumbnail, format), run
    unchanged in a worker thread, with its GridFS writes captured."""

    def __init__(self, key: str, field: Any) -> None:
        super().__init__(key=key, instance=_Holder(key, field))
        self.captured = _Captured()

    @property
    def fs(self) -> _Captured:
        return self.captured


def _process_image(field: Any, source: Any, kwargs: dict) -> list:
    """Run MongoEngine's image logic on ``source``; returns the files to store
    (the thumbnail first, then the image), each ``(id, bytes, fields)``."""
    work = _ImageWork("image", field)
    work.put(source, **kwargs)
    return work.captured.files


class AsyncImageGridFSProxy(AsyncGridFSProxy, ImageGridFsProxy):
    """An image of an ``ImageField`` on an async alias.

    ``async_put`` applies the field's ``size``, ``thumbnail_size`` and format as
    MongoEngine does, with Pillow run in a worker thread; the thumbnail is
    stored and deleted with the image. ``size`` and ``format`` need the files
    document loaded (``async_get``/``async_put``); ``await
    proxy.async_thumbnail()`` opens the thumbnail.
    """

    def _image_field(self) -> Any:
        if self._field is not None:
            return self._field
        field = self.instance._fields[self.key]
        return field.field if hasattr(field, "field") else field

    def _loaded_value(self, name: str, attribute: str | None = None) -> Any:
        """Field ``name`` of the files document, read as ``proxy.attribute``."""
        if self.grid_id is None:
            return None
        if not self.loaded:
            raise not_loaded_error(self, attribute or name)
        if name not in self._file:  # as MongoEngine's, which reads it from GridOut
            raise AttributeError(
                f"{type(self).__name__}.{attribute or name}: the file "
                f"{self.grid_id!r} is not an image stored by an ImageField "
                f"(its files document has no {name!r})"
            )
        return self._file[name]

    @property
    def size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the stored image."""
        width = self._loaded_value("width", "size")
        return None if width is None else (width, self._file.get("height"))

    @property
    def format(self) -> str | None:
        """Format of the stored image (``PNG``, ``JPEG``, ...)."""
        return self._loaded_value("format")

    @property
    def thumbnail_id(self) -> Any:
        return self._loaded_value("thumbnail_id")

    @property
    def thumbnail(self) -> Any:
        """None when that is known without I/O (no image, or a loaded one
        without a thumbnail), as MongoEngine's (a loaded file that is not an
        image, without ``thumbnail_id``: AttributeError); otherwise opening it would
        block: ``NotLoadedError`` (also an ``AttributeError``, so ``hasattr``
        answers) naming ``async_thumbnail``."""
        if self.grid_id is None:
            return None
        if self.loaded and self.thumbnail_id is None:
            return None
        raise NotLoadedError(
            f"{type(self).__name__}.thumbnail would block the event loop: "
            "use `await proxy.async_thumbnail()`"
        )

    async def async_thumbnail(
        self, *, session: AsyncClientSession | None = None
    ) -> AsyncGridOut | None:
        """The stored thumbnail (an AsyncGridOut, in ``session`` if given), or
        None when the image has none or is gone; a thumbnail missing from
        GridFS raises ``NoFile``, as MongoEngine's ``thumbnail``."""
        if self.grid_id is None:
            return None
        if not self.loaded:
            try:
                await self._fetch_file(session)
            except NoFile:
                return None  # MongoEngine's get() gives None: no thumbnail
        thumbnail_id = self._file.get("thumbnail_id")
        if thumbnail_id is None:
            return None
        return await self._copy_for(thumbnail_id)._stream(session=session)

    async def async_put(
        self,
        data: Any,
        filename: str | None = None,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        session: AsyncClientSession | None = None,
        **kwargs: Any,
    ) -> AsyncImageGridFSProxy:
        """Store an image (bytes, a binary file, or an async iterator or async
        file of bytes), resized and with its thumbnail as the field says, in
        ``session`` if given."""
        running_loop()  # (before the image is read and processed)
        self._check_empty()
        file_kwargs = _file_kwargs(filename, content_type, metadata, kwargs)
        source = await _image_source(data)
        files = await asyncio.to_thread(
            _process_image, self._image_field(), source, file_kwargs
        )
        *thumbnails, (image_id, image, image_kwargs) = files
        root = self._root()
        session = self._session(root, session)
        stored: list[Any] = []
        what = f"upload of image {id_repr(image_id)}" + (
            " and its thumbnail" if thumbnails else ""
        )
        # (One wait for all: the thumbnail deleted once the image failed too.)
        with under_way(root, what):
            try:
                for file_id, content, fields in thumbnails:
                    await upload_under_way(
                        root, content, session, _id=file_id, **fields
                    )
                    stored.append(file_id)
                file_document = await upload_under_way(
                    root, image, session, _id=image_id, **image_kwargs
                )
            except BaseException as error:
                if not isinstance(error, GeneratorExit):  # (its loop closed)
                    await _delete_stored(root, stored, session)
                raise
            if self.grid_id:  # another task's put filled the proxy meanwhile
                for file_id in [*stored, image_id]:  # (it won)
                    await to_completion(_delete_file(root, file_id, session))
                self._check_empty()
        undos = self._undos(session)
        self._took(file_document, self._journal(undos, uploaded=[*stored, image_id]))
        return self

    async def _delete(
        self,
        missing_ok: bool,
        session: AsyncClientSession | None,
        undos: Journal | None,
    ) -> None:
        """Delete the image and its thumbnail (``async_delete``)."""
        if self.grid_id is None:
            return
        if not self.loaded:
            try:
                await self._fetch_file(session)
            except NoFile:
                pass  # reported below, by the delete itself
        thumbnail_id = self._file_value("thumbnail_id")
        if thumbnail_id is not None:  # a thumbnail has no thumbnail: no lookup
            await _delete_in(self._root(), thumbnail_id, session, undos)
        await super()._delete(missing_ok, session, undos)


async def _delete_stored(
    root: Any, file_ids: list[Any], session: AsyncClientSession | None
) -> None:
    """Delete the files ``file_ids`` (the thumbnail) of a put whose image
    failed, each even when one could not be: the put's own error (its
    cancellation) is the one to raise."""
    for file_id in file_ids:
        with contextlib.suppress(Exception):
            await to_completion(_delete_file(root, file_id, session))


class _ReadFrom(io.BytesIO):
    """The bytes read from a file object, shown as that object (in Pillow's
    "cannot identify image file ..." message, as MongoEngine's put shows it)."""

    def __init__(self, content: bytes, source: Any) -> None:
        super().__init__(content)
        self.source = source

    def __repr__(self) -> str:
        return repr(self.source)


async def _image_source(data: Any) -> Any:
    """What MongoEngine's put gives Pillow, opened in a worker thread: bytes,
    file objects (sync ones read in worker threads, a piece at a time) and
    async sources (an async file or iterator), and iterables of bytes, read
    into memory here, so that the thread, which a cancelled put leaves running,
    never reads the caller's file after the put returned; anything else as it
    is, as MongoEngine passes it: a path (opened in the thread), or what
    Pillow cannot open (MongoEngine's ``ValidationError``, "Invalid image")."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(data))
    if (
        hasattr(data, "read")
        or hasattr(data, "__aiter__")
        or (isinstance(data, Iterable) and not isinstance(data, str))
    ):
        pieces = [piece async for piece in _pieces(data, 1 << 20)]
        try:
            return _ReadFrom(b"".join(pieces), data)
        except TypeError:  # str pieces (a text file): Pillow identifies none
            raise ValidationError(
                f"Invalid image: cannot identify image file {data!r}"
            ) from None
    return data
