"""Safe transitions: waves that keep every circuit within its limit for every outcome."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from optivgi.failsafe import capped_valid_to
from optivgi.ledger import Circuit, Ledger, Outcome, ProfileRecord, Request
from optivgi.transitions import next_wave, raises, run_waves

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOLD = T0 + timedelta(seconds=300)
SITE = Circuit("site", 10.0)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def tx(station: str, kw: float, *, until: datetime = HOLD, connector: int = 1) -> ProfileRecord:
    return ProfileRecord((station, connector), 100 + connector, "TxProfile", 2, T0, [(0, kw)], valid_to=until,
                         transaction_id="1")


def accept(ledger: Ledger, record: ProfileRecord) -> None:
    ledger.accepted(ledger.sent(Request.install(record), at=T0), at=T0)


def fallback_site(stations: str = "AB", connectors: int = 1, share: float = 5.0) -> Ledger:
    """Stations with a fallback share and a hold at 0 until HOLD, as the fail-safe installs them."""
    ledger = Ledger()
    for s in stations:
        for c in range(1, connectors + 1):
            ledger.add_connector((s, c), max_kw=7.2, fallback_kw=share)
        accept(ledger, ProfileRecord((s, 0), 900, "TxDefaultProfile", 0, at(-86400), [(0, share)]))
        accept(ledger, ProfileRecord((s, 0), 899, "TxDefaultProfile", 1, at(-86400), [(0, 0.0)], valid_to=HOLD))
    return ledger


def issue_case() -> Ledger:
    """Site 10 kW; A at 30 A (7.2 kW, applied); B has just started under the hold."""
    ledger = fallback_site()
    accept(ledger, tx("A", 7.2))
    return ledger


def labels(requests: Sequence[Request]) -> list[str]:
    return [r.label for r in requests]


def test_an_increase_waits_until_the_reduction_that_makes_room_is_accepted() -> None:
    ledger = issue_case()
    targets = [Request.install(tx("B", 5.0), "B"), Request.install(tx("A", 5.0), "A")]
    wave = next_wave(ledger, targets, [SITE], now=T0, until=at(600))
    assert labels([g.request for g in wave.send]) == ["A"] and labels(wave.waiting) == ["B"]
    rid = ledger.sent(wave.send[0].request, at=T0)
    # while A's answer is pending, B still may not go out
    again = next_wave(ledger, [targets[0]], [SITE], now=T0, until=at(600))
    assert not again.send and labels(again.waiting) == ["B"]
    ledger.accepted(rid, at=at(1))
    last = next_wave(ledger, [targets[0]], [SITE], now=at(1), until=at(600))
    assert [(g.request.label, g.clipped, g.request.profile.periods if g.request.profile else ()) for g in last.send] \
        == [("B", False, ((0, 5.0),))]


@pytest.mark.parametrize("outcome", [Outcome.REJECTED, Outcome.UNANSWERED])
def test_a_refused_reduction_shrinks_the_increase_in_the_same_cycle(outcome: Outcome) -> None:
    ledger = issue_case()
    targets = [Request.install(tx("A", 5.0), "A"), Request.install(tx("B", 5.0), "B")]
    result = run_waves(ledger, targets, [SITE], lambda reqs: [outcome if r.label == "A" else Outcome.ACCEPTED
                                                              for r in reqs], now=T0, until=at(600))
    assert [labels([g.request for g in w]) for w in result.waves] == [["A"], ["B"]]
    b = result.sent[1].profile
    assert b is not None and b.periods == ((0, pytest.approx(2.8)),)  # 10 - 7.2, not 5.0
    assert result.waves[1][0].clipped
    assert ledger.site_worst_case_at(at(10)) <= 10.0 + 1e-9


def test_every_combination_of_outcomes_stays_within_the_limit() -> None:
    """Three stations, mixed reductions and increases: whatever each charger answers, the limits in
    force (by what was actually accepted) never exceed the site at any instant."""
    for outcomes in itertools.product(list(Outcome), repeat=3):
        ledger = fallback_site("ABC", share=10.0 / 3)
        accept(ledger, tx("A", 7.2))
        accept(ledger, tx("B", 2.0))
        targets = [Request.install(tx("A", 3.0), "A"), Request.install(tx("B", 3.5), "B"),
                   Request.install(tx("C", 3.3), "C")]
        answers = dict(zip("ABC", outcomes, strict=True))
        # a charger model: what each station has applied, decided by its answer
        applied = {"A": 7.2, "B": 2.0, "C": 0.0}

        def send(reqs: Sequence[Request], applied: dict[str, float] = applied,
                 answers: dict[str, Outcome] = answers) -> list[Outcome]:
            out = []
            for r in reqs:
                o = answers[r.label]
                if o is not Outcome.REJECTED and r.profile is not None:  # unanswered: applied, answer lost
                    applied[r.label] = r.profile.periods[0][1]
                out.append(o)
                assert sum(applied.values()) <= 10.0 + 1e-9, (answers, applied)
            return out

        run_waves(ledger, targets, [SITE], send, now=T0, until=at(600))
        assert sum(applied.values()) <= 10.0 + 1e-9


def test_unanswered_increase_keeps_its_connector_reserved() -> None:
    ledger = fallback_site()
    accept(ledger, tx("A", 4.0))
    rid = ledger.sent(Request.install(tx("A", 7.2)), at=T0)
    ledger.unanswered(rid, at=at(30))  # the charger may have applied 7.2
    wave = next_wave(ledger, [Request.install(tx("B", 5.0), "B")], [SITE], now=at(30), until=at(600))
    (grant,) = wave.send
    assert grant.clipped and grant.request.profile is not None
    assert grant.request.profile.periods[0][1] == pytest.approx(2.8)


def test_one_request_per_station_and_none_to_a_busy_station() -> None:
    ledger = fallback_site("AB", connectors=2, share=2.5)
    accept(ledger, tx("A", 7.2, connector=1))
    accept(ledger, tx("A", 7.2, connector=2))
    targets = [Request.install(tx("A", 2.0, connector=1), "A1"), Request.install(tx("A", 2.0, connector=2), "A2")]
    wave = next_wave(ledger, targets, [Circuit("site", 20.0)], now=T0, until=at(600))
    assert labels([g.request for g in wave.send]) == ["A1"] and labels(wave.waiting) == ["A2"]
    ledger.sent(wave.send[0].request, at=T0)
    assert ledger.busy("A")
    wave = next_wave(ledger, targets[1:], [Circuit("site", 20.0)], now=T0, until=at(600))
    assert not wave.send and labels(wave.waiting) == ["A2"]


def test_an_increase_that_fits_goes_with_the_reductions() -> None:
    ledger = fallback_site()
    accept(ledger, tx("A", 6.0))
    targets = [Request.install(tx("A", 5.0), "A"), Request.install(tx("B", 4.0), "B")]
    assert not raises(ledger, targets[0], now=T0, until=at(600)) and raises(ledger, targets[1], now=T0, until=at(600))
    wave = next_wave(ledger, targets, [SITE], now=T0, until=at(600))
    assert labels([g.request for g in wave.send]) == ["A", "B"]  # 6 + 4 fits with A still at 6


def test_after_a_restart_unknown_connectors_get_only_what_is_safe_in_every_case() -> None:
    """A and B may each still run a 7.2 kW profile from before, or be held at 0: 14.4 kW may be
    drawn on 10. Whichever it is, and whatever they answer, nothing may end above 10 kW that was
    not already: A gets 10 - 7.2 = 2.8 kW, not the 5.0 kW planned, and B waits for A's answer."""
    for previous in itertools.product([0.0, 7.2], repeat=2):
        for outcomes in itertools.product(list(Outcome), repeat=2):
            ledger = fallback_site()
            ledger.restart(at=T0, previous_validity_s=300)
            assert ledger.site_worst_case_at(T0) == pytest.approx(14.4)
            applied = dict(zip("AB", previous, strict=True))
            answers = dict(zip("AB", outcomes, strict=True))

            def send(reqs: Sequence[Request], applied: dict[str, float] = applied,
                     answers: dict[str, Outcome] = answers, before: float = sum(previous)) -> list[Outcome]:
                for r in reqs:
                    if answers[r.label] is not Outcome.REJECTED and r.profile is not None:
                        applied[r.label] = r.profile.periods[0][1]
                assert sum(applied.values()) <= max(10.0, before) + 1e-9
                return [answers[r.label] for r in reqs]

            targets = [Request.install(tx("A", 5.0), "A"), Request.install(tx("B", 5.0), "B")]
            result = run_waves(ledger, targets, [SITE], send, now=T0, until=at(600))
            # A first, alone: 2.8 kW; B then 5.0 if A's was accepted (A known at 2.8), else 2.8
            b_kw = 5.0 if outcomes[0] is Outcome.ACCEPTED else 2.8
            assert [r.profile.periods[0][1] if r.profile else None for r in result.sent.values()] \
                == [pytest.approx(2.8), pytest.approx(b_kw)]
            if sum(previous) <= 10.0:
                assert sum(applied.values()) <= 10.0 + 1e-9


def test_a_txprofile_valid_beyond_the_hold_does_not_go_out_as_is() -> None:
    """After the hold lapses the other connectors get their fallback share: a TxProfile still in
    force then would add to it. Capped at the hold it goes out whole."""
    ledger = fallback_site("AB", connectors=2)  # 4 connectors, share 5.0 would be 20 kW: use a site of 20
    site = Circuit("site", 20.0)
    now = at(10)
    valid_to = capped_valid_to(now, 300, HOLD)
    assert valid_to == HOLD
    good = next_wave(ledger, [Request.install(tx("A", 7.2, until=valid_to), "A")], [site], now=now, until=at(900))
    assert [(g.clipped, g.request.profile.periods[0][1] if g.request.profile else None) for g in good.send] \
        == [(False, 7.2)]
    late = next_wave(ledger, [Request.install(tx("A", 7.2, until=now + timedelta(seconds=300)), "A")], [site],
                     now=now, until=at(900))
    (grant,) = late.send
    lowered = grant.request.profile
    assert grant.clipped and lowered is not None
    # 7.2 kW while the others are held, the fallback share once the hold lapses
    assert lowered.limit_kw_at(now) == 7.2 and lowered.limit_kw_at(HOLD) == pytest.approx(5.0)
