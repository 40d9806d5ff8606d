"""lab/posterior_masks (notebook 09): rank agreement, mask overlap, the frontier's paired table and its verdict.

Oracles: scipy's Spearman, masks counted by hand, differences and standard errors worked out from the numbers
in the test, the package's own ``compute_mask`` for the criteria, and the bound Sigma_pp <= 1/delta.
"""

import importlib.util
import math

import pandas as pd
import pytest
import torch
from torch import nn

import bayesprune as bp
from bayesprune.core.criteria import compute_mask
from bayesprune.core.data import TensorDataset
from bayesprune.core.pruning import Mask
from bayesprune.lab import posterior_masks as pm

needs_laplace = pytest.mark.skipif(importlib.util.find_spec("laplace") is None, reason="needs laplace-torch")


@pytest.fixture(scope="module")
def tiny():
    """A 6-5-3 tanh MLP in float64 trained a little on 60 random examples (so the curvature is not flat)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(60, 6, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    data = TensorDataset("tiny", x, y, x[:10], y[:10], 3)
    cfg = bp.RunConfig(dataset="synthetic", hessian_structure="full", bf_samples=None, scope="global")
    return net, data, cfg


# ------------------------------------------------------------------ rank correlation
def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (200,), generator=g).double()  # many ties
    b = a + torch.randn(200, generator=g, dtype=torch.float64)
    assert pm.spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy()).statistic, rel=1e-12)
    assert pm.spearman(a, -a) == pytest.approx(-1.0)
    assert pm.spearman(a, a.exp()) == pytest.approx(1.0)  # a monotone map keeps the order
    assert math.isnan(pm.spearman(torch.ones(5), torch.arange(5.0)))
    with pytest.raises(ValueError, match="same length"):
        pm.spearman(torch.ones(3), torch.ones(4))


# ------------------------------------------------------------------ the saliency
@needs_laplace
def test_saliency_is_the_obs_criterion_and_sigma_never_exceeds_the_prior(tiny):
    net, data, cfg = tiny
    sal = pm.saliencies(net, data, cfg, prior_sigma=0.5)
    assert sal.prior_precision == pytest.approx(4.0) and sal.prior_sigma == pytest.approx(0.5)
    want = compute_mask(net, "obs", 0.6, "global", data=data, prior_precision=4.0, config=cfg)
    _, ours = pm.masks_at(net, sal.scores, 0.6, scope="global")
    for k in want:
        assert torch.equal(ours[k], want[k])
    for k, share in sal.prior_share().items():  # (H + delta I)^-1 <= I / delta: the data only shrink the variance
        assert bool((share <= 1 + 1e-12).all()) and bool((share > 0).all())
        assert bool((share < 0.999).any()), k  # and here they do, somewhere
    mag, _ = pm.masks_at(net, sal.scores, 0.6, scope="global")
    want_mag = compute_mask(net, "magnitude", 0.6, "global")
    assert all(torch.equal(mag[k], want_mag[k]) for k in want_mag)


@needs_laplace
def test_a_narrow_prior_makes_the_saliency_rank_like_magnitude(tiny):
    net, data, cfg = tiny
    narrow, wide = pm.saliencies(net, data, cfg, prior_sigma=1e-3), pm.saliencies(net, data, cfg, prior_sigma=3.0)
    a_narrow, a_wide = pm.rank_agreement(net, narrow), pm.rank_agreement(net, wide)
    assert (a_narrow["spearman(|w|, saliency)"] > 1 - 1e-9).all()
    assert (a_narrow["median delta*Sigma_pp"] > 0.999).all()
    assert (a_wide["spearman(|w|, saliency)"] < a_narrow["spearman(|w|, saliency)"]).any()
    assert (a_wide["min delta*Sigma_pp"] <= a_wide["median delta*Sigma_pp"]).all()
    assert list(a_wide["weights"]) == [30, 15]
    first = net[0].weight.detach().abs()
    assert a_wide["decades of |w|"].iloc[0] == pytest.approx(math.log10(float(first.max()) / float(first.min())))


@needs_laplace
def test_without_a_sigma_the_prior_is_fitted_to_the_evidence(tiny):
    from bayesprune.bayes.evidence import Curvature

    net, data, cfg = tiny
    sal = pm.saliencies(net, data, cfg)
    delta = Curvature.fit(net, data.x_train, data.y_train, structure="full").fit_prior_precision()
    assert sal.prior_precision == pytest.approx(delta, rel=1e-9)


# ------------------------------------------------------------------ masks
def _masks():
    a = Mask({"fc1.weight": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool),
              "fc2.weight": torch.tensor([[1, 0], [0, 0]], dtype=torch.bool)})
    b = Mask({"fc1.weight": torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.bool),
              "fc2.weight": torch.tensor([[1, 1], [0, 0]], dtype=torch.bool)})
    return a, b


def test_overlap_counts_by_hand():
    t = pm.overlap(*_masks())
    assert list(t.index) == ["fc1.weight", "fc2.weight", "all"]
    assert t.loc["fc1.weight", ["weights", "kept by magnitude", "kept by obs", "kept by both", "only magnitude",
                                "only obs"]].tolist() == [8, 3, 3, 2, 1, 1]
    assert t.loc["fc1.weight", "jaccard"] == pytest.approx(2 / 4)
    assert t.loc["fc2.weight", "jaccard"] == pytest.approx(1 / 2)
    assert t.loc["all", "kept by both"] == 3 and t.loc["all", "jaccard"] == pytest.approx(3 / 6)
    same = pm.overlap(_masks()[0], _masks()[0])
    assert (same["jaccard"] == 1.0).all() and (same["only obs"] == 0).all()
    with pytest.raises(ValueError, match="same tensors"):
        pm.overlap(_masks()[0], {"fc1.weight": _masks()[1]["fc1.weight"]})


def test_kept_per_input_is_the_column_mean_shaped_as_the_input():
    m = {"fc1.weight": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 1]], dtype=torch.bool)}
    img = pm.kept_per_input(m, "fc1.weight", (1, 2, 2))
    assert img.shape == (2, 2) and img.tolist() == [[1.0, 0.5], [0.0, 0.5]]
    with pytest.raises(ValueError, match="first fully connected"):
        pm.kept_per_input(m, "fc1.weight", (1, 3, 3))


# ------------------------------------------------------------------ the frontier
def test_frontier_configs_has_one_dense_run_per_seed():
    base = bp.RunConfig(dataset="digits", schedule="gradual", scope="global")
    cfgs = pm.frontier_configs(base, ["none", "magnitude", "obs"], [0.5, 0.9], [0, 1])
    assert len(cfgs) == 2 * (1 + 2 * 2)
    assert sorted((c.method, c.sparsity) for c in cfgs if c.seed == 1) == [
        ("magnitude", 0.5), ("magnitude", 0.9), ("none", 0.0), ("obs", 0.5), ("obs", 0.9)]
    assert all(c.scope == "global" and c.schedule == "gradual" for c in cfgs)


def _results(rows):
    return pd.DataFrame(rows, columns=["method", "sparsity", "seed", "final_sparsity", "test_accuracy"])


def test_frontier_table_pairs_by_seed_with_both_noises():
    res = _results([("obs", 0.9, 0, 0.9, 0.90), ("obs", 0.9, 1, 0.9, 0.94), ("magnitude", 0.9, 0, 0.9, 0.88),
                    ("magnitude", 0.9, 1, 0.9, 0.90), ("magnitude", 0.9, 2, 0.9, 0.50),  # seed 2 has no pair
                    ("none", 0.0, 0, 0.0, 0.95)])
    t = pm.frontier_table(res, n_test=400)
    assert len(t) == 1
    r = t.iloc[0]
    assert r["n"] == 2 and r["obs"] == pytest.approx(0.92) and r["magnitude"] == pytest.approx(0.89)
    assert r["obs - magnitude"] == pytest.approx(0.03)  # differences 0.02 and 0.04
    assert r["paired se"] == pytest.approx(math.sqrt(2 * 0.01 ** 2) / math.sqrt(2))  # sd of (0.02, 0.04) / sqrt 2
    test_se = math.sqrt(0.92 * 0.08 / 400 + 0.89 * 0.11 / 400)
    assert r["test-set se"] == pytest.approx(test_se)
    assert r["noise"] == pytest.approx(math.sqrt(0.01 ** 2 + test_se ** 2))
    stats = pytest.importorskip("scipy.stats")
    t = stats.t.ppf(0.975, 1)  # two seeds: the paired t interval has one degree of freedom
    assert r["t"] == pytest.approx(t, abs=1e-6)
    assert (r["ci low"], r["ci high"]) == pytest.approx((0.03 - t * r["noise"], 0.03 + t * r["noise"]), abs=1e-6)
    assert not r["beyond the noise"]  # 0.03 is more than twice its noise (0.023), but t = 12.7 at n = 2


def test_frontier_interval_is_scipys_paired_t_interval_when_the_test_set_is_huge():
    stats = pytest.importorskip("scipy.stats")
    # with a test set this large the test-set SE vanishes and the interval is the plain paired t interval
    for acc_obs, acc_mag, beyond in [([0.95, 0.97], [0.90, 0.90], False),  # +0.05, +0.07: 6 se, inside t(1) = 12.7
                                     ([0.95, 0.96, 0.94, 0.97], [0.90, 0.90, 0.90, 0.91], True)]:  # t(3) = 3.18
        seeds = range(len(acc_obs))
        res = _results([("obs", 0.9, s, 0.9, a) for s, a in zip(seeds, acc_obs)]
                       + [("magnitude", 0.9, s, 0.9, b) for s, b in zip(seeds, acc_mag)])
        r = pm.frontier_table(res, n_test=10 ** 14).iloc[0]
        lo, hi = stats.ttest_rel(acc_obs, acc_mag).confidence_interval(0.95)
        assert (r["ci low"], r["ci high"]) == pytest.approx((lo, hi), abs=1e-6)
        assert r["t"] == pytest.approx(stats.t.ppf(0.975, len(acc_obs) - 1), abs=1e-6)
        assert r["beyond the noise"] == (lo > 0 or hi < 0) == beyond
        assert abs(r["obs - magnitude"]) > 2 * r["noise"]  # the old "twice the noise" rule would call both beyond


def test_frontier_interval_with_one_seed_is_the_test_sets_normal_interval():
    stats = pytest.importorskip("scipy.stats")
    res = _results([("obs", 0.9, 0, 0.9, 0.95), ("magnitude", 0.9, 0, 0.9, 0.90)])
    r = pm.frontier_table(res, n_test=360).iloc[0]
    se = math.sqrt(0.95 * 0.05 / 360 + 0.9 * 0.1 / 360)
    assert r["t"] == pytest.approx(stats.norm.ppf(0.975)) and r["noise"] == pytest.approx(se)
    assert r["ci low"] == pytest.approx(0.05 - stats.norm.ppf(0.975) * se)


_T1 = 12.706204736174707  # Student's t, 97.5 % quantile, 1 degree of freedom (scipy.stats.t.ppf(0.975, 1))


def _table(diffs, noise=0.001):
    rows = [{"target": t, "n": 2, "obs": 0.9 + d, "magnitude": 0.9, "obs - magnitude": d, "paired se": noise / 2,
             "test-set se": noise / 2, "noise": noise, "t": _T1, "ci low": d - _T1 * noise, "ci high": d + _T1 * noise,
             "beyond the noise": abs(d) > _T1 * noise} for t, d in diffs]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("diffs, verdict, better, worse", [
    ([(0.5, 0.0), (0.9, 0.012)], "not distinguishable", [], []),
    ([(0.5, 0.0), (0.9, 0.05)], "better", [0.9], []),
    ([(0.5, -0.03), (0.9, 0.001)], "worse", [], [0.5]),
    ([(0.5, -0.03), (0.9, 0.05)], "mixed", [0.9], [0.5]),
])
def test_the_verdict_follows_the_table(diffs, verdict, better, worse):
    lines, found = pm.frontier_verdict(_table(diffs))  # noise 0.001, t(1): beyond it from |difference| > 0.0127
    assert (found["verdict"], found["better"], found["worse"]) == (verdict, better, worse)
    assert found["within"] == [t for t, _ in diffs if t not in better + worse]
    text = " ".join(lines)
    assert "no better" not in text and "well-measured" not in text
    assert "1 degree of freedom, t = 12.71" in text
    if verdict == "not distinguishable":
        assert "not distinguishable from magnitude at this n" in text and "contains 0 at every sparsity" in text
        assert "wider than any difference" not in text  # the largest interval here is +0.012 ± 0.0127
    if verdict in ("better", "mixed"):
        assert "beats magnitude beyond the noise at 90%" in text
    if verdict in ("worse", "mixed"):
        assert "below magnitude beyond the noise at 50%" in text or "below it at 50%" in text
    assert "2 seeds per cell" in text


def test_stop_on_frontier_interpolates_the_same_seed():
    res = _results([("none", 0.0, 0, 0.0, 0.96), ("obs", 0.5, 0, 0.5, 0.95), ("obs", 0.9, 0, 0.9, 0.91),
                    ("magnitude", 0.5, 0, 0.5, 0.10), ("obs", 0.9, 1, 0.9, 0.50)])
    stops = pd.DataFrame({"seed": [0, 0, 0], "final_sparsity": [0.7, 0.25, 0.95], "test_accuracy": [0.94, 0.96, 0.9]})
    t = pm.stop_on_frontier(stops, res)
    assert t["obs frontier there"].iloc[0] == pytest.approx(0.93)  # halfway from (0.5, 0.95) to (0.9, 0.91)
    assert t["obs frontier there"].iloc[1] == pytest.approx(0.955)  # between the dense run and 50 %
    assert math.isnan(t["obs frontier there"].iloc[2])  # beyond the sparsest run measured
    assert t["stop - frontier"].iloc[0] == pytest.approx(0.01)


def test_the_verdict_says_when_an_interval_is_wider_than_possible():
    lines, found = pm.frontier_verdict(_table([(0.5, 0.0), (0.98, 0.05)], noise=0.105))  # as at 98 % on digits
    assert found["verdict"] == "not distinguishable"
    assert "98% (+0.0500 ± 0.1050, interval [-1.2842, +1.3842])" in lines[0]  # 0.05 ± 12.706 x 0.105
    assert "wider than any difference of two accuracies can be" in lines[0]


def test_the_verdict_places_the_gate_stop():
    on = pd.DataFrame({"seed": [0, 1], "stopped at": [0.7, 0.7], "accuracy": [0.95, 0.95],
                       "obs frontier there": [0.945, 0.94], "stop - frontier": [0.005, 0.01]})
    lines, found = pm.frontier_verdict(_table([(0.9, 0.0)]), stops=on, n_test=360)
    assert found["stop_within_noise"] is True and "on the frontier" in lines[-1]
    below = on.assign(**{"stop - frontier": [-0.2, -0.2]})
    lines, found = pm.frontier_verdict(_table([(0.9, 0.0)]), stops=below, n_test=360)
    assert found["stop_within_noise"] is False and "below the frontier by more than" in lines[-1]
    outside = on.assign(**{"stop - frontier": [math.nan, 0.0]})
    lines, found = pm.frontier_verdict(_table([(0.9, 0.0)]), stops=outside, n_test=360)
    assert found["stop_within_noise"] is None and "outside the measured range" in lines[-1]
    with pytest.raises(ValueError, match="at least one target"):
        pm.frontier_verdict(_table([]).reindex(columns=_table([(0.5, 0.0)]).columns))


def test_plot_frontier_draws_the_chance_line_and_a_star_per_stop():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = _results([("none", 0.0, 0, 0.0, 0.96), ("obs", 0.5, 0, 0.5, 0.95), ("magnitude", 0.5, 0, 0.5, 0.94)])
    stops = pd.DataFrame({"seed": [0, 1], "final_sparsity": [0.6, 0.7], "test_accuracy": [0.95, 0.94]})
    ax = pm.plot_frontier(res, stops, chance=0.10)
    assert any(list(line.get_ydata()) == [0.10, 0.10] for line in ax.lines)
    stars = [c for c in ax.collections if len(c.get_offsets()) == 2]
    assert stars and stars[-1].get_offsets().tolist() == [[0.6, 0.95], [0.7, 0.94]]
    plt.close("all")
