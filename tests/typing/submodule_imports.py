"""MongoEngine's submodule imports with the package name changed: checkers find
each name explicitly exported (never run)."""

from mongoengine_async.connection import DEFAULT_DATABASE_NAME, ConnectionFailure
from mongoengine_async.document import EmbeddedDocument, MapReduceDocument
from mongoengine_async.errors import DoesNotExist, ValidationError
from mongoengine_async.fields import GridFSProxy, ReferenceField, StringField
from mongoengine_async.queryset import CASCADE, Q, QuerySet, queryset_manager
from mongoengine_async.signals import post_save

__all__ = [
    "CASCADE",
    "DEFAULT_DATABASE_NAME",
    "ConnectionFailure",
    "DoesNotExist",
    "EmbeddedDocument",
    "GridFSProxy",
    "MapReduceDocument",
    "Q",
    "QuerySet",
    "ReferenceField",
    "StringField",
    "ValidationError",
    "post_save",
    "queryset_manager",
]
