"""Lottery tickets (Frankle & Carbin): keep a pruned network's mask, rewind its weights (notebook 06).

After training and magnitude pruning, the surviving connections are retrained
from (a) their original initial values -- the lottery ticket -- (b) a fresh
random initialisation, or (c) their trained values (fine-tuning).  The mask is
held through retraining in every case.
"""

from __future__ import annotations

import copy
from typing import Literal, Optional

from torch import nn

from ..core.config import RunConfig
from ..core.data import TensorDataset
from ..core.models import initial_model
from ..core.pruning import Mask, apply_mask, sparsity
from ..engine.training import evaluate, retrain

Start = Literal["rewind", "reinit", "finetune"]


__all__ = ["Start", "initial_model", "retrain_ticket", "ticket"]  # initial_model: the core builder, re-exported


def ticket(
    trained: nn.Module,
    mask: Mask,
    start: Start,
    init: Optional[nn.Module] = None,
    cfg: Optional[RunConfig] = None,
    data: Optional[TensorDataset] = None,
    reinit_seed: int = 12345,
) -> nn.Module:
    """The masked network to retrain: rewound to ``init``, freshly re-initialised, or the trained one."""
    if start == "rewind":
        if init is None:
            raise ValueError("start='rewind' needs the initial model (init=...)")
        net = copy.deepcopy(init)
    elif start == "reinit":
        if cfg is None or data is None:
            raise ValueError("start='reinit' needs cfg and data to build a fresh network")
        net = initial_model(cfg.replace(seed=reinit_seed), data)
    elif start == "finetune":
        net = copy.deepcopy(trained)
    else:
        raise ValueError(f"start={start!r} is invalid: allowed rewind, reinit, finetune")
    apply_mask(net, mask)
    return net


def retrain_ticket(net: nn.Module, mask: Mask, data: TensorDataset, epochs: int, lr: float = 0.001,
                   batch_size: int = 64, seed: int = 0) -> dict[str, float]:
    """Retrain under the mask; returns final test accuracy/loss and the measured sparsity."""
    log = retrain(net, data, epochs, mask=mask, lr=lr, batch_size=batch_size, seed=seed)
    loss, acc = evaluate(net, data.x_test, data.y_test)
    return {"test_acc": acc, "test_loss": loss, "sparsity": sparsity(net), "epochs": epochs,
            "curve": [r["test_acc"] for r in log]}
