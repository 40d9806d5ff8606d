"""The posterior criterion ``obs``: prune the weights whose removal the Laplace posterior minds least.

Near a mode w* the negative log posterior is the quadratic ``1/2 d^T P d`` in the change d,
with P = H + delta I the posterior precision (H: the likelihood's GGN, delta = 1/sigma^2 the
prior's precision) and Sigma = P^-1 the Laplace posterior covariance.  Removing weight p
(w_p -> 0) and letting the others move to their best compensating values raises it by

    L_p = w_p^2 / (2 Sigma_pp)        (Optimal Brain Surgeon, Hassibi & Stork 1993)

which is also half the squared posterior signal-to-noise ratio w_p^2 / Sigma_pp of Sparse
Variational Dropout (Molchanov et al. 2017) and Bayesian Compression (Louizos et al. 2017),
and the "optimal posterior damage" of SpaM (Dhahri et al. 2024) with a Laplace posterior.
A score is in nats, so the scores of different layers are comparable: ``scope="global"``
ranks them all together.  Weights that are already 0 score 0.

Sigma_pp comes from :meth:`~bayesprune.bayes.evidence.Curvature.posterior_variance`, per
``hessian_structure``: ``diag`` gives Sigma_pp = 1/(h_pp + delta) and so the diagonal OBD
saliency w_p^2 (h_pp + delta) / 2 (no compensation); ``kron`` the diagonal of the inverse of
the damped Kronecker factors, G (x) A + delta I (the same eigendecompositions the evidence
uses); ``full`` (tiny networks) the exact OBS saliency.  Only the scores are used: the kept
weights are not moved by the OBS update here, they are fine-tuned by training instead.

The curvature is fitted afresh at every step (gradual schedules: at every epoch's proposal)
on the gate's fixed subset of the training data (``bf_samples``, seeded), scaled to the full
training set, with the run's ``laplace_curvature``.  The prior precision is the run's now
(``ScoreContext.prior_precision``: the MAP prior's sigma, refitted under ``prior_fit="marglik"``,
or ``prior_sigma``'s); where there is none (outside a run, or a gate that refits delta at each
step) it is fitted to the evidence of the network as it is, as the gate would.
Pruned weights are parameters of this posterior (held at 0), so under ``kron``/``full`` the
kept weights' Sigma_pp is that of the unpruned layer, not of the pruned model: a stated
approximation, exact for the first step and under ``diag``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..core.config import RunConfig
from ..core.criteria import ScoreContext, Scores
from ..core.registry import CRITERIA
from .posterior import bf_subset


class PosteriorSaliency:
    """Scores w^2 / (2 Sigma_pp); settings from the run's config, or these defaults outside a run."""

    def __init__(self, structure: Optional[str] = None, hessian: Optional[str] = None,
                 samples: Optional[int] = 4096, seed: int = 0):
        self.structure, self.hessian, self.samples, self.seed = structure, hessian, samples, seed
        self.last_prior_precision: Optional[float] = None  # the delta of the last call (for teaching)

    def posterior_variance(self, model: nn.Module, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        """Sigma_pp of every trainable parameter (float64, CPU), at the context's prior precision."""
        from .evidence import Curvature
        from .laplace_gate import laplace_available

        if not laplace_available():
            raise ValueError("RunConfig.method='obs' / 'bayes-obs' needs laplace-torch, which is not installed: "
                             "pip install 'bayesprune[laplace]' (or laplace-torch)")
        if ctx.data is None:
            raise ValueError("the obs criterion needs the training data (ScoreContext.data): pass data= to "
                             "compute_mask")
        cfg = ctx.config if ctx.config is not None else RunConfig()
        structure = self.structure or (cfg.hessian_structure if ctx.config is not None else "kron")
        hessian = self.hessian or cfg.laplace_curvature
        samples = cfg.bf_samples if ctx.config is not None else self.samples
        seed = cfg.seed if ctx.config is not None else self.seed
        data = ctx.data
        idx = bf_subset(data.n_train, samples, seed).to(data.x_train.device)
        curv = Curvature.fit(model, data.x_train[idx], data.y_train[idx], n_total=data.n_train,
                             structure=structure, hessian=hessian, seed=seed)
        delta = ctx.prior_precision
        if delta is None:
            mask = {k: w.detach() != 0 for k, w in ctx.targets.items()}
            delta = curv.fit_prior_precision(prior_mean=cfg.prior_mu, mask=mask)
        self.last_prior_precision = float(delta)
        return curv.posterior_variance(float(delta))

    def scores(self, model: nn.Module, ctx: ScoreContext) -> Scores:
        var = self.posterior_variance(model, ctx)
        missing = sorted(set(ctx.targets) - set(var))
        if missing:
            raise ValueError(f"the obs criterion needs every target to be a trainable parameter; not: {missing}")
        return {k: w.detach().double().square() / (2.0 * var[k].to(w.device)) for k, w in ctx.targets.items()}


#: The registered instance: ``RunConfig(method="obs")``, ``method="bayes-obs"``, ``--method obs``.
CRITERIA.register("obs", PosteriorSaliency())
