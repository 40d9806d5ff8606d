"""The gate's decisions in words: one sentence per pruning step, computed from a run's history.

Why: notebook 03 shows a pattern of accepted and refused steps; its text must explain *that* pattern
(which epoch, what the fit lost, what the prior gained, against which threshold), not a pattern
written down in advance.  Every number in a sentence is read from the history.
"""

from __future__ import annotations

import math

import pandas as pd

from ..engine.training import removes_weights


def gate_decisions(history: pd.DataFrame, beta: float, gated: bool = True) -> pd.DataFrame:
    """One row per epoch whose step would remove weights: what was proposed, the log BF and why it was kept or not.

    Columns: epoch, from, proposed, after, log_bf, fit_change (Δ log-likelihood), prior_change (Δ log-prior;
    NaN where the Bayes factor is not the posterior ratio), decision (accepted, refused, forced, gate closed)
    and why (a sentence).  ``beta`` is the gate's threshold (log β nats); 0 accepts every step.
    ``gated=False`` (a plain method): every step is taken, decision ``taken (no gate)``.
    """
    h = pd.DataFrame(history)
    if not len(h) or h["candidate_sparsity"].isna().all():
        return pd.DataFrame(columns=["epoch", "from", "proposed", "after", "log_bf", "fit_change", "prior_change",
                                     "decision", "why"])
    h = h[h["candidate_sparsity"].notna()]
    h = h[removes_weights(h)]
    log_beta = math.log(beta) if beta > 0 else -math.inf
    rows, last_refused = [], None
    for _, r in h.iterrows():
        fit = r["log_likelihood_after"] - r["log_likelihood_before"]
        prior = r["log_prior_after"] - r["log_prior_before"]
        additive = math.isfinite(fit) and math.isfinite(prior) and math.isclose(fit + prior, r["log_bf"], rel_tol=1e-6,
                                                                                abs_tol=1e-6)
        if not additive:  # e.g. the Laplace evidence: its log BF has more terms than fit and prior
            prior = math.nan
        step = f"epoch {int(r['epoch'])}: {r['sparsity_before']:.3f} → {r['candidate_sparsity']:.3f}"
        terms = (f"the fit lost {-fit:.1f} nats, the prior gained {prior:.1f}" if additive and fit <= 0 <= prior
                 else f"Δ fit {fit:+.1f}, Δ prior {prior:+.1f} nats" if additive else "")
        cmp = f"log BF {r['log_bf']:+.1f} {'>' if r['log_bf'] > log_beta else '≤'} log β = {log_beta:.1f}"
        if not gated:
            decision, why = "taken (no gate)", f"{step}: no gate, the step is taken ({cmp}, which decides nothing here)"
        elif not bool(r["gate_open"]):
            decision, why = "gate closed", f"{step}: the gate was closed (the previous step's BF was not above β)"
        elif bool(r["forced"]):
            decision, why = "forced", f"{step}: the last epoch prunes to the target whatever the BF ({cmp})"
        elif bool(r["pruned"]) and r["log_bf"] <= log_beta:
            decision = "accepted"
            why = (f"{step}: {cmp}, yet pruned: this gate does not decide on the step's own BF (the paper's gate "
                   "prunes on its first step, then while the previous step's BF was above β)")
        elif bool(r["pruned"]):
            decision = "accepted"
            why = f"{step}: {terms + ': ' if terms else ''}{cmp}, accepted"
            bigger = last_refused is not None and r["candidate_sparsity"] >= last_refused["proposed"] - 1e-9
            if bigger and additive and math.isfinite(last_refused["prior_change"]):
                old_fit, old_prior = -last_refused["fit_change"], last_refused["prior_change"]
                if -fit < old_fit:  # a bigger step that costs less fit: the network changed in between
                    why += (f". A bigger step than epoch {last_refused['epoch']}'s refused one, yet it cost less fit "
                            f"({-fit:.1f} against {old_fit:.1f} nats): the network trained on in between, and the "
                            "weights this step removes now matter less to it")
                else:
                    why += (f". A bigger step than epoch {last_refused['epoch']}'s refused one: it cost more fit "
                            f"({-fit:.1f} against {old_fit:.1f} nats) but gained more prior ({prior:.1f} against "
                            f"{old_prior:.1f}), enough to tip the balance")
        else:
            decision = "refused"
            why = f"{step}: {terms + ': ' if terms else ''}{cmp}, refused (the weights were put back)"
        row = {"epoch": int(r["epoch"]), "from": r["sparsity_before"], "proposed": r["candidate_sparsity"],
               "after": r["sparsity"], "log_bf": r["log_bf"], "fit_change": fit, "prior_change": prior,
               "decision": decision, "why": why}
        if decision == "refused":
            last_refused = row
        rows.append(row)
    return pd.DataFrame(rows)


def decision_story(history: pd.DataFrame, beta: float, gated: bool = True) -> list[str]:
    """The sentences of :func:`gate_decisions`, with a run of refusals after the last accepted step told in one line."""
    d = gate_decisions(history, beta, gated)
    if not len(d):
        return ["no step of this run would have removed weights: the gate decided nothing"]
    accepted = d.index[d["decision"] != "refused"]
    last = accepted.max() if len(accepted) else -1
    tail = d.loc[last + 2:]  # the first refusal after the last acceptance is told in full
    lines = d.loc[:last + 1, "why"].tolist()
    if len(tail) == 1:
        lines.append(tail["why"].iloc[0])
    elif len(tail):
        lines.append(f"epochs {tail['epoch'].iloc[0]}–{tail['epoch'].iloc[-1]}: all {len(tail)} refused, log BF from "
                     f"{tail['log_bf'].max():+.1f} to {tail['log_bf'].min():+.1f}"
                     + (f"; the fit's loss ({-tail['fit_change'].max():.0f} to {-tail['fit_change'].min():.0f} nats) "
                        f"outgrew the prior's gain ({tail['prior_change'].min():.0f} to {tail['prior_change'].max():.0f})"
                        if tail["prior_change"].notna().all() else ""))
    return lines
