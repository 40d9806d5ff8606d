"""The posterior criterion ``obs`` against exact answers on a tiny net: brute-force GGN, dense inverses, a solved QP."""

import importlib.util

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import bayesprune as bp
from bayesprune.core.criteria import ScoreContext, compute_mask, mask_from_scores
from bayesprune.core.data import TensorDataset
from bayesprune.core.pruning import pruning_targets
from bayesprune.core.registry import CRITERIA

if importlib.util.find_spec("laplace") is None:
    pytest.skip("the posterior criterion needs laplace-torch", allow_module_level=True)

DELTA = 3.0  # the prior precision of every exact check


@pytest.fixture(scope="module")
def tiny():
    """A 4-3-2 tanh MLP in float64 on 40 random examples, and its exact GGN (explicit Jacobians)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    x = torch.randn(40, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (40,))
    data = TensorDataset("tiny", x, y, x[:5], y[:5], 2)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])

    def logits(theta):
        params, start = {}, 0
        for n, s in zip(names, shapes):
            params[n] = theta[start:start + s.numel()].view(s)
            start += s.numel()
        return functional_call(net, params, (x,))

    J = jacrev(logits)(flat)  # (n, classes, P)
    p = torch.softmax(logits(flat), dim=1).detach()
    lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # the softmax cross-entropy's Hessian in the logits
    H = torch.einsum("nkp,nkl,nlq->pq", J, lam, J)
    slices, start = {}, 0
    for n, s in zip(names, shapes):
        slices[n] = slice(start, start + s.numel())
        start += s.numel()
    return net, data, H, flat, slices


def _scores(net, data, structure, delta=DELTA, scope="layer"):
    cfg = bp.RunConfig(dataset="synthetic", hessian_structure=structure, bf_samples=None)
    ctx = ScoreContext(pruning_targets(net), 0.5, scope, data=data, prior_precision=delta, config=cfg)
    return CRITERIA.lookup("obs").scores(net, ctx)


def _constrained_increase(P: torch.Tensor, w: torch.Tensor, p: int) -> float:
    """min_d 1/2 d^T P d subject to d_p = -w_p (weight p removed, all others compensate): the KKT system, solved."""
    n = P.shape[0]
    K = torch.zeros(n + 1, n + 1, dtype=P.dtype)
    K[:n, :n], K[:n, n], K[n, :n] = P, 0.0, 0.0
    K[:n, n][p] = 1.0
    K[n, :n][p] = 1.0
    rhs = torch.zeros(n + 1, dtype=P.dtype)
    rhs[n] = -w[p]
    d = torch.linalg.solve(K, rhs)[:n]
    return float(0.5 * d @ P @ d)


def test_full_obs_saliency_is_the_brute_force_loss_increase_with_optimal_compensation(tiny):
    net, data, H, flat, slices = tiny
    P = H + DELTA * torch.eye(H.shape[0], dtype=H.dtype)
    scores = _scores(net, data, "full")
    for name, s in scores.items():
        for j in range(s.numel()):
            p = slices[name].start + j
            assert float(s.flatten()[j]) == pytest.approx(_constrained_increase(P, flat, p), rel=1e-6, abs=1e-12)


def test_diag_saliency_is_the_quadratic_increase_of_zeroing_one_weight_alone(tiny):
    net, data, H, flat, slices = tiny
    P = H + DELTA * torch.eye(H.shape[0], dtype=H.dtype)
    scores = _scores(net, data, "diag")
    for name, s in scores.items():
        for j in range(s.numel()):
            p = slices[name].start + j
            d = torch.zeros_like(flat)
            d[p] = -flat[p]
            assert float(s.flatten()[j]) == pytest.approx(float(0.5 * d @ P @ d), rel=1e-6)


def test_the_compensated_saliency_is_never_above_the_uncompensated_one(tiny):
    net, data, _, _, _ = tiny
    full, diag = _scores(net, data, "full"), _scores(net, data, "diag")
    for k in full:
        assert bool((full[k] <= diag[k] * (1 + 1e-9)).all())
        assert bool((full[k] < diag[k]).any())  # the other weights do compensate


def test_kron_posterior_variance_is_the_diagonal_of_the_dense_inverse_of_the_kronecker_product(tiny):
    from bayesprune.bayes.evidence import Curvature, _KronBlock

    net, data, _, _, _ = tiny
    curv = Curvature.fit(net, data.x_train, data.y_train, structure="kron")
    var = curv.posterior_variance(DELTA)
    checked = 0
    for name, block in zip(curv.names, curv._blocks):
        if isinstance(block, _KronBlock):
            M = torch.kron(block.G.M, block.A.M)
            dense = torch.linalg.inv(M + DELTA * torch.eye(M.shape[0], dtype=M.dtype)).diagonal()
            torch.testing.assert_close(var[name].flatten(), dense, rtol=1e-10, atol=1e-14)
            checked += 1
        else:
            dense = torch.linalg.inv(block.H.M + DELTA * torch.eye(block.H.M.shape[0], dtype=torch.float64))
            torch.testing.assert_close(var[name].flatten(), dense.diagonal(), rtol=1e-10, atol=1e-14)
    assert checked == 2


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_the_mask_prunes_the_lowest_brute_force_saliencies(tiny, scope):
    net, data, H, flat, slices = tiny
    inv = torch.linalg.inv(H + DELTA * torch.eye(H.shape[0], dtype=H.dtype)).diagonal()
    targets = pruning_targets(net)
    exact = {k: flat[slices[k]].square().view_as(w) / (2 * inv[slices[k]].view_as(w)) for k, w in targets.items()}
    cfg = bp.RunConfig(dataset="synthetic", hessian_structure="full", bf_samples=None)
    mask = compute_mask(net, "obs", 0.5, scope, data=data, prior_precision=DELTA, config=cfg)
    want = mask_from_scores(exact, 0.5, scope)
    for k in targets:
        assert torch.equal(mask[k], want[k])
    if scope == "global":  # the global ranking is not the per-layer one here
        per_layer = mask_from_scores(exact, 0.5, "layer")
        assert any(not torch.equal(want[k], per_layer[k]) for k in targets)


def test_without_a_prior_precision_the_criterion_fits_it_to_the_evidence(tiny):
    from bayesprune.bayes.evidence import Curvature

    net, data, _, _, _ = tiny
    crit = CRITERIA.lookup("obs")
    cfg = bp.RunConfig(dataset="synthetic", hessian_structure="full", bf_samples=None)
    crit.scores(net, ScoreContext(pruning_targets(net), 0.5, data=data, config=cfg))
    curv = Curvature.fit(net, data.x_train, data.y_train, structure="full")
    delta = curv.fit_prior_precision()
    assert crit.last_prior_precision == pytest.approx(delta, rel=1e-9)
    # the fitted delta maximises the evidence
    assert curv.log_evidence(delta).log_evidence >= curv.log_evidence(1.5 * delta).log_evidence
    assert curv.log_evidence(delta).log_evidence >= curv.log_evidence(delta / 1.5).log_evidence


def test_the_criterion_needs_the_data(tiny):
    net, _, _, _, _ = tiny
    with pytest.raises(ValueError, match="training data"):
        compute_mask(net, "obs", 0.5)


RUN = dict(dataset="synthetic", fcn_hidden=(16, 8), bf_samples=256, epochs=3, laplace_finetune_steps=10,
           schedule="gradual", sparsity=0.8)


def test_bayes_obs_trains_end_to_end_through_the_laplace_gate_and_reruns_bit_identically():
    cfg = bp.RunConfig(method="bayes-obs", bayes_factor="laplace", gate="immediate", train_prior="map",
                       prior_fit="marglik", final_prune="gate", scope="global", **RUN)
    a = bp.train(cfg, progress=False)
    b = bp.train(cfg, progress=False)
    assert a.status == "ok" and a.final_sparsity > 0.0
    assert a.history["log_bf"].notna().any()
    cols = ["seconds", "bf_seconds"]
    assert a.history.drop(columns=cols).equals(b.history.drop(columns=cols))
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


def test_obs_with_a_fixed_prior_uses_prior_sigma_and_reaches_the_target():
    cfg = bp.RunConfig(method="obs", prior_sigma=0.5, **RUN)
    res = bp.train(cfg, progress=False)
    assert res.final_sparsity == pytest.approx(0.8, abs=0.01)
    assert CRITERIA.lookup("obs").last_prior_precision == pytest.approx(0.5 ** -2)


def test_obs_is_a_method_and_registered_on_import():
    assert "obs" in bp.RunConfig.__dataclass_fields__["method"].metadata["choices"]()
    assert "bayes-obs" in bp.RunConfig.__dataclass_fields__["method"].metadata["choices"]()
