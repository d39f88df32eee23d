"""Sync MongoEngine (what users have today), on its own ``connect()`` alias.

The scenarios it shares with ``scenarios_ours_sync`` are in ``scenarios_sync``;
GridFS is its own here.
"""

from __future__ import annotations

import harness
import mongoengine as me
import scenarios_sync
from harness import Case, Context

LIBRARY = "mongoengine"
ALIAS = "bench-sync"
SCENARIOS, scenario = harness.registry()
MODELS = scenarios_sync.define(scenario, me, "Me", ALIAS)
MeFileOwner = MODELS.FileOwner
BUCKET, OWNERS = "me_fs", "me_file_owners"


@scenario("gridfs_put")
async def gridfs_put(ctx: Context) -> Case:
    data = harness.file_data(ctx.sizes.file_bytes)

    def run() -> None:
        owner = MeFileOwner(name="owner")
        owner.data.put(data, filename="data.bin")
        owner.save()

    return Case(
        run,
        "FileField put + save",
        before=lambda: harness.drop_files(ctx, BUCKET, OWNERS),
        check=lambda _: harness.gridfs_summary(ctx.db, BUCKET, OWNERS),
    )


async def _seed_file(ctx: Context) -> None:
    await harness.drop_files(ctx, BUCKET, OWNERS)
    owner = MeFileOwner(name="owner")
    owner.data.put(harness.file_data(ctx.sizes.file_bytes), filename="data.bin")
    owner.save()


@scenario("gridfs_get")
async def gridfs_get(ctx: Context) -> Case:
    await _seed_file(ctx)

    def run() -> bytes:
        return MeFileOwner.objects.get(name="owner").data.read()

    return Case(run, "FileField read()", check=harness.bytes_digest)


@scenario("gridfs_stream")
async def gridfs_stream(ctx: Context) -> Case:
    await _seed_file(ctx)

    def run() -> dict:
        grid_out = MeFileOwner.objects.get(name="owner").data.get()
        digest = harness.Digest()
        # (Iterating a GridOut yields lines, not chunks.)
        while chunk := grid_out.readchunk():
            digest.update(chunk)
        return digest.summary()

    return Case(run, "while FileField.get().readchunk()", memory=True)
