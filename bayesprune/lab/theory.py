"""Experiments on the probabilistic theory of pruning (Qian & Klabjan), notebook 05.

What we know of the theory (from the summary in our papers folder): it studies random
pruning of FCNs and CNNs and magnitude pruning of FCNs, its analysis assumes that the
original network's weights are independent, and it gives a per-layer upper bound on how
many weights can be pruned while the error stays within a margin.  These helpers measure
the corresponding quantities empirically: the distance between the original and pruned
outputs on real inputs, over many random masks, so a student sees a *distribution*, not
one number, with diagnostics that tell concentration from collapse.

Distance: the mean over inputs of ||f(x) - f_pruned(x)||_2 / ||f(x)||_2
(relative, so networks of different widths compare).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..analysis.stats import binomial_lower_bound
from ..core.criteria import compute_mask, pruned_copy
from ..core.models import CNN, FCN
from ..core.pruning import apply_mask, prunable_parameters


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
    """A pruned copy; ``rescale`` multiplies kept weights by 1/(1-rate) (keeps E[pre-activation]).

    ``layers``: prune only these weights (the others stay dense).
    """
    params = prunable_parameters(model)
    skip = () if layers is None else tuple(k for k in params if k not in layers)
    clone = pruned_copy(model, strategy, rate, generator=generator, skip=skip)
    if rescale and rate > 0:
        _rescale(clone, rate, [k for k in params if k not in skip])
    return clone


def _rescale(net: nn.Module, rate: float, names: Sequence[str]) -> None:
    params = prunable_parameters(net)
    with torch.no_grad():
        for k in names:
            params[k].mul_(1.0 / (1.0 - rate))


def _prune_in_place(net: nn.Module, strategy: str, rate: float, generator: Optional[torch.Generator],
                    rescale: bool, layers: Optional[Sequence[str]]) -> None:
    params = prunable_parameters(net)
    skip = () if layers is None else tuple(k for k in params if k not in layers)
    mask = compute_mask(net, strategy, rate, generator=generator, skip=skip)
    apply_mask(net, mask)
    if rescale and rate > 0:
        _rescale(net, rate, list(mask))


def output_bias(model: nn.Module) -> torch.Tensor:
    """The bias of the last prunable layer (zeros if it has none): what a network outputs when its
    weights carry no signal."""
    last = list(prunable_parameters(model))[-1].rpartition(".")[0]
    module = dict(model.named_modules())[last]
    if getattr(module, "bias", None) is None:
        return torch.zeros(module.weight.shape[0])
    return module.bias.detach()


@torch.inference_mode()
def measure_masks(
    model: nn.Module,
    x: torch.Tensor,
    rate: float,
    n_masks: int = 20,
    strategy: str = "random",
    rescale: bool = False,
    seed: int = 0,
    layers: Optional[Sequence[str]] = None,
    max_seconds: Optional[float] = None,
) -> pd.DataFrame:
    """One row per mask: ``distance`` (see module doc), ``pruned_norm`` = mean ||f_pruned(x)||, and
    ``signal_kept`` = mean ||f_pruned(x) - b|| / mean ||f(x) - b||, b the last layer's bias.

    ``signal_kept`` near 0 means the pruned network outputs (almost) its last bias whatever the
    input: its outputs agree across masks because they have *collapsed*, not concentrated around f.
    Magnitude pruning is deterministic: one row.  ``max_seconds`` stops drawing masks once that
    much time has passed (at least one is always drawn), so an interactive caller stays responsive.
    """
    g = torch.Generator().manual_seed(seed)
    n = 1 if strategy == "magnitude" else n_masks
    model.eval()
    f = model(x)
    b = output_bias(model).to(f.device)
    f_signal = float((f - b).norm(dim=1).mean())
    f_norm = f.norm(dim=1).clamp_min(1e-12)
    clone = copy.deepcopy(model).eval()
    src, dst = prunable_parameters(model), prunable_parameters(clone)
    rows, t0 = [], time.perf_counter()
    for i in range(n):
        if i and max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
        for k in dst:
            dst[k].copy_(src[k])
        _prune_in_place(clone, strategy, rate, g, rescale, layers)
        fp = clone(x)
        rows.append({"mask": i, "distance": float(((f - fp).norm(dim=1) / f_norm).mean()),
                     "pruned_norm": float(fp.norm(dim=1).mean()),
                     "signal_kept": float((fp - b).norm(dim=1).mean()) / max(f_signal, 1e-12)})
    return pd.DataFrame(rows)


def distances_over_masks(
    model: nn.Module,
    x: torch.Tensor,
    rate: float,
    n_masks: int = 20,
    strategy: str = "random",
    rescale: bool = False,
    seed: int = 0,
    layers: Optional[Sequence[str]] = None,
    max_seconds: Optional[float] = None,
) -> np.ndarray:
    """Output distances for ``n_masks`` independent random masks (magnitude: one, deterministic)."""
    return measure_masks(model, x, rate, n_masks, strategy, rescale, seed, layers, max_seconds)["distance"].to_numpy()


def make_net(kind: str, width: int, input_shape: Sequence[int], num_classes: int, seed: int) -> nn.Module:
    """A freshly initialised (independent-weight) FCN with two hidden layers of ``width``, or a CNN with
    ``width`` and 2*``width`` channels."""
    torch.manual_seed(seed)
    if kind == "fcn":
        return FCN(input_shape, num_classes, (width, width))
    if kind == "cnn":
        return CNN(input_shape, num_classes, channels=(width, 2 * width), hidden=4 * width)
    raise ValueError(f"kind={kind!r} is invalid: allowed fcn, cnn")


def shuffled_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy whose every prunable weight tensor has its entries randomly permuted (biases kept).

    Each layer keeps exactly its values (so its scale and distribution), but where they sit is
    random: the weights become independent of each other and of the data.  The control that
    separates *what* a trained network learned (its arrangement) from *how big* its weights are.
    """
    clone = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in prunable_parameters(clone).values():
            flat = w.detach().flatten()
            w.copy_(flat[torch.randperm(flat.numel(), generator=g).to(flat.device)].view_as(w))
    return clone


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
    progress: bool = False,
) -> pd.DataFrame:
    """Distance distribution vs width and rate: one row per (net, mask).

    ``progress`` shows a tqdm bar over the widths (the widest take most of the time).

    ``nets`` (width -> model) lets you pass trained networks instead of fresh ones.  Besides the
    columns of :func:`measure_masks`, each row has the original's ``output_norm`` (mean ||f(x)||)
    and ``bias_norm`` (||b|| of the last layer).
    """
    rows = []
    rates, widths = list(rates), list(widths)
    if progress:
        from tqdm.auto import tqdm

        widths = tqdm(widths, desc=f"{kind} widths", leave=False)
    for width in widths:
        for net_i in range(n_nets):
            net = nets[width] if nets is not None else make_net(kind, width, x.shape[1:], num_classes, seed + net_i)
            net.eval()
            with torch.inference_mode():
                out_norm = float(net(x).norm(dim=1).mean())
            bias_norm = float(output_bias(net).norm())
            for rate in rates:
                for strategy in strategies:
                    for rs in rescale:
                        m = measure_masks(net, x, rate, n_masks, strategy, rs, seed=seed + 1000 * net_i)
                        rows += [{"kind": kind, "width": width, "net": net_i, "rate": rate, "strategy": strategy,
                                  "rescale": rs, "output_norm": out_norm, "bias_norm": bias_norm, **r}
                                 for r in m.to_dict(orient="records")]
    return pd.DataFrame(rows)


def max_prunable_fraction(
    model: nn.Module,
    x: torch.Tensor,
    epsilon: float,
    delta: float,
    rates: Sequence[float] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2)),
    n_masks: int = 60,
    strategy: str = "random",
    rescale: bool = True,
    seed: int = 0,
    confidence: float = 0.95,
    progress: bool = False,
) -> pd.DataFrame:
    """Per layer (the others untouched): the largest rate *shown* to keep the output within epsilon
    with probability at least 1 - delta.

    At each rate (in increasing order, stopping at the first that fails) ``n_masks`` masks are drawn
    and ``within`` of them keep the distance <= epsilon.  A rate is shown when the one-sided
    Clopper-Pearson lower bound on P(distance <= epsilon), at ``confidence``, is >= 1 - delta: a
    point estimate from a few masks is not evidence.  With all masks within, the bound is
    (1 - confidence)**(1/n): fewer than ``stats.trials_needed(1 - delta, confidence)`` masks can
    never show anything, and every layer gets 0.

    Columns: ``max_fraction`` (0.0 if no rate was shown), ``within``/``masks``, ``p_hat`` and
    ``p_lower`` at that rate (NaN if none was shown: nothing is claimed where nothing was shown),
    and ``refused_rate``/``refused_p_hat``/``refused_p_lower``: the first rate that failed (NaN if
    every rate passed).  ``progress`` shows a tqdm bar over the layers (seconds each on a busy CPU).
    """
    rows = []
    params = prunable_parameters(model)
    layers = list(params)
    if progress:
        from tqdm.auto import tqdm

        layers = tqdm(layers, desc="layers", leave=False)
    for layer in layers:
        best = {"max_fraction": 0.0, "within": math.nan, "p_hat": math.nan, "p_lower": math.nan}
        refused = {"refused_rate": math.nan, "refused_p_hat": math.nan, "refused_p_lower": math.nan}
        for rate in sorted(rates):
            d = distances_over_masks(model, x, rate, n_masks, strategy, rescale, seed, layers=[layer])
            k = int((d <= epsilon).sum())
            lower = binomial_lower_bound(k, len(d), confidence)
            if lower >= 1.0 - delta:
                best = {"max_fraction": float(rate), "within": k, "p_hat": k / len(d), "p_lower": lower}
            else:
                refused = {"refused_rate": float(rate), "refused_p_hat": k / len(d), "refused_p_lower": lower}
                break
        rows.append({"layer": layer, "weights": int(params[layer].numel()), "masks": n_masks, **best, **refused})
    return pd.DataFrame(rows)


def hoeffding_masks(delta: float, tolerance: float) -> int:
    """Masks needed so the empirical probability is within ``tolerance`` w.p. 1-delta (Hoeffding)."""
    return int(math.ceil(math.log(2.0 / delta) / (2.0 * tolerance**2)))


def trend_verdict(diff) -> str:
    """A claim "the distance falls" (``diff`` = later minus earlier): supported, contradicted, or not shown."""
    if diff.within_noise:
        return "not shown (within the noise)"
    return "supported" if diff.mean < 0 else "contradicted"


def combined_verdict(verdicts: Iterable[str]) -> str:
    """One verdict for several measurements of one claim: the common one, or ``mixed: ...`` naming each."""
    verdicts = list(verdicts)
    if not verdicts:
        return "not tested"
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return "mixed: " + ", ".join(f"{v} {verdicts.count(v)}x" for v in sorted(set(verdicts)))


def arrangement_verdict(values_gap, arrangement_gap) -> tuple[str, str]:
    """The claim "training's arrangement, not the weights' values, changes the distance", from both gaps.

    ``values_gap`` is d(trained, shuffled) - d(fresh): the trained values placed at random against fresh
    weights; ``arrangement_gap`` is d(trained) - d(trained, shuffled): where the same values sit.  Each is
    a :func:`bayesprune.analysis.stats.difference` (``mean``, ``within_noise``, ``text``).

    Supported only when the arrangement moves the distance beyond the noise and the values alone do not;
    contradicted when the values alone move it beyond the noise at least as much as the arrangement does
    (or the arrangement does nothing beyond the noise while the values do); mixed when both move it and the
    arrangement more; not shown when neither gap is beyond the noise.  Returns (verdict, sentence).
    """
    values, arranged = not values_gap.within_noise, not arrangement_gap.within_noise
    if not values and not arranged:
        verdict, why = "not shown (within the noise)", "neither the values nor their arrangement moved the distance beyond the noise"
    elif arranged and not values:
        verdict, why = "supported", "the arrangement moved the distance beyond the noise, the values alone did not"
    elif values and (not arranged or abs(values_gap.mean) >= abs(arrangement_gap.mean)):
        verdict = "contradicted"
        why = ("the weights' values alone (shuffled) moved the distance beyond the noise"
               + ("" if not arranged else f", by {abs(values_gap.mean):.3g} against the arrangement's "
                  f"{abs(arrangement_gap.mean):.3g}") + ": the values matter at least as much as where they sit")
    else:
        verdict = combined_verdict(["supported", "contradicted"])
        why = (f"both moved it beyond the noise, the arrangement more ({abs(arrangement_gap.mean):.3g} against the "
               f"values' {abs(values_gap.mean):.3g})")
    return verdict, f"values (fresh -> shuffled): {values_gap.text}; arrangement (shuffled -> trained): {arrangement_gap.text}; {why}"


def dependence_note(trained_trend, shuffled_trend) -> str:
    """Whether the trained network's width benefit needs dependence: the same values shuffled are independent again.

    Both arguments are differences "distance at the widest minus at the narrowest width" (negative: closer
    when wider), for the trained weights and for the same weights shuffled.
    """
    trained = not trained_trend.within_noise and trained_trend.mean < 0
    shuffled = not shuffled_trend.within_noise and shuffled_trend.mean < 0
    if not trained:
        return "the trained (dependent) weights did not get closer with width beyond the noise"
    if shuffled:
        return ("the same values shuffled (independent again) also got closer with width beyond the noise: the width "
                "benefit does not need dependence")
    return ("the same values shuffled (independent again) did not get closer with width beyond the noise: here the "
            "width benefit needs the trained arrangement")


def verdict_table(entries: Sequence[dict]) -> pd.DataFrame:
    """Notebook 05's closing table: one row per claim with what the runs showed and the verdict.

    Each entry is ``{"claim": str, "shows": str, "verdict": str}``; verdicts are one of supported,
    contradicted, not shown (within the noise), not tested, or mixed (see :func:`combined_verdict`).
    """
    allowed = ("supported", "contradicted", "not shown (within the noise)", "not tested", "mixed: ")
    for e in entries:
        if not any(e["verdict"] == a or (a.endswith(": ") and e["verdict"].startswith(a)) for a in allowed):
            raise ValueError(f"verdict={e['verdict']!r} is invalid: allowed {', '.join(allowed)}")
    return pd.DataFrame(list(entries), columns=["claim", "shows", "verdict"])
