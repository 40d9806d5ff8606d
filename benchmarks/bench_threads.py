"""Two training processes with 1 thread each, or one process with 2 threads: which gives more epochs?

    PYTHONPATH=$PWD python benchmarks/bench_threads.py --data-dir ../shared/data [--epochs 3] [--reps 2]

For the FCN (full MNIST epochs) and the CNN (epochs of 150 steps of batch 64 + the 10k
test evaluation, as in bench_training.py), repetitions interleaved:
  1x2  one process, torch.set_num_threads(2), runs ``--epochs`` epochs
  2x1  two processes at once, 1 thread each, each runs ``--epochs`` epochs
Reports epochs per minute in total (wall clock, process start-up excluded: each worker
times its own epochs) and writes benchmarks/results/bench_threads_<device>.json.
Other jobs on the machine change the answer; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKER = r"""
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
import bayesprune as bp
model, epochs, data_dir, start_at = sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
cfg = bp.RunConfig(dataset="mnist", model=model, method="none", data_dir=data_dir, device="cpu",
                   epochs=epochs, train_size=None if model == "fcn" else 150 * 64)
data = bp.load_dataset(cfg, "cpu")
bp.train(cfg.replace(epochs=1), progress=False, data=data)  # warm-up
while time.time() < start_at:  # both workers of a 2x1 pair start their timed epochs together
    time.sleep(0.01)
t0 = time.time()
bp.train(cfg, progress=False, data=data)
print(t0, time.time())
"""


def run(threads: int, procs: int, model: str, epochs: int, data_dir: str) -> float:
    """Epochs per minute, all processes together."""
    start_at = time.time() + 25.0  # time for start-up and warm-up (the CNN's warm-up epoch is the slow one)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    ps = [subprocess.Popen([sys.executable, "-c", WORKER, str(threads), model, str(epochs), data_dir, str(start_at)],
                           stdout=subprocess.PIPE, text=True, env=env) for _ in range(procs)]
    spans = []
    for p in ps:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode})")
        spans.append(tuple(map(float, out.split()[-2:])))
    if min(s[0] for s in spans) < start_at - 0.5:
        print("  warning: a worker started late", flush=True)
    wall = max(s[1] for s in spans) - min(s[0] for s in spans)
    return procs * epochs / wall * 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA", "../shared/data"))
    ap.add_argument("--models", nargs="+", default=["fcn", "cnn"], choices=["fcn", "cnn"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    report = {"command": " ".join([Path(sys.executable).name] + sys.argv), "cores": os.cpu_count(),
              "loadavg_start": os.getloadavg(), "epochs_per_run": args.epochs,
              "cnn_epoch": "150 steps x 64 + 10k test evaluation", "fcn_epoch": "938 steps x 64 + 10k test evaluation",
              "models": {}}
    for model in args.models:
        res: dict[str, list[float]] = {"1x2_threads": [], "2x1_thread": []}
        for rep in range(args.reps):
            res["1x2_threads"].append(run(2, 1, model, args.epochs, args.data_dir))
            res["2x1_thread"].append(run(1, 2, model, args.epochs, args.data_dir))
            print(f"  {model} rep {rep + 1}: 1x2 {res['1x2_threads'][-1]:.1f} epochs/min, "
                  f"2x1 {res['2x1_thread'][-1]:.1f} epochs/min  (load {os.getloadavg()[0]:.2f})", flush=True)
        med = {k: statistics.median(v) for k, v in res.items()}
        report["models"][model] = {"epochs_per_minute": {k: {"median": med[k], "all": v} for k, v in res.items()},
                                   "2x1_over_1x2": med["2x1_thread"] / med["1x2_threads"]}
        _write(report, args.out)  # after each model, so a run stopped early keeps what it measured
    report["loadavg_end"] = os.getloadavg()
    print("| model | 1 process x 2 threads (epochs/min) | 2 processes x 1 thread (epochs/min, total) | 2x1 / 1x2 |")
    print("|---|---|---|---|")
    for m, r in report["models"].items():
        e = r["epochs_per_minute"]
        print(f"| {m} | {e['1x2_threads']['median']:.1f} | {e['2x1_thread']['median']:.1f} | {r['2x1_over_1x2']:.2f} |")
    print(f"load average {report['loadavg_start']} -> {report['loadavg_end']}")
    _write(report, args.out)
    return 0


def _write(report: dict, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_threads_cpu.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
