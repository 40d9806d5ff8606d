"""Execute every notebook with papermill (small parameters) and check what it computed.

Also: every notebook opens with the same set-up cell (one install source, named once, the
README's), an "Open in Colab" badge that points at the same repository, and exercise cells
(tagged ``exercise``) whose answers land in the results JSON.  The widget notebooks run a
second time with Colab's ipywidgets 7.7 on the kernel's path.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))
#: The notebook whose set-up cell is the reference (all others must match it exactly).
SETUP_REFERENCE = "01_pruning_basics.ipynb"
#: Notebooks still to receive the shared set-up cell and badge (teaching-fixes issue): remove a name once its
#: notebook has them; the strict xfail then fails as a reminder if a name is left here too long.
PENDING_SETUP: set[str] = set()
#: Notebooks with widgets: run again with ipywidgets 7.7 (Colab's) on the kernel's path.
WIDGET_NOTEBOOKS = ["02_bayes_factor.ipynb", "03_bayesian_pruning_dashboard.ipynb", "05_probabilistic_pruning_theory.ipynb"]


def _check_01(r, p):
    assert 0.5 < r["dense_test_acc"] <= 1.0 and r["n_test"] == 360
    one = {}
    for x in r["one_shot"]:
        one.setdefault((x["strategy"], x["target"]), []).append(x)
    mag90, rand90 = one[("magnitude", 0.9)][0], one[("random", 0.9)]
    assert len(rand90) == 5 and len(one[("magnitude", 0.9)]) == 1  # random: a distribution over masks
    assert mag90["test_acc"] >= max(x["test_acc"] for x in rand90)
    assert abs(mag90["measured_sparsity"] - 0.9) < 0.005
    assert r["verdicts"]["0.9"]["within_noise"] is False and r["verdicts"]["0.9"]["mean"] > 0  # what the text says
    # neuron pruning keeps the output layer (the classes): its sparsity is below the target, never above
    for (strategy, target), rows in one.items():
        if strategy == "neuron" and target > 0:
            assert rows[0]["measured_sparsity"] < target
    assert r["classes_deleted"]["0.5"] >= 1  # what pruning the output layer's neurons would do
    for row in r["retrain"]:
        assert abs(row["sparsity_after_retrain"] - row["sparsity"]) < 0.005  # masks held through retraining
    assert r["torch_prune_same"] is True
    assert r["raw_prune_same"] is True  # torch's l1_unstructured zeroes the weights our magnitude mask does
    for target in r["collapsed"]:  # the sentence "both are within 0.05 of chance" holds for every sparsity it names
        assert all(x["test_acc"] < 0.15 for x in r["one_shot"] if x["target"] == float(target)
                   and x["strategy"] in ("magnitude", "random"))


def _check_02(r, p):
    for s in r["crossovers"].values():
        assert s > 0
    for row in r["scan"]:
        assert math.isclose(row["log_bf"], row["delta_log_likelihood"] + row["delta_log_prior"], rel_tol=1e-9, abs_tol=1e-6)
        assert row["delta_log_prior"] > 0 and row["delta_log_likelihood"] < 0  # pruning gains prior, costs fit
    d = r["default"]  # section 3 states what the gate does at the default sigma, from these numbers
    assert d["opens"] == (d["prior_gain"] > d["fit_loss"]) == (d["log_bf"] > 0)
    mean_rows = [x for x in r["sum_vs_mean"] if x["likelihood"] == "mean"]
    assert mean_rows and r["mean_open_fraction"] == sum(x["log_bf"] > 0 for x in mean_rows) / len(mean_rows)
    sizes = {x["samples"] for x in r["samples"]}
    assert 64 in sizes and len(sizes) == 2
    assert math.isfinite(r["slider"]["log_bf"])
    # Algorithm 3 written out in the notebook makes the package's decisions, with the same Bayes factors
    assert r["algorithm_same"] is True and len(r["algorithm"]) == 4 * len(p["compare_sigmas"])
    for row in r["algorithm"]:
        assert row["package pruned"] == row["ours pruned"]
        assert math.isclose(row["package log BF"], row["ours log BF"], rel_tol=1e-6, abs_tol=1e-3)
    # the text: at sigma = 0.03 every step is accepted, at 0.3 a negative log BF makes later steps skip (a refusal)
    steps = {s: [x for x in r["algorithm"] if x["sigma"] == s] for s in p["compare_sigmas"]}
    assert all(x["package pruned"] for x in steps[0.03])
    assert r["skipped"] and {x["sigma"] for x in r["skipped"]} == {0.3}
    first_skip = min(x["epoch"] for x in r["skipped"])
    assert [x for x in steps[0.3] if x["epoch"] == first_skip - 1][0]["package log BF"] < 0
    side = {x["sigma"]: x for x in r["side_by_side"]}
    assert side[0.03]["opens"] is True and side[0.3]["opens"] is False  # section 3's side-by-side
    assert math.isclose(side[0.03]["fit_loss"], side[0.3]["fit_loss"])  # the fit does not depend on sigma
    assert math.isclose(side[0.03]["prior_gain"], 100 * side[0.3]["prior_gain"], rel_tol=1e-9)
    # Gaussian prior = weight decay delta = 1/sigma^2, against torch's own weight_decay
    wd = r["weight_decay"]
    assert wd["prior_gradient_gap"] < 1e-9 and wd["sgd_step_gap"] < 1e-9 < wd["largest_step"]
    for row in r["cross"]:  # 1/sigma*^2 is 2 x the fit's loss / S, as the column says
        assert math.isclose(row["1/sigma*^2 = 2 x loss / S"], row["sigma*"] ** -2, rel_tol=1e-9)
    # one-shot with persistent masks: every step after the first has log BF exactly 0
    assert r["one_shot_later_log_bfs"] and all(v == 0.0 for v in r["one_shot_later_log_bfs"])
    assert set(r["exercises"]) == {"1", "2", "3", "4"}
    # section 9b: the gated training loop written out makes bp.train's decisions, and (as its text says) at
    # loop_sigma it refuses a step and accepts a later one
    loop = r["loop"]
    assert r["loop_same"] is True and len(loop) == p.get("loop_epochs", 10)
    kept = [x["ours pruned"] for x in loop]
    assert any(a is False and True in kept[i + 1:] for i, a in enumerate(kept))


def _check_03(r, p):
    labels = [x["index"] for x in r["summary"]]
    assert len(labels) == len(p["compare_methods"])
    for hist in r["histories"].values():
        assert len(hist) == p["epochs"]
    plain = next(x for x in r["summary"] if x["index"].startswith("magnitude"))
    bayes = next(x for x in r["summary"] if x["index"].startswith("bayes-magnitude"))
    assert abs(plain["final sparsity"] - p["sparsity"]) <= 0.005  # plain takes every step to the target
    assert bayes["final sparsity"] <= p["sparsity"] + 0.005  # the gate's target is a ceiling
    assert plain["steps accepted"] == plain["steps proposed"] >= 1  # no gate: every step that removes weights is taken
    assert 0 <= bayes["steps accepted"] <= bayes["steps proposed"]
    # the issue's acceptance check: with auto_train the two overlaid methods' sparsity curves differ
    assert r["sparsity_curves_differ"] is True
    ex4 = r["exercises"]["4"]  # Exercise 4 shows sparsity beside accuracy: plain random always reaches its target
    assert set(ex4) == {"random", "bayes-random"} and abs(ex4["random"]["final sparsity"] - 0.99) <= 0.005
    assert all(0.0 <= v["final sparsity"] <= 0.995 and 0.0 <= v["test acc"] <= 1.0 for v in ex4.values())
    curves = {k: [row["sparsity"] for row in h] for k, h in r["histories"].items()}
    assert len({tuple(c) for c in curves.values()}) == 2
    assert "error" not in r["status"]
    # what the text states: at the defaults the gate stops below the target, and each decision is told
    assert r["below_target"] == {bayes["index"]: True} and bayes["final sparsity"] < p["sparsity"] - 0.005
    story = r["stories"][bayes["index"]]
    assert story and all(s.startswith("epoch") for s in story)
    assert sum(" accepted" in s for s in story) == bayes["steps accepted"]
    assert len(set(r["exercises"]["1"].values())) > 1  # exercise 1: beta moves where the gate stops


def _check_04(r, p):
    n_pruned = len(p["seeds"]) * 4 * len(p["sparsities"])
    n = len(p["seeds"]) + 2 * n_pruned  # the unpruned baseline once per seed, then each schedule
    assert r["stats"]["total"] == n and r["stats"]["completed"] + r["stats"]["skipped"] == n
    assert r["stats"]["failed"] == 0 and len(r["results"]) == n  # the grid's runs, not every run in out_dir
    assert set(r["tables"]) == {"one-shot", "gradual"}
    for t in r["tables"].values():
        assert len(t) == len(p["sparsities"])
    runs = [x for x in r["results"] if x["key"] in {y["key"] for y in r["results"]}]
    for row in runs:
        assert row["status"] == "ok"
        if row["method"] != "none":
            assert abs(row["final_sparsity"] - row["sparsity"]) <= 0.005
    # one-shot with persistent masks: Bayes and plain identical in every cell (BF = 1 after the first step)
    one_shot = [v for v in r["verdicts"] if v["schedule"] == "one-shot"]
    assert one_shot and all(v["identical in every seed"] for v in one_shot)
    assert set(r["exercises"]) == {"1", "2", "3", "4"}
    # section 4: one gated run per seed, and plain pruning to the sparsity it stopped at (the dense run at 0)
    dense = {x["seed"]: x["test_accuracy"] for x in r["results"] if x["method"] == "none"}
    assert sorted(m["seed"] for m in r["matched"]) == sorted(p["seeds"])
    for m in r["matched"]:
        assert 0 <= m["gate stopped at"] <= max(p["sparsities"])
        if m["gate stopped at"] == 0:
            assert m["plain accuracy"] == dense[m["seed"]]
    assert r["exercises"]["4"]["cells"] == 10  # the paper's MNIST FCN block: 5 sparsities x 2 kinds


def _check_05(r, p):
    import pandas as pd

    fcn = pd.DataFrame(r["fcn"])
    assert set(fcn["width"]) == set(p["widths"]) and set(fcn["rate"]) == set(p["rates"])
    assert fcn.groupby(["width", "rate", "rescale"]).size().min() == p["n_masks"]
    assert (fcn["distance"] > 0).all() and (fcn["signal_kept"] > 0).all()
    # without rescaling the pruned output keeps less of the signal than with it: the collapse diagnostic works
    kept = fcn.groupby("rescale")["signal_kept"].mean()
    assert kept[False] < kept[True]
    assert set(pd.DataFrame(r["cnn"])["width"]) == set(p["cnn_widths"])
    bound = pd.DataFrame(r["bound"])
    assert list(bound["layer"]) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert ((bound["max_fraction"] >= 0) & (bound["max_fraction"] < 1)).all()
    shown = bound["max_fraction"] > 0  # a probability is reported only where a rate was shown, and then it is enough
    assert bound.loc[~shown, "p_hat"].isna().all() and (bound.loc[shown, "p_lower"] >= 1 - p.get("delta", 0.1)).all()
    assert set(pd.DataFrame(r["independence"])["weights"]) == {"fresh", "trained", "trained, shuffled"}
    assert 1 <= len(r["widget"]) <= p["explorer_masks"] and "mask" in r["widget_status"]
    assert isinstance(r["findings"]["fcn_collapse"], bool)
    verdicts = {v["claim"]: v["verdict"] for v in r["verdicts"]}  # section 7's table, computed from the runs
    assert len(verdicts) == 6 and all(v.split(":")[0] in {"supported", "contradicted", "not shown (within the noise)",
                                                          "not tested", "mixed"} for v in verdicts.values())
    falls = r["findings"]["fcn_rescaled_falls_with_width"]  # the first row agrees with section 1's own sentences
    first = next(v for k, v in verdicts.items() if k.startswith("random pruning, rescaled, fresh"))
    assert (first == "supported") == all(falls.values())
    arrangement = next(v for k, v in verdicts.items() if "arrangement" in k)  # decided from both gaps, as section 5 printed
    assert arrangement == r["findings"]["arrangement_verdict"]
    ex3 = pd.DataFrame(r["exercises"]["3"])  # exercise 3 compares like with like: both strategies, fresh and trained
    assert {"magnitude, fresh", "magnitude, trained", "random, fresh", "random, trained"} <= set(ex3.columns)


def _check_06(r, p):
    import pandas as pd

    t = pd.DataFrame(r["tickets"])
    assert set(t["start"]) == {"rewind", "reinit", "finetune"}
    assert len(t) == len(p["seeds"]) * len(p["sparsities"]) * 3
    assert ((t["measured_sparsity"] - t["sparsity"]).abs() < 0.01).all()  # masks held through retraining
    assert set(r["best_at"]) == {str(s) for s in p["sparsities"]}
    g = pd.DataFrame(r["gate"])
    assert len(g) == len(p["seeds"]) * len(p["gate_sigmas"])
    assert ((g["accepted"] >= 0) & (g["accepted"] <= g["proposals"])).all()
    pruned = g[g["gate_sparsity"] > 0]
    # the run ended where the gate said, and the plain mask it is compared with has that same sparsity
    assert ((pruned["measured_sparsity"] - pruned["gate_sparsity"]).abs() < 0.01).all()
    assert ((pruned["one-shot_ticket_sparsity"] - pruned["gate_sparsity"]).abs() < 0.01).all()
    assert ((pruned["gated_ticket_sparsity"] - pruned["gate_sparsity"]).abs() < 0.01).all()
    assert ((pruned["jaccard_kept"] > 0) & (pruned["jaccard_kept"] <= 1)).all()
    for sigma, f in r["gate_findings"].items():
        mine = g[g["sigma"] == float(sigma)]
        assert f["decided_something"] == bool((mine["accepted"] < mine["proposals"]).any())
        # section 3's "a refusal is not a stop": the seeds where an acceptance followed a refusal, from the epochs
        assert f["accepted_after_refusal"] == [int(s) for s, ref, acc in zip(mine["seed"], mine["refused_epochs"],
                                                                             mine["accepted_epochs"])
                                               if ref and acc and max(acc) > min(ref)]
        assert (mine["accepted"] == mine["accepted_epochs"].map(len)).all()
    assert r["exercises"]["3"] == 1.0  # one-shot + persistent masks: the gated mask is the epoch-1 magnitude mask
    vs = pd.DataFrame(r["vs_dense"])  # every ticket is compared with the dense network of its own seed
    assert len(vs) == 3 * len(p["sparsities"])
    for _, v in vs.iterrows():
        mine = t[(t["sparsity"] == v["sparsity"]) & (t["start"] == v["start"])].sort_values("seed")
        dense = [r["dense"][str(s)] for s in mine["seed"]]
        assert math.isclose(v["minus dense"], float((mine["test_acc"] - dense).mean()), abs_tol=1e-9)


def _check_07(r, p):
    import pandas as pd

    scan = pd.DataFrame(r["scan"])
    assert len(scan) == 2 * len(p["sparsities"])
    for col in ("log_bf_paper", "log_bf_paper_fitted", "log_bf_laplace", "delta_fit", "delta_penalty", "delta_occam"):
        assert scan[col].map(math.isfinite).all(), col
    # the Laplace log BF is exactly its three changes: fit + penalty + Occam
    parts = scan["delta_fit"] + scan["delta_penalty"] + scan["delta_occam"]
    assert ((scan["log_bf_laplace"] - parts).abs() <= 1e-6 * scan["log_bf_laplace"].abs().clip(lower=1)).all()
    assert r["fitted_sigma"] > 0 and r["fitted_sigma"] != r["fixed_sigma"]
    d = r["dense"]  # the evidence terms add up, and the Occam factor is a cost (<= 0) on the dense net
    for side in d.values():
        assert math.isclose(side["log Z"], side["fit"] + side["penalty"] + side["Occam"], rel_tol=1e-9, abs_tol=1e-6)
        assert side["Occam"] <= 0
    gated = pd.DataFrame(r["gated"])
    assert len(gated) == 3 * len(p["seeds"])
    assert ((gated["chosen sparsity"] >= 0) & (gated["chosen sparsity"] <= 0.99 + 0.005)).all()
    assert set(r["mode_effect"]) == {"0", str(p["finetune_steps"])}
    assert set(r["exercises"]) == {"1", "2", "3", "4"}
    control = {c["comparison"].split(":")[0]: c["log BF"] for c in r["control"]}
    assert control["fair"] == 0.0 and control["unfair"] > 1.0  # section 4's lesson: a large positive number, as stated
    assert r["dense_finetune_gain"] > 0  # section 6: the dense network still climbs the posterior with more steps
    fit_better = [[row["strategy"], row["sparsity"]] for row in r["scan"] if row["delta_fit"] > 0]
    assert r["fit_better"] == fit_better  # section 6's list of prunes that fit better is section 2's delta_fit > 0
    m90 = next(row for row in r["scan"] if row["strategy"] == "magnitude" and row["sparsity"] == 0.9)
    zero = r["mode_effect"]["0"]  # the prune as made: fit + penalty is the paper's ratio at the fitted sigma
    assert zero["penalty"] >= 0 and zero["Occam"] >= 0  # section 2's text: at fixed weights a removal only helps both
    assert math.isclose(zero["fit"] + zero["penalty"], m90["log_bf_paper_fitted"], rel_tol=1e-4, abs_tol=0.05)
    assert math.isclose(r["mode_effect"][str(p["finetune_steps"])]["log BF"], m90["log_bf_laplace"], rel_tol=1e-9)
    assert r["weight_decay_gap"] < 1e-6  # Gaussian prior = weight decay delta / N


def _check_08(r, p):
    import pandas as pd

    sizes = pd.DataFrame(r["sizes"])
    mag = sizes[sizes["pruning"] == "magnitude"].set_index("target")
    assert list(mag.index) == p["sparsities"] and r["round_trip_equal"] is True
    assert ((mag["sparsity"] - mag.index).abs() < 0.005).all()
    assert ((mag["times_smaller"] - mag["dense_bytes"] / mag["sparse_bytes"]).abs() < 1e-6).all()  # computed sizes
    high = mag[mag.index >= 0.5]  # the zeros pay for their positions from 1/32 on; the file costs a little overhead
    assert (high["sparse_bytes"] < high["dense_bytes"]).all() and mag["sparse_bytes"].is_monotonic_decreasing
    assert math.isclose(r["times_smaller"], mag.loc[max(p["sparsities"]), "times_smaller"], rel_tol=1e-6)
    assert r["times_smaller"] > 5
    neuron = sizes[sizes["pruning"] == "neuron"]
    assert (neuron["shrunk_bytes"] <= neuron["dense_bytes"]).all() and (neuron["sparsity"] <= neuron["target"]).all()
    assert r["shrunk_max_diff"] < 1e-4
    lat = pd.DataFrame(r["latency"])
    assert len(lat) == 3 * len(p["sparsities"]) * len(p["batches"]) and (lat["reps"] == p["reps"]).all()
    assert (lat["min"] > 0).all() and (lat["min"] <= lat["median"]).all() and (lat["median"] <= lat["max"]).all()
    assert set(r["crossover"]) == {str(b) for b in p["batches"]}
    scan = pd.DataFrame(r["scan"])
    assert len(scan) == 3 * len(p["scan_sparsities"]) and set(r["suggested"]) == set(scan["layer"])
    assert all(v in set(p["scan_sparsities"]) | {0.0} for v in r["suggested"].values())
    assert 0 < r["suggested_kept"] <= r["total_weights"]
    assert set(r["gate_layer_sparsity"]) == set(scan["layer"])
    ex3 = r["exercises"]["3"]  # a looser threshold never keeps more weights
    kept = [ex3[k]["kept"] for k in sorted(ex3, key=float)]
    assert kept == sorted(kept, reverse=True)
    assert set(r["exercises"]) == {"1", "2", "3", "4"}
    top = mag.loc[max(p["sparsities"])]  # section 5's line: whether the sparsest model is at chance, and the last useful one
    assert r["payoff_at_chance"] == bool(top["accuracy"] < 0.15)
    assert mag.loc[r["best_useful"], "accuracy"] >= r["dense_test_acc"] - 0.05


def _check_09(r, p):
    import pandas as pd

    assert r["prior_sigma"] > 0
    agree = pd.DataFrame(r["agreement"]).set_index("layer")
    assert list(agree.index) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert agree["spearman(|w|, saliency)"].between(-1, 1).all()
    assert (agree["decades of |w|"] > 3).all()  # section 2's text: |w| spans several decades (four to five)
    # section 1's text: Sigma_pp <= 1/delta (no saliency below the prior's line), so delta*Sigma_pp is in (0, 1]
    assert r["share_max"] <= 1 + 1e-4 and (agree["min delta*Sigma_pp"] > 0).all()
    assert (agree["min delta*Sigma_pp"] <= agree["median delta*Sigma_pp"]).all()
    masks = pd.DataFrame(r["masks"]).set_index("layer")
    kept = round(masks.loc["all", "weights"] * (1 - p.get("mask_sparsity", 0.9)))
    assert masks.loc["all", "kept by magnitude"] == masks.loc["all", "kept by obs"] == kept  # global: the same count
    assert masks.loc["all", "only obs"] == masks.loc["all", "only magnitude"]  # so the disagreements pair up
    assert 0 < masks.loc["all", "jaccard"] <= 1
    assert r["edge"] < r["rest"]  # section 2's text: the edge pixels' first-layer weights are kept least
    front = pd.DataFrame(r["frontier"])
    assert len(front) == len(p["seeds"]) * (1 + 2 * len(p["sparsities"]))
    pruned = front[front["method"] != "none"]
    assert ((pruned["final_sparsity"] - pruned["sparsity"]).abs() < 0.005).all()  # every frontier run at its target
    table = pd.DataFrame(r["table"])
    assert list(table["target"]) == sorted(p["sparsities"]) and (table["n"] == len(p["seeds"])).all()
    assert (table["noise"] >= table["test-set se"] - 1e-12).all()
    assert list(table["beyond the noise"]) == list((table["ci low"] > 0) | (table["ci high"] < 0))
    assert ((table["ci low"] <= table["obs - magnitude"]) & (table["obs - magnitude"] <= table["ci high"])).all()
    v = r["verdict"]  # section 4's sentence is the table's
    assert v["better"] == [t for t, d, b in zip(table["target"], table["obs - magnitude"], table["beyond the noise"])
                           if b and d > 0]
    assert v["worse"] == [t for t, d, b in zip(table["target"], table["obs - magnitude"], table["beyond the noise"])
                          if b and d < 0]
    assert (v["verdict"] == "not distinguishable") == (not v["better"] and not v["worse"])
    assert not any("well-measured" in line or "no better than" in line for line in r["verdict_lines"])
    stops = pd.DataFrame(r["stops"])
    assert len(stops) == len(p["seeds"]) and (stops["final_sparsity"] < 0.99).all()  # the preset chose to stop
    assert len(r["on_frontier"]) == len(p["seeds"]) and len(r["verdict_lines"]) == 3
    ex = r["exercises"]
    assert set(ex) == {"1", "2", "3", "4"}
    jac = [ex["2"][k] for k in sorted(ex["2"], key=float)]
    assert jac == sorted(jac, reverse=True)  # exercise 2: a wider prior moves obs further from magnitude
    assert ex["1"]["jaccard"]["all"] < masks.loc["all", "jaccard"]  # exercise 1: diag further from magnitude than kron,
    assert min(ex["1"]["jaccard"], key=ex["1"]["jaccard"].get) == "fc3.weight"  # most of all in the output layer
    for accs in ex["3"].values():  # exercise 3: one-shot, no retraining: no gain beyond the test-set noise
        a, b = accs["obs"], accs["magnitude"]
        assert abs(a - b) <= 2 * math.sqrt(a * (1 - a) / r["n_test"] + b * (1 - b) / r["n_test"]) + 1e-9
    assert ex["4"]["n"] == len(p["seeds"]) + 1


SMALL = {
    "01_pruning_basics.ipynb": ({"epochs": 3, "retrain_epochs": 1, "sparsities": [0.0, 0.5, 0.9]}, _check_01),
    "02_bayes_factor.ipynb": ({"epochs": 3, "sparsities": [0.5, 0.9], "sigmas": [0.03, 0.3], "compare_sigmas": [0.03, 0.3],
                               "sample_sizes": [64, None], "repeats": 2}, _check_02),
    "03_bayesian_pruning_dashboard.ipynb": ({"epochs": 25, "auto_train": True, "sparsity": 0.9,
                                             "compare_methods": ["magnitude", "bayes-magnitude"]}, _check_03),
    "04_sparsity_sweep.ipynb": ({"epochs": 2, "seeds": [0], "sparsities": [0.5, 0.9]}, _check_04),
    "05_probabilistic_pruning_theory.ipynb": ({"n_inputs": 64, "widths": [16, 64], "cnn_widths": [4], "rates": [0.5],
                                               "n_masks": 4, "n_nets": 2, "trained_epochs": 1, "bound_masks": 30,
                                               "explorer_masks": 5}, _check_05),
    "07_is_it_really_a_bayes_factor.ipynb": ({"epochs": 3, "sparsities": [0.5, 0.9], "gate_epochs": 3, "seeds": [0],
                                              "finetune_steps": 20}, _check_07),
    "06_lottery_tickets.ipynb": ({"epochs": 2, "sparsities": [0.5, 0.9], "seeds": [0], "gate_target": 0.9,
                                  "gate_sigmas": [0.03, 0.2]}, _check_06),
    "08_what_pruning_buys.ipynb": ({"epochs": 3, "sparsities": [0.0, 0.5, 0.9, 0.99], "batches": [1, 64], "reps": 2,
                                    "min_seconds": 0.002, "scan_sparsities": [0.5, 0.9], "gate_epochs": 3}, _check_08),
    "09_which_weights_does_the_posterior_remove.ipynb": ({"epochs": 3, "sparsities": [0.5, 0.9], "seeds": [0],
                                                          "frontier_epochs": 4}, _check_09),
}


def _read_notebook(path):
    """nbformat, imported on first use: it takes seconds to import here, and ``-m "not notebook"`` collects this file too."""
    import nbformat

    return nbformat.read(path, as_version=4)


def test_every_notebook_has_small_parameters_here():
    assert NOTEBOOKS, "no notebooks found"
    assert set(NOTEBOOKS) == set(SMALL), "add small papermill parameters for every notebook"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name):
    nb = _read_notebook(NB_DIR / name)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{name} has committed outputs"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    assert "what you will learn" in text and "summary" in text and "exercises" in text


#: Seconds one cell may run at the small parameters (the slowest takes well under a minute on 2 loaded cores).
CELL_TIMEOUT = 150


def _execute_with_one_retry(pm, name, tmp_path, params):
    """``pm.execute_notebook`` with a per-cell timeout, run again once if a cell times out.

    Why: nbclient sometimes never sees a finished widget cell's ``execute_reply`` (jupyter/nbclient#312: the
    kernel is idle, the client waits on the shell channel forever); we saw it twice in 02's ``interactive``
    cell.  A timeout turns that hang into ``CellTimeoutError``; a real failure fails the same way twice.
    """
    from nbclient.exceptions import CellTimeoutError

    for attempt in (1, 2):
        try:
            return pm.execute_notebook(str(NB_DIR / name), str(tmp_path / name), parameters=params,
                                       kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                                       execution_timeout=CELL_TIMEOUT)
        except CellTimeoutError:
            if attempt == 2:
                raise
            import warnings

            warnings.warn(f"{name}: a cell timed out after {CELL_TIMEOUT} s (nbclient#312?); running it again",
                          stacklevel=2)


def _execute(name, tmp_path, env=None, sweep_dir=None):
    """Run a notebook with its small parameters; returns (results, params, executed notebook).

    ``sweep_dir``: notebook 04's ``out_dir`` (default: a fresh folder in ``tmp_path``)."""
    import papermill as pm

    params, check = SMALL[name]
    params = dict(params, dataset="digits", results_path=str(tmp_path / "results.json"))
    if name.startswith("04"):
        params["out_dir"] = str(sweep_dir or tmp_path / "sweep")
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})  # the kernel inherits this process's environment
    try:
        _execute_with_one_retry(pm, name, tmp_path, params)
    except pm.PapermillExecutionError as exc:  # the failing cell's own error, not papermill's wrapper
        pytest.fail(f"{name}: cell {exc.exec_count} raised {exc.ename}: {exc.evalue}\n{''.join(exc.traceback[-3:])}")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    results = json.loads((tmp_path / "results.json").read_text())
    check(results, params)
    return results, params, _read_notebook(tmp_path / name)


def test_notebook_04_runs_twice_in_the_same_folder(tmp_path):
    # Run All twice on one out_dir: the exercises store runs of other settings there (regrow=True, more
    # sparsities), which once leaked into the second run's tables ("summarize(): ... mix regrow").
    name, sweep = "04_sparsity_sweep.ipynb", tmp_path / "sweep"
    for d in ("first", "second"):
        (tmp_path / d).mkdir()
    first, _, _ = _execute(name, tmp_path / "first", sweep_dir=sweep)
    second, _, _ = _execute(name, tmp_path / "second", sweep_dir=sweep)
    n = first["stats"]["total"]
    # the first run's grid skips only the close-up's two runs (section 1 trains them first); the second skips all
    assert (first["stats"]["completed"], first["stats"]["skipped"]) == (n - 2, 2)
    assert (second["stats"]["completed"], second["stats"]["skipped"]) == (0, n)
    assert len(_csv_rows(sweep / "results.csv")) > n  # the folder holds the exercises' runs too
    assert second["tables"] == first["tables"] and second["verdicts"] == first["verdicts"]
    assert second["exercises"]["1"]["completed"] == 0 and second["exercises"]["2"] == first["exercises"]["2"]



@pytest.mark.parametrize("name", ["04_sparsity_sweep.ipynb", "06_lottery_tickets.ipynb",
                                  "07_is_it_really_a_bayes_factor.ipynb"])
def test_docs_links_of_notebook_resolve(name):
    # every docs/... file a cell names (markdown links and code comments) exists, and each #anchor is a heading in it
    text = "\n".join(c.source for c in _read_notebook(NB_DIR / name).cells)
    found = re.findall(r"(?:\.\./)?(docs/[\w./-]+\.md)(#[\w-]+)?", text)
    assert any("instructor" in f for f, _ in found), f"{name} links no instructor notes"
    for path, anchor in found:
        assert (ROOT / path).is_file(), f"{name} links {path}, which does not exist"
        if anchor:
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), re.M)}
            assert anchor[1:] in slugs, f"{name} links {path}{anchor}: no such heading"

def _csv_rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _outputs_text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", "") if o.get("output_type") == "stream" else o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_under_papermill(name, tmp_path):
    results, _, executed = _execute(name, tmp_path)
    exercises = [c for c in executed.cells if "exercise" in c.metadata.get("tags", [])]
    for c in exercises:  # every exercise cell ran, without an error, and its answer was recorded
        assert not any(o.get("output_type") == "error" for o in c.get("outputs", []))
    if exercises:
        assert len(results["exercises"]) == len(exercises), "every exercise cell records its answer"
    if name not in PENDING_SETUP:  # the kernel imported this checkout's bayesprune, not another one
        assert f"({ROOT / 'bayesprune'})" in _outputs_text(executed)


# ------------------------------------------------------------------ set-up cell, badge, exercises
def _first_code_cell(name) -> str:
    nb = _read_notebook(NB_DIR / name)
    return next(c.source for c in nb.cells if c.cell_type == "code")


def _source_of(setup: str) -> str:
    found = re.findall(r'^BAYESPRUNE_SOURCE = "([^"]+)"', setup, flags=re.M)
    assert len(found) == 1, "the set-up cell names the install source exactly once"
    return found[0]


def _repo_and_branch(source: str) -> tuple[str, str]:
    m = re.fullmatch(r"git\+https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?@([\w./-]+)", source)
    assert m, f"BAYESPRUNE_SOURCE={source!r} is not git+https://github.com/OWNER/REPO.git@BRANCH"
    return m.group(1), m.group(2)


def _pending(name):
    return pytest.mark.xfail(strict=True, reason="set-up cell and badge still to be added (teaching-fixes issue)")


@pytest.mark.parametrize("name", [pytest.param(n, marks=_pending(n)) if n in PENDING_SETUP else n for n in NOTEBOOKS])
def test_every_notebook_has_the_same_setup_cell_and_a_colab_badge(name):
    setup = _first_code_cell(name)
    assert setup == _first_code_cell(SETUP_REFERENCE), f"{name}: the set-up cell differs from {SETUP_REFERENCE}'s"
    repo, branch = _repo_and_branch(_source_of(setup))
    nb = _read_notebook(NB_DIR / name)
    first_md = next(c.source for c in nb.cells if c.cell_type == "markdown")
    badge = f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{name}"
    assert f"(https://colab.research.google.com/assets/colab-badge.svg)]({badge})" in first_md, \
        f"{name}: no Open in Colab badge pointing at {badge}"
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    if re.search(r'^dataset = ', params, flags=re.M):  # notebooks that can load MNIST expose the download
        assert re.search(r"^download = (True|False)", params, flags=re.M), f"{name}: no download parameter"


def test_readme_names_the_same_install_source():
    source = _source_of(_first_code_cell(SETUP_REFERENCE))
    assert source in (ROOT / "README.md").read_text(), f"the README does not name {source}"


def _run_setup(tmp_path, source, extra_env=None):
    """The set-up cell's install branch, run in a fresh interpreter that cannot see bayesprune."""
    setup = _first_code_cell(SETUP_REFERENCE)
    install = setup[:setup.index("import ipywidgets, torch")]  # the part that installs; the imports follow it
    shim = ("import importlib.util\n_find = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda n, *a: None if n == 'bayesprune' else _find(n, *a)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(BAYESPRUNE_SOURCE=source, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **(extra_env or {}))
    return subprocess.run([sys.executable, "-c", shim + install], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def test_setup_cell_says_clearly_when_the_install_fails(tmp_path):
    out = _run_setup(tmp_path, str(tmp_path / "no-such-checkout"))
    assert out.returncode != 0
    assert "installing bayesprune from" in out.stdout
    assert "RuntimeError: could not install bayesprune from" in out.stderr and "README" in out.stderr


@pytest.mark.slow
def test_setup_cell_installs_from_the_source_it_names(tmp_path):
    # A copy of this repository stands in for the address (GitHub cannot be reached from CI); the package goes
    # into a target folder, so nothing of the running environment changes.
    src = tmp_path / "checkout"
    shutil.copytree(ROOT / "bayesprune", src / "bayesprune", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    target = tmp_path / "target"
    out = _run_setup(tmp_path, str(src), {"PIP_TARGET": str(target), "PIP_NO_DEPS": "1", "PIP_NO_BUILD_ISOLATION": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (target / "bayesprune" / "analysis" / "stats.py").exists()


# ------------------------------------------------------------------ Colab's ipywidgets 7.7
@pytest.mark.parametrize("name", WIDGET_NOTEBOOKS)
def test_widget_notebooks_run_with_ipywidgets_7(name, tmp_path, ipywidgets7):
    path = ipywidgets7
    pythonpath = os.pathsep.join([str(path), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    _, _, executed = _execute(name, tmp_path, env={"PYTHONPATH": pythonpath})
    if name not in PENDING_SETUP:  # the set-up cell prints the version the kernel imported
        assert "ipywidgets 7.7" in _outputs_text(executed)
