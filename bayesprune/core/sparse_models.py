"""What a pruned network can run as: sparse CSR kernels, or a physically smaller dense network.

A masked dense model does all of its multiply-adds, zeros included, so pruning alone
makes nothing faster.  Two ways to spend the zeros:

- :func:`to_csr`: every ``Linear`` weight as a ``torch.sparse`` CSR tensor, so the
  matmul touches only the kept weights; the kernels are slower per FLOP than dense BLAS,
  so this pays only at high sparsity (``benchmarks/bench_payoff.py`` measures where).
- :func:`shrink_fcn`: neurons whose incoming weights are all zero are removed (their
  row, and the matching column of the next layer), leaving a smaller dense FCN.  Such a
  neuron still outputs relu(bias), a constant, which is folded into the next layer's
  bias, so the outputs are those of the masked model up to float rounding (the order of
  the additions changes), not bit for bit.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .models import FCN


class CSRLinear(nn.Module):
    """``nn.Linear`` whose weight is a CSR tensor; y = x W^T + b through the sparse kernel."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with warnings.catch_warnings():  # torch calls CSR support "beta" each time; we test what we use
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            self.weight = w.to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # W @ x^T: the CSR-times-dense kernel.  F.linear(x, W_csr) also works, but not under
        # torch.inference_mode() in this torch, and was slower here.
        y = (self.weight @ x.t()).t()
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.weight.values().numel()}"


def to_csr(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``Linear`` replaced by a :class:`CSRLinear` (for inference only)."""
    out = copy.deepcopy(model).eval()
    for module in list(out.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, CSRLinear(child))
    return out


@torch.no_grad()
def shrink_fcn(model: FCN) -> FCN:
    """A smaller dense :class:`~bayesprune.core.models.FCN`: hidden neurons with no incoming weight removed.

    The output layer keeps every row (each is a class).  Inputs are never removed, so the
    smaller network takes the same images.
    """
    if not isinstance(model, FCN):
        raise TypeError(f"shrink_fcn takes a bayesprune FCN, not {type(model).__name__}: "
                        "removing CNN filters is not implemented")
    names = model.hidden_names + [model.out_name]
    weights = [getattr(model, n).weight.detach().clone() for n in names]
    biases = [getattr(model, n).bias.detach().clone() for n in names]
    for i in range(len(names) - 1):
        dead = ~(weights[i] != 0).any(dim=1)
        # a dead neuron outputs relu(bias) for every input: move that constant into the next bias
        biases[i + 1] += weights[i + 1][:, dead] @ torch.relu(biases[i][dead])
        weights[i], biases[i] = weights[i][~dead], biases[i][~dead]
        weights[i + 1] = weights[i + 1][:, ~dead]
    small = FCN((model.fc1.in_features,), weights[-1].shape[0], [w.shape[0] for w in weights[:-1]])
    for n, w, b in zip(names, weights, biases):
        getattr(small, n).weight.copy_(w)
        getattr(small, n).bias.copy_(b)
    return small.to(model.fc1.weight.device).eval()


def linear_flops(model: nn.Module) -> dict[str, int]:
    """FLOPs per sample of the ``Linear`` layers' matmuls: 2 per multiply-add, dense and counting kept weights only.

    Biases and activations are left out (a few hundred FLOPs for the FCN); convolutions are
    not counted (their cost depends on the image size).
    """
    dense = sparse = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            w = module.weight.detach()
            dense += 2 * w.numel()
            sparse += 2 * int((w != 0).sum())
        elif isinstance(module, CSRLinear):
            dense += 2 * module.in_features * module.out_features
            sparse += 2 * int((module.weight.values() != 0).sum())
    return {"dense_flops": dense, "sparse_flops": sparse}
