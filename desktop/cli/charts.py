"""PNG charts for the reports `familiar eval` and `familiar bench` write: bars per group and lines over steps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

CHART_SIZE = (720, 360)
MARGIN = 48
COLOURS = ((66, 133, 244), (219, 68, 55), (244, 180, 0), (15, 157, 88), (171, 71, 188), (0, 172, 193))


def _chart(title: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", CHART_SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 12), title, fill="black")
    return image, draw


def _axes(draw: ImageDraw.ImageDraw, low: float, high: float) -> tuple[int, int, int, int]:
    """Draw the axes with three y labels; returns the plot box (left, top, right, bottom)."""
    left, top, right, bottom = MARGIN, MARGIN, CHART_SIZE[0] - 150, CHART_SIZE[1] - MARGIN
    draw.line((left, top, left, bottom, right, bottom), fill="black")
    for fraction in (0.0, 0.5, 1.0):
        y = bottom - fraction * (bottom - top)
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((4, y - 6), f"{low + fraction * (high - low):.3g}", fill="black")
    return left, top, right, bottom


def _legend(draw: ImageDraw.ImageDraw, names: Sequence[str]) -> None:
    for index, name in enumerate(names):
        x, y = CHART_SIZE[0] - 140, MARGIN + 18 * index
        draw.rectangle((x, y, x + 10, y + 10), fill=COLOURS[index % len(COLOURS)])
        draw.text((x + 16, y), name[:20], fill="black")


def bar_chart(path: Path, title: str, groups: Sequence[str], series: dict[str, list[float | None]]) -> None:
    """Grouped bars on a 0-1 scale (cosines below 0 are drawn at 0); a missing value leaves a gap."""
    image, draw = _chart(title)
    left, top, right, bottom = _axes(draw, 0.0, 1.0)
    slot = (right - left) / max(len(groups), 1)
    width = slot * 0.8 / max(len(series), 1)
    for g, group in enumerate(groups):
        draw.text((left + g * slot + 4, bottom + 6), group[:14], fill="black")
        for s, values in enumerate(series.values()):
            value = values[g]
            if value is None:
                continue
            x = left + g * slot + slot * 0.1 + s * width
            draw.rectangle(
                (x, bottom - min(max(value, 0.0), 1.0) * (bottom - top), x + width - 2, bottom),
                fill=COLOURS[s % len(COLOURS)],
            )
    _legend(draw, list(series))
    image.save(path)


def line_chart(path: Path, title: str, curves: dict[str, list[tuple[float, float]]]) -> None:
    """One polyline (with dots) per curve, sharing the axes."""
    image, draw = _chart(title)
    points = [p for curve in curves.values() for p in curve] or [(0.0, 0.0)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    low, high = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1.0
    left, top, right, bottom = _axes(draw, low, high)
    x_low, x_high = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - x_low) / (x_high - x_low) * (right - left), bottom - (y - low) / (high - low) * (
            bottom - top
        )

    for index, curve in enumerate(curves.values()):
        colour = COLOURS[index % len(COLOURS)]
        placed = [at(x, y) for x, y in curve]
        if len(placed) > 1:
            draw.line(placed, fill=colour, width=2)
        for x, y in placed:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    draw.text((right - 40, bottom + 6), "epoch", fill="black")
    _legend(draw, list(curves))
    image.save(path)
