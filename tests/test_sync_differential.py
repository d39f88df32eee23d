"""A user who changes only the import and stays sync gets MongoEngine's
behaviour: the scenarios of ``sync_differential.py`` (querysets with their
options, projections, updates with every operator, inserts, documents'
reloads, deltas, dynamic documents, stored nulls, switches and context
managers, references, files, field types, delete rules, inheritance,
constructors, embedded documents changed in place, a cascade chain,
sequence fields, a class hierarchy, aggregations, query operators, geo and
text searches, collection setup, shard keys, a half-migrated module's
MongoEngine queryset class and fields in the package's documents, a user's own
field classes, embedded defaults changed in place) run through plain MongoEngine and
through this package, each in a process of its own, must record the same
transcript: results, ``_data`` key order, stored documents, errors, commands
sent and signals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mongoengine_async

SCRIPT = Path(__file__).with_name("sync_differential.py")
KINDS = Path(__file__).with_name("sync_differential_kinds.py")
MORE = Path(__file__).with_name("sync_differential_more.py")
SOURCE = str(Path(mongoengine_async.__file__).parent.parent)


def transcripts(
    library: str, mode: str, mongodb_uri: str, script: Path = SCRIPT
) -> dict[str, list]:
    """The transcripts of every scenario of ``script`` run through ``library``."""
    result = subprocess.run(
        [sys.executable, "-W", "ignore", str(script), library, mode],
        env={
            **os.environ,
            "MONGODB_URI": mongodb_uri,
            "PYTHONPATH": SOURCE,
            "PYTHONHASHSEED": "0",  # (the order of MongoEngine's sets of names)
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def first_difference(theirs: list, ours: list) -> Any:
    """The first step recorded differently, both ways, or None."""
    for step, (their_step, our_step) in enumerate(zip(theirs, ours, strict=False)):
        if their_step != our_step:
            return step, their_step, our_step
    return None if len(theirs) == len(ours) else ("length", len(theirs), len(ours))


def assert_same_transcripts(script: Path, mode: str, mongodb_uri: str) -> None:
    """Every scenario of ``script`` recorded the same through MongoEngine and
    through this package, and none raised."""
    theirs = transcripts("mongoengine", mode, mongodb_uri, script)
    ours = transcripts("mongoengine_async", mode, mongodb_uri, script)
    assert list(ours) == list(theirs)
    for scenario, steps in theirs.items():
        assert not [s for s in steps if s[0] == "scenario raised"], scenario
        assert first_difference(steps, ours[scenario]) is None, scenario


@pytest.mark.parametrize(
    "script", [SCRIPT, KINDS, MORE], ids=["scenarios", "kinds", "more"]
)
@pytest.mark.parametrize("mode", ["quiet", "writes", "signals"])
def test_scenarios_run_as_through_mongoengine(
    script: Path, mode: str, mongodb_uri: str
) -> None:
    """``quiet``: no signal receiver (the generated loaders and writers run);
    ``writes``: receivers of the write signals record them (the generated
    code still runs); ``signals``: a receiver of each signal records it. The
    scenarios of ``sync_differential.py`` and of ``sync_differential_kinds.py``
    (field options, read shapes, nested embedded documents, custom primary
    keys referred to, in_bulk and insert through every queryset option,
    iteration, MongoEngine's no_dereference() block, embedded documents'
    owners, receivers changing what is saved, classes drawn at random) and of
    ``sync_differential_more.py`` (threads sharing the alias, query_counter's
    numbers, custom querysets and managers, errors, documents' lifecycle,
    references to switched classes)."""
    assert_same_transcripts(script, mode, mongodb_uri)
