"""Training interleaved with (gated) pruning: the paper's procedure, one epoch at a time.

Per epoch: one pass of Adam over the shuffled training set; then, from
``prune_start_epoch`` on, a pruning step.  The pruning step records the log
posterior's terms before and after pruning and the log Bayes factor, whether or
not the gate let it prune, so a student can see why the gate opened.  The last
epoch always prunes (``forced``), so the reported accuracy belongs to the stated
sparsity.  One history row per epoch goes to every callback as it is made.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from .bayes import (
    PosteriorTerms,
    bf_subset,
    gate_allows_pruning,
    gate_keeps_candidate,
    log_bayes_factor,
    posterior_terms,
    summed_loss_and_correct,
)
from .config import RunConfig
from .data import TensorDataset, batch_indices, load_dataset
from .models import build_model
from .pruning import Mask, apply_mask, compute_mask, layer_sparsity, prunable_parameters, sparsity

Callback = Callable[[dict[str, Any]], None]

HISTORY_COLUMNS = [
    "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "sparsity", "pruned",
    "gate_open", "forced", "log_bf", "log_likelihood_before", "log_likelihood_after",
    "log_prior_before", "log_prior_after", "log_posterior_before", "log_posterior_after",
    "bf_seconds", "seconds",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; ``.history`` holds every finished epoch."""

    def __init__(self, message: str, history: pd.DataFrame, config: RunConfig):
        super().__init__(message)
        self.history = history
        self.config = config


@dataclass
class RunResult:
    """What one run produced; ``history`` has one row per epoch."""

    config: RunConfig
    history: pd.DataFrame
    model: nn.Module
    test_accuracy: float
    test_loss: float
    final_sparsity: float
    seconds: float
    device: str
    layer_sparsity: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The one-line JSON summary of the CLI."""
        return {
            "dataset": self.config.dataset,
            "model": self.config.model,
            "method": self.config.method,
            "target_sparsity": self.config.sparsity,
            "test_accuracy": round(self.test_accuracy, 6),
            "test_loss": round(self.test_loss, 6),
            "final_sparsity": round(self.final_sparsity, 6),
            "epochs": self.config.epochs,
            "pruning_epochs": int(self.history["pruned"].sum()) if len(self.history) else 0,
            "seconds": round(self.seconds, 3),
            "device": self.device,
        }

    def save(self, out_dir: str | Path, plot: bool = True) -> Path:
        """Write config.json, history.csv, summary.json, model.pt and curves.png."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        self.history.to_csv(out / "history.csv", index=False)
        summary = dict(self.summary(), layer_sparsity=self.layer_sparsity)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, out / "model.pt")
        if plot:
            from .plots import plot_curves

            fig = plot_curves(self.history, title=_title(self.config))
            fig.savefig(out / "curves.png", dpi=110, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(fig)
        return out


def _title(cfg: RunConfig) -> str:
    return f"{cfg.dataset} / {cfg.model} / {cfg.method} @ {cfg.sparsity:.0%}"


# ------------------------------------------------------------------ one epoch
def _train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: TensorDataset,
    batch_size: int,
    generator: torch.Generator,
    mask: Optional[Mask],
) -> tuple[float, float]:
    """One pass over the training set; (mean loss, accuracy) weighted by batch size."""
    model.train()
    device = data.x_train.device
    # pair each masked weight with a float copy of its mask once, not on every step
    params = prunable_parameters(model)
    masked = [(params[k], m.to(params[k].dtype)) for k, m in mask.items()] if mask is not None else []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for idx in batch_indices(data.n_train, batch_size, generator, device):
        xb = data.x_train.index_select(0, idx)
        yb = data.y_train.index_select(0, idx)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if masked:
            with torch.no_grad():
                for w, m in masked:
                    w.mul_(m)
        with torch.no_grad():
            loss_sum.add_(loss.detach(), alpha=idx.numel())
            correct.add_((logits.argmax(1) == yb).sum())
    return float(loss_sum) / data.n_train, int(correct) / data.n_train


def make_adam(params, lr: float, device: torch.device | str) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per tensor where this torch supports it (about 30 % faster per epoch on CPU).

    Falls back to the default implementation elsewhere; the update rule is the same.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) under inference mode."""
    total, correct = summed_loss_and_correct(model, x, y)
    return total / x.shape[0], correct / x.shape[0]


def retrain(
    model: nn.Module,
    data: TensorDataset,
    epochs: int,
    mask: Optional[Mask] = None,
    lr: float = 0.001,
    batch_size: int = 64,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train ``model`` further with a fresh Adam, keeping ``mask``'s zeros at zero.

    The "retrain" of train -> prune -> retrain; returns one dict per epoch.
    """
    opt = make_adam(model.parameters(), lr, data.x_train.device)
    g = torch.Generator().manual_seed(seed)
    out = []
    for epoch in range(1, epochs + 1):
        loss, acc = _train_epoch(model, opt, data, batch_size, g, mask)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        out.append({"epoch": epoch, "train_loss": loss, "train_acc": acc, "test_loss": test_loss,
                    "test_acc": test_acc, "sparsity": sparsity(model)})
    return out


# ------------------------------------------------------------------ the run
def train(
    cfg: RunConfig,
    callbacks: Iterable[Callback] = (),
    progress: bool = True,
    data: Optional[TensorDataset] = None,
) -> RunResult:
    """Train ``cfg`` and return a :class:`RunResult`.

    ``callbacks`` receive each history row (a dict) as soon as it exists.
    ``progress`` shows a tqdm bar over epochs.  ``data`` overrides loading (tests).
    Raises :class:`TrainingDiverged` (with the history so far) on a NaN/inf loss.
    """
    from tqdm.auto import tqdm

    if not isinstance(cfg, RunConfig):
        raise TypeError(f"train() needs a RunConfig, got {type(cfg).__name__}")
    callbacks = list(callbacks)
    start = time.perf_counter()
    device = torch.device(cfg.resolved_device())
    data = load_dataset(cfg, device) if data is None else data.to(device)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.input_shape, data.num_classes).to(device)
    opt = make_adam(model.parameters(), cfg.lr, device)
    g_data = torch.Generator().manual_seed(cfg.seed)
    g_prune = torch.Generator().manual_seed(cfg.seed + 1)
    bf_idx = bf_subset(data.n_train, cfg.bf_samples, cfg.seed).to(device)
    x_bf, y_bf = data.x_train[bf_idx], data.y_train[bf_idx]

    def terms() -> PosteriorTerms:
        return posterior_terms(
            model, x_bf, y_bf, n_total=data.n_train, mu=cfg.prior_mu, sigma=cfg.prior_sigma,
            reduction=cfg.likelihood,
        )

    kind = cfg.prune_kind
    persistent: Optional[Mask] = None
    previous_log_bf: Optional[float] = None
    rows: list[dict[str, Any]] = []
    bar = tqdm(range(1, cfg.epochs + 1), desc=_title(cfg), unit="epoch", disable=not progress, leave=False)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            train_loss, train_acc = _train_epoch(model, opt, data, cfg.batch_size, g_data, persistent)
            if not math.isfinite(train_loss):
                raise TrainingDiverged(
                    f"training loss became {train_loss} in epoch {epoch} of {_title(cfg)} "
                    f"(lr={cfg.lr}); the history of the {len(rows)} finished epochs is in .history",
                    pd.DataFrame(rows, columns=HISTORY_COLUMNS),
                    cfg,
                )
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
            row.update(pruned=False, gate_open=False, forced=False, bf_seconds=0.0)
            nan = float("nan")
            row.update(log_bf=nan, log_likelihood_before=nan, log_likelihood_after=nan,
                       log_prior_before=nan, log_prior_after=nan,
                       log_posterior_before=nan, log_posterior_after=nan)
            if kind is not None and epoch >= cfg.prune_start_epoch:
                t_bf = time.perf_counter()
                forced = epoch == cfg.epochs
                first = previous_log_bf is None
                gate_open = forced or not cfg.is_bayesian or gate_allows_pruning(
                    cfg.gate, first, previous_log_bf, cfg.beta)
                before = terms()
                after, log_bf, pruned = before, 0.0, False
                if gate_open:
                    may_reject = cfg.is_bayesian and cfg.gate == "immediate" and not forced
                    snapshot = ({k: w.detach().clone() for k, w in prunable_parameters(model).items()}
                                if may_reject else {})
                    candidate = compute_mask(model, kind, cfg.sparsity, cfg.scope, g_prune)
                    apply_mask(model, candidate)
                    after = terms()
                    log_bf = log_bayes_factor(before, after)
                    pruned = forced or not cfg.is_bayesian or gate_keeps_candidate(cfg.gate, log_bf, cfg.beta)
                    if pruned:
                        if not cfg.regrow:
                            persistent = candidate if persistent is None else persistent & candidate
                    else:  # immediate gate rejected the candidate: put the weights back
                        with torch.no_grad():
                            for k, w in prunable_parameters(model).items():
                                w.copy_(snapshot[k])
                previous_log_bf = log_bf if pruned else 0.0
                row.update(
                    pruned=pruned, gate_open=gate_open, forced=forced, log_bf=log_bf,
                    log_likelihood_before=before.log_likelihood, log_likelihood_after=after.log_likelihood,
                    log_prior_before=before.log_prior, log_prior_after=after.log_prior,
                    log_posterior_before=before.log_posterior, log_posterior_after=after.log_posterior,
                    bf_seconds=time.perf_counter() - t_bf,
                )
            test_sum, test_correct = summed_loss_and_correct(model, data.x_test, data.y_test)
            row.update(
                test_loss=test_sum / data.n_test,
                test_acc=test_correct / data.n_test,
                sparsity=sparsity(model),
                seconds=time.perf_counter() - t0,
            )
            row = {c: row[c] for c in HISTORY_COLUMNS}
            rows.append(row)
            bar.set_postfix(test_acc=f"{row['test_acc']:.4f}", sparsity=f"{row['sparsity']:.3f}")
            for cb in callbacks:
                cb(dict(row))
    finally:
        bar.close()

    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    last = history.iloc[-1]
    return RunResult(
        config=cfg,
        history=history,
        model=model,
        test_accuracy=float(last["test_acc"]),
        test_loss=float(last["test_loss"]),
        final_sparsity=sparsity(model),
        seconds=time.perf_counter() - start,
        device=str(device),
        layer_sparsity=layer_sparsity(model),
    )
