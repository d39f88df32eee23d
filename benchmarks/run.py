#!/usr/bin/env python
"""Benchmark mongoengine-async against the raw driver, sync MongoEngine and Beanie.

One run measures every scenario (harness.SCENARIOS) for every library on the
same ``mongod``: a throwaway one-node replica set, or ``$MONGODB_URI``. Each
case is run once to warm up (its round trips are counted then), then
``--repeat`` times, or more for a short scenario (``--min-time``); the table
shows medians and each median's ratio to the raw ``AsyncMongoClient`` median
of the same scenario. Every library's result
(documents read, author names joined, bytes read, documents left) must equal
the raw driver's, or the row is marked MISMATCH and the exit code is 1.

    python benchmarks/run.py                      # full run (a few minutes)
    python benchmarks/run.py --quick --repeat 1   # smoke test
    python benchmarks/run.py --only read_list refs_batch --profile read_list:ours
    python benchmarks/run.py --only refs_one_by_one --calls --repeat 1 --min-time 0

Results: ``benchmarks/results/latest.json`` and ``latest.png`` (``quick.*``
with ``--quick``, or ``--out PREFIX``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import datetime
import functools
import importlib
import io
import json
import os
import platform
import pstats
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import chart  # noqa: E402
import harness  # noqa: E402
import mongoengine  # noqa: E402
import pymongo  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from mongoengine_async import connect_async, disconnect_async  # noqa: E402
from mongoengine_async.testing import mongodb_uri  # noqa: E402

RESULTS = HERE / "results"
LIBRARY_MODULES = {
    "raw": "scenarios_raw",
    "ours": "scenarios_ours",
    "ours-sync": "scenarios_ours_sync",  # ours on a connect() alias
    "mongoengine": "scenarios_mongoengine",
    "beanie": "scenarios_beanie",  # imported only if beanie is installed
}

# Targets of issue 6 (ratios are time ratios to raw: lower is better).
READ_MAX_RATIO = 3.0
SELECT_RELATED_MAX_VS_IN = 1.3
GRIDFS_MIN_THROUGHPUT = 0.9  # of raw bucket throughput, i.e. time ratio <= 1/0.9
STREAM_MAX_PEAK_MB = 32.0
CASCADE_MAX_ROUND_TRIPS = 12  # one per book would be 10,000+

# Targets of issue 17: the most a scenario of ours may take, as a time ratio to
# raw (gridfs_get: a throughput of at least 1.0x raw). Drawn as lines in the chart.
RATIO_TARGETS = {
    "insert_bulk": 2.0,
    "insert_one": 1.1,
    "save_delta": 1.15,
    "read_list": 1.4,
    "read_iter": 1.3,
    "refs_batch": 1.1,
    "refs_one_by_one": 1.05,
    "concurrent": 1.15,
    "cascade_delete": 1.2,
    "gridfs_get": 1.0,
}
# The libraries in every round of timed runs: the ratio the targets judge.
PAIRED = ("raw", "ours")
# What a sync user who changes only the import is compared with.
SYNC_PAIRS = (("ours-sync", "mongoengine"),)
# A row with any of these did not measure what raw did: it judges no target.
FAILURES = ("error", "mismatch", "unstable")


def failed(row: dict) -> bool:
    """Whether a result row failed, or did other work than raw's."""
    return any(row.get(key) for key in FAILURES)


def load_libraries(wanted: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Import the library modules; Beanie only when it is installed."""
    modules, missing = {}, {}
    for name in wanted:
        try:
            modules[name] = importlib.import_module(LIBRARY_MODULES[name])
        except ImportError as error:
            if name != "beanie":
                raise
            missing[name] = f"skipped: beanie is not installed ({error})"
    return modules, missing


async def measure(
    scenarios: list[str],
    modules: dict[str, Any],
    missing: dict[str, str],
    ctx: harness.Context,
    repeat: int,
    counter: harness.RoundTrips,
    profile: set[tuple[str, str]] = frozenset(),
    log=None,
    min_time: float = 0.0,
    calls: bool = False,
) -> list[dict]:
    """Measure every scenario for every library; returns the result rows.

    The timed runs of a scenario are interleaved across libraries (raw, ours,
    ..., ours, ..., raw, ...), so a drift of the machine or the server during
    the scenario (checkpoints, cache eviction, other load) hits them all alike;
    the order turns each round. Raw and ours, whose ratio the targets judge,
    run in every round: ``repeat`` rounds, or more when their warm-up runs show
    that more fit in ``min_time`` seconds (``harness.rounds``). Each other
    library runs in ``repeat`` of those rounds, spread evenly (``harness.spread``),
    so its seconds do not cut the rounds of the pair.
    With ``calls``, one more run of each case counts its Python calls.
    """
    log = log or functools.partial(print, flush=True)
    rows = []
    for scenario in scenarios:
        cases = []
        for library in LIBRARY_MODULES:
            if library not in modules and library not in missing:
                continue
            row: dict[str, Any] = {"scenario": scenario, "library": library}
            rows.append(row)
            module = modules.get(library)
            reason = missing.get(library) or harness.unavailable(module, scenario)
            if reason:
                row["skipped"] = reason
                if reason != "not applicable":
                    log(f"  {scenario:16} {library:12} {reason}")
                continue
            case = await _guarded(row, log, _warm_up(row, module, ctx, counter))
            if case is not None:
                cases.append((row, case))
        paired = sum(row["warm_up_s"] for row, _ in cases if row["library"] in PAIRED)
        count = harness.rounds(repeat, paired, min_time)
        others_run = harness.spread(repeat, count)  # the rounds the others join
        for number in range(count):
            here = [
                (row, case)
                for row, case in cases
                if row["library"] in PAIRED or number in others_run
            ]
            turn = number % max(len(here), 1)  # each library takes each place in turn
            for row, case in here[turn:] + here[:turn]:
                if "error" not in row:
                    await _guarded(row, log, _timed_run(row, case))
        raw_row = next((row for row, _ in cases if row["library"] == "raw"), None)
        for row, case in cases:
            if "error" in row:
                continue
            await _guarded(row, log, _finish(row, case, ctx, profile, modules))
            if calls:
                row["calls"] = await _guarded(row, log, _count_calls(case))
            _compare(row, raw_row)
            log(
                f"  {scenario:16} {row['library']:12} {row['median_ms']:10.1f} ms"
                + (f"  {row['ratio']:6.2f}x" if row.get("ratio") else "")
                + (f"  calls {row['calls_ratio']:.3f}x" if "calls_ratio" in row else "")
                + ("  MISMATCH" if row.get("mismatch") else "")
            )
    return rows


async def _guarded(row: dict, log, step) -> Any:
    """Run one step of a case; a failure is reported on its row, not raised."""
    try:
        return await step
    except Exception as error:  # report and carry on with the others
        row["error"] = f"{type(error).__name__}: {error}"
        log(f"  {row['scenario']:16} {row['library']:12} FAILED {row['error']}")
        return None


async def _warm_up(
    row: dict, module: Any, ctx: harness.Context, counter: harness.RoundTrips
) -> harness.Case:
    """Build the case and run it once, counting the round trips of ``run``."""
    case = await module.SCENARIOS[row["scenario"]](ctx)
    row["call"] = case.label
    row["warm_up_s"], row["summary"] = await harness.run_once(case, counter)
    row["round_trips"], row["commands"] = counter.count, dict(counter.names)
    row["samples_ms"] = []
    return case


async def _timed_run(row: dict, case: harness.Case) -> None:
    elapsed, again = await harness.run_once(case)
    row["samples_ms"].append(round(elapsed * 1000, 3))
    if again != row["summary"]:
        row["unstable"] = f"summary changed between runs: {again!r}"


async def _finish(
    row: dict, case: harness.Case, ctx, profile: set, modules: dict
) -> None:
    """Median, and the memory peak and profile where they are asked for."""
    row["median_ms"] = statistics.median(row["samples_ms"])
    if case.memory:
        row["peak_mb"] = round(await harness.peak_memory(case), 2)
    if case.scale:
        row["scale"] = await case.scale()
    key = (row["scenario"], row["library"])
    if key in profile:
        row["profile"] = await _profile(modules[row["library"]], *key, ctx)


def _compare(row: dict, raw_row: dict | None) -> None:
    if raw_row is None or "median_ms" not in raw_row:
        return
    row["ratio"] = row["median_ms"] / raw_row["median_ms"]
    if row["library"] == "ours":  # raw's partner in every round
        row["per_round"] = harness.per_round(raw_row["samples_ms"], row["samples_ms"])
    if row.get("calls") and raw_row.get("calls"):
        row["calls_ratio"] = row["calls"] / raw_row["calls"]
    if row["round_trips"] < raw_row["round_trips"]:
        # Not a failure (Beanie joins in one aggregate where raw sends two finds),
        # but a ratio that may owe to the round trip rather than the library.
        row["fewer_trips"] = (
            f"{row['round_trips']} round trips where raw sent {raw_row['round_trips']}"
        )
    if row["summary"] != raw_row["summary"]:
        row["mismatch"] = (
            f"raw gave {raw_row['summary']!r}, this gave {row['summary']!r}"
        )


async def _count_calls(case: harness.Case) -> int:
    """The Python and builtin calls of one more run (cProfile's count).

    Unlike time, the count does not move with the machine's load: a change
    to our code shows in it at once, as the calls it adds or removes.
    """
    await harness.call(case.before)
    profiler = cProfile.Profile()
    profiler.enable()
    await harness.call(case.run)
    profiler.disable()
    return pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]


async def _profile(module: Any, scenario: str, library: str, ctx) -> dict:
    """One more run under cProfile; returns the top functions as text."""
    case = await module.SCENARIOS[scenario](ctx)
    await harness.call(case.before)
    profiler = cProfile.Profile()
    profiler.enable()
    await harness.call(case.run)
    profiler.disable()
    RESULTS.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(RESULTS / f"profile-{scenario}-{library}.prof")
    report = {}
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(order).print_stats(15)
        report[order] = out.getvalue()
    return report


def check_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, each with the figures it was judged on.

    A case of ours that failed, or disagreed with raw, gives no figure and
    misses every target it is judged by; another library's gives no figure.
    """
    ours_failed = [
        row["scenario"] for row in rows if row["library"] == "ours" and failed(row)
    ]

    def get(scenario: str, library: str) -> dict:
        for row in rows:
            if (row["scenario"], row["library"]) == (scenario, library):
                return {} if failed(row) else row
        return {}

    targets = []

    def add(name: str, met: bool | None, detail: str, *scenarios: str) -> None:
        """A target judged on ours' ``scenarios``."""
        if missing := [s for s in scenarios if s in ours_failed]:
            met = False
            detail = f"ours' {' and '.join(missing)} failed or disagreed with raw"
        targets.append({"target": name, "met": met, "detail": detail})

    for scenario in ("read_iter", "read_list"):
        ratio = get(scenario, "ours").get("ratio")
        add(
            f"{scenario}: ours <= {READ_MAX_RATIO:g}x raw",
            None if ratio is None else ratio <= READ_MAX_RATIO,
            "no figure" if ratio is None else f"{ratio:.2f}x",
            scenario,
        )
    ours, raw_in = get("refs_batch", "ours"), get("refs_batch", "raw")
    beanie = get("refs_batch", "beanie")
    if "median_ms" in ours and "median_ms" in raw_in:
        vs_in = ours["median_ms"] / raw_in["median_ms"]
        floor = get("refs_documents", "ours").get("ratio")
        add(
            f"select_related <= {SELECT_RELATED_MAX_VS_IN:g}x hand-written $in",
            vs_in <= SELECT_RELATED_MAX_VS_IN,
            f"{vs_in:.2f}x"
            + (
                ""
                if floor is None
                else f" (its documents alone, unjoined: {floor:.2f}x)"
            ),
        )
    else:
        add("select_related <= 1.3x hand-written $in", None, "no figure", "refs_batch")
    by_hand = get("refs_by_hand", "ours")
    if "median_ms" in ours and "median_ms" in by_hand:
        vs_hand = ours["median_ms"] / by_hand["median_ms"]
        add(
            f"select_related <= {SELECT_RELATED_MAX_VS_IN:g}x our own hand-written $in",
            vs_hand <= SELECT_RELATED_MAX_VS_IN,
            f"{vs_hand:.2f}x",
            "refs_batch",
            "refs_by_hand",
        )
    if "median_ms" in ours and "median_ms" in beanie:
        add(
            "select_related faster than Beanie fetch_links",
            ours["median_ms"] < beanie["median_ms"],
            f"{ours['median_ms']:.1f} ms vs {beanie['median_ms']:.1f} ms",
        )
    else:
        add(
            "select_related faster than Beanie fetch_links",
            None,
            "no figure",
            "refs_batch",
        )
    for scenario in ("gridfs_put", "gridfs_get"):
        ratio = get(scenario, "ours").get("ratio")
        add(
            f"{scenario}: ours >= {GRIDFS_MIN_THROUGHPUT:g}x raw throughput",
            None if ratio is None else 1 / ratio >= GRIDFS_MIN_THROUGHPUT,
            "no figure" if ratio is None else f"{1 / ratio:.2f}x throughput",
            scenario,
        )
    peak = get("gridfs_stream", "ours").get("peak_mb")
    add(
        f"gridfs_stream: ours peak < {STREAM_MAX_PEAK_MB:g} MB above baseline",
        None if peak is None else peak < STREAM_MAX_PEAK_MB,
        "no figure" if peak is None else f"{peak:.1f} MB",
        "gridfs_stream",
    )
    trips = get("cascade_delete", "ours").get("round_trips")
    add(
        f"cascade_delete: ours <= {CASCADE_MAX_ROUND_TRIPS} round trips",
        None if trips is None else trips <= CASCADE_MAX_ROUND_TRIPS,
        "no figure"
        if trips is None
        else f"{trips} ({get('cascade_delete', 'ours').get('commands')})",
        "cascade_delete",
    )
    for scenario, most in RATIO_TARGETS.items():
        ratio = get(scenario, "ours").get("ratio")
        if scenario.startswith("gridfs"):  # a throughput target
            name = f"{scenario}: ours >= {1 / most:g}x raw throughput"
            figure = "" if ratio is None else f"{1 / ratio:.2f}x throughput"
        else:
            name = f"{scenario}: ours <= {most:g}x raw"
            figure = "" if ratio is None else f"{ratio:.2f}x"
        add(
            f"issue 17: {name}",
            None if ratio is None else ratio <= most,
            figure or "no figure",
            scenario,
        )
    return targets


def sync_comparison(rows: list[dict]) -> list[str]:
    """Each scenario's ``ours-sync`` time against sync MongoEngine's."""
    medians = {
        (row["scenario"], row["library"]): row["median_ms"]
        for row in rows
        if "median_ms" in row and not failed(row)
    }
    lines = []
    for ours, theirs in SYNC_PAIRS:
        for scenario in harness.SCENARIOS:
            if (scenario, ours) in medians and (scenario, theirs) in medians:
                mine, other = medians[scenario, ours], medians[scenario, theirs]
                lines.append(
                    f"  {scenario:16} {ours} {mine:9.1f} ms, {theirs} "
                    f"{other:9.1f} ms: {other / mine:5.2f}x as fast"
                )
    return lines


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'scenario':16} {'library':12} {'call':38} {'median ms':>10} "
        f"{'vs raw':>7} {'trips':>6}  notes"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for row in rows:
        if row.get("skipped") == "not applicable":
            continue
        scenario = row["scenario"] if row["scenario"] != previous else ""
        previous = row["scenario"]
        if "median_ms" not in row:
            note = row.get("skipped") or row.get("error", "")
            blank = f"{'':38} {'-':>10} {'':>7} {'':>6}"
            lines.append(f"{scenario:16} {row['library']:12} {blank}  {note}")
            continue
        ratio = f"{row['ratio']:.2f}x" if row.get("ratio") is not None else "-"
        notes = []
        if row.get("per_round"):
            median, first, third = row["per_round"]
            notes.append(f"per round {median:.2f}x ({first:.2f}-{third:.2f}x)")
        if "peak_mb" in row:
            notes.append(f"peak {row['peak_mb']:.1f} MB")
        if "calls" in row:
            ratio_text = f" ({row['calls_ratio']:.3f}x)" if "calls_ratio" in row else ""
            notes.append(f"{row['calls']} calls{ratio_text}")
        if row.get("fewer_trips"):
            notes.append(f"fewer trips: {row['fewer_trips']}")
        if row.get("mismatch"):
            notes.append(f"MISMATCH: {row['mismatch']}")
        if row.get("unstable"):
            notes.append(f"UNSTABLE: {row['unstable']}")
        line = (
            f"{scenario:16} {row['library']:12} {row.get('call', '')[:38]:38} "
            f"{row['median_ms']:10.1f} {ratio:>7} {row['round_trips']:>6}  "
            + "; ".join(notes)
        )
        lines.append(line.rstrip())
    return "\n".join(lines)


def format_scale(rows: list[dict]) -> list[str]:
    """Per count: µs per document written and read, and the bytes a loaded
    document holds, also as a multiple of a raw dict's."""
    raw = next((r["scale"] for r in rows if r["library"] == "raw" and "scale" in r), {})
    lines = []
    for row in rows:
        for count, figures in row.get("scale", {}).items():
            raw_bytes = raw.get(count, {}).get("bytes")
            versus = f" ({figures['bytes'] / raw_bytes:.2f}x raw)" if raw_bytes else ""
            lines.append(
                f"  {row['library']:12} {count:>7,}: write {figures['write_us']:6.1f}"
                f" µs/doc, read {figures['read_us']:5.1f} µs/doc, "
                f"{figures['bytes']:6.0f} bytes/doc{versus}"
            )
    return lines


def format_targets(targets: list[dict]) -> str:
    marks = {True: "met", False: "MISSED", None: "n/a"}
    return "\n".join(
        f"  [{marks[t['met']]:>6}] {t['target']}: {t['detail']}" for t in targets
    )


def write_results(report: dict, prefix: Path) -> tuple[Path, Path]:
    """Write ``PREFIX.json`` and ``PREFIX.png``; returns both paths."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = prefix.with_suffix(".json"), prefix.with_suffix(".png")
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(json_path)
    meta = report["meta"]
    chart.draw(
        report["results"],
        png_path,
        f"mongoengine-async benchmarks ({meta['sizes_name']}, median of "
        f"{meta['repeat']}+, {meta['date'][:10]})",
        targets=RATIO_TARGETS,
    )
    return json_path, png_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs per case, at least"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        metavar="SECONDS",
        help="give a short scenario more timed runs, as many as take this long "
        f"(up to {harness.MAX_ROUNDS}; default 10, 0 with --quick)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(harness.SCENARIOS),
        metavar="SCENARIO",
        help="scenarios to run: " + ", ".join(harness.SCENARIOS),
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument(
        "--libraries",
        nargs="+",
        choices=list(LIBRARY_MODULES),
        default=list(LIBRARY_MODULES),
        help="libraries to measure (raw is always)",
    )
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="SCENARIO:LIBRARY",
        help="after measuring, cProfile one more run and print the top 15",
    )
    parser.add_argument(
        "--calls",
        action="store_true",
        help="count the Python calls of one more run of each case, and their "
        "ratio to raw's (steady where times are not)",
    )
    parser.add_argument(
        "--out", type=Path, help="results prefix (default: results/latest)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.min_time is None:
        args.min_time = 0.0 if args.quick else 10.0
    if "raw" not in args.libraries:
        args.libraries.insert(0, "raw")
    return args


async def run(args: argparse.Namespace) -> int:
    sizes = harness.QUICK if args.quick else harness.FULL
    scenarios = args.only or list(harness.SCENARIOS)
    profile = {tuple(p.split(":", 1)) for p in args.profile}
    modules, missing = load_libraries(args.libraries)
    for library, reason in missing.items():
        print(f"note: {library} {reason}")

    counter = harness.RoundTrips()
    db_name = f"bench_{uuid.uuid4().hex[:10]}"
    started = datetime.datetime.now(datetime.timezone.utc)
    with mongodb_uri() as uri:
        client_options = {
            "event_listeners": [counter],
            "uuidRepresentation": "standard",
        }
        raw_client: AsyncMongoClient = AsyncMongoClient(uri, **client_options)
        beanie_client = None
        try:
            if "ours" in modules:
                await connect_async(
                    db=db_name, alias="default", host=uri, **client_options
                )
            if "ours-sync" in modules:
                mongoengine.connect(
                    db=db_name,
                    alias=modules["ours-sync"].ALIAS,
                    host=uri,
                    **client_options,
                )
            if "mongoengine" in modules:
                mongoengine.connect(
                    db=db_name,
                    alias=modules["mongoengine"].ALIAS,
                    host=uri,
                    **client_options,
                )
            ctx = harness.Context(db=raw_client[db_name], sizes=sizes)
            if "beanie" in modules:
                beanie_client = await modules["beanie"].setup(
                    ctx, uri, **client_options
                )
            server = await raw_client.admin.command("buildInfo")
            print(
                f"mongod {server['version']} at {uri.split('@')[-1]}; "
                f"sizes {sizes}; median of {args.repeat} runs or more "
                f"(short scenarios: as many as take {args.min_time:g} s)",
                flush=True,
            )
            rows = await measure(
                scenarios,
                modules,
                missing,
                ctx,
                args.repeat,
                counter,
                profile,
                min_time=args.min_time,
                calls=args.calls,
            )
        finally:
            await raw_client.drop_database(db_name)
            await raw_client.close()
            if beanie_client is not None:
                await beanie_client.close()
            if "ours" in modules:
                await disconnect_async("default")
            for sync_library in ("ours-sync", "mongoengine"):
                if sync_library in modules:
                    mongoengine.disconnect(modules[sync_library].ALIAS)

    targets = check_targets(rows)
    report = {
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "sizes_name": "quick" if args.quick else "full",
            "sizes": dataclasses.asdict(sizes),
            "repeat": args.repeat,
            "min_time_s": args.min_time,
            "mongod": server["version"],
            "python": platform.python_version(),
            "pymongo": pymongo.version,
            "mongoengine": mongoengine.__version__,
            "beanie": _version("beanie"),
            "cpus": os.cpu_count(),
            "loadavg_after": os.getloadavg(),
            "note": "time ratios are median / raw AsyncMongoClient median, same run",
        },
        "results": rows,
        "targets": targets,
    }
    print()
    print(format_table(rows))
    print("\nTargets (issues 6 and 17):")
    print(format_targets(targets))
    if scale_lines := format_scale(rows):
        print("\nScale (per document; bytes held by a loaded document):")
        print("\n".join(scale_lines))
    if sync_lines := sync_comparison(rows):
        print("\nSync aliases (a user who changed only the import):")
        print("\n".join(sync_lines))
    for row in rows:
        for order, text in row.get("profile", {}).items():
            print(f"\ncProfile of {row['scenario']} / {row['library']}, by {order}:")
            print(text)
    prefix = args.out or RESULTS / ("quick" if args.quick else "latest")
    json_path, png_path = write_results(report, prefix)
    print(f"\nwrote {json_path} and {png_path}")
    failed = [
        r for r in rows if r.get("mismatch") or r.get("error") or r.get("unstable")
    ]
    if failed:
        print(f"{len(failed)} case(s) failed or disagreed with the raw driver")
        return 1
    return 0


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
