"""Metrics across versions as the geometry of small line charts, which a template draws as inline SVG.

One chart per metric, versions on the x axis by number (so gaps in a filtered list show), the metric's
range on the y axis. A version without the metric has no point and breaks the line; one version, or equal
values, sit in the middle of their axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WIDTH = 340
HEIGHT = 130
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 10, 22
"""The plot's margins inside the chart, in SVG units: room for the axis labels."""
MAX_CHARTS = 6


@dataclass(frozen=True)
class Plotted:
    """What a chart reads of one version."""

    version: int
    metrics: Mapping[str, float]
    yanked: bool


@dataclass(frozen=True)
class Point:
    version: int
    value: float
    x: float
    y: float
    yanked: bool


@dataclass(frozen=True)
class Chart:
    """One metric: its points, its lines (SVG `points` lists, one per run of versions that all have it),
    the labels of both axes, and how many of the charted versions lack it."""

    metric: str
    points: list[Point]
    lines: list[str]
    low: float
    high: float
    first: int
    last: int
    missing: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM

    @property
    def center(self) -> tuple[float, float]:
        """The middle of the plot, where a lone version or a constant value sits (and its label)."""
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2


def metric_charts(versions: Sequence[Plotted], first: str | None = None) -> tuple[list[Chart], list[str]]:
    """Charts of the metrics `versions` have (`first` first, then by name, at most `MAX_CHARTS`), and the
    names of the metrics left out."""
    keys = sorted({key for version in versions for key in version.metrics}, key=lambda key: (key != first, key))
    ordered = sorted(versions, key=lambda version: version.version)
    return [_chart(key, ordered) for key in keys[:MAX_CHARTS]], keys[MAX_CHARTS:]


def _chart(metric: str, versions: list[Plotted]) -> Chart:
    numbers = [version.version for version in versions]
    values = [version.metrics[metric] for version in versions if metric in version.metrics]
    low, high = min(values), max(values)
    points: list[Point] = []
    lines: list[str] = []
    run: list[Point] = []
    for version in versions:
        value = version.metrics.get(metric)
        if value is None:
            lines += _line(run)
            run = []
            continue
        point = Point(
            version.version,
            value,
            _scale(version.version, min(numbers), max(numbers), LEFT, WIDTH - RIGHT),
            _scale(value, high, low, TOP, HEIGHT - BOTTOM),
            version.yanked,
        )
        points.append(point)
        run.append(point)
    lines += _line(run)
    return Chart(metric, points, lines, low, high, numbers[0], numbers[-1], len(versions) - len(points))


def _scale(value: float, start: float, end: float, to_start: float, to_end: float) -> float:
    """`value` mapped from [start, end] onto [to_start, to_end] (the middle when start equals end). Halves
    are subtracted, so that the span of two extreme floats does not overflow."""
    span = end / 2 - start / 2
    fraction = 0.5 if span == 0 else (value / 2 - start / 2) / span
    return round(to_start + fraction * (to_end - to_start), 1)


def _line(run: list[Point]) -> list[str]:
    return [" ".join(f"{point.x},{point.y}" for point in run)] if len(run) > 1 else []
