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


# ------------------------------------------------------------------ notebook 02's helpers
def test_weight_decay_check_matches_torch_weight_decay(trained):
    from bayesprune.lab import explore

    model, data = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wd = explore.weight_decay_check(model, data, 0.1)
    assert wd["delta"] == pytest.approx(100.0) and wd["coefficient_on_mean_loss"] == pytest.approx(100.0 / data.n_train)
    assert wd["prior_gradient_gap"] < 1e-12 and wd["sgd_step_gap"] < 1e-12 < wd["largest_step"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def _paper_step(model, x, y, n, r, sigma, beta, previous_log_bf):
    """The paper's Algorithm 3 under our lagged reading, written independently of the package (as in notebook 02)."""
    import math

    from torch.nn import functional as F

    def log_post(m):
        with torch.no_grad():
            ll = -F.cross_entropy(m(x).double(), y, reduction="sum").item() * n / len(x)
            lp = sum(torch.distributions.Normal(0.0, sigma).log_prob(w.double()).sum().item()
                     for w in bp.prunable_parameters(m).values())
        return ll + lp

    before = log_post(model)
    if previous_log_bf is not None and not previous_log_bf > math.log(beta):
        return False, 0.0
    with torch.no_grad():
        for w in bp.prunable_parameters(model).values():
            w.view(-1)[w.abs().flatten().argsort()[:round(w.numel() * r)]] = 0.0
    return True, log_post(model) - before


def test_algorithm_check_agrees_with_a_transcription_and_catches_a_wrong_one(trained):
    from bayesprune.lab import explore

    model, data = trained
    cfg = bp.RunConfig(dataset="synthetic", fcn_hidden=(16, 8), method="bayes-magnitude", schedule="gradual",
                       final_prune="gate", epochs=4, prune_end_epoch=4, sparsity=0.9)
    for sigma in (0.03, 3.0):
        steps = explore.algorithm_check(_paper_step, model, data, cfg.replace(prior_sigma=sigma))
        assert len(steps) == 4 and explore.algorithm_agrees(steps)

    def always(model, x, y, n, r, sigma, beta, previous_log_bf):  # ignores line 4: never skips
        return _paper_step(model, x, y, n, r, sigma, beta, None)

    wide = explore.algorithm_check(_paper_step, model, data, cfg.replace(prior_sigma=3.0))
    assert not wide["package pruned"].all()  # sigma = 3 refuses: a gate that never skips must then disagree
    assert not explore.algorithm_agrees(explore.algorithm_check(always, model, data, cfg.replace(prior_sigma=3.0)))


def test_crossover_table_is_sigma_star(trained):
    from bayesprune.lab import explore

    model, data = trained
    t = explore.crossover_table(model, data, [0.5, 0.9])
    for r in (0.5, 0.9):
        assert t.loc[r, "sigma*"] == pytest.approx(bp.sigma_crossover(model, data, "magnitude", r, bf_samples=None))
        assert t.loc[r, "1/sigma*^2 = 2 x loss / S"] == pytest.approx(t.loc[r, "sigma*"] ** -2)
