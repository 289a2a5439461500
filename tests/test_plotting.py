"""The stacked power plot keeps its legend off the data, also with many EVs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from optivgi.plotting import plot_stacked_power, stacked_power_figure


@pytest.mark.parametrize("evs", [3, 60])
def test_legend_is_outside_the_axes(evs: int) -> None:
    import matplotlib.pyplot as plt

    times = [datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=m) for m in range(10)]
    series = {f"OPTIVGI-STATION-{i:02d}:{i}": [30 / evs] * 10 for i in range(evs)}
    fig = stacked_power_figure(times, series, 30.0)
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend()
        # the EVs and the site limit; past 10 EVs the top 10, one band for the others, and the limit
        assert len(legend.get_texts()) == (evs + 1 if evs <= 10 else 12)
        box, axes = legend.get_window_extent(), ax.get_window_extent()
        assert box.x0 >= axes.x1, "the legend overlaps the plot"
        assert box.y1 <= fig.bbox.y1 + 1 and box.y0 >= fig.bbox.y0 - 1, "the legend leaves the figure"
        assert box.x1 <= fig.bbox.x1 + 1
    finally:
        plt.close(fig)


def test_the_png_is_written(tmp_path: Path) -> None:
    times = [datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=m) for m in range(3)]
    out = plot_stacked_power(times, {"a": [1, 2, 3]}, 5.0, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
