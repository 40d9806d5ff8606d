"""MAP training (train_prior="map"): the prior's gradient is in every training step, checked by hand."""

import copy
import importlib.util

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import bayesprune as bp
from bayesprune.bayes.map_prior import MapPrior
from bayesprune.engine import training

HAS_LAPLACE = importlib.util.find_spec("laplace") is not None


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def _data(n: int = 20) -> bp.TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    return bp.TensorDataset("tiny", x, y, x[:4], y[:4], 2)


def _one_sgd_step_gradient(model: nn.Module, data, idx, prior) -> list[torch.Tensor]:
    """The gradient the package's per-batch step used: one SGD step with lr = 1 moves w by -grad."""
    before = [p.detach().clone() for p in model.parameters()]
    training.run_steps(model, torch.optim.SGD(model.parameters(), lr=1.0), data, [idx], None, prior)
    return [b - p.detach() for b, p in zip(before, model.parameters())]


@pytest.mark.parametrize("all_parameters", [False, True])
def test_the_training_gradient_includes_the_prior_term(all_parameters):
    mu, sigma = 0.1, 0.7
    fields = dict(bayes_factor="laplace") if all_parameters else {}
    cfg = bp.RunConfig(train_prior="map", prior_mu=mu, prior_sigma=sigma, **fields)
    data = _data()
    n = data.n_train
    idx = torch.arange(8)
    model = _tiny()
    hand = copy.deepcopy(model)
    got = _one_sgd_step_gradient(model, data, idx, MapPrior.from_config(cfg, model, n))

    # the hand-written objective: mean CE over the batch + |w - mu|^2 / (2 sigma^2 N) over the prior's weights
    covered = [p for name, p in hand.named_parameters() if all_parameters or name.endswith("weight")]
    loss = F.cross_entropy(hand(data.x_train[idx]), data.y_train[idx])
    loss = loss + sum(((p - mu) ** 2).sum() for p in covered) / (2 * sigma**2 * n)
    expected = torch.autograd.grad(loss, list(hand.parameters()))
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-6)

    # and the difference from maximum-likelihood training is exactly (w - mu) / (sigma^2 N) on those weights
    ml = _one_sgd_step_gradient(copy.deepcopy(hand), data, idx, None)
    for (name, p), g, g_ml in zip(hand.named_parameters(), got, ml):
        term = (p.detach() - mu) / (sigma**2 * n) if (all_parameters or name.endswith("weight")) else 0 * p.detach()
        assert torch.allclose(g - g_ml, term, atol=1e-6), name


def test_the_default_trains_without_the_prior_and_keeps_every_run_key():
    cfg = bp.RunConfig()
    assert cfg.train_prior == "none" and MapPrior.from_config(cfg, _tiny(), 10) is None
    assert "train_prior" not in cfg.identity() and "marglik_every" not in cfg.identity()
    with pytest.raises(ValueError, match=r"RunConfig.train_prior='l2' is invalid: allowed one of none, map"):
        bp.RunConfig(train_prior="l2")
    with pytest.raises(ValueError, match=r"RunConfig.marglik_every=0 is invalid"):
        bp.RunConfig(marglik_every=0)


def test_map_training_shrinks_the_weights_towards_the_prior_mean(small_cfg):
    norm = {}
    for prior in ("none", "map"):
        model = bp.train(small_cfg.replace(method="none", train_prior=prior, prior_sigma=0.05), progress=False).model
        norm[prior] = sum(float(p.detach().square().sum()) for n, p in model.named_parameters() if n.endswith("weight"))
    assert norm["map"] < 0.8 * norm["none"]


@pytest.mark.skipif(not HAS_LAPLACE, reason="needs laplace-torch")
def test_marglik_refits_sigma_every_k_epochs(small_cfg):
    cfg = small_cfg.replace(method="none", train_prior="map", prior_fit="marglik", marglik_every=2, prior_sigma=0.03)
    data = bp.load_dataset(cfg)
    model = bp.initial_model(cfg, data.input_shape, data.num_classes)
    prior = MapPrior.from_config(cfg, model, data.n_train)
    prior.end_of_epoch(model, data, 1, None)
    assert prior.sigma == 0.03  # not a refit epoch
    prior.end_of_epoch(model, data, 2, None)
    from bayesprune.bayes.evidence import Curvature

    idx = bp.bf_subset(data.n_train, cfg.bf_samples, cfg.seed)
    curv = Curvature.fit(model, data.x_train[idx], data.y_train[idx], n_total=data.n_train,
                         hessian=cfg.laplace_curvature, seed=cfg.seed)
    assert prior.sigma == pytest.approx(curv.fit_prior_precision() ** -0.5, rel=1e-9)
