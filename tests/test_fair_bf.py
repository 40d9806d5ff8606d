"""A fair Laplace Bayes factor: both sides reach their evidence by the same steps, so pruning nothing scores 0."""

import importlib.util

import pytest
import torch

import bayesprune as bp
from bayesprune.core.criteria import compute_mask
from bayesprune.engine import training
from bayesprune.lab import bfcompare

if importlib.util.find_spec("laplace") is None:
    pytest.skip("the Laplace evidence needs laplace-torch", allow_module_level=True)

CFG = dict(dataset="synthetic", fcn_hidden=(16, 8), bf_samples=256, epochs=3, laplace_finetune_steps=20)


@pytest.fixture(scope="module")
def trained():
    cfg = bp.RunConfig(method="none", **CFG)
    data = bp.load_dataset(cfg)
    return bp.train(cfg, progress=False, data=data).model, data


@pytest.mark.parametrize("curvature", ["ggn", "ggn-mc"])
def test_a_prune_nothing_candidate_scores_exactly_zero_when_the_comparison_is_fair(trained, curvature):
    net, data = trained
    scan = bfcompare.evidence_scan(net, data, strategies=("magnitude",), sparsities=(0.0,), bf_samples=256,
                                   curvature=curvature, finetune_steps=20)
    row = scan.iloc[0]
    assert row["log_bf_laplace"] == 0.0 and row["delta_occam"] == 0.0 and row["delta_fit"] == 0.0


def test_the_unfair_comparison_rewards_extra_training_not_pruning(trained):
    net, data = trained
    unfair = bfcompare.evidence_scan(net, data, strategies=("magnitude",), sparsities=(0.0,), bf_samples=256,
                                     finetune_steps=20, fair=False).iloc[0]
    assert abs(unfair["log_bf_laplace"]) > 1.0  # nothing was pruned, yet the "Bayes factor" moved


def _gate(cfg: bp.RunConfig):
    data = bp.load_dataset(cfg)
    model = bp.initial_model(cfg, data.input_shape, data.num_classes)
    opt = training.make_adam(model.parameters(), cfg.lr, "cpu")
    training.train_epoch(model, opt, data, cfg.batch_size, torch.Generator().manual_seed(0), None)
    return model, bp.gate_state(cfg, model, data, opt)


@pytest.mark.parametrize("train_prior", ["none", "map"])
def test_the_gate_fine_tunes_both_sides_alike(train_prior):
    cfg = bp.RunConfig(method="bayes-magnitude", bayes_factor="laplace", prior_fit="marglik", gate="immediate",
                       schedule="gradual", train_prior=train_prior, **CFG)
    model, state = _gate(cfg)
    nothing = compute_mask(model, "magnitude", 0.0)  # a candidate that prunes nothing
    twin = training.matched_finetune(model, state, nothing, cfg.laplace_finetune_steps)
    for a, b in zip(twin.parameters(), model.parameters()):
        assert torch.equal(a, b)  # same steps, same batches, same Adam state: bit for bit
    before = state.evaluator.terms(twin, state.mask)
    after = state.evaluator.terms(model, nothing, before)
    assert bp.log_bayes_factor(before, after, "laplace") == 0.0


def test_a_real_prune_is_compared_with_the_fine_tuned_unpruned_side():
    cfg = bp.RunConfig(method="bayes-magnitude", bayes_factor="laplace", prior_fit="marglik", gate="immediate",
                       schedule="gradual", **CFG)
    model, state = _gate(cfg)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    candidate = compute_mask(model, "magnitude", 0.5)
    twin = training.matched_finetune(model, state, candidate, cfg.laplace_finetune_steps)
    assert any(not torch.equal(twin.state_dict()[k], v) for k, v in dense.items())  # the dense side was trained
    for k, m in candidate.items():
        assert (model.state_dict()[k][~m] == 0).all()  # the candidate kept its zeros through the steps


def test_the_progress_bar_changes_nothing_but_the_display(trained):
    net, data = trained
    kw = dict(strategies=("magnitude", "random"), sparsities=(0.5,), bf_samples=256, finetune_steps=20)
    quiet = bfcompare.evidence_scan(net, data, **kw)
    shown = bfcompare.evidence_scan(net, data, progress=True, **kw)
    assert len(quiet) == 2 and quiet.equals(shown)  # same prunes, same order, bit-identical numbers
