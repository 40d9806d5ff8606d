"""Lockstep training (``bp.train_many``) against the sequential loop and against 2 workers x 1 thread.

    python benchmarks/bench_lockstep.py --data-dir ../shared/data             # CPU, FCN and CNN, a few minutes
    python benchmarks/bench_lockstep.py --data-dir ../shared/data --device cuda --ks 1 16 64 105
    python benchmarks/bench_lockstep.py --quick                                # digits, seconds (tests, gpu_check)

The unit is the run-epoch: one member trained one epoch (Adam over its training subsample, batch 64) and
evaluated once on the test subsample, method ``none`` (no pruning decision: the cost measured is training).
Measured in one process, in this order: the matmul ceiling (FCN-shaped and large), then per model the
sequential loop (``bp.train`` one run after the other), lockstep groups of K in ``--ks``, the ``vmap``
variant at one K (to justify ``engine/lockstep.py``'s choice of op), and 2 worker processes x 1 thread each
running sequential runs (timed after the workers have imported torch and trained one warm-up run).
GFLOP/s counts 6 x multiply-adds per training sample (forward, both gradients) and 2 x per test sample.
MNIST is subsampled (``--fcn-train``, ``--cnn-train`` training images, ``--test`` test images) so that K = 64
fits in minutes on two cores.  Other jobs on a shared machine move every figure: the load average at the
start and end is recorded; compare within one run only.
Results: ``benchmarks/results/bench_lockstep_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from torch import nn

import bayesprune as bp

ROOT = Path(__file__).resolve().parents[1]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(n: int, m: int, k: int, device: str, seconds: float = 0.5) -> float:
    a, b = torch.randn(n, k, device=device), torch.randn(k, m, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    reps, best = 0, float("inf")
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or reps < 5:
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2.0 * n * m * k / best / 1e9


def macs_per_sample(model: nn.Module, input_shape) -> int:
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features
        elif isinstance(mod, nn.Conv2d):
            total += out.shape[1] * out.shape[2] * out.shape[3] * mod.kernel_size[0] * mod.kernel_size[1] \
                * mod.in_channels // mod.groups

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.inference_mode():
        model(torch.zeros(1, *input_shape))
    for h in hs:
        h.remove()
    return total


def subsample(data: bp.TensorDataset, n_train: int, n_test: int) -> bp.TensorDataset:
    g = torch.Generator().manual_seed(0)
    tr = torch.randperm(data.n_train, generator=g)[:n_train]
    te = torch.randperm(data.n_test, generator=g)[:n_test]
    return bp.TensorDataset(data.name, data.x_train[tr], data.y_train[tr], data.x_test[te], data.y_test[te],
                            data.num_classes)


def configs(base: bp.RunConfig, k: int) -> list[bp.RunConfig]:
    return [base.replace(seed=s) for s in range(k)]


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _worker_runs(cfg_dicts: list[dict], data_parts: tuple) -> float:
    """In a worker: train each config on the given data; seconds taken."""
    data = bp.TensorDataset(*data_parts)
    t0 = time.perf_counter()
    for c in cfg_dicts:
        bp.train(bp.RunConfig.from_dict(c), progress=False, data=data)
    return time.perf_counter() - t0


def workers_rate(base: bp.RunConfig, data: bp.TensorDataset, runs_each: int, workers: int = 2) -> dict:
    """Run-epochs per second of ``workers`` processes x 1 thread, each training ``runs_each`` runs."""
    parts = (data.name, data.x_train, data.y_train, data.x_test, data.y_test, data.num_classes)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(1,)) as ex:
        warm = [base.replace(epochs=1, seed=99).to_dict()]
        list(ex.map(_worker_runs, [warm] * workers, [parts] * workers))  # imports, data, first-run costs
        chunks = [[c.to_dict() for c in configs(base, runs_each)] for _ in range(workers)]
        t0 = time.perf_counter()
        list(ex.map(_worker_runs, chunks, [parts] * workers))
        wall = time.perf_counter() - t0
    epochs = workers * runs_each * base.epochs
    return {"workers": workers, "threads_each": 1, "run_epochs": epochs, "seconds": wall, "rate": epochs / wall}


def bench_model(name: str, base: bp.RunConfig, data: bp.TensorDataset, ks: list[int], seq_runs: int,
                vmap_k: int, device: str, workers: bool) -> dict:
    model = bp.initial_model(base, data)
    macs = macs_per_sample(model.cpu(), data.input_shape)
    flops_per_run_epoch = 6 * macs * data.n_train + 2 * macs * data.n_test
    out: dict = {"macs_per_sample": macs, "n_train": data.n_train, "n_test": data.n_test, "epochs": base.epochs,
                 "lockstep": {}}
    bp.train(base.replace(seed=98), progress=False, data=data)  # warm-up: first-call costs outside the timings
    t0 = time.perf_counter()
    for c in configs(base, seq_runs):
        bp.train(c, progress=False, data=data)
    sync(device)
    wall = time.perf_counter() - t0
    out["sequential"] = {"runs": seq_runs, "seconds": wall, "rate": seq_runs * base.epochs / wall}
    print(f"{name}: sequential {out['sequential']['rate']:.2f} run-epochs/s", flush=True)
    for k in ks:
        t0 = time.perf_counter()
        res = bp.train_many(configs(base, k), data=data)
        sync(device)
        wall = time.perf_counter() - t0
        assert all(r.status == "ok" for r in res), [getattr(r, "status", r) for r in res]
        out["lockstep"][str(k)] = {"seconds": wall, "rate": k * base.epochs / wall}
        print(f"{name}: lockstep K={k} {k * base.epochs / wall:.2f} run-epochs/s", flush=True)
    if vmap_k:
        t0 = time.perf_counter()
        bp.train_many(configs(base, vmap_k), data=data, how="vmap")
        sync(device)
        wall = time.perf_counter() - t0
        out["vmap"] = {"k": vmap_k, "seconds": wall, "rate": vmap_k * base.epochs / wall}
        print(f"{name}: vmap K={vmap_k} {out['vmap']['rate']:.2f} run-epochs/s", flush=True)
    if workers and device == "cpu":
        out["workers"] = workers_rate(base, data, max(1, seq_runs // 2))
        print(f"{name}: 2 workers x 1 thread {out['workers']['rate']:.2f} run-epochs/s", flush=True)
    for entry in [out["sequential"], *out["lockstep"].values(), *([out["vmap"]] if "vmap" in out else []),
                  *([out["workers"]] if "workers" in out else [])]:
        entry["gflops"] = entry["rate"] * flops_per_run_epoch / 1e9
    seq = out["sequential"]["rate"]
    out["speedup_vs_sequential"] = {k: v["rate"] / seq for k, v in out["lockstep"].items()}
    return out


def render(report: dict) -> str:
    lines = [f"Measured {report['date']} on {report['machine']['cpu']} ({report['machine']['cores']} cores), "
             f"{report['device']}, {report['threads']} torch thread(s); load average {report['loadavg_start']} at the "
             f"start, {report['loadavg_end']} at the end (other jobs share these cores). Command: "
             f"`{report['command']}`.", "",
             f"Matmul ceiling in the same run: {report['ceiling_gflops']['matmul_fcn_shape']:.0f} GFLOP/s "
             f"(64x784 @ 784x300), {report['ceiling_gflops']['matmul_large']:.0f} GFLOP/s (large).", "",
             "| model | variant | run-epochs/s | × sequential | GFLOP/s |", "|---|---|---|---|---|"]
    for name, m in report["models"].items():
        seq = m["sequential"]["rate"]
        label = f"{name} ({m['n_train']} train / {m['n_test']} test)"
        rows = [("sequential loop", m["sequential"])]
        rows += [(f"lockstep K = {k}", v) for k, v in m["lockstep"].items()]
        if "vmap" in m:
            rows.append((f"lockstep K = {m['vmap']['k']}, vmap(functional_call)", m["vmap"]))
        if "workers" in m:
            rows.append(("2 workers × 1 thread, sequential runs", m["workers"]))
        for variant, v in rows:
            lines.append(f"| {label} | {variant} | {v['rate']:.2f} | {v['rate'] / seq:.2f} | {v['gflops']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the main process (1: the other core is free for the shared machine's other jobs; the 2-worker row uses both)")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--models", nargs="+", default=["fcn", "cnn"])
    ap.add_argument("--fcn-train", type=int, default=6000)
    ap.add_argument("--cnn-train", type=int, default=500)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--seq-runs", type=int, default=4)
    ap.add_argument("--no-workers", action="store_true")
    ap.add_argument("--quick", action="store_true", help="digits, small K: seconds (the tests and gpu_check --quick)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default=None, help="file name stem (default bench_lockstep_<device>)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    report = {"command": " ".join(["python", "benchmarks/bench_lockstep.py", *(argv or sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device, "threads": args.threads,
              "loadavg_start": [round(x, 2) for x in os.getloadavg()],
              "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "torch": torch.__version__,
                          "python": platform.python_version(),
                          **({"gpu": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {})},
              "ceiling_gflops": {"matmul_fcn_shape": matmul_gflops(64, 300, 784, device),
                                 "matmul_large": matmul_gflops(2048, 2048, 2048, device)},
              "models": {}}
    for name in args.models:
        if args.quick:
            base = bp.RunConfig(dataset="digits", model=name, method="none", epochs=1, device=device,
                                fcn_hidden=(64, 32), cnn_hidden=32)
            data = bp.load_dataset(base, device)
            ks, seq_runs = [k for k in args.ks if k <= 4] or [1, 4], 2
        else:
            base = bp.RunConfig(dataset="mnist", model=name, method="none", epochs=1, device=device,
                                data_dir=args.data_dir)
            n_train = args.fcn_train if name == "fcn" else args.cnn_train
            data = subsample(bp.load_dataset(base, "cpu"), n_train, args.test).to(device)
            ks, seq_runs = args.ks, args.seq_runs
        vmap_k = 4 if args.quick else 16
        report["models"][name] = bench_model(name, base, data, ks, seq_runs, vmap_k, device,
                                             workers=not args.no_workers)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"bench_lockstep_{device.split(':')[0]}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = render(report)
    (out / f"{stem}.md").write_text(md)
    print(md)
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
