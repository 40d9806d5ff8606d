"""The gate's decisions in words: every number in a sentence comes from the history it explains."""

import math

import pandas as pd

import bayesprune as bp


def _row(epoch, before, proposed, after, pruned, ll_change, lp_change, gate_open=True, forced=False):
    return {"epoch": epoch, "sparsity_before": before, "candidate_sparsity": proposed, "sparsity": after,
            "pruned": pruned, "gate_open": gate_open, "forced": forced, "log_bf": ll_change + lp_change,
            "log_likelihood_before": -100.0, "log_likelihood_after": -100.0 + ll_change,
            "log_prior_before": 50.0, "log_prior_after": 50.0 + lp_change}


HISTORY = pd.DataFrame([
    _row(1, 0.0, 0.2, 0.0, False, -10.0, 4.0),      # refused: the fit lost more than the prior gained
    _row(2, 0.0, 0.4, 0.4, True, -6.0, 20.0),       # a bigger step, cheaper in fit: accepted
    _row(3, 0.4, 0.4, 0.4, False, 0.0, 0.0),        # removes nothing: not a decision
    _row(4, 0.4, 0.6, 0.4, False, -50.0, 30.0),
    _row(5, 0.4, 0.7, 0.4, False, -90.0, 40.0),
    _row(6, 0.4, 0.8, 0.4, False, -200.0, 45.0),
])


def test_each_decision_is_read_from_the_history():
    d = bp.gate_decisions(HISTORY, beta=1.0)
    assert d["epoch"].tolist() == [1, 2, 4, 5, 6]  # epoch 3 would remove nothing
    assert d["decision"].tolist() == ["accepted" if e == 2 else "refused" for e in d["epoch"]]
    assert d["log_bf"].tolist() == [-6.0, 14.0, -20.0, -50.0, -155.0]
    assert (d["fit_change"] + d["prior_change"] - d["log_bf"]).abs().max() < 1e-12
    first, second = d["why"].iloc[0], d["why"].iloc[1]
    assert "lost 10.0 nats" in first and "gained 4.0" in first and "-6.0 ≤ log β = 0.0" in first
    assert "cost less fit (6.0 against 10.0 nats)" in second and "epoch 1's refused" in second


def test_beta_moves_the_threshold_and_zero_is_minus_infinity():
    d = bp.gate_decisions(HISTORY, beta=math.exp(20.0))
    assert "+14.0 ≤ log β = 20.0" in d["why"].iloc[1]
    assert "log β = -inf" in bp.gate_decisions(HISTORY, beta=0.0)["why"].iloc[0]


def test_the_story_tells_the_trailing_refusals_in_one_line():
    lines = bp.decision_story(HISTORY, beta=1.0)
    assert len(lines) == 4 and lines[2].startswith("epoch 4:")  # the first refusal after the last acceptance
    assert lines[3].startswith("epochs 5–6: all 2 refused, log BF from -50.0 to -155.0")
    plain = bp.decision_story(HISTORY, beta=1.0, gated=False)
    assert all("no gate" in s for s in plain)


def test_a_real_run_is_explained_step_by_step():
    cfg = bp.RunConfig(dataset="synthetic", fcn_hidden=(16, 8), bf_samples=64, epochs=5, method="bayes-magnitude",
                       schedule="gradual", gate="immediate", prune_end_epoch=4, final_prune="gate", prior_sigma=0.3)
    h = bp.train(cfg, progress=False).history
    d = bp.gate_decisions(h, cfg.beta)
    steps = h[h["candidate_sparsity"] > h["sparsity_before"] + 1e-9]
    assert d["epoch"].tolist() == steps["epoch"].tolist()
    assert d["decision"].eq("accepted").tolist() == steps["pruned"].astype(bool).tolist()
