"""What pruning buys, measured: bytes on disk, weights kept, FLOPs and inference latency.

Shared by ``benchmarks/bench_payoff.py`` and notebook 08.  For each sparsity the trained
network is pruned one-shot (magnitude, layer by layer) and, separately, by whole hidden
neurons (:func:`~bayesprune.core.pruning.prune_neurons`), then timed three ways:

- ``dense``: the masked dense model (what training leaves: every zero is still multiplied);
- ``csr``: the same weights as ``torch.sparse`` CSR tensors (:func:`~bayesprune.core.sparse_models.to_csr`);
- ``shrunk``: the neuron-pruned network with its dead rows and columns removed
  (:func:`~bayesprune.core.sparse_models.shrink_fcn`), a smaller dense model.

Latencies are interleaved: each repetition times every (variant, sparsity, batch) once,
so a change in the machine's load hits all of them alike; :func:`latency_table` gives
median, min and max over repetitions.
"""

from __future__ import annotations

import copy
import gzip
import io
import math
import statistics
import time
from typing import Callable, Mapping, Optional, Sequence

import pandas as pd
import torch
from torch import nn

from ..core import export
from ..core.criteria import prune_magnitude, prune_neurons
from ..core.pruning import sparsity
from ..core.sparse_models import linear_flops, shrink_fcn, to_csr

VARIANTS = ("dense", "csr", "shrunk")


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _plain_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def pruned_pair(model: nn.Module, r: float) -> tuple[nn.Module, nn.Module]:
    """(magnitude-pruned copy, neuron-pruned copy) of ``model`` at ``r``; the output layer's neurons are kept."""
    mag, neu = copy.deepcopy(model).eval(), copy.deepcopy(model).eval()
    prune_magnitude(mag, r)
    prune_neurons(neu, r, skip_last=True)
    return mag, neu


def size_row(model: nn.Module) -> dict:
    """Bytes of the plain ``state_dict`` file, gzip'd, the sparse export (and gzip'd), weights and FLOPs."""
    plain = _plain_bytes(model)
    state = export.compress(model)
    sparse = state.to_bytes()
    weights = {k: v for k, v in model.state_dict().items() if k.endswith("weight")}
    row = {"sparsity": sparsity(model), "params_total": sum(v.numel() for v in model.state_dict().values()),
           "params_kept": sum(int((v != 0).sum()) for v in model.state_dict().values()),
           "weights_kept": sum(int((v != 0).sum()) for v in weights.values()),
           "dense_bytes": len(plain), "dense_gzip_bytes": len(gzip.compress(plain)),
           "sparse_bytes": len(sparse), "sparse_gzip_bytes": len(gzip.compress(sparse)),
           "encodings": sorted(set(state.encodings.values()))}
    for name in export.ENCODINGS:  # what each encoding alone would have cost
        row[f"sparse_{name}_only_bytes"] = len(export.compress(model, name).to_bytes())
    row.update(linear_flops(model))
    row["times_smaller"] = row["dense_bytes"] / row["sparse_bytes"]
    return row


def sizes(model: nn.Module, sparsities: Sequence[float], evaluate: Optional[Callable[[nn.Module], float]] = None
          ) -> pd.DataFrame:
    """One row per (pruning, sparsity): ``magnitude`` as exported, ``neuron`` as shrunk (plain file of the small FCN)."""
    rows = []
    for r in sparsities:
        mag, neu = pruned_pair(model, r)
        small = shrink_fcn(neu)
        rows.append({"pruning": "magnitude", "target": r, **size_row(mag),
                     **({"accuracy": evaluate(mag)} if evaluate else {})})
        plain = _plain_bytes(small)
        rows.append({"pruning": "neuron", "target": r, "sparsity": sparsity(neu),
                     "params_total": sum(p.numel() for p in neu.parameters()),
                     "params_kept": sum(p.numel() for p in small.parameters()),
                     "weights_kept": sum(m.weight.numel() for m in small.modules() if isinstance(m, nn.Linear)),
                     "dense_bytes": len(_plain_bytes(neu)), "shrunk_bytes": len(plain),
                     "hidden": [m.out_features for m in small.modules() if isinstance(m, nn.Linear)][:-1],
                     **linear_flops(small), **({"accuracy": evaluate(neu)} if evaluate else {})})
    return pd.DataFrame(rows)


def timing_models(model: nn.Module, sparsities: Sequence[float], device: torch.device | str = "cpu"
                  ) -> dict[tuple[str, float], nn.Module]:
    """``{(variant, sparsity): model}`` for every variant in :data:`VARIANTS`, on ``device``, in eval mode."""
    out = {}
    for r in sparsities:
        mag, neu = pruned_pair(model, r)
        out[("dense", r)] = mag.to(device)
        out[("csr", r)] = to_csr(mag).to(device)
        out[("shrunk", r)] = shrink_fcn(neu).to(device)
    return out


def time_per_call(model: nn.Module, x: torch.Tensor, min_seconds: float = 0.02, min_calls: int = 5) -> float:
    """Seconds of one forward pass: the median of single calls timed one by one for ``min_seconds``.

    The median of many single calls, not their mean: on a shared machine a call that loses
    its core now and then would otherwise carry the whole wait into the measurement.
    """
    device = x.device
    times = []
    with torch.inference_mode():
        model(x)  # warm
        _sync(device)
        t_end = time.perf_counter() + min_seconds
        while len(times) < min_calls or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_latency(models: Mapping[tuple[str, float], nn.Module], inputs: Mapping[int, torch.Tensor],
                        reps: int = 5, min_seconds: float = 0.02,
                        on_rep: Optional[Callable[[int], dict]] = None) -> pd.DataFrame:
    """One row per (rep, variant, sparsity, batch): every cell timed once per repetition.

    ``on_rep(rep)`` runs before each repetition; its dict (a load average, a matmul rate) is added to that
    repetition's rows.
    """
    rows = []
    for rep in range(reps):
        extra = on_rep(rep) if on_rep else {}
        for (variant, r), m in models.items():
            for batch, x in inputs.items():
                rows.append({"rep": rep, "variant": variant, "target": r, "batch": batch,
                             "seconds": time_per_call(m, x, min_seconds), **extra})
    return pd.DataFrame(rows)


def latency_table(latency: pd.DataFrame) -> pd.DataFrame:
    """Median, min and max seconds per call over repetitions, per (variant, target, batch)."""
    g = latency.groupby(["variant", "target", "batch"])["seconds"]
    return g.agg(median="median", min="min", max="max", reps="size").reset_index()


def crossover(table: pd.DataFrame, faster: str = "csr", than: str = "dense", statistic: str = "median"
              ) -> dict[int, Optional[float]]:
    """Per batch size, the lowest sparsity from which ``faster``'s ``statistic`` (a column of :func:`latency_table`)
    beats ``than``'s at every higher sparsity.

    ``None`` where it never does (at the sparsities measured).
    """
    out: dict[int, Optional[float]] = {}
    for batch, g in table.groupby("batch"):
        med = g.pivot(index="target", columns="variant", values=statistic).sort_index()
        wins = (med[faster] < med[than]).tolist()
        start = None
        for r, win in zip(med.index, wins):
            start = (start if start is not None else float(r)) if win else None
        out[int(batch)] = start
    return out


def matmul_gflops(n: int = 1024, device: torch.device | str = "cpu", seconds: float = 0.2) -> float:
    """The machine's dense matmul rate right now (best of ``seconds`` of n x n x n products), in GFLOP/s."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    best, t_end = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9
