"""Models of the typing checks (type-checked only, never run by pytest)."""

from __future__ import annotations

import enum

from mongoengine_async import (
    BooleanField,
    DateTimeField,
    DecimalField,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    EnumField,
    FileField,
    FloatField,
    IntField,
    LazyReferenceField,
    ListField,
    MapField,
    QuerySet,
    ReferenceField,
    SortedListField,
    StringField,
    queryset_manager,
)


class Colour(enum.Enum):
    RED = "red"


class Author(Document):
    name = StringField(required=True)


class Review(EmbeddedDocument):
    stars = IntField(default=0)
    meta = {"allow_inheritance": True}


class LongReview(Review):
    text = StringField()


class Book(Document):
    title = StringField()
    isbn = StringField(required=True)
    pages = IntField(default=lambda: 1)
    price = FloatField()
    published = DateTimeField()
    colour = EnumField(Colour)
    author = ReferenceField(Author)
    editor = LazyReferenceField(Author)
    tags = ListField(StringField(required=True))
    labels = ListField(StringField())
    scores = ListField(IntField())
    ratios = SortedListField(FloatField())
    nested = ListField(ListField(IntField()))
    reviewers = ListField(ReferenceField(Author))
    past_reviews = ListField(EmbeddedDocumentField(Review))
    counts = MapField(IntField())
    totals = DictField(FloatField())
    review = EmbeddedDocumentField(Review)
    reviews = EmbeddedDocumentListField(Review)
    extra = DictField()
    cover = FileField()
    reviewer = LazyReferenceField(Author, required=True)
    price_tag = DecimalField(default=0)  # an int until saved and loaded: Any

    @queryset_manager
    def long_ones(doc_cls, queryset: QuerySet[Book]) -> QuerySet[Book]:
        return queryset.filter(pages__gt=300)


class Note(Document):
    """A custom ``objects`` (docs/delete_rules.md): the manager's queryset."""

    text = StringField()
    active = BooleanField(default=True)

    @queryset_manager
    def objects(doc_cls, queryset: QuerySet[Note]) -> QuerySet[Note]:
        return queryset.filter(active=True)
