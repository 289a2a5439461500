"""Fallback-share arithmetic: lowest limit, connectors that exist, rounded down, warnings, holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optivgi.failsafe import (
    HoldRelease,
    capped_valid_to,
    count_connectors,
    fallback_share,
    round_down_to_step,
)
from optivgi.models import ChargingRateUnit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_share_comes_from_the_lowest_limit_of_the_day() -> None:
    # 30 kW by day, 20 kW in the evening peak, 12 connectors
    share = fallback_share([30.0, 20.0, 30.0], 12, unit="W", voltage=230.0)
    assert share.lowest_limit_kw == 20.0
    assert share.limit == 1666.0 and share.share_kw == pytest.approx(1.666)
    assert share.share_kw * 12 <= 20.0


def test_share_is_rounded_down_never_to_nearest() -> None:
    # 10 kW / 3 connectors at 230 V = 14.4927 A: nearest would be 14.5 A (10.005 kW together)
    share = fallback_share(10.0, 3, unit=ChargingRateUnit.A, voltage=230.0)
    assert share.limit == 14.4
    assert 3 * share.share_kw <= 10.0
    # in watts: 10 kW / 6 = 1666.67 W, nearest would be 1667 W (10.002 kW together)
    watts = fallback_share(10.0, 6, unit="W", voltage=230.0)
    assert watts.limit == 1666.0 and 6 * watts.share_kw <= 10.0


def test_round_down_to_step() -> None:
    assert round_down_to_step(14.4927, 0.1) == 14.4
    assert round_down_to_step(5.85, 0.1) == 5.7  # 5.8 fails CitrineOS's multipleOf check: step down
    assert round_down_to_step(1666.67, 1.0) == 1666.0
    assert round_down_to_step(7.0, 0.5) == 7.0
    with pytest.raises(ValueError, match="finite number >= 0"):
        round_down_to_step(-1.0, 1.0)


def test_a_share_below_the_charger_minimum_is_warned_with_the_arithmetic() -> None:
    share = fallback_share([30.0, 15.0], 12, unit="A", voltage=230.0)
    assert share.warning is not None
    assert "15 kW / 12 connectors = 1.250 kW = 5.43 A at 230 V x 1 phase(s) (sent as 5.4 A), below the 6 A" \
        in share.warning
    assert fallback_share(30.0, 4, unit="A", voltage=230.0).warning is None


def test_connectors_are_counted_from_what_is_seen() -> None:
    seen = [("S1", 1), ("S1", 2), ("S1", 0), ("S2", 1), ("X", 1)]
    count = count_connectors(["S1", "S2", "S3"], seen)
    assert dict(count.per_station) == {"S1": 2, "S2": 1, "S3": 1} and count.total == 4 and not count.errors
    over = count_connectors(["S1", "S2"], seen, override=1)
    assert over.per_station["S1"] == 2  # never fewer than seen: the share only gets smaller
    assert over.errors == ("station S1: 2 connector(s) seen ([1, 2]), but 1 configured per station; counting 2",)
    # the simulator's two connectors with the default of one: the share is halved, not doubled
    assert fallback_share(20.0, count_connectors(["A", "B"], [("A", 1), ("A", 2), ("B", 1), ("B", 2)]).total,
                          unit="W", voltage=230.0).share_kw * 4 <= 20.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="connectors must be an integer >= 1"):
        fallback_share(10.0, 0, unit="W", voltage=230.0)
    with pytest.raises(ValueError, match="no site limit"):
        fallback_share([], 2, unit="W", voltage=230.0)
    with pytest.raises(ValueError, match="override"):
        count_connectors(["A"], [], override=0)


def test_txprofile_validity_never_outlives_the_hold() -> None:
    hold = T0 + timedelta(seconds=200)
    assert capped_valid_to(T0, 300, hold) == hold
    assert capped_valid_to(T0, 300, T0 + timedelta(seconds=900)) == T0 + timedelta(seconds=300)
    assert capped_valid_to(T0, 300, None) == T0 + timedelta(seconds=300)


def test_a_failing_car_is_held_at_zero_at_most_one_validity_period() -> None:
    release = HoldRelease(validity_s=300)
    key = ("S1", 1)
    assert release.may_renew_hold("S1", T0)
    release.failed(key, T0)
    assert release.may_renew_hold("S1", T0)  # renewed now, the hold ends one validity after the failure
    assert not release.may_renew_hold("S1", T0 + timedelta(seconds=60))  # later renewals would hold it longer
    assert release.may_renew_hold("S2", T0 + timedelta(seconds=60))
    release.failed(key, T0 + timedelta(seconds=60))  # a second failure does not restart the clock
    assert release.failing_since(key) == T0
    assert not release.released(key, T0 + timedelta(seconds=299))
    assert release.released(key, T0 + timedelta(seconds=300))
    release.succeeded(key)
    assert release.may_renew_hold("S1", T0 + timedelta(seconds=400))
