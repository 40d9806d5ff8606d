"""How fast is bayesprune compared with what a user would otherwise write?

    python benchmarks/bench_training.py --data-dir ../shared/data            # CPU, FCN and CNN
    python benchmarks/bench_training.py --data-dir ../shared/data --device cuda

Measured side by side in one process, repetitions interleaved (A B C D A B C D ...),
one epoch each (same model, data, batch 64, Adam, same number of steps; every
variant also evaluates the 10k test images once, as an epoch of each would):

  A   the tutorial loop: torchvision MNIST, ToTensor()+Normalize, DataLoader(64, shuffle=True)
  B0  (CNN only) bayesprune, method none, on today's old path: plain NCHW nn.Conv2d
      (``bayesprune.core.models.Conv2d.fast_cpu = False``), so old and new are timed in one run
  B   bayesprune, method none (the CNN on its channels-last convolutions)
  C   bayesprune, bayes-magnitude at 90 % (Bayes-factor work included)
  D   a persistent-mask loop written with torch.nn.utils.prune (forward pre-hook),
      against D' = bayesprune magnitude 90 % with regrow=False (timed on an epoch with the mask active)

Also: the machine's matmul FLOP rate (large and FCN-shaped), a large conv2d's forward and
forward+backward FLOP rate and the CNN's conv shapes by memory format and algorithm
(benchmarks/bench_conv.py), the FLOP rate B (and B0) achieves, a full MNIST CNN epoch
(938 steps + test evaluation) old path vs new, the peak memory of a full MNIST run, the
time until the README's default run prints its first epoch, and the load average at the
start and end (other jobs on the machine make timings noisy).
Results go to benchmarks/results/bench_<device>.json.
``--smoke`` runs a tiny version on fake MNIST files (the test suite uses it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import bayesprune as bp
from bayesprune.core.models import Conv2d

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conv import conv_ceilings  # noqa: E402

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


# ------------------------------------------------------------------ helpers
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def extracted_mnist(data_dir: str, into: Path) -> Path:
    """torchvision's MNIST wants extracted raw files; copy/extract them into a temp root."""
    src = Path(data_dir) / "MNIST" / "raw"
    raw = into / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        if (src / name).exists():
            shutil.copy(src / name, raw / name)
        else:
            with gzip.open(src / f"{name}.gz", "rb") as fin, open(raw / name, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    return into


def write_fake_mnist(root: Path, n_train: int = 640, n_test: int = 200) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, shape in (("images", (n, 28, 28)), ("labels", (n,))):
            arr = rng.integers(0, 256 if kind == "images" else 10, shape).astype(np.uint8)
            header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            code = 3 if kind == "images" else 1
            (raw / f"{prefix}-{kind}-idx{code}-ubyte").write_bytes(header + arr.tobytes())


def macs_per_sample(model: nn.Module, input_shape) -> tuple[int, int]:
    """(multiply-adds of one forward pass, those of the first layer) over Linear and Conv2d layers."""
    per_layer: list[int] = []

    def hook(mod, inp, out):
        if isinstance(mod, nn.Linear):
            per_layer.append(mod.in_features * mod.out_features)
        elif isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            per_layer.append(out.shape[1] * out.shape[2] * out.shape[3] * k)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.inference_mode():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return sum(per_layer), per_layer[0]


def matmul_gflops(n: int, m: int, k: int, device: str, seconds: float = 1.0) -> float:
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


# ------------------------------------------------------------------ the variants
def evaluate_loader(model, loader, device) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += int((model(x).argmax(1) == y).sum())
    model.train()
    return correct


def variant_a(cfg: bp.RunConfig, tv_root: Path, steps: int, device: str, shape, classes) -> float:
    """The tutorial loop, as written in most PyTorch MNIST examples."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_ds = datasets.MNIST(str(tv_root), train=True, download=False, transform=tf)
    test_ds = datasets.MNIST(str(tv_root), train=False, download=False, transform=tf)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=1000)
    torch.manual_seed(cfg.seed)
    model = bp.build_model(cfg, shape, classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sync(device)
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(train_loader):
        if i == steps:
            break
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    evaluate_loader(model, test_loader, device)
    sync(device)
    return time.perf_counter() - t0


def variant_ours(cfg: bp.RunConfig, epoch: int = 1, fast_conv: bool = True) -> float:
    """bayesprune's own per-epoch time (training, pruning step, test evaluation).

    ``fast_conv=False`` runs the CNN on the old path (plain NCHW ``nn.Conv2d``).
    """
    sync(cfg.resolved_device())
    Conv2d.fast_cpu = fast_conv
    try:
        res = bp.train(cfg, progress=False)
    finally:
        Conv2d.fast_cpu = True
    return float(res.history["seconds"].iloc[epoch - 1])


def variant_d_torch(cfg: bp.RunConfig, data: bp.TensorDataset, steps: int, device: str) -> float:
    """A persistent-mask loop with torch.nn.utils.prune (mask applied by its forward pre-hook)."""
    from torch.nn.utils import prune

    torch.manual_seed(cfg.seed)
    model = bp.build_model(cfg, data.input_shape, data.num_classes).to(device)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            prune.l1_unstructured(module, "weight", amount=cfg.sparsity)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    sync(device)
    t0 = time.perf_counter()
    perm = torch.randperm(data.n_train, generator=g).to(device)
    for i in range(steps):
        idx = perm[i * 64:(i + 1) * 64]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    bp.evaluate(model, data.x_test, data.y_test)
    sync(device)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ one model
def bench_model(model_name: str, args, tv_root: Path, device: str) -> dict:
    steps_full = -(-60000 // 64)
    steps = args.fcn_steps if model_name == "fcn" else args.cnn_steps
    base = bp.RunConfig(dataset="mnist", model=model_name, data_dir=args.data_dir, device=device, epochs=1)
    data = bp.load_dataset(base, device)
    steps = min(steps or steps_full, -(-data.n_train // 64))
    train_size = None if steps * 64 >= data.n_train else steps * 64
    cfg_b = base.replace(method="none", train_size=train_size)
    cfg_c = base.replace(method="bayes-magnitude", sparsity=0.9, train_size=train_size)
    cfg_d = base.replace(method="magnitude", sparsity=0.9, regrow=False, epochs=2, train_size=train_size)
    sub = bp.load_dataset(cfg_b, device)
    variants = {
        "A_tutorial_dataloader": lambda: variant_a(base, tv_root, steps, device, data.input_shape, data.num_classes),
        "B0_bayesprune_none_old_conv": lambda: variant_ours(cfg_b, fast_conv=False),
        "B_bayesprune_none": lambda: variant_ours(cfg_b),
        "C_bayesprune_bayes_magnitude90": lambda: variant_ours(cfg_c),
        "D_torch_prune_hook": lambda: variant_d_torch(cfg_d, sub, steps, device),
        "D_bayesprune_masks": lambda: variant_ours(cfg_d, epoch=2),
    }
    if model_name != "cnn":  # the old path differs only in the CNN's convolutions
        del variants["B0_bayesprune_none_old_conv"]
    load0 = os.getloadavg()
    for fn in variants.values():  # warm-up: caches, allocator, kernels
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(args.reps):
        for name, fn in variants.items():
            times[name].append(fn())
        print(f"  {model_name} rep {rep + 1}/{args.reps}: " + "  ".join(f"{k.split('_')[0]}={v[-1]:.2f}s" for k, v in times.items()), flush=True)
    load1 = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    model = bp.build_model(base, data.input_shape, data.num_classes)
    macs, first = macs_per_sample(model, data.input_shape)
    n_train = steps * 64 if train_size else data.n_train
    # training: forward + weight gradients + input gradients of every layer but the first
    # (the data needs no gradient); 2 FLOPs per multiply-add; plus the test forward pass
    train_macs = macs + macs + (macs - first)
    flops_b = 2.0 * train_macs * n_train + 2.0 * macs * data.n_test
    out = {
        "model": model_name, "steps": steps, "n_train": n_train, "n_test": data.n_test, "reps": args.reps,
        "loadavg_start": load0, "loadavg_end": load1,
        "macs_per_sample": macs, "train_macs_per_sample": train_macs, "flops_per_epoch": flops_b,
        "seconds": {k: {"median": med[k], "min": min(v), "max": max(v), "all": v} for k, v in times.items()},
        "ratios": {
            "A_over_B": med["A_tutorial_dataloader"] / med["B_bayesprune_none"],
            "C_over_B": med["C_bayesprune_bayes_magnitude90"] / med["B_bayesprune_none"],
            "Dtorch_over_Dours": med["D_torch_prune_hook"] / med["D_bayesprune_masks"],
        },
        "B_gflops": flops_b / med["B_bayesprune_none"] / 1e9,
        "B_gflops_best": flops_b / min(times["B_bayesprune_none"]) / 1e9,
    }
    if "B0_bayesprune_none_old_conv" in med:
        out["ratios"]["B0_over_B"] = med["B0_bayesprune_none_old_conv"] / med["B_bayesprune_none"]
        out["ratios"]["B0_over_B_min"] = min(times["B0_bayesprune_none_old_conv"]) / min(times["B_bayesprune_none"])
        out["B0_gflops"] = flops_b / med["B0_bayesprune_none_old_conv"] / 1e9
        out["B0_gflops_best"] = flops_b / min(times["B0_bayesprune_none_old_conv"]) / 1e9
    return out


def full_cnn_epoch(args, device: str) -> dict:
    """One full MNIST CNN epoch (938 steps + the 10k test evaluation), old conv path vs new, interleaved."""
    cfg = bp.RunConfig(dataset="mnist", model="cnn", method="none", data_dir=args.data_dir, device=device, epochs=1)
    times: dict[str, list[float]] = {"old_conv": [], "new": []}
    load0 = os.getloadavg()
    for rep in range(args.full_epoch_reps):
        times["old_conv"].append(variant_ours(cfg, fast_conv=False))
        times["new"].append(variant_ours(cfg))
        print(f"  cnn full epoch rep {rep + 1}/{args.full_epoch_reps}: old={times['old_conv'][-1]:.2f}s "
              f"new={times['new'][-1]:.2f}s", flush=True)
    out = {"steps": -(-60000 // cfg.batch_size), "reps": args.full_epoch_reps, "loadavg_start": load0,
           "loadavg_end": os.getloadavg(),
           "seconds": {k: {"median": statistics.median(v), "min": min(v), "all": v} for k, v in times.items()}}
    out["old_over_new"] = out["seconds"]["old_conv"]["median"] / out["seconds"]["new"]["median"]
    out["table1_hours_per_25_epoch_run"] = {k: 25 * v["median"] / 3600 for k, v in out["seconds"].items()}
    return out


def peak_memory_mb(data_dir: str, model: str, device: str, epochs: int) -> float:
    code = ("import resource, bayesprune as bp; "
            f"bp.train(bp.RunConfig(dataset='mnist', model='{model}', data_dir={data_dir!r}, device='{device}', "
            f"epochs={epochs}, method='bayes-magnitude'), progress=False); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(p.stdout.strip().splitlines()[-1]) / 1024.0


def first_epoch_seconds() -> float:
    """Wall time from launching the README's default run to its first epoch line."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "bayesprune", "train"], stdout=subprocess.PIPE, text=True,
                         cwd=tempfile.gettempdir())
    first = float("nan")
    for line in p.stdout:
        if line.startswith("epoch ") and first != first:
            first = time.perf_counter() - t0
    p.wait()
    return first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA", "../shared/data"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", nargs="+", default=["fcn", "cnn"], choices=["fcn", "cnn"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--fcn-steps", type=int, default=None, help="default: a full epoch (938 steps)")
    ap.add_argument("--cnn-steps", type=int, default=150)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--full-epoch-reps", type=int, default=2,
                    help="full MNIST CNN epochs per path (old conv, new) to time; 0 skips (CPU only)")
    ap.add_argument("--skip-conv-ceilings", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny run on fake MNIST files (for the tests)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bpbench-"))
    try:
        if args.smoke:
            write_fake_mnist(tmp)
            args.data_dir, args.reps, args.fcn_steps, args.cnn_steps = str(tmp), 1, 5, 3
            tv_root = tmp
        else:
            tv_root = extracted_mnist(args.data_dir, tmp / "tv")
        report = {"machine": machine(), "device": args.device, "command": " ".join([Path(sys.executable).name] + sys.argv),
                  "loadavg_start": os.getloadavg(),
                  "ceiling_gflops": {"matmul_2048": matmul_gflops(*(3 * [512 if args.smoke else 2048]), args.device),
                                     "matmul_fcn_shape_64x784x300": matmul_gflops(64, 300, 784, args.device)}}
        print(f"machine: {report['machine']}, load average {report['loadavg_start']}")
        print(f"matmul ceiling: {report['ceiling_gflops']['matmul_2048']:.1f} GFLOP/s (2048^3), "
              f"{report['ceiling_gflops']['matmul_fcn_shape_64x784x300']:.1f} GFLOP/s (FCN's first layer shape)")
        if args.device == "cpu" and not args.skip_conv_ceilings:
            convs = conv_ceilings(smoke=args.smoke)
            report["ceiling_gflops"]["conv2d_large_fwd"] = convs["conv2d_large_fwd"]
            report["ceiling_gflops"]["conv2d_large_fwd_bwd"] = convs["conv2d_large_fwd_bwd"]
            report["conv_ceilings"] = convs
            print(f"conv2d ceiling ({convs['conv2d_large_shape']}): fwd {convs['conv2d_large_fwd']:.1f}, "
                  f"fwd+bwd {convs['conv2d_large_fwd_bwd']:.1f} GFLOP/s")
        report["models"] = {}
        for model in args.models:
            report["models"][model] = bench_model(model, args, tv_root, args.device)
        if not args.smoke and args.device == "cpu" and "cnn" in args.models and args.full_epoch_reps > 0:
            report["cnn_full_epoch"] = full_cnn_epoch(args, args.device)
        report["loadavg_end"] = os.getloadavg()
        if not args.smoke:
            report["peak_memory_mb_full_mnist_fcn_1_epoch"] = peak_memory_mb(args.data_dir, "fcn", args.device, 1)
            if args.device == "cpu":
                report["readme_default_first_epoch_seconds"] = first_epoch_seconds()
        print()
        print(render(report))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = "smoke.json" if args.smoke else f"bench_{args.device}.json"
        (out / name).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {out / name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def render(report: dict) -> str:
    lines = ["| model | steps | A tutorial (s) | B0 old conv path (s) | B ours (s) | C ours+BF (s) | D torch prune (s) "
             "| D' ours masks (s) | A/B | B0/B | C/B | D/D' | B0 GFLOP/s | B GFLOP/s | matmul GFLOP/s | conv fwd / fwd+bwd GFLOP/s |",
             "|" + "---|" * 16]
    ceil = report["ceiling_gflops"]
    conv = (f"{ceil['conv2d_large_fwd']:.1f} / {ceil['conv2d_large_fwd_bwd']:.1f}" if "conv2d_large_fwd" in ceil else "–")
    for m, r in report["models"].items():
        s = r["seconds"]

        def cell(k, s=s):
            return f"{s[k]['median']:.2f} [{s[k]['min']:.2f}–{s[k]['max']:.2f}]" if k in s else "–"

        b0 = f"{r['ratios']['B0_over_B']:.2f}" if "B0_over_B" in r["ratios"] else "–"
        b0g = f"{r['B0_gflops']:.1f}" if "B0_gflops" in r else "–"
        lines.append(f"| {m} | {r['steps']} | {cell('A_tutorial_dataloader')} | {cell('B0_bayesprune_none_old_conv')} | "
                     f"{cell('B_bayesprune_none')} | {cell('C_bayesprune_bayes_magnitude90')} | {cell('D_torch_prune_hook')} | "
                     f"{cell('D_bayesprune_masks')} | {r['ratios']['A_over_B']:.2f} | {b0} | {r['ratios']['C_over_B']:.3f} | "
                     f"{r['ratios']['Dtorch_over_Dours']:.2f} | {b0g} | {r['B_gflops']:.1f} | {ceil['matmul_2048']:.1f} | {conv} |")
    extra = []
    if "cnn_full_epoch" in report:
        f = report["cnn_full_epoch"]["seconds"]
        extra.append(f"full MNIST CNN epoch (938 steps + test eval), median [min]: old conv path "
                     f"{f['old_conv']['median']:.2f} [{f['old_conv']['min']:.2f}] s, new {f['new']['median']:.2f} "
                     f"[{f['new']['min']:.2f}] s ({report['cnn_full_epoch']['old_over_new']:.2f}x)")
    extra.append(f"load average at start {tuple(round(v, 2) for v in report['loadavg_start'])}, "
                 f"at end {tuple(round(v, 2) for v in report['loadavg_end'])}")
    if "peak_memory_mb_full_mnist_fcn_1_epoch" in report:
        extra.append(f"peak memory, full MNIST FCN run: {report['peak_memory_mb_full_mnist_fcn_1_epoch']:.0f} MB")
    if "readme_default_first_epoch_seconds" in report:
        extra.append(f"README default run, launch to first epoch line: {report['readme_default_first_epoch_seconds']:.2f} s")
    return "\n".join(lines + ([""] + extra if extra else []))


if __name__ == "__main__":
    sys.exit(main())
