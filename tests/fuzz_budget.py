"""The budgets of the randomised differential tests (test_queryset_random,
test_random_schemas, test_delta_differential, test_save_interleavings).

Each takes its number of examples from ``RANDOM_<NAME>_EXAMPLES`` (the small
default of ``make test`` otherwise). Their examples are a fixed set
(derandomized) unless ``RANDOM_SEED`` holds an integer: then that seed draws
them, so that ``make fuzz`` explores new examples each run and a run can be
replayed with the seed it printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import seed, settings

T = TypeVar("T")

SEED_VARIABLE = "RANDOM_SEED"


def examples(name: str, default: int) -> int:
    """The budget of the test ``name``: ``RANDOM_<NAME>_EXAMPLES``, else ``default``."""
    return int(os.environ.get(f"RANDOM_{name.upper()}_EXAMPLES", default))


def chosen_seed() -> int | None:
    value = os.environ.get(SEED_VARIABLE, "").strip()
    return int(value) if value else None


def budget(name: str, default: int, **kwargs: Any) -> Callable[[T], T]:
    """Hypothesis settings (``kwargs`` added) for the test ``name``, with its
    budget and, under ``RANDOM_SEED``, that seed instead of derandomize."""
    drawn_seed = chosen_seed()
    configured = settings(
        max_examples=examples(name, default),
        deadline=None,
        derandomize=drawn_seed is None,
        database=None,
        **kwargs,
    )

    def apply(test: Any) -> Any:
        test = configured(test)
        return test if drawn_seed is None else seed(drawn_seed)(test)

    return apply
