"""Is it really a Bayes factor?  The paper's ratio against the Laplace evidence on MNIST FCN.

    python benchmarks/laplace_study.py --data-dir ../shared/data --seeds 0 1 2

Two parts, written to benchmarks/results/laplace_<dataset>_<model>/:
  scan   for each seed a dense network is trained, then copies are pruned (magnitude and random,
         25-99 %) and compared three ways (bayesprune.lab.bfcompare.evidence_scan): the paper's ratio
         with sigma = 0.03, the paper's ratio with the prior fitted by empirical Bayes, and the
         Laplace evidence (fit + penalty + Occam) with that prior.  "Would choose" = the largest
         scanned sparsity whose log BF is still > 0.
  gated  the same three as gates of a gradual schedule (ceiling 99 %, immediate gate, the gate
         chooses where the run ends): the chosen sparsity and the accuracy, over seeds.
Writes scan.csv, laplace_vs_paper.png, summary.json and laplace.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

import bayesprune as bp  # noqa: E402
from bayesprune.lab import bfcompare  # noqa: E402
from bayesprune.analysis.report import markdown_table, save_figure  # noqa: E402
from bayesprune.analysis.studies import mean_std  # noqa: E402
from bayesprune.runs.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from bayesprune.runs.sweeps import sweep_local  # noqa: E402

GATES = {
    "paper, sigma 0.03": dict(bayes_factor="posterior", prior_fit="fixed"),
    "paper, fitted sigma": dict(bayes_factor="posterior", prior_fit="marglik"),
    "Laplace, fitted sigma": dict(bayes_factor="laplace", prior_fit="marglik"),
}
BF_COLUMNS = {"log_bf_paper": "paper, sigma 0.03", "log_bf_paper_fitted": "paper, fitted sigma",
              "log_bf_laplace": "Laplace, fitted sigma"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA") or "../shared/data")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--model", default="fcn")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dense-epochs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=25, help="epochs of the gated runs")
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9, 0.95, 0.99])
    ap.add_argument("--parts", nargs="+", default=["scan", "gated"])
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
    summary: dict = {"command": " ".join([Path(sys.executable).name] + sys.argv)}
    lines = [f"# Paper ratio vs Laplace evidence: {args.dataset} / {args.model}, seeds {args.seeds}", ""]
    if "scan" in args.parts:
        scan_path = out / "scan.csv"
        frames = [pd.read_csv(scan_path)] if scan_path.exists() else []
        done = set(frames[0]["seed"]) if frames else set()
        for seed in args.seeds:
            if seed in done:
                continue
            cfg = base.replace(method="none", epochs=args.dense_epochs, seed=seed)
            net = bp.train(cfg, progress=False, data=data).model
            frames.append(bfcompare.evidence_scan(net, data, sparsities=args.sparsities, seed=seed).assign(seed=seed))
            atomic_write_text(scan_path, pd.concat(frames).to_csv(index=False))  # resumable, seed by seed
        scan = pd.concat(frames)
        scan = scan[scan["seed"].isin(args.seeds)]
        choose = []
        for (strategy, seed), g in scan.groupby(["strategy", "seed"]):
            for col, name in BF_COLUMNS.items():
                positive = g[g[col] > 0]["sparsity"]
                choose.append({"strategy": strategy, "seed": seed, "Bayes factor": name,
                               "would choose": float(positive.max()) if len(positive) else 0.0})
        choose = pd.DataFrame(choose)
        table = []
        for (strategy, name), g in choose.groupby(["strategy", "Bayes factor"], sort=False):
            m, s, n = mean_std(g["would choose"])
            table.append({"strategy": strategy, "Bayes factor": name, "would choose (mean)": m, "std": s, "n": n,
                          "per seed": ", ".join(f"{v:g}" for v in g["would choose"])})
        table = pd.DataFrame(table)
        sig = scan.groupby("seed")["fitted_sigma"].first()
        summary["fitted_sigma"] = sig.to_dict()
        summary["scan_choice"] = table.to_dict(orient="records")
        lines += [f"Fitted prior sigma (empirical Bayes on the dense network), per seed: "
                  f"{', '.join(f'{v:.4g}' for v in sig)} (hand-picked: 0.03)", "",
                  "## One prune of a trained network: the largest sparsity with log BF > 0", "",
                  markdown_table(table), ""]
        mean = scan.groupby(["strategy", "sparsity"]).mean(numeric_only=True).reset_index()
        fig = bfcompare.plot_evidence_scan(mean, title=f"{args.dataset} / {args.model}: mean over {len(args.seeds)} "
                                                         "seeds (fitted sigma: seed mean)")
        save_figure(fig, out / "laplace_vs_paper.png")
    if "gated" in args.parts:
        gbase = base.replace(method="bayes-magnitude", schedule="gradual", gate="immediate", final_prune="gate",
                             sparsity=0.99, epochs=args.epochs)
        configs, label = [], {}
        for name, fields in GATES.items():
            for seed in args.seeds:
                cfg = gbase.replace(seed=seed, **fields)
                configs.append(cfg)
                label[cfg.key()] = name
        df = sweep_local(configs, out / "gated", workers=1, threads=args.threads)
        ok = df[(df["status"] == "ok") & df["key"].isin(label)].assign(gate=lambda d: d["key"].map(label))
        rows = []
        for name, g in ok.groupby("gate", sort=False):
            sp, sps, n = mean_std(g["final_sparsity"])
            acc, accs, _ = mean_std(g["test_accuracy"])
            rows.append({"gate": name, "chosen sparsity": sp, "sparsity std": sps, "accuracy": acc,
                         "accuracy std": accs, "n": n})
        gated = pd.DataFrame(rows)
        summary["gated"] = gated.to_dict(orient="records")
        lines += ["## Gating a gradual schedule (ceiling 99 %): where each Bayes factor stops", "",
                  markdown_table(gated), ""]
    summary["wall_seconds_this_call"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "summary.json", summary, indent=2)
    atomic_write_text(out / "laplace.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
