"""Reproduce one block of the paper's Table 1 (unpruned + 4 methods x 5 sparsities x seeds).

    python benchmarks/reproduce_table1.py --dataset mnist --model fcn --epochs 25 --seeds 0 1 2 3 4 --no-regrow
    python benchmarks/reproduce_table1.py --dataset fashion-mnist --model fcn --epochs 25 --seeds 0 1 2 3 4 --no-regrow

Resumable: kill it at any time and run the same command again; finished runs are
skipped.  Writes runs/, results.csv, table1.md, table1.csv, meta.json and the plots to
--out (default benchmarks/results/table1_<dataset>_<model>_<masks|regrow>[_<schedule>]).
The package default keeps masks (--no-regrow); --regrow is the paper's literal procedure.
Any other RunConfig field can be fixed with --set FIELD=VALUE (e.g. --set train_size=20000).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import bayesprune as bp
from bayesprune.runs.fileio import atomic_write_json
from bayesprune.runs.sweeps import sweep_local


def _value(text: str):
    """JSON where possible (numbers, true/false, null, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_set(items: list[str]) -> dict:
    """``--set FIELD=VALUE ...`` as RunConfig keyword arguments (values read by :func:`_value`)."""
    return {k: _value(v) for k, v in (item.split("=", 1) for item in items)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA") or "../shared/data")
    ap.add_argument("--dataset", default="mnist", choices=bp.CHOICES["dataset"])
    ap.add_argument("--model", default="fcn", choices=bp.CHOICES["model"])
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9, 0.99])
    ap.add_argument("--methods", nargs="+", default=list(bp.PAPER_METHODS), choices=bp.methods())
    ap.add_argument("--regrow", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--schedule", default="one-shot", choices=bp.CHOICES["schedule"])
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="other RunConfig fields")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / workers)")
    ap.add_argument("--lockstep", type=int, default=1, metavar="K",
                    help="train up to K compatible runs at a time as one stacked model (bp.train_many)")
    ap.add_argument("--device", default=None, help="RunConfig.device (default: the package's, auto)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    extra = parse_set(args.set)
    if args.device is not None:
        extra["device"] = args.device
    if args.out is None:
        tag = f"{args.dataset}_{args.model}_{'regrow' if args.regrow else 'masks'}"
        tag += "" if args.schedule == "one-shot" else f"_{args.schedule}"
        args.out = f"benchmarks/results/table1_{tag}"

    base = bp.RunConfig(dataset=args.dataset, model=args.model, epochs=args.epochs, regrow=args.regrow,
                        schedule=args.schedule, data_dir=args.data_dir, download=False, **extra)
    configs = bp.grid(base, methods=args.methods, sparsities=args.sparsities, seeds=args.seeds)
    bp.load_dataset(base)  # fail fast, with the clear message, before starting workers
    t0 = time.perf_counter()
    df = sweep_local(configs, args.out, workers=args.workers, threads=args.threads, lockstep=args.lockstep)
    bp.write_report(args.out)
    md = bp.format_table1(bp.table1(df))
    meta_path = Path(args.out, "meta.json")
    previous = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    wall = round(time.perf_counter() - t0, 1)
    meta = {"command": " ".join([Path(sys.executable).name] + sys.argv), "epochs": args.epochs,
            "seeds": args.seeds, "regrow": args.regrow, "schedule": args.schedule, "set": extra,
            "workers": args.workers, "lockstep": args.lockstep, "wall_seconds_this_call": wall,
            "wall_seconds_all_calls": round(previous.get("wall_seconds_all_calls", 0.0) + wall, 1),
            "run_seconds_total": round(float(df["seconds"].sum()), 1),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": _torch_version()},
            **df.attrs["stats"]}
    atomic_write_json(meta_path, meta, indent=2)
    print(md)
    print(json.dumps(meta))
    return 1 if meta["failed_total"] else 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
