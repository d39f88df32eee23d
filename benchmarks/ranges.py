#!/usr/bin/env python
"""Ranges over several full runs: the markdown table of docs/benchmarks.md.

Each ``run.py --out PREFIX`` writes ``PREFIX.json``; given several of them, this
prints per scenario the lowest and highest time ratio to the raw driver that
each library had (ours, ours on a sync alias, sync MongoEngine, Beanie) and ours'
ratio taken round by round (``harness.per_round``, its median), how
many times as fast ours-sync was as sync MongoEngine, and each issue-17 target
(run.RATIO_TARGETS) with whether every run and the median run met it.

    python benchmarks/ranges.py benchmarks/results/run-1.json run-2.json ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from run import RATIO_TARGETS, SYNC_PAIRS  # noqa: E402

# Column heading of the ratios to raw of each library but ours, whose two
# columns (ratio of the medians, median ratio per round) come first.
OTHER_LIBRARIES = {
    "ours-sync": "ours-sync",
    "mongoengine": "sync MongoEngine",
    "beanie": "Beanie",
}
# A row with any of these did not measure what raw did: it gives no figure.
FAILURES = ("error", "mismatch", "unstable")

Case = tuple[str, str]  # (scenario, library)


@dataclasses.dataclass
class Run:
    """One run.py result file: its date and, per case, the median and ratio
    (and, per scenario, ours' median ratio round by round)."""

    path: Path
    date: str
    medians: dict[Case, float]
    ratios: dict[Case, float]
    failed: set[Case]
    per_round: dict[str, float]


def load_run(path: Path) -> Run:
    """Read a JSON written by run.py; failed cases count as failed, not figures,
    and so does every case of a scenario whose raw case failed (no ratio)."""
    report = json.loads(path.read_text())
    medians, ratios, failed, per_round = {}, {}, set(), {}
    for row in report["results"]:
        case = (row["scenario"], row["library"])
        if any(row.get(key) for key in FAILURES) or (
            "ratio" not in row and "skipped" not in row
        ):
            failed.add(case)
        elif "ratio" in row:
            medians[case], ratios[case] = row["median_ms"], row["ratio"]
            if row.get("per_round"):  # ours' rows, since b13b751
                per_round[row["scenario"]] = row["per_round"][0]
    date = report["meta"].get("date", "?")
    return Run(path, date, medians, ratios, failed, per_round)


def span(values: Sequence[float], unit: str = "x") -> str:
    """``"1.21-1.35x"``, one figure when they print alike, ``"-"`` without any."""
    if not values:
        return "-"
    low, high = f"{min(values):.2f}", f"{max(values):.2f}"
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def ratios(runs: Sequence[Run], case: Case) -> list[float]:
    """The case's ratio to raw in each run that has one."""
    return [run.ratios[case] for run in runs if case in run.ratios]


def per_round(runs: Sequence[Run], scenario: str) -> list[float]:
    """Ours' median ratio per round in each run that has one."""
    return [run.per_round[scenario] for run in runs if scenario in run.per_round]


def speedups(runs: Sequence[Run], scenario: str, ours: str, theirs: str) -> list[float]:
    """How many times as fast ``ours`` was as ``theirs``, in each run with both."""
    return [
        run.medians[scenario, theirs] / run.medians[scenario, ours]
        for run in runs
        if (scenario, ours) in run.medians and (scenario, theirs) in run.medians
    ]


def cell(runs: Sequence[Run], case: Case) -> str:
    """The range of a case's ratios, and how many runs it failed in."""
    failed = sum(case in run.failed for run in runs)
    text = span(ratios(runs, case))
    return text if not failed else f"{text} ({failed} failed)"


def target_text(scenario: str) -> str:
    """An issue-17 target as a time ratio (GridFS: a throughput)."""
    most = RATIO_TARGETS.get(scenario)
    if most is None:
        return ""
    if scenario.startswith("gridfs"):
        return f"<= {most:g}x (>= {1 / most:g}x throughput)"
    return f"<= {most:g}x"


def verdicts(runs: Sequence[Run], scenario: str) -> tuple[str, str]:
    """Whether ours met the scenario's target in every run, and in the median
    run (the median of its ratios); blank without a target."""
    most = RATIO_TARGETS.get(scenario)
    if most is None:
        return "", ""
    figures = ratios(runs, (scenario, "ours"))
    if not figures:
        return "no figure", "no figure"
    met = sum(ratio <= most for ratio in figures)
    every = "yes" if met == len(runs) else f"no ({met} of {len(runs)} runs)"
    median = statistics.median(figures)
    return every, f"{'yes' if median <= most else 'no'} ({median:.2f}x)"


def scenarios_in(runs: Sequence[Run]) -> list[str]:
    """The scenarios any run measured, in run.py's order."""
    seen = {scenario for run in runs for scenario, _ in (*run.ratios, *run.failed)}
    return [scenario for scenario in harness.SCENARIOS if scenario in seen]


def table(runs: Sequence[Run]) -> str:
    """The markdown table: one row per scenario."""
    (ours_sync, mongoengine), *_ = SYNC_PAIRS
    header = [
        "scenario",
        "ours",
        "ours per round",
        *OTHER_LIBRARIES.values(),
        "ours-sync vs sync MongoEngine",
        "issue 17 target (ours)",
        "met in every run",
        "met by the median",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario in scenarios_in(runs):
        faster = span(speedups(runs, scenario, ours_sync, mongoengine))
        row = [
            f"`{scenario}`",
            cell(runs, (scenario, "ours")),
            span(per_round(runs, scenario)),
            *(cell(runs, (scenario, library)) for library in OTHER_LIBRARIES),
            faster if faster == "-" else f"{faster} as fast",
            target_text(scenario),
            *verdicts(runs, scenario),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def report(runs: Sequence[Run]) -> str:
    """What the table covers, then the table."""
    dates = ", ".join(run.date for run in runs)
    return (
        f"Lowest-highest time ratio to the raw driver (the median of each run) "
        f"over {len(runs)} runs ({dates}):\n\n{table(runs)}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results", nargs="+", type=Path, metavar="JSON", help="run.py result files"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [load_run(path) for path in args.results]
    print(report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
