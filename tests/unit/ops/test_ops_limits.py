"""Per-key GCRA limits, budgets and the integer cost arithmetic, under a fake clock."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.limits import ADMITTED, BUDGET, NANO, RPM, TPM, Limits, cost_header, cost_nusd, cost_nusd_at, format_usd


def one(rpm: int = 0, tpm: int = 0, budget_nusd: int = 0, workers: int = 1) -> Limits:
    return Limits.of([rpm], [tpm], [budget_nusd], workers)


# -- requests per minute -------------------------------------------------------------------------


def test_rpm_burst_then_one_per_interval_exactly_at_the_boundary() -> None:
    lim = one(rpm=60)  # one per second, a minute's worth of burst
    for _ in range(60):
        assert lim.admit(0, 0.0) is ADMITTED
    assert lim.admit(0, 0.0) == (False, 1.0, RPM)
    ok, wait, why = lim.admit(0, 0.75)
    assert not ok and why == RPM and wait == pytest.approx(0.25)
    assert lim.admit(0, 1.0) is ADMITTED  # exactly when the retry-after said
    assert lim.admit(0, 1.0) == (False, 1.0, RPM)
    assert lim.states[0].refused_rpm == 3 and lim.states[0].admitted == 61


def test_rpm_refusals_take_nothing() -> None:
    lim = one(rpm=60)
    for _ in range(60):
        lim.admit(0, 0.0)
    for _ in range(1000):
        assert not lim.admit(0, 0.5)[0]
    assert lim.admit(0, 1.0)[0]  # a thousand refusals did not push the schedule back


def test_rpm_refills_fully_after_a_minute_and_no_more() -> None:
    lim = one(rpm=600)  # 10 per second
    for _ in range(600):
        assert lim.admit(0, 100.0)[0]
    assert not lim.admit(0, 100.0)[0]
    assert lim.admit(0, 100.1)[0]
    assert not lim.admit(0, 100.1)[0]
    # idle for ten minutes: the bucket holds one minute's worth, not ten
    n = 0
    while lim.admit(0, 800.0)[0]:
        n += 1
    assert n == 600


def test_steady_rate_at_the_limit_is_never_refused() -> None:
    lim = one(rpm=120)
    for i in range(10_000):
        assert lim.admit(0, 1000.0 + i * 0.5)[0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=300))
def test_rpm_never_exceeds_burst_plus_rate_in_any_window(gaps_64ths: list[int]) -> None:
    rpm = 30
    lim = one(rpm=rpm)
    t = Fraction(0)
    admitted: list[Fraction] = []
    for gap in gaps_64ths:
        t += Fraction(gap, 64)
        if lim.admit(0, float(t))[0]:
            admitted.append(t)
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            window = admitted[j] - start
            assert j - i + 1 <= rpm + window * rpm / 60


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6400), st.integers(0, 3000), st.integers(0, 3000), st.booleans()),
        min_size=1,
        max_size=120,
    ),
    st.sampled_from([60, 120, 600, 6000]),
    st.sampled_from([1, 2, 4]),
)
def test_matches_an_exact_token_bucket_model(ops: list[tuple[int, int, int, bool]], tpm: int, workers: int) -> None:
    # Reference: token buckets in exact fractions. rpm = tpm / 10 so both limits bite.
    rpm = tpm // 10
    lim = one(rpm=rpm, tpm=tpm, workers=workers)
    cap_r, rate_r = Fraction(rpm, workers), Fraction(rpm, 60 * workers)
    cap_t, rate_t = Fraction(tpm, workers), Fraction(tpm, 60 * workers)
    fill_r = fill_t = Fraction(0)
    last = now = Fraction(0)
    for gap, estimate, actual, charge_now in ops:
        now += Fraction(gap, 64)
        fill_r = max(fill_r - (now - last) * rate_r, Fraction(0))
        fill_t = max(fill_t - (now - last) * rate_t, Fraction(0))
        last = now
        cost = min(Fraction(estimate), cap_t)
        expect = fill_r + 1 <= cap_r and fill_t + cost <= cap_t
        ok, wait, why = lim.admit(0, float(now), estimate)
        assert ok == expect, (now, fill_r, fill_t, why)
        if ok:
            fill_r += 1
            fill_t += cost
            if charge_now:
                lim.charge(0, float(now), actual, 0, 0, estimate)
                fill_t = max(fill_t + actual - cost, Fraction(0))
        else:
            need = (fill_r + 1 - cap_r) / rate_r if why == RPM else (fill_t + cost - cap_t) / rate_t
            assert wait == pytest.approx(float(need), rel=1e-9, abs=1e-9)


# -- tokens per minute -----------------------------------------------------------------------------


def test_tpm_reserves_the_estimate_and_charge_settles_it() -> None:
    lim = one(tpm=6000)  # 100 tokens per second
    assert lim.admit(0, 0.0, 4000)[0]
    assert lim.admit(0, 0.0, 2000)[0]
    assert lim.admit(0, 0.0, 1) == (False, 0.01, TPM)
    lim.charge(0, 0.0, 500, 500, 0, reserved=4000)  # used 1000 of the 4000 reserved: 3000 back
    assert lim.admit(0, 0.0, 3000)[0]
    assert not lim.admit(0, 0.0, 1)[0]
    assert lim.states[0].tokens_in == 500 and lim.states[0].tokens_out == 500


def test_tpm_charge_above_the_estimate_puts_the_key_in_debt() -> None:
    lim = one(tpm=6000)
    assert lim.admit(0, 0.0, 0)[0]  # no estimate: enforced after the fact
    lim.charge(0, 0.0, 9000, 3000, 0)  # 12000 tokens: two minutes' worth
    ok, wait, why = lim.admit(0, 0.0, 0)
    assert (ok, why) == (False, TPM) and wait == pytest.approx(60.0)  # until the debt is back to one bucket
    assert not lim.admit(0, 59.99, 0)[0]
    assert lim.admit(0, 60.0, 0)[0]


def test_tpm_charge_after_the_bucket_drained_still_counts() -> None:
    lim = one(tpm=600)  # 10 tokens per second
    assert lim.admit(0, 0.0, 0)[0]
    lim.charge(0, 1000.0, 600, 0, 0)  # a long stream, charged much later: a full bucket from then on
    assert not lim.admit(0, 1000.0, 1)[0]
    assert lim.admit(0, 1000.1, 1)[0]


def test_tpm_refund_never_goes_below_empty() -> None:
    lim = one(tpm=600)
    assert lim.admit(0, 0.0, 100)[0]
    lim.charge(0, 0.0, 0, 0, 0, reserved=100)  # the request failed: all refunded
    lim.charge(0, 0.0, 0, 0, 0, reserved=100)  # a double refund must not create credit
    for _ in range(6):
        assert lim.admit(0, 0.0, 100)[0]
    assert not lim.admit(0, 0.0, 1)[0]


def test_an_estimate_larger_than_the_bucket_waits_for_an_empty_bucket() -> None:
    lim = one(tpm=600)
    assert lim.admit(0, 0.0, 1)[0]
    ok, wait, why = lim.admit(0, 0.0, 10_000)
    assert (ok, why) == (False, TPM) and wait == pytest.approx(0.1)
    assert lim.admit(0, 0.1, 10_000)[0]  # clamped to the bucket: admitted once empty
    lim.charge(0, 0.1, 10_000, 0, 0, reserved=10_000)  # charge clamps the reservation the same way
    assert lim.remaining(0, 0.1)[1] == pytest.approx(600 - 10_000)


# -- budget ------------------------------------------------------------------------------------------


def test_budget_refuses_once_spent_and_for_good() -> None:
    lim = one(budget_nusd=1_000)
    assert lim.admit(0, 0.0)[0]
    assert lim.admit(0, 0.0)[0]
    lim.charge(0, 0.0, 10, 10, 600)
    assert lim.admit(0, 1.0)[0]
    lim.charge(0, 1.0, 10, 10, 400)  # exactly the budget
    assert lim.admit(0, 2.0) == (False, 0.0, BUDGET)
    assert lim.admit(0, 1e9) == (False, 0.0, BUDGET)
    lim.charge(0, 2.0, 0, 0, 250)  # one still in flight when it ran out: overshoot, counted
    assert lim.states[0].spent == 1_250
    assert lim.remaining(0, 2.0) == (-1.0, -1.0, 0)
    assert lim.states[0].refused_budget == 2


def test_budget_in_integers_does_not_drift() -> None:
    lim = one(budget_nusd=NANO // 100)  # 1 cent
    cost = cost_nusd(7, 3, 0.1, 0.3)
    assert cost == 1_600  # $0.0000016
    float_sum = 0.0
    for _ in range(6_249):
        lim.charge(0, 0.0, 7, 3, cost)
        float_sum += 1.6e-6
    assert lim.states[0].spent == NANO // 100 - 1_600
    assert lim.admit(0, 0.0)[0]
    lim.charge(0, 0.0, 7, 3, cost)
    float_sum += 1.6e-6
    assert lim.states[0].spent == NANO // 100 and not lim.admit(0, 0.0)[0]  # exactly at the budget
    assert float_sum != 0.01  # a float sum drifts (here 0.009999999999999043: "not yet")


# -- several workers ---------------------------------------------------------------------------------


def test_each_worker_enforces_its_share() -> None:
    lim = Limits.of([600, 0], [0, 4000], [10 * NANO, 3], workers=4)
    n = 0
    while lim.admit(0, 0.0)[0]:
        n += 1
    assert n == 150
    # each worker may spend its share of what is left (rounded up: a tiny budget is not rounded down to "spent")
    assert [s.allowance for s in lim.states] == [10 * NANO // 4, 1]
    assert lim.admit(1, 0.0, 1000)[0]
    assert not lim.admit(1, 0.0, 1)[0]


def test_no_limits_admits_everything() -> None:
    lim = Limits.of([0, 0], [0, 0], [0, 0])
    for i in range(1000):
        assert lim.admit(i % 2, 0.0, 10**9) is ADMITTED
    lim.charge(0, 0.0, 10**9, 10**9, 10**12)
    assert lim.admit(0, 0.0) is ADMITTED
    assert lim.remaining(0, 0.0) == (-1.0, -1.0, -1)


def test_snapshot_and_repr() -> None:
    lim = Limits.of([60], [600], [NANO])
    lim.admit(0, 0.0, 100)
    lim.charge(0, 0.0, 40, 60, 5000, 100)
    lim.admit(0, 0.0, 10)
    row = lim.snapshot(0.0)[0]
    assert row["admitted"] == 2 and row["in_flight"] == 1
    assert row["remaining_requests"] == 58 and row["remaining_tokens"] == 490
    assert row["spent_nusd"] == 5000 and row["remaining_nusd"] == NANO - 5000
    assert "admitted=2" in repr(lim)


def test_bad_construction() -> None:
    with pytest.raises(ValueError):
        Limits.of([1], [1, 2], [1])
    with pytest.raises(ValueError):
        Limits.of([1], [1], [1], workers=0)


# -- cost --------------------------------------------------------------------------------------------


def test_cost_formula_worked_examples() -> None:
    # API-FORMATS §5.2: $3 in / $15 out per million; 1000 in + 500 out = $0.0105
    assert cost_nusd(1000, 500, 3.0, 15.0) == 10_500_000
    assert cost_nusd(12_000, 500, 2.0, 8.0) == 28_000_000
    assert cost_nusd(0, 0, 3.0, 15.0) == 0
    assert cost_nusd(1, 0, 0.15, 0) == 150  # float price converted exactly: 0.15 -> 150000 pico per token


def test_cost_rounds_half_up_to_nano_dollars() -> None:
    assert cost_nusd(1, 0, 0.0005, 0) == 1  # 0.5 nano-dollars
    assert cost_nusd(1, 0, 0.0004, 0) == 0
    assert cost_nusd(3, 0, 0.0005, 0) == 2  # 1.5 -> 2, rounded once on the sum
    assert cost_nusd_at(1, 1, 499, 1) == 1  # 0.5 -> 1
    assert cost_nusd_at(1, 1, 498, 1) == 0  # 0.499 -> 0


@given(st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**9), st.integers(0, 10**9))
def test_cost_matches_decimal_arithmetic(tin: int, tout: int, pin: int, pout: int) -> None:
    exact = (Decimal(tin) * pin + Decimal(tout) * pout) / 1000
    assert cost_nusd_at(tin, tout, pin, pout) == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_format_usd() -> None:
    assert format_usd(42_000) == "0.000042"
    assert format_usd(1_500) == "0.000002"  # half up
    assert format_usd(1_499) == "0.000001"
    assert format_usd(499) == "0.000000"
    assert format_usd(0) == "0.000000"
    assert format_usd(123 * NANO) == "123.000000"
    assert format_usd(10_500_000) == "0.010500"
    assert format_usd(1, 9) == "0.000000001"
    assert format_usd(2_500_000_000, 0) == "3"
    assert format_usd(3 * NANO, 2) == "3.00"
    assert format_usd(-42_000) == "-0.000042"
    with pytest.raises(ValueError):
        format_usd(1, 10)
    assert cost_header(42_000) == b"x-llm-edge-cost: 0.000042\r\n"


@given(st.integers(0, 10**18), st.integers(0, 9))
def test_format_usd_is_plain_decimal_rounded_half_up(nusd: int, decimals: int) -> None:
    text = format_usd(nusd, decimals)
    assert "e" not in text.lower() and text.count(".") == (1 if decimals else 0)
    expected = (Decimal(nusd) / NANO).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    assert Decimal(text) == expected
    assert len(text.partition(".")[2]) == decimals
