"""Reproduce the MNIST / FCN block of the paper's Table 1 (unpruned + 4 methods x 5 sparsities).

    python benchmarks/reproduce_table1.py --data-dir ../shared/data --epochs 10 --seeds 0 1 --workers 2

Resumable: kill it at any time and run the same command again; finished runs are
skipped.  Writes runs/, results.csv, table1.md, table1.csv and the plots to --out.
The paper's procedure lets pruned weights regrow (--regrow, the default here);
--no-regrow keeps masks (the package default).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import bayesprune as bp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA", "../shared/data"))
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--model", default="fcn")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9, 0.99])
    ap.add_argument("--regrow", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="default: benchmarks/results/table1_<dataset>_<model>_<masks|regrow>")
    args = ap.parse_args()
    if args.out is None:
        args.out = f"benchmarks/results/table1_{args.dataset}_{args.model}_{'regrow' if args.regrow else 'masks'}"

    base = bp.RunConfig(dataset=args.dataset, model=args.model, epochs=args.epochs, regrow=args.regrow,
                        data_dir=args.data_dir, download=True)
    configs = bp.grid(base, methods=["none", "random", "bayes-random", "magnitude", "bayes-magnitude"],
                      sparsities=args.sparsities, seeds=args.seeds)
    bp.load_dataset(base)  # fail fast, with the clear message, before starting workers
    t0 = time.perf_counter()
    executor = None
    if args.workers > 1:
        executor = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        df = bp.sweep(configs, args.out, executor=executor, threads_per_run=max(1, (os.cpu_count() or 1) // args.workers))
    finally:
        if executor is not None:
            executor.shutdown()
    bp.write_report(args.out)
    table = bp.summarize(df)
    md = bp.format_table1(table)
    meta = {"command": " ".join([Path(sys.executable).name] + sys.argv), "epochs": args.epochs, "seeds": args.seeds,
            "regrow": args.regrow, "wall_seconds_this_call": round(time.perf_counter() - t0, 1),
            "run_seconds_total": round(float(df["seconds"].sum()), 1), **df.attrs["stats"]}
    Path(args.out, "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(md)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
