"""Laplace-approximated model evidence: a true Bayes factor, Occam factor included.

The paper's "Bayes factor" (:mod:`bayesprune.bayes.posterior`) is a ratio of posterior *densities*
at two weight settings.  A Bayes factor proper is a ratio of evidences, Z = p(D | model),
and the Laplace approximation at the weights w* gives each one:

    log Z ~= log p(D|w*) + log p(w*) + (d/2) log 2pi - 1/2 log det(H + delta I)
              \\_ fit _/   \\_ prior _/   \\________ Occam factor (log) ________/

H is the generalised Gauss-Newton (GGN) matrix of the negative log-likelihood summed over
the data, delta the precision of the isotropic prior N(mu, 1/delta) and d the number of
parameters.  The three terms are kept apart in :class:`EvidenceTerms`, for teaching.

**A pruned model has fewer parameters.**  A pruned weight is held at exactly 0: it is not a
parameter of the pruned model, so it is in neither d, nor the prior, nor the determinant.
Biases and kept weights are parameters, all with the prior N(mu, 1/delta).  With a mask,
H_S + delta I is the posterior precision restricted to the kept set S.

**Fit once, ask many times.**  :meth:`Curvature.fit` computes H once at the model's current
weights, with laplace-torch (``Laplace(model, likelihood, subset_of_weights="all",
hessian_structure=...)``) and the ASDL backend: the exact GGN, Kronecker-factored (KFAC) or
diagonal, on CPU 1.3-1.8x faster than curvlinops' KFAC, and the only backend that handles any
``nn.Module`` (BackPACK needs ``nn.Sequential``; curvlinops' diagonal GGN forms per-example
Jacobians and took minutes on the MNIST FCN).  Everything after that is cheap linear algebra
in float64 on eigendecompositions, so the evidence for any prior precision, prior mean or
mask, and the empirical-Bayes delta, costs milliseconds to a few tenths of a second.
The curvature is taken on m examples (optionally on the first k of them); H and
log p(D|w*) are scaled by n_total/k and n_total/m: unbiased estimates of the full-data sums.

**Masks, per structure** (the log-determinant of H_S + delta I):

* ``diag``: drop the pruned entries; exact for the diagonal approximation.
* ``full``: the exact principal submatrix (small networks only; see :data:`MAX_FULL_PARAMS`).
* ``kron``: per layer M = G (x) A + delta I (G: output factor, A: input factor; biases are
  their own dense block, masked exactly).  M_SS is not Kronecker, so for a partly pruned
  layer we use the smaller of two upper bounds, both cheap from the eigendecompositions
  G = Q_G diag(g) Q_G^T, A = Q_A diag(a) Q_A^T:

  1. Schur complement + Hadamard:  log det M_SS = log det M + log det (M^-1)_PP
     <= log det M + sum_{p in P} log (M^-1)_pp,  with the diagonal of M^-1 equal to
     (Q_G o Q_G) [1 / (g a^T + delta)] (Q_A o Q_A)^T;  exact when one weight is pruned.
  2. Hadamard on the kept set:  log det M_SS <= sum_{s in S} log M_ss = sum log(G_oo A_ii + delta);
     exact when one weight is kept.

  Both are exact for a diagonal M and for an empty or a full mask, and the minimum is an
  upper bound, so the kron Occam factor of a pruned model is never *over*-estimated: the
  approximation can only make the Bayes factor more conservative about pruning.  Bound 1
  is tight at low sparsity, bound 2 at high sparsity.  Measured against the exact log det
  of the masked Kronecker matrix (a 1990-parameter digits FCN, ``benchmarks/bench_evidence.py``):
  +14 / +87 / +24 / +0 nats at 25 / 50 / 90 / 99 % magnitude sparsity, +20 / +77 / +7 / +0
  for random masks, at most 4 % of log det M_SS (the log evidence is off by half that).
  This is small beside KFAC's own error: on the same net and masks the Kronecker log det
  exceeds the exact GGN's by 30-580 nats at 25-90 % (the diagonal's by 30-2000).
  Grouping the kept (or pruned) weights by row or column (Fischer's inequality) roughly
  halves the masking gap, but costs O(GFLOP) per evaluation on a 784x300 layer; not used.
  Biases, and any block kept dense, are masked exactly (principal submatrix).

**Prior precision.**  :meth:`Curvature.fit_prior_precision` maximises log Z over delta with
everything else fixed (type-II maximum likelihood).  Its stationarity condition is MacKay's
delta = gamma(delta) / |w - mu|^2 with gamma = sum e / (e + delta), the effective number of
parameters; we solve it by a bracketed root search on log delta (Illinois), which takes a
few dozen evaluations of a sum over eigenvalues.

**What one pruned weight is worth.**  Under the diagonal approximation, removing a weight w
with curvature h changes log Z by 1/2 log(1 + h/delta) + delta (w - mu)^2 / 2 through its own
Occam and prior terms (for w = 0 and mu = 0: +1/2 log(1 + h/delta), always a gain, growing
like 1/2 log n), plus the change of fit, about -g w - h w^2 / 2 (g = d log p(D|w) / dw).  At
a mode (g = delta (w - mu), mu = 0) the sum is 1/2 log(1 + h/delta) - (h + delta) w^2 / 2: a
Wald-type rule, "prune iff w^2 (h + delta) < log(1 + h/delta)".
The curvature of the *other* weights is refitted on the pruned net, and it moves: a pruned
net is less confident, its GGN larger, its Occam factor smaller; for large weights this term
dominates (see the ``occam`` check in ``benchmarks/bench_evidence.py``).

**Caveats.**  The formula assumes w* is a mode of the posterior.  A freshly pruned network
is not at the mode of the pruned model (its kept weights have not re-adapted), so its
evidence is evaluated where the fit term is lower than at that mode.  The GGN is the
Hessian only at a mode of a well-fitted model; away from it the Occam factor is an
approximation too.  ``hessian="ef"`` (empirical Fisher) is cheaper but a poor Hessian
(Kunstner et al. 2019); ``"ggn-mc"`` is an unbiased one-sample Monte Carlo GGN (seeded), but not a
precise one: on the digits FCN its seed alone moves a pruning log BF by 4-59 nats (std over 3 seeds,
25-90 %, ``benchmarks/bench_curvature.py``), while ``"ggn"`` (exact expectation) is deterministic.

Numerics: weights, curvature, eigenvalues, log-determinants and sums are float64; only the
eigenvectors that masked Kronecker blocks need are computed in the precision the curvature was
accumulated in (float32 for a float32 model: half the time, errors ~1e-7 nats per pruned
weight).  The computation is deterministic on CPU (identical inputs give bit-identical results).  Fitting leaves the
model as it was: training mode, ``.grad``, the global RNG and its attributes are restored.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..core.pruning import Mask
from .posterior import LOG_2PI

STRUCTURES = ("kron", "diag", "full")
LIKELIHOODS = ("classification", "regression")
HESSIANS = ("ggn", "ggn-mc", "ef")
#: ``structure="full"`` keeps a dense d x d matrix and eigendecomposes it: 3000 parameters
#: is 72 MB and about a second; beyond that use "kron" or "diag".
MAX_FULL_PARAMS = 3000
#: The interval in which :meth:`Curvature.fit_prior_precision` searches.
PRIOR_PRECISION_BOUNDS = (1e-8, 1e8)


@dataclass(frozen=True)
class EvidenceTerms:
    """The Laplace log evidence, its three terms kept apart (all float64 sums)."""

    log_likelihood: float  # log p(D|w*), summed, scaled to n_total
    log_prior: float  # sum over the model's parameters (kept weights + biases) of log N(w; mu, 1/delta)
    log_occam: float  # (d/2) log 2pi - 1/2 log det(H_S + delta I) over the kept parameters S
    n_params: int  # d
    prior_precision: float  # delta

    @property
    def log_evidence(self) -> float:
        return self.log_likelihood + self.log_prior + self.log_occam

    @property
    def log_penalty(self) -> float:
        """The prior's exponent, -delta/2 |w - mu|^2: ``log_prior`` without its normaliser."""
        return self.log_prior - 0.5 * self.n_params * math.log(self.prior_precision / (2.0 * math.pi))

    @property
    def log_complexity(self) -> float:
        """-1/2 log det(I + H/delta) <= 0: MacKay's Occam factor, with the prior's normaliser folded in.

        log_evidence = log_likelihood + log_penalty + log_complexity.  Removing a weight of
        curvature h (diagonal view) raises it by 1/2 log(1 + h/delta): pruning is rewarded
        exactly for the parameters the data had pinned down.
        """
        return self.log_occam + 0.5 * self.n_params * math.log(self.prior_precision / (2.0 * math.pi))


# ------------------------------------------------------------------ log-determinants
#: Relative diagonal jitters tried, in order, when LAPACK's symmetric eigensolver does not converge.
EIGH_JITTERS = (0.0, 1e-12, 1e-10, 1e-8, 1e-6)


def _robust_eigh(M: torch.Tensor, vectors: bool) -> torch.Tensor:
    """Eigenvalues (ascending) or eigenvectors of a symmetric PSD matrix, in float64.

    LAPACK's ``syevd`` can fail to converge on a curvature factor with many (nearly) repeated
    eigenvalues, which is what a heavily pruned layer gives (runs on digits at 99 % met it), or,
    in float32, return NaN eigenvectors without raising.
    A jitter of 1e-12 to 1e-6 of the mean eigenvalue on the diagonal breaks the ties while
    changing each eigenvalue by that much at most (subtracted again from the values), far below
    the nats a Bayes factor is read in.  A matrix with NaN or inf raises at once: no jitter fixes it.
    """
    M = M.double()
    if M.numel() == 0:  # a fully pruned block: no eigenvalues
        return torch.zeros((0, 0) if vectors else (0,), dtype=M.dtype, device=M.device)
    if not torch.isfinite(M).all():
        raise FloatingPointError("a Laplace curvature factor holds NaN or inf values (the network diverged?)")
    scale = float(M.diagonal().abs().mean()) or 1.0
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    last: Optional[Exception] = None
    for jitter in EIGH_JITTERS:
        try:
            A = M + (jitter * scale) * eye if jitter else M
            out = torch.linalg.eigh(A).eigenvectors if vectors else torch.linalg.eigvalsh(A) - jitter * scale
        except torch.linalg.LinAlgError as exc:
            last = exc
            continue
        if torch.isfinite(out).all():  # LAPACK has also been seen to return NaN vectors without raising
            return out
        last = torch.linalg.LinAlgError(f"the symmetric eigensolver returned NaN (relative jitter {jitter:g})")
    raise last  # type: ignore[misc]


class _Factor:
    """A symmetric PSD matrix (float64) with its spectrum computed lazily and once.

    Eigenvalues come from ``eigvalsh`` in float64 (a third of the cost of ``eigh``) and are the
    only ones ever used, so a value never depends on whether eigenvectors were asked for.  The
    squared eigenvectors are needed only where a mask cuts through a Kronecker block, as weights
    of a float64 sum; they are computed in the precision the curvature was accumulated in
    (``vector_dtype``: float32 for a float32 model, twice as fast, and no less accurate than
    the factor itself).
    """

    def __init__(self, M: torch.Tensor, vector_dtype: torch.dtype = torch.float64):
        self.M = 0.5 * (M + M.T)
        self.vector_dtype = vector_dtype
        self._values: Optional[torch.Tensor] = None
        self._vectors2: Optional[torch.Tensor] = None

    @property
    def values(self) -> torch.Tensor:
        if self._values is None:
            self._values = _robust_eigh(self.M, vectors=False).clamp_min(0.0)  # PSD: drop rounding noise
        return self._values

    @property
    def vectors2(self) -> torch.Tensor:
        if self._vectors2 is None:
            try:
                vectors = torch.linalg.eigh(self.M.to(self.vector_dtype)).eigenvectors
            except torch.linalg.LinAlgError:  # float32 LAPACK can fail on many repeated (e.g. zero) eigenvalues
                vectors = None
            if vectors is None or not torch.isfinite(vectors).all():  # ... or return NaN without a word
                vectors = _robust_eigh(self.M.double(), vectors=True)
            self._vectors2 = vectors.double().square()
        return self._vectors2


class _KronBlock:
    """One weight's M = G (x) A + delta I (G: output side, carries the data sum; A: input side)."""

    def __init__(self, G: _Factor, A: _Factor):
        self.G, self.A = G, A

    @property
    def diag(self) -> torch.Tensor:
        return torch.outer(self.G.M.diagonal(), self.A.M.diagonal()).clamp_min(0.0)

    def eigenvalues(self) -> torch.Tensor:
        return torch.outer(self.G.values, self.A.values).flatten()


class _DenseBlock:
    """A block kept as a dense matrix (biases under kron; the whole net under full)."""

    def __init__(self, H: _Factor):
        self.H = H

    def eigenvalues(self, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        if keep is None:
            return self.H.values
        idx = torch.nonzero(keep).flatten()
        if idx.numel() == 0:
            return self.H.M.new_zeros(0)
        return _robust_eigh(self.H.M[idx][:, idx], vectors=False).clamp_min(0.0)


class _MaskedKron:
    """log det of a partly pruned Kronecker block: the smaller of two upper bounds (module doc)."""

    def __init__(self, block: _KronBlock, keep: torch.Tensor):
        diag = block.diag
        self.keep = keep.reshape(diag.shape)
        self.pruned = ~self.keep
        self.kept_diag = diag[self.keep]
        self.g, self.a = block.G.values, block.A.values
        self.QG2, self.QA2 = block.G.vectors2, block.A.vectors2

    def _parts(self, delta: float) -> tuple[float, float, torch.Tensor, torch.Tensor]:
        E = torch.outer(self.g, self.a) + delta
        inv_diag = self.QG2 @ E.reciprocal() @ self.QA2.T  # diag of M^-1, entry (o, i)
        schur = float(E.log().sum() + inv_diag[self.pruned].log().sum())
        hadamard = float((self.kept_diag + delta).log().sum())
        return schur, hadamard, E, inv_diag

    def value(self, delta: float) -> float:
        schur, hadamard, _, _ = self._parts(delta)
        return min(schur, hadamard)

    def derivative(self, delta: float) -> float:
        """d/d delta of the active bound."""
        schur, hadamard, E, inv_diag = self._parts(delta)
        if hadamard <= schur:
            return float((self.kept_diag + delta).reciprocal().sum())
        d_inv = -(self.QG2 @ E.square().reciprocal() @ self.QA2.T)
        return float(E.reciprocal().sum() + (d_inv[self.pruned] / inv_diag[self.pruned]).sum())


class _LogDet:
    """log det(H_S + delta I) as a function of delta: exact eigenvalues plus bounded kron blocks."""

    def __init__(self, eigenvalues: list[torch.Tensor], masked: list[_MaskedKron]):
        self.e = torch.cat(eigenvalues) if eigenvalues else torch.zeros(0, dtype=torch.float64)
        self.masked = masked

    def value(self, delta: float) -> float:
        return float((self.e + delta).log().sum()) + sum(m.value(delta) for m in self.masked)

    def derivative(self, delta: float) -> float:
        return float((self.e + delta).reciprocal().sum()) + sum(m.derivative(delta) for m in self.masked)


# ------------------------------------------------------------------ helpers
def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is invalid: allowed {', '.join(allowed)}")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid: allowed an integer >= 1")
    return value


def _check_precision(prior_precision: object) -> float:
    ok = not isinstance(prior_precision, bool) and isinstance(prior_precision, (int, float))
    if not ok or not (math.isfinite(prior_precision) and prior_precision > 0):
        raise ValueError(f"prior_precision={prior_precision!r} is invalid: allowed a finite number > 0")
    return float(prior_precision)


def _check_mean(prior_mean: object) -> float:
    ok = not isinstance(prior_mean, bool) and isinstance(prior_mean, (int, float))
    if not ok or not math.isfinite(prior_mean):
        raise ValueError(f"prior_mean={prior_mean!r} is invalid: allowed a finite number")
    return float(prior_mean)


@torch.no_grad()
def _log_likelihood(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, likelihood: str, sigma_noise: float, batch_size: int
) -> float:
    """Summed log p(y | x, w) in float64: categorical, or Gaussian with noise std sigma_noise."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], batch_size):
        f = model(x[start : start + batch_size]).double()
        target = y[start : start + batch_size]
        if likelihood == "classification":
            total -= F.cross_entropy(f, target, reduction="sum").cpu()
        else:
            r2 = (f - target.double()).square().sum().cpu()
            total -= 0.5 * r2 / sigma_noise**2 + 0.5 * f.numel() * math.log(2 * math.pi * sigma_noise**2)
    return float(total)


class _Batches:
    """Consecutive slices of (x, y): what laplace-torch's fit reads from a DataLoader.

    A DataLoader over a TensorDataset indexes and re-stacks every example (4 % of a fit on MNIST);
    laplace-torch only iterates the batches and reads ``len(loader.dataset)``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.dataset = x  # len() = number of examples

    def __len__(self) -> int:
        return -(-self.x.shape[0] // self.batch_size)

    def __iter__(self):
        for start in range(0, self.x.shape[0], self.batch_size):
            yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]


def _laplace():
    """laplace-torch, imported on first use: it pulls in torchmetrics and torchvision (seconds)."""
    try:
        with warnings.catch_warnings():  # third-party import-time deprecation notices
            warnings.simplefilter("ignore")
            import laplace
            import laplace.baselaplace
            import laplace.curvature
    except ImportError as exc:
        raise ImportError(
            f"bayesprune.bayes.evidence needs laplace-torch ({exc}); install it: pip install 'bayesprune[laplace]'"
        ) from exc
    return laplace


def _laplace_backend(hessian: str) -> tuple[type, dict]:
    curvature = _laplace().curvature
    return {"ggn": (curvature.AsdlGGN, {}), "ggn-mc": (curvature.AsdlGGN, {"stochastic": True}),
            "ef": (curvature.AsdlEF, {})}[hessian]


# ------------------------------------------------------------------ the curvature
class Curvature:
    """The likelihood's curvature at the model's current weights, fitted once; evidence for any prior / mask.

    Build it with :meth:`fit`.  It holds float64 copies of the weights and the curvature,
    not the model, so the model may change afterwards.
    """

    def __init__(
        self,
        *,
        structure: str,
        likelihood: str,
        names: list[str],
        shapes: list[tuple[int, ...]],
        weights: torch.Tensor,
        log_likelihood: float,
        n_data: int,
        n_curvature: int,
        n_total: int,
        diag: Optional[torch.Tensor] = None,
        blocks: Optional[list[Union[_KronBlock, _DenseBlock]]] = None,
    ):
        self.structure = structure
        self.likelihood = likelihood
        self.names = names
        self.shapes = shapes
        self.weights = weights
        self.log_likelihood = log_likelihood
        self.n_data = n_data
        self.n_curvature = n_curvature
        self.n_total = n_total
        self._diag = diag
        self._blocks = blocks
        sizes = [math.prod(s) for s in shapes]
        self._slices = {}
        start = 0
        for name, size in zip(names, sizes):
            self._slices[name] = slice(start, start + size)
            start += size
        self.n_params = start

    # -------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        n_total: Optional[int] = None,
        structure: str = "kron",
        likelihood: str = "classification",
        sigma_noise: float = 1.0,
        hessian: str = "ggn",
        curvature_samples: Optional[int] = None,
        batch_size: int = 1024,
        seed: int = 0,
        reuse: Optional["Curvature"] = None,
    ) -> "Curvature":
        """Fit the curvature of the summed negative log-likelihood at the model's weights.

        ``x, y``: the m examples (targets ``(m, outputs)`` for regression); ``n_total``: the
        size of the full data set the sums are scaled to (default m).  ``curvature_samples=k``
        takes the curvature on the first k examples only (the log-likelihood still uses all m):
        the curvature costs ~10x a forward pass per example, the likelihood 1x.
        ``hessian``: "ggn" (exact GGN = Fisher), "ggn-mc" (one-sample MC GGN, seeded by ``seed``)
        or "ef" (empirical Fisher).  Every trainable parameter is a parameter of the evidence.
        ``reuse``: a curvature fitted earlier (the unpruned net's, when fitting the pruned one):
        Kronecker factors bit-identical to one of its own share its eigendecomposition.  The
        first layer's input factor is the data's covariance, the same before and after pruning,
        and its eigendecomposition is the largest (784 x 784 on MNIST).  Results do not change.
        """
        _choice("structure", structure, STRUCTURES)
        _choice("likelihood", likelihood, LIKELIHOODS)
        _choice("hessian", hessian, HESSIANS)
        _positive_int("batch_size", batch_size)
        if reuse is not None and not isinstance(reuse, Curvature):
            raise ValueError(f"reuse={type(reuse).__name__} is invalid: allowed None or a Curvature")
        if not (isinstance(sigma_noise, (int, float)) and math.isfinite(sigma_noise) and sigma_noise > 0):
            raise ValueError(f"sigma_noise={sigma_noise!r} is invalid: allowed a finite number > 0")
        if likelihood == "classification" and sigma_noise != 1.0:
            raise ValueError(f"sigma_noise={sigma_noise!r} is invalid for classification: allowed only 1.0")
        m = int(x.shape[0])
        if m < 1 or int(y.shape[0]) != m:
            raise ValueError(f"x and y must hold the same number (>= 1) of examples, got {m} and {int(y.shape[0])}")
        n_total = m if n_total is None else _positive_int("n_total", n_total)
        k = m if curvature_samples is None else min(_positive_int("curvature_samples", curvature_samples), m)
        params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (requires_grad=True)")
        n_params = sum(p.numel() for _, p in params)
        if structure == "full" and n_params > MAX_FULL_PARAMS:
            raise ValueError(
                f"structure='full' is invalid for this model: its {n_params} parameters need a dense "
                f"{n_params} x {n_params} matrix; allowed up to MAX_FULL_PARAMS={MAX_FULL_PARAMS} "
                f"parameters (use structure='kron' or 'diag')"
            )
        device = params[0][1].device
        x, y = x.to(device), y.to(device)
        if likelihood == "regression":
            with torch.no_grad():
                out_shape = tuple(model(x[:1]).shape)
            if tuple(y[:1].shape) != out_shape:
                raise ValueError(
                    f"y has examples of shape {tuple(y.shape[1:])} but the model outputs "
                    f"{out_shape[1:]}: for likelihood='regression' give y as (m, outputs)"
                )

        la = cls._laplace_fit(model, x[:k], y[:k], structure, likelihood, sigma_noise, hessian, batch_size, seed)
        scale = float(la._H_factor) * n_total / k  # 1/sigma^2, and the subset -> full-data scaling
        was_training = model.training
        model.eval()
        try:
            log_lik = _log_likelihood(model, x, y, likelihood, float(sigma_noise), batch_size) * (n_total / m)
        finally:
            model.train(was_training)

        weights = torch.cat([p.detach().flatten().double().cpu() for _, p in params])
        names = [name for name, _ in params]
        shapes = [tuple(p.shape) for _, p in params]
        common = dict(structure=structure, likelihood=likelihood, names=names, shapes=shapes, weights=weights,
                      log_likelihood=log_lik, n_data=m, n_curvature=k, n_total=n_total)
        if structure == "diag":
            return cls(diag=la.H.detach().double().cpu().clamp_min(0.0) * scale, **common)
        if structure == "full":
            H = la.H.detach().double().cpu() * scale
            return cls(blocks=[_DenseBlock(_Factor(H))], **common)
        return cls(blocks=cls._kron_blocks(la.H_facs.kfacs, params, scale, reuse), **common)

    @staticmethod
    def _laplace_fit(model, x, y, structure, likelihood, sigma_noise, hessian, batch_size, seed):
        """laplace-torch's fit, leaving the model, its gradients and the global RNG as they were."""
        lib = _laplace()
        Laplace, KronLaplace, ParametricLaplace = lib.Laplace, lib.KronLaplace, lib.baselaplace.ParametricLaplace
        backend, backend_kwargs = _laplace_backend(hessian)
        was_training = model.training
        grads = [p.grad for p in model.parameters()]
        had_output_size = hasattr(model, "output_size")
        had_fisher = {id(mod) for mod in model.modules() if hasattr(mod, "fisher")}
        try:
            with torch.random.fork_rng(devices=[]), torch.enable_grad(), warnings.catch_warnings():
                # ASDL's module hooks trigger torch's "non-full backward hook" FutureWarning
                warnings.filterwarnings("ignore", message=".*non-full backward hook", category=FutureWarning)
                torch.manual_seed(seed)
                la = Laplace(model, likelihood, subset_of_weights="all", hessian_structure=structure,
                             sigma_noise=float(sigma_noise), backend=backend, backend_kwargs=backend_kwargs)
                loader = _Batches(x, y, batch_size)
                if isinstance(la, KronLaplace):
                    # KronLaplace.fit would also eigendecompose the factors in the model's dtype;
                    # we do that once, in float64, so accumulate the factors only (la.H is a Kron).
                    ParametricLaplace.fit(la, loader)
                    la.H_facs = la.H
                else:
                    la.fit(loader)
        finally:
            model.train(was_training)
            for p, g in zip(model.parameters(), grads):
                p.grad = g
            if not had_output_size and hasattr(model, "output_size"):
                delattr(model, "output_size")
            for mod in model.modules():  # ASDL leaves its statistics on the modules
                if id(mod) not in had_fisher and hasattr(mod, "fisher"):
                    delattr(mod, "fisher")
        return la

    @staticmethod
    def _kron_blocks(kfacs, params, scale: float, reuse: Optional["Curvature"]) -> list[Union[_KronBlock, _DenseBlock]]:
        """laplace-torch's Kronecker factors -> one block per parameter tensor, in float64."""
        known = [f for b in (reuse._blocks if reuse is not None and reuse.structure == "kron" else [])
                 for f in ((b.G, b.A) if isinstance(b, _KronBlock) else (b.H,))]

        def factor(t: torch.Tensor, factor_scale: float = 1.0) -> _Factor:
            vector_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
            t = t.detach().double().cpu()
            f = _Factor((torch.diag(t) if t.ndim == 1 else t) * factor_scale, vector_dtype)
            for old in known:  # the same matrix: share its (lazy) eigendecomposition
                if old.M.shape == f.M.shape and torch.equal(old.M, f.M):
                    return old
            return f

        if len(kfacs) != len(params):
            raise RuntimeError(f"laplace-torch returned {len(kfacs)} Kronecker blocks for {len(params)} parameters")
        blocks: list[Union[_KronBlock, _DenseBlock]] = []
        for factors, (name, p) in zip(kfacs, params):
            if len(factors) == 2:  # weight: G (output side, with the data sum) (x) A (input side)
                G, A = factor(factors[0], scale), factor(factors[1])
                if (G.M.shape[0], G.M.shape[0] * A.M.shape[0]) != (p.shape[0], p.numel()):
                    raise RuntimeError(f"Kronecker factors {tuple(G.M.shape)}, {tuple(A.M.shape)} do not fit {name} {tuple(p.shape)}")
                blocks.append(_KronBlock(G, A))
            else:  # bias (or a 1-element weight): one dense block
                H = factor(factors[0], scale)
                if H.M.shape[0] != p.numel():
                    raise RuntimeError(f"curvature block {tuple(H.M.shape)} does not fit {name} {tuple(p.shape)}")
                blocks.append(_DenseBlock(H))
        return blocks

    # -------------------------------------------------------------- masks
    def _keep(self, mask: Optional[Mask]) -> dict[str, torch.Tensor]:
        """{name: flat bool keep-vector} for the masked parameters; validates the mask."""
        if mask is None:
            return {}
        if not isinstance(mask, Mapping):
            raise ValueError(f"mask={type(mask).__name__} is invalid: allowed None or a mapping {{parameter name: bool tensor}}")
        out: dict[str, torch.Tensor] = {}
        for name, m in mask.items():
            if name not in self._slices:
                raise ValueError(
                    f"mask names {name!r}, which is not a trainable parameter of this model: "
                    f"allowed {', '.join(self.names)}"
                )
            shape = self.shapes[self.names.index(name)]
            if not isinstance(m, torch.Tensor) or tuple(m.shape) != shape:
                got = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(f"mask[{name!r}] has shape {got}: allowed a tensor of the parameter's shape {shape}")
            keep = m.detach().flatten().cpu() != 0
            w = self.weights[self._slices[name]]
            bad = (~keep) & (w != 0)
            if bool(bad.any()):
                raise ValueError(
                    f"mask[{name!r}] prunes {int(bad.sum())} weights that are not zero in the model "
                    f"(largest |w| = {float(w[bad].abs().max()):.3g}): allowed only weights that are exactly 0. "
                    f"Apply the mask (bp.apply_mask) and fit the curvature on the pruned model"
                )
            if not bool(keep.all()):
                out[name] = keep
        return out

    def _keep_vector(self, keep: dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        if not keep:
            return None
        vec = torch.ones(self.n_params, dtype=torch.bool)
        for name, k in keep.items():
            vec[self._slices[name]] = k
        return vec

    def _logdet(self, keep: dict[str, torch.Tensor]) -> _LogDet:
        if self.structure == "diag":
            vec = self._keep_vector(keep)
            return _LogDet([self._diag if vec is None else self._diag[vec]], [])
        if self.structure == "full":
            return _LogDet([self._blocks[0].eigenvalues(self._keep_vector(keep))], [])
        eig: list[torch.Tensor] = []
        masked: list[_MaskedKron] = []
        for name, block in zip(self.names, self._blocks):
            k = keep.get(name)
            if isinstance(block, _DenseBlock):
                eig.append(block.eigenvalues(k))
            elif k is None:
                eig.append(block.eigenvalues())
            elif bool(k.any()):  # a fully pruned layer contributes log det of a 0x0 matrix = 0
                masked.append(_MaskedKron(block, k))
        return _LogDet(eig, masked)

    def _count_and_scatter(self, keep: dict[str, torch.Tensor], prior_mean: float) -> tuple[int, float]:
        vec = self._keep_vector(keep)
        w = self.weights if vec is None else self.weights[vec]
        return int(w.numel()), float((w - prior_mean).square().sum())

    # -------------------------------------------------------------- the posterior
    def posterior_variance(self, prior_precision: float) -> dict[str, torch.Tensor]:
        """The diagonal of the Laplace posterior covariance, Sigma = (H + delta I)^-1, per parameter tensor.

        ``diag``: 1 / (h + delta), exact for that approximation.  ``full``: the diagonal of the
        dense inverse.  ``kron``: per layer, the diagonal of (G (x) A + delta I)^-1 from the two
        eigendecompositions, (Q_G o Q_G) [1 / (g a^T + delta)] (Q_A o Q_A)^T (the same sum the
        Schur bound uses); a dense block (a bias) as under ``full``.  Every trainable parameter
        is a parameter here, pruned ones included (they sit at 0).  float64, shaped as the parameter.
        """
        delta = _check_precision(prior_precision)
        if self.structure == "diag":
            flat = (self._diag + delta).reciprocal()
        else:
            parts = []
            for block in self._blocks:
                if isinstance(block, _KronBlock):
                    E = torch.outer(block.G.values, block.A.values) + delta
                    parts.append((block.G.vectors2 @ E.reciprocal() @ block.A.vectors2.T).flatten())
                else:
                    parts.append(block.H.vectors2 @ (block.H.values + delta).reciprocal())
            flat = torch.cat(parts)
        return {name: flat[self._slices[name]].reshape(shape) for name, shape in zip(self.names, self.shapes)}

    # -------------------------------------------------------------- evidence
    def log_evidence(self, prior_precision: float, prior_mean: float = 0.0, mask: Optional[Mask] = None) -> EvidenceTerms:
        """log Z of the model whose parameters are the kept entries of ``mask`` (None: all).

        ``mask``: ``{parameter name: bool tensor}``, True = keep (a :class:`bayesprune.Mask`);
        parameters it does not name are kept whole; pruned entries must be exactly 0.
        """
        delta = _check_precision(prior_precision)
        mu = _check_mean(prior_mean)
        keep = self._keep(mask)
        d, scatter = self._count_and_scatter(keep, mu)
        logdet = self._logdet(keep).value(delta)
        return EvidenceTerms(
            log_likelihood=self.log_likelihood,
            log_prior=-0.5 * d * LOG_2PI + 0.5 * d * math.log(delta) - 0.5 * delta * scatter,
            log_occam=0.5 * d * LOG_2PI - 0.5 * logdet,
            n_params=d,
            prior_precision=delta,
        )

    def fit_prior_precision(
        self,
        prior_mean: float = 0.0,
        mask: Optional[Mask] = None,
        bounds: tuple[float, float] = PRIOR_PRECISION_BOUNDS,
    ) -> float:
        """Empirical Bayes: the delta in ``bounds`` that maximises log Z (with this mask and prior mean).

        Solves d log Z / d log delta = (d - delta |w - mu|^2 - delta d/d delta log det) / 2 = 0
        by a bracketed root search on log delta.  Where the maximum lies outside ``bounds``,
        returns the bound and warns.
        """
        mu = _check_mean(prior_mean)
        try:
            lo, hi = (_check_precision(b) for b in bounds)
            if not lo < hi:
                raise ValueError
        except (ValueError, TypeError):
            raise ValueError(f"bounds={bounds!r} is invalid: allowed (low, high) with 0 < low < high, finite") from None
        keep = self._keep(mask)
        d, scatter = self._count_and_scatter(keep, mu)
        if d == 0:
            raise ValueError("mask prunes every parameter: the evidence does not depend on prior_precision")
        logdet = self._logdet(keep)

        def slope(t: float) -> float:  # 2 d log Z / d log delta
            delta = math.exp(t)
            return d - delta * scatter - delta * logdet.derivative(delta)

        a, b = math.log(lo), math.log(hi)
        fa, fb = slope(a), slope(b)
        if fa <= 0 or fb >= 0:
            edge = lo if fa <= 0 else hi
            warnings.warn(f"log Z is maximised at or beyond the bound prior_precision={edge:g}; returning the bound",
                          RuntimeWarning, stacklevel=2)
            return edge
        side = 0
        for _ in range(200):  # Illinois: regula falsi that halves a stale end
            c = b - fb * (b - a) / (fb - fa)
            fc = slope(c)
            if fc == 0.0:
                a = b = c
                break
            if fc < 0:
                b, fb = c, fc
                if side == -1:
                    fa *= 0.5
                side = -1
            else:
                a, fa = c, fc
                if side == 1:
                    fb *= 0.5
                side = 1
            if b - a < 1e-12:
                break
        return math.exp(0.5 * (a + b))
