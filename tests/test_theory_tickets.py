import numpy as np
import pandas as pd
import pytest
import torch

import bayesprune as bp
from bayesprune.lab import theory, tickets


@pytest.fixture(scope="module")
def digits():
    return bp.load_dataset(bp.RunConfig(dataset="digits"))


def test_output_distance_zero_for_identity_and_positive_when_pruned(digits):
    net = theory.make_net("fcn", 32, (1, 8, 8), 10, seed=0)
    x = digits.x_test[:64]
    assert theory.output_distance(net, net, x) == 0.0
    pruned = theory.pruned_version(net, "random", 0.5, torch.Generator().manual_seed(0))
    assert theory.output_distance(net, pruned, x) > 0
    assert bp.sparsity(pruned) == pytest.approx(0.5, abs=0.01) and bp.sparsity(net) < 0.01


def test_rescale_multiplies_kept_weights(digits):
    net = theory.make_net("fcn", 8, (1, 8, 8), 10, seed=0)
    a = theory.pruned_version(net, "magnitude", 0.5, rescale=False)
    b = theory.pruned_version(net, "magnitude", 0.5, rescale=True)
    for k, w in bp.prunable_parameters(a).items():
        torch.testing.assert_close(bp.prunable_parameters(b)[k], w * 2.0)


def test_distances_over_masks_are_a_distribution_and_layers_restrict(digits):
    net = theory.make_net("fcn", 32, (1, 8, 8), 10, seed=0)
    x = digits.x_test[:64]
    d = theory.distances_over_masks(net, x, 0.5, n_masks=7)
    assert d.shape == (7,) and d.std() > 0
    assert theory.distances_over_masks(net, x, 0.5, strategy="magnitude").shape == (1,)
    only_last = theory.pruned_version(net, "random", 0.5, torch.Generator().manual_seed(0), layers=["fc3.weight"])
    ls = bp.layer_sparsity(only_last)
    assert ls["fc1.weight"] < 0.01 and ls["fc3.weight"] == pytest.approx(0.5, abs=0.01)


def test_width_experiment_rows_and_magnitude_beats_random_on_average(digits):
    x = digits.x_test[:64]
    df = theory.width_experiment(x, 10, [16, 64], [0.5], strategies=("magnitude", "random"), rescale=(False,), n_masks=4, n_nets=2)
    assert len(df) == 2 * 2 * (1 + 4)
    means = df.groupby("strategy")["distance"].mean()
    assert means["magnitude"] < means["random"]
    cnn = theory.width_experiment(x, 10, [4], [0.5], kind="cnn", n_masks=3)
    assert set(cnn["rescale"]) == {False, True} and len(cnn) == 6


def test_max_prunable_fraction_is_monotone_in_epsilon(digits):
    net = theory.make_net("fcn", 32, (1, 8, 8), 10, seed=0)
    x = digits.x_test[:64]
    n = bp.stats.trials_needed(0.8)  # 14 masks, all within, show P >= 0.8 at 95 %
    tight = theory.max_prunable_fraction(net, x, epsilon=0.01, delta=0.2, rates=(0.1, 0.3, 0.5, 0.7), n_masks=n)
    loose = theory.max_prunable_fraction(net, x, epsilon=10.0, delta=0.2, rates=(0.1, 0.3, 0.5, 0.7), n_masks=n)
    assert list(tight["layer"]) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert (loose["max_fraction"] >= tight["max_fraction"]).all()
    assert (loose["max_fraction"] == 0.7).all() and (loose["p_lower"] >= 0.8).all() and (loose["within"] == n).all()
    assert loose["refused_rate"].isna().all()
    assert theory.hoeffding_masks(0.05, 0.05) == int(np.ceil(np.log(40) / 0.005))


def test_max_prunable_fraction_with_progress_gives_the_same_table(digits):
    """The progress bar only watches: the same masks, the same bound."""
    net = theory.make_net("fcn", 16, (1, 8, 8), 10, seed=0)
    x = digits.x_test[:32]
    kw = dict(epsilon=0.5, delta=0.2, rates=(0.1, 0.3), n_masks=14)
    quiet = theory.max_prunable_fraction(net, x, **kw)
    shown = theory.max_prunable_fraction(net, x, progress=True, **kw)
    pd.testing.assert_frame_equal(quiet, shown)


def test_max_prunable_fraction_claims_nothing_it_did_not_show(digits):
    net = theory.make_net("fcn", 32, (1, 8, 8), 10, seed=0)
    x = digits.x_test[:64]
    # 5 masks can never show P >= 0.8 (the best lower bound is 0.05 ** (1/5) = 0.55): nothing is claimed
    few = theory.max_prunable_fraction(net, x, epsilon=10.0, delta=0.2, rates=(0.1, 0.5), n_masks=5)
    assert (few["max_fraction"] == 0.0).all() and few["p_hat"].isna().all() and few["p_lower"].isna().all()
    assert (few["refused_rate"] == 0.1).all() and (few["refused_p_hat"] == 1.0).all()
    assert list(few["refused_p_lower"]) == pytest.approx([0.05 ** 0.2] * 3)


def test_measure_masks_tells_collapse_from_concentration(digits):
    net = theory.make_net("fcn", 256, (1, 8, 8), 10, seed=0)
    x = digits.x_test[:64]
    plain = theory.measure_masks(net, x, 0.95, n_masks=3, rescale=False)
    assert list(plain.columns) == ["mask", "distance", "pruned_norm", "signal_kept"] and len(plain) == 3
    # without rescaling almost nothing of the input-dependent output is left: f_pruned ~ the last bias
    assert (plain["signal_kept"] < 0.2).all()
    assert plain["pruned_norm"].mean() == pytest.approx(float(theory.output_bias(net).norm()), rel=0.3)
    np.testing.assert_allclose(theory.distances_over_masks(net, x, 0.95, 3), plain["distance"])
    assert len(theory.measure_masks(net, x, 0.5, n_masks=50, max_seconds=0.0)) == 1  # the time cap stops early
    assert len(theory.measure_masks(net, x, 0.5, strategy="magnitude")) == 1


def test_shuffled_weights_keep_each_layers_values_but_not_their_places():
    net = theory.make_net("fcn", 16, (1, 8, 8), 10, seed=0)
    shuf = theory.shuffled_weights(net, seed=1)
    for k, w in bp.prunable_parameters(net).items():
        s = bp.prunable_parameters(shuf)[k]
        torch.testing.assert_close(s.flatten().sort().values, w.flatten().sort().values)
        assert not torch.equal(s, w)
    torch.testing.assert_close(shuf.fc1.bias, net.fc1.bias)


def test_initial_model_is_what_train_starts_from():
    cfg = bp.RunConfig(dataset="synthetic", epochs=1, fcn_hidden=(8,), method="none")
    data = bp.load_dataset(cfg)
    init = tickets.initial_model(cfg, data)
    torch.manual_seed(cfg.seed)
    again = bp.build_model(cfg, data.input_shape, data.num_classes)
    for a, b in zip(init.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    trained = bp.train(cfg, progress=False).model
    assert not torch.equal(trained.fc1.weight, init.fc1.weight)


@pytest.mark.parametrize("start", ["rewind", "reinit", "finetune"])
def test_ticket_starts_and_mask_holds_through_retraining(start):
    cfg = bp.RunConfig(dataset="synthetic", epochs=2, fcn_hidden=(16,), method="none")
    data = bp.load_dataset(cfg)
    init = tickets.initial_model(cfg, data)
    trained = bp.train(cfg, progress=False).model
    mask = bp.compute_mask(trained, "magnitude", 0.8)
    net = tickets.ticket(trained, mask, start, init=init, cfg=cfg, data=data)
    kept = mask["fc1.weight"]
    ref = {"rewind": init, "finetune": trained}.get(start)
    if ref is not None:
        torch.testing.assert_close(net.fc1.weight[kept], ref.fc1.weight[kept])
    else:
        assert not torch.equal(net.fc1.weight[kept], init.fc1.weight[kept])
    out = tickets.retrain_ticket(net, mask, data, epochs=2)
    assert out["sparsity"] == pytest.approx(0.8, abs=0.01) and len(out["curve"]) == 2
    assert (net.fc1.weight[~kept] == 0).all()


def test_ticket_needs_what_it_needs():
    cfg = bp.RunConfig(dataset="synthetic", fcn_hidden=(8,))
    data = bp.load_dataset(cfg)
    net = tickets.initial_model(cfg, data)
    mask = bp.Mask.ones_like(net)
    with pytest.raises(ValueError, match="init"):
        tickets.ticket(net, mask, "rewind")
    with pytest.raises(ValueError, match="cfg and data"):
        tickets.ticket(net, mask, "reinit")
    with pytest.raises(ValueError, match="start='later'"):
        tickets.ticket(net, mask, "later")


# ------------------------------------------------------------------ notebook 06's verdicts
def _ticket_rows():
    import pandas as pd

    rows = []
    for seed, dense in ((0, 0.95), (1, 0.96), (2, 0.97)):
        for r, drop in ((0.5, 0.0), (0.9, 0.2)):
            for start in ("rewind", "reinit"):
                rows.append({"seed": seed, "sparsity": r, "start": start,
                             "test_acc": dense - drop - (0.05 if start == "reinit" else 0.0) + 0.001 * seed})
    return pd.DataFrame(rows), {0: 0.95, 1: 0.96, 2: 0.97}


def test_compare_with_dense_is_the_paired_mean_difference():
    t, dense = _ticket_rows()
    vs = tickets.compare_with_dense(t, dense, n_test=1000).set_index(["sparsity", "start"])
    assert vs.loc[(0.5, "rewind"), "minus dense"] == pytest.approx(0.001)
    assert vs.loc[(0.9, "rewind"), "minus dense"] == pytest.approx(-0.199)
    assert not vs.loc[(0.9, "rewind"), "within_noise"]
    assert vs.loc[(0.5, "reinit"), "minus dense"] == pytest.approx(-0.049)


def test_gate_verdicts_say_what_the_table_shows():
    import pandas as pd

    t, _ = _ticket_rows()
    base = {"proposals": 4, "gate_sparsity": 0.4, "gated_run_acc": 0.9, "jaccard_kept": 0.8}
    gate = pd.DataFrame(
        [{"sigma": 0.03, "seed": s, "accepted": 4, "refused_epochs": [], **base,
          "gated_ticket_acc": 0.93 + 0.01 * s, "one-shot_ticket_acc": 0.93 + 0.01 * s} for s in range(3)]
        + [{"sigma": 0.2, "seed": s, "accepted": 2, "refused_epochs": [3, 4], **base,
            "gated_ticket_acc": 0.95 + 0.01 * s, "one-shot_ticket_acc": 0.90 + 0.011 * s} for s in range(3)])
    lines, found = tickets.gate_verdicts(gate, t, "0.96", n_test=1000, gate_target=0.9)
    assert len(lines) == 2 and "decided nothing" in lines[0] and "the schedule's, not the gate's" in lines[0]
    assert found[0.03]["decided_something"] is False and found[0.03]["within_noise"]
    assert found[0.2]["decided_something"] is True and "first refusal in epoch 3" in lines[1]
    assert found[0.2]["within_noise"] is False and "gated ticket is higher" in found[0.2]["verdict"]
    # plain rewound tickets at 0.5 (0.95-0.97) are as good as the gated ones; at 0.9 (0.75-0.77) they are not
    assert found[0.2]["plain_as_good_up_to"] == 0.5
    assert "accepted 2 of 4 proposals" in lines[1] and "A refusal does not end" not in lines[1]
    assert found[0.2]["accepted_after_refusal"] == []  # no accepted_epochs column: nothing claimed


def test_gate_verdicts_explain_refusals_followed_by_acceptances_and_the_proposal_count():
    import pandas as pd

    t, _ = _ticket_rows()
    base = {"gate_sparsity": 0.4, "gated_run_acc": 0.9}
    gate = pd.DataFrame([  # seed 0: refused in epoch 1, accepted in 2 and 3; seed 1: accepted 1 and 2, refused after
        {"sigma": 0.2, "seed": 0, "proposals": 5, "accepted": 2, "refused_epochs": [1, 4, 5], "accepted_epochs": [2, 3],
         **base},
        {"sigma": 0.2, "seed": 1, "proposals": 5, "accepted": 2, "refused_epochs": [3, 4, 5], "accepted_epochs": [1, 2],
         **base}])
    proposals = [None, 0.3, 0.6, 0.9, 0.9, 0.9]  # epochs 1..6: the ramp reaches 90 % at epoch 4
    lines, found = tickets.gate_verdicts(gate, t, "0.96", n_test=1000, gate_target=0.9, proposals=proposals)
    assert found[0.2]["accepted_after_refusal"] == [0]
    assert "in 1 of 2 seeds a later step" in lines[1] and "accepted 2 of 5 proposals" in lines[1]
    assert "reaches 90% at epoch 4; the 2 later epoch(s)" in lines[0] and "counts 4" in lines[0]


def test_verdicts_follow_the_differences():
    from bayesprune.analysis.stats import difference

    falls = difference([0.1, 0.11, 0.12], [0.5, 0.52, 0.49])
    rises = difference([0.5, 0.52, 0.49], [0.1, 0.11, 0.12])
    noise = difference([0.1, 0.5, 0.3], [0.3, 0.1, 0.5])
    assert theory.trend_verdict(falls) == "supported" and theory.trend_verdict(rises) == "contradicted"
    assert theory.trend_verdict(noise) == "not shown (within the noise)"
    assert theory.combined_verdict(["supported"] * 3) == "supported"
    assert theory.combined_verdict(["supported", "contradicted", "supported"]) == "mixed: contradicted 1x, supported 2x"
    assert theory.combined_verdict([]) == "not tested"
    table = theory.verdict_table([{"claim": "c", "shows": "s", "verdict": "mixed: supported 1x"}])
    assert list(table.columns) == ["claim", "shows", "verdict"]
    with pytest.raises(ValueError, match="verdict='probably'"):
        theory.verdict_table([{"claim": "c", "shows": "s", "verdict": "probably"}])


def test_arrangement_verdict_reads_both_gaps():
    from bayesprune.analysis.stats import difference

    big = difference([0.1, 0.11, 0.12], [3.0, 3.1, 2.9])     # about -2.9, beyond the noise
    small = difference([0.1, 0.11, 0.12], [0.9, 0.95, 0.85])  # about -0.8, beyond the noise
    noise = difference([0.1, 0.5, 0.3], [0.3, 0.1, 0.5])
    # notebook 05 at width 256: fresh 4.43 -> shuffled 1.42 -> trained 0.53: the values do more than the arrangement
    assert theory.arrangement_verdict(big, small)[0] == "contradicted"
    assert theory.arrangement_verdict(noise, small)[0] == "supported"
    assert theory.arrangement_verdict(small, noise)[0] == "contradicted"
    assert theory.arrangement_verdict(noise, noise)[0] == "not shown (within the noise)"
    assert theory.arrangement_verdict(small, big)[0].startswith("mixed: ")
    verdict, text = theory.arrangement_verdict(big, small)
    assert big.text in text and small.text in text and "values matter at least as much" in text
    theory.verdict_table([{"claim": "c", "shows": text, "verdict": verdict}])  # a verdict the table accepts


def test_dependence_note_says_whether_independent_weights_also_get_closer():
    from bayesprune.analysis.stats import difference

    falls = difference([0.1, 0.11, 0.12], [0.5, 0.52, 0.49])
    noise = difference([0.1, 0.5, 0.3], [0.3, 0.1, 0.5])
    assert "does not need dependence" in theory.dependence_note(falls, falls)
    assert "needs the trained arrangement" in theory.dependence_note(falls, noise)
    assert "did not get closer" in theory.dependence_note(noise, falls)
