"""The metrics charts' geometry: scales, gaps, the degenerate cases, and which metrics are charted."""

from __future__ import annotations

import sys

from mreg.ui.chart import HEIGHT, LEFT, MAX_CHARTS, RIGHT, TOP, WIDTH, Plotted, metric_charts

BOTTOM_Y = float(HEIGHT - 22)
MIDDLE_X = (LEFT + WIDTH - RIGHT) / 2
MIDDLE_Y = (TOP + BOTTOM_Y) / 2
LEFT_X, RIGHT_X, TOP_Y = float(LEFT), float(WIDTH - RIGHT), float(TOP)


def plotted(*rows: tuple[int, dict[str, float]]) -> list[Plotted]:
    return [Plotted(version, metrics, yanked=False) for version, metrics in rows]


def test_versions_by_number_and_values_by_range() -> None:
    (chart,), rest = metric_charts(plotted((5, {"acc": 0.9}), (1, {"acc": 0.5}), (3, {"acc": 0.7})))
    assert rest == []
    assert [(point.version, point.x, point.y) for point in chart.points] == [
        (1, LEFT_X, BOTTOM_Y),
        (3, MIDDLE_X, MIDDLE_Y),
        (5, RIGHT_X, TOP_Y),
    ]
    assert chart.lines == [f"{LEFT_X},{BOTTOM_Y} {MIDDLE_X},{MIDDLE_Y} {RIGHT_X},{TOP_Y}"]
    assert (chart.low, chart.high, chart.first, chart.last, chart.missing) == (0.5, 0.9, 1, 5, 0)


def test_one_version_and_equal_values_sit_in_the_middle() -> None:
    (single,), _ = metric_charts(plotted((7, {"acc": 0.9})))
    assert [(point.x, point.y) for point in single.points] == [(MIDDLE_X, MIDDLE_Y)]
    assert single.lines == []
    (flat,), _ = metric_charts(plotted((1, {"acc": 2.0}), (2, {"acc": 2.0})))
    assert {point.y for point in flat.points} == {MIDDLE_Y}
    assert (flat.low, flat.high) == (2.0, 2.0)


def test_a_version_without_the_metric_breaks_the_line() -> None:
    rows = plotted((1, {"a": 1.0}), (2, {"a": 2.0}), (3, {}), (4, {"a": 1.0}), (5, {"a": 3.0}), (6, {"b": 1}))
    charts, _ = metric_charts(rows)
    a = charts[0]
    assert [point.version for point in a.points] == [1, 2, 4, 5]
    assert [len(line.split()) for line in a.lines] == [2, 2]
    assert a.missing == 2
    assert (a.first, a.last) == (1, 6)  # the axis spans every version charted, so charts line up


def test_extreme_values_do_not_overflow() -> None:
    (chart,), _ = metric_charts(plotted((1, {"x": -sys.float_info.max}), (2, {"x": sys.float_info.max})))
    assert [point.y for point in chart.points] == [BOTTOM_Y, TOP_Y]


def test_the_ordered_metric_comes_first_and_at_most_max_charts() -> None:
    metrics = {f"m{index}": float(index) for index in range(MAX_CHARTS + 2)}
    charts, rest = metric_charts(plotted((1, metrics)), first="m7")
    assert [chart.metric for chart in charts] == ["m7", *[f"m{index}" for index in range(MAX_CHARTS - 1)]]
    assert rest == ["m5", "m6"]
    assert metric_charts(plotted((1, {}), (2, {}))) == ([], [])
