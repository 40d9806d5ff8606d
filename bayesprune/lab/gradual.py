"""The gradual schedule against the paper, and the gate at matched sparsity (notebook 04).

Under ``final_prune="target"`` every step the gate refuses is left to the last epoch, which
prunes all the rest at once: :func:`forced_steps` measures how far each run was from its target
when that forced step came.  :func:`gradual_verdict` turns the paired Bayes-vs-plain differences
into the sentences notebook 04 prints, with the paper's claim beside them.  With
``final_prune="gate"`` the run ends where the gate stopped (:func:`gate_stop`), and
:func:`matched_comparison` compares it, seed by seed, with plain pruning to that same sparsity.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import pandas as pd

from ..analysis.stats import difference

#: What the paper says about its Table 1 (Mathew & Rowe 2023, section 5), quoted.
PAPER_CLAIM = ("It outperforms unpruned networks and shows comparable or better accuracy compared to traditional "
               "neural network pruning techniques.")


def gate_stop(history: pd.DataFrame) -> float:
    """The sparsity a gated run ended at by its own decisions: its last accepted proposal (0 if it accepted none)."""
    h = history[history["candidate_sparsity"].notna()]
    real = h[h["candidate_sparsity"] > h["sparsity_before"] + 1e-9]  # proposals that would prune something new
    accepted = real[real["pruned"].astype(bool) & ~real["forced"].astype(bool)]
    return float(accepted["candidate_sparsity"].iloc[-1]) if len(accepted) else 0.0


def forced_steps(hist: pd.DataFrame) -> pd.DataFrame:
    """Per run: the sparsity it had before its last epoch's forced step, and what that step added.

    ``hist``: ``bp.histories_table`` rows (one per epoch, with key, method, target_sparsity, seed).
    Runs whose last epoch was not forced show ``forced=False`` and a jump of 0.
    """
    rows = []
    for key, h in hist.sort_values("epoch").groupby("key", sort=False):
        last = h.iloc[-1]
        forced = bool(last.get("forced", False))
        rows.append({"key": key, "method": last["method"], "target": float(last["target_sparsity"]),
                     "seed": int(last["seed"]), "forced": forced, "before_last": float(last["sparsity_before"]),
                     "last_jump": float(last["sparsity"] - last["sparsity_before"]) if forced else 0.0})
    return pd.DataFrame(rows)


COLLAPSE_MARGIN = 0.05  # an accuracy within this of chance is a collapsed network


def gradual_verdict(verdicts: pd.DataFrame, jumps: pd.DataFrame, schedule: str = "gradual",
                    chance: Optional[float] = None) -> tuple[list[str], dict]:
    """Notebook 04's sentences on the gradual schedule: which way Bayes differs from plain, against the paper, and why.

    ``verdicts``: section 3's table (schedule, pruning, sparsity, ``bayes - plain``, ``within the noise``, and
    optionally the mean accuracies ``bayes acc`` and ``plain acc``); ``jumps``: :func:`forced_steps` of the same
    runs.  With ``chance`` (1 / classes) and the accuracy columns, a tie where either side's mean accuracy is
    within ``COLLAPSE_MARGIN`` of chance is named as one with a collapsed network: it says nothing about the gate.
    Returns the lines and a dict of what they say (below, above, within: the cells as ``"kind at sparsity"``;
    collapsed_ties: the within-the-noise cells with a collapsed network; contradicts_paper: Bayes below plain
    beyond the noise somewhere).
    """
    v = verdicts[verdicts["schedule"] == schedule]
    cell = lambda r: f"{r['pruning']} at {r['sparsity']:.0%} ({r['bayes - plain']:+.4f})"  # noqa: E731
    below = [cell(r) for _, r in v.iterrows() if not r["within the noise"] and r["bayes - plain"] < 0]
    above = [cell(r) for _, r in v.iterrows() if not r["within the noise"] and r["bayes - plain"] > 0]
    within = len(v) - len(below) - len(above)
    collapsed = []
    if chance is not None and {"bayes acc", "plain acc"} <= set(v.columns):
        collapsed = [f"{r['pruning']} at {r['sparsity']:.0%} (Bayes {r['bayes acc']:.4f}, plain {r['plain acc']:.4f})"
                     for _, r in v.iterrows() if r["within the noise"]
                     and min(r["bayes acc"], r["plain acc"]) < chance + COLLAPSE_MARGIN]
    ties = (f" ({len(collapsed)} of them with a collapsed network, within {COLLAPSE_MARGIN} of chance {chance:.2f}: "
            f"{'; '.join(collapsed)}; such a tie says nothing about the gate)") if collapsed else ""
    lines = [f"{schedule}, final_prune='target': Bayes below its plain twin beyond the noise in {len(below)} of {len(v)} "
             f"cells" + (f" ({'; '.join(below)})" if below else "") + f", above it in {len(above)}"
             + (f" ({'; '.join(above)})" if above else "") + f", within the noise in {within}{ties}."]
    contradicts = bool(below) and not above
    if below:
        lines.append("The paper: \"" + PAPER_CLAIM + "\" " + (
            "Here, under the gradual schedule, it is the other way round where the two differ." if contradicts else
            "Here the gradual schedule gives results both ways."))
    elif not above:
        lines.append("No cell differs beyond the noise: this run neither supports nor contradicts the paper's claim.")
    steps = jumps[jumps["forced"].astype(bool)] if len(jumps) else None
    for kind in sorted(set(v["pruning"])) if steps is not None else ():
        for r in sorted(set(v["sparsity"])):
            b = steps[(steps["method"] == f"bayes-{kind}") & ((steps["target"] - r).abs() < 1e-9)]
            p = steps[(steps["method"] == kind) & ((steps["target"] - r).abs() < 1e-9)]
            if len(b) and len(p):
                lines.append(f"  {kind} at {r:.0%}: before the forced last step the Bayes runs stood at sparsity "
                             f"{b['before_last'].mean():.3f} (plain: {p['before_last'].mean():.3f}); the last epoch "
                             f"pruned {b['last_jump'].mean():.3f} at once, with no epoch left to recover")
    return lines, {"below": below, "above": above, "within": within, "collapsed_ties": collapsed,
                   "contradicts_paper": contradicts}


def matched_comparison(gated: Mapping[int, tuple[float, float]], plain: Mapping[int, float], n_test: int,
                       names: Sequence[str] = ("gated", "plain")):
    """Paired over seeds: a gated run (its stop, its accuracy) against plain pruning to the same sparsity.

    ``gated``: seed -> (sparsity it stopped at, test accuracy); ``plain``: seed -> test accuracy of the plain run
    pruned to that seed's stop (the dense network where the gate stopped at 0).  Returns ``stats.difference``.
    """
    seeds = sorted(gated)
    if set(seeds) != set(plain):
        raise ValueError(f"gated seeds {seeds} and plain seeds {sorted(plain)} differ: allowed the same seeds")
    return difference([gated[s][1] for s in seeds], [plain[s] for s in seeds], paired=True, n_test=n_test,
                      names=tuple(names))


def gated_against_matched(base, sparsities: Sequence[float], seeds: Sequence[int], out_dir, method: str = "magnitude",
                          progress: bool = True) -> pd.DataFrame:
    """Run ``bayes-<method>`` gradual with ``final_prune="gate"``, then plain ``<method>`` to each run's stop.

    ``base``: the sweep's base ``RunConfig`` (its prior, epochs, data).  Both sides use the gradual schedule and the
    same seed; the plain run is forced to the sparsity the gated run of its seed stopped at (the dense baseline where
    the gate stopped at 0).  Runs go through ``bp.sweep`` into ``out_dir``, so they are cached like the grid's.
    One row per (target, seed): stop, gated and plain test accuracy.
    """
    from ..runs.results import histories_table
    from ..runs.sweeps import grid, sweep

    quiet = lambda m: None  # noqa: E731
    gradual = base.replace(schedule="gradual", gate="immediate")
    gated = sweep(grid(gradual.replace(final_prune="gate"), methods=[f"bayes-{method}"], sparsities=sparsities,
                       seeds=seeds), out_dir, progress=progress, log=quiet)
    hist = histories_table(out_dir)
    stops = {(float(r.sparsity), int(r.seed)): (gate_stop(hist[hist.key == r.key]), float(r.test_accuracy))
             for r in gated.itertuples()}
    plain_cfgs = {k: (gradual.replace(final_prune="target", method=method, sparsity=round(s, 4), seed=k[1]) if s > 0
                      else base.replace(method="none", seed=k[1])) for k, (s, _) in stops.items()}
    plain = sweep(list(plain_cfgs.values()), out_dir, progress=progress, log=quiet)
    acc = {row.key: float(row.test_accuracy) for row in plain.itertuples()}
    rows = [{"target": k[0], "seed": k[1], "gate stopped at": s, "gated accuracy": a,
             "plain accuracy": acc[plain_cfgs[k].key()]} for k, (s, a) in sorted(stops.items())]
    return pd.DataFrame(rows)


def matched_lines(table: pd.DataFrame, n_test: int) -> tuple[list[str], dict]:
    """Per target: where the gate stopped and the paired difference to plain pruning at that sparsity, in words."""
    lines, found = [], {}
    for r, g in table.groupby("target"):
        d = matched_comparison({int(s): (float(x), float(a)) for s, x, a in
                                zip(g["seed"], g["gate stopped at"], g["gated accuracy"])},
                               dict(zip(g["seed"].astype(int), g["plain accuracy"])), n_test,
                               names=("gated", "plain at the same sparsity"))
        stops = ", ".join(f"{s:.3f}" for s in g["gate stopped at"])
        lines.append(f"target {r:.0%}: the gate stopped at {stops} (per seed); {d.text}")
        found[float(r)] = {"stops": g["gate stopped at"].tolist(), "difference": d.mean, "within_noise": d.within_noise}
    return lines, found


def paper_differences(paper: pd.DataFrame, dataset: str, model: str, n_test: int, ours=None) -> pd.DataFrame:
    """The paper's Bayes - plain differences for one data set and model, beside the test-set noise of a difference.

    ``paper``: ``bp.paper_table1()`` (dataset, model, sparsity, method, accuracy).  The noise: the binomial SE of
    the difference of two independent accuracies on ``n_test`` images, sqrt(p1(1-p1)/n + p2(1-p2)/n); "beyond 2 se"
    where |difference| > 2 SE.  ``ours``: a ``bp.table1`` of the same data set and model, whose seed std is added.
    """
    import math

    p = paper[(paper["dataset"] == dataset) & (paper["model"] == model)]
    rows = []
    for r, g in p.groupby("sparsity"):
        acc = dict(zip(g["method"], g["accuracy"]))
        for kind in ("random", "magnitude"):
            if kind not in acc or f"bayes-{kind}" not in acc:
                continue
            a, b = float(acc[f"bayes-{kind}"]), float(acc[kind])
            se = math.sqrt(a * (1 - a) / n_test + b * (1 - b) / n_test)
            row = {"sparsity": float(r), "pruning": kind, "paper bayes - plain": a - b, "test-set se": se,
                   "beyond 2 se": abs(a - b) > 2 * se}
            if ours is not None:
                match = ours[(ours[("sparsity", "")] - float(r)).abs() < 1e-6]
                if len(match):
                    row["our seed std"] = float(match[(kind, "std")].iloc[0])
            rows.append(row)
    return pd.DataFrame(rows, columns=["sparsity", "pruning", "paper bayes - plain", "test-set se", "beyond 2 se"]
                        + (["our seed std"] if ours is not None else []))
