"""Without the optional extras (blinker, Pillow) every feature still works.

``make test`` also runs ``tests/smoke/plain_install.py`` in a venv holding a
plain install; here the same script runs in this venv with ``blinker`` and
``PIL`` made unimportable, so the main suite catches the regression too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SMOKE = Path(__file__).resolve().parent / "smoke" / "plain_install.py"

WITHOUT_EXTRAS = """
import runpy, sys

class BlockExtras:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("blinker", "PIL"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, BlockExtras())
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def test_everything_works_without_blinker_and_pillow(mongodb_uri: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, str(SMOKE)],
        env={**os.environ, "MONGODB_URI": mongodb_uri},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "plain install smoke test passed" in result.stdout
