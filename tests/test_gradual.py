"""Notebook 04's helpers (bayesprune.lab.gradual): the forced last step, the verdict against the paper,
the gate's stop and plain pruning to the same sparsity."""

import math

import pandas as pd
import pytest

import bayesprune as bp
from bayesprune.lab import gradual


def _history(steps, forced_last=False):
    """One run's history: steps = [(sparsity_before, candidate, pruned)], sparsity after each step follows."""
    rows = []
    for e, (before, cand, pruned) in enumerate(steps, start=1):
        last = e == len(steps)
        forced = forced_last and last
        rows.append({"epoch": e, "sparsity_before": before, "candidate_sparsity": cand,
                     "pruned": pruned or forced, "forced": forced,
                     "sparsity": (cand if (pruned or forced) and cand is not None else before)})
    return pd.DataFrame(rows)


def test_gate_stop_is_the_last_accepted_proposal_not_a_forced_one():
    h = _history([(0.0, 0.2, True), (0.2, 0.4, True), (0.4, 0.6, False), (0.4, 0.7, False)])
    assert gradual.gate_stop(h) == 0.4
    assert gradual.gate_stop(_history([(0.0, 0.3, False), (0.0, 0.5, False)])) == 0.0
    # the forced last step is not the gate's choice
    assert gradual.gate_stop(_history([(0.0, 0.2, True), (0.2, 0.4, False), (0.2, 0.9, False)], forced_last=True)) == 0.2
    # a proposal that removes nothing new (persistent masks, BF = 1) is not a decision
    assert gradual.gate_stop(_history([(0.0, 0.5, True), (0.5, 0.5, True)])) == 0.5


def test_forced_steps_measures_the_jump_of_the_last_epoch():
    a = _history([(0.0, 0.3, False), (0.0, 0.6, False), (0.0, 0.9, False)], forced_last=True)
    b = _history([(0.0, 0.3, True), (0.3, 0.6, True), (0.6, 0.9, True)], forced_last=True)
    hist = pd.concat([a.assign(key="a", method="bayes-magnitude", target_sparsity=0.9, seed=0),
                      b.assign(key="b", method="magnitude", target_sparsity=0.9, seed=0)])
    j = gradual.forced_steps(hist).set_index("key")
    assert j.loc["a", "before_last"] == 0.0 and j.loc["a", "last_jump"] == pytest.approx(0.9)
    assert j.loc["b", "before_last"] == 0.6 and j.loc["b", "last_jump"] == pytest.approx(0.3)
    lines, found = gradual.gradual_verdict(pd.DataFrame([
        {"schedule": "gradual", "pruning": "magnitude", "sparsity": 0.9, "bayes - plain": -0.2, "within the noise": False},
        {"schedule": "gradual", "pruning": "magnitude", "sparsity": 0.5, "bayes - plain": 0.0, "within the noise": True},
        {"schedule": "one-shot", "pruning": "magnitude", "sparsity": 0.9, "bayes - plain": 0.3, "within the noise": False},
    ]), gradual.forced_steps(hist))
    assert found["below"] == ["magnitude at 90% (-0.2000)"] and found["above"] == [] and found["within"] == 1
    assert found["contradicts_paper"]  # the one-shot row is another schedule: not counted
    assert any("stood at sparsity 0.000 (plain: 0.600)" in line and "pruned 0.900 at once" in line for line in lines)


def test_verdict_with_no_difference_says_neither():
    v = pd.DataFrame([{"schedule": "gradual", "pruning": "random", "sparsity": 0.5, "bayes - plain": 0.001,
                       "within the noise": True}])
    lines, found = gradual.gradual_verdict(v, pd.DataFrame(columns=["forced", "method", "target"]))
    assert not found["contradicts_paper"] and "neither supports nor contradicts" in lines[1]


def test_paper_differences_against_hand_arithmetic():
    paper = bp.paper_table1()
    d = gradual.paper_differences(paper, "mnist", "fcn", 10000)
    row = d[(d.sparsity == 0.25) & (d.pruning == "random")].iloc[0]
    # the paper's Table 1, MNIST FCN, 25 %: random 0.9684, bayes-random 0.9747
    assert row["paper bayes - plain"] == pytest.approx(0.9747 - 0.9684)
    se = math.sqrt(0.9747 * 0.0253 / 10000 + 0.9684 * 0.0316 / 10000)
    assert row["test-set se"] == pytest.approx(se) and bool(row["beyond 2 se"]) == (0.0063 > 2 * se)
    assert len(gradual.paper_differences(paper, "digits", "fcn", 360)) == 0


def test_matched_comparison_is_paired_and_checks_seeds():
    d = gradual.matched_comparison({0: (0.5, 0.9), 1: (0.5, 0.8), 2: (0.4, 0.7)}, {0: 0.8, 1: 0.7, 2: 0.6}, n_test=100)
    assert d.paired and d.mean == pytest.approx(0.1) and not d.within_noise  # every seed +0.1: no spread
    with pytest.raises(ValueError, match="seeds"):
        gradual.matched_comparison({0: (0.5, 0.9)}, {1: 0.8}, n_test=100)


def test_gated_against_matched_prunes_the_plain_run_to_the_gates_stop(tmp_path):
    base = bp.RunConfig(dataset="digits", epochs=4, prior_sigma=0.2)
    t = gradual.gated_against_matched(base, [0.9], [0, 1], tmp_path, progress=False)
    assert list(t["seed"]) == [0, 1] and (t["target"] == 0.9).all()
    runs = bp.results_table(tmp_path)
    for _, row in t.iterrows():
        if row["gate stopped at"] == 0:
            plain = runs[(runs.method == "none") & (runs.seed == row["seed"])]
        else:
            plain = runs[(runs.method == "magnitude") & (runs.seed == row["seed"])]
            assert plain.final_sparsity.iloc[0] == pytest.approx(row["gate stopped at"], abs=0.005)
        assert plain.test_accuracy.iloc[0] == row["plain accuracy"]
        gated = runs[(runs.method == "bayes-magnitude") & (runs.seed == row["seed"])]
        assert gated.final_sparsity.iloc[0] == pytest.approx(row["gate stopped at"], abs=0.005)
    lines, found = gradual.matched_lines(t, 360)
    assert len(lines) == 1 and set(found) == {0.9}


def test_verdict_names_ties_with_a_collapsed_network():
    v = pd.DataFrame([  # notebook 04 at the defaults: two ties at 99 %, where networks are at chance (0.10)
        {"schedule": "gradual", "pruning": "random", "sparsity": 0.99, "bayes - plain": 0.001, "within the noise": True,
         "bayes acc": 0.0991, "plain acc": 0.0981},
        {"schedule": "gradual", "pruning": "magnitude", "sparsity": 0.99, "bayes - plain": -0.1176,
         "within the noise": True, "bayes acc": 0.1056, "plain acc": 0.2231},
        {"schedule": "gradual", "pruning": "magnitude", "sparsity": 0.5, "bayes - plain": -0.008,
         "within the noise": True, "bayes acc": 0.95, "plain acc": 0.958},
    ])
    empty = pd.DataFrame(columns=["forced", "method", "target"])
    lines, found = gradual.gradual_verdict(v, empty, chance=0.1)
    assert found["collapsed_ties"] == ["random at 99% (Bayes 0.0991, plain 0.0981)",
                                       "magnitude at 99% (Bayes 0.1056, plain 0.2231)"]
    assert "within the noise in 3 (2 of them with a collapsed network" in lines[0]
    assert gradual.gradual_verdict(v, empty)[1]["collapsed_ties"] == []  # without chance nothing is called collapsed
