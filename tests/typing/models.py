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
    ReferenceField,
    StringField,
)


class Colour(enum.Enum):
    RED = "red"


class Author(Document):
    name = StringField(required=True)


class Review(EmbeddedDocument):
    stars = IntField(default=0)


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
    review = EmbeddedDocumentField(Review)
    reviews = EmbeddedDocumentListField(Review)
    extra = DictField()
    cover = FileField()
