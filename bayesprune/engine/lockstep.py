"""Train many runs as one: K compatible configs advanced in lockstep as one stacked model.

Why: the paper's networks are small.  A batch of 64 through 784-300-100-10 does not fill two cores, and on a
GPU one such step is a handful of launch-bound kernels; a grid (Table 1: 105 runs a block) runs them one
after the other.  Stacking K members turns K small matrix products into one batched product of the same
arithmetic, and K optimizer calls into one.

How, per training step: every member draws its own mini-batch from its own generator (the sequential run's
order; a gather of K index batches), one stacked forward and backward computes every member's gradient
(``sum_k mean CE_k``: member k's gradient is its own loss's), one call of torch's Adam (the same functional
``adam`` kernel, fused where the single run's is) updates every member's slice with that member's own step
count, and each member's own mask is re-applied.  Adam and masking are elementwise, so this is K independent
Adams.  Between epochs every member is copied back into its ordinary model and optimizer (the ``Run`` that
:func:`~bayesprune.engine.training.build_run` made for it) and runs exactly the single run's end of epoch
(:func:`~bayesprune.engine.training.end_of_epoch`: the divergence check, the pruning step with its gate and
Bayes factor, the prior's refit, the evaluation and the history row), then is copied into the stack again.
So one-shot and gradual schedules, the paper and Laplace gates and their fine-tuning steps all work per
member unchanged.  A member that diverges, is stopped by a callback, fails or finishes its epochs leaves the
group; the others go on, and ``on_done`` receives each result as soon as it exists (a sweep writes its run
file there, so a SIGKILL loses only the unfinished members).

Which batched op (measured in ``benchmarks/bench_lockstep.py``, results in ``docs/results/performance.md``):
the FCN runs one ``baddbmm`` per layer, which was faster than ``torch.func.vmap`` over ``functional_call``
(vmap lowers each ``linear`` to the same batched product plus reshapes, with more Python per step).  The
CNN runs each convolution as one grouped convolution over the K members, written by hand (``_grouped_conv``):
at K = 16 it trained 1.7x faster than ``vmap(functional_call)``, whose batching rule makes the same grouped
convolution but cannot use the channels-last path.  Any other model (a registered one) runs ``vmap``.

Float equivalence: a batched product may sum in another order than the single run's ``addmm`` (MKL/oneDNN
choose their blocking per shape), so a member's numbers equal its sequential run's to float rounding that
grows with training; ``tests/test_lockstep.py`` states the tolerance it measured.  Adam's update, the masks,
the batch order, the pruning masks' random draws and every gate decision are the single run's code.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..core.config import RunConfig
from ..core.data import TensorDataset, batch_indices
from ..core.models import CNN, FCN, Conv2d, channels_last
from .training import (
    Run,
    RunResult,
    Snapshot,
    StopTraining,
    TrainingDiverged,
    _call,
    _result,
    build_run,
    end_of_epoch,
)

#: The fields every member of a group must share, whatever the model: one data tensor, one batch shape, one device.
SHARED_FIELDS: tuple[str, ...] = ("dataset", "train_size", "data_dir", "model", "batch_size", "device")
#: The fields that give a model's shape (members' parameters are stacked, so their shapes must agree).
SHAPE_FIELDS: dict[str, tuple[str, ...]] = {"fcn": ("fcn_hidden",), "cnn": ("cnn_hidden",)}
#: Values a member must have: the MAP prior's penalty would need the stacked parameters inside MapPrior.
REQUIRED: dict[str, Any] = {"train_prior": "none"}


def group_fields(cfg: RunConfig) -> tuple[str, ...]:
    """The fields that must be equal within a lockstep group with ``cfg`` (model shape included)."""
    return SHARED_FIELDS + SHAPE_FIELDS.get(cfg.model, ("fcn_hidden", "cnn_hidden"))


def group_key(cfg: RunConfig, *extra: str) -> tuple:
    """A hashable key: configs with equal keys may train in one group (``extra`` fields too, e.g. ``epochs``)."""
    return tuple((f, cfg.resolved_device() if f == "device" else getattr(cfg, f))
                 for f in group_fields(cfg) + tuple(extra))


def check_compatible(configs: Sequence[RunConfig]) -> None:
    """Raise ``ValueError`` naming the field and values that keep ``configs`` from one group."""
    if not configs:
        raise ValueError("train_many() needs at least one RunConfig")
    for cfg in configs:
        if not isinstance(cfg, RunConfig):
            raise TypeError(f"train_many() needs RunConfig objects, got {type(cfg).__name__}")
        for name, allowed in REQUIRED.items():
            if getattr(cfg, name) != allowed:
                raise ValueError(f"RunConfig.{name}={getattr(cfg, name)!r} cannot train in lockstep (allowed: "
                                 f"{allowed!r}); train it on its own with bayesprune.train")
    first = configs[0]
    for f in group_fields(first):
        values = {repr(first.resolved_device() if f == "device" else getattr(first, f))}
        for cfg in configs[1:]:
            values.add(repr(cfg.resolved_device() if f == "device" else getattr(cfg, f)))
        if len(values) > 1:
            raise ValueError(f"RunConfig.{f} differs within the lockstep group ({', '.join(sorted(values))}); "
                             f"a group needs one value of each of {list(group_fields(first))}")


# ------------------------------------------------------------------ stacked forward passes
def _fcn_forward(model: FCN) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """K FCNs as one ``baddbmm`` per layer: x (K, B, ...) -> logits (K, B, classes)."""
    hidden, out = list(model.hidden_names), model.out_name

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)
        for name in hidden:
            x = torch.relu(torch.baddbmm(p[f"{name}.bias"].unsqueeze(1), x, p[f"{name}.weight"].transpose(1, 2)))
        return torch.baddbmm(p[f"{out}.bias"].unsqueeze(1), x, p[f"{out}.weight"].transpose(1, 2))

    return forward


def _grouped_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, k: int, padding) -> torch.Tensor:
    """K members' convolutions as one grouped convolution: x (B, K*C, H, W), w (K, O, C, kh, kw)."""
    if x.device.type == "cpu":  # oneDNN's NHWC kernels, as the single run's Conv2d (core.models)
        x = channels_last(x)
    return F.conv2d(x, w.flatten(0, 1), b.flatten(), padding=padding, groups=k)


def _cnn_forward(model: CNN) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """K CNNs: each convolution one grouped convolution (members side by side as channel groups), the fully
    connected layers one ``baddbmm`` each: x (K, B, C, H, W) -> logits (K, B, classes)."""
    pad1, pad2, pool = model.conv1.padding, model.conv2.padding, model.pool

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k, b = x.shape[:2]
        x = x.transpose(0, 1).flatten(1, 2)  # (B, K*C, H, W)
        x = torch.relu(pool(_grouped_conv(x, p["conv1.weight"], p["conv1.bias"], k, pad1)))
        x = torch.relu(pool(_grouped_conv(x, p["conv2.weight"], p["conv2.bias"], k, pad2)))
        x = x.reshape(b, k, -1).transpose(0, 1)  # (K, B, C*H*W): each member's flatten order, as in CNN.forward
        x = torch.relu(torch.baddbmm(p["fc1.bias"].unsqueeze(1), x, p["fc1.weight"].transpose(1, 2)))
        return torch.baddbmm(p["fc2.bias"].unsqueeze(1), x, p["fc2.weight"].transpose(1, 2))

    return forward


def _vmap_forward(model: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """Any model: ``vmap`` over ``functional_call`` (torch turns a convolution into a grouped one).

    vmap cannot query channels-last memory, so a copy of the model with the plain NCHW path is called.
    """
    from torch.func import functional_call, vmap

    template = copy.deepcopy(model)
    for m in template.modules():
        if isinstance(m, Conv2d):
            m.fast_cpu = False
    return vmap(lambda p, x: functional_call(template, p, (x,)))


#: The stacked forward of each built-in architecture (``auto``); any other model uses ``vmap``.
BATCHED: dict[type, Callable[[Any], Callable]] = {FCN: _fcn_forward, CNN: _cnn_forward}


def stacked_forward(model: nn.Module, how: str = "auto"):
    """The stacked forward of ``model``'s architecture: ``how`` is ``batched`` (FCN: ``baddbmm``; CNN: grouped
    convolutions), ``vmap`` (any model) or ``auto`` (``batched`` where the architecture has one)."""
    if how not in ("auto", "batched", "vmap"):
        raise ValueError(f"how={how!r} is invalid: allowed 'auto', 'batched', 'vmap'")
    make = BATCHED.get(type(model))
    if how == "batched" and make is None:
        raise ValueError(f"how='batched' stacks {[t.__name__ for t in BATCHED]} only, not {type(model).__name__}")
    return make(model) if how != "vmap" and make is not None else _vmap_forward(model)


# ------------------------------------------------------------------ members and their stack
@dataclass
class _Member:
    index: int
    run: Run
    snapshot: Snapshot
    start: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.run.model.named_parameters()]


def _adam_state(opt: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, Any]:
    """Adam's state of ``p``, created as ``torch.optim.Adam`` creates it before its first step."""
    from torch.optim.optimizer import _get_scalar_dtype

    st = opt.state[p]
    if not st:
        group = opt.param_groups[0]
        if group.get("fused") or group.get("capturable"):
            st["step"] = torch.zeros((), dtype=_get_scalar_dtype(is_fused=group["fused"]), device=p.device)
        else:
            st["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return st


class _Stack:
    """The group's members as stacked leaves (K, ...) with stacked Adam moments, built from their models."""

    def __init__(self, members: list[_Member]):
        self.members = members
        names = members[0].names
        models = [dict(m.run.model.named_parameters()) for m in members]
        opts = [m.run.optimizer for m in members]
        with torch.no_grad():
            self.params = {n: torch.stack([mp[n].detach() for mp in models]).requires_grad_() for n in names}
            states = [[_adam_state(o, mp[n]) for n in names] for o, mp in zip(opts, models)]
            self.exp_avg = {n: torch.stack([st[j]["exp_avg"] for st in states]) for j, n in enumerate(names)}
            self.exp_avg_sq = {n: torch.stack([st[j]["exp_avg_sq"] for st in states]) for j, n in enumerate(names)}
        # one call of torch's functional Adam per distinct hyper-parameter set (normally one), over the members' slices;
        # where every member has the same hyper-parameters and step count (no Laplace fine-tuning yet), one call
        # over the stacked tensors themselves: the same elementwise update, K times fewer (and larger) tensors
        self.calls: dict[tuple, dict[str, list]] = {}
        self.whole: Optional[dict[str, Any]] = None
        hypers = {_hyper(o.param_groups[0]) for o in opts}
        counts = {float(st[j]["step"]) for st in states for j in range(len(names))}
        if len(hypers) == 1 and len(counts) == 1:
            first = states[0][0]["step"]
            self.whole = {"hyper": hypers.pop(), "steps": [first.clone() for _ in names],
                          "member_steps": [st[j]["step"] for st in states for j in range(len(names))]}
        for k, (o, st) in enumerate(zip(opts, states)):
            hyper = _hyper(o.param_groups[0])
            call = self.calls.setdefault(hyper, {"params": [], "grads": [], "exp_avgs": [], "exp_avg_sqs": [],
                                                 "steps": []})
            for j, n in enumerate(names):
                call["params"].append((n, k))
                call["exp_avgs"].append(self.exp_avg[n][k])
                call["exp_avg_sqs"].append(self.exp_avg_sq[n][k])
                call["steps"].append(st[j]["step"])
        # each member's own mask (ones where a member has none on a tensor), as float, built once per epoch
        self.masks: dict[str, torch.Tensor] = {}
        keyed = [m.run.mask or {} for m in members]
        for n in sorted({n for mk in keyed for n in mk}):
            p = self.params[n]
            self.masks[n] = torch.stack([mk[n].to(p.dtype) if n in mk else torch.ones_like(p[0]) for mk in keyed])

    def adam_step(self) -> None:
        """One Adam step of every member: torch's own update rule, each slice with its member's step count."""
        from torch.optim.adam import adam

        def call_adam(hyper, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
            lr, betas, eps, wd, amsgrad, maximize, foreach, fused, capturable, differentiable, decoupled = hyper
            extra = {"decoupled_weight_decay": True} if decoupled else {}
            adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=foreach, capturable=capturable,
                 differentiable=differentiable, fused=fused, grad_scale=None, found_inf=None, has_complex=False,
                 amsgrad=amsgrad, beta1=betas[0], beta2=betas[1], lr=lr, weight_decay=wd, eps=eps, maximize=maximize,
                 **extra)

        with torch.no_grad():
            if self.whole is not None:
                names = list(self.params)
                call_adam(self.whole["hyper"], [self.params[n].detach() for n in names],
                          [self.params[n].grad for n in names], [self.exp_avg[n] for n in names],
                          [self.exp_avg_sq[n] for n in names], self.whole["steps"])
                torch._foreach_add_(self.whole["member_steps"], 1.0)
            else:
                for hyper, call in self.calls.items():
                    call_adam(hyper, [self.params[n].detach()[k] for n, k in call["params"]],
                              [self.params[n].grad[k] for n, k in call["params"]], call["exp_avgs"],
                              call["exp_avg_sqs"], call["steps"])
            for n, m in self.masks.items():
                self.params[n].detach().mul_(m)

    def write_back(self) -> None:
        """Copy every member's slice into its own model and Adam state (in place: every reference stays valid)."""
        with torch.no_grad():
            for k, m in enumerate(self.members):
                mp = dict(m.run.model.named_parameters())
                for n, p in mp.items():
                    p.copy_(self.params[n][k])
                    st = m.run.optimizer.state[p]
                    st["exp_avg"].copy_(self.exp_avg[n][k])
                    st["exp_avg_sq"].copy_(self.exp_avg_sq[n][k])


def _hyper(g: dict[str, Any]) -> tuple:
    """An Adam param group's hyper-parameters, in the order ``adam_step`` unpacks them."""
    return (g["lr"], g["betas"], g["eps"], g["weight_decay"], g["amsgrad"], g["maximize"], g.get("foreach"),
            g.get("fused"), g.get("capturable", False), g.get("differentiable", False),
            g.get("decoupled_weight_decay", False))


def _batch_orders(members: list[_Member]) -> list[list[torch.Tensor]]:
    """Each member's epoch of index batches, from its own generator (exactly the sequential run's draw)."""
    return [list(batch_indices(m.run.data.n_train, m.run.cfg.batch_size, m.run.g_data, m.run.data.x_train.device))
            for m in members]


def _train_pass(stack: _Stack, forward, members: list[_Member]) -> list[tuple[float, float]]:
    """One epoch of lockstep Adam steps; each member's (mean cross-entropy, accuracy), as ``train_epoch``."""
    orders = _batch_orders(members)
    data0 = members[0].run.data
    shared = all(m.run.data.x_train is data0.x_train for m in members)
    k_members = len(members)
    device = data0.x_train.device
    loss_sum = torch.zeros(k_members, dtype=torch.float64, device=device)
    correct = torch.zeros(k_members, dtype=torch.int64, device=device)
    count = 0
    for step in range(len(orders[0])):
        idx = torch.stack([o[step] for o in orders])  # (K, B)
        b = idx.shape[1]
        if shared:
            flat = idx.reshape(-1)
            xb = data0.x_train.index_select(0, flat).view(k_members, b, *data0.x_train.shape[1:])
            yb = data0.y_train.index_select(0, flat).view(k_members, b)
        else:
            xb = torch.stack([m.run.data.x_train.index_select(0, i) for m, i in zip(members, idx)])
            yb = torch.stack([m.run.data.y_train.index_select(0, i) for m, i in zip(members, idx)])
        logits = forward(stack.params, xb)
        losses = F.cross_entropy(logits.flatten(0, 1), yb.reshape(-1), reduction="none").view(k_members, b).mean(1)
        for p in stack.params.values():
            p.grad = None
        losses.sum().backward()
        stack.adam_step()
        with torch.no_grad():
            loss_sum.add_(losses.detach(), alpha=b)
            correct.add_((logits.detach().argmax(2) == yb).sum(1))
        count += b
    return [(float(s) / count, float(c) / count) for s, c in zip(loss_sum, correct)]


# ------------------------------------------------------------------ the group
def train_many(
    configs: Sequence[RunConfig],
    callbacks: Iterable[Any] = (),
    data: Optional[TensorDataset] = None,
    *,
    on_done: Optional[Callable[[int, Any], None]] = None,
    how: str = "auto",
    criterion: Any = None,
    evaluator: Any = None,
) -> list[Any]:
    """Train ``configs`` as one lockstep group; a list of their :class:`RunResult` in the same order.

    Each member is the run ``bayesprune.train(cfg)`` would train: its own seed, batch order, mask, schedule and
    gate (see the module docstring; numbers equal to float rounding).  The configs must share
    :func:`group_fields` (an error names the field that differs); methods, sparsities, seeds, gates, Bayes
    factors, schedules, epochs and learning rates may differ.  ``callbacks`` are called for every member's rows
    as in ``train`` (one may raise :class:`StopTraining`: that member stops).  ``on_done(i, result)`` is called
    as soon as member ``i`` ends: a :class:`RunResult` (status ``ok``, ``stopped`` or ``diverged``), or the
    exception that ended it (then it is also the list's entry; the other members go on).  ``how``: ``auto``,
    ``bmm`` or ``vmap`` (see :func:`stacked_forward`).  ``criterion`` and ``evaluator`` are as in ``train``.
    A ``KeyboardInterrupt`` propagates; members already ended were handed to ``on_done``.
    """
    configs = list(configs)
    check_compatible(configs)
    callbacks = list(callbacks)
    results: list[Any] = [None] * len(configs)

    def finish(i: int, outcome: Any) -> None:
        results[i] = outcome
        if on_done is not None:
            on_done(i, outcome)

    members: list[_Member] = []
    for i, cfg in enumerate(configs):
        start = time.perf_counter()
        try:
            run = build_run(cfg, data, criterion=criterion, evaluator=evaluator)
        except Exception as exc:  # this member cannot start (bad data, too large): the others can
            finish(i, exc)
            continue
        members.append(_Member(i, run, Snapshot(run.model), start))
    if not members:
        return results
    forward = stacked_forward(members[0].run.model, how)
    while members:
        t0 = time.perf_counter()
        stack = _Stack(members)
        passes = _train_pass(stack, forward, members)
        stack.write_back()
        still: list[_Member] = []
        for m, (train_loss, train_acc) in zip(members, passes):
            m.epoch += 1
            outcome = _end_member_epoch(m, train_loss, train_acc, t0, callbacks)
            if outcome is None:
                still.append(m)
            else:
                finish(m.index, outcome)
        members = still
    return results


def _end_member_epoch(m: _Member, train_loss: float, train_acc: float, t0: float,
                      callbacks: list[Any]) -> Optional[Any]:
    """The single run's end of epoch for one member; its final outcome if it leaves the group, else None."""
    run = m.run
    try:
        m.rows.append(end_of_epoch(run, m.epoch, train_loss, train_acc, t0, m.rows, m.snapshot, m.start))
    except TrainingDiverged as exc:
        return exc.result
    except Exception as exc:
        return exc
    try:
        for cb in [m.snapshot, *callbacks]:
            _call(cb, m.epoch, run.model, run.optimizer, m.rows[-1])
    except StopTraining:
        return _result(run, m.rows, m.snapshot, m.start, "stopped")
    if m.epoch >= run.cfg.epochs:
        return _result(run, m.rows, m.snapshot, m.start, "ok")
    return None


def run_epochs_per_second(results: Sequence[RunResult], seconds: float) -> float:
    """Member-epochs trained per wall second (the benchmark's unit)."""
    epochs = sum(len(r.history) for r in results if isinstance(r, RunResult))
    return epochs / seconds if seconds > 0 and math.isfinite(seconds) else float("nan")
