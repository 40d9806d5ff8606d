"""Masks, pruning targets and measuring sparsity (the criteria are in :mod:`bayesprune.core.criteria`).

Conventions (shared with ``torch.nn.utils.prune``): a mask has the shape of the
weight it belongs to, 1/True = keep, 0/False = pruned; masks are keyed by the
parameter's *name* (``"fc1.weight"``).  Prunable tensors are the weights of
``Linear`` and ``Conv2d`` layers, never biases.  Sparsity is always *measured*
from the weights (exact zeros), never taken from a mask or a request.

Pruning a model computes a mask (``criteria.compute_mask``) then multiplies it in
(:func:`apply_mask`).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

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


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """w *= mask for every masked tensor, in place (keeps the optimizer's references)."""
    params = prunable_parameters(model, biases=True)
    for key, m in mask.items():
        if key not in params:
            raise KeyError(f"mask names {key!r}, which is not a prunable weight or bias of this model")
        params[key].mul_(m.to(params[key].dtype))


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
