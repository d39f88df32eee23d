"""What type checkers see of MongoEngine's documents, querysets and fields.

MongoEngine ships no types and builds its classes with metaclasses, so to a
checker ``book.title`` and ``Book.objects`` are unknown (or ``Any``). This stub
module exists only for checkers (it is imported under ``TYPE_CHECKING``): it
declares MongoEngine's API with types, fields as descriptors whose value type
follows ``required=``/``default=``. At runtime the names stay MongoEngine's (and
ours) classes.
"""

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import (
    Any,
    ClassVar,
    Generic,
    Literal,
    Protocol,
    TypeAlias,
    TypeVar,
    overload,
)
from uuid import UUID

from bson import SON, DBRef, ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.collation import Collation
from pymongo.command_cursor import CommandCursor
from typing_extensions import Self

from mongoengine_async.gridfs import AsyncGridFSProxy
from mongoengine_async.proxies import LazyReference
from mongoengine_async.queryset import QuerySet

_T = TypeVar("_T")
_D = TypeVar("_D")
_D_co = TypeVar("_D_co", covariant=True)
_E = TypeVar("_E", bound=BaseDocument)
_Enum = TypeVar("_Enum", bound=Enum)
_X = TypeVar("_X")
_Q = TypeVar("_Q")
_R = TypeVar("_R")
_Doc = TypeVar("_Doc", bound=MongoEngineDocument)
_Default: TypeAlias = _X | Callable[[], _X]

# -- documents ---------------------------------------------------------------------

class BaseDocument:
    """MongoEngine's BaseDocument: what every (embedded) document has."""

    meta: ClassVar[dict[str, Any]]
    _meta: ClassVar[dict[str, Any]]
    _fields: ClassVar[dict[str, Any]]
    _fields_ordered: ClassVar[tuple[str, ...]]
    _class_name: ClassVar[str]
    _db_field_map: ClassVar[dict[str, str]]
    _cached_reference_fields: ClassVar[list[Any]]
    _data: dict[str, Any]
    _changed_fields: list[str]
    _created: bool
    _initialised: bool
    _dynamic: ClassVar[bool]
    def __init__(self, *args: Any, **values: Any) -> None: ...
    def __getitem__(self, name: str) -> Any: ...
    def __setitem__(self, name: str, value: Any) -> None: ...
    def __contains__(self, name: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def clean(self) -> None: ...
    def validate(self, clean: bool = True) -> None: ...
    def to_mongo(
        self, use_db_field: bool = True, fields: list[str] | None = None
    ) -> SON[str, Any]: ...
    def to_json(self, *args: Any, **kwargs: Any) -> str: ...
    @classmethod
    def from_json(
        cls, json_data: str, created: bool = False, **kwargs: Any
    ) -> Self: ...
    def get_text_score(self) -> float: ...
    def _mark_as_changed(self, key: str) -> None: ...
    def _clear_changed_fields(self) -> None: ...
    def _get_changed_fields(self) -> list[str]: ...
    def _delta(self) -> tuple[dict[str, Any], dict[str, Any]]: ...
    @classmethod
    def _get_collection_name(cls) -> str | None: ...
    @classmethod
    def _from_son(
        cls,
        son: Mapping[str, Any],
        _auto_dereference: bool = True,
        created: bool = False,
    ) -> Self: ...
    @classmethod
    def _build_index_spec(cls, spec: Any) -> dict[str, Any]: ...
    @classmethod
    def _lookup_field(cls, parts: str | list[str]) -> list[Any]: ...

class EmbeddedDocument(BaseDocument):
    """MongoEngine's EmbeddedDocument."""

    _instance: Any

class DynamicEmbeddedDocument(EmbeddedDocument):
    """MongoEngine's DynamicEmbeddedDocument: any attribute is a field."""

    def __getattr__(self, name: str) -> Any: ...
    def __setattr__(self, name: str, value: Any) -> None: ...

class _Objects:
    """``Model.objects``: the class's QuerySet (MongoEngine's QuerySetManager)."""

    def __get__(self, instance: None, owner: type[_D]) -> QuerySet[_D]: ...

class _Manager(_Objects, Generic[_R]):
    """What ``@queryset_manager`` makes of a function: on the class, what the
    function returns for the class's queryset (``QuerySet[Post]``, say)."""

    def __get__(self, instance: object, owner: type[Any]) -> _R: ...  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]

# MongoEngine's decorator, typed: the function takes the queryset (and, first,
# the document class) and its return type is what the attribute reads as.
@overload
def queryset_manager(func: Callable[[Any], _R]) -> _Manager[_R]: ...
@overload
def queryset_manager(func: Callable[[Any, Any], _R]) -> _Manager[_R]: ...
@overload
def queryset_manager(func: Callable[..., Any]) -> _Manager[Any]: ...

class MongoEngineDocument(BaseDocument):
    """MongoEngine's Document, for the checker (ours adds the async methods)."""

    # (Not a ClassVar: a ``@queryset_manager def objects`` of a model, a
    # decorated method to pyright, overrides it.)
    objects: _Objects
    _collection: ClassVar[Any]
    pk: Any
    id: Any
    DoesNotExist: ClassVar[type[Exception]]
    MultipleObjectsReturned: ClassVar[type[Exception]]
    @property
    def _qs(self) -> QuerySet[Self]: ...
    @property
    def _object_key(self) -> dict[str, Any]: ...
    @classmethod
    def _get_db(cls) -> Any: ...
    @classmethod
    def _get_collection(cls) -> Any: ...
    def _get_update_doc(self) -> dict[str, Any]: ...
    def _integrate_shard_key(
        self, doc: Mapping[str, Any], select_dict: dict[str, Any]
    ) -> dict[str, Any]: ...
    def _reload(self, key: str, value: Any) -> Any: ...
    def save(self, *args: Any, **kwargs: Any) -> Self: ...
    def delete(
        self, signal_kwargs: dict[str, Any] | None = None, **write_concern: Any
    ) -> None: ...
    def reload(self, *fields: str, **kwargs: Any) -> Self: ...
    def modify(self, query: dict[str, Any] | None = None, **update: Any) -> bool: ...
    def update(self, **kwargs: Any) -> Any: ...
    def cascade_save(self, **kwargs: Any) -> None: ...
    def select_related(self, max_depth: int = 1) -> Self: ...
    def switch_db(self, db_alias: str, keep_created: bool = True) -> Self: ...
    def switch_collection(
        self, collection_name: str, keep_created: bool = True
    ) -> Self: ...
    def to_dbref(self) -> DBRef: ...
    @classmethod
    def register_delete_rule(
        cls, document_cls: type[Any], field_name: str, rule: int
    ) -> None: ...
    @classmethod
    def drop_collection(cls) -> None: ...
    @classmethod
    def create_index(
        cls, keys: Any, background: bool = False, **kwargs: Any
    ) -> str: ...
    @classmethod
    def ensure_indexes(cls) -> None: ...
    @classmethod
    def list_indexes(cls) -> list[list[tuple[str, int]]]: ...
    @classmethod
    def compare_indexes(cls) -> dict[str, list[Any]]: ...

class MongoEngineDynamicDocument(MongoEngineDocument):
    """MongoEngine's DynamicDocument: any attribute is a field."""

    def __getattr__(self, name: str) -> Any: ...
    def __setattr__(self, name: str, value: Any) -> None: ...

# -- querysets ---------------------------------------------------------------------

class _Yields(Protocol[_D_co]):
    """A queryset yielding ``_D_co`` (``QuerySet[Book]``: ``Book``), as ``async
    for`` shows: MongoEngine's sync methods return what our ``QuerySet`` is of."""

    def __aiter__(self) -> AsyncIterator[_D_co]: ...

class MongoEngineQuerySet:
    """MongoEngine's QuerySet, for the checker: chaining keeps the type;
    ``as_pymongo`` and ``scalar`` change what the terminals return. The sync
    terminals (for sync aliases) are typed as the ``async_*`` ones, through
    ``self: _Yields[_D]``: this class is the base of our generic QuerySet."""

    _document: Any
    _collection_obj: Any
    _cursor_obj: Any
    _query_obj: Any
    _query: dict[str, Any]
    _mongo_query: dict[str, Any] | None
    _cls_query: dict[str, Any]
    _none: bool
    _empty: bool
    _as_pymongo: bool
    _scalar: list[str]
    _skip: int | None
    _limit: int | None
    _hint: Any
    _collation: Any
    _batch_size: int | None
    _max_time_ms: int | None
    _comment: Any
    _where_clause: str | None
    _ordering: Any
    _loaded_fields: Any
    _read_preference: Any
    _read_concern: Any
    _auto_dereference: bool
    _result_cache: list[Any] | None
    _has_more: bool
    @property
    def _cursor_args(self) -> dict[str, Any]: ...
    _cursor: Any
    _dereference: Any
    def __init__(self, document: type[Any], collection: Any) -> None: ...
    def __call__(self, q_obj: Any = None, **query: Any) -> Self: ...
    def filter(self, *q_objs: Any, **query: Any) -> Self: ...
    def all(self) -> Self: ...
    def clone(self) -> Self: ...
    def none(self) -> Self: ...
    def no_sub_classes(self) -> Self: ...
    def using(self, alias: str) -> Self: ...
    def limit(self, n: int) -> Self: ...
    def skip(self, n: int) -> Self: ...
    def hint(self, index: Any = None) -> Self: ...
    def collation(
        self, collation: Mapping[str, Any] | Collation | None = None
    ) -> Self: ...
    def batch_size(self, size: int) -> Self: ...
    def only(self, *fields: str) -> Self: ...
    def exclude(self, *fields: str) -> Self: ...
    def fields(self, _only_called: bool = False, **kwargs: Any) -> Self: ...
    def all_fields(self) -> Self: ...
    def order_by(self, *keys: str, __raw__: Any = None) -> Self: ...
    def clear_cls_query(self) -> Self: ...
    def __getstate__(self) -> dict[str, Any]: ...
    def comment(self, text: str) -> Self: ...
    def allow_disk_use(self, enabled: bool) -> Self: ...
    def timeout(self, enabled: bool) -> Self: ...
    def read_preference(self, read_preference: Any) -> Self: ...
    def read_concern(self, read_concern: Mapping[str, Any] | None) -> Self: ...
    def max_time_ms(self, ms: int | None) -> Self: ...
    def search_text(
        self, text: str, language: str | None = None, text_score: bool = True
    ) -> Self: ...
    def snapshot(self, enabled: bool) -> Self: ...
    def where(self, where_clause: str) -> Self: ...
    def no_dereference(self) -> Self: ...
    def _clone_into(self, new_qs: _Q) -> _Q: ...
    def as_pymongo(self) -> QuerySet[dict[str, Any]]: ...
    def scalar(self, *fields: str) -> QuerySet[Any]: ...
    def values_list(self, *fields: str) -> QuerySet[Any]: ...
    def _fields_to_dbfields(self, fields: list[str]) -> set[str]: ...
    def _get_scalar(self, doc: Any) -> Any: ...
    @property
    def _collection(self) -> Any: ...
    def _populate_cache(self) -> None: ...
    def __repr__(self) -> str: ...
    def __getitem__(self, key: Any) -> Any: ...
    # The sync terminals (MongoEngine's, on sync aliases), typed as the async ones:
    # ``self: _Yields[_D]`` takes ``_D`` from our ``QuerySet[_D]`` (whose
    # ``__aiter__`` gives ``_D``). This ``__aiter__`` is only there for the
    # checkers to accept such a ``self`` (this class must match ``_Yields``).
    def __aiter__(self) -> AsyncIterator[Any]: ...
    def __iter__(self: _Yields[_D]) -> Iterator[_D]: ...
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def first(self: _Yields[_D]) -> _D | None: ...
    def get(self: _Yields[_D], *q_objs: Any, **query: Any) -> _D: ...
    def with_id(self: _Yields[_D], object_id: Any) -> _D | None: ...
    def in_bulk(self, object_ids: Any) -> dict[Any, Any]: ...
    def select_related(self, max_depth: int = 1) -> list[Any]: ...
    def count(self, with_limit_and_skip: bool = False) -> int: ...
    def distinct(self, field: str) -> list[Any]: ...
    def sum(self, field: str) -> Any: ...
    def average(self, field: str) -> Any: ...
    def aggregate(
        self,
        pipeline: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *suppl_pipeline: Mapping[str, Any],
        **kwargs: Any,
    ) -> CommandCursor[dict[str, Any]]: ...
    def item_frequencies(
        self, field: str, normalize: bool = False, map_reduce: bool = True
    ) -> dict[Any, Any]: ...
    def map_reduce(
        self,
        map_f: Any,
        reduce_f: Any,
        output: Any,
        finalize_f: Any = None,
        limit: int | None = None,
        scope: Any = None,
    ) -> Iterator[Any]: ...
    def exec_js(self, code: str, *fields: str, **options: Any) -> Any: ...
    def explain(self) -> dict[str, Any]: ...
    def create(self: _Yields[_D], **kwargs: Any) -> _D: ...
    def insert(
        self,
        doc_or_docs: Any,
        load_bulk: bool = True,
        write_concern: dict[str, Any] | None = None,
        signal_kwargs: dict[str, Any] | None = None,
    ) -> Any: ...
    def update(
        self,
        upsert: bool = False,
        multi: bool = True,
        write_concern: dict[str, Any] | None = None,
        read_concern: dict[str, Any] | None = None,
        full_result: bool = False,
        array_filters: list[Any] | None = None,
        **update: Any,
    ) -> Any: ...
    def update_one(
        self,
        upsert: bool = False,
        write_concern: dict[str, Any] | None = None,
        full_result: bool = False,
        array_filters: list[Any] | None = None,
        **update: Any,
    ) -> Any: ...
    def upsert_one(
        self: _Yields[_D],
        write_concern: dict[str, Any] | None = None,
        read_concern: dict[str, Any] | None = None,
        **update: Any,
    ) -> _D | None: ...
    def modify(
        self: _Yields[_D],
        upsert: bool = False,
        full_response: bool = False,
        remove: bool = False,
        new: bool = False,
        array_filters: list[Any] | None = None,
        **update: Any,
    ) -> _D | None: ...
    def delete(
        self,
        write_concern: dict[str, Any] | None = None,
        _from_doc_delete: bool = False,
        cascade_refs: set[Any] | None = None,
    ) -> int | None: ...
    def to_json(self, *args: Any, **kwargs: Any) -> str: ...
    def from_json(self: _Yields[_D], json_data: str) -> list[_D]: ...
    def rewind(self) -> None: ...

# -- fields ------------------------------------------------------------------------

class BaseField(Generic[_T]):
    """A field: on the class the field itself, on a document its value."""

    name: str
    db_field: str
    required: bool
    default: Any
    primary_key: bool
    def __init__(
        self,
        db_field: str | None = None,
        required: bool = False,
        default: Any = None,
        unique: bool = False,
        unique_with: str | list[str] | None = None,
        primary_key: bool = False,
        validation: Callable[[Any], None] | None = None,
        choices: Any = None,
        null: bool = False,
        sparse: bool = False,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __get__(self, instance: None, owner: Any) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: Any) -> _T: ...
    def __set__(self, instance: Any, value: _T | None) -> None: ...
    def validate(self, value: Any, clean: bool = True) -> None: ...
    def to_python(self, value: Any) -> Any: ...
    def to_mongo(self, value: Any) -> Any: ...
    def prepare_query_value(self, op: str, value: Any) -> Any: ...
    def error(
        self, message: str = "", errors: Any = None, field_name: str | None = None
    ) -> None: ...

# Scalar fields: ``required=True`` or a ``default`` give ``T``, else ``T | None``;
# the last overload serves subclasses, which declare their own value type, and
# the other calls (a ``default`` of another type, such as ``DecimalField(default=0)``,
# which reads as an int until loaded): those read as ``Any``.

class StringField(BaseField[_T]):
    @overload
    def __init__(
        self: StringField[str], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: StringField[str], *args: Any, default: _Default[str], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: StringField[str | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: StringField[Any], *args: Any, **kwargs: Any) -> None: ...

class URLField(BaseField[_T]):
    @overload
    def __init__(
        self: URLField[str], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: URLField[str], *args: Any, default: _Default[str], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: URLField[str | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: URLField[Any], *args: Any, **kwargs: Any) -> None: ...

class EmailField(BaseField[_T]):
    @overload
    def __init__(
        self: EmailField[str], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: EmailField[str], *args: Any, default: _Default[str], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: EmailField[str | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: EmailField[Any], *args: Any, **kwargs: Any) -> None: ...

class IntField(BaseField[_T]):
    @overload
    def __init__(
        self: IntField[int], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: IntField[int], *args: Any, default: _Default[int], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: IntField[int | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: IntField[Any], *args: Any, **kwargs: Any) -> None: ...

class LongField(BaseField[_T]):
    @overload
    def __init__(
        self: LongField[int], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: LongField[int], *args: Any, default: _Default[int], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: LongField[int | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: LongField[Any], *args: Any, **kwargs: Any) -> None: ...

class SequenceField(BaseField[_T]):
    collection_name: str
    db_alias: str
    sequence_name: str | None
    def generate(self) -> Any: ...
    def set_next_value(self, value: Any) -> Any: ...
    def get_next_value(self) -> Any: ...
    async def async_generate(self) -> Any: ...
    async def async_set_next_value(self, value: Any) -> Any: ...
    async def async_get_next_value(self) -> Any: ...
    @overload
    def __init__(
        self: SequenceField[int], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: SequenceField[int], *args: Any, default: _Default[int], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: SequenceField[int | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: SequenceField[Any], *args: Any, **kwargs: Any) -> None: ...

class FloatField(BaseField[_T]):
    @overload
    def __init__(
        self: FloatField[float], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: FloatField[float], *args: Any, default: _Default[float], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: FloatField[float | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: FloatField[Any], *args: Any, **kwargs: Any) -> None: ...

class DecimalField(BaseField[_T]):
    @overload
    def __init__(
        self: DecimalField[Decimal], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: DecimalField[Decimal],
        *args: Any,
        default: _Default[Decimal],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: DecimalField[Decimal | None],
        *args: Any,
        default: None = None,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(self: DecimalField[Any], *args: Any, **kwargs: Any) -> None: ...

class Decimal128Field(BaseField[_T]):
    @overload
    def __init__(
        self: Decimal128Field[Decimal],
        *args: Any,
        required: Literal[True],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: Decimal128Field[Decimal],
        *args: Any,
        default: _Default[Decimal],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: Decimal128Field[Decimal | None],
        *args: Any,
        default: None = None,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(self: Decimal128Field[Any], *args: Any, **kwargs: Any) -> None: ...

class BooleanField(BaseField[_T]):
    @overload
    def __init__(
        self: BooleanField[bool], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: BooleanField[bool], *args: Any, default: _Default[bool], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: BooleanField[bool | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: BooleanField[Any], *args: Any, **kwargs: Any) -> None: ...

class DateTimeField(BaseField[_T]):
    @overload
    def __init__(
        self: DateTimeField[datetime],
        *args: Any,
        required: Literal[True],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: DateTimeField[datetime],
        *args: Any,
        default: _Default[datetime],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: DateTimeField[datetime | None],
        *args: Any,
        default: None = None,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(self: DateTimeField[Any], *args: Any, **kwargs: Any) -> None: ...

class ComplexDateTimeField(BaseField[_T]):
    @overload
    def __init__(
        self: ComplexDateTimeField[datetime],
        *args: Any,
        required: Literal[True],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: ComplexDateTimeField[datetime],
        *args: Any,
        default: _Default[datetime],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: ComplexDateTimeField[datetime | None],
        *args: Any,
        default: None = None,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: ComplexDateTimeField[Any], *args: Any, **kwargs: Any
    ) -> None: ...

class DateField(BaseField[_T]):
    @overload
    def __init__(
        self: DateField[date], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: DateField[date], *args: Any, default: _Default[date], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: DateField[date | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: DateField[Any], *args: Any, **kwargs: Any) -> None: ...

class UUIDField(BaseField[_T]):
    @overload
    def __init__(
        self: UUIDField[UUID], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: UUIDField[UUID], *args: Any, default: _Default[UUID], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: UUIDField[UUID | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: UUIDField[Any], *args: Any, **kwargs: Any) -> None: ...

class ObjectIdField(BaseField[_T]):
    @overload
    def __init__(
        self: ObjectIdField[ObjectId],
        *args: Any,
        required: Literal[True],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: ObjectIdField[ObjectId],
        *args: Any,
        default: _Default[ObjectId],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: ObjectIdField[ObjectId | None],
        *args: Any,
        default: None = None,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(self: ObjectIdField[Any], *args: Any, **kwargs: Any) -> None: ...

class BinaryField(BaseField[_T]):
    @overload
    def __init__(
        self: BinaryField[bytes], *args: Any, required: Literal[True], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: BinaryField[bytes], *args: Any, default: _Default[bytes], **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: BinaryField[bytes | None], *args: Any, default: None = None, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: BinaryField[Any], *args: Any, **kwargs: Any) -> None: ...

class EnumField(BaseField[_T]):
    @overload
    def __init__(
        self: EnumField[_Enum],
        enum: type[_Enum],
        *args: Any,
        required: Literal[True],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: EnumField[_Enum],
        enum: type[_Enum],
        *args: Any,
        default: _Default[_Enum],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: EnumField[_Enum | None],
        enum: type[_Enum],
        *args: Any,
        default: None = None,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(self: EnumField[Any], *args: Any, **kwargs: Any) -> None: ...

class EmbeddedDocumentField(BaseField[_T]):
    """``EmbeddedDocumentField(Comment)``: a ``Comment`` (``| None`` unless
    required or defaulted); a class given by name reads as ``Any``."""

    document_type: Any
    @overload
    def __init__(
        self: EmbeddedDocumentField[_E],
        document_type: type[_E],
        *args: Any,
        required: Literal[True],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: EmbeddedDocumentField[_E],
        document_type: type[_E],
        *args: Any,
        default: _Default[_E],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: EmbeddedDocumentField[_E | None],
        document_type: type[_E],
        *args: Any,
        default: None = None,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: EmbeddedDocumentField[Any], document_type: str, *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: EmbeddedDocumentField[Any], *args: Any, **kwargs: Any
    ) -> None: ...

class GenericEmbeddedDocumentField(BaseField[Any]): ...

class DynamicField(BaseField[Any]):
    async def async_fetch(
        self, instance: BaseDocument, session: AsyncClientSession | None = None
    ) -> Any: ...

class GeoJsonBaseField(BaseField[Any]): ...
class GeoPointField(BaseField[Any]): ...
class PointField(GeoJsonBaseField): ...
class LineStringField(GeoJsonBaseField): ...
class PolygonField(GeoJsonBaseField): ...
class MultiPointField(GeoJsonBaseField): ...
class MultiLineStringField(GeoJsonBaseField): ...
class MultiPolygonField(GeoJsonBaseField): ...

# Containers: never None (an unset list reads as ``[]``, a dict as ``{}``, as does
# one set to None). Items read as the item field's value type without ``None``
# (``ListField(StringField())``: ``list[str]``): MongoEngine's validation refuses
# a None item, so a saved list holds none. A container is set from any
# ``Sequence``/``Mapping`` of those items: a ``list[str]``, a literal, a
# ``list[SubReview]`` for ``list[Review]`` (``list`` itself is invariant), or
# None. (A ``str`` is a ``Sequence[str]`` too; MongoEngine's validation refuses
# it.) ``__get__`` is declared again next to ``__set__``: pyright then sees the
# two differ and does not narrow ``post.tags`` to what was just assigned (a
# tuple, None), since the field reads a list whatever was set.

class ListField(BaseField[_T]):
    """``ListField(StringField())``: a ``list[str]``, set from a ``Sequence[str]``."""

    field: Any
    @overload
    def __init__(
        self: ListField[list[_X]],
        field: BaseField[_X | None],
        *args: Any,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: ListField[list[_X]], field: BaseField[_X], *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self: ListField[list[Any]], *args: Any, **kwargs: Any) -> None: ...
    @overload
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    @overload
    def __get__(self, instance: None, owner: Any) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: Any) -> _T: ...
    # (Narrower than BaseField's: a list field takes no other value than a list.)
    # A list of references is set from documents, ids or DBRefs, as one reference.
    @overload  # type: ignore[override]
    def __set__(
        self: ListField[list[_Doc]],
        instance: Any,
        value: Sequence[_Doc | DBRef | ObjectId] | None,
    ) -> None: ...
    @overload
    def __set__(  # pyright: ignore[reportIncompatibleMethodOverride]
        self: ListField[list[_X]], instance: Any, value: Sequence[_X] | None
    ) -> None: ...

class SortedListField(ListField[_T]):
    @overload
    def __init__(
        self: SortedListField[list[_X]],
        field: BaseField[_X | None],
        *args: Any,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: SortedListField[list[_X]],
        field: BaseField[_X],
        *args: Any,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: SortedListField[list[Any]], *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...

class EmbeddedDocumentList(list[_E]):
    """MongoEngine's EmbeddedDocumentList, what ``EmbeddedDocumentListField``
    reads as: a list of the embedded documents, with queries on them."""

    def filter(self, **kwargs: Any) -> EmbeddedDocumentList[_E]: ...
    def exclude(self, **kwargs: Any) -> EmbeddedDocumentList[_E]: ...
    def count(self) -> int: ...  # type: ignore[override]
    def get(self, **kwargs: Any) -> _E: ...
    def first(self) -> _E | None: ...
    def create(self, **values: Any) -> _E: ...
    def save(self, *args: Any, **kwargs: Any) -> None: ...
    def delete(self) -> int: ...
    def update(self, **update: Any) -> int: ...

class EmbeddedDocumentListField(ListField[_T]):
    """``EmbeddedDocumentListField(Comment)``: an ``EmbeddedDocumentList[Comment]``
    (a ``list[Comment]`` with ``filter()``, ``create()``...), set from a
    ``Sequence[Comment]``."""

    @overload
    def __init__(
        self: EmbeddedDocumentListField[EmbeddedDocumentList[_E]],
        document_type: type[_E],
        *args: Any,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: EmbeddedDocumentListField[EmbeddedDocumentList[Any]],
        *args: Any,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    @overload
    def __get__(self, instance: None, owner: Any) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: Any) -> _T: ...
    def __set__(  # type: ignore[override]
        self: EmbeddedDocumentListField[EmbeddedDocumentList[_E]],
        instance: Any,
        value: Sequence[_E] | None,
    ) -> None: ...

class DictField(BaseField[_T]):
    """``DictField(IntField())``: a ``dict[str, int]``, set from a
    ``Mapping[str, int]``; untyped ``DictField()``: ``dict[str, Any]``."""

    field: Any
    @overload
    def __init__(
        self: DictField[dict[str, _X]],
        field: BaseField[_X | None],
        *args: Any,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: DictField[dict[str, _X]], field: BaseField[_X], *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: DictField[dict[str, Any]], *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    @overload
    def __get__(self, instance: None, owner: Any) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: Any) -> _T: ...
    # (Narrower than BaseField's: a dict field takes no other value than a dict.)
    def __set__(  # type: ignore[override]
        self: DictField[dict[str, _X]],
        instance: Any,
        value: Mapping[str, _X] | None,
    ) -> None: ...

class MapField(DictField[_T]):
    @overload
    def __init__(
        self: MapField[dict[str, _X]],
        field: BaseField[_X | None],
        *args: Any,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: MapField[dict[str, _X]], field: BaseField[_X], *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...

# References: ``ReferenceField(Author)`` reads as ``Author`` (awaitable: on an
# async alias ``await book.author`` loads it); a missing reference reads as None,
# which the type leaves out so that ``await book.author`` is an ``Author``.

class ReferenceField(BaseField[_T]):
    document_type: Any
    @overload
    def __init__(
        self: ReferenceField[_D], document_type: type[_D], *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(
        self: ReferenceField[Any], document_type: str, *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    @overload
    def __get__(self, instance: None, owner: Any) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: Any) -> _T: ...
    # Set to a document, a DBRef, an ObjectId or a LazyReference, as MongoEngine's
    # validation allows; it reads as the document.
    def __set__(
        self,
        instance: Any,
        value: _T | DBRef | ObjectId | LazyReference[Any] | None,
    ) -> None: ...
    async def async_fetch(
        self, instance: BaseDocument, session: AsyncClientSession | None = None
    ) -> _T: ...

class CachedReferenceField(BaseField[_T]):
    document_type: Any
    @overload
    def __init__(
        self: CachedReferenceField[_D],
        document_type: type[_D],
        *args: Any,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: CachedReferenceField[Any], document_type: str, *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    async def async_fetch(
        self, instance: BaseDocument, session: AsyncClientSession | None = None
    ) -> _T: ...
    async def async_sync_all(self) -> None: ...

class GenericReferenceField(BaseField[Any]):
    async def async_fetch(
        self, instance: BaseDocument, session: AsyncClientSession | None = None
    ) -> Any: ...

class LazyReferenceField(BaseField[_T]):
    """``LazyReferenceField(Author)``: a ``LazyReference[Author]`` (``| None``
    unless required)."""

    document_type: Any
    @overload
    def __init__(
        self: LazyReferenceField[LazyReference[_D]],
        document_type: type[_D],
        *args: Any,
        required: Literal[True],
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: LazyReferenceField[LazyReference[_D] | None],
        document_type: type[_D],
        *args: Any,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: LazyReferenceField[Any], document_type: str, *args: Any, **kwargs: Any
    ) -> None: ...
    @overload
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    @overload
    def __get__(self, instance: None, owner: Any) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: Any) -> _T: ...
    # Set to a document, a LazyReference, a DBRef or the primary key (of any
    # type), as in MongoEngine; it reads as a LazyReference whatever was set
    # (``object``, not ``Any``: mypy would read an ``Any`` back, and pyright,
    # with ``__get__`` declared again here, does not narrow to what was set).
    def __set__(self, instance: Any, value: object) -> None: ...

class GenericLazyReferenceField(BaseField[Any]): ...

class FileField(BaseField[Any]):
    async def async_put(
        self, data: Any, instance: BaseDocument | None = None, **kwargs: Any
    ) -> AsyncGridFSProxy: ...
    async def async_get(
        self, instance: BaseDocument, *, session: AsyncClientSession | None = None
    ) -> AsyncGridFSProxy | None: ...

class ImageField(FileField): ...
