"""Honest numbers for a handful of seeds: mean, standard error, a t-based 95 % CI, and formatting.

The rule of the house: a spread is printed only where it can be estimated.

* ``fmt([0.94, 0.95, 0.93])`` -> ``"0.9400 ± 0.0058 (se, n=3)"``
* ``fmt([0.94, 0.95])``       -> ``"0.9450 (n=2: 0.9400, 0.9500)"``  (two values, no spread)
* ``fmt([0.94])``             -> ``"0.9400 (1 seed)"``

``± 0`` is never printed: fewer than 3 values get no spread, identical values say
``all equal``.  :func:`difference` compares two sets of numbers (paired by seed
when they share seeds) and says whether the difference is *within the noise*:
its 95 % CI contains 0, or it is smaller than one test image (``1/n_test``: on
digits' 360 test images, 0.0028).  With one value a side, a CI from the test set
alone is used when ``n_test`` is given; otherwise the verdict says there is none.

The API: :func:`summarize` -> :class:`Summary`; :func:`fmt`; :func:`table` (a pivot
of fmt strings); :func:`difference` -> :class:`Difference` (``.text``,
``.within_noise``); :func:`accuracy_se`; :func:`binomial_lower_bound` and
:func:`trials_needed` (how many random masks a probability claim needs);
:func:`t_quantile`.

No SciPy: t quantiles come from the closed-form t distribution of integer degrees
of freedom, binomial bounds from exact sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import numpy as np

Numbers = Union[Sequence[float], np.ndarray, "Summary"]

def _z(p: float) -> float:
    """Standard normal quantile (Acklam's rational approximation, refined by one Newton step)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if p > 0.5:
        return -_z(1 - p)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    e = 0.5 * math.erfc(-x / math.sqrt(2)) - p
    return x - e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for integer df: the finite series of Abramowitz & Stegun 26.7.3-4."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        term, total = math.cos(theta), 0.0
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):
                term *= c2 * (k - 1) / k
                total += term
        return 2 / math.pi * (theta + s * total)
    term, total = 1.0, 1.0
    for k in range(2, df, 2):
        term *= c2 * (k - 1) / k
        total += term
    return s * total


def t_quantile(df: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t quantile: P(|T| <= t) = confidence with ``df`` degrees of freedom.

    Exact (bisection on the closed-form CDF) up to 200 degrees of freedom; a Cornish-Fisher
    expansion of the normal quantile beyond (error < 1e-6 there).
    """
    if int(df) != df or df < 1:
        raise ValueError(f"df={df!r} is invalid: allowed an integer >= 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} is invalid: allowed 0 < confidence < 1")
    df = int(df)
    z = _z(0.5 + confidence / 2)
    if df > 200:
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
        return z + g1 / df + g2 / df**2 + g3 / df**3
    lo, hi = z, z
    while _t_central(hi, df) < confidence:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if _t_central(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Summary:
    """n values: their mean, sd, standard error and t-based CI (NaN where n is too small)."""

    n: int
    mean: float
    sd: float
    se: float
    ci_low: float
    ci_high: float
    values: tuple[float, ...]
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        """Half the CI's width (NaN for n < 2)."""
        return (self.ci_high - self.ci_low) / 2


def summarize(values: Iterable[float], confidence: float = 0.95) -> Summary:
    """Mean, sample sd, se = sd/sqrt(n) and the t CI of the mean.  NaN values are an error, not dropped."""
    if isinstance(values, Summary):
        return values
    v = np.asarray([float(x) for x in values], dtype=float)
    if v.size == 0:
        raise ValueError("summarize() needs at least one value")
    if np.isnan(v).any():
        raise ValueError(f"summarize() got NaN among {v.tolist()}; drop failed runs explicitly first")
    n, mean = int(v.size), float(v.mean())
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan, math.nan, tuple(v.tolist()), confidence)
    sd = float(v.std(ddof=1))
    se = sd / math.sqrt(n)
    t = t_quantile(n - 1, confidence)
    return Summary(n, mean, sd, se, mean - t * se, mean + t * se, tuple(v.tolist()), confidence)


def fmt(values: Numbers, digits: int = 4, spread: str = "se", unit: str = "seed") -> str:
    """One number with an honest spread.

    ``spread``: ``se`` (``mean ± se``) or ``ci`` (``mean [low, high]``).  n = 1: ``"x (1 seed)"``;
    n = 2: the two values, no spread; n >= 3: the spread.  ``unit`` names what n counts (seed, mask, ...).
    """
    if spread not in ("se", "ci"):
        raise ValueError(f"spread={spread!r} is invalid: allowed se, ci")
    s = summarize(values)
    f = f"{{:.{digits}f}}"
    m = f.format(s.mean)
    if s.n == 1:
        return f"{m} (1 {unit})"
    if s.sd == 0.0:  # nothing varied (e.g. random masks at sparsity 0): say so rather than print "± 0"
        return f"{m} (n={s.n}, all equal)"
    if s.n == 2:
        return f"{m} (n=2: {f.format(s.values[0])}, {f.format(s.values[1])})"
    if spread == "se":
        return f"{m} ± {f.format(s.se)} (se, n={s.n})"
    return f"{m} [{f.format(s.ci_low)}, {f.format(s.ci_high)}] ({s.confidence:.0%} CI, n={s.n})"


@dataclass(frozen=True)
class Difference:
    """a - b with a CI where one exists, and whether it is within the noise."""

    mean: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    paired: bool
    resolution: float
    within_noise: bool
    text: str

    def __str__(self) -> str:
        return self.text


def difference(a: Numbers, b: Numbers, paired: bool = False, resolution: Optional[float] = None, digits: int = 4,
               names: tuple[str, str] = ("a", "b"), n_test: Optional[int] = None) -> Difference:
    """Compare two sets of numbers: mean(a) - mean(b), its t CI, and a verdict in words.

    ``paired=True`` when a[i] and b[i] share a seed (the same dense network, data order ...):
    the CI of the mean of the differences, usually much narrower.  Otherwise Welch's CI; a side
    with a single value is taken as exact (a deterministic method against random masks).
    ``resolution``: the smallest difference that means anything (default ``1 / n_test``, one test image).
    Within the noise: the CI contains 0, or |difference| < resolution.

    With a single value a side there is no seed-to-seed spread.  If the values are accuracies on
    ``n_test`` images, the CI then comes from the test set alone (binomial, normal approximation):
    it tells whether the choice of test images could produce the difference, not whether another
    training seed could.  Without ``n_test`` the verdict says there is no estimate of the noise.
    """
    if resolution is None:
        resolution = 1.0 / n_test if n_test else 0.0
    sa, sb = summarize(a), summarize(b)
    na, nb = names
    sign, plain = f"{{:+.{digits}f}}", f"{{:.{digits}f}}"
    if paired:
        if sa.n != sb.n:
            raise ValueError(f"paired needs as many values in a ({sa.n}) as in b ({sb.n})")
        d = summarize([x - y for x, y in zip(sa.values, sb.values)])
        mean, se, lo, hi, n = d.mean, d.se, d.ci_low, d.ci_high, d.n
    else:
        mean, n = sa.mean - sb.mean, min(sa.n, sb.n)
        se = lo = hi = math.nan
        if sa.n >= 2 and sb.n >= 2:
            va, vb = sa.sd**2 / sa.n, sb.sd**2 / sb.n
            se = math.sqrt(va + vb)
            dof = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1)) if se > 0 else sa.n + sb.n - 2
            t = t_quantile(max(1, int(math.floor(dof))))
            lo, hi = mean - t * se, mean + t * se
        elif max(sa.n, sb.n) >= 2:  # one side is a single, exact value (a deterministic method): one-sample t
            other = sa if sa.n >= 2 else sb
            n, se = other.n, other.se
            t = t_quantile(other.n - 1)
            lo, hi = mean - t * se, mean + t * se
    small = abs(mean) < resolution
    what = f"{na} - {nb} = {sign.format(mean)}"
    image = f"one test image is {plain.format(resolution)}"
    where = f"{'paired, ' if paired else ''}n={n}"
    if math.isnan(lo) and n_test:  # one value (or pair) a side: the test set's own sampling noise
        se = math.sqrt(accuracy_se(sa.mean, n_test) ** 2 + accuracy_se(sb.mean, n_test) ** 2)
        lo, hi = mean - 1.96 * se, mean + 1.96 * se
        where = f"test-set noise only, {n_test} images, 1 seed"
    if math.isnan(lo):  # no spread: only the resolution can say anything
        count = f"{n} value{'s' if n != 1 else ''} a side, no spread"
        if small:
            return Difference(mean, se, lo, hi, n, paired, resolution, True,
                              f"{what}: within the noise (smaller than {image}; {count})")
        return Difference(mean, se, lo, hi, n, paired, resolution, False,
                          f"{what}: no estimate of the noise ({count}; run more seeds)")
    covers_zero = lo <= 0.0 <= hi
    ci = f"95 % CI [{sign.format(lo)}, {sign.format(hi)}], {where}"
    if covers_zero or small:
        reason = "the CI contains 0" if covers_zero else f"smaller than {image}"
        return Difference(mean, se, lo, hi, n, paired, resolution, True, f"{what} ({ci}): within the noise ({reason})")
    return Difference(mean, se, lo, hi, n, paired, resolution, False,
                      f"{what} ({ci}): {na if mean > 0 else nb} is higher")


@dataclass(frozen=True)
class PairedTest:
    """Student's paired t-test of a[i] - b[i] (the same seed on both sides): mean difference, t, two-sided p."""

    mean: float
    se: float
    t: float
    p: float
    n: int


def paired_t_test(a: Numbers, b: Numbers) -> PairedTest:
    """Paired t-test over seeds: t = mean(d) / (sd(d) / sqrt(n)), p = P(|T_{n-1}| >= |t|).

    Needs n >= 2 pairs.  All differences equal: t is +-inf and p = 0 (or t = 0, p = 1 when they are all 0).
    """
    sa, sb = summarize(a), summarize(b)
    if sa.n != sb.n or sa.n < 2:
        raise ValueError(f"a paired test needs as many values in a ({sa.n}) as in b ({sb.n}), at least 2")
    d = summarize([x - y for x, y in zip(sa.values, sb.values)])
    if d.se == 0:
        t = 0.0 if d.mean == 0 else math.copysign(math.inf, d.mean)
        return PairedTest(d.mean, 0.0, t, 1.0 if d.mean == 0 else 0.0, d.n)
    t = d.mean / d.se
    return PairedTest(d.mean, d.se, t, max(0.0, 1.0 - _t_central(abs(t), d.n - 1)), d.n)


def binomial_lower_bound(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound on a probability from ``successes`` of ``trials``.

    With all trials successful it is ``(1 - confidence) ** (1 / trials)``: 20 of 20 masks
    within epsilon only show P >= 0.861 with 95 % confidence.
    """
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"successes={successes!r}, trials={trials!r} are invalid: allowed 0 <= successes <= trials, "
                         "trials >= 1")
    if successes == 0:
        return 0.0
    alpha = 1.0 - confidence

    def tail(p: float) -> float:  # P(X >= successes | p)
        return sum(math.comb(trials, i) * p**i * (1 - p) ** (trials - i) for i in range(successes, trials + 1))

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if tail(mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def trials_needed(probability: float, confidence: float = 0.95) -> int:
    """Fewest trials, all successful, whose Clopper-Pearson lower bound reaches ``probability``."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability={probability!r} is invalid: allowed 0 < probability < 1")
    return int(math.ceil(math.log(1.0 - confidence) / math.log(probability)))


def accuracy_se(accuracy: float, n_test: int) -> float:
    """Binomial standard error of an accuracy measured on ``n_test`` images: sqrt(p(1-p)/n)."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n_test)


def table(df, index, columns, values: str, digits: int = 4, spread: str = "se", unit: str = "seed"):
    """A pivot of ``df`` whose cells are :func:`fmt` strings (mean with an honest spread)."""
    return df.pivot_table(index=index, columns=columns, values=values,
                          aggfunc=lambda v: fmt(list(v), digits, spread, unit))
