"""Reading a whole result at once: the batch size that asks for it in one
reply, and building or walking the batch with the cyclic GC paused.

Used by the queryset, the delete rules and select_related alike.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ("WHOLE_RESULT", "gc_paused", "materialise_all")

# The batch size that asks for a whole result: the server's first reply holds
# 101 documents unless asked for more, and replies are capped at 16 MB anyway,
# so a caller that wants every result saves a round trip per query.
WHOLE_RESULT = 2**31 - 1


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a batch of documents is built or walked.

    Building thousands of documents in one go allocates many containers that
    all survive, so the collector would run again and again over a growing
    heap for nothing (it freed nothing: measured at 40% of a 10,000-document
    load). Only for code that never awaits: nothing else runs meanwhile.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


# Below this many results the collector has little to walk, and pausing it
# would cost more than it saves (a get() or first() builds one document).
PAUSE_FROM = 64


def materialise_all(materialise: Callable[[Any], Any], raws: list) -> list:
    """``[materialise(raw) for raw in raws]``, with the cyclic GC paused for
    a batch of more than a few."""
    if len(raws) < PAUSE_FROM:
        return [materialise(raw) for raw in raws]
    with gc_paused():
        return [materialise(raw) for raw in raws]
