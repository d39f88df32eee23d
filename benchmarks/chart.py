"""A bar chart of each library's time relative to the raw driver, drawn with Pillow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

COLOURS = {
    "raw": (120, 120, 120),
    "ours": (31, 119, 180),
    "ours-sync": (148, 103, 189),
    "mongoengine": (255, 127, 14),
    "beanie": (44, 160, 44),
}
TICKS = (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200)


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


TARGET_COLOUR = (20, 20, 20)


def draw(
    rows: list[dict], path: Path, title: str, targets: dict[str, float] | None = None
) -> None:
    """Write a PNG: one group per scenario, one bar per library (log scale).

    ``rows`` are the result rows of run.py (``scenario``, ``library``,
    ``ratio``); rows without a ratio (skipped, failed), or that did other work
    than raw (``mismatch``, ``unstable``), are left out.
    ``targets`` maps a scenario to the ratio ours must stay under, drawn as a
    dashed line across that scenario's group.
    """
    targets = targets or {}
    rows = [
        row
        for row in rows
        if row.get("ratio") is not None
        and not any(row.get(key) for key in ("error", "mismatch", "unstable"))
    ]
    scenarios: list[str] = []
    libraries: list[str] = []
    for row in rows:
        if row["scenario"] not in scenarios:
            scenarios.append(row["scenario"])
        if row["library"] not in libraries:
            libraries.append(row["library"])
    ratios = {(r["scenario"], r["library"]): r["ratio"] for r in rows if r.get("ratio")}

    width, height = 1500, 720
    left, right, top, bottom = 90, 30, 80, 150
    image = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(image)
    small, normal, big = _font(13), _font(15), _font(20)
    pen.text((left, 20), title, fill="black", font=big)
    pen.text(
        (left, 48),
        "median time / raw AsyncMongoClient median (lower is better; log scale)",
        fill=(80, 80, 80),
        font=normal,
    )

    values = list(ratios.values()) or [1.0]
    values += [targets[s] for s in scenarios if s in targets]
    low = min(0.5, min(values) / 1.2)
    high = max(2.0, max(values) * 1.3)
    plot_h = height - top - bottom

    def y_of(ratio: float) -> float:
        span = math.log(high) - math.log(low)
        return top + plot_h * (1 - (math.log(ratio) - math.log(low)) / span)

    for tick in TICKS:
        if low <= tick <= high:
            y = y_of(tick)
            colour = (200, 0, 0) if tick == 1 else (225, 225, 225)
            pen.line([(left, y), (width - right, y)], fill=colour, width=1)
            pen.text((10, y - 8), f"{tick:g}x", fill="black", font=small)
    pen.line([(left, top), (left, height - bottom)], fill="black")

    group_w = (width - left - right) / max(len(scenarios), 1)
    bar_w = min(28.0, (group_w - 16) / max(len(libraries), 1))
    base_y = y_of(1.0)
    for g, scenario in enumerate(scenarios):
        x0 = left + g * group_w + (group_w - bar_w * len(libraries)) / 2
        for i, library in enumerate(libraries):
            ratio = ratios.get((scenario, library))
            if ratio is None:
                continue
            x = x0 + i * bar_w
            y = y_of(ratio)
            y_top, y_bottom = min(y, base_y), max(y, base_y)
            if y_bottom - y_top < 3:  # keep bars near 1x (raw itself) visible
                y_top, y_bottom = y - 1.5, y + 1.5
            pen.rectangle(
                [x + 1, y_top, x + bar_w - 1, y_bottom],
                fill=COLOURS.get(library, (150, 100, 200)),
            )
            label = f"{ratio:.1f}" if ratio < 10 else f"{ratio:.0f}"
            pen.text((x + 1, y_top - 15), label, fill="black", font=_font(11))
        if scenario in targets:
            _dashed(
                pen,
                left + g * group_w + 4,
                left + (g + 1) * group_w - 4,
                y_of(targets[scenario]),
            )
        for line, text in enumerate(_label_lines(pen, scenario, small, group_w - 4)):
            text_w = pen.textlength(text, font=small)
            label_x = left + g * group_w + (group_w - text_w) / 2
            label_y = height - bottom + 8 + 16 * line
            pen.text((label_x, label_y), text, fill="black", font=small)

    legend_x = left
    for library in libraries:
        pen.rectangle(
            [legend_x, height - 40, legend_x + 16, height - 24],
            fill=COLOURS.get(library, (150, 100, 200)),
        )
        pen.text((legend_x + 22, height - 42), library, fill="black", font=normal)
        legend_x += 160
    if targets:
        _dashed(pen, legend_x, legend_x + 30, height - 32)
        pen.text(
            (legend_x + 36, height - 42), "target (ours)", fill="black", font=normal
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _label_lines(pen: Any, label: str, font: Any, width: float) -> list[str]:
    """A scenario's name on one line, or on two split at an underscore when one
    line is wider than its group (``refs_one_by_one`` ran into its neighbour)."""
    if pen.textlength(label, font=font) <= width or "_" not in label:
        return [label]
    cuts = [i for i, char in enumerate(label) if char == "_"]
    cut = min(cuts, key=lambda i: abs(len(label) - 2 * i))
    return [label[: cut + 1], label[cut + 1 :]]


def _dashed(pen: Any, x_start: float, x_end: float, y: float) -> None:
    """A horizontal dashed line: a target."""
    x = x_start
    while x < x_end:
        pen.line([(x, y), (min(x + 6, x_end), y)], fill=TARGET_COLOUR, width=2)
        x += 10
