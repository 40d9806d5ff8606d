"""One frozen, validated run configuration that flows everywhere.

The same :class:`RunConfig` is built by the CLI, the notebook widgets, papermill
parameters and sweeps, and it is saved next to every result.  Everything the
rest of the package needs to know about a field lives in that field's
metadata (help, choices, bounds, its role in a results table, whether only the
Bayes-gated methods use it, whether the dashboard shows it), so the CLI flags,
the validation, the widget controls and the summary's setting columns are all
*derived* from here.  A new field needs a default, metadata and a README line,
nothing else.

Every bad value raises ``ValueError`` naming the field, the value and what is
allowed, at construction time.  Whether a device (cuda, mps) exists is checked
when a run starts (:meth:`RunConfig.resolved_device`), not here, so a config
saved on a GPU machine loads on a laptop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Union

from .registry import BAYES_FACTORS, DATASETS, GATES, MODELS, methods

#: The methods of the paper's Table 1 (the default of sweeps and reports).
PAPER_METHODS = ("none", "random", "bayes-random", "magnitude", "bayes-magnitude")

#: Largest seed: the package adds small offsets to it and torch seeds are 64-bit.
MAX_SEED = 2**32 - 1

#: Version of the run identity.  Keys hash only the fields that differ from their
#: defaults, so adding a field with a default keeps every stored key; changing an
#: existing default changes what old keys mean, and must bump this.
KEY_VERSION = 2


def default_data_dir() -> str:
    """``$BAYESPRUNE_DATA`` if set and non-empty, else ``./data`` (torchvision layout below it)."""
    return os.environ.get("BAYESPRUNE_DATA") or "./data"


def _meta(
    help: str,
    *,
    choices: Union[tuple[str, ...], Callable[[], tuple[str, ...]], None] = None,
    bounds: Optional[tuple[Optional[float], Optional[float], bool, bool]] = None,
    role: str = "setting",
    applies: str = "all",
    widget: bool = False,
    ui: Optional[tuple[float, float]] = None,
) -> dict[str, Any]:
    """Field metadata.

    ``role``: ``axis`` (a row or column of Table 1: dataset, model, method, sparsity, seed),
    ``setting`` (changes the result; runs that differ in it are never averaged together) or
    ``io`` (where data comes from: not part of the run's identity).
    ``applies``: ``all``, ``pruned`` (ignored by the unpruned baseline) or ``bayes`` (only the
    Bayes-gated methods' results depend on it).  ``widget``: shown by the dashboard by default;
    ``ui``: the slider's range where the valid range is unbounded.
    """
    out: dict[str, Any] = {"help": help, "role": role, "applies": applies, "widget": widget}
    if choices is not None:
        out["choices"] = choices
    if bounds is not None:
        out["bounds"] = bounds
    if ui is not None:
        out["ui"] = ui
    return out


#: Named recipes for :meth:`RunConfig.preset` and ``--preset``.  ``bayesian``: prune by the posterior and stop
#: by the evidence.  MAP training under a prior refitted to the Laplace evidence each epoch, a gradual ramp
#: towards a ceiling of 99 %, the posterior criterion ranked over all layers, and the fair Laplace Bayes
#: factor as an immediate gate, the last epoch included: the run chooses its own sparsity.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "bayesian": dict(method="bayes-obs", train_prior="map", prior_fit="marglik", schedule="gradual",
                     scope="global", bayes_factor="laplace", gate="immediate", final_prune="gate", sparsity=0.99,
                     prior_sigma=0.3, prune_start_epoch=3),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run.

    Choices the paper leaves open are explicit fields here; the defaults are
    documented in the README ("Choices we made").
    """

    dataset: str = field(default="digits", metadata=_meta("data set", choices=DATASETS.names, role="axis", widget=True))
    model: str = field(default="fcn", metadata=_meta("network architecture", choices=MODELS.names, role="axis",
                                                     widget=True))
    method: str = field(default="bayes-magnitude", metadata=_meta(
        "pruning method: none, a registered criterion, or bayes-<criterion> (gated by the Bayes factor)",
        choices=methods, role="axis", widget=True))
    sparsity: float = field(default=0.9, metadata=_meta(
        "target fraction of zero weights, a fraction 0 <= r < 1 (0.9, not 90)", bounds=(0.0, 1.0, True, False),
        role="axis", widget=True))
    beta: float = field(default=1.0, metadata=_meta(
        "Bayes-factor threshold of the gate (>= 0; 0 accepts every step)", bounds=(0.0, None, True, False),
        applies="bayes", widget=True, ui=(1e-4, 1e3)))
    epochs: int = field(default=25, metadata=_meta("training epochs", bounds=(1, 100_000, True, True), widget=True,
                                                   ui=(1, 100)))
    seed: int = field(default=0, metadata=_meta(
        "seed for init, data order, masks and BF subset", bounds=(0, MAX_SEED, True, True), role="axis",
        widget=True, ui=(0, 99)))
    lr: float = field(default=0.001, metadata=_meta("Adam learning rate", bounds=(0.0, None, False, False),
                                                    ui=(1e-5, 1.0)))
    batch_size: int = field(default=64, metadata=_meta("mini-batch size", bounds=(1, None, True, False),
                                                       ui=(1, 1024)))
    prior_mu: float = field(default=0.0, metadata=_meta(
        "mean of the Gaussian weight prior", bounds=(-1e6, 1e6, True, True), applies="bayes"))
    prior_sigma: float = field(default=0.03, metadata=_meta(
        "std of the Gaussian weight prior (with --prior-fit marglik: only the starting point)",
        bounds=(1e-8, 1e8, True, True), applies="bayes", widget=True, ui=(1e-3, 10.0)))
    likelihood: str = field(default="sum", metadata=_meta(
        "log p(D|w) as the summed (a true log-likelihood) or mean cross-entropy", choices=("sum", "mean"),
        applies="bayes", widget=True))
    bf_samples: Optional[int] = field(default=4096, metadata=_meta(
        "training examples used for log p(D|w), scaled to the full set; none = all", bounds=(1, None, True, False),
        applies="bayes"))
    gate: str = field(default="paper", metadata=_meta(
        "paper: prune if the previous step's BF > beta; immediate: keep a step only if its own BF > beta",
        choices=GATES.names, applies="bayes", widget=True))
    scope: str = field(default="layer", metadata=_meta(
        "prune each layer to r, or rank all scores of the criterion globally", choices=("layer", "global"),
        applies="pruned"))
    schedule: str = field(default="one-shot", metadata=_meta(
        "one-shot: every pruning epoch proposes the target; gradual: the proposal rises along Zhu & Gupta's "
        "cubic from prune_start_epoch to prune_end_epoch", choices=("one-shot", "gradual"), applies="pruned",
        widget=True))
    prune_start_epoch: int = field(default=1, metadata=_meta(
        "first epoch (1-based) after which to prune", bounds=(1, None, True, False), applies="pruned",
        ui=(1, 100)))
    prune_end_epoch: Optional[int] = field(default=None, metadata=_meta(
        "gradual schedule: the epoch whose step proposes the full target; none = 3/4 of the epochs",
        bounds=(1, None, True, False), applies="pruned"))
    final_prune: str = field(default="target", metadata=_meta(
        "target: the last epoch prunes to the target whatever the gate says; gate: the last epoch is gated like "
        "any other (the gate chooses the final sparsity); none: the last epoch does not prune",
        choices=("target", "gate", "none"), applies="pruned", widget=True))
    regrow: bool = field(default=False, metadata=_meta(
        "False: masks persist (pruned weights stay 0); True (the paper's literal procedure): they may regrow",
        applies="pruned", widget=True))
    prune_output: bool = field(default=True, metadata=_meta(
        "prune the output layer too (False leaves the last layer dense)", applies="pruned"))
    prune_biases: bool = field(default=False, metadata=_meta(
        "biases are prunable and count towards the sparsity (False: weights of Linear/Conv layers only)",
        applies="pruned"))
    bayes_factor: str = field(default="posterior", metadata=_meta(
        "posterior: the paper's ratio of posterior densities; laplace: a ratio of Laplace-approximated "
        "model evidences", choices=BAYES_FACTORS.names, applies="bayes", widget=True))
    prior_fit: str = field(default="fixed", metadata=_meta(
        "fixed: use prior_sigma; marglik: fit the prior precision to the unpruned network's Laplace evidence at "
        "every step", choices=("fixed", "marglik"), applies="bayes"))
    hessian_structure: str = field(default="kron", metadata=_meta(
        "curvature of the Laplace evidence: kron (K-FAC), diag or full (tiny networks only)",
        choices=("kron", "diag", "full"), applies="bayes"))
    laplace_curvature: str = field(default="ggn", metadata=_meta(
        "curvature of the Laplace evidence: ggn (the GGN with its exact expectation over the model's predictive: "
        "deterministic), ggn-mc (a one-sample Monte Carlo GGN, seeded: cheaper, but its seed alone moves a digits "
        "log BF by tens to hundreds of nats) or ef (empirical Fisher)", choices=("ggn", "ggn-mc", "ef"),
        applies="bayes"))
    train_prior: str = field(default="none", metadata=_meta(
        "none: train on the mean cross-entropy alone, maximum-likelihood weights (the paper); map: add the prior "
        "|w - mu|^2 / (2 sigma^2 N) to every batch's loss (coupled L2 through Adam), so training reaches the posterior "
        "mode the Laplace evidence assumes", choices=("none", "map")))
    marglik_every: int = field(default=1, metadata=_meta(
        "train_prior='map' with prior_fit='marglik': refit sigma to the network's Laplace evidence every k epochs "
        "(online empirical Bayes, Immer et al. 2021)", bounds=(1, None, True, False), ui=(1, 25)))
    laplace_finetune_steps: int = field(default=100, metadata=_meta(
        "laplace: mini-batch steps under the candidate mask before the pruned evidence, so its weights are "
        "near a mode", bounds=(0, None, True, False), applies="bayes"))
    fcn_hidden: tuple[int, ...] = field(default=(300, 100), metadata=_meta("FCN hidden widths"))
    cnn_hidden: int = field(default=128, metadata=_meta("width of the CNN's first fully connected layer",
                                                        bounds=(1, None, True, False)))
    train_size: Optional[int] = field(default=None, metadata=_meta(
        "use only this many training examples (seeded); none = all", bounds=(1, None, True, False)))
    data_dir: str = field(default_factory=default_data_dir, metadata=_meta(
        "data root in torchvision layout (default, or None: $BAYESPRUNE_DATA or ./data)", role="io"))
    download: bool = field(default=False, metadata=_meta("download the data set if it is missing", role="io"))
    device: str = field(default="auto", metadata=_meta(
        "auto picks cuda, then mps, then cpu", choices=("auto", "cpu", "cuda", "mps"), widget=True))

    def __post_init__(self) -> None:
        if self.data_dir is None:
            object.__setattr__(self, "data_dir", default_data_dir())
        if isinstance(self.data_dir, os.PathLike):
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        if isinstance(self.fcn_hidden, list):
            object.__setattr__(self, "fcn_hidden", tuple(self.fcn_hidden))
        _normalise_floats(self)
        _validate(self)

    # ------------------------------------------------------------------ io
    @classmethod
    def preset(cls, name: str, **changes: Any) -> "RunConfig":
        """A named recipe (:data:`PRESETS`) with ``changes`` on top: ``RunConfig.preset("bayesian", dataset="mnist")``.

        ``RunConfig()`` itself stays the paper's setting; a preset is only a documented set of fields.
        The one adjustment: a preset's ``prune_start_epoch`` is capped at ``epochs`` when ``changes`` shorten the
        run without naming a start of their own, so ``--preset bayesian --epochs 1`` is a valid (pruning) run;
        an explicit ``prune_start_epoch`` is taken as given and validated as usual.
        """
        if name not in PRESETS:
            _fail("preset", name, ", ".join(PRESETS))
        recipe = PRESETS[name]
        fields = {**recipe, **changes}
        epochs = fields.get("epochs")
        if ("prune_start_epoch" in recipe and "prune_start_epoch" not in changes and isinstance(epochs, int)
                and not isinstance(epochs, bool) and epochs >= 1):
            fields["prune_start_epoch"] = min(recipe["prune_start_epoch"], epochs)
        return cls(**fields)

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
            raise ValueError(f"unknown RunConfig field(s) {unknown}; allowed fields are {sorted(names)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """The fields that make this run differ from the default run (``io`` fields never count)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata["role"] == "io":
                continue
            value = getattr(self, f.name)
            if value != _default(f):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def key(self) -> str:
        """Stable short hash of the non-default result fields (OpenLTH style).

        A field added later with a default leaves every existing key unchanged.
        """
        blob = json.dumps({"key_version": KEY_VERSION, **self.identity()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def title(self) -> str:
        """``digits / fcn / bayes-magnitude @ 90%``: the run's name in figures, progress bars and messages.

        A run that does not prune (``method="none"``) has no target: ``digits / fcn / none``."""
        head = f"{self.dataset} / {self.model} / {self.method}"
        return head if self.method == "none" else f"{head} @ {self.sparsity:.0%}"

    @property
    def is_bayesian(self) -> bool:
        return self.method.startswith("bayes-")

    @property
    def prune_kind(self) -> Optional[str]:
        """The pruning strategy ('random', 'magnitude', ...) or None for the unpruned baseline."""
        if self.method == "none":
            return None
        return self.method.removeprefix("bayes-")

    @property
    def end_epoch(self) -> int:
        """The gradual schedule's last ramp epoch (``prune_end_epoch`` or 3/4 of the epochs)."""
        if self.prune_end_epoch is not None:
            return self.prune_end_epoch
        return min(self.epochs, max(self.prune_start_epoch, round(0.75 * self.epochs)))

    def resolved_device(self) -> str:
        """The concrete torch device this config trains on; raises if an explicit device is missing."""
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            _fail("device", self.device, "cuda only where a CUDA GPU is available (none found); use auto or cpu")
        if self.device == "mps" and not _mps_available():
            _fail("device", self.device, "mps only on Apple silicon with MPS available (none found); use auto or cpu")
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


# ------------------------------------------------------------------ derived tables
def config_fields() -> list[dataclasses.Field]:
    """The dataclass fields, in declaration order (the CLI and widgets use them)."""
    return list(dataclasses.fields(RunConfig))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def fields_where(**meta: Any) -> list[str]:
    """Names of the fields whose metadata matches, e.g. ``fields_where(role="setting")``."""
    return [f.name for f in config_fields() if all(f.metadata.get(k) == v for k, v in meta.items())]


def field_choices(name: str) -> tuple[str, ...]:
    """The allowed values of a categorical field, read now (the registries may have grown since import)."""
    choices = next(f.metadata["choices"] for f in config_fields() if f.name == name)
    return tuple(choices()) if callable(choices) else tuple(choices)


class _Choices(Mapping[str, tuple[str, ...]]):
    """``CHOICES["method"]``: each categorical field's allowed values, read from the registries when asked."""

    def __init__(self) -> None:
        self._names = tuple(f.name for f in config_fields() if "choices" in f.metadata)

    def __getitem__(self, name: str) -> tuple[str, ...]:
        if name not in self._names:
            raise KeyError(name)
        return field_choices(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


#: Allowed values of the categorical fields (widgets build drop-downs from it); a live view.
CHOICES: Mapping[str, tuple[str, ...]] = _Choices()
#: Numeric bounds as (low, high, low_inclusive, high_inclusive); None = open.
BOUNDS: dict[str, tuple[Optional[float], Optional[float], bool, bool]] = {
    f.name: f.metadata["bounds"] for f in config_fields() if "bounds" in f.metadata}
#: Fields that do not change a run's result (left out of :meth:`RunConfig.key`).
NON_RESULT_FIELDS: tuple[str, ...] = tuple(fields_where(role="io"))
_HINTS = typing.get_type_hints(RunConfig)


def field_type(name: str) -> Any:
    """The field's type with Optional removed (int, float, bool, str or tuple[int, ...])."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union else hint


def is_optional(name: str) -> bool:
    return type(None) in typing.get_args(_HINTS[name])


# ------------------------------------------------------------------ validation
def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"RunConfig.{name}={value!r} is invalid: allowed {allowed}")


def _describe_bounds(lo, hi, lo_inc, hi_inc, integer: bool) -> str:
    kind = "an integer" if integer else "a finite number"
    parts = []
    def num(v: float) -> str:
        return str(int(v)) if integer else f"{v:g}"

    if lo is not None:
        parts.append(f"{'>=' if lo_inc else '>'} {num(lo)}")
    if hi is not None:
        parts.append(f"{'<=' if hi_inc else '<'} {num(hi)}")
    return f"{kind} " + " and ".join(parts)


def _normalise_floats(cfg: RunConfig) -> None:
    """The one place numbers are converted: a float field given an int holds the float, and -0.0 is 0.0,
    so equal configs have equal keys.  Integer fields are never converted: 3.0 is refused (``_check_number``)."""
    for f in config_fields():
        value = getattr(cfg, f.name)
        if field_type(f.name) is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            object.__setattr__(cfg, f.name, float(value) + 0.0)


def _check_number(name: str, value: Any, integer: bool) -> None:
    lo, hi, lo_inc, hi_inc = BOUNDS[name]
    allowed = _describe_bounds(lo, hi, lo_inc, hi_inc, integer)
    if is_optional(name):
        allowed += ", or None"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        _fail(name, value, allowed + (" (an int, not a float such as 3.0)" if integer else ""))
    if not math.isfinite(float(value)):
        _fail(name, value, allowed)
    if lo is not None and (value < lo or (value == lo and not lo_inc)):
        _fail(name, value, allowed)
    if hi is not None and (value > hi or (value == hi and not hi_inc)):
        _fail(name, value, allowed)


def _check_field(cfg: RunConfig, f: dataclasses.Field) -> None:
    name, value = f.name, getattr(cfg, f.name)
    kind = field_type(name)
    if value is None and is_optional(name):
        return
    if "choices" in f.metadata:
        choices = field_choices(name)
        if value not in choices:
            _fail(name, value, "one of " + ", ".join(choices))
    elif "bounds" in f.metadata:
        _check_number(name, value, integer=kind is int)
    elif kind is bool:
        if not isinstance(value, bool):
            _fail(name, value, "True or False")


def _check_hidden(cfg: RunConfig) -> None:
    hidden = cfg.fcn_hidden
    if (not isinstance(hidden, tuple) or len(hidden) == 0
            or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden)):
        _fail("fcn_hidden", hidden, "a non-empty tuple of positive integers, e.g. (300, 100)")


def _check_data_dir(cfg: RunConfig) -> None:
    if not isinstance(cfg.data_dir, str) or cfg.data_dir == "":
        _fail("data_dir", cfg.data_dir, "a non-empty folder path")


def _check_epochs(cfg: RunConfig) -> None:
    if cfg.method == "none":
        return
    if cfg.prune_start_epoch > cfg.epochs:
        _fail("prune_start_epoch", cfg.prune_start_epoch,
              f"an epoch between 1 and epochs={cfg.epochs}, so that pruning happens")
    if cfg.prune_end_epoch is not None and not cfg.prune_start_epoch <= cfg.prune_end_epoch <= cfg.epochs:
        _fail("prune_end_epoch", cfg.prune_end_epoch,
              f"None or an epoch between prune_start_epoch={cfg.prune_start_epoch} and epochs={cfg.epochs}")


def _check_laplace(cfg: RunConfig) -> None:
    if cfg.likelihood == "mean" and (cfg.bayes_factor == "laplace" or cfg.prior_fit == "marglik"):
        _fail("likelihood", cfg.likelihood, "'sum' with bayes_factor='laplace' or prior_fit='marglik': a model "
              "evidence needs a true (summed) log-likelihood")


#: Rules that involve more than one field, run after the per-field checks.
CROSS_FIELD_RULES: tuple[Callable[[RunConfig], None], ...] = (_check_hidden, _check_data_dir, _check_epochs,
                                                             _check_laplace)


def _validate(cfg: RunConfig) -> None:
    for f in config_fields():
        _check_field(cfg, f)
    for rule in CROSS_FIELD_RULES:
        rule(cfg)
