"""Registries: the extension points of the package, one per concern (OpenLTH's ``registry.py``).

A criterion, a gate, a Bayes factor, a model or a data set is registered by name,
and everything that offers a choice (``RunConfig``'s validation, the CLI flags, the
dashboard's drop-downs, the ``bayes-`` twins of the criteria) reads the registry when
it needs the names, never a list frozen at import.  So one registration, in a test
or a notebook cell, is enough to make a new entry usable everywhere::

    from bayesprune.core.registry import CRITERIA

    @CRITERIA.register("largest")
    def largest(model, ctx):
        return {name: -w.detach().abs() for name, w in ctx.targets.items()}

The registries live here, at the bottom layer, so that ``core.config`` can validate
against all of them; each concern's module fills its own (``core.criteria``,
``core.models``, ``core.data``, ``bayes.posterior``, ``bayes.laplace_gate``).
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, Mapping, Optional, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry, in registration order; ``register`` works as a decorator."""

    def __init__(self, kind: str, field: Optional[str] = None):
        self.kind, self.field = kind, field
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: Optional[T] = None, *, replace: bool = False):
        """Register ``entry`` under ``name`` (or, without ``entry``, return a decorator that does)."""
        if not isinstance(name, str) or not name or name.startswith("bayes-") or name == "none":
            raise ValueError(f"{self.kind} name {name!r} is invalid: allowed a non-empty string, not 'none' "
                             "and not starting with 'bayes-'")

        def add(obj: T) -> T:
            if name in self._entries and not replace:
                raise ValueError(f"a {self.kind} named {name!r} is already registered; pass replace=True to "
                                 "replace it")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> T:
        """Remove an entry (a test or a notebook exercise cleaning up); returns it."""
        return self._entries.pop(name)

    def get(self, name: str, default=None):  # type: ignore[override]
        return self._entries.get(name, default)

    def lookup(self, name: str) -> T:
        """The entry, or a ``ValueError`` naming the field, the value and the registered names."""
        try:
            return self._entries[name]
        except KeyError:
            where = f"RunConfig.{self.field}" if self.field else self.kind
            raise ValueError(f"{where}={name!r} is invalid: allowed one of {', '.join(self._entries)}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


#: Pruning criteria: ``scores(model, ctx) -> {param name: tensor}`` (:mod:`bayesprune.core.criteria`).
CRITERIA: Registry[Callable] = Registry("criterion")
#: Models: ``build(cfg, input_shape, num_classes) -> nn.Module`` (:mod:`bayesprune.core.models`).
MODELS: Registry[Callable] = Registry("model", field="model")
#: Data sets: ``load(cfg) -> TensorDataset`` on the CPU (:mod:`bayesprune.core.data`).
DATASETS: Registry[Callable] = Registry("data set", field="dataset")
#: Gates: objects with ``allows(first, previous_log_bf, beta)`` and ``keeps(log_bf, beta)``
#: (:mod:`bayesprune.bayes.posterior`).
GATES: Registry = Registry("gate", field="gate")
#: Bayes factors: a ``BayesFactor`` (how to build the evaluator, how to read its terms)
#: (:mod:`bayesprune.bayes.posterior`, :mod:`bayesprune.bayes.laplace_gate`).
BAYES_FACTORS: Registry = Registry("Bayes factor", field="bayes_factor")


def methods() -> tuple[str, ...]:
    """``none``, every registered criterion, and its Bayes-gated twin ``bayes-<criterion>``."""
    return ("none", *CRITERIA, *(f"bayes-{c}" for c in CRITERIA))
