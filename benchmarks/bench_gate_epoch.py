"""What does each gate cost per epoch, end to end?  (MNIST FCN, the real training loop)

    python benchmarks/bench_gate_epoch.py --data-dir ../shared/data

Each variant is a gradual run (a real pruning step every epoch, immediate gate) of a few
epochs; repetitions are interleaved (A B C ... A B C ...).  The per-epoch time is the
history's ``seconds`` (training, the pruning step with its Bayes factor, and the test
evaluation), medians over the epochs after the first (warm-up) and over repetitions.
The Laplace gate's time includes its fine-tuning steps and both curvature fits.
Writes benchmarks/results/bench_gate_epoch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import bayesprune as bp
from bayesprune.runs.fileio import atomic_write_json

VARIANTS = {
    "plain magnitude": dict(method="magnitude"),
    "paper ratio (posterior)": dict(method="bayes-magnitude"),
    "laplace kron ggn-mc": dict(method="bayes-magnitude", bayes_factor="laplace", prior_fit="marglik",
                                laplace_curvature="ggn-mc"),
    "laplace kron ggn": dict(method="bayes-magnitude", bayes_factor="laplace", prior_fit="marglik",
                             laplace_curvature="ggn"),
    "laplace diag ggn-mc": dict(method="bayes-magnitude", bayes_factor="laplace", prior_fit="marglik",
                                hessian_structure="diag", laplace_curvature="ggn-mc"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA") or "../shared/data")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default="benchmarks/results/bench_gate_epoch.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = bp.RunConfig(dataset="mnist", data_dir=args.data_dir, epochs=args.epochs, schedule="gradual",
                        gate="immediate", final_prune="gate", prune_end_epoch=args.epochs, sparsity=0.9)
    bp.load_dataset(base)
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    bf: dict[str, list[float]] = {k: [] for k in VARIANTS}
    load = [os.getloadavg()[0]]
    for _ in range(args.reps):
        for name, fields in VARIANTS.items():
            h = bp.train(base.replace(**fields), progress=False).history
            times[name] += h["seconds"].iloc[1:].tolist()
            bf[name] += h["bf_seconds"].iloc[1:].tolist()
    load.append(os.getloadavg()[0])
    plain = statistics.median(times["plain magnitude"])
    rows = {name: {"epoch_seconds_median": statistics.median(t), "epoch_seconds_min": min(t),
                   "bf_seconds_median": statistics.median(bf[name]), "over_plain": statistics.median(t) / plain}
            for name, t in times.items()}
    out = {"command": " ".join([Path(sys.executable).name] + sys.argv), "threads": torch.get_num_threads(),
           "cores": os.cpu_count(), "load_avg_start_end": load, "epochs": args.epochs, "reps": args.reps,
           "torch": torch.__version__, "time": time.strftime("%Y-%m-%d %H:%M"), "variants": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out, indent=2)
    print("| variant | epoch s (median) | of which the step s | × plain |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['epoch_seconds_median']:.2f} | {r['bf_seconds_median']:.2f} | {r['over_plain']:.2f} |")
    print(json.dumps({"load_avg_start_end": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
