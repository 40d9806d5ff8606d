"""Take the log posterior apart on a trained network (notebook 02).

Every function here works on a *copy* of the model, so a student can scan
sparsities, priors and sample sizes without changing the network.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, Optional, Sequence

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ..bayes.map_prior import MapPrior
from ..bayes.posterior import PosteriorRatio, bf_subset, log_likelihood, log_prior
from ..core.config import RunConfig
from ..core.criteria import pruned_copy
from ..core.data import TensorDataset
from ..core.pruning import prunable_parameters
from ..engine.training import gate_state, prune_step


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


def weight_decay_check(model: nn.Module, data: TensorDataset, sigma: float, batch: int = 64, lr: float = 0.1,
                       seed: int = 0) -> dict[str, float]:
    """"Gaussian prior = L2 weight decay, delta = 1 / sigma^2", checked two independent ways (mu = 0).

    ``prior_gradient_gap``: the autograd gradient of the gate's own ``-log p(w)`` (``posterior.log_prior``'s
    formula, summed over the prunable weights) against ``delta * w``.  ``sgd_step_gap``: one SGD step on the
    mean cross-entropy plus the package's MAP prior term (``train_prior="map"``) against one step of
    ``torch.optim.SGD(weight_decay=delta / N)`` on the mean cross-entropy alone (PyTorch's own weight decay).
    Both gaps are float rounding when the identity holds.  Works on copies; ``model`` is unchanged.
    """
    delta, n = sigma ** -2.0, data.n_train
    net = copy.deepcopy(model).double()
    weights = list(prunable_parameters(net).values())
    neg_log_prior = sum(0.5 * (w ** 2).sum() / sigma ** 2 for w in weights)  # + const, as in log_prior
    grads = torch.autograd.grad(neg_log_prior, weights)
    prior_gap = max(float((g - delta * w.detach()).abs().max()) for g, w in zip(grads, weights))

    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:batch].to(data.x_train.device)
    x, y = data.x_train[idx].double(), data.y_train[idx]
    ours, theirs = copy.deepcopy(net), copy.deepcopy(net)
    ours_w = list(prunable_parameters(ours).values())
    opt = torch.optim.SGD(ours.parameters(), lr=lr)
    opt.zero_grad()
    (F.cross_entropy(ours(x), y) + MapPrior(ours_w, 0.0, sigma, n).penalty()).backward()
    opt.step()
    theirs_w = list(prunable_parameters(theirs).values())
    rest = [p for p in theirs.parameters() if all(p is not w for w in theirs_w)]
    opt = torch.optim.SGD([{"params": theirs_w, "weight_decay": delta / n}, {"params": rest}], lr=lr)
    opt.zero_grad()
    F.cross_entropy(theirs(x), y).backward()
    opt.step()
    step_gap = max(float((a - b).detach().abs().max()) for a, b in zip(ours.parameters(), theirs.parameters()))
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(ours.parameters(), net.parameters()))
    return {"delta": delta, "coefficient_on_mean_loss": delta / n, "prior_gradient_gap": prior_gap,
            "sgd_step_gap": step_gap, "largest_step": moved}


StepFn = Callable[..., tuple[bool, float]]


def algorithm_check(step: StepFn, model: nn.Module, data: TensorDataset, cfg: RunConfig) -> pd.DataFrame:
    """A hand-written gate step against the package's ``prune_step``, epoch by epoch, on two copies of ``model``.

    ``step(model, x, y, n, r, sigma, beta, previous_log_bf) -> (pruned, log_bf)`` is the notebook's
    transcription of the paper's Algorithm 3; ``previous_log_bf`` is None on the first step and 0.0 after a
    skipped one (BF = 1).  Both see the run's own likelihood subset and the schedule's proposals; no
    training happens between steps, so only the gate's arithmetic and decisions are compared.
    """
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    state = gate_state(cfg, theirs, data)
    idx = bf_subset(data.n_train, cfg.bf_samples, cfg.seed).to(data.x_train.device)
    x, y = data.x_train[idx], data.y_train[idx]
    previous, rows = None, []
    for epoch in range(1, cfg.epochs + 1):
        proposal = state.schedule.proposal(epoch)
        if proposal is None:
            continue
        rec = prune_step(theirs, state, epoch)
        pruned, log_bf = step(ours, x, y, data.n_train, proposal, cfg.prior_sigma, cfg.beta, previous)
        previous = log_bf if pruned else 0.0
        rows.append({"sigma": cfg.prior_sigma, "epoch": epoch, "proposed sparsity": proposal,
                     "package pruned": bool(rec.pruned), "package log BF": rec.log_bf,
                     "ours pruned": pruned, "ours log BF": log_bf})
    return pd.DataFrame(rows)


def algorithm_agrees(steps: pd.DataFrame, rel_tol: float = 1e-6, abs_tol: float = 1e-3) -> bool:
    """Whether both columns of :func:`algorithm_check` make the same decisions with the same log BFs."""
    return bool((steps["package pruned"] == steps["ours pruned"]).all() and all(
        math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
        for a, b in zip(steps["package log BF"], steps["ours log BF"])))


def crossover_table(model: nn.Module, data: TensorDataset, sparsities: Iterable[float], strategy: str = "magnitude",
                    bf_samples: Optional[int] = None, seed: int = 0) -> pd.DataFrame:
    """sigma* per sparsity, with what 1/sigma*^2 is: 2 x (the fit's loss) / (sum of the pruned weights squared).

    That ratio is the fit's loss per unit of squared weight removed.  Only to second order, for a small
    prune near a minimum, is it the w^2-weighted mean curvature of the pruned weights; a large prune leaves
    the quadratic regime (the loss saturates as the network nears chance), and the ratio then measures the
    loss per squared weight removed, not a curvature.
    """
    rows = []
    for r in sparsities:
        t = bf_terms(model, data, strategy, r, 0.0, 1.0, bf_samples, "sum", seed)
        s, loss = 2.0 * t["delta_log_prior"], -t["delta_log_likelihood"]
        rows.append({"sparsity": r, "S = sum of pruned w^2": s, "fit loss (nats)": loss,
                     "sigma*": math.inf if loss <= 0 else math.sqrt(s / (2.0 * loss)),
                     "1/sigma*^2 = 2 x loss / S": 2.0 * loss / s if s > 0 else math.nan})
    return pd.DataFrame(rows).set_index("sparsity")
