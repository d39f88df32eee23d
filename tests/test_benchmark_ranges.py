"""benchmarks/ranges.py: the ranges over several runs that docs/benchmarks.md shows,
read from the JSON files run.py writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import ranges  # noqa: E402
import run  # noqa: E402


def row(scenario: str, library: str, median_ms: float, **extra: Any) -> dict:
    """A result row as run.py makes it (its ratio: to raw's 10 ms)."""
    return {
        "scenario": scenario,
        "library": library,
        "median_ms": median_ms,
        "ratio": median_ms / 10.0,
        **extra,
    }


def write_run(directory: Path, number: int, rows: list[dict]) -> Path:
    """Write a run's results with run.py's own writer, as ``--out run-N`` does."""
    scenarios = {r["scenario"] for r in rows}
    rows = [row(scenario, "raw", 10.0) for scenario in scenarios] + rows
    report = {
        "meta": {
            "sizes_name": "full",
            "repeat": 5,
            "date": f"2026-12-0{number}T09:00:00+00:00",
        },
        "results": rows,
        "targets": run.check_targets(rows),
    }
    json_path, _ = run.write_results(report, directory / f"run-{number}")
    return json_path


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    """read_iter (target 1.3x) met in two runs of three; one mismatch."""
    runs = []
    for number, (ours, ours_sync, mongoengine) in enumerate(
        [(12.0, 20.0, 100.0), (14.0, 25.0, 150.0), (12.5, 30.0, 90.0)], start=1
    ):
        rows = [
            row("read_iter", "ours", ours, per_round=[ours / 10 - 0.1, 1.0, 1.5]),
            row("read_iter", "ours-sync", ours_sync),
            row("read_iter", "mongoengine", mongoengine),
            {"scenario": "read_iter", "library": "beanie", "skipped": "not installed"},
            row("gridfs_get", "ours", 9.5 + number),
            row("refs_by_hand", "ours", 20.0),
        ]
        if number == 2:
            rows[-1]["mismatch"] = "raw gave 3, this gave 2"
        runs.append(write_run(tmp_path, number, rows))
    return runs


def test_the_table_gives_ranges_targets_and_verdicts(three_runs: list[Path]) -> None:
    lines = ranges.report([ranges.load_run(path) for path in three_runs]).splitlines()
    assert lines[0].startswith("Lowest-highest time ratio to the raw driver")
    assert "over 3 runs (2026-12-01T09:00:00+00:00, 2026-12-02" in lines[0]
    assert lines[2] == (
        "| scenario | ours | ours per round | ours-sync | sync MongoEngine | Beanie"
        " | ours-sync vs sync MongoEngine | issue 17 target (ours)"
        " | met in every run | met by the median |"
    )
    assert lines[4:] == [
        "| `read_iter` | 1.20-1.40x | 1.10-1.30x | 2.00-3.00x | 9.00-15.00x | -"
        " | 3.00-6.00x as fast | <= 1.3x | no (2 of 3 runs) | yes (1.25x) |",
        "| `refs_by_hand` | 2.00x (1 failed) | - | - | - | - | - |  |  |  |",
        "| `gridfs_get` | 1.05-1.25x | - | - | - | - | - | <= 1x (>= 1x throughput)"
        " | no (0 of 3 runs) | no (1.15x) |",
    ]


def test_a_target_missed_by_no_run(tmp_path: Path) -> None:
    paths = [
        write_run(tmp_path, number, [row("insert_bulk", "ours", ratio * 10)])
        for number, ratio in enumerate([1.9, 2.0], start=1)
    ]
    runs = [ranges.load_run(path) for path in paths]
    assert ranges.verdicts(runs, "insert_bulk") == ("yes", "yes (1.95x)")
    assert ranges.verdicts(runs, "refs_by_hand") == ("", "")  # no target
    assert ranges.verdicts(runs, "read_list") == ("no figure", "no figure")


def test_the_command_prints_the_table(
    three_runs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert ranges.main([str(path) for path in three_runs]) == 0
    printed = capsys.readouterr().out
    assert "| `read_iter` | 1.20-1.40x |" in printed


def test_a_run_in_which_raw_failed_counts_as_failed(tmp_path: Path) -> None:
    """Without raw's median no library has a ratio in that run: the run shows
    as failed in their cells, not as a run that never happened."""
    paths = []
    for number in (1, 2, 3):
        rows = [row("refs_by_hand", "ours", 20.0 + number)]
        if number == 2:
            rows = [
                {"scenario": "refs_by_hand", "library": "raw", "error": "timeout"},
                {"scenario": "refs_by_hand", "library": "ours", "median_ms": 22.0},
                {"scenario": "refs_by_hand", "library": "beanie", "skipped": "n/a"},
            ]
            report = {"meta": {"date": "2026-12-02T09:00:00+00:00"}, "results": rows}
            path = tmp_path / "run-2.json"
            path.write_text(json.dumps(report))
            paths.append(path)
        else:
            paths.append(write_run(tmp_path, number, rows))
    runs = [ranges.load_run(path) for path in paths]
    assert ranges.cell(runs, ("refs_by_hand", "ours")) == "2.10-2.30x (1 failed)"
    assert ranges.cell(runs, ("refs_by_hand", "beanie")) == "-"


def test_equal_figures_print_once() -> None:
    assert ranges.span([1.234, 1.2349]) == "1.23x"
    assert ranges.span([]) == "-"
