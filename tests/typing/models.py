"""Models of the typing checks (type-checked only, never run by pytest)."""

from __future__ import annotations

import enum

from mongoengine_async import (
    DateTimeField,
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
    ReferenceField,
    SortedListField,
    StringField,
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
