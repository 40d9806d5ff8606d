"""Which weights does the posterior say to remove?  Magnitude against the posterior saliency (notebook 09).

Magnitude pruning removes the smallest |w|.  The posterior criterion ``obs`` (:mod:`bayesprune.bayes.obs`)
removes the smallest w^2 / (2 Sigma_pp), Sigma the Laplace posterior covariance: a small weight the data pin
down tightly (small Sigma_pp) can outrank a larger one they hardly constrain.  This module holds what the
notebook computes from the two:

* :func:`saliencies` and :func:`rank_agreement`: the scores on a trained network and how far the two orders
  agree (Spearman's rank correlation, per layer);
* :func:`overlap` and :func:`kept_per_input`: the masks the two choose at one sparsity, compared;
* :func:`frontier_configs`, :func:`frontier_table` and :func:`stop_on_frontier`: accuracy against sparsity for
  both criteria over seeds, their paired differences beside the noise, and where the ``bayesian`` preset's
  gate stopped relative to that curve;
* :func:`frontier_verdict`: the sentences the notebook prints from those tables, so that what it says follows
  from what it measured (and says so when the answer is "not distinguishable from magnitude at this n").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Mapping, Optional, Sequence

import pandas as pd
import torch
from torch import nn

from ..analysis.stats import accuracy_se, summarize, t_quantile
from ..bayes.obs import PosteriorSaliency
from ..core.config import RunConfig
from ..core.criteria import ScoreContext, mask_from_scores
from ..core.data import TensorDataset
from ..core.pruning import Mask, pruning_targets

__all__ = ["Saliency", "frontier_configs", "frontier_table", "frontier_verdict", "kept_per_input", "masks_at", "overlap",
           "plot_frontier", "plot_masks", "plot_saliency", "rank_agreement", "saliencies", "spearman", "stop_on_frontier"]


# ------------------------------------------------------------------ scores
@dataclass(frozen=True)
class Saliency:
    """The posterior criterion on one network: per prunable tensor its scores and Sigma_pp, and delta."""

    scores: dict[str, torch.Tensor]  #: w^2 / (2 Sigma_pp), the obs criterion's scores (float64, CPU)
    variance: dict[str, torch.Tensor]  #: Sigma_pp, the Laplace posterior variance of each weight
    prior_precision: float  #: delta = 1/sigma^2 of the prior the posterior was taken under

    @property
    def prior_sigma(self) -> float:
        return self.prior_precision ** -0.5

    def prior_share(self) -> dict[str, torch.Tensor]:
        """delta * Sigma_pp: the fraction of the prior's variance 1/delta the data leave each weight (<= 1;
        1: the data say nothing about it, and its saliency is the prior's own delta w^2 / 2)."""
        return {k: v * self.prior_precision for k, v in self.variance.items()}


def saliencies(model: nn.Module, data: TensorDataset, cfg: RunConfig, prior_sigma: Optional[float] = None,
               structure: Optional[str] = None) -> Saliency:
    """The ``obs`` criterion on ``model``: w^2 / (2 Sigma_pp) of every prunable weight, Sigma_pp and delta.

    ``prior_sigma``: the prior's width (delta = 1/sigma^2); None fits delta to the network's Laplace evidence, as
    ``prior_fit="marglik"`` does.  ``structure``: the curvature (``kron``, ``diag``, ``full``); None: the config's
    ``hessian_structure``.  The curvature comes from ``cfg``'s training subset (``bf_samples``, ``seed``).
    """
    crit = PosteriorSaliency(structure=structure)  # our own instance: its last_prior_precision is this call's
    delta = None if prior_sigma is None else float(prior_sigma) ** -2
    targets = pruning_targets(model, cfg.prune_biases)
    ctx = ScoreContext(targets, cfg.sparsity, cfg.scope, data=data, prior_precision=delta, config=cfg)
    var = crit.posterior_variance(model, ctx)  # one curvature fit gives both
    variance = {k: var[k].detach().double().cpu() for k in targets}
    scores = {k: w.detach().double().cpu().square() / (2.0 * variance[k]) for k, w in targets.items()}
    return Saliency(scores, variance, float(crit.last_prior_precision))


def spearman(a, b) -> float:
    """Spearman's rank correlation of two equally long sequences (average ranks for ties); NaN if one is constant."""
    x = pd.Series(torch.as_tensor(a).detach().double().flatten().cpu().numpy())
    y = pd.Series(torch.as_tensor(b).detach().double().flatten().cpu().numpy())
    if len(x) != len(y):
        raise ValueError(f"spearman() needs sequences of the same length: got {len(x)} and {len(y)}")
    rx, ry = x.rank(method="average"), y.rank(method="average")
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(rx.corr(ry))


def rank_agreement(model: nn.Module, sal: Saliency) -> pd.DataFrame:
    """Per layer: its weights, the decades |w| spans (log10 of the largest over the smallest nonzero |w|),
    Spearman's correlation between |w| and the saliency (1: the same order), and the smallest and the median
    delta * Sigma_pp (how much of the prior's variance the data leave; 1: all of it)."""
    targets, share = pruning_targets(model), sal.prior_share()

    def decades(w: torch.Tensor) -> float:
        a = w.detach().abs().double().flatten()
        a = a[a > 0]
        return float(torch.log10(a.max() / a.min())) if len(a) else math.nan

    rows = [{"layer": k, "weights": int(sal.scores[k].numel()), "decades of |w|": decades(targets[k]),
             "spearman(|w|, saliency)": spearman(targets[k].detach().abs(), sal.scores[k]),
             "min delta*Sigma_pp": float(share[k].min()), "median delta*Sigma_pp": float(share[k].median())}
            for k in sal.scores]
    return pd.DataFrame(rows).set_index("layer")


def plot_saliency(model: nn.Module, sal: Saliency, layers: Sequence[str], axes=None):
    """Per layer (a column): top, |w| against the saliency w^2 / (2 Sigma_pp) on log axes, with the prior's own
    line delta w^2 / 2 (where a weight the data say nothing about sits); bottom, |w| against delta * Sigma_pp,
    how far the data lifted each weight off that line (1: not at all)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(2, len(layers), figsize=(5.2 * len(layers), 6.4), squeeze=False, sharex="col")
    targets, share = pruning_targets(model), sal.prior_share()
    for j, k in enumerate(layers):
        top, bottom = axes[0][j], axes[1][j]
        w = targets[k].detach().abs().double().cpu().flatten()
        s, c = sal.scores[k].flatten(), share[k].flatten()
        keep = w > 0
        top.scatter(w[keep], s[keep], s=3, alpha=0.4, rasterized=True)
        grid = torch.logspace(math.log10(float(w[keep].min())), math.log10(float(w.max())), 50, dtype=torch.float64)
        top.plot(grid, sal.prior_precision * grid.square() / 2, "r--", lw=1, label="prior only: delta w^2 / 2")
        top.set(xscale="log", yscale="log", ylabel="saliency w^2 / (2 Sigma_pp) [nats]",
                title=f"{k}: Spearman(|w|, saliency) {spearman(w, s):.4f}")
        top.legend(fontsize=8, loc="upper left")
        bottom.scatter(w[keep], c[keep], s=3, alpha=0.4, rasterized=True)
        bottom.axhline(1.0, color="r", ls="--", lw=1)
        bottom.set(xscale="log", xlabel="|w|", ylabel="delta * Sigma_pp (1: prior only)")
    return axes


# ------------------------------------------------------------------ masks
def masks_at(model: nn.Module, scores: Mapping[str, torch.Tensor], sparsity: float,
             scope: str = "global") -> tuple[Mask, Mask]:
    """(magnitude mask, posterior mask) of ``model`` at ``sparsity``, the same scope for both (True = kept)."""
    targets = pruning_targets(model)
    magnitude = {k: w.detach().abs().cpu() for k, w in targets.items()}
    current = {k: w.detach().cpu() != 0 for k, w in targets.items()}
    return (mask_from_scores(magnitude, sparsity, scope, current),
            mask_from_scores({k: scores[k] for k in targets}, sparsity, scope, current))


def overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
            names: Sequence[str] = ("magnitude", "obs")) -> pd.DataFrame:
    """Per layer and over all layers: weights kept by each mask, by both, by one only, and the Jaccard index.

    Jaccard = |kept by both| / |kept by either| (1: the same weights kept; 0: none in common).
    """
    if set(a) != set(b):
        raise ValueError(f"overlap() needs masks of the same tensors: got {sorted(a)} and {sorted(b)}")
    na, nb = names
    rows = []
    for k in a:
        x, y = a[k].bool().cpu(), b[k].bool().cpu()
        if x.shape != y.shape:
            raise ValueError(f"overlap(): mask {k!r} has shapes {tuple(x.shape)} and {tuple(y.shape)}")
        rows.append({"layer": k, "weights": x.numel(), f"kept by {na}": int(x.sum()), f"kept by {nb}": int(y.sum()),
                     "kept by both": int((x & y).sum()), f"only {na}": int((x & ~y).sum()),
                     f"only {nb}": int((~x & y).sum()), "either": int((x | y).sum())})
    t = pd.DataFrame(rows).set_index("layer")
    t.loc["all"] = t.sum()
    t["jaccard"] = (t["kept by both"] / t["either"]).where(t["either"] > 0, 1.0)
    return t.drop(columns="either")


def kept_per_input(mask: Mapping[str, torch.Tensor], layer: str, input_shape: Sequence[int]) -> torch.Tensor:
    """The fraction of ``layer``'s weights from each input that ``mask`` keeps, shaped as one input (an image).

    ``layer``: a fully connected first layer (out_features x in_features); ``input_shape``: e.g. (1, 8, 8).
    """
    m = mask[layer].float().cpu()
    n_in = int(torch.tensor(list(input_shape)).prod())
    if m.dim() != 2 or m.shape[1] != n_in:
        raise ValueError(f"kept_per_input(): {layer!r} has shape {tuple(m.shape)}: allowed a first fully connected "
                         f"layer with {n_in} inputs (input_shape {tuple(input_shape)})")
    shape = [int(s) for s in input_shape if int(s) != 1] or [n_in]
    return m.mean(dim=0).view(*shape)


def plot_masks(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], layer: str, input_shape: Sequence[int],
               names: Sequence[str] = ("magnitude", "obs"), axes=None):
    """Three panels: the fraction of ``layer``'s weights each mask keeps from every input pixel, the difference
    (b - a), and the weights each keeps per layer (where a global ranking puts its zeros)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ka, kb = kept_per_input(a, layer, input_shape), kept_per_input(b, layer, input_shape)
    im = axes[0].imshow(ka, cmap="magma", vmin=0, vmax=max(float(ka.max()), float(kb.max())))
    axes[0].set_title(f"{layer}: kept per input pixel, {names[0]}", fontsize=9)
    plt.colorbar(im, ax=axes[0])
    diff = kb - ka
    lim = max(float(diff.abs().max()), 1e-6)
    im = axes[1].imshow(diff, cmap="RdBu", vmin=-lim, vmax=lim)
    axes[1].set_title(f"{names[1]} - {names[0]} (kept per pixel)", fontsize=9)
    plt.colorbar(im, ax=axes[1])
    t = overlap(a, b, names).drop(index="all")
    x = torch.arange(len(t)).double()
    axes[2].bar(x - 0.2, t[f"kept by {names[0]}"], width=0.4, label=names[0])
    axes[2].bar(x + 0.2, t[f"kept by {names[1]}"], width=0.4, label=names[1])
    axes[2].set_xticks(x.tolist(), list(t.index), fontsize=8)
    axes[2].set(ylabel="weights kept", yscale="log", title="kept per layer")
    axes[2].legend(fontsize=8)
    for ax in axes[:2]:
        ax.set_xticks([]), ax.set_yticks([])
    return axes


# ------------------------------------------------------------------ the frontier
def frontier_configs(base: RunConfig, methods: Sequence[str], sparsities: Sequence[float],
                     seeds: Sequence[int]) -> list[RunConfig]:
    """``base`` x methods x sparsities x seeds (``none`` once per seed, at sparsity 0), for ``bp.sweep``."""
    from ..runs.sweeps import grid

    return grid(base, methods, sparsities, seeds)


def frontier_table(results: pd.DataFrame, n_test: int, a: str = "obs", b: str = "magnitude",
                   confidence: float = 0.95) -> pd.DataFrame:
    """Per target sparsity: the mean accuracy of ``a`` and ``b`` over their common seeds and the paired difference.

    ``results``: one row per run with method, sparsity (the target), seed, test_accuracy.  Columns: n (seeds),
    the two means, ``a - b`` (mean of the per-seed differences), ``paired se`` (their sd / sqrt(n); NaN for one
    seed), ``test-set se`` (the binomial SE of the difference of two independent accuracies on ``n_test``
    images: what the choice of test images alone could move it by), ``noise`` (the two combined,
    sqrt(paired se^2 + test-set se^2)), ``t`` (the multiplier: Student's t quantile at ``confidence`` with n - 1
    degrees of freedom, the paired t interval of :func:`~bayesprune.analysis.stats.paired_t_test`; the normal
    quantile for one seed, where only the test-set se is left), ``ci low`` and ``ci high`` (``a - b`` ± t * noise)
    and ``beyond the noise`` (that interval excludes 0).  With two seeds t is 12.71: a difference must exceed
    12.7 times its noise, not twice it (|d| > 2 noise at 1 degree of freedom is only a ~70 % interval).  The t
    with n - 1 df is applied to the combined noise, a little conservative where the test-set part dominates.
    """
    rows = []
    for r in sorted(set(results.loc[results["method"].isin([a, b]), "sparsity"])):
        at = results[(results["sparsity"] - r).abs() < 1e-9]
        xa = at[at["method"] == a].set_index("seed")["test_accuracy"]
        xb = at[at["method"] == b].set_index("seed")["test_accuracy"]
        seeds = sorted(set(xa.index) & set(xb.index))
        if not seeds:
            continue
        d = summarize([float(xa[s] - xb[s]) for s in seeds])
        pa, pb = float(xa[seeds].mean()), float(xb[seeds].mean())
        test_se = math.sqrt(accuracy_se(pa, n_test) ** 2 + accuracy_se(pb, n_test) ** 2)
        noise = math.sqrt((0.0 if math.isnan(d.se) else d.se) ** 2 + test_se ** 2)
        t = t_quantile(len(seeds) - 1, confidence) if len(seeds) > 1 else NormalDist().inv_cdf(0.5 + confidence / 2)
        lo, hi = d.mean - t * noise, d.mean + t * noise
        rows.append({"target": float(r), "n": len(seeds), a: pa, b: pb, f"{a} - {b}": d.mean,
                     "paired se": d.se, "test-set se": test_se, "noise": noise, "t": t, "ci low": lo, "ci high": hi,
                     "beyond the noise": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(rows, columns=["target", "n", a, b, f"{a} - {b}", "paired se", "test-set se", "noise", "t",
                                       "ci low", "ci high", "beyond the noise"])


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Linear interpolation of (xs, ys) at x; NaN outside [min xs, max xs]."""
    pts = sorted(zip(xs, ys))
    if not pts or x < pts[0][0] - 1e-9 or x > pts[-1][0] + 1e-9:
        return math.nan
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 - 1e-9 <= x <= x1 + 1e-9:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1]


def stop_on_frontier(stops: pd.DataFrame, results: pd.DataFrame, method: str = "obs") -> pd.DataFrame:
    """Where each gated run stopped, against ``method``'s frontier of the same seed at that sparsity.

    ``stops``: one row per gated run with seed, final_sparsity, test_accuracy.  ``results``: the frontier's runs
    (method, sparsity, seed, final_sparsity, test_accuracy; ``none`` runs, if there, give the point at sparsity
    0).  The frontier of a seed is the straight line through its runs' (measured sparsity, accuracy); a stop
    outside the measured range has no frontier value (NaN).
    """
    rows = []
    for s in stops.itertuples():
        mine = results[(results["seed"] == s.seed) & results["method"].isin([method, "none"])]
        curve = _interp(float(s.final_sparsity), list(mine["final_sparsity"]), list(mine["test_accuracy"]))
        rows.append({"seed": int(s.seed), "stopped at": float(s.final_sparsity), "accuracy": float(s.test_accuracy),
                     f"{method} frontier there": curve, "stop - frontier": float(s.test_accuracy) - curve})
    return pd.DataFrame(rows, columns=["seed", "stopped at", "accuracy", f"{method} frontier there",
                                       "stop - frontier"])


def frontier_verdict(table: pd.DataFrame, a: str = "obs", b: str = "magnitude",
                     stops: Optional[pd.DataFrame] = None, n_test: Optional[int] = None) -> tuple[list[str], dict]:
    """The notebook's verdict, in sentences built from :func:`frontier_table` (and :func:`stop_on_frontier`).

    The rule is the table's: a target counts as a difference only where the interval ``a - b`` ± t * noise
    (t: Student's t with n - 1 degrees of freedom) excludes 0.  Returns the lines and what they say: ``better``
    and ``worse`` (targets where that interval lies above / below 0), ``within`` (the others), ``verdict``
    (``better``, ``worse``, ``mixed`` or ``not distinguishable``: every interval contains 0, which at a small n
    is not evidence that the two are equal) and, with ``stops``, ``stop_within_noise`` (every stop within 2
    test-set SE of a difference of the frontier at its sparsity, the frontier linearly interpolated between the
    nearest measured targets; None where a stop lies outside the measured range).
    """
    if table.empty:
        raise ValueError("frontier_verdict() needs at least one target with both methods measured")
    col = f"{a} - {b}"
    cell = lambda r: (f"{r['target']:.0%} ({r[col]:+.4f} ± {r['noise']:.4f}, "  # noqa: E731
                      f"interval [{r['ci low']:+.4f}, {r['ci high']:+.4f}])")
    beyond = table[table["beyond the noise"]]
    better = [float(t) for t in beyond.loc[beyond[col] > 0, "target"]]
    worse = [float(t) for t in beyond.loc[beyond[col] < 0, "target"]]
    within = [float(t) for t in table.loc[~table["beyond the noise"], "target"]]
    seeds = int(table["n"].min())
    verdict = ("mixed" if better and worse else "better" if better else "worse" if worse else "not distinguishable")
    big = table.loc[table[col].abs().idxmax()]
    rest = f"; the interval contains 0 at {', '.join(f'{t:.0%}' for t in within)}." if within else "."
    first = {
        "not distinguishable": f"Here {a} is not distinguishable from {b} at this n ({seeds} seed"
                               f"{'s' if seeds != 1 else ''}): the 95 % interval of {a} - {b} contains 0 at every "
                               f"sparsity measured (the largest difference: {cell(big)}"
                               + ("; an interval wider than any difference of two accuracies can be: at this n it "
                                  "says nothing" if big["ci low"] < -1 or big["ci high"] > 1 else "")
                               + "). That is not evidence that they are equal: more seeds would narrow the intervals.",
        "better": f"{a} beats {b} beyond the noise at " + ", ".join(
            cell(r) for _, r in beyond[beyond[col] > 0].iterrows()) + rest,
        "worse": f"{a} is below {b} beyond the noise at " + ", ".join(
            cell(r) for _, r in beyond[beyond[col] < 0].iterrows()) + rest,
        "mixed": f"{a} beats {b} beyond the noise at " + ", ".join(cell(r) for _, r in beyond[beyond[col] > 0].iterrows())
                 + " and is below it at " + ", ".join(cell(r) for _, r in beyond[beyond[col] < 0].iterrows()) + ".",
    }[verdict]
    t = float(table.loc[table["n"] == seeds, "t"].iloc[0])
    how = (f"two-sided 95 %, Student's t with n - 1 = {seeds - 1} degree{'s' if seeds != 2 else ''} of freedom, t = {t:.2f}"
           if seeds > 1 else f"one seed: the normal quantile {t:.2f} on the test-set SE alone, which says nothing "
                             "about another seed")
    lines = [first, f"(± is the noise: paired seed SE and test-set SE combined; the interval is the difference ± t x "
                    f"noise, {how}; {seeds} seed{'s' if seeds != 1 else ''} per cell"
                    f"{', so the seed SE rests on one degree of freedom' if seeds == 2 else ''}.)"]
    found = {"better": better, "worse": worse, "within": within, "verdict": verdict, "seeds": seeds}
    if stops is not None and len(stops):
        diffs = stops["stop - frontier"]
        where = ", ".join(f"{x:.3f}" for x in stops["stopped at"])
        if diffs.isna().any():
            lines.append(f"The bayesian preset's gate stopped at sparsity {where}; at least one stop lies outside the "
                         "measured range, so it cannot be placed on the frontier.")
            found["stop_within_noise"] = None
        else:
            se = [2 * math.sqrt(2) * accuracy_se(float(acc), n_test) if n_test else math.nan for acc in stops["accuracy"]]
            inside = all(abs(d) <= s for d, s in zip(diffs, se)) if n_test else None
            side = "on" if inside else ("above" if diffs.mean() > 0 else "below")
            lines.append(f"The bayesian preset's gate stopped at sparsity {where} (per seed), with accuracy "
                         + ", ".join(f"{x:.4f}" for x in stops["accuracy"]) + f": {diffs.mean():+.4f} against the "
                         f"{a} frontier of the same seed at that sparsity (interpolated linearly between the nearest "
                         "measured targets), " + (
                             f"{side} the frontier (within 2 test-set SE of a difference)" if inside else
                             f"{side} the frontier by more than 2 test-set SE of a difference") + ".")
            found["stop_within_noise"] = inside
    return lines, found


def plot_frontier(results: pd.DataFrame, stops: Optional[pd.DataFrame] = None, methods: Sequence[str] = ("magnitude", "obs"),
                  labels: Optional[Mapping[str, str]] = None, chance: Optional[float] = 0.10, ax=None):
    """Accuracy against measured sparsity: each method's seed mean (line) and runs (dots), the dense runs'
    mean (dashed), the gated runs' stops (stars) and the chance line."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    labels = dict(labels or {})
    for m in methods:
        g = results[results["method"] == m]
        mean = g.groupby("sparsity")[["final_sparsity", "test_accuracy"]].mean().sort_values("final_sparsity")
        line, = ax.plot(mean["final_sparsity"], mean["test_accuracy"], marker="o", label=labels.get(m, m))
        ax.scatter(g["final_sparsity"], g["test_accuracy"], s=12, color=line.get_color(), alpha=0.5)
    dense = results[results["method"] == "none"]
    if len(dense):
        ax.axhline(dense["test_accuracy"].mean(), color="k", ls="--", lw=1, label="dense (MAP)")
    if stops is not None and len(stops):
        ax.scatter(stops["final_sparsity"], stops["test_accuracy"], marker="*", s=220, color="gold", edgecolor="k",
                   zorder=5, label="bayesian preset: where the gate stopped")
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label=f"chance ({chance:.2f})")
    ax.set(xlabel="sparsity (measured)", ylabel="test accuracy", title="Accuracy vs sparsity: magnitude vs posterior")
    ax.legend(fontsize=8, loc="lower left")
    return ax
