"""The models: plain MongoEngine declarations, imported from mongoengine_async."""

from __future__ import annotations

from mongoengine_async import (
    CASCADE,
    Document,
    FileField,
    IntField,
    ReferenceField,
    StringField,
)


class Author(Document):
    """A writer; deleting one deletes their books (CASCADE on Book.author)."""

    name = StringField(required=True, max_length=200)
    # How many books were added: raised in each transaction that adds one.
    books_added = IntField(default=0, min_value=0)
    meta = {"indexes": [{"fields": ["name"], "unique": True}]}


class Book(Document):
    """A book of one author, with an optional manuscript stored in GridFS."""

    title = StringField(required=True, max_length=300)
    year = IntField(min_value=0)
    author = ReferenceField(Author, required=True, reverse_delete_rule=CASCADE)
    manuscript = FileField(collection_name="manuscripts")
    meta = {
        # (The list's order, title then id: read in order from the index.)
        "indexes": [{"fields": ["author", "title"], "unique": True}, ("title", "id")],
    }


MODELS: tuple[type[Document], ...] = (Author, Book)
