"""Pruning criteria: a criterion gives scores, one shared function turns scores into a mask.

A criterion is a function ``scores(model, ctx) -> {param name: tensor}`` (or an object
with such a ``scores`` method, as Torch-Pruning's ``Importance``), registered in
:data:`~bayesprune.core.registry.CRITERIA`.  Low scores are pruned first.  ``ctx``
(:class:`ScoreContext`) carries the tensors the step may prune, the step's target, a
seeded generator and the training data, so a criterion may use gradients or curvature.

:func:`mask_from_scores` is the one place a mask is made, so every criterion works per
layer and with ``scope="global"``.  A score tensor has the weight's shape (one score per
weight) or a broadcastable one such as ``(rows, 1)`` (one score per neuron or filter:
whole rows are pruned, and the layer's fraction of *rows* is the target).

Adding a criterion is one function and one registry line; it then is a ``RunConfig``
method, with its ``bayes-`` twin, in the CLI and in the dashboard::

    @CRITERIA.register("largest")
    def largest(model, ctx):
        return {name: -w.detach().abs() for name, w in ctx.targets.items()}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .pruning import Mask, apply_mask, num_to_prune, prunable_parameters, pruning_targets
from .registry import CRITERIA

if TYPE_CHECKING:
    from .config import RunConfig
    from .data import TensorDataset

Scores = dict[str, torch.Tensor]
Criterion = Union[Callable[[nn.Module, "ScoreContext"], Mapping[str, torch.Tensor]], Any]


@dataclass
class ScoreContext:
    """What a criterion may look at besides the model."""

    targets: dict[str, torch.Tensor]  #: the tensors this step may prune (name -> live parameter)
    sparsity: float  #: the step's target fraction of zeros
    scope: str = "layer"  #: "layer" or "global" (how the scores will be compared)
    generator: Optional[torch.Generator] = None  #: seeded, for criteria that draw (CPU generator)
    data: Optional["TensorDataset"] = None  #: the training data, for criteria that need gradients or curvature
    extra: dict[str, Any] = field(default_factory=dict)  #: anything else a caller hands to its own criterion
    #: the precision delta = 1/sigma^2 of the run's Gaussian weight prior now (the MAP prior's sigma, refitted
    #: under prior_fit="marglik"; else 1/prior_sigma^2); None outside a run, or where the gate fits it per step
    prior_precision: Optional[float] = None
    config: Optional["RunConfig"] = None  #: the run's config (curvature settings, seed), None outside a run


def scores_function(criterion: Union[str, Criterion]) -> Callable[[nn.Module, ScoreContext], Mapping[str, torch.Tensor]]:
    if isinstance(criterion, str):
        criterion = CRITERIA.lookup(criterion)
    fn = getattr(criterion, "scores", criterion)
    if not callable(fn):
        raise TypeError(f"criterion {criterion!r} is invalid: allowed a registered name, a function "
                        "(model, ctx) -> scores, or an object with such a scores method")
    return fn


# ------------------------------------------------------------------ scores -> mask
def _keep_top(flat: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Bool mask over ``flat`` keeping all but the ``n_prune`` lowest scores."""
    keep = flat.numel() - n_prune
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if keep > 0:
        mask[torch.topk(flat, keep, largest=True, sorted=False).indices] = True
    return mask


def _structured(score: torch.Tensor, shape: Optional[torch.Size]) -> bool:
    return shape is not None and score.shape != shape


def mask_from_scores(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    scope: str = "layer",
    current_mask: Optional[Mapping[str, torch.Tensor]] = None,
) -> Mask:
    """Prune the lowest scores: round(n * sparsity) of each tensor (``layer``) or of all of them (``global``).

    ``current_mask`` is what is pruned now (False = pruned): those weights stay pruned and
    count towards the target, so a step only adds zeros (the paper's Algorithm 2).  A score
    per row (shape ``(rows, 1, ...)``) needs ``current_mask`` for the weight's shape.
    """
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity={sparsity!r} is invalid: allowed a number >= 0 and < 1")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope={scope!r} is invalid: allowed layer, global")
    cur = dict(current_mask) if current_mask is not None else {}
    ranked: dict[str, torch.Tensor] = {}
    for name, s in scores.items():
        s = s.detach().to(torch.float64)
        c = cur.get(name)
        if c is not None and s.shape == c.shape:
            s = s.masked_fill(~c.bool(), -torch.inf)  # pruned weights go first
        elif c is not None and s.dim() != c.dim():
            raise ValueError(f"scores[{name!r}] has shape {tuple(s.shape)}: allowed the weight's shape "
                             f"{tuple(c.shape)} or a broadcastable one such as {(c.shape[0],) + (1,) * (c.dim() - 1)}")
        ranked[name] = s
    if scope == "layer":
        keep = {k: _keep_top(s.flatten(), num_to_prune(s.numel(), sparsity)).view_as(s) for k, s in ranked.items()}
    else:
        flat = torch.cat([s.flatten() for s in ranked.values()])
        keep_flat, keep, start = _keep_top(flat, num_to_prune(flat.numel(), sparsity)), {}, 0
        for k, s in ranked.items():
            keep[k] = keep_flat[start : start + s.numel()].view_as(s)
            start += s.numel()
    out = Mask()
    for k, m in keep.items():
        c = cur.get(k)
        if c is not None:
            m = m.expand_as(c).clone() & c.bool() if _structured(m, c.shape) else m & c.bool()
        out[k] = m
    return out


# ------------------------------------------------------------------ the built-in criteria
@CRITERIA.register("magnitude")
def magnitude_scores(model: nn.Module, ctx: ScoreContext) -> Scores:
    """|w|: the smallest weights go first."""
    return {k: w.detach().abs() for k, w in ctx.targets.items()}


@CRITERIA.register("random")
def random_scores(model: nn.Module, ctx: ScoreContext) -> Scores:
    """A random order of the non-zero weights (the paper's Algorithm 2): the first k' of a permutation go.

    Per layer, a tensor that the step leaves as it is draws nothing, so the generator's stream
    is the one of the paper's procedure (and of earlier versions of this package).
    """
    out = {}
    for k, w in ctx.targets.items():
        flat = w.detach().flatten()
        n = flat.numel()
        nonzero = torch.nonzero(flat != 0, as_tuple=False).flatten()
        s = torch.full((n,), -1.0, dtype=torch.float64, device=flat.device)
        extra = num_to_prune(n, ctx.sparsity) - (n - nonzero.numel())
        if ctx.scope == "global" or extra > 0:
            perm = torch.randperm(nonzero.numel(), generator=ctx.generator).to(nonzero.device)
            s[nonzero[perm]] = torch.arange(nonzero.numel(), dtype=torch.float64, device=flat.device)
        else:
            s[nonzero] = 0.0
        out[k] = s.view_as(w)
    return out


@CRITERIA.register("neuron")
def neuron_scores(model: nn.Module, ctx: ScoreContext) -> Scores:
    """The L2 norm of each output neuron (row of a Linear weight, filter of a Conv): whole rows go."""
    out = {}
    for k, w in ctx.targets.items():
        rows = w.shape[0]
        out[k] = w.detach().reshape(rows, -1).norm(dim=1).view(rows, *([1] * (w.dim() - 1)))
    return out


# ------------------------------------------------------------------ models
def compute_mask(
    model: nn.Module,
    criterion: Union[str, Criterion],
    sparsity: float,
    scope: str = "layer",
    generator: Optional[torch.Generator] = None,
    *,
    biases: bool = False,
    skip: Sequence[str] = (),
    data: Optional["TensorDataset"] = None,
    prior_precision: Optional[float] = None,
    config: Optional["RunConfig"] = None,
) -> Mask:
    """The mask ``criterion`` gives every pruning target (see :func:`~bayesprune.core.pruning.pruning_targets`).

    ``criterion``: a registered name (``"magnitude"``, ``"random"``, ``"neuron"``, ...) or a
    scores function.  Weights that are zero now stay pruned and count towards the target.
    ``data``, ``prior_precision`` and ``config`` go to the criterion in its :class:`ScoreContext`.
    """
    fn = scores_function(criterion)
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity={sparsity!r} is invalid: allowed a number >= 0 and < 1")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope={scope!r} is invalid: allowed layer, global")
    targets = pruning_targets(model, biases, skip)
    ctx = ScoreContext(targets, float(sparsity), scope, generator, data, prior_precision=prior_precision,
                       config=config)
    scores = dict(fn(model, ctx))
    if set(scores) != set(targets):
        raise ValueError(f"criterion {criterion!r} scored {sorted(scores)}: allowed exactly the targets "
                         f"{sorted(targets)}")
    current = {k: w.detach() != 0 for k, w in targets.items()}
    return mask_from_scores({k: scores[k] for k in targets}, sparsity, scope, current)


def pruned_copy(
    model: nn.Module,
    criterion: Union[str, Criterion],
    sparsity: float,
    seed: int = 0,
    *,
    generator: Optional[torch.Generator] = None,
    scope: str = "layer",
    biases: bool = False,
    skip: Sequence[str] = (),
) -> nn.Module:
    """A deep copy of ``model`` pruned by ``criterion`` to ``sparsity``; the original is untouched.

    Random criteria draw from ``generator``, or from a generator seeded with ``seed``.
    """
    clone = copy.deepcopy(model)
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    apply_mask(clone, compute_mask(clone, criterion, sparsity, scope, g, biases=biases, skip=skip))
    return clone


def _one(criterion: str, weight: torch.Tensor, sparsity: float, generator, current: Optional[torch.Tensor]):
    ctx = ScoreContext({"w": weight}, float(sparsity), "layer", generator)
    scores = scores_function(criterion)(nn.Module(), ctx)
    return mask_from_scores(scores, sparsity, "layer", None if current is None else {"w": current})["w"]


def magnitude_mask(weight: torch.Tensor, sparsity: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One tensor's magnitude mask: all but the k = round(n*r) smallest |w| (existing zeros go first)."""
    return _one("magnitude", weight, sparsity, generator, None)


def random_mask(weight: torch.Tensor, sparsity: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One tensor's random mask: zero k' = k - n_zero randomly chosen non-zero weights (Algorithm 2)."""
    return _one("random", weight, sparsity, generator, weight.detach() != 0)


def neuron_mask(weight: torch.Tensor, sparsity: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One tensor's neuron mask: round(rows * r) whole rows (filters) of lowest L2 norm."""
    return _one("neuron", weight, sparsity, generator, torch.ones_like(weight, dtype=torch.bool))


def prune_magnitude(model: nn.Module, sparsity: float, scope: str = "layer") -> Mask:
    """Zero the smallest-magnitude weights of each layer (or globally); return the mask."""
    mask = compute_mask(model, "magnitude", sparsity, scope)
    apply_mask(model, mask)
    return mask


def prune_random(model: nn.Module, sparsity: float, generator: Optional[torch.Generator] = None) -> Mask:
    """Zero random non-zero weights of each layer until it holds round(n*r) zeros."""
    mask = compute_mask(model, "random", sparsity, "layer", generator)
    apply_mask(model, mask)
    return mask


def prune_neurons(model: nn.Module, sparsity: float, skip_last: bool = True) -> Mask:
    """Remove the weakest neurons of every layer (the output layer's classes are kept by default)."""
    names = list(prunable_parameters(model))
    mask = compute_mask(model, "neuron", sparsity, skip=names[-1:] if skip_last else ())
    apply_mask(model, mask)
    return mask
