"""The paper's Bayes factor and a true (Laplace-evidence) Bayes factor, side by side (notebook 07).

On a trained network, for each strategy and sparsity, a copy is pruned and compared
with the unpruned network three ways:

* ``paper``: the paper's ratio of posterior densities with the hand-picked prior sigma,
  at the weights as pruned (as the paper defines it);
* ``paper_fitted``: the same ratio with the prior fitted by empirical Bayes;
* ``laplace``: log Z(pruned) - log Z(unpruned), with the fitted prior, split into the
  change of fit, of the prior's penalty -delta/2 |w|^2 and of the Occam factor
  -1/2 log det(I + H/delta), so a student sees which term decided.  The paper's ratio is
  exactly the first two (with its own sigma): the Occam factor is what it leaves out.

Laplace assumes each side sits at a mode, so the pruned copy is fine-tuned a few
mini-batches under its mask.  ``fair=True`` (the default) trains the unpruned side the
same way: the same steps, on the same batches, from the same fresh Adam, so only the mask
differs and a candidate that prunes nothing scores log BF = 0 exactly.  ``fair=False``
compares the fine-tuned candidate with the network as it was, the comparison the package
made before: the extra training alone then reads as evidence for pruning (notebook 07's
"what an unfair comparison looks like").  ``train_prior="map"`` fine-tunes both sides
under the prior (the fitted one), so they approach the MAP the evidence assumes.

The prior is fitted once, on the unpruned network's evidence (type-II maximum likelihood),
and used for every comparison.
"""

from __future__ import annotations

import copy
from typing import Iterable, Optional, Sequence

import pandas as pd
import torch
from torch import nn

from ..bayes.map_prior import MapPrior
from ..bayes.posterior import bf_subset, posterior_terms
from ..core.criteria import compute_mask
from ..core.data import TensorDataset
from ..core.pruning import Mask, apply_mask
from ..engine.training import make_adam, run_steps, some_batches


def finetuned_copy(model: nn.Module, mask: Optional[Mask], data: TensorDataset, steps: int, lr: float = 0.001,
                   batch_size: int = 64, seed: int = 0, prior_sigma: Optional[float] = None) -> nn.Module:
    """A copy trained ``steps`` mini-batches under ``mask`` (None: dense) with a fresh Adam; the original is untouched.

    The batches depend on ``seed`` only, so two copies with the same seed see the same ones.
    ``prior_sigma``: train to the MAP of N(0, prior_sigma^2) on every parameter (None: maximum likelihood).
    """
    clone = copy.deepcopy(model)
    if mask is not None:
        apply_mask(clone, mask)
    if steps > 0:
        opt = make_adam(clone.parameters(), lr, data.x_train.device)
        g = torch.Generator().manual_seed(seed)
        prior = None if prior_sigma is None else MapPrior(list(clone.parameters()), 0.0, prior_sigma, data.n_train)
        run_steps(clone, opt, data, some_batches(data.n_train, batch_size, steps, g, data.x_train.device), mask,
                  prior)
    return clone


def evidence_scan(
    model: nn.Module,
    data: TensorDataset,
    strategies: Sequence[str] = ("magnitude", "random"),
    sparsities: Iterable[float] = (0.25, 0.5, 0.75, 0.9, 0.99),
    sigma: float = 0.03,
    bf_samples: Optional[int] = 4096,
    structure: str = "kron",
    curvature: str = "ggn",
    finetune_steps: int = 100,
    seed: int = 0,
    fair: bool = True,
    train_prior: str = "none",
    curvature_seed: Optional[int] = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per (strategy, sparsity): the three log Bayes factors and the Laplace terms' changes.

    A sparsity of 0 is the prune-nothing control.  ``curvature_seed``: the Monte Carlo seed of
    ``curvature="ggn-mc"`` (default ``seed``); the exact ``ggn`` does not use it.  ``progress``: a tqdm
    bar over the prunes (each is a fine-tuning and a curvature fit: seconds on a CPU).
    """
    from ..bayes.evidence import Curvature

    if train_prior not in ("none", "map"):
        raise ValueError(f"train_prior={train_prior!r} is invalid: allowed none, map")
    idx = bf_subset(data.n_train, bf_samples, seed).to(data.x_train.device)
    x, y = data.x_train[idx], data.y_train[idx]
    mc_seed = seed if curvature_seed is None else curvature_seed

    def fit(net: nn.Module, reuse=None):
        return Curvature.fit(net, x, y, n_total=data.n_train, structure=structure, hessian=curvature, seed=mc_seed,
                             reuse=reuse)

    original = fit(model)
    fitted_sigma = original.fit_prior_precision() ** -0.5
    tune_sigma = fitted_sigma if train_prior == "map" else None
    if fair:  # the unpruned side takes the same steps on the same batches; only the mask differs
        before = fit(finetuned_copy(model, None, data, finetune_steps, seed=seed, prior_sigma=tune_sigma))
        delta = before.fit_prior_precision()
    else:
        before, delta = original, fitted_sigma ** -2
    ev_b = before.log_evidence(delta)
    paper_b = {s: posterior_terms(model, x, y, n_total=data.n_train, mu=0.0, sigma=s) for s in (sigma, fitted_sigma)}
    rows = []
    todo = [(strategy, r) for strategy in strategies for r in sparsities]
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc="prunes scanned", leave=False)
    for strategy, r in todo:
        mask = compute_mask(model, strategy, r, generator=torch.Generator().manual_seed(seed))
        just_pruned = finetuned_copy(model, mask, data, 0)  # the paper compares the weights as pruned
        paper_a = {s: posterior_terms(just_pruned, x, y, n_total=data.n_train, mu=0.0, sigma=s)
                   for s in (sigma, fitted_sigma)}
        pruned = finetuned_copy(model, mask, data, finetune_steps, seed=seed, prior_sigma=tune_sigma)
        ev_a = fit(pruned, reuse=before).log_evidence(delta, mask=mask)
        rows.append({
            "strategy": strategy, "sparsity": r, "fixed_sigma": sigma, "fitted_sigma": fitted_sigma,
            "evidence_sigma": delta ** -0.5, "fair": fair,
            "log_bf_paper": paper_a[sigma].log_posterior - paper_b[sigma].log_posterior,
            "log_bf_paper_fitted": paper_a[fitted_sigma].log_posterior - paper_b[fitted_sigma].log_posterior,
            "log_bf_laplace": ev_a.log_evidence - ev_b.log_evidence,
            "delta_fit": ev_a.log_likelihood - ev_b.log_likelihood,
            "delta_penalty": ev_a.log_penalty - ev_b.log_penalty,
            "delta_occam": ev_a.log_complexity - ev_b.log_complexity,
            "params_before": ev_b.n_params, "params_after": ev_a.n_params,
        })
    return pd.DataFrame(rows)


def prune_nothing_control(model: nn.Module, data: TensorDataset, **scan_kwargs) -> pd.DataFrame:
    """The control every comparison must pass: a candidate that prunes nothing, compared fairly and unfairly.

    One row per comparison: its log BF and the changes of fit, penalty and Occam factor.  Fair,
    it is 0 exactly (only the mask differs, and here it does not); unfair, the fine-tuning alone
    shows up as "evidence".
    """
    rows = []
    for fair in (True, False):
        r = evidence_scan(model, data, strategies=("magnitude",), sparsities=(0.0,), fair=fair, **scan_kwargs).iloc[0]
        rows.append({"comparison": "fair: both sides fine-tuned alike" if fair else "unfair: only the candidate",
                     "log BF": r["log_bf_laplace"], "fit": r["delta_fit"], "penalty": r["delta_penalty"],
                     "Occam": r["delta_occam"]})
    return pd.DataFrame(rows).set_index("comparison")


def prior_is_weight_decay(model: nn.Module, sigma: float, n_total: int, mu: float = 0.0) -> float:
    """Largest |autograd gradient of the MAP prior term - weight decay (w - mu) / (sigma^2 N)| over the weights.

    The Gaussian prior's term of the per-example loss, |w - mu|^2 / (2 sigma^2 N), is L2 weight
    decay with coefficient delta / N, delta = 1 / sigma^2: the returned gap is rounding only.
    """
    prior = MapPrior(list(model.parameters()), mu, sigma, n_total)
    grads = torch.autograd.grad(prior.penalty(), prior.params)
    return max(float((g - (p.detach() - mu) / (sigma**2 * n_total)).abs().max()) for g, p in zip(grads, prior.params))


def plot_evidence_scan(scan: pd.DataFrame, title: str = ""):
    """Left: the three log Bayes factors vs sparsity; right: the Laplace BF's three terms (symlog axes)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {"magnitude": "-", "random": "--"}
    for strategy, g in scan.groupby("strategy"):
        ls = styles.get(strategy, ":")
        s, f = g["fixed_sigma"].iloc[0], g["fitted_sigma"].iloc[0]
        axes[0].plot(g["sparsity"], g["log_bf_paper"], ls=ls, marker="o", color="tab:red",
                     label=f"{strategy}: paper, sigma={s:g}")
        axes[0].plot(g["sparsity"], g["log_bf_paper_fitted"], ls=ls, marker="s", color="tab:orange",
                     label=f"{strategy}: paper, fitted sigma={f:.3g}")
        axes[0].plot(g["sparsity"], g["log_bf_laplace"], ls=ls, marker="^", color="tab:blue",
                     label=f"{strategy}: Laplace evidence")
        for col, color in (("delta_fit", "tab:red"), ("delta_penalty", "tab:green"), ("delta_occam", "tab:purple")):
            axes[1].plot(g["sparsity"], g[col], ls=ls, marker=".", color=color, label=f"{strategy}: {col[6:]}")
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_yscale("symlog", linthresh=10)
        ax.set_xlabel("sparsity")
        ax.legend(fontsize=7)
    axes[0].set(ylabel="log Bayes factor (pruned vs unpruned)", title="Three Bayes factors (> 0 favours pruning)")
    axes[1].set(ylabel="change in log Z (nats)", title="The Laplace BF's terms: fit, prior, Occam")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
