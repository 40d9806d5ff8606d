"""bayesprune.bayes.evidence against exact or independent answers.

Independent references: closed forms (Bayesian linear regression), laplace-torch's own
log_marginal_likelihood / optimize_prior_precision with its default curvlinops backend
(ours uses ASDL), and dense matrices built from laplace-torch's curvature.
"""

import copy
import importlib.util
import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bayesprune as bp
from bayesprune.bayes.evidence import LOG_2PI, MAX_FULL_PARAMS, Curvature, EvidenceTerms

if importlib.util.find_spec("laplace") is None:  # find, not import: laplace-torch takes seconds to import
    pytest.skip("bayesprune.bayes.evidence needs laplace-torch (pip install laplace-torch)", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These matrices are tiny: one thread is as fast, and immune to a busy machine's oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ fixtures and helpers
def _train(model, data, epochs, lr=3e-3, seed=0):
    torch.manual_seed(seed)
    opt = bp.engine.training.make_adam(model.parameters(), lr, "cpu")
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        bp.engine.training.train_epoch(model, opt, data, 64, g, None)
    return model


@pytest.fixture(scope="module")
def synthetic():
    return bp.load_dataset(bp.RunConfig(dataset="synthetic"))


@pytest.fixture(scope="module")
def fcn(synthetic):
    """A small trained FCN on the synthetic data (64-12-8-4: 920 parameters)."""
    torch.manual_seed(0)
    return _train(bp.FCN(synthetic.input_shape, synthetic.num_classes, (12, 8)), synthetic, 6)


def _reference(model, x, y, structure, **kw):
    """laplace-torch with its default backend (curvlinops), independent of ours (ASDL)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from laplace import Laplace
    la = Laplace(model, "classification", subset_of_weights="all", hessian_structure=structure, **kw)
    la.fit(DataLoader(TensorDataset(x, y), batch_size=128))
    return la


def _pruned_copy(model, mask):
    out = copy.deepcopy(model)
    bp.apply_mask(out, mask)
    return out


def _logdet_from_occam(terms: EvidenceTerms) -> float:
    """log det(H_S + delta I), recovered from log_occam = d/2 log 2pi - 1/2 log det."""
    return terms.n_params * LOG_2PI - 2.0 * terms.log_occam


def _flat_keep(model, mask):
    return torch.cat([
        (mask[n].flatten() if n in mask else torch.ones(p.numel(), dtype=torch.bool))
        for n, p in model.named_parameters()
    ])


def _exact_masked_logdet(H: torch.Tensor, keep: torch.Tensor, delta: float) -> float:
    idx = torch.nonzero(keep).flatten()
    M = H.double()[idx][:, idx] + delta * torch.eye(idx.numel(), dtype=torch.float64)
    return float(torch.linalg.slogdet(M).logabsdet)


# ------------------------------------------------------------------ 1. Bayesian linear regression
def _blr(n=40, d=6, sigma=0.3, seed=0, orthogonal=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    if orthogonal:  # X^T X diagonal, so the diagonal approximation is exact too
        X = torch.linalg.qr(X).Q * torch.linspace(1.0, 4.0, d, dtype=torch.float64)
    w_true = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ w_true + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y.unsqueeze(1), sigma


def _blr_closed_form(X, y, sigma, delta, mu):
    """log N(y; X mu, sigma^2 I + X X^T / delta) and the posterior mode."""
    n, d = X.shape
    cov = sigma**2 * torch.eye(n, dtype=torch.float64) + X @ X.T / delta
    log_z = torch.distributions.MultivariateNormal(X @ torch.full((d,), mu, dtype=torch.float64), cov).log_prob(y[:, 0])
    prec = X.T @ X / sigma**2 + delta * torch.eye(d, dtype=torch.float64)
    w_star = torch.linalg.solve(prec, X.T @ y[:, 0] / sigma**2 + delta * mu)
    return float(log_z), w_star


def _linear_model(w: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(w.numel(), 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(w.view(1, -1))
    return lin


@pytest.mark.parametrize("structure", ["full", "kron"])
@pytest.mark.parametrize("mu", [0.0, 0.3])
def test_linear_regression_evidence_is_exact(structure, mu):
    X, y, sigma = _blr()
    delta = 2.5
    expected, w_star = _blr_closed_form(X, y, sigma, delta, mu)
    curv = Curvature.fit(_linear_model(w_star), X, y, structure=structure, likelihood="regression", sigma_noise=sigma)
    got = curv.log_evidence(delta, prior_mean=mu)
    assert got.n_params == 6
    assert got.log_evidence == pytest.approx(expected, rel=1e-6, abs=0)


def test_linear_regression_diag_is_exact_for_an_orthogonal_design():
    X, y, sigma = _blr(orthogonal=True)
    expected, w_star = _blr_closed_form(X, y, sigma, 1.7, 0.0)
    curv = Curvature.fit(_linear_model(w_star), X, y, structure="diag", likelihood="regression", sigma_noise=sigma)
    assert curv.log_evidence(1.7).log_evidence == pytest.approx(expected, rel=1e-6, abs=0)


@pytest.mark.parametrize("structure,pruned", [("full", [1, 4]), ("full", [0, 2, 3]), ("kron", [2])])
def test_linear_regression_pruned_evidence_is_exact(structure, pruned):
    """Pruned columns are not parameters: closed form on the kept columns, w* refitted on them."""
    X, y, sigma = _blr()
    delta, mu = 2.5, 0.0
    keep = torch.ones(X.shape[1], dtype=torch.bool)
    keep[pruned] = False
    expected, w_kept = _blr_closed_form(X[:, keep], y, sigma, delta, mu)
    w = torch.zeros(X.shape[1], dtype=torch.float64)
    w[keep] = w_kept
    curv = Curvature.fit(_linear_model(w), X, y, structure=structure, likelihood="regression", sigma_noise=sigma)
    got = curv.log_evidence(delta, prior_mean=mu, mask={"weight": keep.view(1, -1)})
    assert got.n_params == int(keep.sum())
    assert got.log_evidence == pytest.approx(expected, rel=1e-6, abs=0)


# ------------------------------------------------------------------ 2. pruning a weight that is already zero
@pytest.fixture(scope="module")
def dead_input(synthetic):
    """An FCN whose first input pixel is 0 in every example, with that column of fc1 at 0."""
    x = synthetic.x_train.clone()
    x[:, 0, 0, 0] = 0.0
    data = bp.TensorDataset("dead", x, synthetic.y_train, synthetic.x_test, synthetic.y_test, synthetic.num_classes)
    torch.manual_seed(1)
    model = bp.FCN(data.input_shape, data.num_classes, (10, 6))
    _train(model, data, 4)
    with torch.no_grad():
        model.fc1.weight[:, 0] = 0.0  # no effect on the fit: the input is always 0
        model.fc1.weight[2, 5] = 0.0  # a zero weight on a live input
    return model, x, synthetic.y_train


def _fc1_mask(model, cells):
    keep = torch.ones_like(model.fc1.weight, dtype=torch.bool)
    for r, c in cells:
        keep[r, c] = False
    return {"fc1.weight": keep}


@pytest.fixture(scope="module")
def dead_curvature(dead_input):
    model, x, y = dead_input
    return {structure: Curvature.fit(model, x, y, structure=structure) for structure in ("kron", "diag", "full")}


@pytest.mark.parametrize("structure", ["kron", "diag", "full"])
def test_pruning_a_dead_weight_costs_only_its_prior_offset(dead_input, dead_curvature, structure):
    """Its curvature is 0, so its prior and Occam terms cancel: delta log Z = delta mu^2 / 2 per weight."""
    model, _, _ = dead_input
    curv, delta = dead_curvature[structure], 3.0
    for mu in (0.0, 0.05):
        base = curv.log_evidence(delta, mu)
        one = curv.log_evidence(delta, mu, _fc1_mask(model, [(3, 0)]))
        column = curv.log_evidence(delta, mu, _fc1_mask(model, [(r, 0) for r in range(10)]))
        assert one.log_likelihood == base.log_likelihood and one.n_params == base.n_params - 1
        # 1e-6 nats: kron's masked blocks use eigenvectors in the model's float32 (module doc)
        assert one.log_evidence - base.log_evidence == pytest.approx(0.5 * delta * mu**2, abs=1e-6)
        assert column.log_evidence - base.log_evidence == pytest.approx(10 * 0.5 * delta * mu**2, abs=1e-6)


@pytest.mark.parametrize("structure", ["kron", "diag", "full"])
def test_pruning_a_zero_weight_gains_its_occam_factor(dead_input, dead_curvature, structure):
    """delta log Z = -1/2 log(delta (M^-1)_pp): diag 1/2 log(1 + h/delta); M from laplace-torch's own fit."""
    model, x, y = dead_input
    delta, p = 3.0, 2 * model.fc1.weight.shape[1] + 5  # fc1.weight[2, 5]
    curv = dead_curvature[structure]
    gain = curv.log_evidence(delta, mask=_fc1_mask(model, [(2, 5)])).log_evidence - curv.log_evidence(delta).log_evidence
    la = _reference(model, x, y, structure)
    if structure == "diag":
        h = float(la.H[p])
        expected = 0.5 * math.log1p(h / delta)
    else:
        H = la.H_facs.to_matrix() if structure == "kron" else la.H  # kron: one pruned weight is exact
        M = H.double() + delta * torch.eye(H.shape[0], dtype=torch.float64)
        expected = -0.5 * math.log(delta * float(torch.linalg.inv(M)[p, p]))
    assert expected > 0.01
    assert gain == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------------ 3. agreement with laplace-torch
@pytest.fixture(scope="module")
def fcn_fits(fcn, synthetic):
    """Ours and laplace-torch's (curvlinops) fits of the unpruned FCN, once per structure."""
    x, y = synthetic.x_train, synthetic.y_train
    return {s: (Curvature.fit(fcn, x, y, structure=s), _reference(fcn, x, y, s)) for s in ("kron", "diag")}


@pytest.mark.parametrize("structure", ["kron", "diag"])
def test_unpruned_evidence_matches_laplace_torch(fcn_fits, structure):
    curv, la = fcn_fits[structure]
    for mu in (0.0, 0.02):
        la.prior_mean = mu
        for delta in (0.5, 4.0, 60.0):
            ours = curv.log_evidence(delta, mu).log_evidence
            assert ours == pytest.approx(float(la.log_marginal_likelihood(torch.tensor(delta))), rel=2e-6)
    la.prior_mean = 0.0


def test_unpruned_full_evidence_matches_laplace_torch(synthetic):
    x, y = synthetic.x_train[:200], synthetic.y_train[:200]
    torch.manual_seed(2)
    tiny = bp.FCN(synthetic.input_shape, synthetic.num_classes, (6,))  # 418 parameters
    curv = Curvature.fit(tiny, x, y, structure="full")
    la = _reference(tiny, x, y, "full")
    for delta in (0.5, 8.0):
        assert curv.log_evidence(delta).log_evidence == pytest.approx(
            float(la.log_marginal_likelihood(torch.tensor(delta))), rel=2e-6)


def test_subset_scaling_matches_a_tempered_laplace_torch(fcn, synthetic):
    """Fitting on m of n examples scales H and log p(D|w) by n/m: laplace-torch's temperature m/n."""
    x, y = synthetic.x_train[:256], synthetic.y_train[:256]
    n_total = 60000
    curv = Curvature.fit(fcn, x, y, n_total=n_total)
    la = _reference(fcn, x, y, "kron", temperature=256 / n_total)
    assert curv.log_likelihood == pytest.approx(n_total / 256 * bp.log_likelihood(fcn, x, y), rel=1e-9)
    for delta in (1.0, 300.0):
        assert curv.log_evidence(delta).log_evidence == pytest.approx(
            float(la.log_marginal_likelihood(torch.tensor(delta))), rel=2e-6)


def test_curvature_samples_takes_the_curvature_from_the_first_k(fcn, synthetic):
    x, y = synthetic.x_train, synthetic.y_train
    part = Curvature.fit(fcn, x, y, n_total=5000, curvature_samples=128)
    first = Curvature.fit(fcn, x[:128], y[:128], n_total=5000)
    whole = Curvature.fit(fcn, x, y, n_total=5000)
    assert part.log_likelihood == whole.log_likelihood
    assert part.log_evidence(2.0).log_occam == pytest.approx(first.log_evidence(2.0).log_occam, rel=1e-12)


def test_reuse_shares_identical_factors_without_changing_results(fcn, synthetic):
    """The first layer's input factor is the data covariance: the same before and after pruning."""
    x, y = synthetic.x_train, synthetic.y_train
    mask = bp.compute_mask(fcn, "magnitude", 0.7)
    pruned = _pruned_copy(fcn, mask)
    before = Curvature.fit(fcn, x, y)
    alone = Curvature.fit(pruned, x, y)
    shared = Curvature.fit(pruned, x, y, reuse=before)
    assert shared._blocks[0].A is before._blocks[0].A and alone._blocks[0].A is not before._blocks[0].A
    assert shared._blocks[0].G is not before._blocks[0].G  # the output side changed with the weights
    for delta in (0.3, 30.0):
        assert shared.log_evidence(delta, mask=mask) == alone.log_evidence(delta, mask=mask)
    assert shared.fit_prior_precision(mask=mask) == alone.fit_prior_precision(mask=mask)


# ------------------------------------------------------------------ 4. the kron mask approximation
@pytest.fixture(scope="module")
def tiny_masks(fcn):
    g = torch.Generator().manual_seed(3)
    out = [("one weight", {"fc2.weight": _single(fcn.fc2.weight, 3, 5)})]
    for kind in ("magnitude", "random"):
        for sparsity in (0.25, 0.5, 0.9, 0.99):
            out.append((f"{kind} {sparsity}", bp.compute_mask(fcn, kind, sparsity, "layer", g)))
    return out


def _single(weight, r, c):
    keep = torch.ones_like(weight, dtype=torch.bool)
    keep[r, c] = False
    return keep


def test_kron_masked_logdet_is_exact_for_one_weight_and_an_upper_bound(fcn, synthetic, tiny_masks):
    x, y = synthetic.x_train.double(), synthetic.y_train  # float64, so that "exact" means 1e-8
    delta = 2.0
    gaps = {}
    for label, mask in tiny_masks:
        pruned = _pruned_copy(fcn, mask).double()
        curv = Curvature.fit(pruned, x, y)
        ours = _logdet_from_occam(curv.log_evidence(delta, mask=mask))
        K = _reference(pruned, x, y, "kron").H_facs.to_matrix()  # the dense Kronecker matrix
        exact = _exact_masked_logdet(K, _flat_keep(pruned, mask), delta)
        gaps[label] = ours - exact
        if label == "one weight":
            assert ours == pytest.approx(exact, rel=1e-8)
        else:
            assert ours >= exact - 1e-6 * abs(exact), label
    # the bound is reasonably tight: within 15 % of log det M_SS at every sparsity
    # (the measured gaps are in the module docstring)
    assert max(gaps.values()) < 0.15 * _logdet_from_occam(Curvature.fit(copy.deepcopy(fcn).double(), x, y).log_evidence(delta))


def test_kron_mask_of_a_whole_layer_is_exact(fcn, synthetic):
    mask = {"fc3.weight": torch.zeros_like(fcn.fc3.weight, dtype=torch.bool)}
    pruned = _pruned_copy(fcn, mask).double()
    x, y = synthetic.x_train.double(), synthetic.y_train
    ours = _logdet_from_occam(Curvature.fit(pruned, x, y).log_evidence(1.0, mask=mask))
    K = _reference(pruned, x, y, "kron").H_facs.to_matrix()
    assert ours == pytest.approx(_exact_masked_logdet(K, _flat_keep(pruned, mask), 1.0), rel=1e-8)


# ------------------------------------------------------------------ 5. the prior precision
@pytest.mark.parametrize("structure", ["kron", "diag"])
def test_fit_prior_precision_maximises_and_agrees_with_laplace_torch(fcn_fits, structure):
    curv, la = fcn_fits[structure]
    delta = curv.fit_prior_precision()
    best = curv.log_evidence(delta).log_evidence
    assert best >= curv.log_evidence(delta * 1.1).log_evidence
    assert best >= curv.log_evidence(delta / 1.1).log_evidence
    la.prior_mean = 0.0
    la.optimize_prior_precision(method="marglik", n_steps=300, lr=0.1, prior_structure="scalar")
    theirs = float(la.prior_precision)
    assert delta == pytest.approx(theirs, rel=1e-3)
    assert best >= curv.log_evidence(theirs).log_evidence


def test_fit_prior_precision_with_a_kron_mask_and_a_prior_mean(fcn, synthetic):
    mask = bp.compute_mask(fcn, "magnitude", 0.6)
    pruned = _pruned_copy(fcn, mask)
    curv = Curvature.fit(pruned, synthetic.x_train, synthetic.y_train)
    for mu in (0.0, 0.01):
        delta = curv.fit_prior_precision(prior_mean=mu, mask=mask)
        best = curv.log_evidence(delta, mu, mask).log_evidence
        for factor in (1.1, 1 / 1.1, 1.01, 1 / 1.01):
            assert best >= curv.log_evidence(delta * factor, mu, mask).log_evidence


def test_fit_prior_precision_returns_the_bound_when_the_maximum_is_beyond(fcn, synthetic):
    curv = Curvature.fit(fcn, synthetic.x_train, synthetic.y_train)
    with pytest.warns(RuntimeWarning, match="bound"):
        assert curv.fit_prior_precision(bounds=(1e3, 1e4)) == 1e3


# ------------------------------------------------------------------ 6. the CNN
@pytest.mark.parametrize("structure", ["kron", "diag"])
def test_cnn_evidence(structure):
    digits = bp.load_dataset(bp.RunConfig(dataset="digits"))
    x, y = digits.x_train[:256], digits.y_train[:256]
    torch.manual_seed(0)
    cnn = bp.CNN(digits.input_shape, digits.num_classes, (4, 6), hidden=16)
    curv = Curvature.fit(cnn, x, y, structure=structure, n_total=digits.n_train)
    delta = curv.fit_prior_precision()
    # curvlinops' diagonal GGN forms per-example Jacobians (seconds here): laplace-torch with ASDL instead
    from laplace.curvature import AsdlGGN

    backend = {"backend": AsdlGGN} if structure == "diag" else {}
    la = _reference(cnn, x, y, structure, temperature=256 / digits.n_train, **backend)
    assert curv.log_evidence(delta).log_evidence == pytest.approx(
        float(la.log_marginal_likelihood(torch.tensor(delta))), rel=2e-6)
    mask = bp.compute_mask(cnn, "magnitude", 0.5)
    pruned_curv = Curvature.fit(_pruned_copy(cnn, mask), x, y, structure=structure, n_total=digits.n_train)
    terms = pruned_curv.log_evidence(delta, mask=mask)
    assert terms.n_params == curv.n_params - mask_pruned(mask)
    assert math.isfinite(terms.log_evidence)


def mask_pruned(mask):
    return sum(int((~m).sum()) for m in mask.values())


# ------------------------------------------------------------------ 7. errors
def test_clear_errors(fcn, synthetic):
    x, y = synthetic.x_train[:64], synthetic.y_train[:64]
    curv = Curvature.fit(fcn, x, y)
    with pytest.raises(ValueError, match=r"mask names 'fc9.weight'.*allowed fc1.weight, fc1.bias"):
        curv.log_evidence(1.0, mask={"fc9.weight": torch.ones(3, 3, dtype=torch.bool)})
    live = bp.compute_mask(fcn, "magnitude", 0.5)  # fcn's weights are not zeroed
    with pytest.raises(ValueError, match=r"mask\['fc1.weight'\] prunes \d+ weights that are not zero.*allowed only weights that are exactly 0"):
        curv.log_evidence(1.0, mask=live)
    with pytest.raises(ValueError, match=r"mask\['fc2.weight'\] has shape \(2, 2\).*allowed .*\(8, 12\)"):
        curv.log_evidence(1.0, mask={"fc2.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"structure='kfac' is invalid: allowed kron, diag, full"):
        Curvature.fit(fcn, x, y, structure="kfac")
    with pytest.raises(ValueError, match=r"likelihood='poisson' is invalid: allowed classification, regression"):
        Curvature.fit(fcn, x, y, likelihood="poisson")
    with pytest.raises(ValueError, match=r"hessian='hessian' is invalid: allowed ggn, ggn-mc, ef"):
        Curvature.fit(fcn, x, y, hessian="hessian")
    big = bp.FCN(synthetic.input_shape, synthetic.num_classes, (64,))
    with pytest.raises(ValueError, match=rf"structure='full' is invalid for this model: its 4420 parameters.*allowed up to MAX_FULL_PARAMS={MAX_FULL_PARAMS}"):
        Curvature.fit(big, x, y, structure="full")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"prior_precision=.* is invalid: allowed a finite number > 0"):
            curv.log_evidence(bad)
    with pytest.raises(ValueError, match=r"bounds=\(10.0, 1.0\) is invalid: allowed \(low, high\)"):
        curv.fit_prior_precision(bounds=(10.0, 1.0))
    with pytest.raises(ValueError, match=r"sigma_noise=0.5 is invalid for classification"):
        Curvature.fit(fcn, x, y, sigma_noise=0.5)
    with pytest.raises(ValueError, match=r"y has examples of shape \(\).*regression"):
        Curvature.fit(nn.Linear(3, 1), torch.randn(5, 3), torch.randn(5), likelihood="regression")


# ------------------------------------------------------------------ determinism and side effects
@pytest.mark.parametrize("hessian", ["ggn", "ggn-mc"])
def test_deterministic_and_leaves_the_model_alone(fcn, synthetic, hessian):
    x, y = synthetic.x_train, synthetic.y_train
    model = copy.deepcopy(fcn).train()
    if hasattr(model, "output_size"):  # set by laplace-torch in other tests
        del model.output_size
    mask = bp.compute_mask(model, "magnitude", 0.5)
    bp.apply_mask(model, mask)
    model.fc1.weight.grad = torch.ones_like(model.fc1.weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    runs = []
    for _ in range(2):
        curv = Curvature.fit(model, x, y, hessian=hessian, n_total=1000)
        delta = curv.fit_prior_precision(mask=mask)
        runs.append((delta, curv.log_evidence(delta, mask=mask), curv.log_evidence(delta)))
    assert runs[0] == runs[1]  # bit-identical floats
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.training and torch.equal(model.fc1.weight.grad, torch.ones_like(model.fc1.weight))
    assert model.fc2.weight.grad is None
    assert not hasattr(model, "output_size") and not any(hasattr(m, "fisher") for m in model.modules())


def test_eigensolver_failure_is_retried_with_a_tiny_jitter(monkeypatch):
    """LAPACK may not converge on a factor with many repeated eigenvalues (met at 99 % on digits):
    the spectrum is then taken with a relative jitter of 1e-12.. on the diagonal, and the values stay right."""
    from bayesprune.bayes import evidence

    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 8, generator=g, dtype=torch.float64)
    M = X @ X.T  # PSD, rank 8: 22 repeated zero eigenvalues
    exact = torch.linalg.eigvalsh(M)
    real_vals, real_vecs = torch.linalg.eigvalsh, torch.linalg.eigh
    calls = {"n": 0}

    def flaky(fn):
        def wrapped(A, *a, **k):
            calls["n"] += 1
            if torch.equal(A, M):  # the unjittered matrix "fails to converge"
                raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge (error code: 80650)")
            return fn(A, *a, **k)
        return wrapped

    monkeypatch.setattr(torch.linalg, "eigvalsh", flaky(real_vals))
    monkeypatch.setattr(torch.linalg, "eigh", flaky(real_vecs))
    vals = evidence._robust_eigh(M, vectors=False)
    assert torch.allclose(vals, exact, atol=1e-8 * float(M.diagonal().mean()))
    vecs = evidence._robust_eigh(M, vectors=True)
    assert torch.allclose(vecs @ torch.diag(vals) @ vecs.T, M, atol=1e-6)
    assert calls["n"] == 4  # one failure and one success each
    with pytest.raises(FloatingPointError, match="NaN"):
        evidence._robust_eigh(M * float("nan"), vectors=False)


def test_nan_eigenvectors_from_float32_lapack_fall_back_to_float64(monkeypatch):
    """Met on digits at 99 %: float32 eigh returned NaN eigenvectors *without raising*, and the
    Occam factor of a masked kron block became NaN.  The factor must notice and redo it in float64."""
    from bayesprune.bayes import evidence

    g = torch.Generator().manual_seed(1)
    X = torch.randn(12, 3, generator=g, dtype=torch.float64)
    M = X @ X.T
    real = torch.linalg.eigh

    class Result:
        def __init__(self, vectors):
            self.eigenvectors = vectors

    def nan_in_float32(A, *a, **k):
        out = real(A, *a, **k)
        return Result(torch.full_like(out.eigenvectors, float("nan"))) if A.dtype == torch.float32 else out

    monkeypatch.setattr(torch.linalg, "eigh", nan_in_float32)
    f = evidence._Factor(M, vector_dtype=torch.float32)
    assert torch.isfinite(f.vectors2).all()
    assert torch.allclose(f.vectors2, real(M).eigenvectors.square(), atol=1e-10)
    assert evidence._robust_eigh(torch.zeros(0, 0), vectors=False).shape == (0,)
