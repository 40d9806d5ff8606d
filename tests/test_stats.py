import math

import pandas as pd
import pytest

from bayesprune.analysis import stats


def test_t_quantiles_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 29, 30, 31, 50, 200):
        for conf in (0.9, 0.95, 0.99):
            assert stats.t_quantile(df, conf) == pytest.approx(scipy_stats.t.ppf(0.5 + conf / 2, df), abs=1e-6)
    for p in (1e-6, 0.01, 0.3, 0.5, 0.975, 0.999):
        assert stats._z(p) == pytest.approx(scipy_stats.norm.ppf(p), abs=1e-8)


def test_summarize_mean_se_and_ci():
    s = stats.summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0)
    assert s.se == pytest.approx(1 / math.sqrt(3))
    assert s.ci_low == pytest.approx(2 - 4.302653 / math.sqrt(3)) and s.ci_high == pytest.approx(2 + 4.302653 / math.sqrt(3))
    one = stats.summarize([0.5])
    assert one.n == 1 and math.isnan(one.se) and math.isnan(one.ci_low)
    with pytest.raises(ValueError, match="NaN"):
        stats.summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        stats.summarize([])


def test_fmt_never_prints_a_spread_it_cannot_estimate():
    assert stats.fmt([0.9444]) == "0.9444 (1 seed)"
    assert stats.fmt([0.94, 0.95]) == "0.9450 (n=2: 0.9400, 0.9500)"
    assert stats.fmt([0.95, 0.95]) == "0.9500 (n=2, all equal)"
    assert stats.fmt([0.1] * 5) == "0.1000 (n=5, all equal)"  # never "± 0.0000"
    assert stats.fmt([0.94, 0.95, 0.93]) == "0.9400 ± 0.0058 (se, n=3)"
    assert stats.fmt([0.94, 0.95, 0.93], spread="ci").startswith("0.9400 [0.9152, 0.9648] (95% CI, n=3)")
    assert stats.fmt([1, 2], unit="mask", digits=1) == "1.5 (n=2: 1.0, 2.0)"
    assert stats.fmt([3.0], unit="mask") == "3.0000 (1 mask)"
    with pytest.raises(ValueError, match="spread"):
        stats.fmt([1, 2, 3], spread="sd")


def test_difference_paired_welch_and_resolution():
    a, b = [0.90, 0.92, 0.94], [0.80, 0.83, 0.84]
    d = stats.difference(a, b, names=("magnitude", "random"))
    assert d.mean == pytest.approx(0.0967, abs=1e-4) and not d.within_noise and "magnitude is higher" in d.text
    # paired: the per-seed differences are almost constant, so the CI is narrow
    p = stats.difference([0.90, 0.95, 0.85], [0.89, 0.94, 0.84], paired=True)
    assert p.paired and not p.within_noise and p.ci_low > 0
    w = stats.difference([0.90, 0.95, 0.85], [0.89, 0.94, 0.84])  # unpaired: the seed spread swamps it
    assert w.within_noise and "CI contains 0" in w.text
    # below one test image of digits: within the noise even without a spread
    r = stats.difference([0.9444], [0.9430], resolution=1 / 360)
    assert r.within_noise and "one test image is 0.0028" in r.text
    one = stats.difference([0.95], [0.50, 0.55, 0.60], names=("magnitude", "random"))  # one exact value vs masks
    assert one.n == 3 and one.ci_low == pytest.approx(0.40 - 4.302653 * 0.05 / 3**0.5) and "magnitude is higher" in one.text
    big = stats.difference([0.95], [0.55], resolution=1 / 360)
    assert not big.within_noise and "no estimate of the noise" in big.text
    # one value a side, accuracies on 360 images: the test set's own noise gives a CI
    t = stats.difference([0.80], [0.78], n_test=360)
    assert t.within_noise and t.resolution == pytest.approx(1 / 360) and "test-set noise only, 360 images" in t.text
    assert t.se == pytest.approx(math.sqrt(0.8 * 0.2 / 360 + 0.78 * 0.22 / 360))
    assert not stats.difference([0.95], [0.55], n_test=360).within_noise
    with pytest.raises(ValueError, match="paired"):
        stats.difference([1, 2], [1, 2, 3], paired=True)


def test_binomial_lower_bound_and_trials_needed():
    assert stats.binomial_lower_bound(20, 20) == pytest.approx(0.05 ** (1 / 20), abs=1e-9)  # 0.861
    assert stats.binomial_lower_bound(0, 20) == 0.0
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in ((18, 20), (55, 60), (1, 5)):
        assert stats.binomial_lower_bound(k, n) == pytest.approx(scipy_stats.beta.ppf(0.05, k, n - k + 1), abs=1e-9)
    n = stats.trials_needed(0.9)
    assert n == 29 and stats.binomial_lower_bound(n, n) >= 0.9 > stats.binomial_lower_bound(n - 1, n - 1)
    with pytest.raises(ValueError):
        stats.binomial_lower_bound(3, 2)


def test_accuracy_se_and_table():
    assert stats.accuracy_se(0.9, 360) == pytest.approx(math.sqrt(0.09 / 360))
    df = pd.DataFrame({"sparsity": [0.5] * 3 + [0.9], "start": ["rewind"] * 4, "acc": [0.9, 0.91, 0.92, 0.8]})
    t = stats.table(df, "sparsity", "start", "acc")
    assert t.loc[0.5, "rewind"] == "0.9100 ± 0.0058 (se, n=3)" and t.loc[0.9, "rewind"] == "0.8000 (1 seed)"


@pytest.mark.parametrize("a, b", [([0.97, 0.96, 0.975], [0.965, 0.958, 0.96]),
                                  ([0.5, 0.6, 0.55, 0.7, 0.62], [0.52, 0.55, 0.57, 0.61, 0.6]),
                                  ([1.0, 2.0], [0.5, 2.5])])
def test_paired_t_test_matches_scipy(a, b):
    scipy_stats = pytest.importorskip("scipy.stats")
    ours = stats.paired_t_test(a, b)
    ref = scipy_stats.ttest_rel(a, b)
    assert ours.t == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-12)
    assert ours.n == len(a)


def test_paired_t_test_without_spread_or_pairs():
    assert stats.paired_t_test([1, 2, 3], [1, 2, 3]).p == 1.0
    assert stats.paired_t_test([2, 3, 4], [1, 2, 3]).p == 0.0
    with pytest.raises(ValueError, match="paired test needs as many values"):
        stats.paired_t_test([1, 2], [1])
