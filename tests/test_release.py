"""What a release carries: one version everywhere, a changelog entry, the license.

``make dist`` checks the archives themselves (tests/release/check_dist.py); these
tests check the installed metadata and CHANGELOG.md against the package.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import mongoengine_async

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = ROOT / "CHANGELOG.md"


def changelog_versions() -> list[str]:
    """The versions CHANGELOG.md has sections for, newest first."""
    return re.findall(r"^## \[([^\]]+)\]", CHANGELOG.read_text(), re.MULTILINE)


def test_the_installed_version_is_the_package_version() -> None:
    # An editable install's metadata dates from the install: after a version
    # bump, `make venv` (touch pyproject.toml first) installs it again.
    assert metadata.version("mongoengine-async") == mongoengine_async.__version__


def test_the_changelog_has_unreleased_then_the_current_version() -> None:
    assert changelog_versions()[:2] == ["Unreleased", mongoengine_async.__version__]


def test_the_versions_are_semantic_and_dated() -> None:
    text = CHANGELOG.read_text()
    released = changelog_versions()[1:]
    assert released
    for version in released:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
        assert re.search(
            rf"^## \[{re.escape(version)}\] - \d{{4}}-\d\d-\d\d$", text, re.M
        )


def test_the_license_is_mit_and_shipped() -> None:
    installed = metadata.metadata("mongoengine-async")
    assert installed["License-Expression"] == "MIT"
    assert installed.get_all("License-File") == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
