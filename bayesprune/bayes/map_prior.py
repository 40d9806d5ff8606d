"""The Gaussian prior inside the training objective: MAP training, so Laplace is taken at a mode.

``RunConfig.train_prior="map"`` trains each mini-batch on

    mean CE + |w - mu|^2 / (2 sigma^2 N)

(N: training-set size), which is -log p(D|w) - log p(w), divided by N and estimated on a
batch: its minimum is the mode of the posterior whose evidence the Laplace gate computes.
A Gaussian prior N(mu, sigma^2) *is* L2 weight decay towards mu, with coefficient
delta / N = 1 / (sigma^2 N) on the mean loss (delta = 1 / sigma^2 on the summed one).

**Coupled, not decoupled.**  The penalty is added to the loss, so its gradient
(w - mu) / (sigma^2 N) goes through Adam's preconditioning like the likelihood's.  Only
this form has the posterior mode as its fixed point: Adam's step is zero where the
*total* gradient is zero.  Decoupled decay (AdamW: w -= lr * lambda * w outside Adam)
stops where the preconditioned likelihood step balances the raw decay, a point that
depends on Adam's second-moment estimates and is not the MAP of any fixed prior.

**Which weights.**  The same ones the gate's prior covers: every trainable parameter when
the Laplace evidence is involved (``bayes_factor="laplace"`` or ``prior_fit="marglik"``),
else the paper's prunable weights (Linear/Conv weights; biases with ``prune_biases``).

**Online empirical Bayes.**  With ``prior_fit="marglik"``, sigma is refitted every
``marglik_every`` epochs to the Laplace evidence of the network as it is (Immer et al.
2021, "Scalable marginal likelihood estimation for model selection in deep learning";
laplace-torch's ``marglik_training``).  laplace-torch takes a few gradient steps on log
delta; we solve the same stationarity condition in closed form (MacKay's fixed point,
:meth:`bayesprune.bayes.evidence.Curvature.fit_prior_precision`).  Training starts
from ``prior_sigma``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..core.config import RunConfig
from ..core.data import TensorDataset
from ..core.pruning import Mask, prunable_parameters
from .posterior import bf_subset


def covers_all_parameters(cfg: RunConfig) -> bool:
    """Whether the gate's prior is the Laplace evidence's (every parameter) or the paper's (prunable weights)."""
    return cfg.bayes_factor == "laplace" or cfg.prior_fit == "marglik"


def _covered(cfg: RunConfig, model: nn.Module) -> list[torch.Tensor]:
    return (list(model.parameters()) if covers_all_parameters(cfg)
            else list(prunable_parameters(model, biases=cfg.prune_biases).values()))


class MapPrior:
    """The prior term of the training loss over one model's weights; ``sigma`` may be refitted between epochs."""

    def __init__(self, params: list[torch.Tensor], mu: float, sigma: float, n_total: int,
                 cfg: Optional[RunConfig] = None):
        self.params, self.mu, self.sigma, self.n_total = list(params), float(mu), float(sigma), int(n_total)
        self.cfg = cfg  # where the weights, and the online refit (prior_fit="marglik"), come from

    @classmethod
    def from_config(cls, cfg: RunConfig, model: nn.Module, n_total: int) -> Optional["MapPrior"]:
        """The prior of ``cfg`` on ``model``'s weights, or None when training is maximum likelihood (the paper)."""
        if cfg.train_prior == "none":
            return None
        if cfg.prior_fit == "marglik":
            from .laplace_gate import laplace_available

            if not laplace_available():
                raise ValueError(f"RunConfig.train_prior={cfg.train_prior!r} with prior_fit='marglik' needs "
                                 "laplace-torch, which is not installed: pip install laplace-torch")
        return cls(_covered(cfg, model), cfg.prior_mu, cfg.prior_sigma, n_total, cfg)

    def on(self, model: nn.Module) -> "MapPrior":
        """The same prior (same sigma) over another model's weights: the twin of a fair comparison."""
        params = list(model.parameters()) if self.cfg is None else _covered(self.cfg, model)
        return MapPrior(params, self.mu, self.sigma, self.n_total, self.cfg)

    def penalty(self) -> torch.Tensor:
        """|w - mu|^2 / (2 sigma^2 N): -log p(w) per training example, up to a constant."""
        total = sum((p - self.mu).square().sum() for p in self.params)
        return total / (2.0 * self.sigma**2 * self.n_total)

    def end_of_epoch(self, model: nn.Module, data: TensorDataset, epoch: int, mask: Optional[Mask]) -> None:
        """With ``prior_fit="marglik"``, every ``marglik_every`` epochs: sigma <- the evidence's maximiser."""
        cfg = self.cfg
        if cfg is None or cfg.prior_fit != "marglik" or epoch % cfg.marglik_every:
            return
        from .evidence import Curvature

        idx = bf_subset(data.n_train, cfg.bf_samples, cfg.seed).to(data.x_train.device)
        curv = Curvature.fit(model, data.x_train[idx], data.y_train[idx], n_total=self.n_total,
                             structure=cfg.hessian_structure, hessian=cfg.laplace_curvature, seed=cfg.seed)
        self.sigma = float(curv.fit_prior_precision(prior_mean=self.mu, mask=mask)) ** -0.5
