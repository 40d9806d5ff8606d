"""How much does a Laplace Bayes factor cost, against the paper's posterior ratio and a training epoch?

    python benchmarks/bench_evidence.py --data-dir ../shared/data                  # 1 and 2 threads
    python benchmarks/bench_evidence.py --data-dir ../shared/data --threads 1 --reps 5
    python benchmarks/bench_evidence.py --data-dir ../shared/data --profile         # where the time goes

The MNIST FCN (784-300-100-10), trained one epoch (Adam, batch 64) so that its curvature is
realistic, pruned to 90 % per layer by magnitude.  One *Laplace gate step* is what the training
loop would do: fit the curvature of the unpruned net, fit the prior precision (empirical Bayes),
fit the curvature of the pruned net, and evaluate both evidences.  It is timed for kron and diag,
on the 4096-example subset (bf_samples) and on all 60k, next to

  paper   bayesprune.bayes.posterior_terms before and after pruning (the posterior ratio), same data
  epoch   one plain training epoch: bayesprune.training._train_epoch, batch 64, make_adam

and, to see what would make it cheaper: the curvature on fewer examples (``curvature_samples``;
the likelihood still on 4096), the one-sample Monte Carlo GGN and the empirical Fisher.
Repetitions are interleaved (A B C ... A B C ...); the median and min are reported, with
os.getloadavg() before each repetition: the machine is shared, so read the min as "quiet".
Results go to benchmarks/results/bench_evidence.json.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import bayesprune as bp
from bayesprune.evidence import Curvature
from bayesprune.training import _train_epoch, make_adam

RESULTS = Path(__file__).resolve().parent / "results" / "bench_evidence.json"


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import laplace

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "laplace-torch": getattr(laplace, "__version__", "?"), "platform": platform.platform()}


# ------------------------------------------------------------------ the two gate steps
def laplace_gate_step(model, pruned, mask, x, y, n_total, structure, **fit_kwargs) -> dict:
    """Curvature before, prior fit, curvature after, both evidences: what a Laplace-gated epoch adds."""
    t = [time.perf_counter()]
    before = Curvature.fit(model, x, y, n_total=n_total, structure=structure, **fit_kwargs)
    t.append(time.perf_counter())
    delta = before.fit_prior_precision()
    t.append(time.perf_counter())
    after = Curvature.fit(pruned, x, y, n_total=n_total, structure=structure, reuse=before, **fit_kwargs)
    t.append(time.perf_counter())
    ev_before = before.log_evidence(delta)
    ev_after = after.log_evidence(delta, mask=mask)
    t.append(time.perf_counter())
    return {
        "seconds": t[-1] - t[0],
        "parts": {"fit_before": t[1] - t[0], "prior_fit": t[2] - t[1], "fit_after": t[3] - t[2], "evidences": t[4] - t[3]},
        "log_bf": ev_after.log_evidence - ev_before.log_evidence,
        "prior_precision": delta,
        "before": ev_before.__dict__, "after": ev_after.__dict__,
    }


def paper_gate_step(model, pruned, x, y, n_total, mu=0.0, sigma=0.03) -> dict:
    t0 = time.perf_counter()
    before = bp.posterior_terms(model, x, y, n_total=n_total, mu=mu, sigma=sigma)
    after = bp.posterior_terms(pruned, x, y, n_total=n_total, mu=mu, sigma=sigma)
    return {"seconds": time.perf_counter() - t0, "log_bf": bp.log_bayes_factor(before, after)}


def plain_epoch(model, data, seed) -> dict:
    m = copy.deepcopy(model)
    opt = make_adam(m.parameters(), 1e-3, "cpu")
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    _train_epoch(m, opt, data, 64, g, None)
    return {"seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------ main
def summarise(runs: list[dict]) -> dict:
    secs = [r["seconds"] for r in runs]
    out = {"median": statistics.median(secs), "min": min(secs), "all": secs}
    if "parts" in runs[0]:
        out["parts_median"] = {k: statistics.median(r["parts"][k] for r in runs) for k in runs[0]["parts"]}
    for key in ("log_bf", "prior_precision", "before", "after"):
        if key in runs[0]:
            out[key] = runs[0][key]
    return out


def run(args, threads: int, data, model, pruned, mask) -> dict:
    torch.set_num_threads(threads)
    n = data.n_train
    sub = bp.bf_subset(n, 4096, seed=0)
    xs, ys = data.x_train[sub], data.y_train[sub]
    xa, ya = data.x_train, data.y_train
    variants = {
        "epoch": lambda r: plain_epoch(model, data, r),
        "paper/4096": lambda r: paper_gate_step(model, pruned, xs, ys, n),
        "kron/4096": lambda r: laplace_gate_step(model, pruned, mask, xs, ys, n, "kron"),
        "diag/4096": lambda r: laplace_gate_step(model, pruned, mask, xs, ys, n, "diag"),
        "kron/4096 curv 1024": lambda r: laplace_gate_step(model, pruned, mask, xs, ys, n, "kron", curvature_samples=1024),
        "kron/4096 curv 512": lambda r: laplace_gate_step(model, pruned, mask, xs, ys, n, "kron", curvature_samples=512),
        "kron/4096 ggn-mc": lambda r: laplace_gate_step(model, pruned, mask, xs, ys, n, "kron", hessian="ggn-mc"),
        "kron/4096 ef": lambda r: laplace_gate_step(model, pruned, mask, xs, ys, n, "kron", hessian="ef"),
        "diag/4096 ggn-mc": lambda r: laplace_gate_step(model, pruned, mask, xs, ys, n, "diag", hessian="ggn-mc"),
    }
    if not args.quick:
        variants.update({
            "paper/60000": lambda r: paper_gate_step(model, pruned, xa, ya, n),
            "kron/60000": lambda r: laplace_gate_step(model, pruned, mask, xa, ya, n, "kron"),
            "diag/60000": lambda r: laplace_gate_step(model, pruned, mask, xa, ya, n, "diag"),
        })
    runs: dict[str, list] = {k: [] for k in variants}
    loads = []
    for r in range(args.reps):
        loads.append(os.getloadavg())
        for name, fn in variants.items():
            runs[name].append(fn(r))
            print(f"  threads={threads} rep {r + 1}/{args.reps} {name:22s} {runs[name][-1]['seconds']:7.2f} s"
                  f"  load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    res = {name: summarise(rs) for name, rs in runs.items()}
    epoch = res["epoch"]["median"]
    for name, s in res.items():
        s["over_plain_epoch"] = s["median"] / epoch
        s["gated_epoch_over_plain"] = 1 + s["median"] / epoch if name != "epoch" else 1.0
    return {"threads": threads, "loadavg_before_each_rep": loads, "variants": res}


def table(result: dict) -> str:
    lines = [f"threads={result['threads']}  (loadavg 1-min before reps: "
             f"{', '.join(f'{l[0]:.1f}' for l in result['loadavg_before_each_rep'])})",
             f"{'variant':24s} {'median s':>9s} {'min s':>8s} {'x epoch':>8s} {'gated/plain':>11s} {'log BF':>12s}"]
    for name, s in result["variants"].items():
        bf = f"{s['log_bf']:12.1f}" if "log_bf" in s else " " * 12
        lines.append(f"{name:24s} {s['median']:9.3f} {s['min']:8.3f} {s['over_plain_epoch']:8.3f} "
                     f"{s['gated_epoch_over_plain']:11.3f} {bf}")
    return "\n".join(lines)


def profile(model, pruned, mask, data) -> str:
    sub = bp.bf_subset(data.n_train, 4096, seed=0)
    xs, ys = data.x_train[sub], data.y_train[sub]
    laplace_gate_step(model, pruned, mask, xs, ys, data.n_train, "kron")  # warm up
    pr = cProfile.Profile()
    pr.enable()
    laplace_gate_step(model, pruned, mask, xs, ys, data.n_train, "kron")
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(18)
    return buf.getvalue()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA", "./data"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the 60k variants")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one kron gate step and exit")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)

    torch.set_num_threads(min(args.threads))
    data = bp.load_dataset(bp.RunConfig(dataset="mnist", data_dir=args.data_dir))
    torch.manual_seed(0)
    model = bp.FCN(data.input_shape, data.num_classes, (300, 100))
    _train_epoch(model, make_adam(model.parameters(), 1e-3, "cpu"), data, 64, torch.Generator().manual_seed(0), None)
    pruned = copy.deepcopy(model)
    mask = bp.prune_magnitude(pruned, 0.9)
    if args.profile:
        print(profile(model, pruned, mask, data))
        return

    out = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
           "machine": machine(), "model": "FCN 784-300-100-10, 1 epoch", "mask": "magnitude 90 % per layer",
           "n_train": data.n_train, "results": []}
    for threads in args.threads:
        result = run(args, threads, data, model, pruned, mask)
        out["results"].append(result)
        print(table(result), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
