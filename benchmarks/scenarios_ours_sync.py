"""mongoengine-async on a ``connect()`` alias: a user who changed only the import.

The same calls as sync MongoEngine (both defined in ``scenarios_sync``), through
our Documents and QuerySets on the sync alias ``"bench-ours-sync"``; reads build
their documents with our generated loaders, new documents our write plan.
"""

from __future__ import annotations

import harness
import scenarios_sync

import mongoengine_async as ma

LIBRARY = "ours-sync"
ALIAS = "bench-ours-sync"
SCENARIOS, scenario = harness.registry()
NOT_APPLICABLE = {
    "gridfs_put": "sync GridFS is MongoEngine's (see the mongoengine row)",
    "gridfs_get": "sync GridFS is MongoEngine's (see the mongoengine row)",
    "gridfs_stream": "sync GridFS is MongoEngine's (see the mongoengine row)",
}
MODELS = scenarios_sync.define(scenario, ma, "Os", ALIAS)
