"""Checks what the built sdist and wheel hold, file by file (``make dist`` runs it).

The wheel holds the package (every file git tracks under ``src/mongoengine_async``)
and its metadata with the license; the sdist holds every file git tracks (tests,
docs, examples, benchmarks, LICENSE, CHANGELOG) plus what setuptools generates.
Anything missing or extra is listed and the exit status is 1. Not a pytest
module: it needs the archives that ``make dist`` builds and a git checkout.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

PACKAGE = "mongoengine_async"
ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOT = f"src/{PACKAGE}/"
WHEEL_METADATA = {
    "METADATA",
    "WHEEL",
    "RECORD",
    "entry_points.txt",
    "top_level.txt",
    "licenses/LICENSE",
}
SDIST_GENERATED = {"PKG-INFO", "setup.cfg"}
SDIST_GENERATED_DIR = f"src/{PACKAGE}.egg-info/"


def tracked_files() -> set[str]:
    """The files git tracks in the checkout: what the sdist must hold."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return {name for name in listing.stdout.split("\0") if name}


def only_archive(dist: Path, pattern: str) -> Path:
    """The one archive of ``dist`` matching ``pattern`` (make dist builds one)."""
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        sys.exit(f"check_dist: expected one {pattern} in {dist}, found {found}")
    return found[0]


def wheel_problems(wheel: Path, tracked: set[str]) -> list[str]:
    """What the wheel lacks or holds beyond the package, its metadata and LICENSE."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(name.split("/")[0] for name in names if ".dist-info/" in name)
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    expected = {
        name.removeprefix("src/") for name in tracked if name.startswith(SOURCE_ROOT)
    }
    expected |= {f"{dist_info}/{name}" for name in WHEEL_METADATA}
    problems = differences("wheel", names, expected)
    headers = HeaderParser().parsestr(metadata)
    if headers["License-Expression"] != "MIT":
        problems.append(f"wheel: License-Expression is {headers['License-Expression']}")
    if headers.get_all("License-File") != ["LICENSE"]:
        problems.append(f"wheel: License-File is {headers.get_all('License-File')}")
    return problems


def sdist_problems(sdist: Path, tracked: set[str]) -> list[str]:
    """What the sdist lacks of the tracked files, or holds beyond them."""
    with tarfile.open(sdist) as archive:
        members = [member.name for member in archive.getmembers() if member.isfile()]
    top = sdist.name.removesuffix(".tar.gz") + "/"
    names = {name.removeprefix(top) for name in members}
    generated = {name for name in names if name.startswith(SDIST_GENERATED_DIR)}
    return differences("sdist", names - generated, tracked | SDIST_GENERATED)


def differences(kind: str, names: set[str], expected: set[str]) -> list[str]:
    """One line per file missing from, or unexpected in, an archive."""
    missing = [f"{kind}: missing {name}" for name in sorted(expected - names)]
    extra = [f"{kind}: unexpected {name}" for name in sorted(names - expected)]
    return missing + extra


def main(dist: Path) -> int:
    """Checks both archives of ``dist``; prints each problem, returns the status."""
    tracked = tracked_files()
    wheel = only_archive(dist, "*.whl")
    sdist = only_archive(dist, "*.tar.gz")
    problems = wheel_problems(wheel, tracked) + sdist_problems(sdist, tracked)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("check_dist: git add the new file, or exclude it", file=sys.stderr)
        return 1
    print(f"check_dist: {wheel.name} and {sdist.name} hold what they should")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
