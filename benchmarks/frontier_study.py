"""The accuracy-vs-sparsity frontier: magnitude against the posterior criterion, and where the evidence stops.

    python benchmarks/frontier_study.py --dataset digits --seeds 0 1 2              # the quick version
    OMP_NUM_THREADS=1 python benchmarks/frontier_study.py --dataset mnist --data-dir ../shared/data \\
        --epochs 5 --seeds 0 1 --sparsities 0.99 0.98 0.9 --set bf_samples=1024 --workers 2

Variants, each at every target sparsity and seed (persistent masks, the run's own defaults otherwise):

  one-shot magnitude              every pruning epoch proposes the target, each layer to r
  gradual magnitude layer/global  Zhu & Gupta's cubic ramp; per layer or one threshold over all weights
  gradual obs layer/global        the same ramp, ranked by the posterior saliency w^2 / (2 Sigma_pp)

each without MAP (maximum-likelihood training; obs's prior precision fitted to the evidence at each step)
and with MAP (train_prior=map, prior refitted to the Laplace evidence, prior_fit=marglik).  Plus the
``bayesian`` preset (RunConfig.preset), which chooses its own sparsity: its stop is marked on the frontier.

Resumable: the runs live in <out>/runs/ (a finished run is never redone).  Writes <out>/frontier.md,
<out>/summary.json and the figure --figure (PNG).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import pandas as pd

import bayesprune as bp
from bayesprune.analysis.stats import fmt, paired_t_test
from bayesprune.core.config import PRESETS
from bayesprune.runs.fileio import atomic_write_json, atomic_write_text
from bayesprune.runs.sweeps import sweep_local

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_table1 import parse_set  # noqa: E402

SCHEMES = {
    "one-shot magnitude": dict(method="magnitude", schedule="one-shot", scope="layer"),
    "gradual magnitude layer": dict(method="magnitude", schedule="gradual", scope="layer"),
    "gradual magnitude global": dict(method="magnitude", schedule="gradual", scope="global"),
    "gradual obs layer": dict(method="obs", schedule="gradual", scope="layer"),
    "gradual obs global": dict(method="obs", schedule="gradual", scope="global"),
}
TRAINING = {"ML": dict(train_prior="none", prior_fit="marglik"), "MAP": dict(train_prior="map", prior_fit="marglik")}
PRESET = "bayesian preset (gate stops)"
#: Published anchors, MNIST LeNet-300-100: (error %, weights kept %), from the Sparse VD paper's table and SNIP's Table 1.
ANCHORS = [("Sparse VD", 1.92, 1.5), ("DNS", 1.99, 1.8), ("L-OBS", 2.0, 1.5), ("SNIP", 2.4, 2.0)]


def configs(base: bp.RunConfig, sparsities, seeds, trainings,
            schemes=tuple(SCHEMES)) -> tuple[list[bp.RunConfig], dict[str, tuple[str, str]]]:
    """The grid, highest sparsity first (the cells that matter most finish first), and key -> (scheme, training)."""
    out, label = [], {}
    for cfg in [base.replace(**_preset_protocol(), seed=int(s)) for s in seeds]:
        out.append(cfg)
        label[cfg.key()] = (PRESET, "MAP")
    for r in sorted(sparsities, reverse=True):
        for train in trainings:
            for scheme, fields in SCHEMES.items():
                if scheme not in schemes:
                    continue
                for s in seeds:
                    cfg = base.replace(**fields, **TRAINING[train], sparsity=float(r), seed=int(s))
                    out.append(cfg)
                    label[cfg.key()] = (scheme, train)
    return out, label


def _preset_protocol() -> dict:
    """The preset's fields on the study's protocol: its ramp starts where the other gradual runs' does."""
    return {k: v for k, v in PRESETS["bayesian"].items() if k not in ("prune_start_epoch", "prune_end_epoch")}


def summarise(ok: pd.DataFrame, n_test: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(cells: mean accuracy per variant and target; paired obs-vs-magnitude differences; the preset's stops)."""
    grid = ok[ok["scheme"] != PRESET]
    rows = []
    for (scheme, train, r), g in grid.groupby(["scheme", "training", "sparsity"], sort=False):
        rows.append({"scheme": scheme, "training": train, "target": r, "kept %": 100 * (1 - g["final_sparsity"].mean()),
                     "accuracy": g["test_accuracy"].mean(), "text": fmt(g["test_accuracy"]), "n": len(g),
                     "seeds": " ".join(str(s) for s in sorted(g["seed"]))})
    cells = pd.DataFrame(rows)
    diffs = []
    for train in grid["training"].unique():
        for scope in ("layer", "global"):
            for r in sorted(grid["sparsity"].unique()):
                a = grid[(grid.scheme == f"gradual obs {scope}") & (grid.training == train) & (grid.sparsity == r)]
                b = grid[(grid.scheme == f"gradual magnitude {scope}") & (grid.training == train) & (grid.sparsity == r)]
                both = sorted(set(a.seed) & set(b.seed))
                if len(both) < 1:
                    continue
                av = a.set_index("seed").loc[both, "test_accuracy"]
                bv = b.set_index("seed").loc[both, "test_accuracy"]
                row = {"training": train, "scope": scope, "target": r, "n": len(both),
                       "obs - magnitude": float((av - bv).mean())}
                if len(both) >= 2:
                    t = paired_t_test(list(av), list(bv))
                    row.update({"paired SE": t.se, "p": t.p})
                else:
                    row.update({"paired SE": math.nan, "p": math.nan})
                diffs.append(row)
    diff = pd.DataFrame(diffs)
    stops = ok[ok["scheme"] == PRESET][["seed", "final_sparsity", "test_accuracy"]].sort_values("seed")
    stops = stops.assign(seed=stops["seed"].astype(int).astype(str))  # a label, not a number to format
    stops = stops.assign(**{"kept %": 100 * (1 - stops["final_sparsity"])})
    se = math.sqrt(0.98 * 0.02 / n_test) if n_test else math.nan
    diff.attrs["test_se_at_98"] = se
    return cells, diff, stops


def _md(df: pd.DataFrame, digits: int = 4) -> str:
    if df.empty:
        return "(no finished runs)"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("not run")
            else:
                cells.append(f"{v:.{digits}f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(ok: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    grid = ok[ok["scheme"] != PRESET]
    for (scheme, train), g in grid.groupby(["scheme", "training"], sort=False):
        m = g.groupby("sparsity").agg(kept=("final_sparsity", lambda s: 100 * (1 - s.mean())),
                                      acc=("test_accuracy", "mean")).sort_values("kept")
        ax.plot(m["kept"], m["acc"], marker="o", ms=3, lw=1.2, ls="-" if train == "MAP" else "--",
                label=f"{scheme}, {train}")
    stops = ok[ok["scheme"] == PRESET]
    if len(stops):
        ax.scatter(100 * (1 - stops["final_sparsity"]), stops["test_accuracy"], marker="*", s=140, color="k",
                   zorder=5, label="bayesian preset: where the evidence stopped (one star a seed)")
    ax.set_xscale("log")
    ax.set_xlabel("weights kept (%), log scale")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits", choices=bp.CHOICES["dataset"])
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA") or "../shared/data")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75, 0.9, 0.95, 0.98, 0.99])
    ap.add_argument("--training", nargs="+", default=["ML", "MAP"], choices=list(TRAINING))
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES), metavar="SCHEME",
                    help="a subset of the variants (quote each name), default all: " + ", ".join(SCHEMES))
    ap.add_argument("--no-preset", action="store_true", help="leave out the bayesian preset's runs")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=None, help="default benchmarks/results/frontier_<dataset>")
    ap.add_argument("--figure", default=None, help="default docs/frontier_<dataset>.png")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="other RunConfig fields")
    ap.add_argument("--report-only", action="store_true", help="summarise the finished runs; train nothing")
    args = ap.parse_args()
    out = Path(args.out or f"benchmarks/results/frontier_{args.dataset}")
    figure = Path(args.figure or f"docs/frontier_{args.dataset}.png")
    base = bp.RunConfig(dataset=args.dataset, epochs=args.epochs, data_dir=args.data_dir, **parse_set(args.set))
    cfgs, label = configs(base, args.sparsities, args.seeds, args.training, args.schemes)
    if args.no_preset:
        cfgs = [c for c in cfgs if label[c.key()][0] != PRESET]
    data = bp.load_dataset(base)
    t0 = time.perf_counter()
    if args.report_only:
        df = bp.results_table(out)
    else:
        df = sweep_local(cfgs, out, workers=args.workers, threads=1)
    wall = time.perf_counter() - t0
    ok = df[(df["status"] == "ok") & df["key"].isin(label)].copy()
    ok["scheme"] = ok["key"].map(lambda k: label[k][0])
    ok["training"] = ok["key"].map(lambda k: label[k][1])
    cells, diff, stops = summarise(ok, data.n_test)
    run_seconds = float(ok["seconds"].sum()) if "seconds" in ok else math.nan
    protocol = (f"{args.dataset} / FCN {list(base.fcn_hidden)}, {args.epochs} epochs, seeds {args.seeds}, "
                f"targets {sorted(args.sparsities)}, bf_samples={base.bf_samples}, persistent masks, gradual ramp "
                f"from epoch {base.prune_start_epoch} to {base.end_epoch}; {len(ok)} of {len(cfgs)} runs finished; "
                f"sum of run times {run_seconds:.0f} s" + (" (a report of the runs in the folder: the cells marked "
                "'not run' were not trained)" if args.report_only else f" (OMP_NUM_THREADS=1, {args.workers} worker(s))"))
    pivot = cells.pivot_table(index=["scheme", "training"], columns="target", values="text", aggfunc="first",
                              sort=False).reset_index() if len(cells) else cells
    pivot.columns = [f"{100 * c:g} %" if isinstance(c, float) else c for c in pivot.columns]
    kept = cells.pivot_table(index=["scheme", "training"], columns="target", values="kept %", aggfunc="first",
                             sort=False).reset_index() if len(cells) else cells
    kept.columns = [f"{100 * c:g} %" if isinstance(c, float) else c for c in kept.columns]
    anchors = pd.DataFrame([{"method": m, "error %": e, "weights kept %": k, "accuracy": 1 - e / 100}
                            for m, e, k in ANCHORS])
    md = [f"Protocol: {protocol}.", "",
          "Test accuracy (mean over seeds; n=2 lists both, n>=3 gives ± SE) at each target sparsity:", "",
          _md(pivot), "", "Weights kept (%, mean), the x axis of the figure:", "", _md(kept, 2), "",
          "Posterior criterion minus magnitude, same schedule, scope, training and seeds (paired):", "",
          _md(diff), "",
          f"Test-set noise: one binomial SE at accuracy 0.98 on {data.n_test} test images is "
          f"{diff.attrs.get('test_se_at_98', math.nan):.4f}.", "",
          "Where the `bayesian` preset's gate stopped (one row a seed):", "", _md(stops), ""]
    if args.dataset == "mnist":
        md += ["Published anchors, MNIST LeNet-300-100 (not run here):", "", _md(anchors, 3), ""]
    text = "\n".join(md)
    atomic_write_text(out / "frontier.md", text)
    atomic_write_json(out / "summary.json", {
        "command": " ".join([Path(sys.executable).name] + sys.argv), "protocol": protocol,
        "wall_seconds_this_call": round(wall, 1), "sum_run_seconds": run_seconds,
        "cells": cells.to_dict(orient="records"), "differences": diff.to_dict(orient="records"),
        "preset_stops": stops.to_dict(orient="records")}, indent=2)
    if len(ok):
        plot(ok, figure, f"{args.dataset} FCN, {args.epochs} epochs: accuracy vs weights kept")
    print(text)
    return 0 if len(ok) == len(cfgs) else 1


if __name__ == "__main__":
    sys.exit(main())
