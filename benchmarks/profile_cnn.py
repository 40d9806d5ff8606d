"""Profile one CNN training epoch (150 steps of batch 64 + the 10k test evaluation) on CPU.

    PYTHONPATH=$PWD python benchmarks/profile_cnn.py --data-dir ../shared/data [--fast 0|1] [--out FILE]

Prints torch.profiler's table of the top ops by self CPU time and writes it to --out.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

import bayesprune as bp
from bayesprune.core.models import Conv2d
from bayesprune.engine.training import make_adam, train_epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA", "../shared/data"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--fast", choices=["0", "1"], default="1", help="1: channels-last convs (default), 0: the old NCHW path")
    ap.add_argument("--out", default=None)
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    cfg = bp.RunConfig(dataset="mnist", model="cnn", data_dir=args.data_dir, device="cpu", epochs=1,
                       method="none", train_size=args.steps * 64)
    data = bp.load_dataset(cfg, "cpu")
    torch.manual_seed(0)
    model = bp.build_model(cfg, data.input_shape, data.num_classes)
    Conv2d.fast_cpu = args.fast == "1"
    opt = make_adam(model.parameters(), cfg.lr, "cpu")
    g = torch.Generator().manual_seed(0)
    train_epoch(model, opt, data, 64, g, None)  # warm-up
    bp.evaluate(model, data.x_test, data.y_test)
    load0 = os.getloadavg()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        with torch.profiler.record_function("train_epoch"):
            train_epoch(model, opt, data, 64, g, None)
        t1 = time.perf_counter()
        with torch.profiler.record_function("evaluate_10k"):
            bp.evaluate(model, data.x_test, data.y_test)
        t2 = time.perf_counter()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    head = (f"CNN epoch profile: {args.steps} steps x 64 + 10k test eval, threads={torch.get_num_threads()}, "
            f"channels-last convs={Conv2d.fast_cpu}\n"
            f"wall (under profiler): train {t1 - t0:.2f} s, eval {t2 - t1:.2f} s; loadavg start {load0}, end {os.getloadavg()}\n")
    print(head + table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(head + table + "\n")


if __name__ == "__main__":
    main()
