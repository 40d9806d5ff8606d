"""The log posterior, its two terms, the Bayes factor and the gate.

    log p(w | D) = log p(D | w) + log p(w) + const

* ``log p(D|w)``: minus the summed categorical cross-entropy (a real
  log-likelihood).  On a subset of m of the n training examples the sum is
  scaled by n/m, an unbiased estimate of the full-data sum.  ``likelihood="mean"``
  uses minus the *mean* cross-entropy instead; it is not a likelihood, but it is
  what many implementations compute, and the notebooks show how it changes the gate.
* ``log p(w)``: sum over all prunable weights of log N(w; mu, sigma^2), pruned
  ones (w = 0) included, so both sides of the ratio count the same parameters.
* ``log BF = log p(w_after|D) - log p(w_before|D)`` on identical data; the
  evidence p(D) cancels.  Everything stays in log space (float64), so no size
  of network or data set overflows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..core.pruning import prunable_parameters
from ..core.registry import BAYES_FACTORS, GATES

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class PosteriorTerms:
    """The terms of one side of a Bayes factor, kept apart for teaching.

    ``log_likelihood`` and ``log_prior`` make the paper's (unnormalised) log posterior.
    Where the Laplace evidence was computed too (``RunConfig.bayes_factor="laplace"`` or
    ``prior_fit="marglik"``), its other two terms are filled in (else NaN), so that

        log Z = log_likelihood + laplace_penalty + log_occam

    with ``laplace_penalty`` = -delta/2 |w - mu|^2 over the model's parameters (kept weights
    and biases) and ``log_occam`` = -1/2 log det(I + H/delta) <= 0, the Occam factor: the price
    of every parameter the data pin down.  The paper's ratio changes by Delta fit + Delta
    penalty only; a true Bayes factor adds Delta Occam.  ``prior_sigma`` is the prior's
    standard deviation these terms used (fixed, or fitted per step).
    """

    log_likelihood: float
    log_prior: float
    prior_sigma: float = math.nan
    laplace_penalty: float = math.nan
    log_occam: float = math.nan

    @property
    def log_posterior(self) -> float:
        return self.log_likelihood + self.log_prior

    @property
    def log_evidence(self) -> float:
        """Laplace: log Z = log p(D|w*) + log p(w*) + Occam (NaN where not computed)."""
        return self.log_likelihood + self.laplace_penalty + self.log_occam


def eval_batch_size(model: nn.Module) -> int:
    """256 for fully connected nets; 64 where convolutions make the activations large.

    Large enough to amortise the per-call overhead, small enough that the activations stay
    in cache: on 2 CPU cores a 10k-image pass of the CNN takes 1.3 s at 64 against 2.5 s at
    256 and 3.5 s at 1024 (benchmarks/bench_training.py's machine).
    """
    convolutional = any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
    return 64 if convolutional else 256


@torch.inference_mode()
def summed_loss_and_correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: Optional[int] = None
) -> tuple[float, int]:
    """(sum of cross-entropy, number correct) over (x, y), in eval mode, float64 sum.

    ``batch_size`` None: :func:`eval_batch_size`.
    """
    batch_size = batch_size or eval_batch_size(model)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        total += F.cross_entropy(logits.double(), target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return float(total), int(correct)


def log_likelihood(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    scale: float = 1.0,
    reduction: str = "sum",
) -> float:
    """log p(D|w) = -scale * sum CE (``reduction="sum"``) or -mean CE (``"mean"``)."""
    total, _ = summed_loss_and_correct(model, x, y)
    if reduction == "sum":
        return -scale * total
    if reduction == "mean":
        return -total / x.shape[0]
    raise ValueError(f"reduction={reduction!r} is invalid: allowed sum, mean")


@torch.no_grad()
def log_prior(model: nn.Module, mu: float = 0.0, sigma: float = 0.03, biases: bool = False) -> float:
    """sum over prunable weights (and biases, if asked) of log N(w; mu, sigma^2), in float64."""
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r} is invalid: allowed a number > 0")
    total = 0.0
    for w in prunable_parameters(model, biases).values():
        wd = w.detach().double()
        sq = float(((wd - mu) ** 2).sum())
        total += -0.5 * sq / sigma**2 - wd.numel() * (math.log(sigma) + 0.5 * LOG_2PI)
    return total


def posterior_terms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_total: int,
    mu: float,
    sigma: float,
    reduction: str = "sum",
    biases: bool = False,
) -> PosteriorTerms:
    """Both terms on the evaluation subset (x, y), the likelihood scaled to n_total."""
    scale = n_total / x.shape[0]
    return PosteriorTerms(log_likelihood(model, x, y, scale, reduction), log_prior(model, mu, sigma, biases),
                          prior_sigma=sigma)


def log_bayes_factor(before: PosteriorTerms, after: PosteriorTerms, kind: str = "posterior") -> float:
    """log BF(pruned vs unpruned) as the registered Bayes factor ``kind`` reads the two sides' terms."""
    if kind not in BAYES_FACTORS:
        raise ValueError(f"kind={kind!r} is invalid: allowed {', '.join(BAYES_FACTORS)}")
    return BAYES_FACTORS[kind].log_bf(before, after)


@dataclass(frozen=True)
class BayesFactor:
    """A registered Bayes factor: how a run builds its evaluator, and how the two sides' terms make log BF.

    ``make(cfg, model, data, x, y)`` gets the run's config, its initial model, its data and
    the fixed evaluation subset; it returns an evaluator: an object with
    ``terms(model, mask=None, before=None) -> PosteriorTerms`` (``before=None``: the unpruned
    side) and ``finetune_steps`` (mini-batches the candidate trains under its mask first).
    """

    make: Callable[..., Any]
    log_bf: Callable[[PosteriorTerms, PosteriorTerms], float]


class PosteriorRatio:
    """The paper's Bayes factor for a run: both terms on a fixed subset, before and after each step.

    The gate's evaluator: :meth:`terms` is called on the network before a step and
    on the pruned candidate after it.  ``finetune_steps`` = 0: the paper compares
    the two weight settings as they are.
    """

    finetune_steps = 0

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_total: int, mu: float, sigma: float,
                 reduction: str = "sum", biases: bool = False):
        self.x, self.y, self.n_total = x, y, n_total
        self.mu, self.sigma, self.reduction, self.biases = mu, sigma, reduction, biases

    def terms(self, model: nn.Module, mask=None, before: Optional[PosteriorTerms] = None) -> PosteriorTerms:
        """The terms at the model's current weights (``mask``/``before`` matter to the Laplace evaluator only)."""
        return posterior_terms(model, self.x, self.y, n_total=self.n_total, mu=self.mu, sigma=self.sigma,
                               reduction=self.reduction, biases=self.biases)


def _make_posterior(cfg, model: nn.Module, data, x: torch.Tensor, y: torch.Tensor):
    if cfg.prior_fit != "fixed":  # a fitted prior needs the evidence: the Laplace evaluator records both
        return BAYES_FACTORS["laplace"].make(cfg, model, data, x, y)
    return PosteriorRatio(x, y, data.n_train, cfg.prior_mu, cfg.prior_sigma, cfg.likelihood, biases=cfg.prune_biases)


BAYES_FACTORS.register("posterior", BayesFactor(_make_posterior, lambda b, a: a.log_posterior - b.log_posterior))


def bf_subset(n_train: int, bf_samples: Optional[int], seed: int) -> torch.Tensor:
    """The fixed evaluation indices, drawn once per run from the seed (sorted)."""
    if bf_samples is None or bf_samples >= n_train:
        return torch.arange(n_train)
    g = torch.Generator().manual_seed(seed + 104729)
    return torch.randperm(n_train, generator=g)[:bf_samples].sort().values


# ------------------------------------------------------------------ the gate
def log_threshold(beta: float) -> float:
    """log beta, with beta = 0 meaning "accept everything" (log 0 = -inf)."""
    return -math.inf if beta == 0 else math.log(beta)


class PaperGate:
    """The paper's Algorithm 1: prune on the first pruning epoch, then only while the last step's BF > beta.

    ``previous_log_bf`` is the log BF recorded at the previous pruning epoch (0.0, i.e.
    BF = 1, where that epoch did not prune).  A candidate, once made, is always kept.
    """

    def allows(self, first_pruning_epoch: bool, previous_log_bf: Optional[float], beta: float) -> bool:
        if first_pruning_epoch or previous_log_bf is None:
            return True
        return previous_log_bf > log_threshold(beta)

    def keeps(self, log_bf: float, beta: float) -> bool:
        return True


class ImmediateGate:
    """Every epoch makes a candidate; it is kept only if its own BF > beta (else the step is undone)."""

    def allows(self, first_pruning_epoch: bool, previous_log_bf: Optional[float], beta: float) -> bool:
        return True

    def keeps(self, log_bf: float, beta: float) -> bool:
        return log_bf > log_threshold(beta)


GATES.register("paper", PaperGate())
GATES.register("immediate", ImmediateGate())


def _gate(gate: str):
    if gate not in GATES:
        raise ValueError(f"gate={gate!r} is invalid: allowed {', '.join(GATES)}")
    return GATES[gate]


def gate_allows_pruning(gate: str, first_pruning_epoch: bool, previous_log_bf: Optional[float], beta: float) -> bool:
    """Whether the registered ``gate`` lets this epoch make a candidate (``GATES[gate].allows``)."""
    return _gate(gate).allows(first_pruning_epoch, previous_log_bf, beta)


def gate_keeps_candidate(gate: str, log_bf: float, beta: float) -> bool:
    """Whether the registered ``gate`` keeps a pruned candidate of this log BF (``GATES[gate].keeps``)."""
    return _gate(gate).keeps(log_bf, beta)
