"""How much does a Laplace Bayes factor cost, against the paper's posterior ratio and a training epoch?

    python benchmarks/bench_evidence.py --data-dir ../shared/data                  # 1 and 2 threads
    python benchmarks/bench_evidence.py --data-dir ../shared/data --threads 1 --reps 5
    python benchmarks/bench_evidence.py --data-dir ../shared/data --profile         # where the time goes
    python benchmarks/bench_evidence.py --checks-only                              # accuracy checks only

The MNIST FCN (784-300-100-10), trained one epoch (Adam, batch 64) so that its curvature is
realistic, pruned to 90 % per layer by magnitude.  One *Laplace gate step* is what the training
loop would do: fit the curvature of the unpruned net, fit the prior precision (empirical Bayes),
fit the curvature of the pruned net (reusing the unpruned net's identical factors), and evaluate
both evidences.  It is timed for kron and diag, on the 4096-example subset (bf_samples) and on
all 60k, next to

  paper   bayesprune.bayes.posterior.posterior_terms before and after pruning (the posterior ratio), same data
  epoch   one plain training epoch: bayesprune.engine.training.train_epoch, batch 64, make_adam

and, to see what would make it cheaper: the curvature on fewer examples (``curvature_samples``;
the likelihood still on 4096), the one-sample Monte Carlo GGN and the empirical Fisher.
Repetitions are interleaved (A B C ... A B C ...); the median and min are reported, with
os.getloadavg() before each repetition: the machine is shared, so read the min as "quiet".

Two accuracy checks ride along (no MNIST needed; ``--checks-only`` runs just them):

  mask_gap   the kron masked log-determinant (min of the Schur-diagonal and Hadamard bounds)
             against the exact log det of the masked Kronecker matrix, and the exact masked
             full GGN, on a small digits FCN at 25/50/90/99 % (magnitude and random masks)
  occam      removing one weight w (diag): the measured change of log Z against
             1/2 log(1 + h/delta) + delta w^2/2 (its Occam and prior terms) - g w - h w^2/2 (fit)

Results go to benchmarks/results/bench_evidence.json.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import math
import os
import pstats
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import bayesprune as bp
from bayesprune.bayes.evidence import Curvature, _MaskedKron
from bayesprune.engine.training import make_adam, train_epoch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_evidence.json"


def machine() -> dict:
    """bench_training's machine record, plus the versions the Laplace evidence depends on."""
    from importlib.metadata import version

    from bench_training import machine as base_machine  # a sibling script: benchmarks/ is on sys.path

    return {**base_machine(), "laplace-torch": version("laplace-torch"), "asdfghjkl": version("asdfghjkl")}


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
    train_epoch(m, opt, data, 64, g, None)
    return {"seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------ timing
def summarise(runs: list[dict]) -> dict:
    secs = [r["seconds"] for r in runs]
    out = {"median": statistics.median(secs), "min": min(secs), "all": secs}
    if "parts" in runs[0]:
        out["parts_median"] = {k: statistics.median(r["parts"][k] for r in runs) for k in runs[0]["parts"]}
    for key in ("log_bf", "prior_precision", "before", "after"):
        if key in runs[0]:
            out[key] = runs[0][key]
    return out


def timing(args, threads: int, data, model, pruned, mask) -> dict:
    torch.set_num_threads(threads)
    n = data.n_train
    sub = bp.bf_subset(n, 4096, seed=0)
    xs, ys = data.x_train[sub], data.y_train[sub]
    xa, ya = data.x_train, data.y_train

    def gate(x, y, structure, **kw):
        return lambda r: laplace_gate_step(model, pruned, mask, x, y, n, structure, **kw)

    variants = {
        "epoch": lambda r: plain_epoch(model, data, r),
        "paper/4096": lambda r: paper_gate_step(model, pruned, xs, ys, n),
        "kron/4096": gate(xs, ys, "kron"),
        "diag/4096": gate(xs, ys, "diag"),
        "kron/4096 curv 1024": gate(xs, ys, "kron", curvature_samples=1024),
        "kron/4096 curv 512": gate(xs, ys, "kron", curvature_samples=512),
        "kron/4096 ggn-mc": gate(xs, ys, "kron", hessian="ggn-mc"),
        "kron/4096 ggn-mc curv 1024": gate(xs, ys, "kron", hessian="ggn-mc", curvature_samples=1024),
        "kron/4096 ef": gate(xs, ys, "kron", hessian="ef"),
        "diag/4096 ggn-mc": gate(xs, ys, "diag", hessian="ggn-mc"),
    }
    if not args.quick and threads == min(args.threads):  # the 60k runs take minutes: once is enough
        variants.update({
            "paper/60000": lambda r: paper_gate_step(model, pruned, xa, ya, n),
            "kron/60000": gate(xa, ya, "kron"),
            "diag/60000": gate(xa, ya, "diag"),
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


def timing_table(result: dict) -> str:
    lines = [f"threads={result['threads']}  (1-min loadavg before each rep: "
             f"{', '.join(f'{avg[0]:.1f}' for avg in result['loadavg_before_each_rep'])})",
             f"{'variant':28s} {'median s':>9s} {'min s':>8s} {'x epoch':>8s} {'gated/plain':>11s} {'log BF':>12s}"]
    for name, s in result["variants"].items():
        bf = f"{s['log_bf']:12.1f}" if "log_bf" in s else " " * 12
        lines.append(f"{name:28s} {s['median']:9.3f} {s['min']:8.3f} {s['over_plain_epoch']:8.3f} "
                     f"{s['gated_epoch_over_plain']:11.3f} {bf}")
    return "\n".join(lines)


def profile(model, pruned, mask, data) -> str:
    sub = bp.bf_subset(data.n_train, 4096, seed=0)
    xs, ys = data.x_train[sub], data.y_train[sub]
    laplace_gate_step(model, pruned, mask, xs, ys, data.n_train, "kron")  # warm up (imports)
    pr = cProfile.Profile()
    pr.enable()
    laplace_gate_step(model, pruned, mask, xs, ys, data.n_train, "kron")
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(18)
    return buf.getvalue()


# ------------------------------------------------------------------ accuracy checks
def _digits_fcn(hidden, epochs=15):
    """A float64 FCN trained on the digits, so that "exact" comparisons are not float32 noise."""
    data = bp.load_dataset(bp.RunConfig(dataset="digits"))
    data = bp.TensorDataset(data.name, data.x_train.double(), data.y_train, data.x_test.double(),
                            data.y_test, data.num_classes)
    torch.manual_seed(0)
    model = bp.FCN(data.input_shape, data.num_classes, hidden).double()
    opt = make_adam(model.parameters(), 3e-3, "cpu")
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        train_epoch(model, opt, data, 64, g, None)
    return model, data


def mask_gap(hidden=(24, 12)) -> dict:
    """kron masked log det vs the exact masked Kronecker matrix and the exact masked full GGN."""
    from laplace import Laplace
    from torch.utils.data import DataLoader, TensorDataset

    model, data = _digits_fcn(hidden)
    x, y = data.x_train, data.y_train
    delta = Curvature.fit(model, x, y).fit_prior_precision()
    rows = []
    g = torch.Generator().manual_seed(1)
    for kind in ("magnitude", "random"):
        for sparsity in (0.25, 0.5, 0.9, 0.99):
            mask = bp.compute_mask(model, kind, sparsity, "layer", g)
            pruned = copy.deepcopy(model)
            bp.apply_mask(pruned, mask)
            curv = Curvature.fit(pruned, x, y)
            terms = curv.log_evidence(delta, mask=mask)
            ours = terms.n_params * math.log(2 * math.pi) - 2 * terms.log_occam
            keep = torch.cat([mask[n].flatten() if n in mask else torch.ones(p.numel(), dtype=torch.bool)
                              for n, p in pruned.named_parameters()])
            idx = torch.nonzero(keep).flatten()
            exact = {}
            for structure in ("kron", "full"):  # laplace-torch's default backend (curvlinops)
                la = Laplace(pruned, "classification", subset_of_weights="all", hessian_structure=structure)
                la.fit(DataLoader(TensorDataset(x, y), batch_size=256))
                H = (la.H_facs.to_matrix() if structure == "kron" else la.H).double()
                M = H[idx][:, idx] + delta * torch.eye(idx.numel(), dtype=torch.float64)
                exact[structure] = float(torch.linalg.slogdet(M).logabsdet)
            diag = Curvature.fit(pruned, x, y, structure="diag").log_evidence(delta, mask=mask)
            schur = hadamard = 0.0  # the two bounds apart, summed over the partly pruned weight blocks
            for name, block in zip(curv.names, curv._blocks):
                if name in mask and not bool(mask[name].all()) and bool(mask[name].any()):
                    s_, h_, _, _ = _MaskedKron(block, mask[name].flatten())._parts(delta)
                    schur, hadamard = schur + s_, hadamard + h_
            rows.append({
                "mask": kind, "sparsity": sparsity, "kept_params": int(keep.sum()),
                "exact_kron_logdet": exact["kron"], "ours_minus_exact_kron": ours - exact["kron"],
                "relative": (ours - exact["kron"]) / exact["kron"],
                "exact_full_ggn_logdet": exact["full"], "kron_minus_exact_full_ggn": ours - exact["full"],
                "diag_minus_exact_full_ggn": diag.n_params * math.log(2 * math.pi) - 2 * diag.log_occam - exact["full"],
                "schur_bound_weight_blocks": schur, "hadamard_bound_weight_blocks": hadamard,
            })
    return {"model": f"digits FCN 64-{'-'.join(map(str, hidden))}-10, float64, 15 epochs",
            "n_params": sum(p.numel() for p in model.parameters()), "prior_precision": delta,
            "note": "log det(H_S + delta I) in nats, each mask's curvature fitted on the pruned net; "
                    "the log-evidence error is -1/2 the log-det error", "rows": rows}


def occam_check(n_weights=12) -> dict:
    """Remove one weight at a time (diag): measured delta log Z against its prior, Occam and fit terms."""
    model, data = _digits_fcn((32, 16))
    x, y = data.x_train, data.y_train
    before = Curvature.fit(model, x, y, structure="diag")
    delta = before.fit_prior_precision()
    base = before.log_evidence(delta)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    grad_loglik = -model.fc2.weight.grad.flatten().double()
    model.zero_grad(set_to_none=True)
    offset = before._slices["fc2.weight"].start
    w = model.fc2.weight.detach().flatten().double()
    order = torch.argsort(w.abs())
    picks = order[torch.linspace(0, w.numel() - 1, n_weights).long()]  # smallest |w| to largest
    rows = []
    for p in picks.tolist():
        h, wp, gp = float(before._diag[offset + p]), float(w[p]), float(grad_loglik[p])
        keep = torch.ones(w.numel(), dtype=torch.bool)
        keep[p] = False
        mask = {"fc2.weight": keep.view_as(model.fc2.weight)}
        pruned = copy.deepcopy(model)
        bp.apply_mask(pruned, mask)
        after = Curvature.fit(pruned, x, y, structure="diag").log_evidence(delta, mask=mask)
        own = 0.5 * math.log1p(h / delta) + 0.5 * delta * wp**2  # its Occam term and its prior term
        measured = after.log_evidence - base.log_evidence
        fit = after.log_likelihood - base.log_likelihood
        rows.append({
            "w": wp, "h": h, "grad_loglik": gp, "measured": measured,
            "predicted_quadratic": own - gp * wp - 0.5 * h * wp**2,
            "half_log1p_h_over_delta": 0.5 * math.log1p(h / delta), "own_occam_and_prior": own,
            "fit_measured": fit, "fit_quadratic": -gp * wp - 0.5 * h * wp**2,
            "other_params_occam": measured - fit - own,  # the rest's curvature moves with the pruned net
        })
    return {"model": "digits FCN 64-32-16-10, float64, 15 epochs; single weights of fc2", "prior_precision": delta,
            "rows": rows}


def gap_table(gap: dict) -> str:
    lines = [f"kron mask gap: {gap['model']} ({gap['n_params']} params), delta={gap['prior_precision']:.3g}",
             f"{'mask':10s} {'sparsity':>8s} {'kept':>6s} {'exact kron':>11s} {'ours-exact':>11s} {'rel':>7s} "
             f"{'exact GGN':>10s} {'kron-GGN':>9s} {'diag-GGN':>9s}"]
    for r in gap["rows"]:
        lines.append(f"{r['mask']:10s} {r['sparsity']:8.2f} {r['kept_params']:6d} {r['exact_kron_logdet']:11.1f} "
                     f"{r['ours_minus_exact_kron']:+11.2f} {r['relative']:+7.1%} {r['exact_full_ggn_logdet']:10.1f} "
                     f"{r['kron_minus_exact_full_ggn']:+9.1f} {r['diag_minus_exact_full_ggn']:+9.1f}")
    return "\n".join(lines)


def occam_table(occ: dict) -> str:
    lines = [f"one weight removed: {occ['model']}, delta={occ['prior_precision']:.3g}",
             f"{'w':>8s} {'h':>7s} {'dlogZ':>8s} {'quad.pred':>9s} {'1/2log(1+h/d)':>13s} {'+dw^2/2':>8s} "
             f"{'fit':>8s} {'fit quad':>8s} {'others':>8s}"]
    for r in occ["rows"]:
        lines.append(f"{r['w']:8.4f} {r['h']:7.2f} {r['measured']:8.3f} {r['predicted_quadratic']:9.3f} "
                     f"{r['half_log1p_h_over_delta']:13.3f} {r['own_occam_and_prior']:8.3f} {r['fit_measured']:8.3f} "
                     f"{r['fit_quadratic']:8.3f} {r['other_params_occam']:8.3f}")
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def write(out: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("BAYESPRUNE_DATA", "./data"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the 60k variants (run at the lowest thread count)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one kron gate step and exit")
    ap.add_argument("--checks-only", action="store_true", help="run only the accuracy checks (no MNIST)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(min(args.threads))
    out = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
           "machine": machine()}

    if not args.profile:
        out["mask_gap"] = mask_gap()
        print(gap_table(out["mask_gap"]), flush=True)
        out["occam"] = occam_check()
        print(occam_table(out["occam"]), flush=True)
        if args.checks_only:
            write(out, args.out)
            return

    data = bp.load_dataset(bp.RunConfig(dataset="mnist", data_dir=args.data_dir))
    torch.manual_seed(0)
    model = bp.FCN(data.input_shape, data.num_classes, (300, 100))
    train_epoch(model, make_adam(model.parameters(), 1e-3, "cpu"), data, 64, torch.Generator().manual_seed(0), None)
    pruned = copy.deepcopy(model)
    mask = bp.prune_magnitude(pruned, 0.9)
    if args.profile:
        print(profile(model, pruned, mask, data))
        return
    out.update({"model": "FCN 784-300-100-10, 1 epoch", "mask": "magnitude 90 % per layer",
                "n_train": data.n_train, "timing": []})
    for threads in args.threads:
        result = timing(args, threads, data, model, pruned, mask)
        out["timing"].append(result)
        print(timing_table(result), flush=True)
        write(out, args.out)  # after each thread count: a long run that is stopped keeps what it measured


if __name__ == "__main__":
    main()
