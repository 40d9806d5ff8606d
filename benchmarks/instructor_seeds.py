"""What the seed changes in notebooks 01, 02, 03, 05 and 08: their headline numbers at seeds 0, 1 and 2.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/instructor_seeds.py [--seeds 0 1 2]

Why: the instructor notes (docs/instructor/) state each exercise's expected result from one run at seed 0;
a teacher also needs to know which of those numbers are the mechanism and which are one draw.  Each
notebook's defaults are repeated here with only ``RunConfig(seed=...)`` changed (digits, CPU), and the
numbers the notes quote are printed and written to ``benchmarks/results/instructor_seeds.json`` with the
load average beside them.  Seed 0 must reproduce the notebooks' own outputs (deterministic on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import bayesprune as bp
from bayesprune.lab import explore

ROOT = Path(__file__).resolve().parents[1]


def one_seed(seed: int) -> dict:
    digits = bp.RunConfig(dataset="digits", seed=seed)
    data = bp.load_dataset(digits)
    out: dict = {"seed": seed}
    # notebook 03: the dashboard's gated run (25 epochs, sigma 0.3) and exercise 2's 12-epoch run
    base = digits.replace(method="bayes-magnitude", epochs=25, sparsity=0.9, schedule="gradual", gate="immediate",
                          final_prune="gate", prior_sigma=0.3, beta=1.0)
    g = bp.train(base, progress=False, data=data)
    out["03"] = {"final_sparsity": g.final_sparsity, "test_acc": g.test_accuracy,
                 "pattern": "".join("x" if p else "." for p in g.history["pruned"].astype(bool)),
                 "ex2_sigma0.3_12_epochs_final": bp.train(base.replace(epochs=12), progress=False, data=data).final_sparsity}
    # notebooks 01 and 02: the dense network of 15 epochs, pruned one-shot
    net = bp.train(digits.replace(method="none", epochs=15), progress=False, data=data)
    acc = {f"{s} {r:.0%}": bp.evaluate(bp.pruned_copy(net.model, s, r, seed), data.x_test, data.y_test)[1]
           for r in (0.9, 0.95) for s in ("magnitude", "random")}
    out["01"] = {"dense": net.test_accuracy, **acc}
    cross = explore.crossover_table(net.model, data, [0.9, 0.95, 0.99])["1/sigma*^2 = 2 x loss / S"]
    loop = bp.train(digits.replace(method="bayes-magnitude", schedule="gradual", gate="immediate", final_prune="gate",
                                   epochs=10, prune_end_epoch=10, sparsity=0.9, prior_sigma=0.15), progress=False, data=data)
    out["02"] = {f"sigma* {s} 50%": bp.sigma_crossover(net.model, data, s, 0.5, bf_samples=None) for s in ("random", "magnitude")}
    out["02"].update({"1/sigma*^2 at 90/95/99%": cross.tolist(),
                      "9b pattern": "".join("x" if p else "." for p in loop.history["pruned"].astype(bool)),
                      "9b final sparsity": loop.final_sparsity})
    # notebook 08: the Bayes-gated run of section 4 (its own config: 15 epochs, sigma 0.15, 99 % ceiling)
    g8 = bp.train(digits.replace(method="bayes-magnitude", schedule="gradual", final_prune="gate", sparsity=0.99,
                                 epochs=15, prior_sigma=0.15), progress=False, data=data)
    out["08"] = {"gate_final_sparsity": g8.final_sparsity, "gate_test_acc": g8.test_accuracy}
    # notebook 05: rescaled random pruning at 60 %, fresh and trained, widths 16 and 256; the layer-wise bound
    x = data.x_test[:256]
    fresh = bp.theory.width_experiment(x, 10, [16, 256], [0.6], rescale=(True,), n_masks=20, seed=seed)
    nets = {w: bp.train(digits.replace(method="none", epochs=5, fcn_hidden=(w, w)), progress=False, data=data).model.cpu()
            for w in (16, 256)}
    trained = bp.theory.width_experiment(x, 10, [16, 256], [0.6], rescale=(True,), n_masks=20, nets=nets, seed=seed)
    bound_net = bp.train(digits.replace(method="none", epochs=5), progress=False, data=data).model.cpu()
    bound = bp.theory.max_prunable_fraction(bound_net, x, 0.1, 0.1, n_masks=60, rescale=True)
    out["05"] = {"fresh d by width": fresh.groupby("width")["distance"].mean().to_dict(),
                 "trained d by width": trained.groupby("width")["distance"].mean().to_dict(),
                 "bound max_fraction": dict(zip(bound["layer"], bound["max_fraction"]))}
    out["loadavg"] = list(os.getloadavg())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "instructor_seeds.json")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(seed))
        print(json.dumps(rows[-1], default=str), flush=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0), "rows": rows},
                              indent=1, default=float))
    tmp.replace(args.out)  # atomic: a half-written file is never left behind


if __name__ == "__main__":
    main()
