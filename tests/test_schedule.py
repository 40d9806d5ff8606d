"""The pruning schedule and the gate deciding on its steps (issue: make the Bayes factor decide)."""

import copy
import math

import pytest
import torch

import bayesprune as bp
from bayesprune.core.schedule import PruningSchedule
from bayesprune.engine import training

GRADUAL = dict(dataset="synthetic", fcn_hidden=(32, 16), bf_samples=128, schedule="gradual", epochs=6,
               prune_start_epoch=1, prune_end_epoch=4, sparsity=0.8)


def test_one_shot_proposes_the_target_every_pruning_epoch():
    s = PruningSchedule("one-shot", 0.9, start=2, end=2, last_epoch=4)
    assert s.proposals() == [None, 0.9, 0.9, 0.9]
    assert [s.forced(e) for e in range(1, 5)] == [False, False, False, True]


def _polynomial_decay(step, initial, final, begin, end, power=3, frequency=1):
    """TF-MOT's ``PolynomialDecay`` as documented: (should_prune, sparsity) at ``step``.

    p = clip((step - begin) / (end - begin), 0, 1); sparsity = (initial - final) (1 - p)^power + final;
    a step prunes where begin <= step <= end and (step - begin) % frequency == 0.
    """
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    return begin <= step <= end and (step - begin) % frequency == 0, (initial - final) * (1 - p) ** power + final


@pytest.mark.parametrize("target,start,end,last", [(0.8, 2, 5, 7), (0.9, 1, 19, 25), (0.5, 3, 3, 4), (0.99, 1, 2, 2)])
def test_gradual_is_tf_mot_polynomial_decay_begun_one_step_before_start(target, start, end, last):
    s = PruningSchedule("gradual", target, start=start, end=end, last_epoch=last, final="gate")
    for epoch, proposal in enumerate(s.proposals(), start=1):
        should, expected = _polynomial_decay(epoch, 0.0, target, begin=start - 1, end=end)
        if epoch < start:
            assert proposal is None
        elif epoch <= end:  # TF-MOT prunes here too, to the same sparsity
            assert should and proposal == pytest.approx(expected, abs=1e-12), epoch
        else:  # TF-MOT stops pruning after end_step and holds the final sparsity; we propose it again
            assert not should and proposal == target and expected == pytest.approx(target)
    # begin_step = start itself would be one step late: its first step proposes 0
    assert _polynomial_decay(start, 0.0, target, begin=start, end=end + 1)[1] == 0.0 != s.proposal(start)


def test_gradual_steps_rise_big_first_then_small():
    p = PruningSchedule("gradual", 0.8, start=2, end=5, last_epoch=7).proposals()
    steps = [x for x in p if x is not None]
    assert all(a < b for a, b in zip(steps[:3], steps[1:4]))  # strictly rising to the target
    assert steps[1] - steps[0] > steps[3] - steps[2]  # big steps first, small steps near the target


def test_final_prune_choices():
    assert PruningSchedule("gradual", 0.5, 1, 2, 3, final="gate").forced(3) is False
    none = PruningSchedule("one-shot", 0.5, 1, 1, 3, final="none")
    assert none.proposals() == [0.5, 0.5, None] and not none.forced(3)
    with pytest.raises(ValueError, match="final='x'"):
        PruningSchedule("one-shot", 0.5, 1, 1, 3, final="x")


def test_default_end_epoch_leaves_the_last_quarter_for_fine_tuning():
    assert bp.RunConfig(epochs=25).end_epoch == 19
    assert bp.RunConfig(epochs=25, prune_end_epoch=10).end_epoch == 10
    assert bp.RunConfig(epochs=1).end_epoch == 1


def test_gradual_plain_pruning_reaches_each_proposed_sparsity_exactly_and_is_monotone():
    cfg = bp.RunConfig(method="magnitude", **GRADUAL)
    res = bp.train(cfg, progress=False)
    h = res.history
    proposals = PruningSchedule.from_config(cfg).proposals()
    assert h["candidate_sparsity"].tolist() == pytest.approx(proposals)
    assert h["pruned"].all() and h["sparsity"].is_monotonic_increasing
    counts = bp.count_weights(res.model)
    # every layer holds exactly round(n * r) zeros of the last proposal (masks persist, so each step's count held)
    for name, n in counts.items():
        assert round(res.layer_sparsity[name] * n) == round(n * proposals[-1])
    per_epoch = h["sparsity"].tolist()
    for got, want in zip(per_epoch, proposals):
        exact = sum(round(n * want) for n in counts.values()) / sum(counts.values())
        assert got == pytest.approx(exact, abs=1e-12)


def test_gradual_with_regrowth_logs_sparsity_before_each_step():
    h = bp.train(bp.RunConfig(method="magnitude", regrow=True, **GRADUAL), progress=False).history
    assert h["sparsity_before"].iloc[0] == 0.0
    assert (h["sparsity_before"].iloc[1:] < h["sparsity"].iloc[:-1].values).all()  # pruned weights regrew


def test_a_beta_so_high_that_every_step_is_refused():
    cfg = bp.RunConfig(method="bayes-magnitude", gate="immediate", beta=1e300, prior_sigma=1.0,
                       final_prune="gate", **GRADUAL)
    res = bp.train(cfg, progress=False)
    assert not res.history["pruned"].any()
    assert res.final_sparsity < 0.01 < cfg.sparsity  # never left its last accepted sparsity (none)
    assert res.summary()["pruning_steps_accepted"] == 0 and res.summary()["last_accepted_epoch"] is None
    # under the paper's gate the first step is taken unconditionally, then the gate stays shut
    paper = bp.train(cfg.replace(gate="paper"), progress=False)
    first = paper.history["candidate_sparsity"].iloc[0]
    assert paper.history["pruned"].tolist() == [True] + [False] * 5
    assert paper.final_sparsity == pytest.approx(first, abs=0.01) and paper.final_sparsity < cfg.sparsity
    # with the forced final prune the run still ends at the target
    forced = bp.train(cfg.replace(final_prune="target"), progress=False)
    assert forced.final_sparsity == pytest.approx(cfg.sparsity, abs=0.005)


def _state(cfg):
    data = bp.load_dataset(cfg)
    model = bp.initial_model(cfg, data.input_shape, data.num_classes)
    opt = training.make_adam(model.parameters(), cfg.lr, "cpu")
    training.train_epoch(model, opt, data, cfg.batch_size, torch.Generator().manual_seed(0), None)
    return model, opt, bp.gate_state(cfg, model, data, opt)


@pytest.mark.parametrize("finetune", [False, True])
def test_a_step_refused_by_the_gate_leaves_every_weight_bit_identical(monkeypatch, finetune):
    cfg = bp.RunConfig(method="bayes-random", gate="immediate", beta=1e300, prior_sigma=1.0, **GRADUAL)
    model, opt, state = _state(cfg)
    if finetune:  # a step that trains before it is judged (the Laplace gate's fine-tuning) restores Adam too
        monkeypatch.setattr(state.evaluator, "finetune_steps", 5, raising=False)
    params = [p.detach().clone() for p in model.parameters()]
    adam = copy.deepcopy(opt.state_dict())
    rec = training.prune_step(model, state, epoch=1)
    assert rec.gate_open and not rec.pruned and rec.log_bf < 0
    assert rec.candidate_sparsity > 0 and state.mask is None
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)
    after = opt.state_dict()
    for k, v in adam["state"].items():
        for name, t in v.items():
            assert torch.equal(after["state"][k][name], t)


@pytest.mark.parametrize("gate", ["paper", "immediate"])
def test_beta_zero_gives_the_plain_methods_history(gate):
    cols = ["train_loss", "test_acc", "sparsity", "pruned", "candidate_sparsity"]
    plain = bp.train(bp.RunConfig(method="random", **GRADUAL), progress=False).history[cols]
    gated = bp.train(bp.RunConfig(method="bayes-random", beta=0.0, gate=gate, **GRADUAL), progress=False).history
    assert gated[cols].equals(plain)
    assert math.isinf(bp.bayes.posterior.log_threshold(0.0))


def test_output_layer_and_biases_options():
    base = dict(dataset="synthetic", fcn_hidden=(32, 16), epochs=2, method="magnitude", sparsity=0.9)
    res = bp.train(bp.RunConfig(prune_output=False, **base), progress=False)
    assert res.layer_sparsity["fc3.weight"] == 0.0 and res.layer_sparsity["fc1.weight"] == pytest.approx(0.9, abs=0.01)
    res = bp.train(bp.RunConfig(prune_biases=True, **base), progress=False)
    assert res.layer_sparsity["fc1.bias"] == pytest.approx(0.9, abs=0.04)
    assert res.final_sparsity == pytest.approx(0.9, abs=0.005)  # counted over weights and biases


def test_stop_training_from_a_callback_keeps_what_was_trained():
    def stop_after_two(row):
        if row["epoch"] == 2:
            raise bp.StopTraining

    res = bp.train(bp.RunConfig(method="magnitude", **GRADUAL), callbacks=[stop_after_two], progress=False)
    assert res.status == "stopped" and len(res.history) == 2
    assert res.final_sparsity == pytest.approx(res.history["sparsity"].iloc[-1])


def test_the_summary_counts_only_steps_that_would_remove_weights():
    """After a gradual schedule reaches its target, later epochs propose the target again and remove
    nothing (log BF = 0 exactly): they are not decisions of the gate, and the summary says how many there were."""
    cfg = bp.RunConfig(method="magnitude", schedule="gradual", epochs=8, prune_end_epoch=4, sparsity=0.5)
    res = bp.train(cfg, progress=False)
    s = res.summary()
    h = res.history
    assert h["candidate_sparsity"].notna().all()            # every epoch proposes
    assert s["pruning_steps_proposed"] == 4 and s["pruning_steps_accepted"] == 4  # epochs 1-4 remove weights
    assert s["pruning_epochs_without_change"] == 4           # epochs 5-8 propose the target it already has
    assert s["last_accepted_epoch"] == 4
