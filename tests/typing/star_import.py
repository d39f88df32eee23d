"""The one-line migration import gives checkers every typed name (never run)."""

from typing import assert_type

from mongoengine_async import *


class Tag(Document):
    label = StringField(required=True)
    uses = IntField()


async def star_names(tag: Tag) -> None:
    assert_type(tag.label, str)
    assert_type(tag.uses, int | None)
    assert_type(await Tag.objects.async_first(), Tag | None)
    assert_type(Tag.objects, QuerySet[Tag])
