"""Document classes reached as classes, never looked up by name.

MongoEngine's registry by name (``get_document``) holds only the last class
defined under a name: two modules may each define a ``Report``, and a lookup of
a class's ``_subclasses`` names would then find the other one.
"""

from __future__ import annotations

from typing import Any

__all__ = ("with_subclasses",)


def with_subclasses(cls: type[Any]) -> list[type[Any]]:
    """``cls`` and every subclass of it (at any depth), ``cls`` first."""
    classes = [cls]
    for each in classes:  # the list grows as subclasses are found
        classes.extend(sub for sub in each.__subclasses__() if sub not in classes)
    return classes
