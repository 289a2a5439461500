"""Stacked per-EV power plots with the site limit (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from optivgi.arrays import FloatArray
from optivgi.errors import OptiVGIError

__all__ = ["LEGEND_ROWS", "plot_stacked_power", "stacked_power_figure"]

#: Legend entries per column; more series add columns to the right of the plot, never over it.
LEGEND_ROWS = 24

logger = logging.getLogger(__name__)


def plot_stacked_power(
    times: Sequence[datetime],
    power_kw: Mapping[str, Sequence[float] | FloatArray],
    site_limit_kw: Sequence[float] | FloatArray | float,
    path: str | Path,
    *,
    title: str = "Power per EV",
    step: bool = True,
    top: int = 10,
) -> Path:
    """Draw each EV's power [kW] stacked over ``times`` with the site limit line; save as PNG.

    ``times`` are the starts of piecewise-constant segments (``step=True``). Periods where the
    stack exceeds the limit are shaded red. With more than ``top`` EVs the chart stays readable:
    the ``top`` EVs with the most energy are stacked one by one and all others as one band,
    and a second panel shows every EV's power as a heat map (one row per EV, in the order
    given). Returns the written path.

    Raises:
        OptiVGIError: matplotlib is not installed (``pip install "opti-vgi[plot]"``).
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = stacked_power_figure(times, power_kw, site_limit_kw, title=title, step=step, top=top)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    logger.info("plot written to %s", path)
    return path


def stacked_power_figure(
    times: Sequence[datetime],
    power_kw: Mapping[str, Sequence[float] | FloatArray],
    site_limit_kw: Sequence[float] | FloatArray | float,
    *,
    title: str = "Power per EV",
    step: bool = True,
    top: int = 10,
) -> Any:
    """The figure :func:`plot_stacked_power` saves (a matplotlib ``Figure``; close it after use).

    The legend sits outside the axes, to their right, in columns of :data:`LEGEND_ROWS` entries,
    and the figure widens with the columns, so no entry covers the data however many EVs there are.

    Raises:
        OptiVGIError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise OptiVGIError('plotting needs matplotlib: pip install "opti-vgi[plot]"') from exc
    x: Any = list(times)
    ids = list(power_kw)
    stack = np.array([np.asarray(power_kw[i], dtype=float) for i in ids]) if ids else np.zeros((0, len(x)))
    limit = np.broadcast_to(np.asarray(site_limit_kw, dtype=float), (len(x),))
    many = len(ids) > top
    if many:
        fig, (ax, heat) = plt.subplots(2, 1, figsize=(13.2, 8), dpi=110, sharex=True,
                                       gridspec_kw={"height_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(12.2, 5), dpi=110)
    columns = max(1, -(-(min(len(ids), top + 1) + 2) // LEGEND_ROWS))
    if ids:
        labels, bands = ids, stack
        if many:
            order = np.argsort(-stack.sum(axis=1), kind="stable")
            keep = np.sort(order[:top])
            rest = np.setdiff1d(np.arange(len(ids)), keep)
            labels = [ids[i] for i in keep] + [f"{rest.size} other EVs"]
            bands = np.vstack([stack[keep], stack[rest].sum(axis=0, keepdims=True)])
        colors = [f"C{i % 10}" for i in range(len(labels))]
        if many:
            colors[-1] = "lightgrey"
        ax.stackplot(x, bands, labels=labels, colors=colors, step="post" if step else None, alpha=0.85)
    ax.step(x, limit, where="post", color="black", linewidth=2, linestyle="--", label="site limit")
    total = stack.sum(axis=0) if ids else np.zeros(len(x))
    over = total > limit + 1e-6
    if np.any(over):
        ax.fill_between(x, 0, total.max() * 1.05, where=over, step="post", color="red", alpha=0.25,
                        label="over limit")
    ax.set_ylabel("power [kW]")
    ax.set_title(title + (f" — the {top} EVs with most energy, {len(ids) - top} others as one band" if many else ""))
    ax.set_ylim(0, max(float(limit.max()) if len(limit) else 1.0, float(total.max()) if len(total) else 0) * 1.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize="small", ncol=columns,
              frameon=False)
    ax.grid(alpha=0.3)
    if many:
        import matplotlib.dates as mdates

        t = mdates.date2num(x) if x else np.zeros(1)  # type: ignore[no-untyped-call]
        dt = float(t[1] - t[0]) if len(t) > 1 else 1.0 / 1440
        image = heat.imshow(stack, aspect="auto", interpolation="nearest", cmap="viridis", origin="upper",
                            extent=(float(t[0]), float(t[-1]) + dt, len(ids), 0))
        heat.xaxis_date()
        fig.colorbar(image, ax=heat, label="kW", pad=0.01)
        heat.set_ylabel(f"EV (all {len(ids)})")
        heat.set_xlabel("time (UTC)")
    else:
        ax.set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
