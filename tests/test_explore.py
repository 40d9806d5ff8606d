import pytest
import torch

import bayesprune as bp


@pytest.fixture(scope="module")
def trained():
    cfg = bp.RunConfig(dataset="synthetic", method="none", epochs=2, fcn_hidden=(16, 8))
    return bp.train(cfg, progress=False).model, bp.load_dataset(cfg)


def test_scan_equals_pointwise_terms_and_leaves_model_alone(trained):
    model, data = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scan = bp.bf_scan(model, data, strategies=("magnitude", "random"), sparsities=[0.5, 0.9], sigmas=[0.03, 0.3],
                      bf_samples=[64, None], likelihoods=("sum", "mean"))
    assert len(scan) == 2 * 2 * 2 * 2 * 2
    for _, row in scan.iterrows():
        m = None if row["bf_samples"] == data.n_train else int(row["bf_samples"])
        one = bp.bf_terms(model, data, row["strategy"], row["sparsity"], sigma=row["sigma"], bf_samples=m,
                          likelihood=row["likelihood"])
        for key in ("log_likelihood_before", "log_likelihood_after", "log_prior_before", "log_prior_after", "log_bf"):
            assert row[key] == pytest.approx(one[key], rel=1e-12, abs=1e-9), key
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # only copies were pruned


def test_sigma_crossover_is_where_the_bf_changes_sign(trained):
    model, data = trained
    s_star = bp.sigma_crossover(model, data, "magnitude", 0.9, bf_samples=None)
    below = bp.bf_terms(model, data, "magnitude", 0.9, sigma=s_star * 0.9, bf_samples=None)["log_bf"]
    above = bp.bf_terms(model, data, "magnitude", 0.9, sigma=s_star * 1.1, bf_samples=None)["log_bf"]
    assert below > 0 > above


@pytest.mark.parametrize("biases", [False, True])
def test_notebook_02s_terms_are_the_gates_terms(biases):
    """bf_terms with a run's settings gives the log BF that prune_step records for the same step."""
    cfg = bp.RunConfig(dataset="synthetic", fcn_hidden=(16, 8), bf_samples=128, method="bayes-magnitude", epochs=1,
                       sparsity=0.7, prune_biases=biases, prior_sigma=0.1, seed=3)
    data = bp.load_dataset(cfg)
    model = bp.initial_model(cfg, data)
    t = bp.bf_terms(model, data, "magnitude", 0.7, mu=cfg.prior_mu, sigma=cfg.prior_sigma,
                    bf_samples=cfg.bf_samples, likelihood=cfg.likelihood, seed=cfg.seed, biases=biases)
    rec = bp.prune_step(model, bp.gate_state(cfg, model, data), epoch=1)
    assert rec.pruned and t["log_bf"] == pytest.approx(rec.log_bf, rel=1e-12, abs=1e-9)
    assert t["log_prior_after"] == pytest.approx(rec.after.log_prior, rel=1e-12)
