"""Where does the gate matter?  Grids and summaries for the gated gradual schedule.

With the gradual schedule and ``final_prune="gate"`` the target is a ceiling:
each epoch proposes a bigger sparsity and the Bayes factor accepts or refuses it,
so the run *ends* at a sparsity the gate chose.  These helpers build the grids
(prior sigma x threshold beta; Bayes vs plain; plain runs at fixed targets as the
accuracy/sparsity frontier) and summarise a sweep's results into the numbers the
README and notebook 04 show: the chosen sparsity and the accuracy, mean ± std
over seeds, and whether a gated run beats the frontier.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..core.config import RunConfig
from .stats import summarize

GATED = dict(schedule="gradual", final_prune="gate", gate="immediate")


def gate_grid(base: RunConfig, sigmas: Iterable[float], betas: Iterable[float], seeds: Iterable[int],
              method: str = "bayes-magnitude", ceiling: float = 0.99) -> list[RunConfig]:
    """The sigma x beta heat map: gated gradual runs whose target is only a ceiling."""
    return [base.replace(method=method, sparsity=ceiling, prior_sigma=float(s), beta=float(b), seed=int(seed),
                         **GATED)
            for s in sigmas for b in betas for seed in seeds]


def frontier_grid(base: RunConfig, targets: Iterable[float], seeds: Iterable[int],
                  method: str = "magnitude") -> list[RunConfig]:
    """Plain gradual runs at fixed targets: the accuracy/sparsity frontier the gate must beat."""
    return [base.replace(method=method, sparsity=float(t), seed=int(seed), schedule="gradual", final_prune="gate",
                         gate="immediate") for t in targets for seed in seeds]


def mean_std(values: pd.Series) -> tuple[float, float, int]:
    """(mean, sample std, n) of the seeds (:func:`bayesprune.analysis.stats.summarize`: NaN is an error)."""
    if len(values) == 0:
        return math.nan, math.nan, 0
    s = summarize(values)
    return s.mean, s.sd, s.n


def summarize_gate(results: pd.DataFrame) -> pd.DataFrame:
    """Per (method, prior_sigma, beta, target): chosen sparsity and accuracy, mean/std/n over seeds."""
    ok = results[results["status"] == "ok"]
    rows = []
    for (method, sigma, beta, target), g in ok.groupby(["method", "prior_sigma", "beta", "sparsity"]):
        sp, sp_sd, n = mean_std(g["final_sparsity"])
        acc, acc_sd, _ = mean_std(g["test_accuracy"])
        rows.append({"method": method, "prior_sigma": sigma, "beta": beta, "target": target,
                     "sparsity": sp, "sparsity_std": sp_sd, "accuracy": acc, "accuracy_std": acc_sd, "n": n})
    return pd.DataFrame(rows)


def frontier(results: pd.DataFrame, method: str = "magnitude") -> pd.DataFrame:
    """The plain method's mean accuracy at each achieved sparsity (sorted), with std."""
    s = summarize_gate(results[results["method"] == method])
    return s.groupby("target", as_index=False).first().sort_values("sparsity")[
        ["target", "sparsity", "sparsity_std", "accuracy", "accuracy_std", "n"]]


def beats_frontier(point_sparsity: float, point_acc: float, point_std: float, front: pd.DataFrame) -> float:
    """How many standard errors a gated point lies above the frontier interpolated at its sparsity.

    Positive: above the plain method's curve; the combined standard error uses both spreads.
    NaN outside the frontier's sparsity range.
    """
    xs, ys, sds, ns = (front[c].to_numpy(float) for c in ("sparsity", "accuracy", "accuracy_std", "n"))
    if len(xs) < 2 or not xs[0] <= point_sparsity <= xs[-1]:
        return math.nan
    y = float(np.interp(point_sparsity, xs, ys))
    se_front = float(np.interp(point_sparsity, xs, np.nan_to_num(sds) / np.sqrt(ns)))
    return (point_acc - y) / max(math.hypot(point_std, se_front), 1e-12)


def plot_gate_heatmap(summary: pd.DataFrame, title: str = ""):
    """Two heat maps over (beta, sigma): the sparsity the gate chose and the accuracy, mean ± std."""
    import matplotlib.pyplot as plt

    sigmas = sorted(summary["prior_sigma"].unique())
    betas = sorted(summary["beta"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, col, label, cmap, fmt in ((axes[0], "sparsity", "sparsity the gate chose", "viridis", ".3f"),
                                      (axes[1], "accuracy", "test accuracy", "magma", ".3f")):
        grid = np.full((len(sigmas), len(betas)), np.nan)
        sd = np.full_like(grid, np.nan)
        for _, r in summary.iterrows():
            i, j = sigmas.index(r["prior_sigma"]), betas.index(r["beta"])
            grid[i, j], sd[i, j] = r[col], r[f"{col}_std"]
        im = ax.imshow(grid, cmap=cmap, aspect="auto", origin="lower")
        for i in range(len(sigmas)):
            for j in range(len(betas)):
                if not math.isnan(grid[i, j]):
                    txt = f"{grid[i, j]:{fmt}}" + ("" if math.isnan(sd[i, j]) else f"\n± {sd[i, j]:{fmt}}")
                    ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                            color="white" if grid[i, j] < np.nanmean(grid) else "black")
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.set_yticks(range(len(sigmas)), [f"{s:g}" for s in sigmas])
        ax.set(xlabel="threshold beta", ylabel="prior sigma", title=label)
        fig.colorbar(im, ax=ax, shrink=0.85)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_frontier(results: pd.DataFrame, gated: pd.DataFrame, plain_method: str = "magnitude", title: str = ""):
    """Accuracy vs achieved sparsity: plain runs at fixed targets (the line) and gated runs (points)."""
    import matplotlib.pyplot as plt

    front = frontier(results, plain_method)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.errorbar(front["sparsity"], front["accuracy"], yerr=front["accuracy_std"], marker="o", color="black",
                capsize=3, label=f"{plain_method}, fixed targets (mean ± std)")
    for sigma, g in gated.groupby("prior_sigma"):
        ax.errorbar(g["sparsity"], g["accuracy"], xerr=g["sparsity_std"], yerr=g["accuracy_std"], ls="none",
                    marker="s", capsize=2, label=f"gated, sigma={sigma:g} (each beta)")
    ax.set(xlabel="achieved sparsity", ylabel="final test accuracy", title=title or "Does the gate find a better point?")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def compare_bayes_plain(results: pd.DataFrame, targets: Sequence[float]) -> pd.DataFrame:
    """Bayes vs plain at each target: accuracy and sparsity mean ± std, and the difference in units of its std."""
    rows = []
    ok = results[results["status"] == "ok"]
    for kind in ("magnitude", "random"):
        for t in targets:
            a = ok[(ok["method"] == kind) & (ok["sparsity"] == t)]
            b = ok[(ok["method"] == f"bayes-{kind}") & (ok["sparsity"] == t)]
            if not len(a) or not len(b):
                continue
            pa, pb = mean_std(a["test_accuracy"]), mean_std(b["test_accuracy"])
            sa, sb = mean_std(a["final_sparsity"]), mean_std(b["final_sparsity"])
            se = math.sqrt((pa[1] ** 2 / pa[2] if pa[2] > 1 else 0) + (pb[1] ** 2 / pb[2] if pb[2] > 1 else 0))
            rows.append({"pruning": kind, "target": t, "plain_acc": pa[0], "plain_acc_std": pa[1],
                         "bayes_acc": pb[0], "bayes_acc_std": pb[1], "plain_sparsity": sa[0],
                         "bayes_sparsity": sb[0], "bayes_sparsity_std": sb[1], "n": min(pa[2], pb[2]),
                         "diff": pb[0] - pa[0], "diff_in_se": (pb[0] - pa[0]) / se if se > 0 else math.nan})
    return pd.DataFrame(rows)
