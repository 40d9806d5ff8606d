"""Is the Laplace Bayes factor's curvature precise enough for the decisions it takes?

    OMP_NUM_THREADS=1 python benchmarks/bench_curvature.py

Two measurements on digits, with the fair comparison (both sides fine-tuned alike,
``bfcompare.evidence_scan``) on networks trained at their MAP (prior fitted online):

  noise  the log BF of a magnitude prune to 25/50/75/90 % on the FCN (300-100), once per
         curvature seed 0/1/2: the one-sample Monte Carlo GGN (ggn-mc) against the GGN with its
         exact expectation (ggn, the default), both under kron.  Std over the 3 curvature seeds,
         per network seed.  The gate's thresholds (log beta) span about +-7 nats.
  bias   kron and diag against the exact full GGN on a 64-3-10 MLP (235 parameters, small enough
         for the full matrix), each with its own fitted prior, as the gate would use it.

Writes benchmarks/results/curvature/{curvature.json, noise.md, bias.md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

import bayesprune as bp
from bayesprune.analysis.report import markdown_table
from bayesprune.lab import bfcompare
from bayesprune.runs.fileio import atomic_write_json, atomic_write_text

OUT = Path(__file__).resolve().parent / "results" / "curvature"
MAP = dict(train_prior="map", prior_fit="marglik", prior_sigma=1.0)


def noise(nets: list[int], sparsities: list[float], dense_epochs: int) -> pd.DataFrame:
    rows = []
    base = bp.RunConfig(dataset="digits", method="none", epochs=dense_epochs, **MAP)
    data = bp.load_dataset(base)
    for seed in nets:
        net = bp.train(base.replace(seed=seed), progress=False, data=data).model
        for curvature in ("ggn-mc", "ggn"):
            for cseed in (0, 1, 2):
                scan = bfcompare.evidence_scan(net, data, strategies=("magnitude",), sparsities=sparsities, seed=seed,
                                               curvature=curvature, curvature_seed=cseed, train_prior="map")
                rows += [{"net seed": seed, "curvature": curvature, "curvature seed": cseed, "sparsity": r,
                          "log BF": v} for r, v in zip(scan["sparsity"], scan["log_bf_laplace"])]
    return pd.DataFrame(rows)


def bias(nets: list[int], sparsities: list[float], epochs: int) -> pd.DataFrame:
    rows = []
    base = bp.RunConfig(dataset="digits", method="none", epochs=epochs, fcn_hidden=(3,), **MAP)
    data = bp.load_dataset(base)
    for seed in nets:
        net = bp.train(base.replace(seed=seed), progress=False, data=data).model
        for structure in ("full", "kron", "diag"):
            scan = bfcompare.evidence_scan(net, data, strategies=("magnitude",), sparsities=sparsities, seed=seed,
                                           structure=structure, curvature="ggn", train_prior="map")
            rows += [{"net seed": seed, "structure": structure, "sparsity": r, "log BF": v}
                     for r, v in zip(scan["sparsity"], scan["log_bf_laplace"])]
    return pd.DataFrame(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    ap.add_argument("--dense-epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    load0, t0 = os.getloadavg(), time.perf_counter()
    nz = noise(args.nets, args.sparsities, args.dense_epochs)
    std = (nz.groupby(["curvature", "net seed", "sparsity"])["log BF"].std(ddof=1).unstack("sparsity"))
    noise_table = std.reset_index().rename(columns={r: f"std at {r:.0%}" for r in args.sparsities})
    mean = nz.groupby(["curvature", "sparsity"])["log BF"].mean().unstack("sparsity").reset_index()
    mean = mean.rename(columns={r: f"mean at {r:.0%}" for r in args.sparsities})
    bs = bias(args.nets, args.sparsities, 25)
    wide = bs.pivot_table(index=["net seed", "sparsity"], columns="structure", values="log BF").reset_index()
    wide["kron - full"] = wide["kron"] - wide["full"]
    wide["diag - full"] = wide["diag"] - wide["full"]
    bias_table = wide.groupby("sparsity")[["full", "kron", "diag", "kron - full", "diag - full"]].mean().reset_index()
    bias_table.insert(0, "magnitude sparsity", [f"{r:.0%}" for r in bias_table.pop("sparsity")])
    seconds = time.perf_counter() - t0
    cmd = "OMP_NUM_THREADS=1 python benchmarks/bench_curvature.py " + " ".join(sys.argv[1:])
    noise_md = "\n".join([
        f"Std of the fair Laplace log BF (nats) over curvature seeds 0/1/2, kron, digits FCN 300-100 trained "
        f"{args.dense_epochs} epochs at its MAP, one row per network seed (`{cmd.strip()}`):", "",
        markdown_table(noise_table, 1), "",
        "Mean log BF over network and curvature seeds (nats):", "",
        markdown_table(mean, 1)]) + "\n"
    bias_md = "\n".join([
        f"Fair Laplace log BF (nats) of a magnitude prune on a 64-3-10 MLP (235 parameters), digits, 25 epochs at "
        f"its MAP, exact GGN; each structure with its own fitted prior; mean over network seeds {args.nets}:", "",
        markdown_table(bias_table, 1)]) + "\n"
    atomic_write_text(OUT / "noise.md", noise_md)
    atomic_write_text(OUT / "bias.md", bias_md)
    atomic_write_json(OUT / "curvature.json", {
        "command": cmd.strip(), "seconds": round(seconds, 1), "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "noise": nz.to_dict(orient="records"), "bias": bs.to_dict(orient="records")}, indent=1)
    print(noise_md + "\n" + bias_md + f"\n{seconds:.0f} s, load {load0} -> {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
