"""Figures in the layout of the paper's Figures 4, 7 and 10.

Left panel: train/test loss (solid/dashed) with test accuracy on a twin axis.
Right panel: the Bayes factor on a symmetric-log axis (x: accepted steps, o: refused ones) and the
sparsity: after each epoch's step (dashed), just before it (dotted: regrowth shows as a dip)
and what the schedule proposed (small triangles), so a refused step is visible as a
proposal above the curve.
Bayes factors of whole data sets are astronomically large or small numbers
(e^±1000 is common), so we plot log10 BF, on a symmetric-log axis (linear within ±1, logarithmic
beyond), so that a step of a few nats and one of a thousand both show.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import pandas as pd

Histories = Union[pd.DataFrame, Mapping[str, pd.DataFrame]]


def _as_mapping(histories: Histories) -> dict[str, pd.DataFrame]:
    if isinstance(histories, pd.DataFrame):
        return {"run": histories}
    return dict(histories)


def draw_curves(runs: Mapping[str, pd.DataFrame], axes, beta: Optional[float] = None, legend: str = "lines",
                chance: Optional[float] = None) -> None:
    """Draw learning curves onto ``axes`` = (loss, accuracy twin, Bayes factor, sparsity twin).

    The one drawing of the figure: :func:`plot_curves` and the dashboard's live figure both call it.
    ``legend="lines"`` names every line; ``"runs"`` one entry per run, the line styles named in the titles.
    ``chance``: an accuracy to mark on the accuracy axis (e.g. 0.10 for 10 classes; None: no line).
    """
    import matplotlib

    ax_loss, ax_acc, ax_bf, ax_sp = axes
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    per_run = []
    for i, (label, h) in enumerate(runs.items()):
        h = pd.DataFrame(h) if isinstance(h, list) else h
        c = colors[i % len(colors)]
        if len(h) == 0:
            continue
        per_run.append(ax_loss.plot(h["epoch"], h["train_loss"], color=c, ls="-", label=f"{label} train loss")[0])
        ax_loss.plot(h["epoch"], h["test_loss"], color=c, ls="--", label=f"{label} test loss")
        ax_acc.plot(h["epoch"], h["test_acc"], color=c, ls=":", marker=".", label=f"{label} test acc")
        log10_bf = h["log_bf"] / math.log(10)
        if log10_bf.notna().any():
            ax_bf.plot(h["epoch"], log10_bf, color=c, lw=1, alpha=0.7, label=f"{label} log10 BF")  # marks: below
            pruned = h[h["pruned"].astype(bool)]
            ax_bf.scatter(pruned["epoch"], pruned["log_bf"] / math.log(10), color=c, marker="x", s=30)
            refused = h[h["gate_open"].astype(bool) & ~h["pruned"].astype(bool)]
            ax_bf.scatter(refused["epoch"], refused["log_bf"] / math.log(10), facecolors="none", edgecolors=c,
                          marker="o", s=40)
        ax_sp.plot(h["epoch"], h["sparsity"], color=c, ls="--", label=f"{label} sparsity")
        if "sparsity_before" in h and (h["sparsity_before"] - h["sparsity"]).abs().max() > 1e-9:
            ax_sp.plot(h["epoch"], h["sparsity_before"], color=c, ls=":", label=f"{label} sparsity before step")
        if "candidate_sparsity" in h and h["candidate_sparsity"].notna().any():
            ax_sp.scatter(h["epoch"], h["candidate_sparsity"], color=c, marker="^", s=14, alpha=0.6,
                          label=f"{label} proposed")
    if chance is not None:
        ax_acc.axhline(chance, color="grey", lw=0.8, ls="-.", label=f"chance ({chance:.2f})")
    if beta is not None and beta > 0:
        ax_bf.axhline(math.log10(beta), color="grey", lw=0.8, ls=":", label="threshold log10 beta")
    ax_bf.set_yscale("symlog", linthresh=1.0)  # log BFs span from about 0 to thousands of nats
    ax_acc.set_ylabel("test accuracy")
    ax_sp.set_ylabel("sparsity (measured)")
    ax_sp.set_ylim(-0.02, 1.02)
    if legend == "runs":
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss",
                    title="loss (solid: train, dashed: test), test accuracy (dotted)")
        ax_bf.set(xlabel="epoch", ylabel="log10 Bayes factor",
                  title="log10 BF (x kept, o refused), sparsity (dashed), proposed (^)")
        if per_run:
            ax_loss.legend(handles=per_run, labels=[ln.get_label().removesuffix(" train loss") for ln in per_run],
                           fontsize=7, loc="center right")
        return
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss and test accuracy")
    ax_bf.set(xlabel="epoch", ylabel="log10 Bayes factor (x accepted, o refused)", title="Bayes factor and sparsity")
    for a, b, loc in ((ax_loss, ax_acc, "center right"), (ax_bf, ax_sp, "center right")):
        h1, l1 = a.get_legend_handles_labels()
        h2, l2 = b.get_legend_handles_labels()
        if h1 or h2:
            a.legend(h1 + h2, l1 + l2, fontsize=7, loc=loc)


def plot_curves(histories: Histories, title: str = "", beta: Optional[float] = None, fig=None, ax=None,
                legend: str = "lines", chance: Optional[float] = None):
    """Two-panel learning curves for one history or several overlaid (label -> history).

    ``ax``: a pair of axes (loss, Bayes factor) to draw into (their twin axes are added), or the four axes
    (loss, accuracy twin, Bayes factor, sparsity twin) of an earlier call to draw into again: the dashboard's
    live figure is this function, called each epoch on the axes it made once.  Otherwise ``fig`` (cleared)
    or a new figure.  ``legend`` and ``chance`` (an accuracy line, e.g. 0.10): see :func:`draw_curves`.
    Returns the figure.
    """
    if ax is not None and len(ax) == 4:
        axes = tuple(ax)
        fig = axes[0].figure
    elif ax is not None:
        ax_loss, ax_bf = ax
        fig = ax_loss.figure
        axes = (ax_loss, ax_loss.twinx(), ax_bf, ax_bf.twinx())
    else:
        if fig is None:
            import matplotlib.pyplot as plt

            fig = plt.figure(figsize=(12, 4.2))
        fig.clear()
        ax_loss, ax_bf = fig.subplots(1, 2)
        axes = (ax_loss, ax_loss.twinx(), ax_bf, ax_bf.twinx())
    draw_curves(_as_mapping(histories), axes, beta, legend, chance)
    if title:
        fig.suptitle(title)
    if ax is None:
        fig.tight_layout()
    return fig
