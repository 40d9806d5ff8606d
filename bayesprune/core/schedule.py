"""When to propose a pruning step, and to what sparsity (TF-MOT's ``PruningSchedule``, per epoch).

The schedule only *proposes*; the gate (``bayes.posterior``'s ``GATES``) decides.  A refused step
leaves the network as it was, and the schedule proposes again the next epoch
(its proposal depends on the epoch, not on what was accepted before).

* ``one-shot``: from ``prune_start_epoch`` every epoch proposes the target.  With
  persistent masks only the first step removes anything; later ones change nothing.
* ``gradual``: Zhu & Gupta's cubic ("To prune, or not to prune", 2017; TF-MOT's and
  Distiller's AGP) with initial sparsity 0.  Step k of n (epochs start..end)
  proposes ``target * (1 - (1 - k/n)**3)``: big steps early, while the network has
  many redundant weights, small steps near the target.  After ``end`` it proposes
  the target.  In TF-MOT's terms, epoch e proposes ``PolynomialDecay(initial_sparsity=0,
  final_sparsity=target, begin_step=start - 1, end_step=end, power=3, frequency=1)`` at
  step e: our first step is PolynomialDecay's *second* (its step ``begin_step`` proposes 0,
  a step that would remove nothing), so ``begin_step`` is ``start - 1``, not ``start``.

``final_prune`` decides the last epoch: ``target`` forces the target whatever the
gate says (the reported accuracy belongs to the stated sparsity); ``gate`` gates
it like any other (the gate chooses where the run ends); ``none`` proposes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .config import RunConfig


@dataclass(frozen=True)
class PruningSchedule:
    """epoch -> proposed sparsity (or None: no step this epoch) and whether the step is forced."""

    kind: str
    target: float
    start: int
    end: int
    last_epoch: int
    final: str = "target"

    def __post_init__(self) -> None:
        if self.kind not in ("one-shot", "gradual"):
            raise ValueError(f"kind={self.kind!r} is invalid: allowed one-shot, gradual")
        if self.final not in ("target", "gate", "none"):
            raise ValueError(f"final={self.final!r} is invalid: allowed target, gate, none")
        if not 1 <= self.start <= self.end <= self.last_epoch:
            raise ValueError(f"epochs start={self.start}, end={self.end}, last={self.last_epoch} are invalid: "
                             "allowed 1 <= start <= end <= last")

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Optional["PruningSchedule"]:
        """The config's schedule, or None for the unpruned baseline."""
        if cfg.prune_kind is None:
            return None
        return cls(cfg.schedule, cfg.sparsity, cfg.prune_start_epoch, cfg.end_epoch, cfg.epochs, cfg.final_prune)

    def proposal(self, epoch: int) -> Optional[float]:
        """The sparsity this epoch's step proposes, or None where no step is taken."""
        if epoch < self.start or (epoch == self.last_epoch and self.final == "none"):
            return None
        if self.kind == "one-shot" or epoch >= self.end:
            return self.target
        k, n = epoch - self.start + 1, self.end - self.start + 1
        return self.target * (1.0 - (1.0 - k / n) ** 3)

    def forced(self, epoch: int) -> bool:
        """Whether this epoch's step happens whatever the gate says (the final prune to the target)."""
        return self.final == "target" and epoch == self.last_epoch

    def proposals(self) -> list[Optional[float]]:
        """The proposal of every epoch 1..last (for plots and tests)."""
        return [self.proposal(e) for e in range(1, self.last_epoch + 1)]
