"""The Laplace-evidence gate inside training (bayes_factor="laplace", prior_fit="marglik")."""

import copy
import importlib.util
import math

import pytest
import torch

import bayesprune as bp
from bayesprune.engine import training

if importlib.util.find_spec("laplace") is None:  # find, not import: laplace-torch takes seconds to import
    pytest.skip("the Laplace gate needs laplace-torch (pip install laplace-torch)", allow_module_level=True)

SMALL = dict(dataset="synthetic", fcn_hidden=(16, 8), bf_samples=256, epochs=4, schedule="gradual",
             final_prune="gate", gate="immediate", sparsity=0.9, laplace_finetune_steps=10)


@pytest.fixture(scope="module")
def laplace_run():
    cfg = bp.RunConfig(method="bayes-magnitude", bayes_factor="laplace", prior_fit="marglik", **SMALL)
    return cfg, bp.train(cfg, progress=False)


def test_a_laplace_gated_run_records_every_term(laplace_run):
    cfg, res = laplace_run
    h = res.history
    steps = h[h["candidate_sparsity"].notna()]
    assert len(steps) == cfg.epochs
    for col in ("log_occam_before", "log_occam_after", "log_evidence_before", "log_evidence_after",
                "laplace_penalty_before", "log_bf_laplace", "log_bf_posterior", "prior_sigma"):
        assert steps[col].map(math.isfinite).all(), col
    assert (steps["log_bf"] == steps["log_bf_laplace"]).all()  # the Laplace BF is the one that gated
    evid = steps["log_likelihood_after"] + steps["laplace_penalty_after"] + steps["log_occam_after"]
    assert evid.values == pytest.approx(steps["log_evidence_after"].values)
    s = res.summary()
    assert s["bayes_factor"] == "laplace" and s["prior_sigma"] == pytest.approx(h["prior_sigma"].iloc[-1])
    assert s["prior_sigma"] != cfg.prior_sigma  # fitted, not the hand-picked 0.03
    assert 0.0 <= s["final_sparsity"] <= cfg.sparsity + 0.005


def test_the_decision_follows_the_laplace_bayes_factor(laplace_run):
    cfg, res = laplace_run
    steps = res.history[res.history["candidate_sparsity"].notna()]
    assert (steps["pruned"] == (steps["log_bf"] > math.log(cfg.beta))).all()


def test_posterior_runs_leave_the_laplace_columns_empty(small_cfg):
    h = bp.train(small_cfg.replace(method="bayes-magnitude"), progress=False).history
    assert h["log_occam_before"].isna().all() and h["log_evidence_after"].isna().all()
    assert (h["prior_sigma"].dropna() == small_cfg.prior_sigma).all()


def test_a_refused_laplace_step_restores_weights_and_adam_bit_for_bit():
    cfg = bp.RunConfig(method="bayes-random", bayes_factor="laplace", beta=1e300, prior_sigma=3.0, **SMALL)
    data = bp.load_dataset(cfg)
    model = bp.initial_model(cfg, data.input_shape, data.num_classes)
    opt = training.make_adam(model.parameters(), cfg.lr, "cpu")
    training.train_epoch(model, opt, data, cfg.batch_size, torch.Generator().manual_seed(0), None)
    state = bp.gate_state(cfg, model, data, opt)
    assert state.evaluator.finetune_steps == 10
    params = [p.detach().clone() for p in model.parameters()]
    adam = copy.deepcopy(opt.state_dict())
    rec = training.prune_step(model, state, epoch=1)
    assert rec.gate_open and not rec.pruned
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    for k, v in adam["state"].items():
        assert all(torch.equal(opt.state_dict()["state"][k][n], t) for n, t in v.items())


def test_the_paper_ratio_with_a_fitted_prior():
    cfg = bp.RunConfig(method="bayes-magnitude", prior_fit="marglik", **SMALL)
    h = bp.train(cfg, progress=False).history
    assert (h["log_bf"] == h["log_bf_posterior"]).all() and h["log_bf_laplace"].notna().all()
    assert (h["prior_sigma"] != cfg.prior_sigma).all()


def test_impossible_laplace_settings_are_refused_before_the_first_epoch():
    with pytest.raises(ValueError, match=r"RunConfig.likelihood='mean'.*summed"):
        bp.RunConfig(bayes_factor="laplace", likelihood="mean")
    cfg = bp.RunConfig(method="bayes-magnitude", bayes_factor="laplace", hessian_structure="full", dataset="digits",
                       epochs=1)
    with pytest.raises(ValueError, match=r"RunConfig.hessian_structure='full'.*parameters"):
        bp.train(cfg, progress=False)
