"""Speed deltas with a 95% interval that needs no normality and no scipy: Hodges-Lehmann on log ratios.

For servers ``off_i`` and ``on_j`` the ``n*m`` differences ``ln(on_j) - ln(off_i)`` are sorted; their
median estimates the shift, and the exact Mann-Whitney distribution gives the order statistics that
bound a >= 95% interval (the usual distribution-free interval for a location shift). Results are in
percent of ``off`` (``exp(d) - 1``), so a ratio of two servers is what is compared, whatever the unit.
With fewer servers than the test can resolve (3 vs 3 cannot reach 95%) there is no interval.
"""

from __future__ import annotations

import math
import statistics
from functools import lru_cache

LEVEL = 0.95


def median_iqr(values: list[float]) -> dict:
    """Median and the interquartile range (quartiles by the inclusive method), n."""
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0], "n": 1}
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "n": len(values)}


@lru_cache(maxsize=None)
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """Number of arrangements per Mann-Whitney U (0..n*m) of n vs m distinct values."""
    # f(n, m, u) = f(n - 1, m, u - m) + f(n, m - 1, u)
    if n == 0 or m == 0:
        return (1,)
    a, b = _u_counts(n - 1, m), _u_counts(n, m - 1)
    return tuple((a[u - m] if 0 <= u - m < len(a) else 0) + (b[u] if u < len(b) else 0) for u in range(n * m + 1))


def _critical(n: int, m: int) -> int | None:
    """Largest c with P(U <= c) <= (1 - LEVEL) / 2, or None when even U = 0 is too likely."""
    counts = _u_counts(n, m)
    total, tail, c = math.comb(n + m, n), 0, None
    for u, k in enumerate(counts):
        tail += k
        if tail / total > (1 - LEVEL) / 2:
            break
        c = u
    return c


def shift(off: list[float], on: list[float]) -> dict:
    """Hodges-Lehmann delta of ``on`` vs ``off`` in %, with its interval (None when n is too small)."""
    diffs = sorted(math.log(b) - math.log(a) for a in off for b in on)
    pct = lambda d: (math.exp(d) - 1) * 100  # noqa: E731
    out = {"delta_pct": pct(statistics.median(diffs)), "lo_pct": None, "hi_pct": None,
           "n_off": len(off), "n_on": len(on)}
    c = _critical(len(off), len(on))
    if c is not None:
        # the (c+1)-th smallest and (c+1)-th largest difference
        out["lo_pct"], out["hi_pct"] = pct(diffs[c]), pct(diffs[len(diffs) - 1 - c])
    return out


def verdict(s: dict, higher_is_better: bool) -> str:
    """'gain X% (CI a..b)', 'slower X% (CI a..b)', 'no difference within ±x%', or why there is no call."""
    if s["lo_pct"] is None:
        return f"{s['delta_pct']:+.1f}% (n={s['n_off']}/{s['n_on']}: too few servers for a 95% interval)"
    lo, hi = s["lo_pct"], s["hi_pct"]
    ci = f"(CI {lo:+.1f}..{hi:+.1f}%)"
    if lo <= 0 <= hi:
        return f"no difference within ±{max(abs(lo), abs(hi)):.1f}% {ci}"
    better = (lo > 0) == higher_is_better
    return f"{'gain' if better else 'slower'} {abs(s['delta_pct']):.1f}% {ci}"


def fisher_fewer(a: int, n: int, b: int, m: int) -> float:
    """One-sided Fisher exact p: the chance that ``n`` servers drawn from all ``n + m`` hold ``a`` or fewer
    of the ``a + b`` successes (``a`` of ``n`` against ``b`` of ``m``)."""
    total, successes = n + m, a + b
    return sum(math.comb(successes, k) * math.comb(total - successes, n - k)
               for k in range(max(0, n - (total - successes)), a + 1)) / math.comb(total, n)

