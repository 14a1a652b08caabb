"""PNG charts for the reports `familiar eval` and `familiar bench` write: grouped bars (with value labels and,
where the data has standard errors, error bars) and lines over epochs, each with a legend beside the plot.

A chart with no value to draw is not written: the functions return False and the report says so instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CHART_SIZE = (900, 420)
MARGIN = 56
LEGEND_WIDTH = 220
COLOURS = ((66, 133, 244), (219, 68, 55), (244, 180, 0), (15, 157, 88), (171, 71, 188), (0, 172, 193))
GRID = (225, 225, 225)
MAX_POINT_LABELS = 12
"""A curve with more points than this labels only its last one."""
MAX_X_TICKS = 8
"""More distinct x values than this are labelled at this many evenly spaced ticks instead."""

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _fonts() -> tuple[Font, Font, Font]:
    """Title, axis/legend and value-label fonts (Pillow's built-in scalable font)."""
    return ImageFont.load_default(size=18), ImageFont.load_default(size=14), ImageFont.load_default(size=12)


class _Canvas:
    """A white chart with its title, a plot box left of the legend, and a y axis from `low` to `high`."""

    def __init__(self, title: str, low: float, high: float) -> None:
        self.image = Image.new("RGB", CHART_SIZE, "white")
        self.draw = ImageDraw.Draw(self.image)
        self.title_font, self.font, self.small = _fonts()
        self.draw.text((MARGIN, 14), title, fill="black", font=self.title_font)
        self.left, self.top = MARGIN, MARGIN
        self.right, self.bottom = CHART_SIZE[0] - LEGEND_WIDTH - 16, CHART_SIZE[1] - MARGIN
        self.low, self.high = low, high
        for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
            y = self.y(low + fraction * (high - low))
            self.draw.line((self.left, y, self.right, y), fill=GRID)
            label = f"{low + fraction * (high - low):.3g}"
            width = self.draw.textlength(label, font=self.small)
            self.draw.text((self.left - 6 - width, y - 7), label, fill="black", font=self.small)
        self.draw.line((self.left, self.top, self.left, self.bottom, self.right, self.bottom), fill="black")

    def y(self, value: float) -> float:
        clipped = min(max(value, self.low), self.high)
        return self.bottom - (clipped - self.low) / (self.high - self.low) * (self.bottom - self.top)

    def centred(self, x: float, y: float, text: str, font: Font) -> None:
        self.draw.text((x - self.draw.textlength(text, font=font) / 2, y), text, fill="black", font=font)

    def fitted(self, text: str, width: float, font: Font) -> str:
        """`text`, cut with an ellipsis to fit `width` pixels."""
        if self.draw.textlength(text, font=font) <= width:
            return text
        while text and self.draw.textlength(text + "…", font=font) > width:
            text = text[:-1]
        return text + "…"

    def legend(self, names: Sequence[str]) -> None:
        x = CHART_SIZE[0] - LEGEND_WIDTH
        for index, name in enumerate(names):
            y = self.top + 24 * index
            self.draw.rectangle((x, y + 2, x + 14, y + 16), fill=COLOURS[index % len(COLOURS)])
            self.draw.text((x + 22, y), self.fitted(name, LEGEND_WIDTH - 26, self.font), fill="black", font=self.font)

    def save(self, path: Path) -> None:
        self.image.save(path)


def bar_chart(
    path: Path,
    title: str,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    errors: Mapping[str, Sequence[float | None]] | None = None,
) -> bool:
    """Grouped bars on a 0-1 scale (values outside it are drawn at its edge, labelled with their own value),
    each labelled with its value; `errors` (standard errors, by series) adds error bars. A missing value leaves
    a gap. Returns False, writing nothing, when no series has a value."""
    if not any(value is not None for values in series.values() for value in values):
        return False
    canvas = _Canvas(title, 0.0, 1.0)
    draw, errors = canvas.draw, errors or {}
    slot = (canvas.right - canvas.left) / max(len(groups), 1)
    width = slot * 0.8 / max(len(series), 1)
    for g, group in enumerate(groups):
        centre = canvas.left + (g + 0.5) * slot
        canvas.centred(centre, canvas.bottom + 8, canvas.fitted(group, slot - 4, canvas.font), canvas.font)
        for s, (name, values) in enumerate(series.items()):
            value = values[g]
            if value is None:
                continue
            x = canvas.left + g * slot + slot * 0.1 + s * width
            top = canvas.y(value)
            draw.rectangle((x, top, x + width - 2, canvas.bottom), fill=COLOURS[s % len(COLOURS)])
            error = (errors.get(name) or [None] * len(groups))[g]
            middle = x + (width - 2) / 2
            if error:
                high, low = canvas.y(value + error), canvas.y(value - error)
                draw.line((middle, high, middle, low), fill="black", width=1)
                for y in (high, low):
                    draw.line((middle - 4, y, middle + 4, y), fill="black", width=1)
                top = min(top, high)
            canvas.centred(middle, top - 15, f"{value:.2f}", canvas.small)
    canvas.legend(list(series))
    canvas.save(path)
    return True


def line_chart(path: Path, title: str, curves: Mapping[str, Sequence[tuple[float, float]]], x_label: str) -> bool:
    """One polyline with dots per curve on shared axes, points labelled with their values (only the last
    one on a curve of more than MAX_POINT_LABELS points). Returns False, writing nothing, without points."""
    points = [p for curve in curves.values() for p in curve]
    if not points:
        return False
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span = max(ys) - min(ys)
    margin = 0.1 * span if span else 0.5
    low, high = min(ys) - margin, max(ys) + margin
    canvas = _Canvas(title, low, high)
    x_low, x_high = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return canvas.left + 12 + (x - x_low) / (x_high - x_low) * (canvas.right - canvas.left - 24), canvas.y(y)

    ticks = sorted(set(xs))
    if len(ticks) > MAX_X_TICKS:
        ticks = [x_low + k * (x_high - x_low) / (MAX_X_TICKS - 1) for k in range(MAX_X_TICKS)]
    for x in ticks:
        canvas.centred(at(x, low)[0], canvas.bottom + 6, f"{x:.3g}", canvas.small)
    canvas.centred((canvas.left + canvas.right) / 2, canvas.bottom + 24, x_label, canvas.font)
    for index, curve in enumerate(curves.values()):
        colour = COLOURS[index % len(COLOURS)]
        placed = [at(x, y) for x, y in curve]
        if len(placed) > 1:
            canvas.draw.line(placed, fill=colour, width=2)
        labelled = range(len(curve)) if len(curve) <= MAX_POINT_LABELS else [len(curve) - 1]
        for number, (x, y) in enumerate(placed):
            canvas.draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
            if number in labelled:
                canvas.centred(x, y - 18, f"{curve[number][1]:.2f}", canvas.small)
    canvas.legend(list(curves))
    canvas.save(path)
    return True
