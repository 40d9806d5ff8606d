"""Take the log posterior apart on a trained network (notebook 02).

Every function here works on a *copy* of the model, so a student can scan
sparsities, priors and sample sizes without changing the network.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import pandas as pd
from torch import nn

from ..bayes.posterior import PosteriorRatio, bf_subset, log_likelihood, log_prior
from ..core.criteria import pruned_copy
from ..core.data import TensorDataset
from ..core.pruning import prunable_parameters


def _terms_row(strategy: str, sparsity: float, sigma: float, samples: int, likelihood: str,
               ll_b: float, ll_a: float, lp_b: float, lp_a: float) -> dict[str, float]:
    """One result: both terms before/after, their changes, and the log Bayes factor."""
    return {
        "strategy": strategy, "sparsity": sparsity, "sigma": sigma, "bf_samples": samples, "likelihood": likelihood,
        "log_likelihood_before": ll_b, "log_likelihood_after": ll_a,
        "log_prior_before": lp_b, "log_prior_after": lp_a,
        "delta_log_likelihood": ll_a - ll_b, "delta_log_prior": lp_a - lp_b,
        "log_bf": (ll_a + lp_a) - (ll_b + lp_b),
    }


def bf_terms(
    model: nn.Module,
    data: TensorDataset,
    strategy: str = "magnitude",
    sparsity: float = 0.9,
    mu: float = 0.0,
    sigma: float = 0.03,
    bf_samples: Optional[int] = 4096,
    likelihood: str = "sum",
    seed: int = 0,
    biases: bool = False,
) -> dict[str, float]:
    """Both terms before and after pruning a copy, their changes, and the log Bayes factor.

    The terms are the gate's own (:class:`~bayesprune.bayes.posterior.PosteriorRatio` on the
    run's fixed subset), so with a run's settings (``seed=cfg.seed``, ``biases=cfg.prune_biases``)
    a magnitude step here has the log BF that the gate records for it.
    """
    idx = bf_subset(data.n_train, bf_samples, seed).to(data.x_train.device)
    x, y = data.x_train[idx], data.y_train[idx]
    ratio = PosteriorRatio(x, y, data.n_train, mu, sigma, likelihood, biases=biases)
    before = ratio.terms(model)
    after = ratio.terms(pruned_copy(model, strategy, sparsity, seed, biases=biases))
    return _terms_row(strategy, sparsity, sigma, x.shape[0], likelihood, before.log_likelihood,
                      after.log_likelihood, before.log_prior, after.log_prior)


def bf_scan(
    model: nn.Module,
    data: TensorDataset,
    strategies: Sequence[str] = ("magnitude", "random"),
    sparsities: Iterable[float] = (0.25, 0.5, 0.75, 0.9, 0.99),
    sigmas: Iterable[float] = (0.03,),
    bf_samples: Iterable[Optional[int]] = (4096,),
    likelihoods: Iterable[str] = ("sum",),
    mu: float = 0.0,
    seed: int = 0,
    biases: bool = False,
) -> pd.DataFrame:
    """:func:`bf_terms` over a grid, as a tidy DataFrame (one row per combination).

    Each pruned copy is made once, and each "before" term is computed once per
    sample size / likelihood / sigma, however many sparsities are scanned.
    """
    sparsities, sigmas = list(sparsities), list(sigmas)
    bf_samples, likelihoods = list(bf_samples), list(likelihoods)
    subsets = {}
    for m in bf_samples:
        idx = bf_subset(data.n_train, m, seed).to(data.x_train.device)
        subsets[m] = (data.x_train[idx], data.y_train[idx])
    ll_before = {(m, lik): log_likelihood(model, x, y, data.n_train / x.shape[0], lik)
                 for m, (x, y) in subsets.items() for lik in likelihoods}
    lp_before = {sigma: log_prior(model, mu, sigma, biases) for sigma in sigmas}
    rows = []
    for strategy in strategies:
        for r in sparsities:
            pruned = pruned_copy(model, strategy, r, seed, biases=biases)
            lp_after = {sigma: log_prior(pruned, mu, sigma, biases) for sigma in sigmas}
            for m, (x, y) in subsets.items():
                for lik in likelihoods:
                    ll_a = log_likelihood(pruned, x, y, data.n_train / x.shape[0], lik)
                    for sigma in sigmas:
                        rows.append(_terms_row(strategy, r, sigma, x.shape[0], lik, ll_before[(m, lik)], ll_a,
                                               lp_before[sigma], lp_after[sigma]))
    return pd.DataFrame(rows)


def sigma_crossover(model: nn.Module, data: TensorDataset, strategy: str = "magnitude", sparsity: float = 0.9,
                    bf_samples: Optional[int] = 4096, likelihood: str = "sum", seed: int = 0) -> float:
    """The prior width sigma* at which BF = 1 for this prune (mu = 0).

    With mu = 0, the prior gains S / (2 sigma^2), S = sum of the squared pruned
    weights, so log BF = dLL + S / (2 sigma^2) = 0 gives sigma* = sqrt(S / (-2 dLL)).
    A smaller sigma opens the gate; inf means the prune does not cost likelihood at all.
    """
    t = bf_terms(model, data, strategy, sparsity, 0.0, 1.0, bf_samples, likelihood, seed)
    s = 2.0 * t["delta_log_prior"]  # at sigma = 1: delta log prior = S / 2
    dll = t["delta_log_likelihood"]
    return math.inf if dll >= 0 else math.sqrt(s / (-2.0 * dll))


def weight_values(model: nn.Module) -> pd.DataFrame:
    """Long table (layer, weight) of every prunable weight, for histograms."""
    frames = [pd.DataFrame({"layer": k, "weight": w.detach().flatten().cpu().numpy()})
              for k, w in prunable_parameters(model).items()]
    return pd.concat(frames, ignore_index=True)
