"""A delete with delete rules over more documents than one command can name
(some 700,000 ids are over the server's 16 MB limit) sends its ids, and the
references its rules look for, in runs of LISTED_IDS_BYTES at most: the same
documents deleted, nullified and pulled, the same count, in one transaction.

The run size is patched so that a few ids make several runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId

import mongoengine_async.delete_rules
import mongoengine_async.gridfs
from mongoengine_async import (
    CASCADE,
    DENY,
    NULLIFY,
    PULL,
    Document,
    FileField,
    GenericReferenceField,
    ListField,
    OperationError,
    ReferenceField,
    StringField,
    get_async_db,
)
from mongoengine_async.testing import CommandLog

# Two ids a run: an ObjectId array element is 12 bytes, a type and a short key.
TWO_IDS = 2 * 21


class DruAuthor(Document):
    name = StringField()


class DruBook(Document):
    """Needs its ids (chapters cascade from it): found by id, in runs."""

    title = StringField()
    author = ReferenceField(DruAuthor, reverse_delete_rule=CASCADE)


class DruChapter(Document):
    """A leaf: deleted by its rule's filter, one a run."""

    title = StringField()
    book = ReferenceField(DruBook, reverse_delete_rule=CASCADE)


class DruNote(Document):
    text = StringField()
    author = ReferenceField(DruAuthor, reverse_delete_rule=NULLIFY)


class DruShelf(Document):
    owner = StringField()
    authors = ListField(ReferenceField(DruAuthor, reverse_delete_rule=PULL))


class DruMention(Document):
    """Stores DBRefs: its runs are cut on those, not on the ids."""

    text = StringField()
    about = GenericReferenceField()


DruAuthor.register_delete_rule(DruMention, "about", CASCADE)


def _lists_in(value: Any) -> Iterator[list]:
    """Every ``$in`` and ``$nin`` list in a command (queries and updates)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("$in", "$nin"):
                yield item
            else:
                yield from _lists_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _lists_in(item)


async def _library() -> dict[str, Any]:
    """Five doomed authors, each with what refers to them, and one kept."""
    doomed = [await DruAuthor(name=f"doomed {n}").async_save() for n in range(5)]
    kept = await DruAuthor(name="kept").async_save()
    for author in [*doomed, kept]:
        book = await DruBook(title=f"by {author.name}", author=author).async_save()
        await DruChapter(title=f"of {author.name}", book=book).async_save()
        await DruNote(text=f"on {author.name}", author=author).async_save()
        await DruMention(text=f"of {author.name}", about=author).async_save()
    await DruShelf(owner="all", authors=[*doomed, kept]).async_save()
    return {"doomed": doomed, "kept": kept}


async def _left() -> dict[str, Any]:
    """What the collections hold after the delete, read back raw."""
    db = get_async_db()

    async def raw(cls: type[Any]) -> list[dict]:
        return await db[cls._get_collection_name()].find().to_list(None)

    return {
        "authors": [each["name"] for each in await raw(DruAuthor)],
        "books": [each["title"] for each in await raw(DruBook)],
        "chapters": [each["title"] for each in await raw(DruChapter)],
        "notes": {each["text"]: each.get("author") for each in await raw(DruNote)},
        "mentions": [each["text"] for each in await raw(DruMention)],
        "shelf": [each["authors"] for each in await raw(DruShelf)],
    }


@pytest.mark.parametrize("run_bytes", [None, TWO_IDS], ids=["one-run", "two-ids"])
async def test_a_queryset_delete_with_rules_sends_its_ids_in_runs(
    async_alias: str,
    command_log: CommandLog,
    monkeypatch: pytest.MonkeyPatch,
    run_bytes: int | None,
) -> None:
    library = await _library()
    doomed, kept = library["doomed"], library["kept"]
    if run_bytes is not None:
        monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", run_bytes)
    command_log.clear()

    assert await DruAuthor.objects(name__startswith="doomed").async_delete() == 5
    names = command_log.names
    events = [e for e in command_log.events if e.command_name != "commitTransaction"]

    assert await _left() == {
        "authors": ["kept"],
        "books": ["by kept"],
        "chapters": ["of kept"],
        "notes": {
            **{f"on {author.name}": None for author in doomed},
            "on kept": kept.pk,
        },
        "mentions": ["of kept"],
        "shelf": [[kept.pk]],
    }
    assert names[-1] == "commitTransaction"
    assert names.count("commitTransaction") == 1
    # The plan's reads and every write in one transaction.
    assert len({(e.command["lsid"]["id"], e.command["txnNumber"]) for e in events}) == 1
    root_deletes = [
        e.command["deletes"][0]["q"]["_id"]["$in"]
        for e in events
        if e.command_name == "delete" and e.command["delete"] == "dru_author"
    ]
    assert [pk for run in root_deletes for pk in run] == [each.pk for each in doomed]
    if run_bytes is None:
        assert len(root_deletes) == 1
        return
    assert [len(run) for run in root_deletes] == [2, 2, 1]
    # Every list sent names two values at most (ids, DBRefs: two DBRefs are
    # over the run's bytes, so one each), whatever the command: the books
    # planned are left out by the server while they fit in a run, then as
    # they are read.
    sent = [each for e in events for each in _lists_in(e.command)]
    assert max(map(len, sent)) == 2
    for name in ("find", "update", "delete"):
        for e in events:
            if e.command_name == name:
                assert all(len(each) <= 2 for each in _lists_in(e.command))


async def test_a_deny_found_in_a_later_run_refuses_the_delete(
    async_alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DENY check looks in every run: a referrer of the last author
    refuses the delete, and nothing is changed."""

    class DruGuard(Document):
        author = ReferenceField(DruAuthor, reverse_delete_rule=DENY)

    try:
        library = await _library()
        await DruGuard(author=library["doomed"][-1]).async_save()
        before = await _left()
        monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", TWO_IDS)
        with pytest.raises(OperationError) as raised:
            await DruAuthor.objects(name__startswith="doomed").async_delete()
        assert str(raised.value) == (
            "Could not delete document (DruGuard.author refers to it)"
        )
        assert await _left() == before
    finally:
        del DruAuthor._meta["delete_rules"][(DruGuard, "author")]


async def test_the_runs_are_cut_on_the_stored_references(
    async_alias: str, command_log: CommandLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generic reference's DBRefs are larger than the ids: a run holds
    as many as fit, not as many ids as fit."""
    library = await _library()
    monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", TWO_IDS)
    command_log.clear()
    assert await DruAuthor.objects(name__startswith="doomed").async_delete() == 5
    mentions = [
        run
        for e in list(command_log.events)
        if e.command_name == "delete" and e.command["delete"] == "dru_mention"
        for run in _lists_in(e.command)
    ]
    assert [[ref.id for ref in run] for run in mentions] == [
        [author.pk] for author in library["doomed"]
    ]
    assert all(isinstance(ref.id, ObjectId) for run in mentions for ref in run)
    assert (await _left())["mentions"] == ["of kept"]


@pytest.mark.parametrize("kept_blurb", [False, True], ids=["all-planned", "one-kept"])
async def test_a_deny_check_leaves_out_more_planned_referrers_than_a_run_holds(
    async_alias: str,
    command_log: CommandLog,
    monkeypatch: pytest.MonkeyPatch,
    kept_blurb: bool,
) -> None:
    """A DENY referrer the same cascade deletes does not block, though the
    planned ones are too many to leave out in the query; one it keeps does."""

    class DruBlurb(Document):
        text = StringField()
        author = ReferenceField(DruAuthor, reverse_delete_rule=CASCADE)
        book = ReferenceField(DruBook, reverse_delete_rule=DENY)

    try:
        library = await _library()
        books = {each.author.pk: each for each in await DruBook.objects.async_to_list()}
        for author in library["doomed"]:
            await DruBlurb(
                text="own", author=author, book=books[author.pk]
            ).async_save()
        if kept_blurb:
            doomed_book = books[library["doomed"][-1].pk]
            await DruBlurb(
                text="kept", author=library["kept"], book=doomed_book
            ).async_save()
        monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", TWO_IDS)
        before = await _left()
        command_log.clear()
        if kept_blurb:
            with pytest.raises(OperationError) as raised:
                await DruAuthor.objects(name__startswith="doomed").async_delete()
            assert str(raised.value) == (
                "Could not delete document (DruBlurb.book refers to it)"
            )
            assert await _left() == before
        else:
            assert (
                await DruAuthor.objects(name__startswith="doomed").async_delete() == 5
            )
            assert (await _left())["authors"] == ["kept"]
        blurbs = await get_async_db().dru_blurb.find().to_list(None)
        expected = ["own"] * 5 + ["kept"] if kept_blurb else []
        assert [each["text"] for each in blurbs] == expected
        sent = [each for e in command_log.events for each in _lists_in(e.command)]
        assert max(map(len, sent)) == 2
    finally:
        del DruAuthor._meta["delete_rules"][(DruBlurb, "author")]
        del DruBook._meta["delete_rules"][(DruBlurb, "book")]


class DruArtist(Document):
    """Holds files: its queryset delete lists the ids of its matches first."""

    name = StringField()
    data = FileField(collection_name="dru_files")


class DruWork(Document):
    title = StringField()
    artist = ReferenceField(DruArtist, reverse_delete_rule=CASCADE)


async def test_the_listed_ids_of_a_class_with_files_go_in_runs_in_one_plan(
    async_alias: str, command_log: CommandLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class with files and rules: the matches are read once, their files
    with their ids, in the delete's transaction, and deleted by those ids in
    runs, in one plan, with their files and their works."""
    artists = []
    for name in ["doomed 0", "doomed 1", "doomed 2", "kept"]:
        artist = DruArtist(name=name)
        await artist.data.async_put(name.encode())
        artists.append(await artist.async_save())
        await DruWork(title=f"by {name}", artist=artist).async_save()
    monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", TWO_IDS)
    command_log.clear()

    assert await DruArtist.objects(name__startswith="doomed").async_delete() == 3
    events = list(command_log.events)

    assert command_log.names.count("commitTransaction") == 1
    reads = [
        e.command["filter"]
        for e in events
        if e.command_name == "find" and e.command["find"] == "dru_artist"
    ]
    assert reads == [DruArtist.objects(name__startswith="doomed")._query]
    deletes = [
        e.command["deletes"][0]["q"]["_id"]["$in"]
        for e in events
        if e.command_name == "delete" and e.command["delete"] == "dru_artist"
    ]
    assert deletes == [[a.pk for a in artists[:2]], [artists[2].pk]]
    assert [e["name"] for e in await get_async_db().dru_artist.find().to_list()] == [
        "kept"
    ]
    assert [e["title"] for e in await get_async_db().dru_work.find().to_list()] == [
        "by kept"
    ]
    chunks = await get_async_db()["dru_files.chunks"].find().to_list()
    assert [each["data"] for each in chunks] == [b"kept"]


@pytest.mark.parametrize("run_bytes", [None, TWO_IDS], ids=["one-run", "two-ids"])
async def test_the_ids_cascade_refs_spare_go_in_runs_too(
    async_alias: str,
    command_log: CommandLog,
    monkeypatch: pytest.MonkeyPatch,
    run_bytes: int | None,
) -> None:
    """Chapters, deleted by their rule's filter, leave out the spared ones
    in the query while they fit in a run; past one, the chapters are read
    and the spared ones left out as they are (one ``$nin`` of them all would
    be refused past some 700,000 ids)."""
    library = await _library()
    doomed = [each.pk for each in library["doomed"]]
    spared = {
        each["_id"]
        for each in await get_async_db().dru_chapter.find().to_list(None)
        if each["title"] in ("of doomed 0", "of doomed 2", "of doomed 3")
    }
    if run_bytes is not None:
        monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", run_bytes)
    command_log.clear()

    deleting = DruAuthor.objects(name__startswith="doomed")
    assert await deleting.async_delete(cascade_refs=set(spared)) == 5

    left = await _left()
    assert left["chapters"] == ["of doomed 0", "of doomed 2", "of doomed 3", "of kept"]
    assert left["books"] == ["by kept"]
    assert left["authors"] == ["kept"]
    sent = [each for e in command_log.events for each in _lists_in(e.command)]
    chapter_deletes = [
        e.command["deletes"][0]["q"]
        for e in command_log.events
        if e.command_name == "delete" and e.command["delete"] == "dru_chapter"
    ]
    if run_bytes is None:  # one delete by the rule's filter
        [query] = chapter_deletes
        assert query == {"book": query["book"], "_id": {"$nin": query["_id"]["$nin"]}}
        assert set(query["_id"]["$nin"]) == spared
        assert max(map(len, sent)) == len(doomed)
    else:  # by the ids read, two a run, the spared ones never sent
        assert max(map(len, sent)) == 2
        assert not any(pk in spared for each in sent for pk in each)
        assert [len(q["_id"]["$in"]) for q in chapter_deletes] == [2]


async def test_the_spared_ids_past_a_run_are_measured_once_a_delete(
    async_alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the ids ``cascade_refs`` spares fit in a run is measured once
    a delete, not again for each CASCADE rule, class and level, and each run
    of references (some 56 ms each at 700,000 ids); the same documents are
    deleted and spared."""
    await _library()
    spared = {
        each["_id"]
        for each in await get_async_db().dru_chapter.find().to_list(None)
        if each["title"] in ("of doomed 0", "of doomed 2", "of doomed 3")
    }
    monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", TWO_IDS)
    measured: list[list] = []

    def id_runs(values: list, codec_options: Any) -> list[list]:
        measured.append(list(values))
        return mongoengine_async.gridfs.id_runs(values, codec_options)

    monkeypatch.setattr(mongoengine_async.delete_rules, "id_runs", id_runs)
    deleting = DruAuthor.objects(name__startswith="doomed")
    assert await deleting.async_delete(cascade_refs=set(spared)) == 5

    assert sum(spared <= set(values) for values in measured) == 1
    left = await _left()
    assert left["chapters"] == ["of doomed 0", "of doomed 2", "of doomed 3", "of kept"]
    assert left["books"] == ["by kept"]
    assert left["mentions"] == ["of kept"]
