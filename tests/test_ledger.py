"""The in-force ledger: OCPP stacking, outcomes of requests, unknown connectors, circuit sums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optivgi.ledger import (
    Circuit,
    ClearFilter,
    Ledger,
    LimitExceeded,
    Outcome,
    ProfileRecord,
    Request,
    check_within,
    totals_over,
)
from optivgi.models import ChargingProfile, ChargingRateUnit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def tx(station: str, kw: float | list[tuple[int, float]], *, connector: int = 1, level: int = 1,
       until: float | None = 300, start: float = 0, tid: str = "1", pid: int | None = None) -> ProfileRecord:
    periods = [(0, kw)] if isinstance(kw, int | float) else kw
    return ProfileRecord((station, connector), 100 + connector if pid is None else pid, "TxProfile", level,
                         at(start), periods, valid_to=None if until is None else at(until), transaction_id=tid)


def default(station: str, kw: float, *, connector: int = 0, level: int = 0, pid: int = 900,
            until: float | None = None) -> ProfileRecord:
    return ProfileRecord((station, connector), pid, "TxDefaultProfile", level, at(-86400), [(0, kw)],
                         valid_to=None if until is None else at(until))


def accept(ledger: Ledger, record: ProfileRecord, t: float = 0) -> None:
    ledger.accepted(ledger.sent(Request.install(record), at=at(t)), at=at(t))


def site(*stations: str, connectors: int = 1, fallback: float | None = None) -> Ledger:
    ledger = Ledger()
    for s in stations:
        for c in range(1, connectors + 1):
            ledger.add_connector((s, c), max_kw=7.2, fallback_kw=fallback)
    return ledger


def test_no_profile_means_the_hardware_maximum() -> None:
    ledger = site("A")
    assert ledger.limit_at(("A", 1), T0) == 7.2
    assert ledger.worst_case_at(("A", 1), T0) == 7.2


def test_txprofile_over_txdefault_and_station_wide_default_on_every_connector() -> None:
    ledger = site("A", connectors=2)
    accept(ledger, default("A", 2.5))  # connector 0: both connectors
    assert ledger.limit_at(("A", 1), at(10)) == 2.5 and ledger.limit_at(("A", 2), at(10)) == 2.5
    accept(ledger, tx("A", 6.0, until=300))
    assert ledger.limit_at(("A", 1), at(10)) == 6.0  # TxProfile overrides the default, up as well as down
    assert ledger.limit_at(("A", 2), at(10)) == 2.5
    assert ledger.limit_at(("A", 1), at(300)) == 2.5  # validTo is exclusive: back to the default
    assert ledger.limit_at(("A", 1), at(299)) == 6.0


def test_higher_stack_level_wins_and_connector_default_wins_a_tie() -> None:
    ledger = site("A", connectors=2)
    accept(ledger, default("A", 2.5, level=0))
    accept(ledger, default("A", 0.0, level=1, pid=899, until=120))  # the hold
    assert ledger.limit_at(("A", 1), at(60)) == 0.0  # a confirmed hold counts as 0
    assert ledger.worst_case_at(("A", 1), at(60)) == 0.0
    assert ledger.limit_at(("A", 1), at(120)) == 2.5  # lapsed hold: the fallback underneath
    accept(ledger, default("A", 4.0, connector=2, level=0, pid=950))
    assert ledger.limit_at(("A", 2), at(200)) == 4.0  # own default beats connector 0 at the same level
    assert ledger.limit_at(("A", 1), at(200)) == 2.5
    accept(ledger, tx("A", 3.0, level=1), 0)
    accept(ledger, tx("A", 5.0, level=2, pid=201), 0)
    assert ledger.limit_at(("A", 1), at(10)) == 5.0


def test_period_offsets_schedule_start_duration_and_valid_from() -> None:
    ledger = site("A")
    accept(ledger, default("A", 2.0))
    record = ProfileRecord(("A", 1), 101, "TxProfile", 1, at(100), [(0, 6.0), (60, 3.0)], duration_s=120,
                           valid_from=at(110), transaction_id="1")
    accept(ledger, record)
    assert ledger.limit_at(("A", 1), at(105)) == 2.0  # not yet valid
    assert ledger.limit_at(("A", 1), at(110)) == 6.0
    assert ledger.limit_at(("A", 1), at(160)) == 3.0  # second period from offset 60
    assert ledger.limit_at(("A", 1), at(220)) == 2.0  # after the duration


def test_charge_point_max_caps_every_connector_and_the_station() -> None:
    ledger = site("A", connectors=2)
    accept(ledger, ProfileRecord(("A", 0), 1, "ChargePointMaxProfile", 0, at(-10), [(0, 10.0)]))
    assert ledger.limit_at(("A", 1), T0) == 7.2
    assert ledger.station_worst_case_at("A", T0) == 10.0  # not 14.4


def test_same_id_or_same_purpose_and_level_replaces() -> None:
    ledger = site("A")
    accept(ledger, tx("A", 7.0, pid=101))
    accept(ledger, tx("A", 4.0, pid=101))
    assert ledger.limit_at(("A", 1), at(1)) == 4.0 and len(ledger.records("A")) == 1
    accept(ledger, tx("A", 5.0, pid=102))  # same purpose, level and connector
    assert [r.profile_id for r in ledger.records("A")] == [102]


def test_a_profile_from_charging_profile_in_amps() -> None:
    profile = ChargingProfile.from_power([5.0, 5.0, 2.4], start=T0, resolution_s=60, unit=ChargingRateUnit.A,
                                         voltage=240.0, transaction_id=7)
    record = ProfileRecord.from_profile(("A", 1), profile, voltage=240.0)
    assert record.periods == ((0, pytest.approx(4.992)), (120, pytest.approx(2.4)))
    assert record.transaction_id == "7"


def test_sent_counts_at_the_max_of_old_and_new_until_answered() -> None:
    ledger = site("A")
    accept(ledger, tx("A", 5.0))
    up = ledger.sent(Request.install(tx("A", 7.0)), at=at(1))
    assert ledger.busy("A")
    assert ledger.limit_at(("A", 1), at(2)) == 5.0  # known: only what was accepted
    assert ledger.worst_case_at(("A", 1), at(2)) == 7.0
    ledger.rejected(up, at=at(2))
    assert ledger.worst_case_at(("A", 1), at(2)) == 5.0 and not ledger.busy("A")
    down = ledger.sent(Request.install(tx("A", 2.0)), at=at(3))
    assert ledger.worst_case_at(("A", 1), at(3)) == 5.0  # a reduction counts at the old limit until accepted
    ledger.accepted(down, at=at(4))
    assert ledger.worst_case_at(("A", 1), at(4)) == 2.0


def test_unanswered_stays_possible_until_replaced_but_frees_the_call_slot() -> None:
    ledger = site("A")
    accept(ledger, tx("A", 5.0))
    rid = ledger.sent(Request.install(tx("A", 6.5)), at=at(1))
    ledger.record(rid, Outcome.UNANSWERED, at=at(31))
    assert not ledger.busy("A")
    assert ledger.limit_at(("A", 1), at(40)) is None  # no longer known
    assert ledger.worst_case_at(("A", 1), at(40)) == 6.5
    assert not ledger.settled(("A", 1))
    accept(ledger, tx("A", 4.0), 41)  # same id: replaces whatever the charger did with 6.5
    assert ledger.worst_case_at(("A", 1), at(42)) == 4.0 and ledger.settled(("A", 1))


def test_station_wide_request_in_flight_counts_on_every_connector() -> None:
    ledger = site("A", connectors=2)
    accept(ledger, default("A", 0.0, level=1, pid=899, until=600))
    rid = ledger.sent(Request("A", clear=ClearFilter(profile_id=899)), at=at(1))
    assert ledger.worst_case_at(("A", 1), at(2)) == 7.2 and ledger.worst_case_at(("A", 2), at(2)) == 7.2
    ledger.rejected(rid, at=at(2))
    assert ledger.worst_case_at(("A", 2), at(2)) == 0.0


def test_session_end_removes_its_txprofiles() -> None:
    ledger = site("A")
    accept(ledger, default("A", 2.5))
    accept(ledger, tx("A", 6.0, tid="9"))
    ledger.session_started(("A", 1), "9", at=at(1))
    assert ledger.limit_at(("A", 1), at(2)) == 6.0
    ledger.session_ended(("A", 1), "9", at=at(3))
    assert ledger.limit_at(("A", 1), at(4)) == 2.5
    accept(ledger, tx("A", 6.0, tid="9"))
    ledger.session_started(("A", 1), "10", at=at(5))  # a new car: the old transaction's profile is gone
    assert ledger.limit_at(("A", 1), at(6)) == 2.5


def test_unknown_counts_at_last_accepted_else_fallback_else_max_never_zero() -> None:
    ledger = site("A", "B", "C", fallback=2.5)
    ledger.add_connector(("C", 1), max_kw=7.2)  # no fallback share known
    accept(ledger, tx("A", 5.0))
    for s in "ABC":
        ledger.mark_unknown((s, 1), "session unreadable", at=at(1))
    assert ledger.limit_at(("A", 1), at(2)) is None
    assert ledger.worst_case_at(("A", 1), at(400)) == 5.0  # its TxProfile lapsed, but the state is unknown
    pending = ledger.sent(Request.install(tx("A", 7.0)), at=at(2))
    assert ledger.worst_case_at(("A", 1), at(3)) == 7.0  # a request in flight on top of the bound
    ledger.rejected(pending, at=at(3))
    assert ledger.worst_case_at(("B", 1), at(2)) == 2.5  # nothing accepted: its fallback share
    accept(ledger, default("B", 0.0, level=1, pid=899))  # a hold at 0 on an unknown connector...
    assert ledger.worst_case_at(("B", 1), at(2)) == 2.5  # ...still counts at its fallback share, not 0
    accept(ledger, default("C", 0.0, level=1, pid=899))
    assert ledger.worst_case_at(("C", 1), at(2)) == 7.2  # no fallback share: its maximum
    accept(ledger, tx("B", 3.0), 3)  # an accepted TxProfile makes it known again
    assert ledger.unknown(("B", 1)) is None and ledger.worst_case_at(("B", 1), at(4)) == 3.0


def test_restart_counts_every_connector_at_its_max_until_old_profiles_lapsed() -> None:
    ledger = site("A", "B", fallback=2.5)
    ledger.restart(at=T0, previous_validity_s=300)
    assert ledger.worst_case_at(("A", 1), at(299)) == 7.2
    assert ledger.worst_case_at(("A", 1), at(300)) == 2.5
    assert at(300) in ledger.boundaries(T0, at(600))
    ledger.add_connector(("A", 2), max_kw=7.2, fallback_kw=2.5)  # seen after the restart: unknown too
    assert ledger.unknown(("A", 2)) is not None


def test_site_sum_headroom_and_totals_at_every_boundary() -> None:
    ledger = site("A", "B", "C", fallback=2.5)
    accept(ledger, tx("A", [(0, 5.0), (120, 6.0)], until=300))
    accept(ledger, tx("B", 4.0, until=200))
    for s in "ABC":
        accept(ledger, default(s, 2.5))
    assert ledger.site_worst_case_at(at(10)) == 5.0 + 4.0 + 2.5
    rows = totals_over(ledger, [Circuit("site", 12.0)], T0, at(400))
    assert [(r[0], r[2]) for r in rows] == [(at(0), 11.5), (at(120), 12.5), (at(200), 11.0), (at(300), 7.5)]
    # C is being planned: it may have what the others leave at their worst moment
    assert ledger.headroom(Circuit("site", 12.0), [("C", 1)], T0, at(400)) == pytest.approx(2.0)
    feeder = Circuit("feeder", 6.0, members=frozenset({("A", 0)}), schedule=((at(150), 5.5),))
    assert ledger.headroom(feeder, [], T0, at(400)) == pytest.approx(-0.5)


def test_check_within_refuses_what_could_exceed_and_lets_reductions_through() -> None:
    ledger = site("A", "B", fallback=2.5)
    circuits = [Circuit("site", 10.0)]
    for s in "AB":
        accept(ledger, default(s, 2.5))
    accept(ledger, tx("A", 7.2))
    with pytest.raises(LimitExceeded, match=r"'site'.*above its limit of 10\.000 kW"):
        check_within(ledger, circuits, T0, at(600), extra=[Request.install(tx("B", 5.0))])
    check_within(ledger, circuits, T0, at(600), extra=[Request.install(tx("B", 2.8))])
    ledger.mark_unknown(("B", 1), "read-back failed", at=T0, at_most_kw=7.2)  # now over 10 already
    check_within(ledger, circuits, T0, at(600), extra=[Request.install(tx("A", 5.0))])  # a reduction


def test_bad_input_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="TxProfile cannot be set on connector 0"):
        tx("A", 1.0, connector=0)
    with pytest.raises(ValueError, match="finite kW >= 0"):
        tx("A", -1.0)
    with pytest.raises(KeyError, match="not registered"):
        Ledger().worst_case_at(("X", 1), T0)
    with pytest.raises(ValueError, match="exactly one"):
        Request("A")
