"""The prepared check for a machine with a GPU: everything into one folder, within a time budget.

    bash benchmarks/gpu_check.sh                                   # = python benchmarks/gpu_check.py --device cuda
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gc   # the CI mode: seconds, no GPU needed

Steps, in order, each with what is left of ``--budget`` seconds (default 480: 8 minutes); a step already
recorded as ``ok`` in ``<out>/summary.json`` is skipped, so running the same command again goes on where a
killed or timed-out check stopped:

1. ``env``: torch, the device's name, whether ``--device`` is there (no CUDA: exit 2, nothing else runs).
2. ``device_tests``: ``tests/test_lockstep.py`` with ``BAYESPRUNE_TEST_DEVICE=<device>`` (every lockstep group
   and its sequential oracle on the device) -> ``device_tests.log``.
3. ``notebooks``: every notebook at its CI parameters (``pytest -m notebook tests/test_notebooks.py``; the
   notebooks take the GPU when there is one) -> ``notebooks.log``.  Not in ``--quick``.
4. ``epochs``: ``benchmarks/bench_lockstep.py`` (single and lockstep, K = 1 / 16 / 64 / 105; ``--quick``: digits,
   K <= 4) -> ``bench_lockstep_<device>.json/.md``.
5. ``table1_mnist_cnn`` then ``table1_fashion_cnn``: the CNN blocks of Table 1 at the paper's protocol
   (25 epochs, seeds 0-4, 105 runs, all 60k training images) through ``benchmarks/reproduce_table1.py
   --lockstep 35``, resumable (each member's run file is written as it ends); whatever the budget allows.
   ``--quick``: a digits CNN block of 2 epochs, 2 seeds, one sparsity.

Each step runs as its own process with a timeout; ``summary.json`` records its status, exit code and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _summary(out: Path) -> dict:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {"steps": {}}


def _save(out: Path, summary: dict) -> None:
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")


def _run(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[str, int, float]:
    """Run ``cmd`` with its output in ``log``; (status, exit code, seconds); status ``timeout`` past ``timeout``."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, timeout=max(1.0, timeout),
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}).returncode
        except subprocess.TimeoutExpired:
            return "timeout", -1, time.perf_counter() - t0
    return ("ok" if rc == 0 else "failed"), rc, time.perf_counter() - t0


def steps(args) -> list[tuple[str, list[str], dict, str]]:
    """(name, command, environment, log file) of each step after ``env``."""
    py, dev, out = sys.executable, args.device, Path(args.out)
    tests = [py, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "tests/test_lockstep.py"]
    if args.quick:
        tests += ["-k", "bit_for_bit or fcn-one-shot-plain or cnn-one-shot-paper"]
    bench = [py, "benchmarks/bench_lockstep.py", "--device", dev, "--out", str(out), "--data-dir", args.data_dir]
    bench += ["--quick", "--no-workers"] if args.quick else ["--ks", "1", "16", "64", "105", "--no-workers",
                                                             "--fcn-train", "60000", "--cnn-train", "60000",
                                                             "--test", "10000"]
    out_steps: list[tuple[str, list[str], dict, str]] = [
        ("device_tests", tests, {"BAYESPRUNE_TEST_DEVICE": dev, "OMP_NUM_THREADS": "1"}, "device_tests.log")]
    if not args.quick:
        out_steps.append(("notebooks", [py, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-m", "notebook",
                                        "tests/test_notebooks.py"], {}, "notebooks.log"))
    out_steps.append(("epochs", bench, {}, "epochs.log"))
    table = [py, "benchmarks/reproduce_table1.py", "--model", "cnn", "--device", dev, "--workers", "1",
             "--data-dir", args.data_dir]
    if args.quick:
        out_steps.append(("table1_digits_cnn", table + ["--dataset", "digits", "--epochs", "2", "--seeds", "0", "1",
                                                         "--sparsities", "0.5", "--lockstep", "9", "--set",
                                                         "cnn_hidden=16", "--out", str(out / "table1_digits_cnn")],
                          {}, "table1_digits_cnn.log"))
    else:
        for ds, tag in (("mnist", "table1_mnist_cnn"), ("fashion-mnist", "table1_fashion_cnn")):
            out_steps.append((tag, table + ["--dataset", ds, "--epochs", "25", "--seeds", "0", "1", "2", "3", "4",
                                            "--lockstep", "35", "--out", str(out / f"{tag}_masks")], {}, f"{tag}.log"))
    return out_steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="the CI mode: a few tests, digits, seconds")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for all steps (default 480)")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results/gpu_check_<device>)")
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA") or str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args(argv)
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"gpu_check_{args.device.split(':')[0]}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_end = time.monotonic() + args.budget
    summary = _summary(out)
    summary.update(command=" ".join(["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
                   device=args.device, quick=args.quick, budget_s=args.budget)

    import torch

    env = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "loadavg": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                    time.gmtime())}
    summary["env"] = env
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        summary["steps"]["env"] = {"status": "failed", "error": "no CUDA device visible to torch"}
        _save(out, summary)
        print(f"gpu_check: --device {args.device} but torch sees no CUDA device; nothing run", file=sys.stderr)
        return 2
    summary["steps"]["env"] = {"status": "ok"}
    _save(out, summary)
    worst = 0
    for name, cmd, extra_env, log in steps(args):
        done = summary["steps"].get(name, {})
        if done.get("status") == "ok":
            print(f"gpu_check: {name}: ok before, skipped", flush=True)
            continue
        left = t_end - time.monotonic()
        if left < 5:
            summary["steps"][name] = {"status": "not run", "reason": "budget spent"}
            print(f"gpu_check: {name}: not run (budget spent)", flush=True)
            worst = max(worst, 1)
            continue
        status, rc, secs = _run(cmd, out / log, left, extra_env)
        summary["steps"][name] = {"status": status, "exit_code": rc, "seconds": round(secs, 1), "log": log}
        _save(out, summary)
        print(f"gpu_check: {name}: {status} ({secs:.1f} s, log {out / log})", flush=True)
        worst = max(worst, 0 if status == "ok" else 1)
    summary["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    _save(out, summary)
    return worst


if __name__ == "__main__":
    sys.exit(main())
