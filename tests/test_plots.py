"""One learning-curve drawing: the saved figure and the dashboard's live one show the same marks."""

import pandas as pd
import pytest

import bayesprune as bp


@pytest.fixture(scope="module")
def history():
    cfg = bp.RunConfig(dataset="synthetic", fcn_hidden=(16, 8), bf_samples=64, epochs=4, method="bayes-magnitude",
                       schedule="gradual", gate="immediate", beta=1e30, prune_end_epoch=3, final_prune="gate")
    h = bp.train(cfg, progress=False).history
    assert (h["gate_open"] & ~h["pruned"]).any()  # beta = 1e30 refuses every step: there are refused marks
    return h


def _marks(axes):
    """(what, count) per axis: lines, filled scatters, hollow scatters (the refused steps)."""
    out = []
    for ax in axes:
        hollow = sum(1 for c in ax.collections if len(c.get_facecolors()) == 0 and len(c.get_offsets()))
        filled = sum(1 for c in ax.collections if len(c.get_facecolors()) and len(c.get_offsets()))
        out.append((len(ax.lines), filled, hollow, ax.get_yscale()))
    return out


def test_the_dashboard_draws_what_plot_curves_draws(history):
    pytest.importorskip("matplotlib")
    from bayesprune.ui.widgets import LiveCurves

    fig = bp.plot_curves({"a": history}, beta=2.0)
    saved = fig.axes  # loss, bf, then the twins: acc, sparsity
    saved = [saved[0], saved[2], saved[1], saved[3]]
    live = LiveCurves()
    png = live.render({"a": history.to_dict(orient="records")}, beta=2.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert _marks((live.ax_loss, live.ax_acc, live.ax_bf, live.ax_sp)) == _marks(saved)
    assert _marks(saved)[2][2] == 1 and _marks(saved)[2][3] == "symlog"  # refused steps hollow, BF on symlog


def test_plot_curves_draws_into_given_axes(history):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2)
    assert bp.plot_curves(history, ax=(a, b)) is fig and len(fig.axes) == 4 and len(a.lines) == 2
    plt.close(fig)
    assert len(pd.DataFrame(history)) == 4


def test_plot_curves_draws_a_chance_line_on_the_accuracy_axis_only_when_asked(history):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2)
    bp.plot_curves(history, ax=(a, b))
    plain = [ln.get_ydata()[0] for ln in fig.axes[2].lines if len(set(ln.get_ydata())) == 1]  # the accuracy twin
    plt.close(fig)
    fig, (a, b) = plt.subplots(1, 2)
    bp.plot_curves(history, ax=(a, b), chance=0.1)
    acc = fig.axes[2]
    flat = [ln for ln in acc.lines if list(ln.get_ydata()) == [0.1, 0.1]]
    assert plain == [] and len(flat) == 1 and flat[0].get_label() == "chance (0.10)"
    assert len(acc.lines) == 2 and len(a.lines) == 2  # the accuracy curve and the line; the loss axis untouched
    plt.close(fig)
