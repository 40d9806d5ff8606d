"""What pruning buys on the MNIST FCN: bytes on disk, weights kept, FLOPs, CPU latency, and the crossover.

    PYTHONPATH=$PWD python benchmarks/bench_payoff.py --data-dir ../shared/data [--epochs 3] [--reps 15]
    PYTHONPATH=$PWD python benchmarks/bench_payoff.py --device cuda      # the cuSPARSE CSR path, where there is a GPU

Protocol: the FCN (784-300-100-10) is trained dense (``method="none"``, ``--epochs``, seed 0, Adam 1e-3,
batch 64), then pruned one-shot to each sparsity with no retraining, by magnitude layer by layer (the
output layer too), and by whole hidden neurons (L2 norm; the output layer's neurons are the classes and
are kept).  The test accuracy is printed for orientation only (no retraining: it is not what a pruned
and retrained network reaches).  Sizes are the bytes of ``torch.save`` of the state dict, that file
gzip'd, and ``bp.export_sparse``'s file.  Latencies: the masked dense model, the same weights as
``torch.sparse`` CSR, and the neuron-pruned network shrunk to a smaller dense one, at batch 1 and 256,
``--threads`` threads; every repetition times every cell once (interleaved), reported as median [min-max]
over repetitions (one measurement: the median of single forward passes timed for ``--min-seconds``).  The
crossover is read from the medians and, separately, from the minima (the least disturbed repetition).  Each
repetition first records the load average and the machine's 1024^3 matmul
rate: the machine is shared, so read the latencies beside them.

Writes benchmarks/results/bench_payoff[_cuda][_<n>thread].json and .md (no suffix: cpu, 2 threads) (the table docs/results/payoff.md embeds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import bayesprune as bp
from bayesprune.analysis import payoff

SPARSITIES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.99)
BATCHES = (1, 256)


def _fmt_ms(row) -> str:
    return f"{row['median'] * 1e3:.3f} [{row['min'] * 1e3:.3f}–{row['max'] * 1e3:.3f}]"


def _kb(n: float) -> str:
    return f"{n / 1024:,.1f}"


def markdown(report: dict) -> str:
    """The results table and the crossover, from the report alone."""
    sizes = {(r["pruning"], r["target"]): r for r in report["sizes"]}
    lat = {(r["variant"], r["target"], r["batch"]): r for r in report["latency"]}
    dev = report["device"]
    lines = [
        f"{report['dataset']} FCN {report['architecture']}, trained dense {report['epochs']} epochs, pruned one-shot (no retraining); "
        f"{dev}, {report['threads']} threads, {report['reps']} interleaved repetitions, latency per forward pass in ms, "
        "median [min–max]. Load average (1 min) over the repetitions "
        f"{report['loadavg_min']:.2f}–{report['loadavg_max']:.2f}; matmul 1024³ "
        f"{report['matmul_gflops_median']:.0f} GFLOP/s median [{report['matmul_gflops_min']:.0f}–"
        f"{report['matmul_gflops_max']:.0f}] in the same run (the machine is shared: compare rows within this table, "
        "not with other runs).",
        "",
        "| sparsity | weights kept | MFLOPs / sample | state_dict kB | gzip'd kB | sparse export kB (× smaller) "
        "| acc. | dense b=1 | CSR b=1 | dense b=256 | CSR b=256 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["sparsities"]:
        s = sizes[("magnitude", r)]
        cells = [f"{r:.0%}", f"{s['weights_kept']:,}", f"{s['sparse_flops'] / 1e6:.3f}", _kb(s["dense_bytes"]),
                 _kb(s["dense_gzip_bytes"]), f"{_kb(s['sparse_bytes'])} ({s['times_smaller']:.1f}×)",
                 f"{s['accuracy']:.4f}"]
        for b in report["batches"]:
            cells += [_fmt_ms(lat[("dense", r, b)]), _fmt_ms(lat[("csr", r, b)])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Neuron pruning (whole hidden neurons; the output layer kept), shrunk to a smaller dense FCN:", "",
              "| target | weight sparsity | hidden widths | weights kept | MFLOPs / sample | state_dict kB (shrunk) "
              "| acc. | shrunk b=1 | shrunk b=256 |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in report["sparsities"]:
        s = sizes[("neuron", r)]
        lines.append("| " + " | ".join([
            f"{r:.0%}", f"{s['sparsity']:.3f}", "-".join(map(str, s["hidden"])), f"{s['weights_kept']:,}",
            f"{s['dense_flops'] / 1e6:.3f}", f"{_kb(s['shrunk_bytes'])}", f"{s['accuracy']:.4f}",
            *[_fmt_ms(lat[("shrunk", r, b)]) for b in report["batches"]]]) + " |")
    lines.append("")
    for b, c in report["crossover_csr_vs_dense"].items():
        lines.append(f"- Crossover, batch {b}: CSR beats the masked dense model "
                     + (f"from {c:.0%} sparsity on (at every sparsity measured from there up)."
                        if c is not None else "at none of the sparsities measured."))
    for b, c in report["crossover_csr_vs_dense_by_min"].items():
        lines.append(f"- Read from the fastest repetition instead of the median, batch {b}: CSR beats dense "
                     + (f"from {c:.0%} on." if c is not None else "at none of the sparsities measured."))
    for b, c in report["crossover_shrunk_vs_dense"].items():
        lines.append(f"- Batch {b}: the shrunk neuron-pruned model beats the masked dense one "
                     + (f"from {c:.0%} on." if c is not None else "at none of the sparsities measured."))
    if 0.0 in report["sparsities"]:
        lines.append("- At 0 % the shrunk model *is* the dense model (same shapes, same weights): the difference "
                     "between their latencies there is the measurement noise of this run.")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA", "../shared/data"))
    ap.add_argument("--dataset", default="mnist", help="mnist (the benchmark); digits or synthetic for a smoke run")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--min-seconds", type=float, default=0.02, help="time filled by the calls of one measurement")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--markdown-only", metavar="JSON", help="rewrite the .md beside this report; measure nothing")
    args = ap.parse_args()
    if args.markdown_only:
        path = Path(args.markdown_only)
        path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available here")
    t_start = time.time()

    cfg = bp.RunConfig(dataset=args.dataset, model="fcn", method="none", epochs=args.epochs, seed=0, device="cpu",
                       data_dir=args.data_dir)
    data = bp.load_dataset(cfg, "cpu")
    torch.set_num_threads(1)  # training is not what is timed; one thread trains fastest on a busy 2-core machine
    dense = bp.train(cfg, progress=False, data=data).model.cpu().eval()
    torch.set_num_threads(args.threads)

    def accuracy(m):
        return bp.evaluate(m, data.x_test, data.y_test)[1]

    sizes = payoff.sizes(dense, SPARSITIES, accuracy)
    print(sizes[["pruning", "target", "sparsity", "weights_kept", "dense_bytes", "sparse_bytes", "accuracy"]]
          .to_string(index=False), flush=True)

    models = payoff.timing_models(dense, SPARSITIES, args.device)
    gen = torch.Generator().manual_seed(0)
    inputs = {b: data.x_test[torch.randperm(data.n_test, generator=gen)[:b]].to(args.device) for b in BATCHES}

    def on_rep(rep):
        load, rate = os.getloadavg()[0], payoff.matmul_gflops(device=args.device)
        print(f"  rep {rep + 1}/{args.reps}: load {load:.2f}, matmul {rate:.0f} GFLOP/s", flush=True)
        return {"loadavg_1min": load, "matmul_gflops": rate}

    latency = payoff.interleaved_latency(models, inputs, args.reps, args.min_seconds, on_rep)
    table = payoff.latency_table(latency)
    per_rep = latency.groupby("rep")[["loadavg_1min", "matmul_gflops"]].first()
    report = {
        "command": " ".join([Path(sys.executable).name] + sys.argv), "machine": platform.node(),
        "cpu_cores": os.cpu_count(), "torch": torch.__version__, "device": args.device, "threads": args.threads,
        "dataset": args.dataset, "architecture": "-".join(
            str(n) for n in [dense.fc1.in_features, *(m.out_features for m in dense.modules()
                                                       if isinstance(m, torch.nn.Linear))]),
        "epochs": args.epochs, "reps": args.reps, "sparsities": list(SPARSITIES), "batches": list(BATCHES),
        "protocol": __doc__.split("Protocol: ")[1].split("\n\nWrites")[0].replace("\n", " "),
        "dense_test_accuracy": accuracy(dense),
        "loadavg_per_rep": per_rep["loadavg_1min"].tolist(), "matmul_gflops_per_rep": per_rep["matmul_gflops"].tolist(),
        "loadavg_min": float(per_rep["loadavg_1min"].min()), "loadavg_max": float(per_rep["loadavg_1min"].max()),
        "matmul_gflops_median": statistics.median(per_rep["matmul_gflops"]),
        "matmul_gflops_min": float(per_rep["matmul_gflops"].min()),
        "matmul_gflops_max": float(per_rep["matmul_gflops"].max()),
        "sizes": json.loads(sizes.to_json(orient="records")),
        "latency": table.to_dict(orient="records"),
        "latency_all_reps": latency.to_dict(orient="records"),
        "crossover_csr_vs_dense": payoff.crossover(table, "csr", "dense"),
        "crossover_shrunk_vs_dense": payoff.crossover(table, "shrunk", "dense"),
        "crossover_csr_vs_dense_by_min": payoff.crossover(table, "csr", "dense", "min"),
        "seconds": round(time.time() - t_start, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("bench_payoff" + ("" if args.device == "cpu" else f"_{args.device}")
            + ("" if args.threads == 2 else f"_{args.threads}thread"))
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (out / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
