"""One frozen, validated run configuration that flows everywhere.

The same :class:`RunConfig` is built by the CLI (its flags are generated from
the fields below), by the notebook widgets (their bounds and choices come from
:data:`CHOICES` and :data:`BOUNDS`), by papermill parameters and by sweeps,
and it is saved next to every result.  Every bad value raises ``ValueError``
naming the field, the value and what is allowed, at construction time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "synthetic")
MODELS = ("fcn", "cnn")
METHODS = ("none", "random", "magnitude", "bayes-random", "bayes-magnitude")
GATES = ("paper", "immediate")
SCOPES = ("layer", "global")
LIKELIHOODS = ("sum", "mean")
DEVICES = ("auto", "cpu", "cuda", "mps")

#: Allowed values of the categorical fields (widgets build drop-downs from it).
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS,
    "model": MODELS,
    "method": METHODS,
    "gate": GATES,
    "scope": SCOPES,
    "likelihood": LIKELIHOODS,
    "device": DEVICES,
}

#: Numeric bounds as (low, high, low_inclusive, high_inclusive); None = open.
BOUNDS: dict[str, tuple[Optional[float], Optional[float], bool, bool]] = {
    "sparsity": (0.0, 1.0, True, False),
    "beta": (0.0, None, False, False),
    "prior_sigma": (0.0, None, False, False),
    "lr": (0.0, None, False, False),
    "epochs": (1, None, True, False),
    "batch_size": (1, None, True, False),
    "prune_start_epoch": (1, None, True, False),
    "bf_samples": (1, None, True, False),
    "train_size": (1, None, True, False),
    "seed": (0, None, True, False),
    "cnn_hidden": (1, None, True, False),
}

#: Fields that do not change a run's result (left out of :meth:`RunConfig.key`).
NON_RESULT_FIELDS = ("data_dir", "download")


def default_data_dir() -> str:
    """``$BAYESPRUNE_DATA`` if set, else ``./data`` (torchvision layout below it)."""
    return os.environ.get("BAYESPRUNE_DATA", "./data")


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run.

    Choices the paper leaves open are explicit fields here; the defaults are
    documented in the README ("Choices we made").
    """

    dataset: str = field(default="digits", metadata=_doc("data set"))
    model: str = field(default="fcn", metadata=_doc("network architecture"))
    method: str = field(
        default="bayes-magnitude",
        metadata=_doc("pruning method; bayes-* are gated by the Bayes factor"),
    )
    sparsity: float = field(default=0.9, metadata=_doc("target fraction of zero weights, 0 <= r < 1"))
    beta: float = field(default=1.0, metadata=_doc("Bayes-factor threshold of the gate (> 0)"))
    epochs: int = field(default=25, metadata=_doc("training epochs"))
    seed: int = field(default=0, metadata=_doc("seed for init, data order, masks and BF subset"))
    lr: float = field(default=0.001, metadata=_doc("Adam learning rate"))
    batch_size: int = field(default=64, metadata=_doc("mini-batch size"))
    prior_mu: float = field(default=0.0, metadata=_doc("mean of the Gaussian weight prior"))
    prior_sigma: float = field(default=0.03, metadata=_doc("std of the Gaussian weight prior (> 0)"))
    likelihood: str = field(
        default="sum",
        metadata=_doc("log p(D|w) as the summed (a true log-likelihood) or mean cross-entropy"),
    )
    bf_samples: Optional[int] = field(
        default=4096,
        metadata=_doc("training examples used for log p(D|w), scaled to the full set; none = all"),
    )
    gate: str = field(
        default="paper",
        metadata=_doc("paper: prune if the previous BF > beta; immediate: keep a candidate if its BF > beta"),
    )
    scope: str = field(default="layer", metadata=_doc("prune each layer to r, or rank all weights globally"))
    prune_start_epoch: int = field(default=1, metadata=_doc("first epoch (1-based) after which to prune"))
    regrow: bool = field(
        default=False,
        metadata=_doc("False: masks persist (pruned weights stay 0); True (the paper's literal procedure): they may regrow"),
    )
    fcn_hidden: tuple[int, ...] = field(default=(300, 100), metadata=_doc("FCN hidden widths"))
    cnn_hidden: int = field(default=128, metadata=_doc("width of the CNN's first fully connected layer"))
    train_size: Optional[int] = field(
        default=None, metadata=_doc("use only this many training examples (seeded); none = all")
    )
    data_dir: str = field(
        default_factory=default_data_dir,
        metadata=_doc("data root in torchvision layout (default $BAYESPRUNE_DATA or ./data)"),
    )
    download: bool = field(default=False, metadata=_doc("download the data set if it is missing"))
    device: str = field(default="auto", metadata=_doc("auto picks cuda, then mps, then cpu"))

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["fcn_hidden"] = list(self.fcn_hidden)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error, not ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown RunConfig field(s) {unknown}; allowed fields are {sorted(names)}"
            )
        kwargs = dict(data)
        if "fcn_hidden" in kwargs and isinstance(kwargs["fcn_hidden"], list):
            kwargs["fcn_hidden"] = tuple(kwargs["fcn_hidden"])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def key(self) -> str:
        """Stable short hash of the fields that determine the result."""
        d = {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_FIELDS}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def is_bayesian(self) -> bool:
        return self.method.startswith("bayes-")

    @property
    def prune_kind(self) -> Optional[str]:
        """'random', 'magnitude' or None for the unpruned baseline."""
        if self.method == "none":
            return None
        return self.method.removeprefix("bayes-")

    def resolved_device(self) -> str:
        """The concrete torch device string this config trains on."""
        import torch

        if self.device != "auto":
            return self.device
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"RunConfig.{name}={value!r} is invalid: allowed {allowed}")


def _describe_bounds(lo, hi, lo_inc, hi_inc, integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    parts = []
    if lo is not None:
        parts.append(f"{'>=' if lo_inc else '>'} {lo:g}")
    if hi is not None:
        parts.append(f"{'<=' if hi_inc else '<'} {hi:g}")
    return f"{kind} " + " and ".join(parts)


def _check_number(name: str, value: Any, integer: bool) -> None:
    lo, hi, lo_inc, hi_inc = BOUNDS[name]
    allowed = _describe_bounds(lo, hi, lo_inc, hi_inc, integer)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(name, value, allowed)
    if integer and not float(value).is_integer():
        _fail(name, value, allowed)
    if not math.isfinite(float(value)):
        _fail(name, value, allowed)
    if lo is not None and (value < lo or (value == lo and not lo_inc)):
        _fail(name, value, allowed)
    if hi is not None and (value > hi or (value == hi and not hi_inc)):
        _fail(name, value, allowed)


def _validate(cfg: RunConfig) -> None:
    for name, allowed in CHOICES.items():
        value = getattr(cfg, name)
        if value not in allowed:
            _fail(name, value, "one of " + ", ".join(allowed))
    for name in ("sparsity", "beta", "prior_sigma", "lr"):
        _check_number(name, getattr(cfg, name), integer=False)
    for name in ("epochs", "batch_size", "prune_start_epoch", "seed", "cnn_hidden"):
        _check_number(name, getattr(cfg, name), integer=True)
    for name in ("bf_samples", "train_size"):
        if getattr(cfg, name) is not None:
            _check_number(name, getattr(cfg, name), integer=True)
    if isinstance(cfg.prior_mu, bool) or not isinstance(cfg.prior_mu, (int, float)) or not math.isfinite(cfg.prior_mu):
        _fail("prior_mu", cfg.prior_mu, "a finite number")
    for name in ("regrow", "download"):
        if not isinstance(getattr(cfg, name), bool):
            _fail(name, getattr(cfg, name), "True or False")
    hidden = cfg.fcn_hidden
    if (
        not isinstance(hidden, tuple)
        or len(hidden) == 0
        or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden)
    ):
        _fail("fcn_hidden", hidden, "a non-empty tuple of positive integers, e.g. (300, 100)")
    if not isinstance(cfg.data_dir, (str, os.PathLike)) or str(cfg.data_dir) == "":
        _fail("data_dir", cfg.data_dir, "a non-empty folder path")
    if cfg.prune_start_epoch > cfg.epochs and cfg.method != "none":
        _fail(
            "prune_start_epoch",
            cfg.prune_start_epoch,
            f"an epoch between 1 and epochs={cfg.epochs}, so that pruning happens",
        )
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            _fail("device", cfg.device, "cuda only where a CUDA GPU is available (none found); use auto or cpu")
    if cfg.device == "mps" and not _mps_available():
        _fail("device", cfg.device, "mps only on Apple silicon with MPS available (none found); use auto or cpu")


def config_fields() -> list[dataclasses.Field]:
    """The dataclass fields, in declaration order (the CLI and widgets use them)."""
    return list(dataclasses.fields(RunConfig))
