"""Is it really a Bayes factor?  The paper's ratio against a fair Laplace evidence, networks trained at their MAP.

    OMP_NUM_THREADS=1 python benchmarks/laplace_study.py --dataset digits --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/laplace_study.py --dataset mnist --data-dir ../shared/data \\
        --seeds 0 1 2 --dense-epochs 5 --epochs 10 --targets 0.5 0.75 0.9

Every network is trained under the prior (``train_prior="map"``), sigma refitted to its Laplace
evidence after every epoch (``prior_fit="marglik"``, starting from sigma = 1), except the paper's own
gate (sigma = 0.03, maximum-likelihood training, the paper's setting).  Three parts, written to
benchmarks/results/laplace_<dataset>_<model>/:

  scan      per seed a dense network, then copies pruned once (magnitude and random, 0-99 %; 0 is the
            prune-nothing control) and compared three ways (bayesprune.lab.bfcompare.evidence_scan):
            the paper's ratio with sigma = 0.03, the paper's ratio with the fitted sigma, and the Laplace
            evidence.  Fair: both sides fine-tuned by the same 100 steps on the same batches under the
            same prior; the old, unfair comparison (only the pruned side fine-tuned) is scanned beside it.
            "Would choose" = the largest scanned sparsity whose log BF is still > 0.
  gated     each Bayes factor as the immediate gate of a gradual schedule (ceiling 99 %,
            final_prune="gate"): the sparsity it stops at, the accuracy, the first step's log BF.
  frontier  plain gradual magnitude pruning to fixed targets, trained the same way, and the dense
            network: is the Laplace gate's stop on, above or below that accuracy-vs-sparsity curve?
            Paired over seeds (the same seed on both sides), with the binomial test-set SE.
Writes scan.csv, runs/*.csv (one history per run), laplace_vs_paper.png, summary.json and laplace.md.
Resumable: finished runs and scanned seeds are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import bayesprune as bp  # noqa: E402
from bayesprune.analysis.report import markdown_table, save_figure  # noqa: E402
from bayesprune.analysis.stats import PairedTest, accuracy_se, paired_t_test, summarize  # noqa: E402
from bayesprune.engine.training import removes_weights  # noqa: E402
from bayesprune.lab import bfcompare  # noqa: E402
from bayesprune.runs.fileio import atomic_write_json, atomic_write_text  # noqa: E402

MAP = dict(train_prior="map", prior_fit="marglik", prior_sigma=1.0)
GATES = {
    "paper, sigma 0.03 (ML training)": dict(bayes_factor="posterior", prior_fit="fixed"),
    "paper, fitted sigma": dict(bayes_factor="posterior", **MAP),
    "Laplace, fitted sigma": dict(bayes_factor="laplace", **MAP),
}
LAPLACE = "Laplace, fitted sigma"
BF_COLUMNS = {"log_bf_paper": "paper, sigma 0.03", "log_bf_paper_fitted": "paper, fitted sigma",
              "log_bf_laplace": "Laplace, fitted sigma"}


def run_cached(cfg: bp.RunConfig, path: Path, data) -> dict:
    """Train ``cfg`` once; its history is kept at ``path`` (csv) with a one-line summary (json) beside it."""
    meta = path.with_suffix(".json")
    if meta.exists() and path.exists():
        return json.loads(meta.read_text())
    res = bp.train(cfg, progress=False, data=data)
    atomic_write_text(path, res.history.to_csv(index=False))
    summary = {"key": cfg.key(), "test_accuracy": res.test_accuracy, "final_sparsity": res.final_sparsity,
               "seconds": res.seconds, "prior_sigma": res.summary().get("prior_sigma")}
    atomic_write_json(meta, summary)
    return summary


def first_step(history: pd.DataFrame) -> dict:
    """The first proposed step that would remove weights: its candidate, log BF and decision."""
    h = history[history["candidate_sparsity"].notna()]
    h = h[removes_weights(h)]
    if not len(h):
        return {"epoch": math.nan, "candidate": math.nan, "log_bf": math.nan, "accepted": False}
    r = h.iloc[0]
    return {"epoch": int(r["epoch"]), "candidate": float(r["candidate_sparsity"]), "log_bf": float(r["log_bf"]),
            "accepted": bool(r["pruned"])}


def pm(values, digits: int = 4) -> str:
    s = summarize(list(values))
    return f"{s.mean:.{digits}f}" if s.n < 2 else f"{s.mean:.{digits}f} ± {s.sd:.{digits}f}"


def scan_part(args, base, data, out: Path) -> tuple[list[str], dict]:
    scan_path = out / "scan.csv"
    frames = [pd.read_csv(scan_path)] if scan_path.exists() else []
    done = set(frames[0]["seed"]) if frames else set()
    for seed in args.seeds:
        if seed in done:
            continue
        net = bp.train(base.replace(method="none", epochs=args.dense_epochs, seed=seed, **MAP), progress=False,
                       data=data).model
        for fair in (True, False):
            frames.append(bfcompare.evidence_scan(net, data, sparsities=[0.0, *args.sparsities], seed=seed, fair=fair,
                                                  train_prior="map").assign(seed=seed))
        atomic_write_text(scan_path, pd.concat(frames).to_csv(index=False))  # resumable, seed by seed
    scan = pd.concat(frames)
    scan = scan[scan["seed"].isin(args.seeds)]
    control = scan[scan["sparsity"] == 0.0]
    rows = []
    for fair, g in control.groupby("fair", sort=False):
        rows.append({"comparison": "fair (both sides fine-tuned alike)" if fair else "unfair (pruned side only)",
                     "log BF, mean": g["log_bf_laplace"].mean(), "min": g["log_bf_laplace"].min(),
                     "max": g["log_bf_laplace"].max(), "fit": g["delta_fit"].mean(), "Occam": g["delta_occam"].mean(),
                     "n": len(g)})
    control_table = pd.DataFrame(rows)
    choose = []
    real = scan[scan["sparsity"] > 0]
    for (fair, strategy, seed), g in real.groupby(["fair", "strategy", "seed"]):
        for col, name in BF_COLUMNS.items():
            if col != "log_bf_laplace" and not fair:
                continue  # the paper's columns do not depend on the fine-tuning
            positive = g[g[col] > 0]["sparsity"]
            choose.append({"fair": fair, "strategy": strategy, "seed": seed,
                           "Bayes factor": name + ("" if fair or col != "log_bf_laplace" else ", unfair"),
                           "would choose": float(positive.max()) if len(positive) else 0.0})
    choose = pd.DataFrame(choose)
    table = []
    for (strategy, name), g in choose.groupby(["strategy", "Bayes factor"], sort=False):
        table.append({"strategy": strategy, "Bayes factor": name, "would choose": pm(g["would choose"], 2),
                      "per seed": ", ".join(f"{v:g}" for v in g["would choose"])})
    terms = (real[real["fair"] & (real["strategy"] == "magnitude")].groupby("sparsity")
             [["log_bf_laplace", "delta_fit", "delta_penalty", "delta_occam"]].mean().reset_index()
             .rename(columns={"log_bf_laplace": "log BF", "delta_fit": "fit", "delta_penalty": "penalty",
                              "delta_occam": "Occam"}))
    terms["sparsity"] = [f"{r:.0%}" for r in terms["sparsity"]]
    sig = scan.groupby("seed")["fitted_sigma"].first()
    lines = [f"Fitted prior sigma of the dense MAP network, per seed: {', '.join(f'{v:.4g}' for v in sig)} "
             "(the paper's hand-picked value: 0.03)", "",
             "### The prune-nothing control: a candidate that removes no weight", "",
             markdown_table(control_table, 2), "",
             "### One prune of a trained network: the largest sparsity with log BF > 0", "",
             markdown_table(pd.DataFrame(table)), "",
             "### The fair Laplace log BF of a magnitude prune and its terms (mean over seeds, nats)", "",
             markdown_table(terms, 1), ""]
    fair_mean = scan[scan["fair"]].groupby(["strategy", "sparsity"]).mean(numeric_only=True).reset_index()
    fig = bfcompare.plot_evidence_scan(fair_mean[fair_mean["sparsity"] > 0],
                                       title=f"{args.dataset} / {args.model}: fair comparison, MAP training, mean "
                                             f"over {len(args.seeds)} seeds")
    save_figure(fig, out / "laplace_vs_paper.png")
    return lines, {"fitted_sigma": sig.to_dict(), "control": control_table.to_dict(orient="records"),
                   "scan_choice": table}


def gated_part(args, base, data, out: Path) -> tuple[list[str], dict]:
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    gbase = base.replace(method="bayes-magnitude", schedule="gradual", gate="immediate", final_prune="gate",
                         sparsity=0.99, epochs=args.epochs)
    pbase = base.replace(method="magnitude", schedule="gradual", epochs=args.epochs, bayes_factor="posterior", **MAP)
    rows, firsts, plain = [], [], []
    for seed in args.seeds:
        for name, fields in GATES.items():
            slug = name.split(",")[0].lower() + ("-fitted" if "fitted" in name else "-fixed")
            if slug not in args.gates:
                continue
            cfg = gbase.replace(seed=seed, **fields)
            s = run_cached(cfg, runs / f"{slug}_s{seed}.csv", data)
            f = first_step(pd.read_csv(runs / f"{slug}_s{seed}.csv"))
            rows.append({"gate": name, "seed": seed, "sparsity": s["final_sparsity"], "accuracy": s["test_accuracy"],
                         "sigma": s["prior_sigma"], "seconds": s["seconds"]})
            firsts.append({"gate": name, "seed": seed, **f})
        for target in [0.0, *args.targets]:
            cfg = (base.replace(method="none", epochs=args.epochs, seed=seed, **MAP) if target == 0 else
                   pbase.replace(sparsity=target, seed=seed))
            if args.plain_prior == "from-gate" and target > 0:  # the sigma the Laplace run ended with, held fixed
                cfg = cfg.replace(prior_fit="fixed", prior_sigma=float(rows[-1]["sigma"]))
            s = run_cached(cfg, runs / f"plain-{target:g}_s{seed}.csv", data)
            plain.append({"target": target, "seed": seed, "sparsity": s["final_sparsity"],
                          "accuracy": s["test_accuracy"]})
    gated, firsts, plain = pd.DataFrame(rows), pd.DataFrame(firsts), pd.DataFrame(plain)
    n_test = data.n_test
    table = []
    for name, g in gated.groupby("gate", sort=False):
        acc = g["accuracy"].mean()
        table.append({"gate": name, "stops at (sparsity)": pm(g["sparsity"], 3), "accuracy": pm(g["accuracy"]),
                      "test-set SE": f"{accuracy_se(acc, n_test):.4f}", "per seed": ", ".join(
                          f"{sp:.3f}/{a:.4f}" for sp, a in zip(g["sparsity"], g["accuracy"])),
                      "first step log BF, per seed": ", ".join(f"{v:+.1f}" for v in
                                                                firsts[firsts["gate"] == name]["log_bf"])})
    curve = plain.groupby("target").agg(sparsity=("sparsity", "mean"), accuracy=("accuracy", "mean")).reset_index()
    curve_table = pd.DataFrame([{"plain gradual magnitude, target": f"{t:g}" if t else "dense (no pruning)",
                                 "sparsity": pm(plain[plain["target"] == t]["sparsity"], 3),
                                 "accuracy": pm(plain[plain["target"] == t]["accuracy"]),
                                 "test-set SE": f"{accuracy_se(a, n_test):.4f}"}
                                for t, a in zip(curve["target"], curve["accuracy"])])
    # on, above or below the curve: the gate's accuracy against plain magnitude interpolated (per seed) at its stop
    lap = gated[gated["gate"] == LAPLACE].sort_values("seed")
    interp = []
    for seed, sp in zip(lap["seed"], lap["sparsity"]):
        p = plain[plain["seed"] == seed].sort_values("sparsity")
        interp.append(float(np.interp(sp, p["sparsity"], p["accuracy"])))
    diffs = [a - b for a, b in zip(lap["accuracy"], interp)]
    test = (paired_t_test(lap["accuracy"].tolist(), interp) if len(lap) >= 2 else
            PairedTest(float(np.mean(diffs)), math.nan, math.nan, math.nan, len(diffs)))
    se_test = math.sqrt(2) * accuracy_se(float(lap["accuracy"].mean()), n_test)
    noise = max(test.se if math.isfinite(test.se) else 0.0, se_test / math.sqrt(len(lap)))
    verdict = ("on the curve" if abs(test.mean) < 2 * noise
               else "above the curve" if test.mean > 0 else "below the curve")
    lines = ["### Gating a gradual schedule (ceiling 99 %): where each Bayes factor stops", "",
             markdown_table(pd.DataFrame(table)), "",
             f"Test set: {n_test} images, so one image is {1 / n_test:.4f} and the binomial SE of one accuracy "
             "is the `test-set SE` column.", "",
             "### Plain gradual magnitude pruning at fixed targets, trained the same way (MAP, fitted sigma)", "",
             markdown_table(curve_table), "",
             f"**The Laplace gate against that curve** (paired over seeds {list(lap['seed'])}; plain magnitude "
             f"interpolated linearly at each seed's stop): accuracy difference {test.mean:+.4f} "
             f"(paired SE {test.se:.4f}, t = {test.t:.2f}, p = {test.p:.2f}, n = {test.n}; the test set alone gives "
             f"an SE of {se_test:.4f} per seed's difference): **{verdict}**.", ""]
    return lines, {"gated": table, "plain": curve_table.to_dict(orient="records"),
                   "first_steps": firsts.to_dict(orient="records"),
                   "versus_plain": {"mean": test.mean, "se": test.se, "t": test.t, "p": test.p, "n": test.n,
                                    "test_set_se": se_test, "verdict": verdict, "plain_at_stop": interp}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA") or "../shared/data")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--model", default="fcn")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dense-epochs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=25, help="epochs of the gated and the plain runs")
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9, 0.95, 0.99])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    ap.add_argument("--parts", nargs="+", default=["scan", "gated"])
    ap.add_argument("--gates", nargs="+", default=["paper-fixed", "paper-fitted", "laplace-fitted"])
    ap.add_argument("--plain-prior", choices=("online", "from-gate"), default="online",
                    help="plain runs: sigma refitted every epoch (online), or the Laplace run's last sigma, held fixed "
                         "(from-gate: no curvature work, for MNIST)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out or f"benchmarks/results/laplace_{args.dataset}_{args.model}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = bp.RunConfig(dataset=args.dataset, model=args.model, data_dir=args.data_dir)
    data = bp.load_dataset(base)
    summary: dict = {"command": " ".join(["python"] + sys.argv), "loadavg_start": os.getloadavg()}
    lines = [f"#### {args.dataset} / {args.model}, seeds {args.seeds}: dense {args.dense_epochs} epochs for the "
             f"scan, {args.epochs} epochs for the runs", ""]
    for part, fn in (("scan", scan_part), ("gated", gated_part)):
        if part in args.parts:
            more, info = fn(args, base, data, out)
            lines += more
            summary[part] = info
    summary["wall_seconds_this_call"] = round(time.perf_counter() - t0, 1)
    summary["loadavg_end"] = os.getloadavg()
    atomic_write_json(out / "summary.json", summary, indent=2)
    atomic_write_text(out / "laplace.md", "\n".join(lines).rstrip("\n") + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
