"""Where does the Bayes-factor gate matter?  (gradual schedule; the target is a ceiling)

    python benchmarks/gate_study.py --dataset digits --seeds 0 1 2
    python benchmarks/gate_study.py --dataset mnist --data-dir ../shared/data --seeds 0 1 2 --compare-sigma 0.1

Three grids, one resumable sweep folder (benchmarks/results/gate_<dataset>_<model>/):
  heatmap   bayes-magnitude, gradual, final_prune=gate, gate=immediate, ceiling 0.99,
            prior sigma x beta: the sparsity the gate chose, and the accuracy there;
  frontier  plain magnitude, gradual, at fixed targets: the accuracy/sparsity curve a gate must beat;
  compare   Bayes vs plain (random and magnitude) at 90 % and 99 %, gradual, final_prune=target,
            at --compare-sigma: does the gate beat its plain twin by more than 2 standard errors?
Writes summary.json, heatmap.png, frontier.png and gate_study.md (tables) next to the runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

import bayesprune as bp
from bayesprune.analysis import studies
from bayesprune.analysis.report import markdown_table, save_figure
from bayesprune.runs.fileio import atomic_write_json, atomic_write_text
from bayesprune.runs.sweeps import sweep_local


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits", choices=bp.CHOICES["dataset"])
    ap.add_argument("--model", default="fcn", choices=bp.CHOICES["model"])
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA") or "../shared/data")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    ap.add_argument("--betas", type=float, nargs="+", default=[1e-3, 1.0, 1e3])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9, 0.95, 0.99])
    ap.add_argument("--compare-sigma", type=float, nargs="*", default=[0.3])
    ap.add_argument("--parts", nargs="+", default=["heatmap", "frontier", "compare"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = Path(args.out or f"benchmarks/results/gate_{args.dataset}_{args.model}")
    base = bp.RunConfig(dataset=args.dataset, model=args.model, epochs=args.epochs, data_dir=args.data_dir)

    configs = []
    if "heatmap" in args.parts:
        configs += studies.gate_grid(base, args.sigmas, args.betas, args.seeds)
    if "frontier" in args.parts:
        configs += studies.frontier_grid(base, args.targets, args.seeds)
    if "compare" in args.parts:
        for sigma in args.compare_sigma:
            cmp = base.replace(schedule="gradual", gate="immediate", final_prune="target", prior_sigma=sigma)
            configs += bp.grid(cmp, [m for m in bp.PAPER_METHODS if m != "none"], [0.9, 0.99],
                               args.seeds)
    bp.load_dataset(base)
    t0 = time.perf_counter()
    df = sweep_local(configs, out, workers=args.workers, threads=args.threads)
    report(out, df, args, time.perf_counter() - t0)
    return 1 if df.attrs["stats"]["failed_total"] else 0


def report(out: Path, df, args, wall: float) -> None:
    ok = df[df["status"] == "ok"]
    name = f"{args.dataset} / {args.model}, {args.epochs} epochs, {len(args.seeds)} seeds"
    lines = [f"# Gate study: {name}", ""]
    summary: dict = {"command": " ".join([Path(sys.executable).name] + sys.argv), "wall_seconds_this_call":
                     round(wall, 1), "run_seconds_total": round(float(df["seconds"].sum()), 1)}
    gated = ok[(ok["method"] == "bayes-magnitude") & (ok["final_prune"] == "gate")]
    plain = ok[(ok["method"] == "magnitude") & (ok["final_prune"] == "gate")]
    if len(gated):
        hs = studies.summarize_gate(gated)
        save_figure(studies.plot_gate_heatmap(hs, title=f"Gated gradual pruning, ceiling 99 % ({name})"),
                    out / "heatmap.png")
        front = studies.frontier(plain) if len(plain) else None
        if front is not None and len(front) >= 2:
            hs["above_frontier_in_se"] = [studies.beats_frontier(r.sparsity, r.accuracy, r.accuracy_std or 0.0,
                                                                 front) for r in hs.itertuples()]
            save_figure(studies.plot_frontier(plain, hs, title=f"Gate-chosen points vs fixed targets ({name})"),
                        out / "frontier.png")
            lines += ["## Plain magnitude at fixed targets (the frontier)", "", markdown_table(front), ""]
            summary["frontier"] = front.to_dict(orient="records")
        lines += ["## Gated: sparsity the gate chose and accuracy (mean, std over seeds)", "",
                  markdown_table(hs), ""]
        summary["heatmap"] = hs.to_dict(orient="records")
    cmp = ok[ok["final_prune"] == "target"]
    if len(cmp):
        tables = []
        for sigma, g in cmp.groupby("prior_sigma"):
            t = studies.compare_bayes_plain(g, [0.9, 0.99]).assign(prior_sigma=sigma)
            tables.append(t)
        t = pd.concat(tables, ignore_index=True)
        lines += ["## Bayes vs plain, gradual, forced to the target at the last epoch", "",
                  markdown_table(t), ""]
        summary["compare"] = t.to_dict(orient="records")
    atomic_write_text(out / "gate_study.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "summary.json", summary, indent=2)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
