"""Training interleaved with (gated) pruning: the paper's procedure, one epoch at a time.

Per epoch: one pass of Adam over the shuffled training set; then, where the
:class:`~bayesprune.core.schedule.PruningSchedule` proposes one, a pruning step
(:func:`prune_step`).  The step records the Bayes factor's terms before and
after, whether or not the gate let it prune, so a student can see why the gate
opened.  One history row per epoch goes to every callback as it is made.

A callback may raise :class:`StopTraining` to end the run after the current
epoch (the dashboard's Stop button); Ctrl-C raises :class:`TrainingInterrupted`,
and a NaN loss :class:`TrainingDiverged`.  Both carry a :class:`RunResult` of the
finished epochs, with the model as it was at the end of the last one.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ..bayes.map_prior import MapPrior
from ..bayes.posterior import (
    PosteriorTerms,
    bf_subset,
    gate_allows_pruning,
    gate_keeps_candidate,
    log_bayes_factor,
    summed_loss_and_correct,
)
from ..core.config import RunConfig
from ..core.criteria import compute_mask
from ..core.data import TensorDataset, batch_indices, load_dataset
from ..core.memory import check_fits
from ..core.models import initial_model
from ..core.pruning import (
    Mask,
    apply_mask,
    layer_sparsity,
    output_layer_names,
    prunable_parameters,
    sparsity,
)
from ..core.registry import BAYES_FACTORS
from ..core.schedule import PruningSchedule

Callback = Callable[[dict[str, Any]], None]
NAN = float("nan")

HISTORY_COLUMNS = [
    "epoch", "train_loss", "train_acc", "test_loss", "test_acc",
    "sparsity_before", "candidate_sparsity", "sparsity", "pruned", "gate_open", "forced",
    "log_bf", "log_bf_posterior", "log_bf_laplace",
    "log_likelihood_before", "log_likelihood_after", "log_prior_before", "log_prior_after",
    "log_posterior_before", "log_posterior_after",
    "laplace_penalty_before", "laplace_penalty_after", "log_occam_before", "log_occam_after",
    "log_evidence_before", "log_evidence_after", "prior_sigma",
    "bf_seconds", "seconds",
]


class StopTraining(Exception):
    """Raise from a callback to end training after the current epoch; ``train`` returns what was trained."""


class _CarriesResult:
    """Mixin of the exceptions that carry the partial :class:`RunResult` (``.result``) of a run."""

    def __init__(self, message: str, result: "RunResult"):
        super().__init__(message)  # type: ignore[call-arg]
        result.error = message
        self.result = result
        self.history = result.history
        self.config = result.config


class TrainingDiverged(_CarriesResult, RuntimeError):
    """The loss (or the Bayes factor) became NaN or infinite; ``.result`` holds every finished epoch."""


class TrainingInterrupted(_CarriesResult, KeyboardInterrupt):
    """Ctrl-C during training; ``.result`` holds every finished epoch (status ``interrupted``).

    A ``KeyboardInterrupt``, not an ``Exception``: code that records failures and goes on
    (a sweep) must not swallow a user's Ctrl-C.
    """


def removes_weights(history: pd.DataFrame) -> pd.Series:
    """Which proposed steps would remove weights: a step whose candidate is no sparser than the network
    was (a one-shot schedule after its first prune; a gradual one after its target) changes nothing, and
    its log BF is 0 by construction.  Such epochs are not decisions of the gate and are not counted as ones."""
    return history["candidate_sparsity"] > history["sparsity_before"] + 1e-9


@dataclass
class RunResult:
    """What one run produced; ``history`` has one row per finished epoch.

    ``status``: ``ok``; ``stopped`` (a callback asked); ``interrupted`` (Ctrl-C);
    ``diverged`` (NaN loss).  The model is the one at the end of the last finished epoch.
    """

    config: RunConfig
    history: pd.DataFrame
    model: nn.Module
    test_accuracy: float
    test_loss: float
    final_sparsity: float
    seconds: float
    device: str
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    error: str = ""  # why a diverged or interrupted run ended (the exception's message)

    def summary(self) -> dict[str, Any]:
        """The one-line JSON summary of the CLI: where the run ended and how the gate decided."""
        h = self.history
        proposed = h[h["candidate_sparsity"].notna()] if len(h) else h
        steps = proposed[removes_weights(proposed)] if len(proposed) else proposed  # decisions, not no-ops
        accepted = steps[steps["pruned"].astype(bool)] if len(steps) else steps
        sigma = h["prior_sigma"].dropna() if len(h) else h
        return {
            "status": self.status,
            "dataset": self.config.dataset,
            "model": self.config.model,
            "method": self.config.method,
            "schedule": self.config.schedule,
            "final_prune": self.config.final_prune,
            "gate": self.config.gate,
            "bayes_factor": self.config.bayes_factor,
            "prior_fit": self.config.prior_fit,
            "target_sparsity": self.config.sparsity,
            "final_sparsity": round(self.final_sparsity, 6),
            "test_accuracy": round(self.test_accuracy, 6) if math.isfinite(self.test_accuracy) else None,
            "test_loss": round(self.test_loss, 6) if math.isfinite(self.test_loss) else None,
            "epochs": int(len(h)),
            "pruning_steps_proposed": int(len(steps)),
            "pruning_epochs_without_change": int(len(proposed) - len(steps)),
            "pruning_steps_accepted": int(len(accepted)),
            "last_accepted_epoch": int(accepted["epoch"].iloc[-1]) if len(accepted) else None,
            "prior_sigma": round(float(sigma.iloc[-1]), 8) if len(sigma) else None,
            "seconds": round(self.seconds, 3),
            "device": self.device,
        }



# ------------------------------------------------------------------ steps
def run_steps(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: TensorDataset,
    batches: Iterable[torch.Tensor],
    mask: Optional[Mask],
    prior: Optional[MapPrior] = None,
) -> tuple[float, float, int]:
    """Adam steps over index batches, keeping ``mask``'s zeros at zero; (loss sum, correct, count).

    ``prior``: train to the MAP, the prior's penalty added to each batch's loss (the loss sum stays cross-entropy).
    """
    model.train()
    device = data.x_train.device
    # pair each masked tensor with a float copy of its mask once, not on every step
    params = prunable_parameters(model, biases=True)
    masked = [(params[k], m.to(params[k].dtype)) for k, m in mask.items()] if mask is not None else []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for idx in batches:
        xb = data.x_train.index_select(0, idx)
        yb = data.y_train.index_select(0, idx)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        (loss if prior is None else loss + prior.penalty()).backward()
        opt.step()
        with torch.no_grad():
            for w, m in masked:
                w.mul_(m)
            loss_sum.add_(loss.detach(), alpha=idx.numel())
            correct.add_((logits.argmax(1) == yb).sum())
        count += idx.numel()
    return float(loss_sum), float(correct), count


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: TensorDataset,
    batch_size: int,
    generator: torch.Generator,
    mask: Optional[Mask],
    prior: Optional[MapPrior] = None,
) -> tuple[float, float]:
    """One pass over the training set; (mean cross-entropy, accuracy) weighted by batch size."""
    batches = batch_indices(data.n_train, batch_size, generator, data.x_train.device)
    loss_sum, correct, count = run_steps(model, opt, data, batches, mask, prior)
    return loss_sum / count, correct / count


def some_batches(n: int, batch_size: int, steps: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """``steps`` shuffled mini-batches (fresh permutations as needed): the fine-tuning steps of a gate."""
    done = 0
    while done < steps:
        for idx in batch_indices(n, batch_size, generator, device):
            if done == steps:
                return
            yield idx
            done += 1



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
        loss, acc = train_epoch(model, opt, data, batch_size, g, mask)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        out.append({"epoch": epoch, "train_loss": loss, "train_acc": acc, "test_loss": test_loss,
                    "test_acc": test_acc, "sparsity": sparsity(model)})
    return out


# ------------------------------------------------------------------ the pruning step
@dataclass
class StepRecord:
    """What one epoch's pruning step did; :meth:`columns` are its history columns."""

    sparsity_before: float = NAN
    candidate_sparsity: float = NAN
    gate_open: bool = False
    pruned: bool = False
    forced: bool = False
    log_bf: float = NAN
    before: Optional[PosteriorTerms] = None
    after: Optional[PosteriorTerms] = None
    seconds: float = 0.0

    def columns(self) -> dict[str, Any]:
        b = self.before or PosteriorTerms(NAN, NAN)
        a = self.after or PosteriorTerms(NAN, NAN)
        return {
            "sparsity_before": self.sparsity_before, "candidate_sparsity": self.candidate_sparsity,
            "pruned": self.pruned, "gate_open": self.gate_open, "forced": self.forced, "log_bf": self.log_bf,
            "log_bf_posterior": a.log_posterior - b.log_posterior,
            "log_bf_laplace": a.log_evidence - b.log_evidence,
            "log_likelihood_before": b.log_likelihood, "log_likelihood_after": a.log_likelihood,
            "log_prior_before": b.log_prior, "log_prior_after": a.log_prior,
            "log_posterior_before": b.log_posterior, "log_posterior_after": a.log_posterior,
            "laplace_penalty_before": b.laplace_penalty, "laplace_penalty_after": a.laplace_penalty,
            "log_occam_before": b.log_occam, "log_occam_after": a.log_occam,
            "log_evidence_before": b.log_evidence, "log_evidence_after": a.log_evidence,
            "prior_sigma": b.prior_sigma, "bf_seconds": self.seconds,
        }


@dataclass
class PruneState:
    """Everything a pruning step reads and changes, apart from the model itself."""

    cfg: RunConfig
    schedule: PruningSchedule
    evaluator: Any  # see posterior.BayesFactor: .terms(model, mask, before), .finetune_steps
    optimizer: torch.optim.Optimizer
    data: TensorDataset
    g_prune: torch.Generator
    g_finetune: torch.Generator
    mask: Optional[Mask] = None  # the persistent mask (None: nothing pruned yet, or regrow=True)
    previous_log_bf: Optional[float] = None
    criterion: Any = None  # a scores function (core.criteria); None: the registered cfg.prune_kind
    prior: Optional[MapPrior] = None  # train_prior="map": the prior in every training step, fine-tuning included


def _targets_skip(cfg: RunConfig, model: nn.Module) -> tuple[str, ...]:
    return () if cfg.prune_output else output_layer_names(model)


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer, with_optimizer: bool) -> dict[str, Any]:
    """What a refused step must put back: every parameter (and Adam's state, if the step trains)."""
    snap: dict[str, Any] = {"params": [p.detach().clone() for p in model.parameters()]}
    if with_optimizer:
        snap["opt"] = copy.deepcopy(opt.state_dict())
    return snap


def _restore(model: nn.Module, opt: torch.optim.Optimizer, snap: dict[str, Any]) -> None:
    with torch.no_grad():
        for p, saved in zip(model.parameters(), snap["params"]):
            p.copy_(saved)
    if "opt" in snap:
        opt.load_state_dict(snap["opt"])


def matched_finetune(model: nn.Module, state: PruneState, candidate: Mask, steps: int) -> nn.Module:
    """A fair comparison: the unpruned side trained exactly as the candidate is; returns it (a copy).

    Laplace needs each side at a mode, so the candidate is fine-tuned under its mask.  If
    only it were, the extra training alone would move the Bayes factor (a candidate that
    prunes nothing gained +118 to +195 nats on digits).  So a copy of the unpruned model,
    with a copy of Adam's state, takes the same ``steps`` on the same batches under the
    current mask: only the mask differs, and a candidate that prunes nothing gives the
    same weights bit for bit (log BF = 0).  ``model`` is left masked and fine-tuned.
    """
    twin = copy.deepcopy(model)
    twin_opt = make_adam(twin.parameters(), state.cfg.lr, state.data.x_train.device)
    twin_opt.load_state_dict(copy.deepcopy(state.optimizer.state_dict()))
    batches = list(some_batches(state.data.n_train, state.cfg.batch_size, steps, state.g_finetune,
                                 state.data.x_train.device))
    twin_prior = state.prior.on(twin) if state.prior is not None else None
    run_steps(twin, twin_opt, state.data, batches, state.mask, twin_prior)
    apply_mask(model, candidate)
    run_steps(model, state.optimizer, state.data, batches, candidate, state.prior)
    return twin


@torch.no_grad()
def _newly_pruned(model: nn.Module, candidate: Mask) -> int:
    """How many non-zero weights the candidate mask would zero (0: the step changes nothing)."""
    params = prunable_parameters(model, biases=True)
    return sum(int(((params[k] != 0) & ~m.bool()).sum()) for k, m in candidate.items())


def current_prior_precision(state: PruneState) -> Optional[float]:
    """delta = 1/sigma^2 of the run's prior now, for the criterion: the MAP prior's (refitted under
    ``prior_fit="marglik"``), the fixed ``prior_sigma``'s, or None where the gate fits delta afresh at every
    step (``prior_fit="marglik"`` without MAP training): a criterion that needs it then fits it the same way."""
    if state.prior is not None:
        return state.prior.sigma ** -2
    return None if state.cfg.prior_fit == "marglik" else state.cfg.prior_sigma ** -2


def prune_step(model: nn.Module, state: PruneState, epoch: int) -> StepRecord:
    """One epoch's pruning step: propose (schedule), measure both sides, let the gate decide.

    A refused step leaves every parameter, and Adam's state, bit-identical to before it.
    """
    cfg = state.cfg
    rec = StepRecord(sparsity_before=sparsity(model, cfg.prune_biases))
    proposal = state.schedule.proposal(epoch)
    if proposal is None:
        return rec
    t0 = time.perf_counter()
    forced = state.schedule.forced(epoch)
    first = state.previous_log_bf is None
    gate_open = forced or not cfg.is_bayesian or gate_allows_pruning(cfg.gate, first, state.previous_log_bf, cfg.beta)
    log_bf, pruned = 0.0, False
    if not gate_open:
        before = after = state.evaluator.terms(model, state.mask)
    else:
        finetune = state.evaluator.finetune_steps
        may_reject = cfg.is_bayesian and cfg.gate == "immediate" and not forced
        snap = _snapshot(model, state.optimizer, with_optimizer=finetune > 0) if may_reject else None
        criterion = state.criterion if state.criterion is not None else cfg.prune_kind
        candidate = compute_mask(model, criterion, proposal, cfg.scope, state.g_prune,
                                 biases=cfg.prune_biases, skip=_targets_skip(cfg, model), data=state.data,
                                 prior_precision=current_prior_precision(state), config=cfg)
        if finetune > 0 and _newly_pruned(model, candidate) > 0:  # Laplace: both sides near a mode, trained alike
            before = state.evaluator.terms(matched_finetune(model, state, candidate, finetune), state.mask)
        else:
            before = state.evaluator.terms(model, state.mask)
            apply_mask(model, candidate)
        after = state.evaluator.terms(model, candidate, before)
        log_bf = log_bayes_factor(before, after, cfg.bayes_factor)
        if math.isnan(log_bf):
            raise FloatingPointError(f"the log Bayes factor of epoch {epoch} is NaN (before: {before}, after: {after})")
        pruned = forced or not cfg.is_bayesian or gate_keeps_candidate(cfg.gate, log_bf, cfg.beta)
        if pruned:
            if not cfg.regrow:
                state.mask = candidate if state.mask is None else state.mask & candidate
        elif snap is not None:
            _restore(model, state.optimizer, snap)
    state.previous_log_bf = log_bf if pruned else 0.0
    rec.candidate_sparsity, rec.gate_open, rec.pruned, rec.forced = proposal, gate_open, pruned, forced
    rec.log_bf, rec.before, rec.after = log_bf, before, after
    rec.seconds = time.perf_counter() - t0
    return rec


def make_evaluator(cfg: RunConfig, model: nn.Module, data: TensorDataset):
    """The gate's evaluator, built by the registered Bayes factor ``cfg.bayes_factor`` on the fixed subset."""
    bf_idx = bf_subset(data.n_train, cfg.bf_samples, cfg.seed).to(data.x_train.device)
    x_bf, y_bf = data.x_train[bf_idx], data.y_train[bf_idx]
    return BAYES_FACTORS.lookup(cfg.bayes_factor).make(cfg, model, data, x_bf, y_bf)


def gate_state(cfg: RunConfig, model: nn.Module, data: TensorDataset,
               optimizer: Optional[torch.optim.Optimizer] = None, prior: Optional[MapPrior] = None, *,
               criterion: Any = None, evaluator: Any = None) -> PruneState:
    """The pruning state a run of ``cfg`` starts with (the one :func:`train` builds).

    Also the way to step the gate by hand: ``prune_step(model, gate_state(cfg, model, data), epoch)``.
    ``criterion`` (a scores function) and ``evaluator`` (an object with ``terms`` and
    ``finetune_steps``) replace the registered ones of ``cfg``.
    """
    schedule = PruningSchedule.from_config(cfg)
    if schedule is None:
        raise ValueError(f"RunConfig.method={cfg.method!r} prunes nothing: a gate state needs a pruning method")
    opt = optimizer if optimizer is not None else make_adam(model.parameters(), cfg.lr, data.x_train.device)
    evaluator = evaluator if evaluator is not None else make_evaluator(cfg, model, data)
    return PruneState(cfg, schedule, evaluator, opt, data,
                      g_prune=torch.Generator().manual_seed(cfg.seed + 1),
                      g_finetune=torch.Generator().manual_seed(cfg.seed + 2), criterion=criterion,
                      prior=prior if prior is not None else MapPrior.from_config(cfg, model, data.n_train))


# ------------------------------------------------------------------ building a run
@dataclass
class Run:
    """Everything a run is made of before its first epoch: what :func:`build_run` returns."""

    cfg: RunConfig
    device: torch.device
    data: TensorDataset
    model: nn.Module
    optimizer: torch.optim.Optimizer
    g_data: torch.Generator  # the order of the training batches
    state: Optional[PruneState]  # the schedule, the gate and its evaluator (None: the unpruned baseline)
    prior: Optional[MapPrior]  # train_prior="map": the prior in every training step (None: maximum likelihood)

    @property
    def mask(self) -> Optional[Mask]:
        return self.state.mask if self.state is not None else None


def build_run(cfg: RunConfig, data: Optional[TensorDataset] = None, *, criterion: Any = None,
              evaluator: Any = None) -> Run:
    """Data, model, optimizer, schedule and gate of a run of ``cfg`` (``data`` overrides loading)."""
    if not isinstance(cfg, RunConfig):
        raise TypeError(f"train() needs a RunConfig, got {type(cfg).__name__}")
    device = torch.device(cfg.resolved_device())
    data = load_dataset(cfg, device) if data is None else data.to(device)
    check_fits(cfg, data.input_shape, data.num_classes, device)  # a huge width fails here, not in epoch 1
    model = initial_model(cfg, data.input_shape, data.num_classes, device)
    opt = make_adam(model.parameters(), cfg.lr, device)
    g_data = torch.Generator().manual_seed(cfg.seed)
    prior = MapPrior.from_config(cfg, model, data.n_train)  # None: maximum likelihood, the paper's training
    state = (gate_state(cfg, model, data, opt, prior, criterion=criterion, evaluator=evaluator)
             if cfg.prune_kind is not None else None)
    return Run(cfg, device, data, model, opt, g_data, state, prior)


# ------------------------------------------------------------------ callbacks
class EpochCallback:
    """A callback that sees the whole epoch: ``on_epoch_end(epoch, model, optimizer, row)``.

    A plain function in ``callbacks`` receives the row only (``callbacks=[print]``); an
    object with ``on_epoch_end`` receives the epoch, the model, the optimizer and the row
    (open_lth's callbacks, so that the loop itself stays simple).
    """

    def on_epoch_end(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                     row: dict[str, Any]) -> None:  # pragma: no cover - an interface
        raise NotImplementedError


def _call(cb: Any, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, row: dict[str, Any]) -> None:
    if hasattr(cb, "on_epoch_end"):
        cb.on_epoch_end(epoch, model, optimizer, dict(row))
    else:
        cb(dict(row))


class Snapshot(EpochCallback):
    """The weights after the last finished epoch, which a stopped, interrupted or diverged run returns."""

    def __init__(self, model: nn.Module):
        self.take(model)

    def take(self, model: nn.Module) -> None:
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_epoch_end(self, epoch, model, optimizer, row) -> None:
        self.take(model)


class ProgressBar(EpochCallback):
    """tqdm over the epochs, showing the last test accuracy and sparsity."""

    def __init__(self, cfg: RunConfig, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=cfg.epochs, desc=cfg.title, unit="epoch", disable=not enabled, leave=False)

    def on_epoch_end(self, epoch, model, optimizer, row) -> None:
        self.bar.update(1)
        self.bar.set_postfix(test_acc=f"{row['test_acc']:.4f}", sparsity=f"{row['sparsity']:.3f}")

    def close(self) -> None:
        self.bar.close()


def evaluation_columns(model: nn.Module, data: TensorDataset) -> dict[str, float]:
    """The test columns of a history row, under inference mode."""
    test_sum, test_correct = summed_loss_and_correct(model, data.x_test, data.y_test)
    return {"test_loss": test_sum / data.n_test, "test_acc": test_correct / data.n_test}


def _result(run: Run, rows: list[dict[str, Any]], snapshot: Snapshot, start: float, status: str) -> RunResult:
    cfg, model = run.cfg, run.model
    model.load_state_dict(snapshot.state)
    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    last = history.iloc[-1] if len(history) else None
    return RunResult(
        config=cfg, history=history, model=model,
        test_accuracy=float(last["test_acc"]) if last is not None else NAN,
        test_loss=float(last["test_loss"]) if last is not None else NAN,
        final_sparsity=sparsity(model, cfg.prune_biases), seconds=time.perf_counter() - start,
        device=str(run.device), layer_sparsity=layer_sparsity(model, cfg.prune_biases), status=status)


def end_of_epoch(run: Run, epoch: int, train_loss: float, train_acc: float, t0: float,
                 rows: list[dict[str, Any]], snapshot: Snapshot, start: float) -> dict[str, Any]:
    """Everything of an epoch after its training pass: the divergence check, the pruning step, the prior's
    refit and the history row.  The one copy of this code: :func:`train` and the lockstep group
    (:mod:`bayesprune.engine.lockstep`) both call it, so a member of a group decides exactly as a single run.

    Raises :class:`TrainingDiverged` (with the finished ``rows``) on a NaN/inf loss or Bayes factor.
    """
    cfg, model, data, prior = run.cfg, run.model, run.data, run.prior
    if not math.isfinite(train_loss):
        raise TrainingDiverged(
            f"training loss became {train_loss} in epoch {epoch} of {cfg.title} (lr={cfg.lr}); the "
            f"{len(rows)} finished epochs are kept", _result(run, rows, snapshot, start, "diverged"))
    # -- prune: the schedule proposes, the Bayes factor measures, the gate decides
    try:
        step = prune_step(model, run.state, epoch) if run.state is not None else StepRecord(
            sparsity_before=sparsity(model, cfg.prune_biases))
    except FloatingPointError as exc:
        raise TrainingDiverged(f"{exc}; in {cfg.title}", _result(run, rows, snapshot, start, "diverged")) from None
    if prior is not None:  # online empirical Bayes (prior_fit="marglik")
        prior.end_of_epoch(model, data, epoch, run.mask)
    # -- evaluate and record the epoch's row
    row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
           **evaluation_columns(model, data), "sparsity": sparsity(model, cfg.prune_biases),
           **step.columns(), "seconds": time.perf_counter() - t0}
    return {c: row[c] for c in HISTORY_COLUMNS}


# ------------------------------------------------------------------ the run
def train(
    cfg: RunConfig,
    callbacks: Iterable[Any] = (),
    progress: bool = True,
    data: Optional[TensorDataset] = None,
    *,
    criterion: Any = None,
    evaluator: Any = None,
) -> RunResult:
    """Train ``cfg`` and return a :class:`RunResult`.

    ``callbacks`` receive each history row as soon as it exists (a plain function gets the
    row; an :class:`EpochCallback` gets epoch, model, optimizer and row); one may raise
    :class:`StopTraining`.  ``progress`` shows a tqdm bar over epochs.  ``data`` overrides
    loading (tests); ``criterion`` (a scores function) and ``evaluator`` replace the registered
    ones of ``cfg``.  Raises :class:`TrainingDiverged` on a NaN/inf loss and
    :class:`TrainingInterrupted` on Ctrl-C, each with the finished epochs in ``.result``.
    """
    start = time.perf_counter()
    run = build_run(cfg, data, criterion=criterion, evaluator=evaluator)
    model, opt, data = run.model, run.optimizer, run.data
    prior = run.prior
    rows: list[dict[str, Any]] = []
    snapshot, bar = Snapshot(model), ProgressBar(cfg, progress)
    callbacks = [snapshot, bar, *callbacks]
    status = "ok"
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            # -- train: one pass of Adam over the shuffled training set, pruned weights held at zero (and the
            #    prior's penalty in every step under train_prior="map")
            train_loss, train_acc = train_epoch(model, opt, data, cfg.batch_size, run.g_data, run.mask, prior)
            rows.append(end_of_epoch(run, epoch, train_loss, train_acc, t0, rows, snapshot, start))
            # -- callbacks: the snapshot, the progress bar, then the caller's (one may stop the run)
            try:
                for cb in callbacks:
                    _call(cb, epoch, model, opt, rows[-1])
            except StopTraining:
                status = "stopped"
                break
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"interrupted after {len(rows)} finished epochs of {cfg.title}",
                                  _result(run, rows, snapshot, start, "interrupted")) from None
    finally:
        bar.close()
    return _result(run, rows, snapshot, start, status)
