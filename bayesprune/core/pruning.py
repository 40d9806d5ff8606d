"""Masks and the two pruning strategies of the paper.

Conventions (shared with ``torch.nn.utils.prune``): a mask has the shape of the
weight it belongs to, 1/True = keep, 0/False = pruned; masks are keyed by the
parameter's *name* (``"fc1.weight"``).  Prunable tensors are the weights of
``Linear`` and ``Conv2d`` layers, never biases.  Sparsity is always *measured*
from the weights (exact zeros), never taken from a mask or a request.

The strategies are pure functions ``(weight, sparsity, generator) -> mask`` in
:data:`STRATEGIES`; pruning a model computes masks then multiplies them in.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import nn

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_parameters(model: nn.Module, biases: bool = False) -> dict[str, torch.Tensor]:
    """``{"fc1.weight": tensor, ...}`` for every Linear/Conv weight, in module order.

    ``biases=True`` adds each such layer's bias (``"fc1.bias"``), for runs whose
    sparsity counts biases too (``RunConfig.prune_biases``).
    """
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES):
            prefix = f"{name}." if name else ""
            # Under torch.nn.utils.prune the live tensor is weight_orig * weight_mask.
            out[f"{prefix}weight"] = module.weight
            if biases and module.bias is not None:
                out[f"{prefix}bias"] = module.bias
    return out


def output_layer_names(model: nn.Module) -> tuple[str, ...]:
    """The parameter names of the last prunable layer (the logits), weight and bias."""
    last = list(prunable_parameters(model))[-1].rpartition(".")[0]
    prefix = f"{last}." if last else ""
    return (f"{prefix}weight", f"{prefix}bias")


def pruning_targets(model: nn.Module, biases: bool = False, skip: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The tensors a pruning step may zero: prunable weights (and biases), minus ``skip``."""
    return {k: v for k, v in prunable_parameters(model, biases).items() if k not in skip}


def num_to_prune(n: int, sparsity: float) -> int:
    """k = round(n * r): the number of zeros a tensor of n weights should hold."""
    return int(round(n * float(sparsity)))


# ------------------------------------------------------------------ strategies
def magnitude_mask(weight: torch.Tensor, sparsity: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Keep all but the k = round(n*r) smallest |w| (existing zeros go first)."""
    flat = weight.detach().abs().flatten()
    n = flat.numel()
    keep = n - num_to_prune(n, sparsity)
    mask = torch.zeros(n, dtype=torch.bool, device=weight.device)
    if keep > 0:
        mask[torch.topk(flat, keep, largest=True, sorted=False).indices] = True
    return mask.view_as(weight)


def random_mask(weight: torch.Tensor, sparsity: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero k' = k - n_zero randomly chosen non-zero weights (the paper's Algorithm 2).

    Existing zeros count towards k and stay pruned; the draw uses ``generator``
    (a CPU ``torch.Generator``) so it is reproducible on any device.
    """
    flat = weight.detach().flatten()
    n = flat.numel()
    nonzero = torch.nonzero(flat != 0, as_tuple=False).flatten()
    k_extra = num_to_prune(n, sparsity) - (n - nonzero.numel())
    mask = (flat != 0).clone()
    if k_extra > 0:
        pick = torch.randperm(nonzero.numel(), generator=generator)[:k_extra].to(nonzero.device)
        mask[nonzero[pick]] = False
    return mask.view_as(weight)


Strategy = Callable[[torch.Tensor, float, Optional[torch.Generator]], torch.Tensor]

#: name -> pure mask function; add your own strategy here.
STRATEGIES: dict[str, Strategy] = {"magnitude": magnitude_mask, "random": random_mask}


# ------------------------------------------------------------------ Mask
class Mask(dict):
    """``{param name: bool tensor}`` with sparsity properties (OpenLTH style)."""

    @classmethod
    def ones_like(cls, model: nn.Module) -> "Mask":
        return cls({k: torch.ones_like(v, dtype=torch.bool) for k, v in prunable_parameters(model).items()})

    @classmethod
    def from_weights(cls, model: nn.Module) -> "Mask":
        """The mask the weights imply: True where the weight is non-zero."""
        return cls({k: (v.detach() != 0) for k, v in prunable_parameters(model).items()})

    @property
    def num_total(self) -> int:
        return sum(int(m.numel()) for m in self.values())

    @property
    def num_pruned(self) -> int:
        return sum(int((~m.bool()).sum()) for m in self.values())

    @property
    def sparsity(self) -> float:
        total = self.num_total
        return self.num_pruned / total if total else 0.0

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity

    def layer_sparsity(self) -> dict[str, float]:
        return {k: float((~m.bool()).float().mean()) for k, m in self.items()}

    def __and__(self, other: Mapping[str, torch.Tensor]) -> "Mask":
        return Mask({k: self[k].bool() & other[k].bool() for k in self})

    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights in place."""
        apply_mask(model, self)


def compute_mask(
    model: nn.Module,
    strategy: str,
    sparsity: float,
    scope: str = "layer",
    generator: Optional[torch.Generator] = None,
    *,
    biases: bool = False,
    skip: Sequence[str] = (),
) -> Mask:
    """Masks for every pruning target (see :func:`pruning_targets`), per layer or (magnitude only) globally."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is invalid: allowed one of {', '.join(STRATEGIES)}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity={sparsity!r} is invalid: allowed a number >= 0 and < 1")
    params = pruning_targets(model, biases, skip)
    if scope == "layer":
        return Mask({k: STRATEGIES[strategy](w, sparsity, generator) for k, w in params.items()})
    if scope != "global":
        raise ValueError(f"scope={scope!r} is invalid: allowed layer, global")
    if strategy != "magnitude":
        # Global random pruning is the same, in expectation, as layer-wise random pruning.
        raise ValueError(f"scope='global' is defined for magnitude pruning only, not {strategy!r}")
    flat = torch.cat([w.detach().abs().flatten() for w in params.values()])
    keep_flat = magnitude_mask(flat, sparsity)
    out, start = Mask(), 0
    for k, w in params.items():
        out[k] = keep_flat[start : start + w.numel()].view_as(w)
        start += w.numel()
    return out


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """w *= mask for every masked tensor, in place (keeps the optimizer's references)."""
    params = prunable_parameters(model, biases=True)
    for key, m in mask.items():
        if key not in params:
            raise KeyError(f"mask names {key!r}, which is not a prunable weight or bias of this model")
        params[key].mul_(m.to(params[key].dtype))


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


# ------------------------------------------------------------------ measuring
def sparsity(model: nn.Module, biases: bool = False) -> float:
    """Fraction of exact zeros over all prunable weights (and biases, with ``biases=True``)."""
    params = list(prunable_parameters(model, biases).values())
    total = sum(p.numel() for p in params)
    zeros = sum(int((p.detach() == 0).sum()) for p in params)
    return zeros / total if total else 0.0


def layer_sparsity(model: nn.Module, biases: bool = False) -> dict[str, float]:
    """``{param name: fraction of exact zeros}``."""
    return {k: float((v.detach() == 0).float().mean()) for k, v in prunable_parameters(model, biases).items()}


def count_weights(model: nn.Module) -> dict[str, int]:
    """``{param name: number of weights}`` for the prunable tensors."""
    return {k: int(v.numel()) for k, v in prunable_parameters(model).items()}


# ------------------------------------------------------------------ torch.nn.utils.prune
def to_torch_prune(model: nn.Module, mask: Optional[Mapping[str, torch.Tensor]] = None) -> nn.Module:
    """Hand masks to ``torch.nn.utils.prune.custom_from_mask`` (in place; returns model).

    Afterwards each layer has ``weight_orig`` and a ``weight_mask`` buffer and a
    forward pre-hook keeps the pruned weights at zero; ``prune.remove`` makes it
    permanent again.  Without ``mask``, the mask implied by the zeros is used.
    """
    from torch.nn.utils import prune

    mask = Mask.from_weights(model) if mask is None else mask
    modules = dict(model.named_modules())
    for key, m in mask.items():
        mod_name, _, pname = key.rpartition(".")
        prune.custom_from_mask(modules[mod_name], name=pname, mask=m.to(torch.float32))
    return model


def remove_torch_prune(model: nn.Module) -> nn.Module:
    """Make torch.nn.utils.prune masks permanent (``prune.remove`` on every pruned layer)."""
    from torch.nn.utils import prune

    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model



# ------------------------------------------------------------------ structured (neuron) pruning
def neuron_mask(weight: torch.Tensor, sparsity: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Prune whole output neurons (rows of a Linear weight, filters of a Conv): lowest L2 norm first.

    round(rows * r) rows are removed entirely, so the achieved weight sparsity is
    that fraction of rows (the mask is a whole row/filter of zeros).
    """
    rows = weight.shape[0]
    norms = weight.detach().reshape(rows, -1).norm(dim=1)
    keep_rows = rows - num_to_prune(rows, sparsity)
    row_mask = torch.zeros(rows, dtype=torch.bool, device=weight.device)
    if keep_rows > 0:
        row_mask[torch.topk(norms, keep_rows, largest=True).indices] = True
    return row_mask.view(-1, *([1] * (weight.dim() - 1))).expand_as(weight).clone()


STRATEGIES["neuron"] = neuron_mask


def prune_neurons(model: nn.Module, sparsity: float, skip_last: bool = True) -> Mask:
    """Remove the weakest neurons of every layer (the output layer's classes are kept by default)."""
    params = prunable_parameters(model)
    names = list(params)[:-1] if skip_last else list(params)
    mask = Mask({k: neuron_mask(params[k], sparsity) for k in names})
    apply_mask(model, mask)
    return mask
