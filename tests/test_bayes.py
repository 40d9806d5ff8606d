import math

import pytest
import torch
from torch import nn

import bayesprune as bp
from bayesprune.bayes.posterior import gate_allows_pruning, gate_keeps_candidate


def _tiny():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _hand_log_prior(model, mu, sigma):
    total = 0.0
    for w in bp.prunable_parameters(model).values():
        for v in w.detach().flatten().tolist():
            total += -0.5 * ((v - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    return total


def _hand_log_lik(model, x, y):
    total = 0.0
    with torch.no_grad():
        for row, label in zip(model(x).tolist(), y.tolist()):
            m = max(row)
            lse = m + math.log(sum(math.exp(v - m) for v in row))
            total += row[label] - lse
    return total


def test_log_prior_matches_hand_computation_biases_excluded():
    net = _tiny()
    assert bp.log_prior(net, 0.1, 0.5) == pytest.approx(_hand_log_prior(net, 0.1, 0.5), rel=1e-12)
    with torch.no_grad():
        net[0].bias.add_(100.0)  # biases are not in the prior
    assert bp.log_prior(net, 0.1, 0.5) == pytest.approx(_hand_log_prior(net, 0.1, 0.5), rel=1e-12)
    with pytest.raises(ValueError, match="sigma"):
        bp.log_prior(net, 0.0, 0.0)


def test_log_likelihood_is_minus_summed_cross_entropy_and_scales():
    net = _tiny()
    x, y = torch.randn(9, 3), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1])
    hand = _hand_log_lik(net, x, y)
    assert bp.log_likelihood(net, x, y) == pytest.approx(hand, rel=1e-6)
    assert bp.log_likelihood(net, x, y, scale=10.0) == pytest.approx(10 * hand, rel=1e-6)
    assert bp.log_likelihood(net, x, y, reduction="mean") == pytest.approx(hand / 9, rel=1e-6)


def test_subset_estimate_scaled_to_full_set():
    """bf_samples=m of n: the scaled sum estimates the full-data log-likelihood."""
    torch.manual_seed(0)
    net = _tiny()
    x, y = torch.randn(4000, 3), torch.randint(0, 2, (4000,))
    full = bp.log_likelihood(net, x, y)
    idx = bp.bf_subset(4000, 1000, seed=0)
    assert idx.numel() == 1000 and idx.unique().numel() == 1000
    est = bp.posterior_terms(net, x[idx], y[idx], n_total=4000, mu=0.0, sigma=1.0).log_likelihood
    assert est == pytest.approx(4 * bp.log_likelihood(net, x[idx], y[idx]), rel=1e-9)
    assert est == pytest.approx(full, rel=0.05)
    assert torch.equal(bp.bf_subset(4000, None, 0), torch.arange(4000))
    assert torch.equal(bp.bf_subset(10, 50, 0), torch.arange(10))
    assert torch.equal(bp.bf_subset(4000, 100, 1), bp.bf_subset(4000, 100, 1))


def test_bayes_factor_against_independent_hand_computation():
    net = _tiny()
    x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    mu, sigma = 0.0, 0.3
    before_hand = _hand_log_lik(net, x, y) * 5 + _hand_log_prior(net, mu, sigma)
    before = bp.posterior_terms(net, x, y, n_total=100, mu=mu, sigma=sigma)
    bp.prune_magnitude(net, 0.5)
    after_hand = _hand_log_lik(net, x, y) * 5 + _hand_log_prior(net, mu, sigma)
    after = bp.posterior_terms(net, x, y, n_total=100, mu=mu, sigma=sigma)
    assert before.log_posterior == pytest.approx(before_hand, rel=1e-6)
    assert bp.log_bayes_factor(before, after) == pytest.approx(after_hand - before_hand, rel=1e-5, abs=1e-6)


def test_no_overflow_for_huge_networks_and_data():
    big = bp.PosteriorTerms(log_likelihood=-3e7, log_prior=-5e6)
    bigger = bp.PosteriorTerms(log_likelihood=-3.01e7, log_prior=-4e6)
    lbf = bp.log_bayes_factor(big, bigger)
    assert math.isfinite(lbf) and lbf == pytest.approx(9e5)
    net = nn.Linear(2000, 2000)
    with torch.no_grad():
        net.weight.fill_(50.0)
    assert math.isfinite(bp.log_prior(net, 0.0, 1e-3))


def test_gate_rule_on_a_scripted_sequence():
    """Algorithm 1: first pruning epoch prunes; then only while the previous BF > beta."""
    beta = 2.0
    scripted = [math.log(5.0), math.log(3.0), math.log(0.5), None, None]  # log BF if it prunes
    previous, pruned = None, []
    for i, lbf in enumerate(scripted):
        allowed = gate_allows_pruning("paper", i == 0, previous, beta)
        pruned.append(allowed)
        previous = lbf if allowed else 0.0  # BF = 1 where it does not prune
    assert pruned == [True, True, True, False, False]
    # beta < 1: a skipped epoch (BF = 1) re-opens the gate
    assert gate_allows_pruning("paper", False, 0.0, 0.5)
    assert not gate_allows_pruning("paper", False, 0.0, 1.0)
    assert not gate_allows_pruning("paper", False, math.log(2.0), 2.0)  # strictly greater
    assert gate_keeps_candidate("paper", -100.0, 1.0)
    assert gate_keeps_candidate("immediate", math.log(1.5), 1.0)
    assert not gate_keeps_candidate("immediate", math.log(0.9), 1.0)
    with pytest.raises(ValueError, match="gate"):
        gate_allows_pruning("sometimes", False, 0.0, 1.0)
