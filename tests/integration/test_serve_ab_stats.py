"""Deltas with a 95% interval: the exact Mann-Whitney critical values, the Hodges-Lehmann shift, the wording."""

from __future__ import annotations

import pytest

from integration.serve_ab import stats


@pytest.mark.parametrize("n, m, c", [(3, 3, None), (4, 4, 0), (5, 5, 2), (6, 6, 5), (5, 6, 3), (8, 8, 13)])
def test_critical_values_match_the_published_table(n, m, c):
    """Two-sided 0.05 Mann-Whitney critical values (U <= c rejects); 3 vs 3 cannot reach 95%."""
    assert stats._critical(n, m) == c


def test_shift_is_the_median_log_ratio_and_the_interval_its_order_statistics():
    off = [100.0, 101.0, 102.0, 103.0, 104.0]
    on = [x * 1.10 for x in off]
    s = stats.shift(off, on)
    assert s["delta_pct"] == pytest.approx(10.0)
    # 25 differences; the interval is the 3rd smallest and 3rd largest
    ratios = sorted(b / a for a in off for b in on)
    assert (s["lo_pct"], s["hi_pct"]) == (pytest.approx((ratios[2] - 1) * 100), pytest.approx((ratios[22] - 1) * 100))
    assert 0 < s["lo_pct"] < 10 < s["hi_pct"]


def test_wording_follows_the_interval_and_the_direction():
    off = [1.90, 2.00, 2.10, 1.98, 1.85]
    assert stats.verdict(stats.shift(off, [x * 1.2 for x in off]), higher_is_better=False).startswith("slower 20.0%")
    assert stats.verdict(stats.shift(off, [x * 1.2 for x in off]), higher_is_better=True).startswith("gain 20.0%")
    mixed = stats.verdict(stats.shift(off, [1.91, 1.99, 2.08, 1.97, 1.88]), higher_is_better=False)
    assert mixed.startswith("no difference within ±") and "CI -" in mixed
    assert stats.verdict(stats.shift([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]), True).endswith(
        "(n=3/3: too few servers for a 95% interval)")


def test_median_iqr():
    assert stats.median_iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == {"median": 3.0, "q1": 2.0, "q3": 4.0, "n": 5}
    assert stats.median_iqr([7.0]) == {"median": 7.0, "q1": 7.0, "q3": 7.0, "n": 1}
