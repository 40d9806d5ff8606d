"""Lottery tickets (Frankle & Carbin): keep a pruned network's mask, rewind its weights (notebook 06).

After training and magnitude pruning, the surviving connections are retrained
from (a) their original initial values -- the lottery ticket -- (b) a fresh
random initialisation, or (c) their trained values (fine-tuning).  The mask is
held through retraining in every case.
"""

from __future__ import annotations

import copy
from typing import Literal, Optional, Sequence

from torch import nn

from ..core.config import RunConfig
from ..core.data import TensorDataset
from ..core.models import initial_model
from ..core.pruning import Mask, apply_mask, sparsity
from ..engine.training import evaluate, retrain

Start = Literal["rewind", "reinit", "finetune"]


__all__ = ["Start", "compare_with_dense", "gate_verdicts", "initial_model", "retrain_ticket", "ticket"]  # initial_model: the core builder, re-exported


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


def compare_with_dense(tickets, dense_acc: dict, n_test: int):
    """Each start at each sparsity against the dense network of the same seed (paired), as a table.

    ``tickets``: rows with seed, sparsity, start, test_acc; ``dense_acc``: seed -> dense test accuracy.
    The lottery ticket hypothesis claims the rewound ticket matches the dense network; this says where it did.
    """
    import pandas as pd

    from ..analysis.stats import difference

    rows = []
    for (r, start), g in tickets.groupby(["sparsity", "start"]):
        g = g.sort_values("seed")
        d = difference(g["test_acc"].tolist(), [dense_acc[s] for s in g["seed"]], paired=True, n_test=n_test,
                       names=(start, "dense"))
        rows.append({"sparsity": r, "start": start, "minus dense": d.mean, "within_noise": d.within_noise,
                     "text": d.text})
    return pd.DataFrame(rows)


def gate_verdicts(gate, tickets, dense_text: str, n_test: int, gate_target: float,
                  proposals: Optional[Sequence[Optional[float]]] = None) -> tuple[list[str], dict]:
    """Notebook 06 section 3's sentences, per sigma, computed from its tables.

    ``gate``: one row per (sigma, seed) with proposals, accepted, refused_epochs (optionally accepted_epochs),
    gate_sparsity, gated_run_acc and, where the gate pruned, gated_ticket_acc, one-shot_ticket_acc, jaccard_kept.
    ``tickets``: section 2's table.  ``proposals``: the schedule's proposal per epoch 1..last
    (``PruningSchedule.proposals()``); given, a first line says why the runs count different numbers of proposals.
    Returns the printed lines and, per sigma, what they say (decided_something, final_sparsities, verdict,
    within_noise, plain_as_good_up_to, accepted_after_refusal: a seed accepted a larger step after a refused one).
    """
    from ..analysis.stats import difference, fmt

    lines, findings = [], {}
    if proposals is not None and any(p is not None for p in proposals):
        top = max(p for p in proposals if p is not None)
        end = next(e for e, p in enumerate(proposals, start=1) if p is not None and p >= top - 1e-12)
        lines.append(f"('proposals' counts the epochs whose proposal would prune something new. The ramp reaches "
                     f"{top:.0%} at epoch {end}; the {len(proposals) - end} later epoch(s) propose it again, which "
                     f"prunes nothing new in a run already there, so a run that accepted every step counts {end}, "
                     "while a run a refusal left below it counts them too.)")
    for sigma, g in gate.groupby("sigma"):
        g = g.sort_values("seed")
        finals = sorted(set(g["gate_sparsity"].round(3)))
        decided_something = bool((g["accepted"] < g["proposals"]).any())
        if not decided_something:
            decided = (f"the gate accepted all {int(g['proposals'].iloc[0])} proposals in every seed and ended at the "
                       f"target {gate_target:.0%}: at this sigma it decided nothing")
        else:
            first = sorted({e[0] for e in g["refused_epochs"] if len(e)})
            counts = sorted({(int(a), int(p)) for a, p in zip(g["accepted"], g["proposals"])})
            decided = (f"the gate refused steps (first refusal in epoch {', '.join(map(str, first))}), accepted "
                       + ", ".join(f"{a} of {p}" for a, p in counts) + " proposals, and ended at "
                       f"sparsity {', '.join(f'{f:.3f}' for f in finals)} (over {len(g)} seeds)")
        later = []  # seeds where a step was accepted after an earlier refusal
        if "accepted_epochs" in g:
            later = [int(s) for s, ref, acc in zip(g["seed"], g["refused_epochs"], g["accepted_epochs"])
                     if len(ref) and len(acc) and max(acc) > min(ref)]
        if later:
            decided += (f". A refusal does not end the run: in {len(later)} of {len(g)} seeds a later step, "
                        "proposing at least as much, was accepted after a refused one, because the immediate gate judges each proposal by its own "
                        "Bayes factor, on a network trained further since the refusal")
        line, d, as_good = f"sigma = {sigma}: {decided}.", None, None
        if "gated_ticket_acc" in g and g["gated_ticket_acc"].notna().all():
            d = difference(g["gated_ticket_acc"].tolist(), g["one-shot_ticket_acc"].tolist(), paired=True,
                           n_test=n_test, names=("gated ticket", "one-shot ticket"))
            line += (f"\n   rewound and retrained, the gated mask against a plain magnitude mask of the same sparsity: "
                     f"{d.text}" + ("\n   => no difference beyond the noise." if d.within_noise else "") +
                     f"\n   the two masks share {fmt(g['jaccard_kept'], 3)} of their kept connections (Jaccard)."
                     f"\n   the gated run itself reached {fmt(g['gated_run_acc'])} (dense: {dense_text})")
            if not decided_something:
                line += ("\n   (the gate refused nothing, so this compares the gradual schedule's mask with a one-shot "
                         "mask: a difference here is the schedule's, not the gate's)")
            else:  # the gate chose the sparsity: were plain tickets still as good beyond it?
                r_gate, ok = float(g["gate_sparsity"].max()), []
                for r in sorted(s for s in set(tickets["sparsity"]) if s > r_gate):
                    plain = tickets[(tickets["start"] == "rewind") & (tickets["sparsity"] == r)].sort_values("seed")
                    if len(plain) != len(g):
                        continue
                    v = difference(plain["test_acc"].tolist(), g["gated_ticket_acc"].tolist(), paired=True,
                                   n_test=n_test)
                    if not (v.within_noise or v.mean > 0):
                        break
                    ok.append(r)
                as_good = max(ok) if ok else None
                line += (f"\n   plain rewound magnitude tickets (section 2) were as good as the gated ticket, within the "
                         f"noise, up to {as_good:.0%}: the gate stopped before accuracy required it" if ok else
                         f"\n   no plain rewound ticket above {r_gate:.0%} (section 2) was as good as the gated ticket")
        findings[sigma] = {"decided_something": decided_something, "final_sparsities": finals,
                           "verdict": d.text if d else None, "within_noise": d.within_noise if d else None,
                           "plain_as_good_up_to": as_good, "accepted_after_refusal": later}
        lines.append(line)
    return lines, findings
