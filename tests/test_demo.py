"""The embedded demo: curtailment of six 7.2 kW EVs on a 30 kW site, on the simulated clock."""

from __future__ import annotations

import pytest

from optivgi.demo import run_demo
from optivgi.plugins import load_algorithm


@pytest.mark.parametrize("algorithm", ["lp", "equal-share"])
def test_demo_curtails_fairly_and_never_exceeds_the_limit(algorithm: str, tmp_path: object) -> None:
    lines: list[str] = []
    result = run_demo(load_algorithm(algorithm), speed=120.0, echo=lines.append)
    # site power at every change of any EV's draw
    assert result.translation.timeline, "nothing was simulated"
    assert max(sum(p.values()) for _, p in result.translation.timeline) <= 30.0 + 1e-9
    assert result.within_limit and result.peak_kw == pytest.approx(30.0, abs=0.05)
    by_count: dict[int, list[float]] = {}
    for _, alloc in result.allocations:
        by_count.setdefault(len(alloc), []).extend(alloc.values())
        assert sum(alloc.values()) <= 30.0 + 1e-9
    assert by_count[5] and all(v == pytest.approx(6.0, abs=0.05) for v in by_count[5])
    assert by_count[6] and all(v == pytest.approx(5.0, abs=0.05) for v in by_count[6])
    assert all(v == pytest.approx(7.2, abs=1e-6) for v in by_count[1])
    text = "\n".join(lines)
    assert "CURTAILMENT ON — 5 EVs request 36.00 kW, limit 30.00 kW" in text
    assert "CURTAILMENT OFF — 4 EVs request 28.80 kW" in text
    assert text.count(" arrived — max 7.20 kW") == 6 and text.count(" departed — delivered ") == 6
    assert "within the limit" in text
    # every EV got energy, and about what 10 minutes at its allocations give (~1 kWh)
    delivered = result.translation.delivered_kwh()
    assert all(0.9 < kwh < 1.2 for kwh in delivered.values()), delivered


def test_demo_plot_is_written(tmp_path: object) -> None:
    from pathlib import Path

    png = Path(str(tmp_path)) / "demo.png"
    run_demo(load_algorithm("equal-share"), speed=240.0, plot=png, echo=lambda _: None)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
