"""Operator dicts as plain query values, and over-long regex texts, on async aliases."""

from __future__ import annotations

from uuid import uuid4

import pytest
from mongoengine.queryset import transform
from pymongo.errors import OperationFailure

import mongoengine_async
from mongoengine_async import (
    ConnectionFailure,
    DictField,
    Document,
    DynamicDocument,
    DynamicField,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    IntField,
    InvalidQueryError,
    ListField,
    MapField,
    Q,
    ReferenceField,
    StringField,
    connect_async,
    disconnect_async,
)
from mongoengine_async.connection import sanitize_filter_enabled
from mongoengine_async.query_values import MAX_REGEX_TEXT
from mongoengine_async.testing import fresh_database


class InjProfile(EmbeddedDocument):
    nick = StringField()


class InjUser(Document):
    name = StringField()
    password = StringField()
    age = IntField()
    friend = ReferenceField("self")
    tags = ListField(StringField())
    prefs = DictField()
    labels = MapField(StringField())
    scores = DictField(IntField())
    extra = DynamicField()
    profile = EmbeddedDocumentField(InjProfile)
    aliases = EmbeddedDocumentListField(InjProfile)


class InjTeam(Document):
    members = MapField(EmbeddedDocumentListField(InjProfile))
    rosters = DictField(ListField(EmbeddedDocumentField(InjProfile)))


class InjSheet(Document):
    name = StringField()
    scores = DictField(IntField())
    grid = MapField(IntField())
    nested = MapField(MapField(IntField()))
    rows = ListField(DictField(IntField()))
    free = DictField()
    shelves = MapField(ListField(StringField()))


class InjNote(DynamicDocument):
    text = StringField()


def refusal(path: str, field: str, document: str = "InjUser") -> str:
    """The message for an operator dict given to ``<document>.<path>``."""
    return (
        f'{document}.{path} ({field}) was given a dict with "$" keys as its value, '
        "which MongoDB would read as query operators (operator injection). "
        f"Write operators as {path}__ne=... (field__op=value) or in __raw__"
    )


@pytest.fixture
async def users(async_alias):
    alice = await InjUser(
        name="alice",
        password="secret-a",
        age=30,
        tags=["admin"],
        prefs={"theme": "dark"},
        labels={"team": "red"},
        extra={"level": 3},
        profile=InjProfile(nick="al"),
        aliases=[InjProfile(nick="al")],
    ).async_save()
    bob = await InjUser(
        name="bob", password="secret-b", age=40, friend=alice, prefs={"theme": "light"}
    ).async_save()
    return alice, bob


async def names(queryset) -> list[str]:
    return sorted(await queryset.async_scalar("name"))


# -- the login bypass -----------------------------------------------------------


async def test_login_bypass_is_refused(users):
    with pytest.raises(InvalidQueryError) as caught:
        InjUser.objects(name="alice", password={"$ne": "guess"})
    assert str(caught.value) == refusal("password", "StringField")
    with pytest.raises(InvalidQueryError) as caught:
        InjUser.objects(name={"$ne": None})
    assert str(caught.value) == refusal("name", "StringField")
    with pytest.raises(InvalidQueryError, match=r"^Not a query object"):
        InjUser.objects({"password": {"$ne": "guess"}})


ENTRY_POINTS = {
    "filter": lambda: InjUser.objects.filter(password={"$ne": "guess"}).async_first(),
    "get": lambda: InjUser.objects.async_get(name="alice", password={"$gt": ""}),
    "Q": lambda: InjUser.objects(Q(password={"$ne": "guess"})).async_first(),
    "Q combined": lambda: InjUser.objects.filter(
        Q(name="nobody") | (Q(age=30) & Q(password={"$ne": "guess"}))
    ).async_count(),
    "get with Q": lambda: InjUser.objects.async_get(Q(password={"$ne": "guess"})),
    "update's query": lambda: InjUser.objects(password={"$ne": "guess"}).async_update(
        set__age=99
    ),
    "modify's query": lambda: InjUser.objects(password={"$ne": "guess"}).async_modify(
        set__age=99
    ),
    "delete's query": lambda: InjUser.objects(password={"$ne": "guess"}).async_delete(),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
async def test_every_entry_point_refuses_and_writes_nothing(users, entry):
    with pytest.raises(InvalidQueryError) as caught:
        await ENTRY_POINTS[entry]()
    assert str(caught.value) == refusal("password", "StringField")
    assert await InjUser.objects(age=99).async_count() == 0
    assert await InjUser.objects.async_count() == 2


async def test_document_modify_and_save_condition_refuse(users):
    alice, _ = users
    with pytest.raises(InvalidQueryError) as caught:
        await alice.async_modify(query={"password": {"$ne": "guess"}}, set__age=99)
    assert str(caught.value) == refusal("password", "StringField")
    alice.age = 99
    with pytest.raises(InvalidQueryError) as caught:
        await alice.async_save(save_condition={"password": {"$ne": "guess"}})
    assert str(caught.value) == refusal("password", "StringField")
    assert (await InjUser.objects.async_get(name="alice")).age == 30


@pytest.mark.parametrize(
    ("query", "path", "field"),
    [
        ({"age": {"$gt": 0}}, "age", "IntField"),
        ({"id": {"$ne": None}}, "id", "ObjectIdField"),
        ({"pk": {"$ne": None}}, "pk", "ObjectIdField"),
        ({"friend": {"$ne": None}}, "friend", "ReferenceField"),
        ({"tags": {"$ne": "admin"}}, "tags", "ListField"),
        ({"profile__nick": {"$ne": "x"}}, "profile__nick", "StringField"),
        ({"name__": {"$ne": "x"}}, "name__", "StringField"),
        # a key of a typed MapField or DictField is its item field
        ({"labels__team": {"$ne": "x"}}, "labels__team", "StringField"),
        ({"scores__math": {"$gt": 0}}, "scores__math", "IntField"),
        # a numeric key too, which MongoEngine's lookup drops like a list index
        ({"labels__2024": {"$ne": "x"}}, "labels__2024", "StringField"),
        ({"scores__2024": {"$gt": 0}}, "scores__2024", "IntField"),
    ],
)
async def test_fields_that_hold_no_dict_refuse(users, query, path, field):
    with pytest.raises(InvalidQueryError) as caught:
        InjUser.objects(**query)
    assert str(caught.value) == refusal(path, field)


# -- what keeps working ---------------------------------------------------------


async def test_operator_syntax_raw_and_q_still_match(users):
    assert await names(InjUser.objects(password__ne="guess")) == ["alice", "bob"]
    assert await names(InjUser.objects(name="alice", password__ne="secret-a")) == []
    assert await names(InjUser.objects(__raw__={"password": {"$ne": "x"}})) == [
        "alice",
        "bob",
    ]
    either = {"$or": [{"password": {"$ne": "secret-a"}}, {"age": {"$lt": 35}}]}
    assert await names(InjUser.objects(Q(__raw__=either))) == ["alice", "bob"]
    assert await names(InjUser.objects(Q(age__gt=35) | Q(name__in=["alice"]))) == [
        "alice",
        "bob",
    ]
    assert await names(InjUser.objects(Q(password__not__ne="secret-b"))) == ["bob"]
    assert await names(InjUser.objects(name__not={"$in": ["bob"]})) == ["alice"]
    alice = await InjUser.objects.async_get(Q(name="alice"), password="secret-a")
    assert alice.age == 30


async def test_dict_holding_fields_take_dicts(users):
    assert await names(InjUser.objects(prefs={"theme": "dark"})) == ["alice"]
    assert await names(InjUser.objects(labels={"team": "red"})) == ["alice"]
    assert await names(InjUser.objects(extra={"level": 3})) == ["alice"]
    # An operator dict on a field that can hold a dict is MongoEngine's behaviour.
    assert await names(InjUser.objects(prefs={"$exists": True})) == ["alice", "bob"]
    assert await names(InjUser.objects(extra={"$exists": False})) == ["bob"]
    assert await names(InjUser.objects(profile={"$exists": True})) == ["alice"]
    assert await names(InjUser.objects(prefs__theme={"$in": ["light"]})) == ["bob"]
    assert await names(InjUser.objects(scores={"$exists": True})) == ["alice", "bob"]
    assert await names(InjUser.objects(prefs__2024={"$exists": False})) == [
        "alice",
        "bob",
    ]


async def test_an_operator_dict_among_the_values_of_all_is_refused(users):
    any_tag = {"$elemMatch": {"$ne": ""}}
    for values in ([any_tag], ("admin", any_tag)):
        with pytest.raises(InvalidQueryError) as caught:
            InjUser.objects(tags__all=values)
        assert str(caught.value) == (
            'InjUser.tags__all (ListField) was given a dict with "$" keys among its '
            "values, which MongoDB would read as query operators (operator "
            "injection). Write such a query in __raw__"
        )
    assert await names(InjUser.objects(tags__all=["admin"])) == ["alice"]
    raw = {"tags": {"$all": [any_tag]}}
    assert await names(InjUser.objects(__raw__=raw)) == ["alice"]
    # A list of embedded documents holds dicts: MongoEngine's behaviour.
    by_nick = [{"$elemMatch": {"nick": "al"}}]
    assert await names(InjUser.objects(aliases__all=by_nick)) == ["alice"]


@pytest.mark.parametrize("operator", ["match", "elemMatch"])
async def test_a_match_on_embedded_documents_checks_their_filter(users, operator):
    # MongoEngine builds aliases__match={"nick": ...} as a filter on InjProfile.
    with pytest.raises(InvalidQueryError) as caught:
        InjUser.objects(**{f"aliases__{operator}": {"nick": {"$ne": "x"}}})
    assert str(caught.value) == refusal("nick", "StringField", "InjProfile")
    with pytest.raises(InvalidQueryError, match=r"^InjProfile\.nick__icontains: "):
        InjUser.objects(
            **{f"aliases__{operator}": {"nick__icontains": "a" * (MAX_REGEX_TEXT + 1)}}
        )
    by_nick = {f"aliases__{operator}": {"nick": "al"}}
    assert await names(InjUser.objects(Q(**by_nick))) == ["alice"]
    not_al = {f"aliases__{operator}": {"nick__ne": "al"}}
    assert await names(InjUser.objects(**not_al)) == []


@pytest.mark.parametrize("operator", ["match", "elemMatch"])
@pytest.mark.parametrize("field", ["members", "rosters"])
async def test_a_match_under_a_key_of_a_typed_map_checks_its_filter(
    async_alias, field, operator
):
    # members__red is a list of InjProfile, its match a filter on InjProfile
    # to MongoDB as on aliases (it went through: any member matched).
    red = [InjProfile(nick="al")]
    await InjTeam(members={"red": red}, rosters={"red": red}).async_save()
    key = f"{field}__red__{operator}"
    with pytest.raises(InvalidQueryError) as caught:
        InjTeam.objects(**{key: {"nick": {"$ne": "x"}}})
    assert str(caught.value) == refusal("nick", "StringField", "InjProfile")
    assert await InjTeam.objects(**{key: {"nick": "al"}}).async_count() == 1
    assert await InjTeam.objects(**{key: {"nick": "bo"}}).async_count() == 0


# A path below an integer item of a typed dict, for which MongoEngine's lookup
# invents an untyped DictField (the operator dict went through); and the step
# the refusal names, below which value.
BELOW_AN_INT = {
    "scores__math__x": ("x", "scores__math"),
    "scores__math__x__y": ("x", "scores__math"),
    "grid__a__b": ("b", "grid__a"),
    "nested__a__b__c": ("c", "nested__a__b"),
    "rows__a__b": ("b", "rows__a"),
    "rows__0__a__b": ("b", "rows__0__a"),
}


@pytest.fixture
async def sheets(async_alias):
    await InjSheet(
        name="one",
        scores={"math": 3},
        grid={"a": 1},
        nested={"a": {"b": 2}},
        rows=[{"a": 1}, {"b": 2}],
        free={"a": {"b": 1}},
        shelves={"k": ["a", "b"]},
    ).async_save()
    await InjSheet(name="two", scores={"art": 5}, rows=[]).async_save()


@pytest.mark.parametrize("path", list(BELOW_AN_INT))
async def test_a_path_below_an_item_holding_no_dict_refuses(sheets, path):
    """The refusal names the step below a value that holds no fields, and that
    value (it named only the field's class: what was wrong with the path?)."""
    step, holder = BELOW_AN_INT[path]
    shown = f"{step!r} is below {holder}: IntField, whose values hold no fields"
    with pytest.raises(InvalidQueryError) as caught:
        InjSheet.objects(**{path: {"$ne": 1}})
    assert str(caught.value) == refusal(path, shown, "InjSheet")
    with pytest.raises(InvalidQueryError) as caught:
        InjSheet.objects(Q(name="one") | Q(**{path: {"$exists": False}}))
    assert str(caught.value) == refusal(path, shown, "InjSheet")


async def test_a_path_below_a_list_of_strings_in_a_map_names_the_list(sheets):
    """``shelves__k__x`` on a MapField(ListField(StringField())): the refusal
    said "(ListField)", naming neither the step nor why it is refused."""
    shown = (
        "'x' is below shelves__k: ListField of StringField, whose values hold no fields"
    )
    with pytest.raises(InvalidQueryError) as caught:
        InjSheet.objects(shelves__k__x={"$ne": "a"})
    assert str(caught.value) == refusal("shelves__k__x", shown, "InjSheet")
    with pytest.raises(InvalidQueryError) as caught:
        InjSheet.objects(shelves__k__x__all=[{"$elemMatch": {"$ne": ""}}])
    assert str(caught.value) == (
        f'InjSheet.shelves__k__x__all ({shown}) was given a dict with "$" keys '
        "among its values, which MongoDB would read as query operators (operator "
        "injection). Write such a query in __raw__"
    )


async def test_a_refusal_names_the_value_the_step_is_below_not_the_path_end(sheets):
    """``shelves__k__x__0``: the index after the step leads the path to a
    StringField, but 'x' is below the list (the refusal said "below
    shelves__k: StringField", which is no list)."""
    shown = (
        "'x' is below shelves__k: ListField of StringField, whose values hold no fields"
    )
    with pytest.raises(InvalidQueryError) as caught:
        InjSheet.objects(shelves__k__x__0={"$ne": "a"})
    assert str(caught.value) == refusal("shelves__k__x__0", shown, "InjSheet")


# Queries on typed dicts the guard lets through: each builds MongoEngine's
# query and matches its documents.
LEGITIMATE = [
    {"scores__math": 3},
    {"scores__math__gt": 1},
    {"scores__math__in": [3, 5]},
    {"scores__math__exists": False},
    {"scores__math__x": 5},
    {"scores__math__x__ne": 1},
    {"scores__math__x__exists": True},
    {"scores": {"$exists": True}},
    {"scores": {"math": 3}},
    {"grid__a": 1},
    {"grid__a__b__ne": 1},
    {"grid": {"$ne": {}}},
    {"nested__a": {"b": 2}},
    {"nested__a": {"$exists": True}},
    {"nested__a__b": 2},
    {"nested__a__b__c__exists": False},
    {"rows__a": 1},
    {"rows__0__a": 1},
    {"rows__a__b__ne": 1},
    {"rows": {"$size": 2}},
    {"rows__1": {"b": 2}},
    {"rows__match": {"b": 2}},
    {"free__a__b": {"$ne": 1}},
    {"free__a": {"$exists": True}},
    {"shelves__k": ["a", "b"]},
    {"shelves__k": "a"},
    {"shelves__k__0": "a"},
    {"shelves__k__ne": "c"},
    {"shelves__k__size": 2},
    {"shelves__k__x__exists": False},
]


@pytest.mark.parametrize("query", LEGITIMATE, ids=str)
async def test_queries_on_typed_dicts_build_mongoengines_query(sheets, query):
    built = transform.query(InjSheet, **query)
    ours = InjSheet.objects(**query)
    assert ours._query == built
    found = await ours.async_scalar("name")
    assert sorted(found) == sorted(
        await InjSheet.objects(__raw__=built).async_scalar("name")
    )


async def test_undeclared_fields_of_a_dynamic_document_take_dicts(async_alias):
    await InjNote(text="a", mood="happy").async_save()
    await InjNote(text="b").async_save()
    found = await InjNote.objects(mood={"$exists": True}).async_scalar("text")
    assert found == ["a"]
    with pytest.raises(InvalidQueryError, match=r"^InjNote\.text \(StringField\)"):
        InjNote.objects(text={"$ne": None})


async def test_document_methods_passing_ids_keep_working(users):
    alice, bob = users
    assert await alice.async_modify(query={"age": 30}, set__age=31) is True
    assert await alice.async_modify(query=Q(age__gt=30), set__age=32) is True
    assert await alice.async_modify(query=Q(age__gt=50), set__age=0) is False
    assert alice.age == 32
    await bob.async_update(set__age=41)
    assert (await bob.async_reload()).age == 41
    bob.age = 42
    await bob.async_save(save_condition={"age__lt": 42, "name": "bob"})
    assert (await InjUser.objects.async_get(name="bob")).age == 42
    await bob.async_delete()
    assert await names(InjUser.objects) == ["alice"]


# -- sync aliases and the opt-out -----------------------------------------------


@pytest.fixture
def sync_alias(mongodb_uri):
    name = f"test_inj_{uuid4().hex[:12]}"
    mongoengine_async.connect(db=name, host=mongodb_uri, uuidRepresentation="standard")
    try:
        yield
    finally:
        mongoengine_async.get_db().client.drop_database(name)
        mongoengine_async.disconnect()


def test_sync_alias_passes_the_dict_through_like_mongoengine(sync_alias):
    InjUser(name="alice", password="secret-a").save()
    InjUser(name="bob", password="secret-b").save()
    bypass = InjUser.objects(name="alice", password={"$ne": "guess"})
    assert [user.name for user in bypass] == ["alice"]
    assert InjUser.objects(Q(name={"$ne": None})).count() == 2
    # MongoEngine's own error for an IntField, not ours.
    with pytest.raises(TypeError):
        InjUser.objects(age={"$gt": 0}).count()


async def test_sanitize_filter_false_turns_the_guard_off(mongodb_uri):
    async with fresh_database("default", mongodb_uri, sanitize_filter=False):
        assert sanitize_filter_enabled("default") is False
        await InjUser(name="alice", password="secret-a").async_save()
        bypass = InjUser.objects(name="alice", password={"$ne": "guess"})
        assert await names(bypass) == ["alice"]
        assert await names(InjUser.objects(Q(name={"$ne": None}))) == ["alice"]


async def test_sanitize_filter_is_part_of_the_alias_settings(async_alias, mongodb_uri):
    assert sanitize_filter_enabled("default") is True
    assert sanitize_filter_enabled("never-connected") is False
    settings = {
        "db": "inj_settings",
        "alias": "inj",
        "host": mongodb_uri,
        "uuidRepresentation": "standard",
    }
    client = await connect_async(**settings)
    try:
        assert await connect_async(**settings, sanitize_filter=True) is client
        with pytest.raises(ConnectionFailure, match="different connection"):
            await connect_async(**settings, sanitize_filter=False)
    finally:
        await disconnect_async("inj")


# -- over-long regex texts -------------------------------------------------------


async def test_the_longest_regex_text_the_server_accepts_works(users):
    await InjUser(name="a" * MAX_REGEX_TEXT).async_save()
    found = InjUser.objects(name__icontains="A" * MAX_REGEX_TEXT)
    assert await found.async_count() == 1


@pytest.mark.parametrize(
    "operator",
    ["icontains", "startswith", "iexact", "regex", "not__icontains", "not__regex"],
)
async def test_a_longer_regex_text_is_refused_without_blocking(
    users, operator, monkeypatch
):
    # MongoEngine compiles the regex in prepare_query_value, about 2 s on this text.
    prepared = []
    prepare = StringField.prepare_query_value

    def recording(field, op, value):
        prepared.append(op)
        return prepare(field, op, value)

    monkeypatch.setattr(StringField, "prepare_query_value", recording)
    text = "a" * (1 << 20)
    with pytest.raises(InvalidQueryError) as caught:
        InjUser.objects(**{f"name__{operator}": text})
    assert prepared == []
    assert str(caught.value) == (
        f"InjUser.name__{operator}: the text is 1048576 characters long; MongoDB "
        f"refuses a regular expression over {MAX_REGEX_TEXT} characters, and "
        "building it would block the event loop"
    )


async def test_long_plain_values_are_not_regexes(users):
    text = "a" * (MAX_REGEX_TEXT + 1)
    await InjUser(name=text).async_save()
    assert await InjUser.objects(name=text).async_count() == 1
    assert await InjUser.objects(name__in=[text]).async_count() == 1


def test_the_server_refuses_one_character_more(sync_alias):
    InjUser(name="a").save()
    with pytest.raises(OperationFailure, match="regular expression is too large"):
        InjUser.objects(name__icontains="a" * (MAX_REGEX_TEXT + 1)).count()
