"""The gate's evaluator for a true Bayes factor: Laplace evidences of the network before and after a step.

``RunConfig.bayes_factor="laplace"`` gates on log BF = log Z(after) - log Z(before), each
evidence a Laplace approximation (:mod:`bayesprune.bayes.evidence`); ``prior_fit="marglik"``
fits the prior precision to the *unpruned* side's evidence at every step (empirical
Bayes) and uses that one prior for both sides, whichever Bayes factor gates.

Both sides are models with different parameters: "before" has every weight that the
persistent mask kept (all of them with ``regrow=True``), "after" only the candidate's.
Laplace assumes its weights sit at a mode.  Right after a prune they do not: the kept
weights have not re-adapted, and the fit term alone would condemn almost any prune.
So the candidate is trained for ``laplace_finetune_steps`` mini-batches under its mask,
and, for a fair comparison, so is a copy of the unpruned network: the same steps, on the
same batches, from a copy of Adam's state (``training.matched_finetune``).  Only the
mask differs, so a candidate that prunes nothing scores log BF = 0 exactly; fine-tuning
the candidate alone gave such a candidate +118 to +195 nats on digits, extra training
read as evidence.  With ``train_prior="map"`` every step, fine-tuning included, is on the
MAP objective, so both sides approach the posterior mode Laplace is taken at.  A refused
step puts back the weights and Adam's state.  The paper's posterior ratio is recorded at
the same two points, with the same prior, so the two can be compared term by term.

The default curvature (``laplace_curvature="ggn"``, K-FAC under ``kron``) is
deterministic: the one-sample Monte Carlo GGN moved a digits log BF by 100-240 nats from
one curvature seed to the next, against thresholds of a few nats
(``benchmarks/bench_curvature.py``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..core.config import RunConfig
from ..core.pruning import Mask
from ..core.registry import BAYES_FACTORS
from .posterior import BayesFactor, PosteriorTerms, posterior_terms


def laplace_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("laplace") is not None


class LaplaceRatio:
    """Evidence terms of a network on the gate's fixed subset; one prior per step, fitted or fixed."""

    def __init__(self, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor, n_total: int,
                 model: Optional[nn.Module] = None):
        if not laplace_available():
            raise ValueError(f"RunConfig.bayes_factor={cfg.bayes_factor!r} / prior_fit={cfg.prior_fit!r} need "
                             "laplace-torch, which is not installed: pip install 'bayesprune[laplace]' "
                             "(or laplace-torch)")
        from .evidence import MAX_FULL_PARAMS

        if model is not None and cfg.hessian_structure == "full":
            d = sum(p.numel() for p in model.parameters())
            if d > MAX_FULL_PARAMS:
                raise ValueError(f"RunConfig.hessian_structure='full' is invalid for this {cfg.model} with {d} "
                                 f"parameters: allowed up to {MAX_FULL_PARAMS}; use kron or diag")
        self.cfg, self.x, self.y, self.n_total = cfg, x, y, n_total
        self.finetune_steps = cfg.laplace_finetune_steps if cfg.bayes_factor == "laplace" else 0
        self._before = None  # (Curvature, prior precision) of the step's unpruned side

    def terms(self, model: nn.Module, mask: Optional[Mask] = None,
              before: Optional[PosteriorTerms] = None) -> PosteriorTerms:
        """Both definitions' terms at the model's weights; ``before=None`` marks the unpruned side."""
        from .evidence import Curvature

        cfg = self.cfg
        reuse = self._before[0] if before is not None and self._before is not None else None
        curv = Curvature.fit(model, self.x, self.y, n_total=self.n_total, structure=cfg.hessian_structure,
                             hessian=cfg.laplace_curvature, seed=cfg.seed, reuse=reuse)
        if before is None:
            delta = (curv.fit_prior_precision(prior_mean=cfg.prior_mu, mask=mask) if cfg.prior_fit == "marglik"
                     else cfg.prior_sigma ** -2)
            self._before = (curv, delta)
        delta = self._before[1]
        ev = curv.log_evidence(delta, prior_mean=cfg.prior_mu, mask=mask)
        sigma = float(delta) ** -0.5
        paper = posterior_terms(model, self.x, self.y, n_total=self.n_total, mu=cfg.prior_mu, sigma=sigma,
                                reduction=cfg.likelihood, biases=cfg.prune_biases)
        return PosteriorTerms(paper.log_likelihood, paper.log_prior, prior_sigma=sigma,
                              laplace_penalty=ev.log_penalty, log_occam=ev.log_complexity)


BAYES_FACTORS.register("laplace", BayesFactor(
    lambda cfg, model, data, x, y: LaplaceRatio(cfg, x, y, data.n_train, model),
    lambda b, a: a.log_evidence - b.log_evidence))
