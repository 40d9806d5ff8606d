"""Experiments on the probabilistic theory of pruning (Qian & Klabjan), notebook 05.

The theory: prune a wide enough network (randomly, or by magnitude for FCNs) and,
with high probability, its outputs stay within epsilon of the original's, if
the weights are independent.  These helpers measure that empirically: the
distance between the original and pruned outputs on real inputs, over many
random masks, so a student sees a *distribution*, not one number.

Distance: the mean over inputs of ||f(x) - f_pruned(x)||_2 / ||f(x)||_2
(relative, so networks of different widths compare).
"""

from __future__ import annotations

import copy
import math
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .models import CNN, FCN
from .pruning import apply_mask, compute_mask, prunable_parameters


@torch.inference_mode()
def output_distance(original: nn.Module, pruned: nn.Module, x: torch.Tensor) -> float:
    """Mean relative L2 distance between the two networks' outputs on x."""
    original.eval()
    pruned.eval()
    a, b = original(x), pruned(x)
    return float(((a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)).mean())


def pruned_version(
    model: nn.Module,
    strategy: str,
    rate: float,
    generator: Optional[torch.Generator] = None,
    rescale: bool = False,
    layers: Optional[Sequence[str]] = None,
) -> nn.Module:
    """A pruned copy; ``rescale`` multiplies kept weights by 1/(1-rate) (keeps E[pre-activation])."""
    clone = copy.deepcopy(model)
    mask = compute_mask(clone, strategy, rate, generator=generator)
    if layers is not None:
        mask = type(mask)({k: v for k, v in mask.items() if k in layers})
    apply_mask(clone, mask)
    if rescale and rate > 0:
        params = prunable_parameters(clone)
        with torch.no_grad():
            for k in mask:
                params[k].mul_(1.0 / (1.0 - rate))
    return clone


def distances_over_masks(
    model: nn.Module,
    x: torch.Tensor,
    rate: float,
    n_masks: int = 20,
    strategy: str = "random",
    rescale: bool = False,
    seed: int = 0,
    layers: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Output distances for ``n_masks`` independent random masks (magnitude: one, deterministic)."""
    g = torch.Generator().manual_seed(seed)
    n = 1 if strategy == "magnitude" else n_masks
    return np.array([output_distance(model, pruned_version(model, strategy, rate, g, rescale, layers), x)
                     for _ in range(n)])


def make_net(kind: str, width: int, input_shape: Sequence[int], num_classes: int, seed: int) -> nn.Module:
    """A freshly initialised (independent-weight) FCN with two hidden layers of ``width``, or a CNN with
    ``width`` and 2*``width`` channels."""
    torch.manual_seed(seed)
    if kind == "fcn":
        return FCN(input_shape, num_classes, (width, width))
    if kind == "cnn":
        return CNN(input_shape, num_classes, channels=(width, 2 * width), hidden=4 * width)
    raise ValueError(f"kind={kind!r} is invalid: allowed fcn, cnn")


def width_experiment(
    x: torch.Tensor,
    num_classes: int,
    widths: Iterable[int],
    rates: Iterable[float],
    kind: str = "fcn",
    strategies: Sequence[str] = ("random",),
    rescale: Sequence[bool] = (False, True),
    n_masks: int = 20,
    n_nets: int = 1,
    seed: int = 0,
    nets: Optional[dict[int, nn.Module]] = None,
) -> pd.DataFrame:
    """Distance distribution vs width and rate: one row per (net, mask).

    ``nets`` (width -> model) lets you pass trained networks instead of fresh ones.
    """
    rows = []
    for width in widths:
        for net_i in range(n_nets):
            net = nets[width] if nets is not None else make_net(kind, width, x.shape[1:], num_classes, seed + net_i)
            for rate in rates:
                for strategy in strategies:
                    for rs in rescale:
                        d = distances_over_masks(net, x, rate, n_masks, strategy, rs, seed=seed + 1000 * net_i)
                        rows += [{"kind": kind, "width": width, "net": net_i, "rate": rate, "strategy": strategy,
                                  "rescale": rs, "mask": i, "distance": float(v)} for i, v in enumerate(d)]
    return pd.DataFrame(rows)


def max_prunable_fraction(
    model: nn.Module,
    x: torch.Tensor,
    epsilon: float,
    delta: float,
    rates: Sequence[float] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2)),
    n_masks: int = 20,
    strategy: str = "random",
    rescale: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Per layer (the others untouched): the largest rate with P(distance <= epsilon) >= 1 - delta.

    Estimated from ``n_masks`` masks per rate; also returns that empirical probability.
    """
    rows = []
    for layer in prunable_parameters(model):
        best, best_p = 0.0, 1.0
        for rate in sorted(rates):
            d = distances_over_masks(model, x, rate, n_masks, strategy, rescale, seed, layers=[layer])
            p_ok = float((d <= epsilon).mean())
            if p_ok >= 1.0 - delta:
                best, best_p = rate, p_ok
            else:
                break
        rows.append({"layer": layer, "weights": int(prunable_parameters(model)[layer].numel()),
                     "max_fraction": best, "p_within_epsilon": best_p})
    return pd.DataFrame(rows)


def hoeffding_masks(delta: float, tolerance: float) -> int:
    """Masks needed so the empirical probability is within ``tolerance`` w.p. 1-delta (Hoeffding)."""
    return int(math.ceil(math.log(2.0 / delta) / (2.0 * tolerance**2)))
