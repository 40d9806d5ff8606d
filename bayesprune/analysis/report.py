"""Table 1 and Figures 5/6 of the paper, from a sweep's results.

:func:`summarize` lays results out like the paper's Table 1: one row per
(dataset, model, sparsity), one column group per method (unpruned, random,
bayes-random, magnitude, bayes-magnitude) with mean, std and number of seeds,
and the paper's value beside each cell where the dataset and model match.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Optional

import pandas as pd

from ..core.config import PAPER_METHODS, config_fields, fields_where
from ..core.registry import methods
from ..runs.fileio import atomic_write_bytes, atomic_write_text
from ..runs.results import histories_table, results_table
from .stats import summarize as seed_summary

TABLE_METHODS = list(PAPER_METHODS)
COLUMN_NAMES = {"none": "unpruned", "random": "random", "bayes-random": "bayes_random",
                "magnitude": "magnitude", "bayes-magnitude": "bayes_magnitude"}
_PAPER_DATASETS = {"MNIST": "mnist", "Fashion": "fashion-mnist", "CIFAR-10": "cifar10"}


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1, tidy: dataset, model, sparsity (fraction), method, accuracy."""
    with resources.files("bayesprune").joinpath("resources/paper_table1.csv").open() as fh:
        raw = pd.read_csv(fh)
    rows = []
    for _, r in raw.iterrows():
        ds, model, sp = _PAPER_DATASETS[r["dataset"]], r["model"].lower(), round(r["sparsity"] / 100.0, 4)
        rows.append((ds, model, 0.0, "none", float(r["unpruned"])))
        for method, col in COLUMN_NAMES.items():
            if method != "none":
                rows.append((ds, model, sp, method, float(r[col])))
    return pd.DataFrame(rows, columns=["dataset", "model", "sparsity", "method", "accuracy"]).drop_duplicates()


#: Config fields that change results but are not rows or columns of Table 1 (derived from RunConfig).
SETTING_COLUMNS = fields_where(role="setting")


def _runs_it_applies_to(g: pd.DataFrame, col: str) -> pd.DataFrame:
    """The runs whose result depends on ``col`` (field metadata ``applies``: all, pruned or bayes)."""
    applies = next(f.metadata["applies"] for f in config_fields() if f.name == col)
    if applies == "bayes":
        return g[g["method"].str.startswith("bayes-")]
    if applies == "pruned":
        return g[g["method"] != "none"]
    return g


def _check_one_setting(ok: pd.DataFrame) -> None:
    """Refuse to average runs that differ in anything but method, sparsity and seed."""
    for (ds, model), g in ok.groupby(["dataset", "model"]):
        for col in SETTING_COLUMNS:
            if col not in g:
                continue
            values = _runs_it_applies_to(g, col)[col].astype(str).unique()
            if len(values) > 1:
                raise ValueError(
                    f"table1(): the {ds}/{model} runs mix {col} = {sorted(values)}; "
                    f"filter the results to one setting first, e.g. results[results.{col} == ...]")


def _seed_summary(values: pd.Series) -> pd.Series:
    s = seed_summary(values)
    return pd.Series({"mean": s.mean, "std": s.sd, "n": s.n})


def table1(results: pd.DataFrame, paper: bool = True) -> pd.DataFrame:
    """Table 1 layout: mean/std/n over seeds per method (:func:`bayesprune.analysis.stats.summarize`),
    plus the paper's value.  Only runs with status ``ok`` count."""
    ok = results[results["status"] == "ok"] if "status" in results else results
    if len(ok) == 0:
        raise ValueError("table1(): no successful runs in the results table")
    _check_one_setting(ok)
    stats = (ok.assign(sparsity=ok["sparsity"].round(4))
               .groupby(["dataset", "model", "method", "sparsity"])["test_accuracy"]
               .apply(_seed_summary).unstack().reset_index())
    stats["n"] = stats["n"].astype(int)
    ref = paper_table1() if paper else pd.DataFrame(columns=["dataset", "model", "sparsity", "method", "accuracy"])
    pruned_levels = stats[stats["method"] != "none"][["dataset", "model", "sparsity"]].drop_duplicates()
    if len(pruned_levels) == 0:  # only unpruned runs: one row per dataset/model
        pruned_levels = stats[["dataset", "model"]].drop_duplicates().assign(sparsity=0.0)
    records = []
    for _, lvl in pruned_levels.sort_values(["dataset", "model", "sparsity"]).iterrows():
        rec: dict = {("dataset", ""): lvl["dataset"], ("model", ""): lvl["model"], ("sparsity", ""): lvl["sparsity"]}
        for method in TABLE_METHODS:
            sp = 0.0 if method == "none" else lvl["sparsity"]
            sel = stats[(stats.dataset == lvl.dataset) & (stats.model == lvl.model)
                        & (stats.method == method) & (stats.sparsity == sp)]
            p = ref[(ref.dataset == lvl.dataset) & (ref.model == lvl.model)
                    & (ref.method == method) & ((ref.sparsity - sp).abs() < 1e-9)]
            col = COLUMN_NAMES[method]
            rec[(col, "mean")] = float(sel["mean"].iloc[0]) if len(sel) else math.nan
            rec[(col, "std")] = float(sel["std"].iloc[0]) if len(sel) else math.nan
            rec[(col, "n")] = int(sel["n"].iloc[0]) if len(sel) else 0
            rec[(col, "paper")] = float(p["accuracy"].iloc[0]) if len(p) else math.nan
        records.append(rec)
    table = pd.DataFrame(records)
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A plain Markdown table (floats to ``digits`` places, NaN as '–'), without extra dependencies."""

    def cell(v) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


#: A cell is marked when it differs from the paper by more than this (absolute accuracy) ...
MARK_PP = 0.01
#: ... or by more than this many standard deviations over seeds (where a spread is shown).
MARK_STD = 2.0


def paper_mark(mean: float, std: float, n: int, paper: float) -> str:
    """The README's mark for one cell: "†" where |ours - paper| > 1 pp, "*" where it is less but more
    than 2 std over seeds (std only counted with 3+ seeds), "" otherwise."""
    if n == 0 or math.isnan(paper) or math.isnan(mean):
        return ""
    diff = abs(mean - paper)
    if diff > MARK_PP:
        return "†"
    spread = std if n >= 3 and not math.isnan(std) else math.inf
    return "*" if diff > MARK_STD * spread else ""


def differs_from_paper(mean: float, std: float, n: int, paper: float) -> bool:
    """The issue's rule: |ours - paper| > 1 pp, or > 2 std over seeds (std only counted with 3+ seeds)."""
    return paper_mark(mean, std, n, paper) != ""


def format_table1(table: pd.DataFrame) -> str:
    """Markdown: 'mean ± std (paper x)' per cell; with fewer than 3 seeds no spread, the seed count instead.

    A cell that differs from the paper by more than 1 pp ends with a bold **†**; one that differs by
    less, but by more than 2 std over seeds, with a *; the table is followed by a line that says so.
    """
    header = ["dataset", "model", "sparsity"] + [COLUMN_NAMES[m] for m in TABLE_METHODS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    counts = {"†": 0, "*": 0}
    for _, r in table.iterrows():
        cells = [str(r[("dataset", "")]), str(r[("model", "")]), f"{r[('sparsity', '')]:.0%}"]
        for m in TABLE_METHODS:
            c = COLUMN_NAMES[m]
            mean, std, n, paper = r[(c, "mean")], r[(c, "std")], r[(c, "n")], r[(c, "paper")]
            # a spread only from 3 seeds (an SD from 2 is too uncertain to show); fewer seeds say how many
            cell = "–" if n == 0 else f"{mean:.4f}" + (f" ± {std:.4f}" if n >= 3 else f" ({n} seed{'s' * (n > 1)})")
            if not math.isnan(paper):
                cell += f" (paper {paper:.4f})"
            mark = paper_mark(mean, std, n, paper)
            if mark:
                counts[mark] += 1
                cell += " **†**" if mark == "†" else " \\*"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if counts["†"]:
        notes.append(f"**†** ({counts['†']} cells): differs from the paper by more than {MARK_PP * 100:.0f} pp.")
    if counts["*"]:
        notes.append(f"\\* ({counts['*']} cells): differs by less than {MARK_PP * 100:.0f} pp, "
                     f"but by more than {MARK_STD:g} std over seeds.")
    if notes:
        lines += [""] + [" ".join(notes)]
    return "\n".join(lines)


def plot_accuracy_vs_sparsity(results: pd.DataFrame, paper: bool = True):
    """Final test accuracy vs target sparsity per method, mean ± std over seeds (paper dashed)."""
    import matplotlib.pyplot as plt

    table = table1(results, paper=paper)
    groups = table[[("dataset", ""), ("model", "")]].drop_duplicates().values.tolist()
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (ds, model) in zip(axes[0], groups):
        t = table[(table[("dataset", "")] == ds) & (table[("model", "")] == model)]
        xs = list(range(len(t)))
        for i, m in enumerate(TABLE_METHODS):
            c = COLUMN_NAMES[m]
            color = colors[i % len(colors)]
            if m == "none":
                mean = t[(c, "mean")].iloc[0]
                if not math.isnan(mean):
                    std = t[(c, "std")].iloc[0]
                    ax.axhline(mean, color=color, label="unpruned (ours)")
                    if not math.isnan(std):
                        ax.axhspan(mean - std, mean + std, color=color, alpha=0.15)
            elif t[(c, "n")].sum() > 0:
                mean = t[(c, "mean")]
                low, high = std_band(mean, t[(c, "std")].fillna(0), upper=1.0)
                ax.errorbar(xs, mean, yerr=[mean - low, high - mean], marker="o", capsize=3,
                            color=color, label=f"{m} (ours)")
            if t[(c, "paper")].notna().any():
                ax.plot(xs, t[(c, "paper")], ls="--", marker="x", color=color, alpha=0.6, label=f"{m} (paper)")
        ax.set_xticks(xs, [f"{s:.0%}" for s in t[("sparsity", "")]])
        ax.set(xlabel="target sparsity", ylabel="final test accuracy", title=f"{ds} / {model}")
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy vs sparsity (mean ± std over seeds; dashed: the paper's Table 1)")
    fig.tight_layout()
    return fig


def std_band(mean: pd.Series, std: pd.Series, upper: Optional[float] = None) -> tuple[pd.Series, pd.Series]:
    """mean ± std, cut to what the quantity can take (>= 0; <= ``upper``, 1 for an accuracy).

    With a few seeds and one collapsed run the std band of an accuracy can pass 1.0 or drop below 0;
    a band outside the possible range reads as a result, so it is drawn cut at the bounds.
    """
    return (mean - std).clip(lower=0.0), (mean + std).clip(upper=upper)


def plot_test_curves(histories: pd.DataFrame, method: str, metric: str = "test_acc"):
    """Test accuracy over epochs, one line per target sparsity (the paper's Figures 5/6)."""
    import matplotlib.pyplot as plt

    h = histories[histories["method"].isin([method, "none"])]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (m, sp), g in h.groupby(["method", "target_sparsity"]):
        curve = g.groupby("epoch")[metric].agg(["mean", "std"]).reset_index()
        label = "unpruned" if m == "none" else f"{sp:.0%}"
        ax.plot(curve["epoch"], curve["mean"], marker=".", label=label, color="black" if m == "none" else None)
        if curve["std"].notna().any():
            upper = 1.0 if metric.endswith("_acc") else None
            ax.fill_between(curve["epoch"], *std_band(curve["mean"], curve["std"], upper=upper), alpha=0.15)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=f"{method}: {metric.replace('_', ' ')} per sparsity")
    ax.legend(title="sparsity", fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    """A figure as PNG, written atomically (never through a symlink), then closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(out_dir: str | Path, paper: bool = True) -> dict[str, Path]:
    """table1.md, table1.csv, accuracy_vs_sparsity.png and test_curves_<method>.png in out_dir.

    Each file is written atomically; file names come from validated method names only.
    """
    out = Path(out_dir)
    results = results_table(out)
    table = table1(results, paper=paper)
    written = {"table1.md": out / "table1.md", "table1.csv": out / "table1.csv",
               "accuracy_vs_sparsity.png": out / "accuracy_vs_sparsity.png"}
    atomic_write_text(written["table1.md"], format_table1(table) + "\n")
    flat = table.copy()
    flat.columns = ["_".join(c for c in col if c) for col in table.columns]
    atomic_write_text(written["table1.csv"], flat.to_csv(index=False))
    save_figure(plot_accuracy_vs_sparsity(results, paper=paper), written["accuracy_vs_sparsity.png"])
    hist = histories_table(out)
    for method in sorted(set(hist.get("method", [])) - {"none"}):
        if method not in methods():  # pragma: no cover - load_runs validated every config
            continue
        path = out / f"test_curves_{method}.png"
        save_figure(plot_test_curves(hist, method), path)
        written[path.name] = path
    return written


#: The name :func:`table1` had before (``bp.stats.summarize`` is the seed summary).
summarize = table1
