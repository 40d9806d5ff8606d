"""Per-layer sensitivity scan of the MNIST FCN, its per-layer suggestion, and what the Bayes-factor gate chose.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/sensitivity_study.py --data-dir ../shared/data

Protocol: the FCN trained dense (``method="none"``, ``--epochs``, seed 0), as in ``bench_payoff.py``.  The scan
prunes one layer at a time by magnitude to each of ``--sparsities``, the others dense, and measures the accuracy
on the first ``--scan-samples`` *training* images (choosing on the test set would flatter the choice).  For each
``--max-drops`` threshold, each layer gets the highest scanned sparsity whose drop stays within it; that network
(one-shot, no retraining) and a uniformly pruned one with the same number of weights are then evaluated on the
test set.  Beside them, gated runs (``bayes-magnitude``, gradual schedule, ``final_prune="gate"``, target 99 %
as a ceiling, ``--gate-epochs``) for each ``--gate-sigmas``, whose per-layer sparsity is what the gate chose.

Writes benchmarks/results/sensitivity_mnist_fcn.json and .md (embedded in docs/results/payoff.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import bayesprune as bp
from bayesprune.analysis.sensitivity import kept_weights


def markdown(r: dict) -> str:
    layers = r["layers"]
    lines = [f"{r['dataset']} FCN, trained dense {r['epochs']} epochs (test accuracy {r['dense_test_acc']:.4f}; "
             f"one test image = {1 / r['n_test']:.4f}). Scan on {r['scan_samples']:,} training images, "
             "magnitude, one layer at a time, the others dense: accuracy drop (dense minus pruned).", "",
             "| layer | weights | " + " | ".join(f"{s:.0%}" for s in r["sparsities"]) + " |",
             "|---|---|" + "---|" * len(r["sparsities"])]
    for layer in layers:
        rows = [x for x in r["scan"] if x["layer"] == layer]
        lines.append(f"| {layer} | {rows[0]['weights']:,} | " + " | ".join(f"{x['drop']:+.4f}" for x in rows) + " |")
    lines += ["", "Per-layer choices, and what they give on the test set (the suggestions: one-shot, no retraining; "
              "the gated runs trained under their masks):", "",
              "| choice | " + " | ".join(layers) + " | weights kept | test accuracy | same size, uniform |",
              "|---|" + "---|" * (len(layers) + 3)]
    for s in r["suggestions"]:
        lines.append(f"| scan, drop ≤ {s['max_drop']:g} | " + " | ".join(f"{s['sparsities'][k]:.2f}" for k in layers)
                     + f" | {s['kept']:,} | {s['test_acc']:.4f} | {s['uniform_test_acc']:.4f} |")
    for g in r["gated"]:
        lines.append(f"| Bayes-factor gate, σ = {g['sigma']:g} | " + " | ".join(f"{g['layer_sparsity'][k]:.2f}"
                                                                                 for k in layers)
                     + f" | {g['kept']:,} | {g['test_acc']:.4f} | |")
    lines.append("")
    lines.append(f"Load average {r['loadavg_start'][0]:.2f} at the start, {r['loadavg_end'][0]:.2f} at the end "
                 f"({r['seconds']:.0f} s).")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA", "../shared/data"))
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99])
    ap.add_argument("--scan-samples", type=int, default=10000)
    ap.add_argument("--max-drops", type=float, nargs="+", default=[0.005, 0.01, 0.02])
    ap.add_argument("--gate-epochs", type=int, default=10)
    ap.add_argument("--gate-sigmas", type=float, nargs="+", default=[0.03, 0.1])
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    t0, load0 = time.time(), os.getloadavg()
    cfg = bp.RunConfig(dataset=args.dataset, model="fcn", method="none", epochs=args.epochs, seed=0, device="cpu",
                       data_dir=args.data_dir)
    data = bp.load_dataset(cfg, "cpu")
    dense = bp.train(cfg, progress=False, data=data).model.eval()

    def test_acc(m):
        return bp.evaluate(m, data.x_test, data.y_test)[1]

    scan = bp.sensitivity_scan(dense, data, args.sparsities, "magnitude", max_samples=args.scan_samples)
    total = sum(bp.count_weights(dense).values())
    suggestions = []
    for d in args.max_drops:
        s = bp.suggest_sparsities(scan, d)
        kept = kept_weights(scan, s)
        suggestions.append({"max_drop": d, "sparsities": s, "kept": kept, "test_acc": test_acc(bp.prune_layers(dense, s)),
                            "uniform_test_acc": test_acc(bp.pruned_copy(dense, "magnitude", 1 - kept / total))})
        print(suggestions[-1], flush=True)
    gated = []
    for sigma in args.gate_sigmas:
        g = bp.train(cfg.replace(method="bayes-magnitude", schedule="gradual", final_prune="gate", sparsity=0.99,
                                 epochs=args.gate_epochs, prior_sigma=sigma), progress=False, data=data)
        kept = sum(int((w != 0).sum()) for w in bp.prunable_parameters(g.model).values())
        gated.append({"sigma": sigma, "layer_sparsity": g.layer_sparsity, "final_sparsity": g.final_sparsity,
                      "kept": kept, "test_acc": g.test_accuracy, "steps": g.summary()["pruning_steps_accepted"],
                      "proposed": g.summary()["pruning_steps_proposed"]})
        print(gated[-1], flush=True)
    report = {"command": " ".join([Path(sys.executable).name] + sys.argv), "threads": torch.get_num_threads(),
              "dataset": args.dataset, "epochs": args.epochs, "sparsities": args.sparsities,
              "scan_samples": args.scan_samples, "n_test": data.n_test, "dense_test_acc": test_acc(dense),
              "layers": list(bp.count_weights(dense)), "scan": scan.to_dict(orient="records"),
              "suggestions": suggestions, "gated": gated, "gate_epochs": args.gate_epochs,
              "loadavg_start": load0, "loadavg_end": os.getloadavg(), "seconds": time.time() - t0}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"sensitivity_{args.dataset}_fcn"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
