"""Delete rules on async aliases next to MongoEngine's own ``delete()`` on a
sync alias: the same models, built once with ``mongoengine`` and once with
``mongoengine_async``, the same data, then the stored documents (raw, through
PyMongo), the counts, the errors and the signals compared. Where the async
delete deliberately differs (docs/delete_rules.md), the test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any
from uuid import uuid4

import mongoengine
import pymongo
import pytest
from bson import ObjectId
from mongoengine import signals
from pymongo import ReadPreference, monitoring
from pymongo.errors import OperationFailure

import mongoengine_async
import mongoengine_async.gridfs
from conftest import fresh_sync_default, receiving
from mongoengine_async import (
    CASCADE,
    DENY,
    DO_NOTHING,
    NULLIFY,
    PULL,
    InvalidQueryError,
    OperationError,
    async_run_in_transaction,
    get_async_connection,
    get_async_db,
)
from mongoengine_async.testing import CommandLog, fresh_database

SYNC = "drp_sync"  # MongoEngine's alias
RULES = [CASCADE, NULLIFY, PULL, DENY]
RULE_IDS = ["cascade", "nullify", "pull", "deny"]


@pytest.fixture
def sync_alias(mongodb_uri: str) -> Iterator[Any]:
    """MongoEngine's ``connect()`` on a fresh database; yields the database."""
    with fresh_sync_default(mongodb_uri, alias=SYNC) as database:
        yield database


def build(module: Any, prefix: str, alias: str, fields: dict[str, Any]) -> type:
    """A document class of ``module`` (mongoengine or mongoengine_async)."""
    return type(
        f"{prefix}{uuid4().hex[:6]}",
        (module.Document,),
        {
            "__module__": __name__,
            "meta": {"db_alias": alias},
            **fields,
        },
    )


def target_and_referrer(
    module: Any, prefix: str, alias: str, rule: int
) -> tuple[type, type]:
    """A class, and one whose ``ref`` refers to it with delete rule ``rule``."""
    target = build(module, f"{prefix}Target", alias, {})
    ref = module.ReferenceField(target, reverse_delete_rule=rule)
    return target, build(module, f"{prefix}Referrer", alias, {"ref": ref})


def stored(database: Any, cls: type) -> list[dict]:
    """``cls``'s raw documents (sync or async database), without ``_id``."""
    return [
        {key: value for key, value in raw.items() if key != "_id"}
        for raw in database[cls._get_collection_name()].find().sort("_id", 1)
    ]


async def async_stored(cls: type) -> list[dict]:
    collection = get_async_db()[cls._get_collection_name()]
    return [
        {key: value for key, value in raw.items() if key != "_id"}
        async for raw in collection.find().sort("_id", 1)
    ]


def outcome(error: BaseException) -> tuple[type, str]:
    """An error's type and message, without the server's reply (whose cluster
    time differs)."""
    return type(error), str(error).split(", full error: ")[0]


# -- CachedReferenceField ---------------------------------------------------------


def cached_models(module: Any, alias: str, rule: int) -> tuple[type, type]:
    target = build(module, "DrpCachedTarget", alias, {"n": module.IntField()})
    item = module.CachedReferenceField(target, fields=["n"], reverse_delete_rule=rule)
    field = module.ListField(item) if rule == PULL else item
    referrer = build(
        module,
        "DrpCached",
        alias,
        {
            "label": module.StringField(),
            "ref": field,
        },
    )
    return target, referrer


@pytest.mark.parametrize("how", ["document", "queryset"])
@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
async def test_rules_on_a_cached_reference_apply_on_its_id(
    async_alias: str, sync_alias: Any, rule: int, how: str
) -> None:
    """MongoEngine's rule query compares the stored ``{_id, n}`` with whole
    sub-documents and matches nothing: its delete goes through and the rule does
    nothing. The async delete applies the rule on ``ref._id`` (a documented
    difference); it used to fail with "Only accept a document object"."""
    me_target, me_referrer = cached_models(mongoengine, SYNC, rule)
    target, referrer = cached_models(mongoengine_async, "default", rule)

    t1, t2 = me_target(n=1).save(), me_target(n=2).save()
    me_referrer(label="r1", ref=[t1, t2] if rule == PULL else t1).save()
    t1.delete() if how == "document" else me_target.objects(n=1).delete()
    assert me_target.objects.count() == 1  # MongoEngine: the rule did nothing
    assert len(stored(sync_alias, me_referrer)) == 1
    assert stored(sync_alias, me_referrer)[0]["ref"] != []

    a1 = await target(n=1).async_save()
    a2 = await target(n=2).async_save()
    await referrer(label="r1", ref=[a1, a2] if rule == PULL else a1).async_save()
    await referrer(label="r2", ref=[a2] if rule == PULL else a2).async_save()

    async def delete() -> Any:
        if how == "document":
            return await a1.async_delete()
        return await target.objects(n=1).async_delete()

    if rule == DENY:
        with pytest.raises(OperationError) as error:
            await delete()
        assert str(error.value) == (
            f"Could not delete document ({referrer.__name__}.ref refers to it)"
        )
        assert await target.objects.async_count() == 2
        return
    assert await delete() == (None if how == "document" else 1)
    assert await target.objects.async_scalar("n") == [2]
    after = await async_stored(referrer)
    if rule == CASCADE:
        assert [raw["label"] for raw in after] == ["r2"]
    elif rule == NULLIFY:
        assert after == [
            {"label": "r1"},
            {"label": "r2", "ref": {"_id": a2.pk, "n": 2}},
        ]
    else:
        kept = [{"_id": a2.pk, "n": 2}]
        assert after == [{"label": "r1", "ref": kept}, {"label": "r2", "ref": kept}]


# -- the referring class's manager --------------------------------------------------


def managed_models(module: Any, alias: str, rule: int) -> tuple[type, type]:
    """Referrers whose ``objects`` only sees the active ones (a soft delete)."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.filter(active=True)

    target = build(module, "DrpManagedTarget", alias, {"name": module.StringField()})
    item = module.ReferenceField(target, reverse_delete_rule=rule)
    referrer = build(
        module,
        "DrpManaged",
        alias,
        {
            "label": module.StringField(),
            "active": module.BooleanField(),
            "ref": module.ListField(item) if rule == PULL else item,
            "objects": module.queryset_manager(objects),
        },
    )
    return target, referrer


@pytest.mark.parametrize("how", ["document", "queryset"])
@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
async def test_rules_touch_only_what_the_referrers_manager_returns(
    async_alias: str, sync_alias: Any, rule: int, how: str
) -> None:
    """MongoEngine applies each rule through ``referrer.objects(...)``: a custom
    manager limits what CASCADE, NULLIFY, PULL and DENY touch; so does the
    async delete (it touched every referrer)."""

    async def scenario(module: Any, alias: str) -> tuple[Any, list[dict], int]:
        target, referrer = managed_models(module, alias, rule)
        is_async = module is mongoengine_async

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        doomed = await save(target(name="doomed"))
        other = await save(target(name="other"))
        both = [doomed, other]
        for label, active in [("inactive", False), ("active", True)]:
            if rule == DENY and active:
                continue  # only an inactive referrer: MongoEngine's delete goes on
            value = both if rule == PULL else doomed
            await save(referrer(label=label, active=active, ref=value))
        queryset = target.objects(name="doomed")
        try:
            if how == "document":
                result = await doomed.async_delete() if is_async else doomed.delete()
            else:
                result = (
                    await queryset.async_delete() if is_async else queryset.delete()
                )
        except OperationError as error:
            result = outcome(error)
        if is_async:
            left = await target.objects.async_count()
            return result, await async_stored(referrer), left
        return result, stored(sync_alias, referrer), target.objects.count()

    theirs = await scenario(mongoengine, SYNC)
    ours = await scenario(mongoengine_async, "default")

    def plain(state: tuple[Any, list[dict], int]) -> tuple:
        """Reference ids differ between the two databases: their number stays."""
        result, documents, left = state
        return (
            result,
            [
                {
                    key: (len(value) if isinstance(value, list) else "a reference")
                    if key == "ref"
                    else value
                    for key, value in raw.items()
                }
                for raw in documents
            ],
            left,
        )

    assert plain(ours) == plain(theirs)
    assert plain(ours)[1][0]["label"] == "inactive"  # kept as it was


# -- PULL on a plain reference ------------------------------------------------------


@pytest.mark.parametrize("how", ["document", "queryset"])
async def test_pull_on_a_plain_reference_fails_as_mongoengine_s_update(
    async_alias: str, sync_alias: Any, how: str
) -> None:
    def models(module: Any, alias: str) -> tuple[type, type]:
        return target_and_referrer(module, "DrpPull", alias, PULL)

    me_target, me_referrer = models(mongoengine, SYNC)
    target, referrer = models(mongoengine_async, "default")
    me_referrer(ref=me_target().save()).save()
    await referrer(ref=await target().async_save()).async_save()

    with pytest.raises(Exception) as theirs:
        if how == "document":
            me_target.objects.get().delete()
        else:
            me_target.objects.delete()
    with pytest.raises(Exception) as ours:
        if how == "document":
            await (await target.objects.async_get()).async_delete()
        else:
            await target.objects.async_delete()
    assert outcome(ours.value) == outcome(theirs.value)
    assert outcome(ours.value) == (
        OperationError,
        "Update failed (Cannot apply $pull to a non-array value",
    )
    assert await target.objects.async_count() == 1  # nothing changed


# -- a rule registered on a reference inside an embedded document ------------------


def embedded_models(
    module: Any, alias: str, path: str, rule: int, files: bool = False
) -> tuple[type, ...]:
    """A referrer whose embedded document holds the references, and a rule
    registered by hand on ``path`` (MongoEngine registers none there); the
    target with a file field when ``files``."""
    fields = {"label": module.StringField()}
    if files:
        bucket = f"drpemb{uuid4().hex[:6]}"
        fields["file"] = module.FileField(db_alias=alias, collection_name=bucket)
    target = build(module, "DrpEmbTarget", alias, fields)
    embedded = type(
        f"DrpEmbedded{uuid4().hex[:6]}",
        (module.EmbeddedDocument,),
        {
            "__module__": __name__,
            "ref": module.ReferenceField(target, db_field="r"),
            "refs": module.ListField(module.ReferenceField(target)),
        },
    )
    fields = {
        "label": module.StringField(),
        "emb": module.EmbeddedDocumentField(embedded, db_field="e"),
    }
    referrer = build(module, "DrpEmbReferrer", alias, fields)
    target.register_delete_rule(referrer, path, rule)
    return target, embedded, referrer


async def embedded_scenario(
    module: Any, database: Any, path: str, rule: int, how: str
) -> tuple[Any, list, list]:
    """Targets t1 and t2, referrers r1 (``ref`` to t1) and r2 (to t2), both
    with ``refs`` [t1, t2]; t1 deleted. Gives the delete's result or error,
    the referrers (references as their target's label) and the targets left.
    ``database``: the sync alias's, for MongoEngine's run."""
    is_async = module is mongoengine_async
    alias = "default" if is_async else SYNC
    target, embedded, referrer = embedded_models(module, alias, path, rule)

    async def save(document: Any) -> Any:
        return await document.async_save() if is_async else document.save()

    async def raws(cls: type) -> list[dict]:
        return await async_stored(cls) if is_async else stored(database, cls)

    t1, t2 = await save(target(label="t1")), await save(target(label="t2"))
    for label, to in [("r1", t1), ("r2", t2)]:
        await save(referrer(label=label, emb=embedded(ref=to, refs=[t1, t2])))
    try:
        if how == "document":
            result = await t1.async_delete() if is_async else t1.delete()
        else:
            queryset = target.objects(label="t1")
            result = await queryset.async_delete() if is_async else queryset.delete()
    except Exception as error:
        kind, message = outcome(error)
        result = kind, message.replace(referrer.__name__, "Referrer")
    labels = {t1.pk: "t1", t2.pk: "t2"}
    referrers = [
        {
            "label": raw["label"],
            "ref": labels.get(raw["e"].get("r")),
            "refs": [labels[each] for each in raw["e"]["refs"]],
        }
        for raw in await raws(referrer)
    ]
    return result, referrers, [raw["label"] for raw in await raws(target)]


@pytest.mark.parametrize("how", ["document", "queryset"])
@pytest.mark.parametrize(
    "rule", [CASCADE, NULLIFY, DENY], ids=["cascade", "nullify", "deny"]
)
async def test_a_rule_on_an_embedded_reference_applies_as_mongoengine_s(
    async_alias: str, sync_alias: Any, rule: int, how: str
) -> None:
    """MongoEngine's rule queries take a path (``emb__ref``), and so a rule
    registered by hand on a reference inside an embedded document works there;
    the async delete raised KeyError and deleted nothing."""
    theirs = await embedded_scenario(mongoengine, sync_alias, "emb__ref", rule, how)
    ours = await embedded_scenario(mongoengine_async, None, "emb__ref", rule, how)
    assert ours == theirs
    expected_referrers = {
        CASCADE: [{"label": "r2", "ref": "t2", "refs": ["t1", "t2"]}],
        NULLIFY: [
            {"label": "r1", "ref": None, "refs": ["t1", "t2"]},
            {"label": "r2", "ref": "t2", "refs": ["t1", "t2"]},
        ],
    }
    if rule == DENY:
        message = "Could not delete document (Referrer.emb__ref refers to it)"
        assert ours[0] == (OperationError, message)
        assert ours[2] == ["t1", "t2"]
    else:
        assert ours[1:] == (expected_referrers[rule], ["t2"])


@pytest.mark.parametrize("how", ["document", "queryset"])
@pytest.mark.parametrize(
    ("path", "rule", "message"),
    [
        ("emb__refs", PULL, "pullAll operations only support a single field depth"),
        ("emb.ref", NULLIFY, 'Cannot resolve field "emb.ref"'),
    ],
    ids=["pull-in-embedded", "not-a-path"],
)
async def test_a_rule_mongoengine_cannot_apply_raises_its_error_and_changes_nothing(
    async_alias: str, sync_alias: Any, path: str, rule: int, message: str, how: str
) -> None:
    """MongoEngine refuses ``pull_all`` on a path and a field name that is no
    path, with InvalidQueryError; the async delete pulled through the path
    (deleting what MongoEngine keeps) or raised KeyError."""
    theirs = await embedded_scenario(mongoengine, sync_alias, path, rule, how)
    ours = await embedded_scenario(mongoengine_async, None, path, rule, how)
    assert ours == theirs
    assert ours[0] == (InvalidQueryError, message)
    assert ours[1:] == (
        [
            {"label": "r1", "ref": "t1", "refs": ["t1", "t2"]},
            {"label": "r2", "ref": "t2", "refs": ["t1", "t2"]},
        ],
        ["t1", "t2"],
    )


async def nothing_matched_scenario(
    module: Any, path: str, rule: int, how: str, files: bool
) -> Any:
    """The models of :func:`embedded_models`; a delete matching nothing (a
    queryset, or a document deleted already): its result or error."""
    is_async = module is mongoengine_async
    alias = "default" if is_async else SYNC
    target, _, _ = embedded_models(module, alias, path, rule, files)
    if is_async:
        gone = await target(label="gone").async_save()
        await get_async_db()[target._get_collection_name()].delete_one({})
    else:
        gone = target(label="gone").save()
        target._get_collection().delete_one({})
    try:
        if how == "document":
            return await gone.async_delete() if is_async else gone.delete()
        queryset = target.objects(label="gone")
        return await queryset.async_delete() if is_async else queryset.delete()
    except Exception as error:
        return outcome(error)


@pytest.mark.parametrize("files", [False, True], ids=["no-files", "files"])
@pytest.mark.parametrize("how", ["document", "queryset"])
@pytest.mark.parametrize(
    ("path", "rule", "message"),
    [
        ("emb__refs", PULL, "pullAll operations only support a single field depth"),
        ("emb.ref", NULLIFY, 'Cannot resolve field "emb.ref"'),
    ],
    ids=["pull-in-embedded", "not-a-path"],
)
async def test_a_rule_mongoengine_cannot_apply_raises_though_nothing_matches(
    async_alias: str,
    sync_alias: Any,
    path: str,
    rule: int,
    message: str,
    how: str,
    files: bool,
) -> None:
    """MongoEngine's delete builds each rule's query and update whatever it
    matches, and refuses those rules of a delete matching nothing too; the
    async one returned as if nothing were wrong (a queryset listing no file,
    a document gone already, and pull_all on a path for any delete matching
    nothing, since a delete finding nothing sends no rule's query)."""
    theirs = await nothing_matched_scenario(mongoengine, path, rule, how, files)
    ours = await nothing_matched_scenario(mongoengine_async, path, rule, how, files)
    assert ours == theirs == (InvalidQueryError, message)


async def denied_scenario(module: Any, path: str, rule: int, how: str) -> Any:
    """The models of :func:`embedded_models`, and a denier whose DENY rule on
    the target (registered after the other) finds it referred to; the
    delete's error, and the labels of the targets and referrers left."""
    is_async = module is mongoengine_async
    alias = "default" if is_async else SYNC
    target, embedded, referrer = embedded_models(module, alias, path, rule)
    deny = module.ReferenceField(target, reverse_delete_rule=DENY)
    denier = build(module, "DrpDenier", alias, {"ref": deny})

    async def save(document: Any) -> Any:
        return await document.async_save() if is_async else document.save()

    doomed = await save(target(label="doomed"))
    await save(referrer(label="r", emb=embedded(ref=doomed, refs=[doomed])))
    await save(denier(ref=doomed))
    result: Any = "deleted"
    try:
        if how == "document":
            await doomed.async_delete() if is_async else doomed.delete()
        else:
            queryset = target.objects(label="doomed")
            await queryset.async_delete() if is_async else queryset.delete()
    except Exception as error:
        kind, message = outcome(error)
        result = kind, message.replace(denier.__name__, "Denier")
    labels = [
        raw["label"]
        for cls in (target, referrer)
        for raw in (
            await get_async_db()[cls._get_collection_name()].find().to_list()
            if is_async
            else cls._get_collection().find()
        )
    ]
    return result, labels


@pytest.mark.parametrize("how", ["document", "queryset"])
@pytest.mark.parametrize(
    ("path", "rule"),
    [("emb__refs", PULL), ("emb.ref", NULLIFY), ("emb.ref", CASCADE)],
    ids=["pull-in-embedded", "nullify-not-a-path", "cascade-not-a-path"],
)
async def test_a_deny_rule_that_finds_a_referrer_raises_before_a_rule_refused(
    async_alias: str, sync_alias: Any, path: str, rule: int, how: str
) -> None:
    """MongoEngine checks the DENY rules before building the other rules'
    queries: a referrer found, its OperationError is raised, not the
    InvalidQueryError of a rule it cannot apply; the async delete raised the
    latter (for a CASCADE rule since rules were applied, for the others
    since they were checked before anything)."""
    theirs = await denied_scenario(mongoengine, path, rule, how)
    ours = await denied_scenario(mongoengine_async, path, rule, how)
    message = "Could not delete document (Denier.ref refers to it)"
    assert ours == theirs == ((OperationError, message), ["doomed", "r"])


@pytest.mark.parametrize(
    ("path", "rule", "message"),
    [
        ("emb__refs", PULL, "pullAll operations only support a single field depth"),
        ("emb.ref", NULLIFY, 'Cannot resolve field "emb.ref"'),
    ],
    ids=["pull-in-embedded", "not-a-path"],
)
async def test_a_rule_mongoengine_cannot_apply_raises_for_a_none_queryset(
    async_alias: str, sync_alias: Any, path: str, rule: int, message: str
) -> None:
    """``objects.none().delete()`` refuses such a rule in MongoEngine too
    (it builds every rule's query); the async one returned 0."""
    target, _, _ = embedded_models(mongoengine, SYNC, path, rule)
    with pytest.raises(InvalidQueryError) as theirs:
        target.objects.none().delete()
    target, _, _ = embedded_models(mongoengine_async, "default", path, rule)
    with pytest.raises(InvalidQueryError) as ours:
        await target.objects.none().async_delete()
    assert str(ours.value) == str(theirs.value) == message


async def test_a_deny_rule_refused_is_named_before_an_earlier_rule_refused(
    async_alias: str, sync_alias: Any
) -> None:
    """MongoEngine builds its DENY rules' queries first: of a NULLIFY rule and
    a DENY rule registered after it, neither a path, a delete matching
    nothing names the DENY rule's field."""
    errors = []
    for module, alias in [(mongoengine, SYNC), (mongoengine_async, "default")]:
        target, _, referrer = embedded_models(module, alias, "emb.ref", NULLIFY)
        target.register_delete_rule(referrer, "emb.nope", DENY)
        with pytest.raises(InvalidQueryError) as error:
            queryset = target.objects(label="none")
            if module is mongoengine_async:
                await queryset.async_delete()
            else:
                queryset.delete()
        errors.append(str(error.value))
    assert errors == ['Cannot resolve field "emb.nope"'] * 2


# -- rules of a subclass, for the documents a cascade reaches through its parent ----


def subclass_rule_models(module: Any, alias: str, rule: int) -> tuple[type, ...]:
    """Deleting an author cascades to its posts (a parent class); a video (a
    subclass) has a rule of its own, from its comments."""
    author = build(module, "DrpSubAuthor", alias, {"name": module.StringField()})
    post = type(
        f"DrpSubPost{uuid4().hex[:6]}",
        (module.Document,),
        {
            "__module__": __name__,
            "meta": {"db_alias": alias, "allow_inheritance": True},
            "author": module.ReferenceField(author, reverse_delete_rule=CASCADE),
        },
    )
    video = type(post.__name__ + "Video", (post,), {"__module__": __name__})
    comment = module.ReferenceField(video, reverse_delete_rule=rule)
    fields = {"text": module.StringField(), "video": comment}
    return author, post, video, build(module, "DrpSubComment", alias, fields)


@pytest.mark.parametrize("receivers", [True, False], ids=["receivers", "none"])
@pytest.mark.parametrize(
    "rule", [CASCADE, NULLIFY, DENY], ids=["cascade", "nullify", "deny"]
)
async def test_a_subclass_s_rules_apply_to_its_cascaded_documents_as_in_mongoengine(
    async_alias: str, sync_alias: Any, rule: int, receivers: bool
) -> None:
    """With delete receivers on the parent class, MongoEngine deletes the
    cascaded documents one by one, each with its own class's rules; the async
    delete applied the parent class's alone (a DENY of the subclass did not
    refuse, its CASCADE and NULLIFY were not applied). Without receivers both
    apply the parent class's rules only."""

    def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        pass

    async def scenario(module: Any) -> tuple[Any, list, int]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        author, post, video, comment = subclass_rule_models(module, alias, rule)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        ann = await save(author(name="Ann"))
        clip = await save(video(author=ann))
        await save(comment(text="nice", video=clip))
        if receivers:
            signals.pre_delete.connect(receiver, sender=post)
        try:
            result = await ann.async_delete() if is_async else ann.delete()
        except OperationError as error:
            result = outcome(error)[1].replace(comment.__name__, "Comment")
        finally:
            signals.pre_delete.disconnect(receiver, sender=post)
        comments = (
            await async_stored(comment) if is_async else stored(sync_alias, comment)
        )
        left = [
            {"text": raw["text"], "video": raw.get("video") == clip.pk}
            for raw in comments
        ]
        count = await post.objects.async_count() if is_async else post.objects.count()
        return result, left, count

    theirs = await scenario(mongoengine)
    ours = await scenario(mongoengine_async)
    assert ours == theirs
    if not receivers:
        assert ours == (None, [{"text": "nice", "video": True}], 0)
    elif rule == DENY:
        refused = "Could not delete document (Comment.video refers to it)"
        assert ours == (refused, [{"text": "nice", "video": True}], 1)
    elif rule == NULLIFY:
        assert ours == (None, [{"text": "nice", "video": False}], 0)
    else:
        assert ours == (None, [], 0)


async def test_a_subclass_s_receivers_alone_get_no_signal_from_a_cascade(
    async_alias: str, sync_alias: Any
) -> None:
    """MongoEngine deletes the documents a CASCADE reaches through a class
    without delete receivers in one batch: no signal is sent, whatever receivers
    their subclass has (nor are its rules applied). The async delete sent the
    subclass's pre_delete and post_delete."""
    seen: list[str] = []

    def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(sender.__name__)

    async def scenario(module: Any) -> tuple[int, list[bool], list[str]]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        author, post, video, comment = subclass_rule_models(module, alias, NULLIFY)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        ann = await save(author(name="Ann"))
        clip = await save(video(author=ann))
        await save(comment(text="nice", video=clip))
        seen.clear()
        signals.pre_delete.connect(receiver, sender=video)
        signals.post_delete.connect(receiver, sender=video)
        try:
            await ann.async_delete() if is_async else ann.delete()
        finally:
            signals.pre_delete.disconnect(receiver, sender=video)
            signals.post_delete.disconnect(receiver, sender=video)
        comments = (
            await async_stored(comment) if is_async else stored(sync_alias, comment)
        )
        count = await post.objects.async_count() if is_async else post.objects.count()
        return count, ["video" in raw for raw in comments], list(seen)

    theirs = await scenario(mongoengine)
    ours = await scenario(mongoengine_async)
    assert ours == theirs == (0, [True], [])


async def test_a_subclass_a_cascade_plans_under_is_prepared_before_its_transaction(
    async_alias: str, command_log: CommandLog
) -> None:
    """A rule registered by hand on a parent class before its subclass exists
    names no subclass; with delete receivers on the parent class, the cascade
    plans the subclass's documents under it. Its collection was prepared (its
    first use creates its indexes) inside the delete's transaction, which the
    server then aborted (SnapshotUnavailable) and the delete ran again."""

    def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        pass

    author = build(mongoengine_async, "DrpPrepAuthor", "default", {})
    post = type(
        f"DrpPrepPost{uuid4().hex[:6]}",
        (mongoengine_async.Document,),
        {
            "__module__": __name__,
            "meta": {"allow_inheritance": True},
            "author": mongoengine_async.ReferenceField(author),
        },
    )
    author.register_delete_rule(post, "author", CASCADE)
    video = type(
        post.__name__ + "Video",
        (post,),
        {
            "__module__": __name__,
            "meta": {"indexes": ["length"]},
            "length": mongoengine_async.IntField(),
        },
    )
    ann = await author().async_save()
    await post(author=ann).async_save()
    stored_by_another_process = {"_cls": video._class_name, "author": ann.pk}
    await get_async_db()[post._get_collection_name()].insert_one(
        stored_by_another_process
    )
    signals.pre_delete.connect(receiver, sender=post)
    command_log.events.clear()
    try:
        await ann.async_delete()
    finally:
        signals.pre_delete.disconnect(receiver, sender=post)
    names = command_log.names
    assert names.count("createIndexes") == 1
    assert names.index("createIndexes") < names.index("find")
    assert names.count("commitTransaction") == 1
    assert "abortTransaction" not in names
    assert await post.objects.async_count() == 0


# -- a cascade cycle back to the root through its parent class -----------------------


async def test_a_cycle_back_to_the_root_through_its_parent_class_counts_it(
    async_alias: str, sync_alias: Any
) -> None:
    def models(module: Any, alias: str) -> tuple[type, type]:
        animal = type(
            f"DrpAnimal{uuid4().hex[:6]}",
            (module.Document,),
            {
                "__module__": __name__,
                "meta": {"db_alias": alias, "allow_inheritance": True},
                "name": module.StringField(),
                "parent": module.ReferenceField("self", reverse_delete_rule=CASCADE),
            },
        )
        dog = type(animal.__name__ + "Dog", (animal,), {"__module__": __name__})
        return animal, dog

    me_animal, me_dog = models(mongoengine, SYNC)
    dog = me_dog(name="d").save()
    dog.parent = me_animal(name="x", parent=dog).save()
    dog.save()
    theirs = (me_dog.objects(name="d").delete(), me_animal.objects.count())

    animal, dog_cls = models(mongoengine_async, "default")
    dog = await dog_cls(name="d").async_save()
    dog.parent = await animal(name="x", parent=dog).async_save()
    await dog.async_save()
    ours = (
        await dog_cls.objects(name="d").async_delete(),
        await animal.objects.async_count(),
    )
    assert ours == theirs == (1, 0)


# -- signals of cascaded documents ---------------------------------------------------


async def test_cascaded_signals_come_per_level_not_nested(
    async_alias: str, sync_alias: Any
) -> None:
    """A documented difference (docs/delete_rules.md, "Signals of cascaded
    documents"): MongoEngine walks the cascade document by document, nested; the
    async delete sends every pre_delete once the plan is checked, writes, then
    every post_delete, level by level."""
    log: list[str] = []

    def receiver(kind: str) -> Any:
        def receive(sender: type, document: Any, **kwargs: Any) -> None:
            log.append(f"{kind}({document.name})")

        return receive

    pre, post = receiver("pre"), receiver("post")

    def models(module: Any, alias: str) -> tuple[type, type, type]:
        a = build(module, "DrpSigA", alias, {"name": module.StringField()})
        b = build(
            module,
            "DrpSigB",
            alias,
            {
                "name": module.StringField(),
                "a": module.ReferenceField(a, reverse_delete_rule=CASCADE),
            },
        )
        c = build(
            module,
            "DrpSigC",
            alias,
            {
                "name": module.StringField(),
                "b": module.ReferenceField(b, reverse_delete_rule=CASCADE),
            },
        )
        for cls in (a, b, c):
            signals.pre_delete.connect(pre, sender=cls)
            signals.post_delete.connect(post, sender=cls)
        return a, b, c

    me_a, me_b, me_c = models(mongoengine, SYNC)
    a = me_a(name="A").save()
    b1 = me_b(name="B1", a=a).save()
    me_b(name="B2", a=a).save()
    me_c(name="C1", b=b1).save()
    a.delete()
    assert log == [
        "pre(A)",
        "pre(B1)",
        "pre(C1)",
        "post(C1)",
        "post(B1)",
        "pre(B2)",
        "post(B2)",
        "post(A)",
    ]

    a_cls, b_cls, c_cls = models(mongoengine_async, "default")
    a = await a_cls(name="A").async_save()
    b1 = await b_cls(name="B1", a=a).async_save()
    await b_cls(name="B2", a=a).async_save()
    await c_cls(name="C1", b=b1).async_save()
    log.clear()
    await a.async_delete()
    assert log == [
        "pre(A)",
        "pre(B1)",
        "pre(B2)",
        "pre(C1)",
        "post(B1)",
        "post(B2)",
        "post(C1)",
        "post(A)",
    ]

    # With transaction=False, a post_delete receiver raising finds the whole
    # cascade written (MongoEngine's walk would stop after B1).
    def boom(sender: type, document: Any, **kwargs: Any) -> None:
        if document.name == "B1":
            raise RuntimeError("boom")

    signals.post_delete.connect(boom, sender=b_cls)
    try:
        a = await a_cls(name="A").async_save()
        await b_cls(name="B1", a=a).async_save()
        await b_cls(name="B2", a=a).async_save()
        with pytest.raises(RuntimeError):
            await a.async_delete(transaction=False)
        assert await a_cls.objects.async_count() == 0
        assert await b_cls.objects.async_count() == 0
        a = await a_cls(name="A").async_save()
        await b_cls(name="B1", a=a).async_save()
        with pytest.raises(RuntimeError):
            await a.async_delete()  # in a transaction: nothing changed
        assert await a_cls.objects.async_count() == 1
        assert await b_cls.objects.async_count() == 1
    finally:
        signals.post_delete.disconnect(boom, sender=b_cls)


# -- an explicit session inside a bound transaction -------------------------------


def session_models() -> tuple[type, type]:
    owner = build(mongoengine_async, "DrpOwner", "default", {})
    pet = build(
        mongoengine_async,
        "DrpPet",
        "default",
        {
            "owner": mongoengine_async.ReferenceField(
                owner, reverse_delete_rule=CASCADE
            ),
        },
    )
    return owner, pet


@pytest.mark.parametrize("how", ["document", "queryset"])
async def test_an_explicit_session_runs_the_cascade_in_its_own_transaction(
    async_alias: str, command_log: CommandLog, how: str
) -> None:
    """Inside ``async_run_in_transaction`` an explicit session (in no
    transaction) wins: the cascade runs in a transaction started on it, which
    commits on its own; it raised NestedTransactionError."""
    owner_cls, pet_cls = session_models()
    owner = await owner_cls().async_save()
    await pet_cls(owner=owner).async_save()
    await owner_cls().async_save()  # the outer transaction's write
    with pytest.raises(RuntimeError):
        async with async_run_in_transaction() as outer:
            await owner_cls().async_save()
            async with get_async_connection().start_session() as session:
                command_log.clear()
                if how == "document":
                    await owner.async_delete(session=session)
                else:
                    queryset = owner_cls.objects(pk=owner.pk)
                    assert await queryset.async_delete(session=session) == 1
                lsids = {event.command["lsid"]["id"] for event in command_log.events}
                assert lsids == {session.session_id["id"]}
                assert command_log.names[-1] == "commitTransaction"
                assert outer.in_transaction
            raise RuntimeError("abort the outer transaction")
    assert await pet_cls.objects.async_count() == 0  # the cascade committed
    assert await owner_cls.objects.async_count() == 1  # the outer one aborted


async def test_an_explicit_session_without_a_bound_transaction_gets_one(
    async_alias: str, command_log: CommandLog
) -> None:
    owner_cls, pet_cls = session_models()
    owner = await owner_cls().async_save()
    await pet_cls(owner=owner).async_save()
    async with get_async_connection().start_session() as session:
        await owner_cls.objects.async_count(session=session)  # its lsid is taken
        command_log.clear()
        await owner.async_delete(session=session)
        assert {event.command["lsid"]["id"] for event in command_log.events} == {
            session.session_id["id"]
        }
        assert all("txnNumber" in event.command for event in command_log.events)
        assert not session.in_transaction
    assert await pet_cls.objects.async_count() == 0


# -- files of cascaded documents ----------------------------------------------------


@pytest.mark.parametrize("receiver", [False, True])
async def test_files_of_cascaded_documents_are_deleted(
    async_alias: str, sync_alias: Any, receiver: bool
) -> None:
    """MongoEngine deletes them when the cascaded class has a delete receiver
    (each document through ``Document.delete()``); the async delete always does,
    once the documents are gone."""

    def received(sender: type, document: Any, **kwargs: Any) -> None:
        pass

    def models(module: Any, alias: str) -> tuple[type, type, type]:
        parent = build(module, "DrpFileParent", alias, {})
        child = build(
            module,
            "DrpFileChild",
            alias,
            {
                "parent": module.ReferenceField(parent, reverse_delete_rule=CASCADE),
                "file": module.FileField(db_alias=alias),
                "files": module.ListField(module.FileField(db_alias=alias)),
            },
        )
        grandchild = build(
            module,
            "DrpFileGrandchild",
            alias,
            {
                "child": module.ReferenceField(child, reverse_delete_rule=CASCADE),
                "file": module.FileField(db_alias=alias),
            },
        )
        if receiver:
            signals.pre_delete.connect(received, sender=child)
            signals.pre_delete.connect(received, sender=grandchild)
        return parent, child, grandchild

    me_parent, me_child, me_grandchild = models(mongoengine, SYNC)
    parent = me_parent().save()
    child = me_child(parent=parent)
    child.file.put(b"child", filename="child")
    child.save()
    grandchild = me_grandchild(child=child)
    grandchild.file.put(b"grandchild", filename="grandchild")
    grandchild.save()
    parent.delete()
    if receiver:  # MongoEngine: only through Document.delete(), the plain field
        assert sync_alias.fs.files.count_documents({}) == 0

    parent_cls, child_cls, grandchild_cls = models(mongoengine_async, "default")
    kept = await parent_cls().async_save()
    parent = await parent_cls().async_save()
    for owner, name in [(parent, "gone"), (kept, "kept")]:
        child = child_cls(parent=owner)
        await child.file.async_put(name.encode(), filename=name)
        child.files = [
            await child_cls.files.field.async_put(
                f"{name}{n}".encode(), filename=f"{name}{n}"
            )
            for n in range(2)
        ]
        await child.async_save()
        grandchild = grandchild_cls(child=child)
        await grandchild.file.async_put(name.encode(), filename=f"{name}-grandchild")
        await grandchild.async_save()
    files = get_async_db().fs.files
    assert await files.count_documents({}) == 8

    await parent.async_delete()

    assert await child_cls.objects.async_count() == 1
    assert await grandchild_cls.objects.async_count() == 1
    assert sorted(await files.distinct("filename")) == [
        "kept",
        "kept-grandchild",
        "kept0",
        "kept1",
    ]
    assert await get_async_db().fs.chunks.count_documents({}) == 4


async def test_files_of_cascaded_documents_stay_when_the_delete_is_refused(
    async_alias: str,
) -> None:
    parent_cls = build(mongoengine_async, "DrpRefusedParent", "default", {})
    child_cls = build(
        mongoengine_async,
        "DrpRefusedChild",
        "default",
        {
            "parent": mongoengine_async.ReferenceField(
                parent_cls, reverse_delete_rule=CASCADE
            ),
            "file": mongoengine_async.FileField(),
        },
    )
    refusing = build(
        mongoengine_async,
        "DrpRefusing",
        "default",
        {
            "child": mongoengine_async.ReferenceField(
                child_cls, reverse_delete_rule=DENY
            ),
        },
    )
    parent = await parent_cls().async_save()
    child = child_cls(parent=parent)
    await child.file.async_put(b"data", filename="data")
    await child.async_save()
    await refusing(child=child).async_save()
    with pytest.raises(OperationError):
        await parent.async_delete()
    assert await get_async_db().fs.files.count_documents({}) == 1


# -- unacknowledged deletes ---------------------------------------------------------


@pytest.mark.parametrize("how", ["document", "queryset"])
async def test_an_unacknowledged_delete_with_rules_returns_none(
    async_alias: str, sync_alias: Any, how: str
) -> None:
    """As MongoEngine's: w=0 is fire-and-forget (no transaction of its own,
    which would drop w=0); the queryset delete returns None, not a count."""

    def models(module: Any, alias: str) -> tuple[type, type]:
        return target_and_referrer(module, "DrpW0", alias, NULLIFY)

    me_target, me_referrer = models(mongoengine, SYNC)
    me_referrer(ref=me_target().save()).save()
    if how == "document":
        theirs = me_target.objects.get().delete(w=0)
    else:
        theirs = me_target.objects.delete(write_concern={"w": 0})

    target, referrer = models(mongoengine_async, "default")
    await referrer(ref=await target().async_save()).async_save()
    if how == "document":
        ours = await (await target.objects.async_get()).async_delete(w=0)
    else:
        ours = await target.objects.async_delete(write_concern={"w": 0})
    assert ours is theirs is None
    # Unacknowledged: done soon after. The target's delete is the last write
    # (after its referrers' update): waiting for the update alone, the delete
    # could still be on its way.
    for _ in range(100):
        if not await target.objects.async_count():
            break
        await asyncio.sleep(0.02)
    assert await target.objects.async_count() == 0
    assert await referrer.objects(ref__exists=True).async_count() == 0


async def test_a_client_whose_write_concern_is_unacknowledged_deletes_with_rules(
    async_alias: str, mongodb_uri: str
) -> None:
    """PyMongo refuses to start a transaction with w=0: such a client's deletes
    with rules failed with ConfigurationError; they run as MongoEngine's."""
    async with fresh_database("drp_w0", mongodb_uri, w=0):
        target, referrer = target_and_referrer(
            mongoengine_async, "DrpW0Client", "drp_w0", CASCADE
        )
        doomed = await target().async_save()
        await referrer(ref=doomed).async_save()
        collection = get_async_db("drp_w0")[referrer._get_collection_name()]
        for _ in range(100):
            if await collection.count_documents({}):
                break
            await asyncio.sleep(0.02)
        assert await target.objects.async_delete() is None
        for _ in range(100):
            if not await collection.count_documents({}):
                break
            await asyncio.sleep(0.02)
        assert await collection.count_documents({}) == 0


# -- the options of a delete's own transaction ----------------------------------------

UNSATISFIABLE = {"w": 50}  # more members than any replica set of the tests has


@pytest.mark.parametrize("how", ["document", "session", "queryset", "one by one"])
async def test_a_delete_with_rules_keeps_its_write_concern(
    async_alias: str,
    sync_alias: Any,
    command_log: CommandLog,
    how: str,
) -> None:
    """The write concern given to a delete reaches the commit of its own
    transaction (the only command of a transaction that carries one), so one
    the set cannot satisfy fails as MongoEngine's delete does. It was dropped:
    the commit went with the client's write concern and the delete said it
    succeeded."""

    def models(module: Any, alias: str) -> tuple[type, type]:
        return target_and_referrer(module, "DrpWc", alias, CASCADE)

    me_target, me_referrer = models(mongoengine, SYNC)
    me_referrer(ref=me_target().save()).save()
    with pytest.raises(Exception) as theirs:
        if how in ("document", "session"):
            me_target.objects.get().delete(**UNSATISFIABLE)
        else:
            me_target.objects.delete(write_concern=UNSATISFIABLE)

    target, referrer = models(mongoengine_async, "default")
    await referrer(ref=await target().async_save()).async_save()
    command_log.clear()
    with pytest.raises(Exception) as ours:
        if how == "document":
            await (await target.objects.async_get()).async_delete(**UNSATISFIABLE)
        elif how == "session":
            async with get_async_connection().start_session() as session:
                document = await target.objects.async_get()
                await document.async_delete(session=session, **UNSATISFIABLE)
        elif how == "queryset":
            await target.objects.async_delete(write_concern=UNSATISFIABLE)
        else:
            await target.objects.limit(1).async_delete(write_concern=UNSATISFIABLE)
    # One by one (as with delete receivers) in one transaction, the commit fails,
    # as the queryset delete's does (the driver's error).
    assert outcome(ours.value) == outcome(theirs.value)
    # (The failed commit is followed by a fence: see context._Block._fence.)
    commits = [
        e.command for e in command_log.events if "commitTransaction" in e.command
    ]
    assert commits
    assert commits[-1]["writeConcern"] == UNSATISFIABLE


@pytest.mark.parametrize(
    "reads",
    [
        {"read_preference": ReadPreference.SECONDARY_PREFERRED},
        {"readConcernLevel": "linearizable"},
    ],
    ids=["secondary preferred", "linearizable"],
)
async def test_a_delete_with_rules_works_whatever_the_client_reads_with(
    mongodb_uri: str, reads: dict[str, Any]
) -> None:
    """A transaction reads on the primary and at a read concern it allows: the
    delete's own transaction says so. With a client that reads from secondaries
    or linearizably (as MongoEngine's deletes do), it failed with PyMongo's
    InvalidOperation ("read preference in a transaction must be primary") or the
    server's refusal of the read concern."""
    async with fresh_database("drp_reads", mongodb_uri, **reads):
        target, referrer = target_and_referrer(
            mongoengine_async, "DrpReads", "drp_reads", CASCADE
        )
        targets = [await target().async_save() for _ in range(3)]
        for doomed in targets:
            await referrer(ref=doomed).async_save()
        await targets[0].async_delete()
        assert await target.objects(id__ne=targets[2].pk).async_delete() == 1
        assert await target.objects.async_scalar("id") == [targets[2].pk]
        assert await referrer.objects.async_scalar("ref") == [targets[2]]


# -- the cascaded documents' signals: which, in what order ----------------------------


def short(cls: type) -> str:
    """A class's name less the random suffix :func:`build` gives it."""
    return cls.__name__[:-6]


def owned(module: Any, alias: str, prefix: str, fields: dict, meta: dict) -> type:
    """A document class of ``module`` on ``alias`` with ``fields`` and
    ``meta`` (besides its alias)."""
    return type(
        f"{prefix}{uuid4().hex[:6]}",
        (module.Document,),
        {"__module__": __name__, "meta": {"db_alias": alias, **meta}, **fields},
    )


async def cascade_scenario(
    module: Any, models: Any, documents: Any, label: Any
) -> tuple[list, Any, int]:
    """With ``models(module, alias)`` (an owner class, then those a CASCADE
    reaches from it, each with receivers), save an owner and the
    ``documents(classes, owner)`` referring to it, delete the owner; the
    signals sent, as (signal, sender's name, ``label(document)``), the
    delete's result (or its OperationError's message, the classes' suffixes
    left out), the number of documents left in their collections."""
    is_async = module is mongoengine_async
    owner, *classes = models(module, "default" if is_async else SYNC)

    async def save(document: Any) -> Any:
        return await document.async_save() if is_async else document.save()

    doomed = await save(owner(name="doomed"))
    for document in documents(classes, doomed):
        await save(document)
    log: list[tuple[str, str, Any]] = []

    def pre(sender: type, document: Any, **kwargs: Any) -> None:
        log.append(("pre", short(sender), label(document)))

    def post(sender: type, document: Any, **kwargs: Any) -> None:
        log.append(("post", short(sender), label(document)))

    for cls in classes:
        signals.pre_delete.connect(pre, sender=cls)
        signals.post_delete.connect(post, sender=cls)
    try:
        result = await doomed.async_delete() if is_async else doomed.delete()
    except OperationError as error:
        result = outcome(error)[1]
        for cls in classes:
            result = result.replace(cls.__name__, short(cls))
    finally:
        for cls in classes:
            signals.pre_delete.disconnect(pre, sender=cls)
            signals.post_delete.disconnect(post, sender=cls)
    names = {cls._get_collection_name() for cls in classes}
    if is_async:
        left = [await get_async_db()[name].count_documents({}) for name in names]
    else:
        left = [mongoengine.get_db(SYNC)[name].count_documents({}) for name in names]
    return log, result, sum(left)


def per_signal(log: list[tuple[str, str, Any]]) -> tuple[list, list]:
    """The ``pre_delete``, then the ``post_delete`` of ``log``, each in their
    order: MongoEngine alternates them, the async delete sends every
    ``pre_delete`` first (documented: "Signals of cascaded documents")."""
    return (
        [entry[1:] for entry in log if entry[0] == "pre"],
        [entry[1:] for entry in log if entry[0] == "post"],
    )


def embedded_pk_models(module: Any, alias: str) -> tuple[type, type]:
    """An owner; its items, keyed by an embedded document (``_id`` stored as a
    dict), a CASCADE away."""
    key = type(
        f"DrpKey{uuid4().hex[:6]}",
        (module.EmbeddedDocument,),
        {"__module__": __name__, "a": module.StringField(), "b": module.IntField()},
    )
    owner = build(module, "DrpKeyOwner", alias, {"name": module.StringField()})
    fields = {
        "key": module.EmbeddedDocumentField(key, primary_key=True),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
    }
    return owner, owned(module, alias, "DrpKeyItem", fields, {})


KEYS = [("x", 2), ("x", 1), ("y", 0)]


async def test_cascaded_documents_keyed_by_an_embedded_document_are_deleted(
    async_alias: str, sync_alias: Any
) -> None:
    """Documents whose primary key is an ``EmbeddedDocumentField`` (an ``_id``
    stored as a dict), cascaded to with delete receivers: the async delete
    failed with ``TypeError: unhashable type: 'dict'``; MongoEngine deletes
    them, their signals in its query's order (by ``_id``: saved x2, x1, y0)."""

    def items(classes: list[type], owner: Any) -> list[Any]:
        [item] = classes
        key = item._fields["key"].document_type
        return [item(key=key(a=a, b=b), owner=owner) for a, b in KEYS]

    def label(document: Any) -> tuple[str, int]:
        return document.key.a, document.key.b

    theirs = await cascade_scenario(mongoengine, embedded_pk_models, items, label)
    ours = await cascade_scenario(mongoengine_async, embedded_pk_models, items, label)
    expected = [("DrpKeyItem", key) for key in [("x", 1), ("x", 2), ("y", 0)]]
    assert per_signal(theirs[0]) == (expected, expected)
    assert per_signal(ours[0]) == per_signal(theirs[0])
    assert ours[1:] == theirs[1:] == (None, 0)


def hierarchy_models(module: Any, alias: str) -> tuple[type, ...]:
    """An owner; posts (a parent class with ``allow_inheritance``), videos
    and notes (its subclasses) a CASCADE away."""
    owner = build(module, "DrpHierOwner", alias, {"name": module.StringField()})
    fields = {
        "n": module.IntField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
    }
    post = owned(module, alias, "DrpHierPost", fields, {"allow_inheritance": True})
    video = type(f"DrpHierVideo{uuid4().hex[:6]}", (post,), {"__module__": __name__})
    note = type(f"DrpHierNote{uuid4().hex[:6]}", (post,), {"__module__": __name__})
    return owner, post, video, note


async def test_cascaded_documents_of_a_hierarchy_are_signalled_in_the_query_order(
    async_alias: str, sync_alias: Any
) -> None:
    """Cascaded documents of a parent class and its subclasses, receivers on
    each: MongoEngine sends their signals in its query's order, the classes
    interleaved (by ``_id`` here, the order saved); the async delete sent
    them grouped by class (its query, without MongoEngine's ``_id: {$nin:
    []}``, was answered through the ``_cls`` index)."""
    rows = [(1, 1), (2, 2), (0, 3), (1, 4), (2, 5)]  # (class, n)

    def documents(classes: list[type], owner: Any) -> list[Any]:
        return [classes[each](n=n, owner=owner) for each, n in rows]

    def label(document: Any) -> int:
        return document.n

    theirs = await cascade_scenario(mongoengine, hierarchy_models, documents, label)
    ours = await cascade_scenario(mongoengine_async, hierarchy_models, documents, label)
    names = ["DrpHierPost", "DrpHierVideo", "DrpHierNote"]
    expected = [(names[each], n) for each, n in rows]
    assert per_signal(theirs[0]) == (expected, expected)
    assert per_signal(ours[0]) == per_signal(theirs[0])
    assert ours[1:] == theirs[1:] == (None, 0)


CASE_INSENSITIVE = {"locale": "en", "strength": 2}


def collated_models(module: Any, alias: str, rule: int = CASCADE) -> tuple[type, type]:
    """An owner; referrers (``rule``), ordered by name, whose manager matches
    ``kind="live"`` and sorts under a case-insensitive collation."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.collation(CASE_INSENSITIVE).filter(kind="live")

    owner = build(module, "DrpCollOwner", alias, {"name": module.StringField()})
    fields = {
        "name": module.StringField(),
        "kind": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=rule),
        "objects": module.queryset_manager(objects),
    }
    return owner, owned(module, alias, "DrpCollRef", fields, {"ordering": ["name"]})


async def test_cascaded_documents_are_read_under_their_manager_s_collation(
    async_alias: str, sync_alias: Any
) -> None:
    """MongoEngine deletes cascaded documents with delete receivers by
    iterating their class's manager, which matches and sorts them under the
    manager's ``collation()``: apple, Banana, cherry (of kinds Live, LIVE,
    live), date (dead) kept. The async delete read them without it: it
    deleted cherry alone."""
    rows = [("cherry", "live"), ("Banana", "LIVE"), ("apple", "Live"), ("date", "dead")]

    def documents(classes: list[type], owner: Any) -> list[Any]:
        [ref] = classes
        return [ref(name=name, kind=kind, owner=owner) for name, kind in rows]

    def label(document: Any) -> str:
        return document.name

    theirs = await cascade_scenario(mongoengine, collated_models, documents, label)
    ours = await cascade_scenario(mongoengine_async, collated_models, documents, label)
    expected = [("DrpCollRef", name) for name in ["apple", "Banana", "cherry"]]
    assert per_signal(theirs[0]) == (expected, expected)
    assert per_signal(ours[0]) == per_signal(theirs[0])
    assert ours[1:] == theirs[1:] == (None, 1)  # date


async def test_a_deny_rule_finds_referrers_under_their_manager_s_collation(
    async_alias: str, sync_alias: Any
) -> None:
    """MongoEngine's DENY check counts the referrers through their class's
    manager, under its ``collation()``: a referrer of kind "LIVE" matches its
    ``kind="live"`` and the delete is refused. The async check read without
    it and deleted the owner."""

    def documents(classes: list[type], owner: Any) -> list[Any]:
        [ref] = classes
        return [ref(name="Banana", kind="LIVE", owner=owner)]

    def models(module: Any, alias: str) -> tuple[type, type]:
        return collated_models(module, alias, DENY)

    theirs = await cascade_scenario(mongoengine, models, documents, str)
    ours = await cascade_scenario(mongoengine_async, models, documents, str)
    refused = "Could not delete document (DrpCollRef.owner refers to it)"
    assert ours == theirs == ([], refused, 1)


def hinted_models(module: Any, alias: str) -> tuple[type, type]:
    """An owner; referrers (CASCADE) indexed by name, whose manager hints
    that index."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.hint([("name", 1)])

    owner = build(module, "DrpHintOwner", alias, {"name": module.StringField()})
    fields = {
        "name": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
        "objects": module.queryset_manager(objects),
    }
    return owner, owned(module, alias, "DrpHintRef", fields, {"indexes": ["name"]})


async def test_cascaded_documents_are_signalled_in_their_manager_s_hint_order(
    async_alias: str, sync_alias: Any
) -> None:
    """MongoEngine iterates the cascaded documents with delete receivers
    through their manager, whose ``hint()`` of the name index has them come
    by name: apple, banana, cherry. The async read left the hint out: the
    server answered by ``_id`` (cherry, apple, banana: the order saved)."""
    rows = ["cherry", "apple", "banana"]

    def documents(classes: list[type], owner: Any) -> list[Any]:
        [ref] = classes
        return [ref(name=name, owner=owner) for name in rows]

    def label(document: Any) -> str:
        return document.name

    theirs = await cascade_scenario(mongoengine, hinted_models, documents, label)
    ours = await cascade_scenario(mongoengine_async, hinted_models, documents, label)
    expected = [("DrpHintRef", name) for name in sorted(rows)]
    assert per_signal(theirs[0]) == (expected, expected)
    assert per_signal(ours[0]) == per_signal(theirs[0])
    assert ours[1:] == theirs[1:] == (None, 0)


def collated_chain_models(module: Any, alias: str, rule: int) -> tuple[type, ...]:
    """An owner; middles (CASCADE, a file each, no receivers) whose manager
    matches ``kind="live"`` under a case-insensitive collation; leaves
    referring to the middles (``rule``)."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.collation(CASE_INSENSITIVE).filter(kind="live")

    owner = build(module, "DrpChainOwner", alias, {"name": module.StringField()})
    fields = {
        "name": module.StringField(),
        "kind": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
        "file": module.FileField(db_alias=alias),
        "objects": module.queryset_manager(objects),
    }
    middle = owned(module, alias, "DrpChainMid", fields, {})
    leaf_fields = {
        "name": module.StringField(),
        "mid": module.ReferenceField(middle, reverse_delete_rule=rule),
    }
    return owner, middle, owned(module, alias, "DrpChainLeaf", leaf_fields, {})


async def chain_scenario(module: Any, rule: int) -> tuple[Any, ...]:
    """With :func:`collated_chain_models`, an owner, middles a (live), b
    (LIVE), c (dead) with a file each, a leaf for b and c; the owner deleted:
    its OperationError's message (the classes' suffixes left out) or None,
    the names of the middles, leaves (with their reference's name) and files
    left."""
    is_async = module is mongoengine_async
    alias = "default" if is_async else SYNC
    owner, middle, leaf = collated_chain_models(module, alias, rule)

    async def save(document: Any) -> Any:
        return await document.async_save() if is_async else document.save()

    doomed = await save(owner(name="doomed"))
    for name, kind in [("a", "live"), ("b", "LIVE"), ("c", "dead")]:
        mid = middle(name=name, kind=kind, owner=doomed)
        if is_async:
            await mid.file.async_put(name.encode(), filename=name)
        else:
            mid.file.put(name.encode(), filename=name)
        await save(mid)
        if name != "a":  # (b's leaf alone tells what the rule reached)
            await save(leaf(name=f"leaf-{name}", mid=mid))
    error = None
    try:
        await doomed.async_delete() if is_async else doomed.delete()
    except OperationError as refused:
        error = outcome(refused)[1].replace(middle.__name__, short(middle))
        error = error.replace(leaf.__name__, short(leaf))
    left = []
    for collection in [middle._get_collection_name(), leaf._get_collection_name()]:
        left.append(await stored_by(is_async, collection, "name"))
    return (
        error,
        [raw["name"] for raw in left[0]],
        [(raw["name"], "mid" in raw) for raw in left[1]],
        [raw["filename"] for raw in await stored_by(is_async, "fs.files", "filename")],
    )


async def stored_by(is_async: bool, collection: str, key: str) -> list[dict]:
    """The raw documents of ``collection`` (on the async alias or
    MongoEngine's), by ``key``."""
    if is_async:
        cursor = get_async_db()[collection].find({}, sort=[(key, 1)])
        return await cursor.to_list(None)
    return list(mongoengine.get_db(SYNC)[collection].find({}, sort=[(key, 1)]))


@pytest.mark.parametrize(
    "rule", [CASCADE, NULLIFY, DENY], ids=["cascade", "nullify", "deny"]
)
async def test_a_cascade_goes_on_from_what_the_manager_s_collation_matches(
    async_alias: str, sync_alias: Any, rule: int
) -> None:
    """MongoEngine applies the middles' own rules to what their manager's
    iteration matches, under its case-insensitive ``collation()`` (a and b),
    then deletes them with ``delete_many``, sent without it (a alone): b
    stays, its leaf is gone (CASCADE) or refers to nothing (NULLIFY); a DENY
    refuses the delete. The async delete read the middles without the
    collation: it kept b's leaf as it was, and deleted despite the DENY. b's
    file stays with it (MongoEngine's ``delete_many`` deletes no file; the
    async delete deletes a's, documented)."""
    theirs = await chain_scenario(mongoengine, rule)
    ours = await chain_scenario(mongoengine_async, rule)
    files = ["a", "b", "c"]
    expected: dict[int, tuple[Any, ...]] = {
        CASCADE: (None, ["b", "c"], [("leaf-c", True)], files),
        NULLIFY: (None, ["b", "c"], [("leaf-b", False), ("leaf-c", True)], files),
        DENY: (
            "Could not delete document (DrpChainLeaf.mid refers to it)",
            ["a", "b", "c"],
            [("leaf-b", True), ("leaf-c", True)],
            files,
        ),
    }
    assert theirs == expected[rule]
    assert ours[:3] == theirs[:3]
    assert ours[3] == (files if rule == DENY else ["b", "c"])


def decimal_pk_models(module: Any, alias: str) -> tuple[type, type]:
    """An owner; its items, keyed by a ``Decimal128Field`` (an ``_id`` stored
    as a Decimal128, unhashable), a CASCADE away."""
    owner = build(module, "DrpDecOwner", alias, {"name": module.StringField()})
    fields = {
        "key": module.Decimal128Field(primary_key=True),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
    }
    return owner, owned(module, alias, "DrpDecItem", fields, {})


async def test_cascaded_documents_keyed_by_a_decimal128_are_deleted(
    async_alias: str, sync_alias: Any
) -> None:
    """Documents whose primary key is a ``Decimal128Field``, cascaded to with
    delete receivers: the async delete failed with ``TypeError: unhashable
    type: 'Decimal128'``; MongoEngine deletes them, their signals in its
    query's order (by ``_id``, numeric: 0.5, 2, 10)."""
    keys = ["10", "0.5", "2"]

    def items(classes: list[type], owner: Any) -> list[Any]:
        [item] = classes
        return [item(key=Decimal(key), owner=owner) for key in keys]

    def label(document: Any) -> str:
        return str(document.key)

    theirs = await cascade_scenario(mongoengine, decimal_pk_models, items, label)
    ours = await cascade_scenario(mongoengine_async, decimal_pk_models, items, label)
    expected = [("DrpDecItem", key) for key in ["0.5", "2", "10"]]
    assert per_signal(theirs[0]) == (expected, expected)
    assert per_signal(ours[0]) == per_signal(theirs[0])
    assert ours[1:] == theirs[1:] == (None, 0)


def uuid_pk_models(module: Any, alias: str) -> tuple[type, type]:
    """An owner; its items, keyed by a ``UUIDField(binary=False)`` (a UUID
    stored as a string), a CASCADE away."""
    owner = build(module, "DrpUuidOwner", alias, {"name": module.StringField()})
    fields = {
        "key": module.UUIDField(binary=False, primary_key=True),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
    }
    return owner, owned(module, alias, "DrpUuidItem", fields, {})


@pytest.mark.parametrize("receiver", [False, True], ids=["plain", "receiver"])
async def test_cascade_refs_are_the_documents_pks(
    async_alias: str, sync_alias: Any, receiver: bool
) -> None:
    """``delete(cascade_refs=...)`` spares the documents of those pks, which
    MongoEngine's ``pk__nin`` stores as their class does (a UUID as a string
    here)."""

    def noted(sender: type, document: Any, **kwargs: Any) -> None:
        pass

    async def scenario(module: Any) -> list[int]:
        is_async = module is mongoengine_async
        owner, item = uuid_pk_models(module, "default" if is_async else SYNC)
        keys = [uuid4() for _ in range(3)]

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        doomed = await save(owner(name="doomed"))
        for key in keys:
            await save(item(key=key, owner=doomed))
        spared = {keys[1]}
        senders = [item] if receiver else []
        with receiving(signals.post_delete, noted, *senders):
            if is_async:
                await owner.objects.async_delete(cascade_refs=spared)
                left = await item.objects.async_scalar("key")
            else:
                owner.objects.delete(cascade_refs=spared)
                left = list(item.objects.scalar("key"))
        return [keys.index(key) for key in left]

    assert await scenario(mongoengine) == [1]
    assert await scenario(mongoengine_async) == [1]


def sparse_hinted_models(module: Any, alias: str) -> tuple[type, type]:
    """An owner; referrers (DENY) whose manager hints a sparse index on their
    ``kind``."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.hint("kind_1")

    owner = build(module, "DrpSparseOwner", alias, {"name": module.StringField()})
    fields = {
        "kind": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=DENY),
        "objects": module.queryset_manager(objects),
    }
    meta = {"indexes": [{"fields": ["kind"], "sparse": True}]}
    return owner, owned(module, alias, "DrpSparseRef", fields, meta)


@pytest.mark.parametrize("kind", [None, "live"], ids=["unindexed", "indexed"])
async def test_a_deny_rule_counts_referrers_through_their_manager_s_hint(
    async_alias: str, sync_alias: Any, kind: str | None
) -> None:
    """MongoEngine's DENY check counts the referrers through their manager,
    with its ``hint()``: through a sparse index, a referrer without the
    indexed field is not counted and the delete goes through; one with it
    refuses the delete. The async check read without the hint: it refused
    both."""

    def documents(classes: list[type], owner: Any) -> list[Any]:
        [ref] = classes
        return [ref(kind=kind, owner=owner)]

    theirs = await cascade_scenario(mongoengine, sparse_hinted_models, documents, str)
    ours = await cascade_scenario(
        mongoengine_async, sparse_hinted_models, documents, str
    )
    refused = "Could not delete document (DrpSparseRef.owner refers to it)"
    assert theirs == ([], None if kind is None else refused, 1)
    assert ours == theirs


def kept_denying_models(module: Any, alias: str) -> tuple[type, ...]:
    """An owner; a target (CASCADE from the owner); referrers (CASCADE from the
    owner, DENY on the target) whose manager matches ``kind="live"`` under a
    case-insensitive collation."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.collation(CASE_INSENSITIVE).filter(kind="live")

    owner = build(module, "DrpKeptOwner", alias, {"name": module.StringField()})
    target_fields = {"owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE)}
    target = owned(module, alias, "DrpKeptTarget", target_fields, {})
    fields = {
        "kind": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
        "target": module.ReferenceField(target, reverse_delete_rule=DENY),
        "objects": module.queryset_manager(objects),
    }
    return owner, target, owned(module, alias, "DrpKeptRef", fields, {})


async def test_a_document_a_cascade_keeps_is_counted_by_a_deny_rule(
    async_alias: str, sync_alias: Any
) -> None:
    """A referrer the owner's CASCADE matches under its manager's collation
    alone (kind "LIVE") is not deleted (MongoEngine's ``delete_many`` is sent
    without the collation): still referring to the target the cascade
    deletes, its DENY refuses the delete, in MongoEngine and in the async
    delete (which changes nothing then)."""

    async def scenario(module: Any) -> tuple[str, int]:
        is_async = module is mongoengine_async
        owner, target, ref = kept_denying_models(
            module, "default" if is_async else SYNC
        )

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        doomed = await save(owner(name="doomed"))
        kept = await save(target(owner=doomed))
        await save(ref(kind="LIVE", owner=doomed, target=kept))
        with pytest.raises(OperationError) as refused:
            await doomed.async_delete() if is_async else doomed.delete()
        message = outcome(refused.value)[1].replace(ref.__name__, short(ref))
        left = await stored_by(is_async, target._get_collection_name(), "_id")
        return message, len(left)

    refused = "Could not delete document (DrpKeptRef.target refers to it)"
    assert await scenario(mongoengine) == (refused, 1)
    assert await scenario(mongoengine_async) == (refused, 1)


def collated_root_models(
    module: Any, alias: str, rule: int, keyed: bool
) -> tuple[type, type]:
    """An owner, with a file, else (``keyed``) its name its primary key;
    referrers to it (``rule``)."""
    fields = {"name": module.StringField(primary_key=keyed)}
    if not keyed:  # (a delete listing files reads the roots first)
        fields["file"] = module.FileField(db_alias=alias)
    owner = build(module, "DrpRootOwner", alias, fields)
    fields = {
        "name": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=rule),
    }
    return owner, owned(module, alias, "DrpRootRef", fields, {})


@pytest.mark.parametrize("keyed", [False, True], ids=["by_name", "by_pk"])
@pytest.mark.parametrize("transaction", [True, False], ids=["txn", "no_txn"])
@pytest.mark.parametrize(
    "rule", [CASCADE, NULLIFY, DENY], ids=["cascade", "nullify", "deny"]
)
async def test_a_collated_queryset_s_rules_apply_to_what_its_collation_matches(
    async_alias: str, sync_alias: Any, rule: int, transaction: bool, keyed: bool
) -> None:
    """MongoEngine applies the rules of a queryset delete to what the
    queryset's iteration matches, under its ``collation()`` (doomed and
    DOOMED), then deletes with ``delete_many``, sent without it (doomed
    alone): DOOMED stays, with its file, but its referrer is gone (CASCADE),
    refers to nothing (NULLIFY), or refuses the delete (DENY). The async
    delete applied them to doomed alone: DOOMED's referrer was left as it
    was and a DENY let the delete through. So too when the name is the
    primary key (a query of ``_id`` alone, whose document the async delete
    may delete first)."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        owner, ref = collated_root_models(module, alias, rule, keyed)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        for name in ["doomed", "DOOMED", "other"]:
            document = owner(name=name)
            if not keyed and is_async:
                await document.file.async_put(name.encode(), filename=name)
            elif not keyed:
                document.file.put(name.encode(), filename=name)
            if name != "doomed":
                await save(ref(name=f"ref-{name}", owner=await save(document)))
            else:
                await save(document)
        matching = owner.objects(name="doomed").collation(CASE_INSENSITIVE)
        try:
            if is_async:
                result = await matching.async_delete(transaction=transaction)
            else:
                result = matching.delete()
        except OperationError as error:
            result = outcome(error)[1].replace(ref.__name__, short(ref))
        owners = await stored_by(is_async, owner._get_collection_name(), "_id")
        refs = await stored_by(is_async, ref._get_collection_name(), "name")
        files = await stored_by(is_async, "fs.files", "_id")
        return (
            result,
            sorted(each.get("name", each["_id"]) for each in owners),
            [(each["name"], "owner" in each) for each in refs],
            len(files),
        )

    refused = "Could not delete document (DrpRootRef.owner refers to it)"
    expected: dict[int, tuple[Any, ...]] = {
        CASCADE: (1, ["DOOMED", "other"], [("ref-other", True)]),
        NULLIFY: (1, ["DOOMED", "other"], [("ref-DOOMED", False), ("ref-other", True)]),
        DENY: (
            refused,
            ["DOOMED", "doomed", "other"],
            [("ref-DOOMED", True), ("ref-other", True)],
        ),
    }
    theirs = await scenario(mongoengine)
    ours = await scenario(mongoengine_async)
    assert theirs[:3] == expected[rule][:3]
    assert theirs[3] == (0 if keyed else 3)
    # (The async delete deletes the files of the documents it deleted.)
    assert ours == (*theirs[:3], 0 if keyed else 3 if rule == DENY else 2)


def dbref_pk_models(module: Any, alias: str) -> tuple[type, type]:
    """An owner; its items, keyed by a reference stored as a DBRef to a tag
    keyed by a ``Decimal128Field`` (an ``_id`` holding a Decimal128, which
    makes the DBRef unhashable), a CASCADE away."""
    tag_fields = {"key": module.Decimal128Field(primary_key=True)}
    tag = build(module, "DrpDbrefTag", alias, tag_fields)
    owner = build(module, "DrpDbrefOwner", alias, {"name": module.StringField()})
    fields = {
        "key": module.ReferenceField(tag, dbref=True, primary_key=True),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
    }
    item = owned(module, alias, "DrpDbrefItem", fields, {"ordering": ["_id"]})
    item.tag_class = tag
    return owner, item


async def test_cascaded_documents_keyed_by_a_dbref_of_a_decimal128_are_deleted(
    async_alias: str, sync_alias: Any
) -> None:
    """Documents whose primary key is a reference stored as a DBRef holding a
    Decimal128, cascaded to with delete receivers: the async delete failed
    with ``TypeError: unhashable type: 'Decimal128'``; MongoEngine deletes
    them."""
    keys = ["10", "0.5", "2"]

    def items(classes: list[type], owner: Any) -> list[Any]:
        [item] = classes
        tags = [item.tag_class(key=Decimal(key)) for key in keys]
        return [*tags, *(item(key=tag, owner=owner) for tag in tags)]

    def label(document: Any) -> str:
        return str(document._data["key"].id)

    theirs = await cascade_scenario(mongoengine, dbref_pk_models, items, label)
    ours = await cascade_scenario(mongoengine_async, dbref_pk_models, items, label)
    expected = [("DrpDbrefItem", key) for key in ["0.5", "2", "10"]]
    assert per_signal(theirs[0]) == (expected, expected)
    assert per_signal(ours[0]) == per_signal(theirs[0])
    assert ours[1:] == theirs[1:] == (None, 0)


def sparse_cascaded_models(module: Any, alias: str, rules: bool) -> tuple[type, ...]:
    """An owner; referrers (CASCADE, no receivers) whose manager hints a
    sparse index on their ``kind``; with ``rules``, notes referring to them
    (NULLIFY), which gives them a rule of their own."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.hint("kind_1")

    owner = build(module, "DrpHintOwner", alias, {"name": module.StringField()})
    fields = {
        "kind": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
        "objects": module.queryset_manager(objects),
    }
    meta = {"indexes": [{"fields": ["kind"], "sparse": True}]}
    referrer = owned(module, alias, "DrpHintRef", fields, meta)
    if not rules:
        return owner, referrer
    note = {"ref": module.ReferenceField(referrer, reverse_delete_rule=NULLIFY)}
    return owner, referrer, build(module, "DrpHintNote", alias, note)


@pytest.mark.parametrize("rules", [False, True], ids=["leaf", "with_rules"])
@pytest.mark.parametrize(
    "kinds",
    [[None], [None, "live"], ["live"]],
    ids=["unindexed", "mixed", "indexed"],
)
async def test_a_cascade_goes_through_its_manager_s_hint_all_or_nothing(
    async_alias: str, sync_alias: Any, kinds: list, rules: bool
) -> None:
    """MongoEngine cascades to a class without receivers only when its
    manager's ``count()`` finds one, through its ``hint()``: through a sparse
    index, referrers the index holds none of are left (unindexed); with one
    it holds, its ``delete_many`` (no hint) deletes them all (mixed). The
    async delete deleted them all every time."""

    async def scenario(module: Any) -> int:
        is_async = module is mongoengine_async
        owner, referrer, *_ = sparse_cascaded_models(
            module, "default" if is_async else SYNC, rules
        )

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        doomed = await save(owner(name="doomed"))
        for kind in kinds:
            await save(referrer(kind=kind, owner=doomed))
        if is_async:
            await doomed.async_delete()
            return await referrer._get_collection().count_documents({})
        doomed.delete()
        return referrer._get_collection().count_documents({})

    expected = len(kinds) if kinds == [None] else 0
    assert await scenario(mongoengine) == expected
    assert await scenario(mongoengine_async) == expected


def collated_cycle_models(module: Any, alias: str) -> tuple[type, type]:
    """An owner with rules (its ``ticket``: CASCADE from a ticket); tickets
    referring to an owner (CASCADE)."""
    name = f"DrpCycleTicket{uuid4().hex[:6]}"
    fields = {
        "name": module.StringField(),
        "ticket": module.ReferenceField(name),
        "file": module.FileField(db_alias=alias),
    }
    owner = build(module, "DrpCycleOwner", alias, fields)
    fields = {"owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE)}
    ticket = type(
        name,
        (module.Document,),
        {"__module__": __name__, "meta": {"db_alias": alias}, **fields},
    )
    ticket.register_delete_rule(owner, "ticket", CASCADE)
    return owner, ticket


@pytest.mark.parametrize("transaction", [True, False], ids=["txn", "no_txn"])
async def test_a_root_matched_under_the_collation_alone_goes_when_cascaded_to(
    async_alias: str, sync_alias: Any, transaction: bool
) -> None:
    """A collated queryset's delete keeps DOOMED (matched under its
    collation alone), but MongoEngine's cascade deletes it when another rule
    reaches it: its ticket's CASCADE, the ticket of doomed's own, gone. The
    async delete had it planned (kept) from the start: it stayed, holding a
    reference to a deleted ticket."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        owner, ticket = collated_cycle_models(module, "default" if is_async else SYNC)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        async def filed(name: str, **fields: Any) -> Any:
            document = owner(name=name, **fields)
            if is_async:
                await document.file.async_put(name.encode(), filename=name)
            else:
                document.file.put(name.encode(), filename=name)
            return await save(document)

        held = await save(ticket(owner=await filed("doomed")))
        await filed("DOOMED", ticket=held)
        await filed("other")
        matching = owner.objects(name="doomed").collation(CASE_INSENSITIVE)
        if is_async:
            result = await matching.async_delete(transaction=transaction)
        else:
            result = matching.delete()
        owners = await stored_by(is_async, owner._get_collection_name(), "name")
        tickets = await stored_by(is_async, ticket._get_collection_name(), "_id")
        files = await stored_by(is_async, "fs.files", "filename")
        names = [each["filename"] for each in files]
        return result, [each["name"] for each in owners], len(tickets), names

    theirs = await scenario(mongoengine)
    assert theirs == (1, ["other"], 0, ["DOOMED", "doomed", "other"])
    # (The async delete deletes the files of the documents it deleted.)
    assert await scenario(mongoengine_async) == (*theirs[:3], ["other"])


async def test_a_root_matched_under_the_collation_alone_stays_past_its_own_class(
    async_alias: str, sync_alias: Any
) -> None:
    """A rule within the owners' collection (a child CASCADE from its
    parent) spares DOOMED, which MongoEngine's cascade_refs hold (its
    iteration under the collation listed it): it stays, as in MongoEngine."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        fields = {
            "name": module.StringField(),
            "parent": module.ReferenceField("self", reverse_delete_rule=CASCADE),
        }
        owner = build(module, "DrpSelfOwner", alias, fields)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        doomed = await save(owner(name="doomed"))
        await save(owner(name="DOOMED", parent=doomed))
        await save(owner(name="child", parent=doomed))
        matching = owner.objects(name="doomed").collation(CASE_INSENSITIVE)
        if is_async:
            result = await matching.async_delete()
        else:
            result = matching.delete()
        owners = await stored_by(is_async, owner._get_collection_name(), "name")
        return result, [each["name"] for each in owners]

    theirs = await scenario(mongoengine)
    assert theirs == (1, ["DOOMED"])
    assert await scenario(mongoengine_async) == theirs


@pytest.mark.parametrize("transaction", [True, False], ids=["txn", "no_txn"])
@pytest.mark.parametrize(
    "rule", [CASCADE, NULLIFY, DENY], ids=["cascade", "nullify", "deny"]
)
async def test_rules_apply_to_roots_only_the_collation_matches_despite_files(
    async_alias: str, sync_alias: Any, rule: int, transaction: bool
) -> None:
    """A collated queryset matching its documents only under its
    ``collation()`` (DOOMED for name "doomed"), of a class with a file field:
    MongoEngine applies the rules to DOOMED, which its iteration lists, and
    deletes nothing (its ``delete_many`` is sent without the collation),
    returning 0. Outside a transaction the async delete listed the matches'
    files without the collation, found none, and returned 0 before applying
    any rule: DOOMED's referrer stayed as it was, and a DENY let it through."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        owner, ref = collated_root_models(module, alias, rule, False)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        for name in ["DOOMED", "other"]:
            document = owner(name=name)
            if is_async:
                await document.file.async_put(name.encode(), filename=name)
            else:
                document.file.put(name.encode(), filename=name)
            await save(ref(name=f"ref-{name}", owner=await save(document)))
        matching = owner.objects(name="doomed").collation(CASE_INSENSITIVE)
        try:
            if is_async:
                result = await matching.async_delete(transaction=transaction)
            else:
                result = matching.delete()
        except OperationError as error:
            result = outcome(error)[1].replace(ref.__name__, short(ref))
        owners = await stored_by(is_async, owner._get_collection_name(), "name")
        refs = await stored_by(is_async, ref._get_collection_name(), "name")
        files = await stored_by(is_async, "fs.files", "_id")
        return (
            result,
            [each["name"] for each in owners],
            [(each["name"], "owner" in each) for each in refs],
            len(files),
        )

    refused = "Could not delete document (DrpRootRef.owner refers to it)"
    kept = [("ref-DOOMED", True), ("ref-other", True)]
    expected: dict[int, tuple[Any, ...]] = {
        CASCADE: (0, ["DOOMED", "other"], [("ref-other", True)], 2),
        NULLIFY: (0, ["DOOMED", "other"], [("ref-DOOMED", False), kept[1]], 2),
        DENY: (refused, ["DOOMED", "other"], kept, 2),
    }
    theirs = await scenario(mongoengine)
    assert theirs == expected[rule]
    assert await scenario(mongoengine_async) == theirs


# Two ids a run (an ObjectId array element is 12 bytes, a type and a short key).
TWO_IDS = 2 * 21


@pytest.mark.parametrize("transaction", [True, False], ids=["txn", "no_txn"])
@pytest.mark.parametrize(
    "rule", [CASCADE, NULLIFY, DENY], ids=["cascade", "nullify", "deny"]
)
async def test_a_collated_delete_sent_in_several_runs_applies_rules_as_mongoengine(
    async_alias: str,
    sync_alias: Any,
    monkeypatch: pytest.MonkeyPatch,
    command_log: CommandLog,
    rule: int,
    transaction: bool,
) -> None:
    """A collated queryset delete of more matches than one run of ids holds
    (the run size patched to two ids; a class with a file field: its
    matches listed in runs outside a transaction): the rules apply to all it
    matches under the collation (three "doomed", three of other cases), the
    three "doomed" alone are deleted, as MongoEngine's ``delete()`` does."""
    names = ["doomed", "DOOMED", "doomed", "Doomed", "doomed", "dOOMED", "other"]

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        owner, ref = collated_root_models(module, alias, rule, False)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        for number, name in enumerate(names):
            document = owner(name=name)
            if is_async:
                await document.file.async_put(name.encode(), filename=name)
            else:
                document.file.put(name.encode(), filename=name)
            await save(ref(name=f"ref-{number}-{name}", owner=await save(document)))
        matching = owner.objects(name="doomed").collation(CASE_INSENSITIVE)
        try:
            if is_async:
                with monkeypatch.context() as patched:
                    gridfs = mongoengine_async.gridfs
                    patched.setattr(gridfs, "LISTED_IDS_BYTES", TWO_IDS)
                    command_log.clear()
                    result = await matching.async_delete(transaction=transaction)
            else:
                result = matching.delete()
        except OperationError as error:
            result = outcome(error)[1].replace(ref.__name__, short(ref))
        owners = await stored_by(is_async, owner._get_collection_name(), "name")
        refs = await stored_by(is_async, ref._get_collection_name(), "name")
        files = await stored_by(is_async, "fs.files", "filename")
        return (
            result,
            [each["name"] for each in owners],
            [(each["name"], "owner" in each) for each in refs],
            [each["filename"] for each in files],
        )

    theirs = await scenario(mongoengine)
    left = ["DOOMED", "Doomed", "dOOMED", "other"]
    if rule == DENY:
        assert theirs[0] == "Could not delete document (DrpRootRef.owner refers to it)"
    else:
        assert (theirs[0], sorted(theirs[1])) == (3, left)
        assert theirs[2] == (
            [("ref-6-other", True)]
            if rule == CASCADE
            else [
                (f"ref-{number}-{name}", name == "other")
                for number, name in enumerate(names)
            ]
        )
    ours = await scenario(mongoengine_async)
    # (The async delete deletes the files of the documents it deleted.)
    assert ours == (*theirs[:3], theirs[3] if rule == DENY else sorted(left))
    owners = [
        len(event.command["deletes"][0]["q"]["_id"]["$in"])
        for event in command_log.events
        if event.command_name == "delete"
        and event.command["delete"].startswith("drp_root_owner")
    ]
    assert owners == ([] if rule == DENY else [2, 1])  # (several runs)


def string_keyed_models(module: Any, alias: str, rule: int) -> tuple[type, ...]:
    """An owner keyed by its name; referrers (``rule``) whose manager matches
    under a case-insensitive collation; leaves (CASCADE from the referrers,
    which so have rules of their own)."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.collation(CASE_INSENSITIVE)

    owner = build(
        module, "DrpKeyOwner", alias, {"name": module.StringField(primary_key=True)}
    )
    fields = {
        "name": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=rule),
        "objects": module.queryset_manager(objects),
    }
    ref = owned(module, alias, "DrpKeyRef", fields, {})
    leaf_fields = {
        "name": module.StringField(),
        "ref": module.ReferenceField(ref, reverse_delete_rule=CASCADE),
    }
    return owner, ref, owned(module, alias, "DrpKeyLeaf", leaf_fields, {})


@pytest.mark.parametrize("how", ["document", "queryset"])
@pytest.mark.parametrize("signalled", [False, True], ids=["quiet", "receivers"])
@pytest.mark.parametrize(
    "rule", [CASCADE, NULLIFY, DENY], ids=["cascade", "nullify", "deny"]
)
async def test_mixed_case_string_references_under_a_manager_s_collation(
    async_alias: str, sync_alias: Any, rule: int, signalled: bool, how: str
) -> None:
    """References to string pks ("doomed", "DOOMED") read by a referrer's
    manager under a case-insensitive collation: deleting "doomed",
    MongoEngine's rules match the referrer of "DOOMED" too where its queries
    use the collation (its DENY count, its iteration of a cascade: the
    referrer's own rules, its one-by-one delete with receivers), not where
    they do not (``delete_many``, ``update_many``). The async delete does the
    same: the same documents left, nullified and signalled."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        owner, ref, leaf = string_keyed_models(module, alias, rule)
        sigs = signals if not is_async else mongoengine_async.signals

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        for name in ["doomed", "DOOMED", "other"]:
            kept = await save(owner(name=name))
            referrer = await save(ref(name=f"ref-{name}", owner=kept))
            await save(leaf(name=f"leaf-{name}", ref=referrer))
        matching = owner.objects(name="doomed")
        if how == "document":
            doomed = await matching.async_get() if is_async else matching.get()
        seen: list = []

        def noted(sender: Any, document: Any, **kwargs: Any) -> None:
            seen.append(document.name)

        with receiving(sigs.post_delete, noted, *([ref] if signalled else [])):
            try:
                if how == "queryset":
                    result = (
                        await matching.async_delete() if is_async else matching.delete()
                    )
                else:
                    result = (
                        await doomed.async_delete() if is_async else doomed.delete()
                    )
            except OperationError as error:
                result = outcome(error)[1].replace(ref.__name__, short(ref))
        owners = await stored_by(is_async, owner._get_collection_name(), "_id")
        refs = await stored_by(is_async, ref._get_collection_name(), "name")
        leaves = await stored_by(is_async, leaf._get_collection_name(), "name")
        return (
            result,
            [each["_id"] for each in owners],
            [(each["name"], each.get("owner")) for each in refs],
            [each["name"] for each in leaves],
            seen,
        )

    theirs = await scenario(mongoengine)
    left = ["leaf-DOOMED", "leaf-doomed", "leaf-other"]
    if rule == DENY:
        assert theirs[1:4] == (["DOOMED", "doomed", "other"], theirs[2], left)
    else:  # (the referrer of DOOMED, read under the collation, loses its leaf)
        assert theirs[1] == ["DOOMED", "other"]
        assert theirs[3] == (left if rule == NULLIFY else ["leaf-other"])
    assert theirs[4] == (
        ["ref-doomed", "ref-DOOMED"] if signalled and rule == CASCADE else []
    )
    assert await scenario(mongoengine_async) == theirs


def kept_then_signalled_models(
    module: Any, alias: str, parented: bool
) -> tuple[type, ...]:
    """Owners (a hierarchy), links (CASCADE from an owner), and owners of a
    subclass whose ``link`` cascades from a link (receivers connected)."""
    fields: dict[str, Any] = {"name": module.StringField()}
    if parented:
        fields["parent"] = module.ReferenceField("self", reverse_delete_rule=CASCADE)
    owner = owned(module, alias, "DrpKtsOwner", fields, {"allow_inheritance": True})
    link_fields = {
        "name": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
    }
    link = owned(module, alias, "DrpKtsLink", link_fields, {})
    sub = type(
        f"DrpKtsSub{uuid4().hex[:6]}",
        (owner,),
        {
            "__module__": __name__,
            "link": module.ReferenceField(link, reverse_delete_rule=CASCADE),
        },
    )
    return owner, link, sub


async def kept_scenario(
    module: Any,
    parented: bool,
    signalled: bool,
    seed: Callable[..., Awaitable[Any]],
    links_signalled: bool = False,
) -> tuple[Any, ...]:
    """The owners, links and subclass documents ``seed(save, owner, link, sub)``
    stores; then the owners matching "doomed" deleted under a case-insensitive
    collation: the result, the owners and links left, the subclass documents
    (and links, when ``links_signalled``) sent ``post_delete`` (when
    ``signalled``)."""
    is_async = module is mongoengine_async
    alias = "default" if is_async else SYNC
    owner, link, sub = kept_then_signalled_models(module, alias, parented)
    sigs = signals if not is_async else mongoengine_async.signals

    async def save(document: Any) -> Any:
        return await document.async_save() if is_async else document.save()

    await seed(save, owner, link, sub)
    seen: list = []

    def noted(sender: Any, document: Any, **kwargs: Any) -> None:
        seen.append(document.name)

    matching = owner.objects(name="doomed").collation(CASE_INSENSITIVE)
    senders = [*([sub] if signalled else []), *([link] if links_signalled else [])]
    with receiving(sigs.post_delete, noted, *senders):
        if is_async:
            result = await matching.async_delete()
        else:
            result = matching.delete()
    owners = await stored_by(is_async, owner._get_collection_name(), "name")
    links = await stored_by(is_async, link._get_collection_name(), "name")
    return (
        result,
        [each["name"] for each in owners],
        [each["name"] for each in links],
        seen,
    )


@pytest.mark.parametrize("parented", [False, True], ids=["alone", "parented"])
@pytest.mark.parametrize("signalled", [False, True], ids=["quiet", "receivers"])
async def test_a_root_kept_by_the_collation_and_reached_again_as_mongoengine(
    async_alias: str, sync_alias: Any, signalled: bool, parented: bool
) -> None:
    """DOOMED, matched by the collated queryset under its collation alone
    (kept by its ``delete_many``), is reached again through a link (CASCADE
    from the owners) to the subclass's ``link`` (CASCADE): MongoEngine
    deletes it there (by its ``delete_many``, or one by one with receivers),
    unless a rule within the owners' collection (``parent``) came first: its
    ``cascade_refs`` then hold what the queryset's iteration listed, which
    the later rules' queries leave out: DOOMED stays, unsignalled. The async
    delete deleted it there too (and sent it ``post_delete``)."""

    async def seed(save: Any, owner: Any, link: Any, sub: Any) -> None:
        doomed = await save(owner(name="doomed"))
        first = await save(link(name="first", owner=doomed))
        kept = await save(sub(name="DOOMED", link=first))
        await save(link(name="second", owner=kept))
        await save(sub(name="Other", link=None))
        await save(owner(name="other"))

    theirs = await kept_scenario(mongoengine, parented, signalled, seed)
    owners = ["DOOMED", "Other", "other"] if parented else ["Other", "other"]
    signalled_kept = ["DOOMED"] if signalled and not parented else []
    assert theirs == (1, owners, [], signalled_kept)
    assert await kept_scenario(mongoengine_async, parented, signalled, seed) == theirs


@pytest.mark.parametrize("signalled", [False, True], ids=["quiet", "receivers"])
async def test_a_root_kept_by_the_collation_stays_down_its_own_rule_s_chain(
    async_alias: str, sync_alias: Any, signalled: bool
) -> None:
    """DOOMED, matched by the collated queryset under its collation alone,
    reached again down the chain of the rule within the owners' collection
    (``parent``: a child, its link, the subclass's ``link``): MongoEngine's
    ``cascade_refs`` hold it from that rule on, so every query down its chain
    leaves it out: it stays, unsignalled. The async delete spared it only at
    that rule's own level: it was deleted (and sent ``post_delete``)."""

    async def seed(save: Any, owner: Any, link: Any, sub: Any) -> None:
        doomed = await save(owner(name="doomed"))
        child = await save(owner(name="child", parent=doomed))
        below = await save(link(name="below", owner=child))
        await save(sub(name="DOOMED", link=below))
        await save(owner(name="other"))

    theirs = await kept_scenario(mongoengine, True, signalled, seed)
    assert theirs == (1, ["DOOMED", "other"], [], [])
    assert await kept_scenario(mongoengine_async, True, signalled, seed) == theirs


async def test_a_root_kept_by_the_collation_goes_past_links_deleted_one_by_one(
    async_alias: str, sync_alias: Any
) -> None:
    """DOOMED, matched by the collated queryset under its collation alone,
    held by MongoEngine's ``cascade_refs`` from the ``parent`` rule on, is
    reached again through a link whose class has delete receivers:
    MongoEngine deletes each link with its own ``delete()``, whose
    ``cascade_refs`` start afresh, so the subclass's ``link`` CASCADE deletes
    DOOMED. The async delete still held it: DOOMED stayed."""

    async def seed(save: Any, owner: Any, link: Any, sub: Any) -> None:
        doomed = await save(owner(name="doomed"))
        first = await save(link(name="first", owner=doomed))
        await save(sub(name="DOOMED", link=first))
        await save(owner(name="other"))

    theirs = await kept_scenario(mongoengine, True, False, seed, True)
    assert theirs == (1, ["other"], [], ["first"])
    assert await kept_scenario(mongoengine_async, True, False, seed, True) == theirs


def filtered_denier_models(module: Any, alias: str) -> tuple[type, ...]:
    """An owner; parents (CASCADE from it, no rules); denied documents
    (CASCADE from it); the parents' subclass, whose ``denied`` has a DENY
    rule and whose manager matches kind "k" under a case-insensitive
    collation."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.collation(CASE_INSENSITIVE).filter(kind="k")

    owner = build(module, "DrpFdOwner", alias, {"name": module.StringField()})
    fields = {
        "kind": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
    }
    parent = owned(module, alias, "DrpFdParent", fields, {"allow_inheritance": True})
    ref = module.ReferenceField(owner, reverse_delete_rule=CASCADE)
    denied = build(module, "DrpFdDenied", alias, {"owner": ref})
    sub = type(
        f"DrpFdSub{uuid4().hex[:6]}",
        (parent,),
        {
            "__module__": __name__,
            "denied": module.ReferenceField(denied, reverse_delete_rule=DENY),
            "objects": module.queryset_manager(objects),
        },
    )
    return owner, parent, denied, sub


async def test_a_deny_referrer_its_parent_class_s_cascade_deletes_blocks_nothing(
    async_alias: str, sync_alias: Any
) -> None:
    """A subclass document (kind "K": its manager matches it under its
    collation alone) refers with DENY to a document the owner's delete
    cascades to; the parents' CASCADE (their plain manager) deletes it too:
    MongoEngine's walk deletes it first, and the delete goes through. The
    async DENY check counted it as left (its class's own CASCADE, read
    without the collation, does not match it): the delete was refused."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        owner, parent, denied, sub = filtered_denier_models(
            module, "default" if is_async else SYNC
        )

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        doomed = await save(owner(name="doomed"))
        target = await save(denied(owner=doomed))
        await save(sub(kind="K", owner=doomed, denied=target))
        try:
            result = await doomed.async_delete() if is_async else doomed.delete()
        except OperationError as error:
            result = outcome(error)[1]
        names = [cls._get_collection_name() for cls in (owner, parent, denied)]
        left = [len(await stored_by(is_async, name, "_id")) for name in names]
        return result, left

    theirs = await scenario(mongoengine)
    assert theirs == (None, [0, 0, 0])
    assert await scenario(mongoengine_async) == theirs


def hinted_chain_models(module: Any, alias: str, rule: int) -> tuple[type, ...]:
    """An owner; referrers (CASCADE) whose manager hints a sparse index on
    their ``kind``; leaves referring to them (``rule``)."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.hint("kind_1")

    owner = build(module, "DrpHcOwner", alias, {"name": module.StringField()})
    fields = {
        "name": module.StringField(),
        "kind": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
        "objects": module.queryset_manager(objects),
    }
    meta = {"indexes": [{"fields": ["kind"], "sparse": True}]}
    ref = owned(module, alias, "DrpHcRef", fields, meta)
    leaf_fields = {
        "name": module.StringField(),
        "ref": module.ReferenceField(ref, reverse_delete_rule=rule),
    }
    return owner, ref, owned(module, alias, "DrpHcLeaf", leaf_fields, {})


@pytest.mark.parametrize(
    "rule", [CASCADE, NULLIFY, DENY], ids=["cascade", "nullify", "deny"]
)
async def test_a_hinted_referrer_s_rules_apply_to_what_its_hint_lists(
    async_alias: str, sync_alias: Any, rule: int
) -> None:
    """A CASCADE to referrers (without receivers, with rules of their own)
    whose manager hints a sparse index: MongoEngine deletes all its filter
    matches (``delete_many``, sent without the hint), but applies their
    class's rules only to those its iteration through the hint lists (the
    referrer with a ``kind``): the leaf of the other is left as it was, and
    a DENY on it alone lets the delete through. The async delete applied the
    rules to all it deleted: it cascaded to, nullified, or was refused by
    that leaf too."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        owner, ref, leaf = hinted_chain_models(module, alias, rule)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        doomed = await save(owner(name="doomed"))
        for kind in ["live", None]:
            referrer = await save(ref(name=f"ref-{kind}", kind=kind, owner=doomed))
            if kind is None or rule != DENY:  # (a DENY on the unlisted one alone)
                await save(leaf(name=f"leaf-{kind}", ref=referrer))
        try:
            result = await doomed.async_delete() if is_async else doomed.delete()
        except OperationError as error:
            result = outcome(error)[1].replace(leaf.__name__, short(leaf))
        refs = await stored_by(is_async, ref._get_collection_name(), "name")
        leaves = await stored_by(is_async, leaf._get_collection_name(), "name")
        return (
            result,
            [each["name"] for each in refs],
            [(each["name"], "ref" in each) for each in leaves],
        )

    theirs = await scenario(mongoengine)
    listed = [] if rule == CASCADE else [("leaf-live", False)]
    expected = [("leaf-None", True)] + (listed if rule != DENY else [])
    assert theirs == (None, [], expected)
    assert await scenario(mongoengine_async) == theirs


def hinted_root_models(
    module: Any, alias: str, rule: int, parented: bool = False
) -> tuple[type, type]:
    """Owners with a sparse index on their ``kind`` and a ``FileField`` (and
    a ``parent``, CASCADE, when ``parented``); referrers (``rule``)."""
    fields = {
        "name": module.StringField(),
        "kind": module.StringField(),
        "file": module.FileField(db_alias=alias),
    }
    if parented:
        fields["parent"] = module.ReferenceField("self", reverse_delete_rule=CASCADE)
    meta = {"indexes": [{"fields": ["kind"], "sparse": True}]}
    owner = owned(module, alias, "DrpHrOwner", fields, meta)
    ref_fields = {
        "name": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=rule),
    }
    return owner, owned(module, alias, "DrpHrRef", ref_fields, {})


@pytest.mark.parametrize("transaction", [True, False], ids=["own", "none"])
@pytest.mark.parametrize("filed", [False, True], ids=["fileless", "filed"])
@pytest.mark.parametrize(
    "rule", [CASCADE, NULLIFY, DENY], ids=["cascade", "nullify", "deny"]
)
async def test_a_hinted_queryset_s_rules_apply_to_what_its_hint_lists(
    async_alias: str, sync_alias: Any, rule: int, filed: bool, transaction: bool
) -> None:
    """A queryset delete through its own ``hint()`` of a sparse index:
    MongoEngine deletes all its filter matches (``delete_many``, sent without
    the hint), but applies the rules only to those its iteration through the
    hint lists (the owner with a ``kind``): the referrer of the other is left
    as it was, and a DENY on it alone lets the delete through. The async
    delete applied the rules to all it deleted: it cascaded to, nullified, or
    was refused by that referrer too."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        owner, ref = hinted_root_models(module, alias, rule)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        for kind in ["live", None]:
            kept = owner(name=f"owner-{kind}", kind=kind)
            if filed:
                if is_async:
                    await kept.file.async_put(b"x", filename=f"file-{kind}")
                else:
                    kept.file.put(b"x", filename=f"file-{kind}")
            await save(kept)
            if kind is None or rule != DENY:  # (a DENY on the unlisted one alone)
                await save(ref(name=f"ref-{kind}", owner=kept))
        matching = owner.objects(name__startswith="owner").hint("kind_1")
        try:
            if is_async:
                result = await matching.async_delete(transaction=transaction)
            else:
                result = matching.delete()
        except OperationError as error:
            result = outcome(error)[1].replace(ref.__name__, short(ref))
        owners = await stored_by(is_async, owner._get_collection_name(), "name")
        refs = await stored_by(is_async, ref._get_collection_name(), "name")
        files = await stored_by(is_async, "fs.files", "filename")
        return (
            result,
            [each["name"] for each in owners],
            [(each["name"], "owner" in each) for each in refs],
            [each["filename"] for each in files],
        )

    theirs = await scenario(mongoengine)
    files = ["file-None", "file-live"] if filed else []
    if rule == NULLIFY:
        assert theirs == (2, [], [("ref-None", True), ("ref-live", False)], files)
    else:
        assert theirs == (2, [], [("ref-None", True)], files)
    # (The async delete deletes the files of the documents it deleted.)
    assert await scenario(mongoengine_async) == (*theirs[:3], [])


@pytest.mark.parametrize("transaction", [True, False], ids=["own", "none"])
async def test_a_root_its_hint_leaves_out_reached_by_a_rule_as_mongoengine(
    async_alias: str, sync_alias: Any, transaction: bool
) -> None:
    """Owners a (listed through the queryset's ``hint()``) and u (left out,
    ``parent`` a, with a file and a leaf, CASCADE both): MongoEngine's
    ``parent`` rule reaches u (its ``cascade_refs`` hold what the iteration
    listed), applies u's rules (its leaf deleted) and deletes it, before
    the queryset's ``delete_many`` deletes a alone: 1. The async delete does
    the same (and deletes u's file)."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        owner, leaf = hinted_root_models(module, alias, CASCADE, parented=True)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        listed = await save(owner(name="a", kind="live"))
        unlisted = await save(owner(name="u", parent=listed))
        if is_async:
            await unlisted.file.async_put(b"x", filename="u")
        else:
            unlisted.file.put(b"x", filename="u")
        await save(unlisted)
        await save(leaf(name="leaf-u", owner=unlisted))
        await save(owner(name="z"))
        matching = owner.objects(name__in=["a", "u"]).hint("kind_1")
        if is_async:
            result = await matching.async_delete(transaction=transaction)
        else:
            result = matching.delete()
        owners = await stored_by(is_async, owner._get_collection_name(), "name")
        leaves = await stored_by(is_async, leaf._get_collection_name(), "name")
        files = await stored_by(is_async, "fs.files", "filename")
        return (
            result,
            [each["name"] for each in owners],
            [each["name"] for each in leaves],
            [each["filename"] for each in files],
        )

    theirs = await scenario(mongoengine)
    assert theirs == (1, ["z"], [], ["u"])
    assert await scenario(mongoengine_async) == (*theirs[:3], [])


HINTS = {
    "name": "kind_1",
    "keys": {"kind": 1},
    "pairs": [("kind", 1)],
    "not sparse": "_id_",
    "no such index": "nope_1",
}


@pytest.mark.parametrize("ruled", [False, True], ids=["no rules", "nullify"])
@pytest.mark.parametrize("hint", list(HINTS))
async def test_a_hinted_queryset_delete_as_mongoengine_s_whatever_its_hint(
    async_alias: str, sync_alias: Any, hint: str, ruled: bool
) -> None:
    """A queryset delete through its ``hint()``, given as an index name, as
    keys or as pairs, of a sparse index (the owner without a ``kind`` left
    out), of one holding every document, or of no index: what MongoEngine's
    delete returns or raises (through no index its iteration fails, so only
    with rules, nothing changed), deletes and nullifies."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        owner, ref = hinted_root_models(module, alias, NULLIFY if ruled else DO_NOTHING)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        for kind in ["live", None]:
            kept = await save(owner(name=f"owner-{kind}", kind=kind))
            await save(ref(name=f"ref-{kind}", owner=kept))
        matching = owner.objects(name__startswith="owner").hint(HINTS[hint])
        try:
            result = await matching.async_delete() if is_async else matching.delete()
        except OperationFailure as error:
            result = (type(error), error.code, "existing index" in str(error))
        owners = await stored_by(is_async, owner._get_collection_name(), "name")
        refs = await stored_by(is_async, ref._get_collection_name(), "name")
        return (
            result,
            [each["name"] for each in owners],
            [(each["name"], "owner" in each) for each in refs],
        )

    theirs = await scenario(mongoengine)
    if hint == "no such index" and ruled:
        assert theirs[0] == (OperationFailure, 2, True)
        assert theirs[1] == ["owner-None", "owner-live"]
    else:
        assert theirs[:2] == (2, [])
    assert await scenario(mongoengine_async) == theirs


def kept_below_models(module: Any, alias: str) -> tuple[type, ...]:
    """Owners; middles (CASCADE from an owner; ``parent``, a rule within their
    collection), whose manager matches ``kind="live"`` under a
    case-insensitive collation; links (CASCADE from an owner, after the
    middles' rule); and others, in the middles' collection, whose ``link``
    cascades from a link."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.collation(CASE_INSENSITIVE).filter(kind="live")

    owner = owned(module, alias, "DrpKbOwner", {"name": module.StringField()}, {})
    shared = {"collection": f"drp_kb_{uuid4().hex[:6]}", "strict": False}
    middle_fields = {
        "name": module.StringField(),
        "kind": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
        "parent": module.ReferenceField("self", reverse_delete_rule=CASCADE),
        "objects": module.queryset_manager(objects),
    }
    middle = owned(module, alias, "DrpKbMid", middle_fields, shared)
    link_fields = {
        "name": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
    }
    link = owned(module, alias, "DrpKbLink", link_fields, {})
    other_fields = {
        "name": module.StringField(),
        "link": module.ReferenceField(link, reverse_delete_rule=CASCADE),
    }
    other = owned(module, alias, "DrpKbOther", other_fields, shared)
    return owner, middle, link, other


async def kept_below_scenario(module: Any, through: str) -> tuple[Any, ...]:
    """With :func:`kept_below_models`: an owner, middles "a" (live) and "B"
    (LIVE) of it, a link of it, which B's stored ``link`` refers to (so B is
    an other too); the owner deleted (as a document or a queryset): the
    result, the names of the middles' collection and of the links left."""
    is_async = module is mongoengine_async
    alias = "default" if is_async else SYNC
    owner, middle, link, other = kept_below_models(module, alias)

    async def save(document: Any) -> Any:
        return await document.async_save() if is_async else document.save()

    doomed = await save(owner(name="doomed"))
    await save(middle(name="a", kind="live", owner=doomed))
    kept = await save(middle(name="B", kind="LIVE", owner=doomed))
    first = await save(link(name="first", owner=doomed))
    update = {"$set": {"link": first.pk}}
    name = other._get_collection_name()
    if is_async:
        await get_async_db()[name].update_one({"_id": kept.pk}, update)
    else:
        mongoengine.get_db(SYNC)[name].update_one({"_id": kept.pk}, update)
    if through == "document":
        result = await doomed.async_delete() if is_async else doomed.delete()
    else:
        matching = owner.objects(name="doomed")
        result = await matching.async_delete() if is_async else matching.delete()
    middles = await stored_by(is_async, middle._get_collection_name(), "name")
    links = await stored_by(is_async, link._get_collection_name(), "name")
    return result, [each["name"] for each in middles], [each["name"] for each in links]


@pytest.mark.parametrize("through", ["document", "queryset"])
async def test_a_document_a_manager_s_collation_keeps_stays_when_reached_again(
    async_alias: str, sync_alias: Any, through: str
) -> None:
    """B, a middle the owner's CASCADE matches under the middles' manager's
    collation alone (kept by its ``delete_many``), is reached again through a
    link (CASCADE from the owner, after the middles' rule) as an other (the
    same collection): MongoEngine's middles' delete, whose class has a rule
    within its collection (``parent``), added what its iteration listed to
    ``cascade_refs``, which the later queries leave out: B stays. The async
    delete spared it only below the root: the others' filter deleted it."""
    theirs = await kept_below_scenario(mongoengine, through)
    assert theirs[1:] == (["B"], [])
    assert await kept_below_scenario(mongoengine_async, through) == theirs


def hinted_reached_models(module: Any, alias: str, first: str) -> tuple[type, ...]:
    """Owners; links and referrers (CASCADE from an owner, in the order
    ``first`` says); referrers hinting a sparse index on their ``kind``;
    others, in the referrers' collection, whose ``link`` cascades from a
    link; leaves, whose ``ref`` and ``other`` cascade from either."""

    def objects(document: type, queryset: Any) -> Any:
        return queryset.hint("kind_1")

    owner = owned(module, alias, "DrpHrOwner", {"name": module.StringField()}, {})
    shared = {"collection": f"drp_hr_{uuid4().hex[:6]}", "strict": False}
    fields = {
        "name": module.StringField(),
        "owner": module.ReferenceField(owner, reverse_delete_rule=CASCADE),
    }
    ref_fields = {
        **fields,
        "kind": module.StringField(),
        "objects": module.queryset_manager(objects),
    }
    ref_meta = {**shared, "indexes": [{"fields": ["kind"], "sparse": True}]}
    if first == "link":
        link = owned(module, alias, "DrpHrLink", fields, {})
    ref = owned(module, alias, "DrpHrRef", ref_fields, ref_meta)
    if first == "ref":
        link = owned(module, alias, "DrpHrLink", fields, {})
    other_fields = {
        "name": module.StringField(),
        "link": module.ReferenceField(link, reverse_delete_rule=CASCADE),
    }
    other = owned(module, alias, "DrpHrOther", other_fields, shared)
    leaf_fields = {
        "name": module.StringField(),
        "ref": module.ReferenceField(ref, reverse_delete_rule=CASCADE),
        "other": module.ReferenceField(other, reverse_delete_rule=CASCADE),
    }
    leaf = owned(module, alias, "DrpHrLeaf", leaf_fields, {})
    return owner, link, ref, other, leaf


@pytest.mark.parametrize("first", ["link", "ref"])
async def test_a_document_a_manager_s_hint_leaves_out_reached_again(
    async_alias: str, sync_alias: Any, first: str
) -> None:
    """Referrers "listed" (with a ``kind``) and "unlisted" (without, left out
    of the sparse index their manager hints) of a doomed owner; "unlisted" is
    an other too (its stored ``link``), of the owner's link; a leaf of each
    referrer (``ref``) and one of "unlisted" as an other (``other``).
    MongoEngine's referrers' delete applies their rules to what its
    iteration through the hint lists and deletes all its filter matches;
    reaching "unlisted" as an other first (the links' rule first), it
    applies the others' rules to it; after (the referrers' rule first), it
    finds it gone."""

    async def scenario(module: Any) -> tuple[Any, ...]:
        is_async = module is mongoengine_async
        alias = "default" if is_async else SYNC
        owner, link, ref, other, leaf = hinted_reached_models(module, alias, first)

        async def save(document: Any) -> Any:
            return await document.async_save() if is_async else document.save()

        doomed = await save(owner(name="doomed"))
        listed = await save(ref(name="listed", kind="live", owner=doomed))
        unlisted = await save(ref(name="unlisted", owner=doomed))
        first_link = await save(link(name="link", owner=doomed))
        update = {"$set": {"link": first_link.pk}}
        collection = other._get_collection_name()
        if is_async:
            await get_async_db()[collection].update_one({"_id": unlisted.pk}, update)
        else:
            database = mongoengine.get_db(SYNC)
            database[collection].update_one({"_id": unlisted.pk}, update)
        await save(leaf(name="leaf-listed", ref=listed))
        await save(leaf(name="leaf-unlisted", ref=unlisted))
        await save(leaf(name="leaf-other", other=unlisted.pk))
        result = await doomed.async_delete() if is_async else doomed.delete()
        refs = await stored_by(is_async, ref._get_collection_name(), "name")
        leaves = await stored_by(is_async, leaf._get_collection_name(), "name")
        return result, [each["name"] for each in refs], [e["name"] for e in leaves]

    theirs = await scenario(mongoengine)
    expected = {"link": [], "ref": ["leaf-other"]}
    assert theirs == (None, [], [*expected[first], "leaf-unlisted"])
    assert await scenario(mongoengine_async) == theirs


class InsertBeforeSecondFind(monitoring.CommandListener):
    """As the second ``find`` of ``collection`` starts, inserts each document
    of ``inserts`` into its (sync client's) collection: the delete reads once
    before and once after them."""

    def __init__(self, collection: str, inserts: list[tuple[Any, dict]]) -> None:
        self.collection = collection
        self.inserts = inserts
        self.finds: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name != "find" or event.command["find"] != self.collection:
            return
        self.finds.append(event.command)
        if len(self.finds) == 2:
            for target, document in self.inserts:
                target.insert_one(document)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize("filed", [False, True], ids=["plain", "file_field"])
async def test_a_document_matching_between_a_collated_delete_s_reads(
    mongodb_uri: str, filed: bool
) -> None:
    """Outside a transaction a collated queryset delete lists its matches
    under the collation (for its rules) and its roots' ids (what it deletes)
    in two reads (with file fields, the ids with the files first). A "doomed"
    inserted before the second read is deleted without its rules applied
    (its referrer stays), as one inserted after MongoEngine's rules read and
    before its ``delete_many``; with file fields, after the ids were read, it
    is left alone. The listing came second, or was taken as is: the new one
    was kept, matching the delete, its referrer deleted."""

    class DrpBetweenOwner(mongoengine_async.Document):
        name = mongoengine_async.StringField()
        if filed:
            file = mongoengine_async.FileField(db_alias="drp_between")
        meta = {"db_alias": "drp_between"}

    class DrpBetweenRef(mongoengine_async.Document):
        name = mongoengine_async.StringField()
        owner = mongoengine_async.ReferenceField(
            DrpBetweenOwner, reverse_delete_rule=CASCADE
        )
        meta = {"db_alias": "drp_between"}

    owners = DrpBetweenOwner._get_collection_name()
    listener = InsertBeforeSecondFind(owners, [])
    async with fresh_database("drp_between", mongodb_uri, event_listeners=[listener]):
        doomed = await DrpBetweenOwner(name="doomed").async_save()
        await DrpBetweenRef(name="ref-doomed", owner=doomed).async_save()
        database = pymongo.MongoClient(mongodb_uri)[get_async_db("drp_between").name]
        later = ObjectId()
        listener.inserts = [
            (database[owners], {"_id": later, "name": "doomed"}),
            (
                database[DrpBetweenRef._get_collection_name()],
                {"name": "ref-later", "owner": later},
            ),
        ]
        try:
            matching = DrpBetweenOwner.objects(name="doomed")
            deleted = await matching.collation(CASE_INSENSITIVE).async_delete(
                transaction=False
            )
        finally:
            database.client.close()
        collated = ["collation" in find for find in listener.finds]
        left = [owner.pk async for owner in DrpBetweenOwner.objects]
        assert (deleted, left) == ((1, [later]) if filed else (2, []))
        refs = [ref.name async for ref in DrpBetweenRef.objects]
        assert refs == ["ref-later"]
        # (With file fields, a read of the kept one: it matches now.)
        assert collated == ([False, True, False, False] if filed else [True, False])


async def deny_order_scenario(module: Any) -> tuple[Any, list[int]]:
    """A publisher; books and magazines (CASCADE from it, in that order);
    chapters (CASCADE from a book); a chapter's quote and a magazine's ad,
    each with a DENY rule. The publisher's delete: its error's message (the
    classes' suffixes left out), the number of documents left per class."""
    is_async = module is mongoengine_async
    alias = "default" if is_async else SYNC

    def referring(prefix: str, target: type, rule: int) -> type:
        ref = module.ReferenceField(target, reverse_delete_rule=rule)
        return build(module, prefix, alias, {"ref": ref})

    publisher = build(module, "DrpDoPublisher", alias, {})
    book = referring("DrpDoBook", publisher, CASCADE)
    magazine = referring("DrpDoMagazine", publisher, CASCADE)
    chapter = referring("DrpDoChapter", book, CASCADE)
    quote = referring("DrpDoQuote", chapter, DENY)
    ad = referring("DrpDoAd", magazine, DENY)
    classes = [publisher, book, magazine, chapter, quote, ad]

    async def save(document: Any) -> Any:
        return await document.async_save() if is_async else document.save()

    acme = await save(publisher())
    await save(quote(ref=await save(chapter(ref=await save(book(ref=acme))))))
    await save(ad(ref=await save(magazine(ref=acme))))
    with pytest.raises(OperationError) as error:
        await acme.async_delete() if is_async else acme.delete()
    message = str(error.value)
    for cls in classes:
        message = message.replace(cls.__name__, cls.__name__[:-6])
    counts = [
        len(await stored_by(is_async, cls._get_collection_name(), "_id"))
        for cls in classes
    ]
    return message, counts


async def test_deny_rules_refusing_deep_and_shallow_name_mongoengine_s_first(
    async_alias: str, sync_alias: Any
) -> None:
    """Two DENY rules refuse a delete: one two levels down the first CASCADE
    (a book's chapter's quote), one a level down the second (a magazine's
    ad). MongoEngine walks the rules depth first, and names the quote's; the
    async delete checked them level by level, and named the ad's."""
    theirs = await deny_order_scenario(mongoengine)
    message = "Could not delete document (DrpDoQuote.ref refers to it)"
    assert theirs == (message, [1, 1, 1, 1, 1, 1])
    assert await deny_order_scenario(mongoengine_async) == theirs


async def kept_per_document_scenario(module: Any) -> tuple[Any, ...]:
    """An account; its links (CASCADE, delete receivers: deleted one by one);
    notes (a base class, plain manager) cascading from a mark (CASCADE from a
    link); the notes' subclass, its manager matching kind "k" under a
    case-insensitive collation, cascading from a link and from itself. One
    kind "K" note refers to the first link (its subclass's read lists it, its
    ``delete_many`` keeps it) and to the second link's mark. The account's
    delete: its result, the names left per class, the links signalled."""
    is_async = module is mongoengine_async
    alias = "default" if is_async else SYNC

    def objects(document: type, queryset: Any) -> Any:
        return queryset.collation(CASE_INSENSITIVE).filter(kind="k")

    def ref(target: Any, rule: int = DO_NOTHING) -> Any:
        return module.ReferenceField(target, reverse_delete_rule=rule)

    named = {"name": module.StringField()}
    account = build(module, "DrpKpdAccount", alias, named)
    link = build(
        module, "DrpKpdLink", alias, {**named, "account": ref(account, CASCADE)}
    )
    mark = build(module, "DrpKpdMark", alias, {**named, "link": ref(link)})
    fields = {**named, "kind": module.StringField(), "mark": ref(mark, CASCADE)}
    note = owned(module, alias, "DrpKpdNote", fields, {"allow_inheritance": True})
    sub = type(
        f"DrpKpdSub{uuid4().hex[:6]}",
        (note,),
        {
            "__module__": __name__,
            "link": ref(link),
            "parent": ref("self", CASCADE),
            "objects": module.queryset_manager(objects),
        },
    )
    # (The subclass's rule first: it keeps the note before the mark's rule.)
    link.register_delete_rule(sub, "link", CASCADE)
    link.register_delete_rule(mark, "link", CASCADE)

    async def save(document: Any) -> Any:
        return await document.async_save() if is_async else document.save()

    acme = await save(account(name="acme"))
    first = await save(link(name="first", account=acme))
    second = await save(link(name="second", account=acme))
    marked = await save(mark(name="marked", link=second))
    await save(sub(name="kept", kind="K", link=first, mark=marked))
    seen: list = []

    def noted(sender: Any, document: Any, **kwargs: Any) -> None:
        seen.append(document.name)

    sigs = mongoengine_async.signals if is_async else signals
    with receiving(sigs.post_delete, noted, link):
        result = await acme.async_delete() if is_async else acme.delete()
    left = [
        [each["name"] for each in await stored_by(is_async, name, "name")]
        for name in [cls._get_collection_name() for cls in (account, link, mark, note)]
    ]
    return result, left, seen


async def test_a_kept_document_reached_through_two_documents_deleted_one_by_one(
    async_alias: str, sync_alias: Any
) -> None:
    """MongoEngine deletes each link with its own ``delete()``, whose
    ``cascade_refs`` start afresh: below the first link the subclass's rule
    lists the kind "K" note (its ``delete_many`` keeps it) and holds it, below
    the second the mark's rule reaches it through the notes' plain manager,
    holding nothing yet: it is deleted. The async delete held it from the
    first link's rule for the second's too: it stayed."""
    theirs = await kept_per_document_scenario(mongoengine)
    assert theirs == (None, [[], [], [], []], ["first", "second"])
    assert await kept_per_document_scenario(mongoengine_async) == theirs
