"""Per-layer sensitivity: prune one layer at a time, the others dense, and watch the accuracy.

The scan of MIT efficientml.ai's lab 1: for every prunable layer and every sparsity in
a grid, a copy of the trained network with only that layer pruned is evaluated.  Layers
whose accuracy holds up can take more zeros; :func:`suggest_sparsities` picks, per layer,
the highest scanned sparsity whose drop stays within a threshold (the smallest model
the scan allows under it).  Drops measured one layer at a time do not simply add up,
so :func:`prune_layers` builds the suggested network and the caller measures it.

The scan evaluates on the *training* split by default: choosing sparsities on the test
set and then reporting test accuracy would flatter the choice.
"""

from __future__ import annotations

import copy
from typing import Mapping, Optional, Sequence

import pandas as pd
import torch
from torch import nn

from ..core.criteria import ScoreContext, mask_from_scores, scores_function
from ..core.data import TensorDataset
from ..core.pruning import apply_mask, prunable_parameters
from ..core.registry import CRITERIA
from ..engine.training import evaluate

SPLITS = ("train", "test")


def _check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r} is invalid: allowed one of {', '.join(CRITERIA.names())}")


def _layer_mask(net: nn.Module, name: str, weight: torch.Tensor, sparsity: float, criterion: str,
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """The registered criterion's mask of one tensor at its own sparsity (its zeros stay pruned and count)."""
    ctx = ScoreContext({name: weight}, float(sparsity), "layer", generator)
    scores = scores_function(criterion)(net, ctx)
    return mask_from_scores({name: scores[name]}, sparsity, "layer", {name: weight.detach() != 0})[name]


def prune_one_layer(model: nn.Module, layer: str, sparsity: float, criterion: str = "magnitude",
                    generator: Optional[torch.Generator] = None) -> nn.Module:
    """A copy of ``model`` with only ``layer`` (a parameter name, ``"fc1.weight"``) pruned to ``sparsity``."""
    return prune_layers(model, {layer: sparsity}, criterion, generator)


def prune_layers(model: nn.Module, sparsities: Mapping[str, float], criterion: str = "magnitude",
                 generator: Optional[torch.Generator] = None) -> nn.Module:
    """A copy of ``model`` with each named layer pruned to its own sparsity; the other tensors are copied as they are."""
    _check_criterion(criterion)
    net = copy.deepcopy(model)
    params = prunable_parameters(net)
    unknown = sorted(set(sparsities) - set(params))
    if unknown:
        raise KeyError(f"layers {unknown} are not prunable weights of this model: allowed {', '.join(params)}")
    for name, r in sparsities.items():
        if not 0.0 <= float(r) < 1.0:
            raise ValueError(f"sparsity of {name}={r!r} is invalid: allowed a number >= 0 and < 1")
    apply_mask(net, {name: _layer_mask(net, name, params[name], r, criterion, generator)
                     for name, r in sparsities.items()})
    return net


def sensitivity_scan(model: nn.Module, data: TensorDataset, sparsities: Sequence[float], criterion: str = "magnitude",
                     *, split: str = "train", layers: Optional[Sequence[str]] = None, max_samples: Optional[int] = None,
                     seed: int = 0) -> pd.DataFrame:
    """Accuracy with one layer pruned at a time: one row per (layer, sparsity).

    Columns: ``layer``, ``weights`` (of that layer), ``sparsity`` (asked), ``layer_sparsity`` (measured zeros),
    ``accuracy``, ``dense_accuracy`` and ``drop`` (dense minus pruned, in accuracy; positive = worse).
    ``criterion`` is a registered criterion name (``bp.CRITERIA``); ``random`` draws each mask from ``seed``.
    """
    _check_criterion(criterion)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid: allowed {', '.join(SPLITS)}")
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    params = prunable_parameters(model)
    layers = list(params) if layers is None else list(layers)
    dense_acc = evaluate(model, x, y)[1]
    rows = []
    for layer in layers:
        for r in sparsities:
            net = prune_one_layer(model, layer, r, criterion, torch.Generator().manual_seed(seed))
            w = prunable_parameters(net)[layer]
            acc = evaluate(net, x, y)[1]
            rows.append({"layer": layer, "weights": int(w.numel()), "sparsity": float(r),
                         "layer_sparsity": float((w == 0).float().mean()), "accuracy": acc,
                         "dense_accuracy": dense_acc, "drop": dense_acc - acc})
    return pd.DataFrame(rows)


def suggest_sparsities(scan: pd.DataFrame, max_drop: float) -> dict[str, float]:
    """Per layer, the highest scanned sparsity whose drop is at most ``max_drop`` (0.0 if none is)."""
    if not max_drop >= 0:
        raise ValueError(f"max_drop={max_drop!r} is invalid: allowed a number >= 0 (an accuracy, e.g. 0.01)")
    out = {}
    for layer, g in scan.groupby("layer", sort=False):
        ok = g[g["drop"] <= max_drop]
        out[layer] = float(ok["sparsity"].max()) if len(ok) else 0.0
    return out


def kept_weights(scan: pd.DataFrame, sparsities: Mapping[str, float]) -> int:
    """Weights kept by per-layer ``sparsities`` (round(n * r) zeros per layer, as the strategies prune)."""
    n = scan.groupby("layer", sort=False)["weights"].first()
    return int(sum(int(n[k]) - int(round(int(n[k]) * float(r))) for k, r in sparsities.items()))


def plot_sensitivity(scan: pd.DataFrame, max_drop: Optional[float] = None, ax=None, chance: Optional[float] = None):
    """Accuracy against each layer's sparsity, one line per layer (the lab's figure); returns the figure.

    ``chance`` (1 / classes) draws the level of a collapsed network, so a layer that falls there reads as broken.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    for layer, g in scan.groupby("layer", sort=False):
        ax.plot(g["sparsity"], g["accuracy"], marker="o", label=f"{layer} ({int(g['weights'].iloc[0]):,} weights)")
    dense = float(scan["dense_accuracy"].iloc[0])
    ax.axhline(dense, color="black", lw=0.8, ls=":", label="dense")
    if max_drop is not None:
        ax.axhline(dense - max_drop, color="grey", lw=0.8, ls="--", label=f"dense - {max_drop:g}")
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="-.", label=f"chance = {chance:.2f}")
    ax.set(xlabel="sparsity of this layer (the others dense)", ylabel="accuracy",
           title="Sensitivity scan: one layer pruned at a time")
    ax.legend(fontsize=8)
    return ax.figure
