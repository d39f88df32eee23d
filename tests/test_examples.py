"""The demo runs to the end against the real server and says what it did."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


def test_quickstart_runs(mongodb_uri: str) -> None:
    result = subprocess.run(
        [sys.executable, str(QUICKSTART)],
        env={**os.environ, "MONGODB_URI": mongodb_uri},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "select_related: 2 finds for 5 books" in output
    assert "awaiting each book's author: 5 finds" in output
    assert "streamed sample.pdf (application/pdf): 10,486,199 bytes" in output
    assert "the review stays, its book nullified: True" in output
    assert "rolled back: True" in output
    assert output.rstrip().endswith("done")
