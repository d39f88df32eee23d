"""The models and helpers the reference tests share (test_reference_*.py,
test_lazy_references.py, test_generic_references.py, test_select_related.py,
test_no_dereference.py): defined once, so the collection names stay the same."""

from __future__ import annotations

from mongoengine_async import (
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    GenericLazyReferenceField,
    GenericReferenceField,
    IntField,
    LazyReferenceField,
    ListField,
    MapField,
    ReferenceField,
    StringField,
    get_async_db,
)

# -- models -------------------------------------------------------------------------


class RefPublisher(Document):
    name = StringField()


class RefAuthor(Document):
    name = StringField()
    publisher = ReferenceField(RefPublisher)


class RefEditor(Document):
    name = StringField()


class RefBook(Document):
    title = StringField()
    pages = IntField()
    author = ReferenceField(RefAuthor)


class RefDbRefBook(Document):
    title = StringField()
    author = ReferenceField(RefAuthor, dbref=True)


class RefLazyBook(Document):
    title = StringField()
    author = LazyReferenceField(RefAuthor)
    author_pt = LazyReferenceField(RefAuthor, passthrough=True)


class RefGenericHolder(Document):
    title = StringField()
    target = GenericReferenceField()
    lazy_target = GenericLazyReferenceField()


class RefCitation(EmbeddedDocument):
    note = StringField()
    author = ReferenceField(RefAuthor)


class RefShelf(Document):
    name = StringField()
    authors = ListField(ReferenceField(RefAuthor))
    by_role = DictField(field=ReferenceField(RefAuthor))
    by_name = MapField(ReferenceField(RefAuthor))
    citation = EmbeddedDocumentField(RefCitation)
    citations = EmbeddedDocumentListField(RefCitation)
    grid = ListField(ListField(ReferenceField(RefAuthor)))


class RefReadingList(Document):
    name = StringField()
    books = ListField(ReferenceField(RefBook))
    editors = ListField(ReferenceField(RefEditor))
    citation = EmbeddedDocumentField(RefCitation)


class RefPerson(Document):
    name = StringField()
    friend = ReferenceField("self")


class RefWriter(Document):
    name = StringField()
    latest = ReferenceField("RefNovel")


class RefNovel(Document):
    title = StringField()
    writer = ReferenceField(RefWriter)


class RefAnimal(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class RefDog(RefAnimal):
    bark = StringField()


class RefKennel(Document):
    animal = ReferenceField(RefAnimal)
    dog = ReferenceField(RefDog)


class RefTaggedBook(Document):
    title = StringField()
    tags = ListField(StringField())
    author = ReferenceField(RefAuthor)
    editor = ReferenceField(RefEditor)
    meta = {"strict": False}


class RefArchivedAuthor(Document):
    """Lives on another alias, in a collection named as RefAuthor's."""

    name = StringField()
    meta = {"db_alias": "ref_archive", "collection": "ref_author"}


class RefArchiveEntry(Document):
    author = ReferenceField(RefAuthor)
    archived = ReferenceField(RefArchivedAuthor)


class RefDogOwner(Document):
    dog = ReferenceField(RefDog)


class RefShelter(Document):
    animal = ReferenceField(RefAnimal)
    owner = ReferenceField(RefDogOwner)


class RefAlpha(Document):
    """Shares its collection with RefBeta; the two classes are unrelated."""

    name = StringField()
    meta = {"collection": "ref_shared"}


class RefBeta(Document):
    label = StringField()
    meta = {"collection": "ref_shared"}


class RefPair(Document):
    alpha = ReferenceField(RefAlpha)
    beta = ReferenceField(RefBeta)


class RefCreature(Document):
    name = StringField()
    meta = {"abstract": True}


class RefElf(RefCreature):
    pass


class RefOrc(RefCreature):
    pass


class RefMisc(Document):
    name = StringField()
    generic_list = ListField(GenericReferenceField())
    lazy_list = ListField(LazyReferenceField(RefAuthor))
    generic_lazy_list = ListField(GenericLazyReferenceField())
    animal = ReferenceField(RefAnimal)
    creature = ReferenceField(RefCreature)
    dict_of_lists = DictField(field=ListField(ReferenceField(RefAuthor)))
    cited = DictField(field=EmbeddedDocumentField(RefCitation))


# -- helpers ------------------------------------------------------------------------


async def raw(cls, pk):
    """The stored document, read with the driver (not through the models)."""
    return await get_async_db()[cls._get_collection_name()].find_one({"_id": pk})


def updates(command_log):
    """The ``u`` parts of every update command sent."""
    return [
        statement["u"]
        for event in command_log.events
        if event.command_name == "update"
        for statement in event.command["updates"]
    ]


async def make_author(name="Ann", publisher=None):
    """A saved author."""
    return await RefAuthor(name=name, publisher=publisher).async_save()


async def make_book(author, title="Book", cls=RefBook):
    """A saved book of ``cls``, read back so its reference is a proxy."""
    book = await cls(title=title, author=author).async_save()
    return await cls.objects.async_get(pk=book.pk)


async def make_shelf():
    """A shelf holding references in every kind of container, read back; and
    its three authors."""
    ann = await make_author("Ann")
    bob = await make_author("Bob")
    cid = await make_author("Cid")
    shelf = await RefShelf(
        name="s",
        authors=[ann, bob],
        by_role={"lead": ann, "second": bob},
        by_name={"cid": cid},
        citation=RefCitation(note="n", author=cid),
        citations=[
            RefCitation(note="a", author=ann),
            RefCitation(note="b", author=bob),
        ],
        grid=[[ann, bob], [cid]],
    ).async_save()
    loaded = await RefShelf.objects.async_get(pk=shelf.pk)
    return loaded, ann, bob, cid
