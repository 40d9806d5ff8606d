import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bayesprune as bp

widgets = pytest.importorskip("ipywidgets")
from bayesprune.ui.widgets import ConfigControls, Dashboard, DistanceExplorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_controls_come_from_the_config_rules():
    form = ConfigControls(bp.RunConfig())
    c = form.controls
    assert list(c["method"].options) == list(bp.CHOICES["method"])
    assert list(c["dataset"].options) == list(bp.CHOICES["dataset"])
    assert c["sparsity"].min == 0.0 and c["sparsity"].max < 1.0
    assert c["beta"].value > 0 and c["prior_sigma"].value > 0
    assert "cuda" not in c["device"].options or __import__("torch").cuda.is_available()
    c["sparsity"].value = 5.0  # sliders clamp: the student cannot leave the allowed range
    assert c["sparsity"].value < 1.0
    import traitlets

    with pytest.raises(traitlets.TraitError):
        c["method"].value = "bogus"
    form.set(method="random", sparsity=0.5)
    cfg = form.config()
    assert isinstance(cfg, bp.RunConfig) and cfg.method == "random" and cfg.sparsity == 0.5


def test_dashboard_trains_and_overlays_runs():
    dash = Dashboard(bp.RunConfig(dataset="synthetic", epochs=2, fcn_hidden=(16, 8)), redraw_every=0.0)
    dash.form.set(method="none", epochs=2)
    dash.button.click()
    dash.raise_if_failed()  # waits for the background run
    dash.form.set(method="bayes-magnitude", sparsity=0.8)
    dash.button.click()
    dash.raise_if_failed()
    assert len(dash.runs) == 2 and dash.progress.value == 2
    assert "final test accuracy" in dash.status.value
    assert abs(dash.last_result.final_sparsity - 0.8) <= 0.005
    assert dash.draws >= 2 and dash.figure.value[:8] == b"\x89PNG\r\n\x1a\n" and dash.figure.layout.display == ""
    assert not dash.running and dash.stop_button.disabled and 0 < dash.draw_fraction < 1


def test_stop_ends_the_run_after_the_current_epoch_and_keeps_it():
    dash = Dashboard(bp.RunConfig(dataset="synthetic", epochs=500, fcn_hidden=(8,), method="bayes-magnitude",
                                  sparsity=0.5), draw_budget=0.0)
    dash.button.click()  # returns at once: the run goes on in a background thread
    assert dash.running and not dash.stop_button.disabled
    dash.stop_button.click()  # what a click in the browser does, between two epochs
    result = dash.wait(timeout=120)
    dash.raise_if_failed()
    assert not dash.running, "the run did not stop"
    assert result.status == "stopped" and 1 <= len(result.history) < 500
    assert list(dash.runs) == ["bayes-magnitude 50% (s0)"] and dash.results["bayes-magnitude 50% (s0)"] is result
    assert "stopped after epoch" in dash.status.value and "kept" in dash.status.value
    assert dash.progress.bar_style == "warning" and dash.stop_button.disabled and not dash.button.disabled
    assert dash.draws == 1  # the stopped run's curves are drawn once, at the end
    assert abs(result.final_sparsity - 0.5) <= 0.01  # what was trained is the model that is kept


def test_train_while_running_queues_and_stop_cancels_the_queue():
    dash = Dashboard(bp.RunConfig(dataset="synthetic", epochs=400, fcn_hidden=(8,), method="none"), draw_budget=0.0)
    dash.button.click()
    dash.form.set(method="magnitude", epochs=2)
    dash.button.click()  # queued: it starts when the first run ends
    dash.form.set(method="random", epochs=2)
    dash.button.click()
    assert dash.queued >= 1
    dash.stop()
    dash.wait(timeout=120)
    assert list(dash.runs) == ["none (s0)"] and dash.last_result.status == "stopped" and dash.queued == 0
    dash.form.set(method="magnitude", sparsity=0.5)
    dash.button.click()
    dash.form.set(method="random")
    dash.button.click()
    dash.raise_if_failed()
    assert list(dash.runs) == ["none (s0)", "magnitude 50% (s0)", "random 50% (s0)"]
    assert all(r.status == "ok" for k, r in dash.results.items() if k != "none (s0)")
    dash.button.click()  # the same settings again: a second run, not a replaced one
    dash.raise_if_failed()
    assert list(dash.runs)[-1] == "random 50% (s0) #2" and len(dash.runs) == 4


def test_redraw_policy_follows_the_budget():
    cfg = bp.RunConfig(dataset="synthetic", epochs=6, fcn_hidden=(8,), method="none")
    every = Dashboard(cfg, redraw_every=0.0, draw_budget=1e9, every_epoch_up_to=0)
    every.train()
    assert every.draws == 6  # every epoch
    final_only = Dashboard(cfg, redraw_every=0.0, draw_budget=0.0, every_epoch_up_to=0)
    final_only.train()
    assert final_only.draws == 1 and len(final_only.runs) == 1
    short = Dashboard(cfg, draw_budget=0.0)  # the defaults: a short run redraws every epoch, whatever the budget
    short.train()
    assert short.draws == 6
    queue = Dashboard(cfg, redraw_every=0.0, draw_budget=0.0, every_epoch_up_to=0)
    for method in ("none", "magnitude", "random"):
        queue.form.set(method=method)
        queue.button.click()
    queue.wait()
    assert len(queue.runs) == 3 and queue.draws <= 3


def test_positive_fields_get_log_sliders_over_their_ui_range_and_beta_reaches_zero():
    from bayesprune.core.config import BOUNDS, config_fields

    form = ConfigControls(bp.RunConfig(prior_sigma=0.03, beta=1.0))
    sigma = form.controls["prior_sigma"]
    assert isinstance(sigma, widgets.FloatLogSlider)
    assert (10 ** sigma.min, 10 ** sigma.max) == pytest.approx((1e-3, 10.0))  # prior_sigma's ui range
    sigma.value = 0.003
    assert form.config().prior_sigma == pytest.approx(0.003) and sigma.readout_format == ".3g"  # not "0.00"
    for f in config_fields():  # every float field on (0, inf) or [0, inf) with a ui range slides on a log scale
        lo, hi = BOUNDS.get(f.name, (None, None, 0, 0))[:2]
        if f.metadata.get("widget") and lo is not None and lo >= 0 and "ui" in f.metadata and \
                isinstance(getattr(bp.RunConfig(), f.name), float) and (hi is None or hi > 1):
            c = form.controls[f.name]
            assert isinstance(getattr(c, "slider", c), widgets.FloatLogSlider), f.name
    beta = form.controls["beta"]
    beta.value = 0
    assert form.config().beta == 0.0 and beta.slider.disabled  # a log slider has no 0: the box gives exactly 0
    beta.value = 1e-6  # outside the ui range: the range widens, the value is kept
    assert form.config().beta == pytest.approx(1e-6) and not beta.slider.disabled
    assert ConfigControls(bp.RunConfig(beta=0.0)).config().beta == 0.0


def test_controls_that_do_not_apply_to_the_method_are_disabled():
    form = ConfigControls(bp.RunConfig(method="bayes-magnitude"))
    c = form.controls
    assert not any(x.disabled for x in c.values())
    c["method"].value = "magnitude"  # no gate: its controls are greyed out, the pruning ones stay
    assert c["beta"].disabled and c["prior_sigma"].disabled and c["gate"].disabled and c["likelihood"].disabled
    assert not c["sparsity"].disabled and not c["schedule"].disabled and not c["final_prune"].disabled
    c["method"].value = "none"  # the baseline: no target, no schedule
    assert c["sparsity"].disabled and c["schedule"].disabled and c["regrow"].disabled
    assert not c["epochs"].disabled and not c["seed"].disabled and not c["dataset"].disabled
    c["method"].value = "bayes-random"
    assert not any(x.disabled for x in c.values())


def test_the_live_figure_is_plot_curves(monkeypatch):
    from bayesprune.runs import plots

    calls = []
    real = plots.plot_curves

    def spy(*a, **k):
        calls.append(k.get("ax"))
        return real(*a, **k)

    monkeypatch.setattr(plots, "plot_curves", spy)
    dash = Dashboard(bp.RunConfig(dataset="synthetic", epochs=3, fcn_hidden=(8,), method="bayes-magnitude",
                                  schedule="gradual", gate="immediate", sparsity=0.5))
    dash.train()
    assert dash.draws == 3 and len(calls) == 3  # every draw goes through plot_curves ...
    assert len({tuple(map(id, ax)) for ax in calls}) == 1 and len(calls[0]) == 4  # ... on the same four axes
    assert dash._fig.ax_bf.get_yscale() == "symlog"


def test_dashboard_shows_errors_instead_of_swallowing_them(tmp_path):
    dash = Dashboard(bp.RunConfig(dataset="mnist", data_dir=str(tmp_path), epochs=1))
    dash.button.click()
    dash.wait()
    assert isinstance(dash.last_error, bp.DatasetNotFoundError)
    assert "error" in dash.status.value and "not found" in dash.status.value
    assert dash.progress.bar_style == "danger" and not dash.button.disabled and not dash.running
    assert "DatasetNotFoundError" in "".join(o.get("text", "") for o in dash.errors.outputs)
    with pytest.raises(RuntimeError, match="last training run failed"):
        dash.raise_if_failed()


def test_error_inside_the_epoch_callback_is_shown(monkeypatch):
    dash = Dashboard(bp.RunConfig(dataset="synthetic", epochs=1, fcn_hidden=(8,)))

    def broken(*a, **k):
        raise ZeroDivisionError("plot failed")

    monkeypatch.setattr(dash, "_draw", broken)
    dash.train()
    assert isinstance(dash.last_error, ZeroDivisionError)
    assert "plot failed" in dash.status.value


@pytest.fixture(scope="module")
def digits_x():
    return bp.load_dataset(bp.RunConfig(dataset="digits")).x_test[:64]


def test_explorer_recomputes_once_per_release_and_says_so(digits_x):
    ex = DistanceExplorer(digits_x, 10, width=16, masks=5)
    for name in ("width", "rate", "masks"):
        assert ex.controls[name].continuous_update is False  # no recompute per intermediate slider value
    assert max(ex.controls["width"].options) <= 1024
    d = ex.compute()
    assert len(d) == 5 and ex.computes == 1 and "5 masks" in ex.status.value and ex.image.value[:4] == b"\x89PNG"
    ex.controls["rate"].value = 0.3  # one release = one recompute
    assert ex.computes == 2 and ex.last["distance"].size == 5
    ex.set(width=32, rate=0.5, masks=4)  # several controls, one recompute
    assert ex.computes == 3 and len(ex.last) == 4
    assert not any(c.disabled for c in ex.controls.values())  # "computing…" is over


def test_explorer_time_cap_keeps_an_update_short(digits_x):
    ex = DistanceExplorer(digits_x, 10, width=16, masks=200, max_seconds=0.0)
    d = ex.compute()
    assert len(d) == 1 and "time cap: 1 of 200 masks" in ex.status.value


@pytest.mark.slow
def test_widgets_work_with_ipywidgets_7(ipywidgets7):
    path = ipywidgets7
    code = textwrap.dedent("""
        import ipywidgets, bayesprune as bp
        from bayesprune.ui.widgets import Dashboard, DistanceExplorer
        assert ipywidgets.__version__.startswith("7.7"), ipywidgets.__version__
        dash = Dashboard(bp.RunConfig(dataset="synthetic", epochs=300, fcn_hidden=(8,)), draw_budget=0.0)
        dash.widget()
        dash.button.click(); dash.stop_button.click(); r = dash.wait(120); dash.raise_if_failed()
        assert r.status == "stopped" and dash.figure.value[:4] == b"\\x89PNG", r.status
        dash.form.set(method="random", epochs=2); dash.button.click(); dash.raise_if_failed()
        assert len(dash.runs) == 2
        x = bp.load_dataset(bp.RunConfig(dataset="digits")).x_test[:32]
        ex = DistanceExplorer(x, 10, width=16, masks=3); ex.widget()
        ex.controls["rate"].value = 0.3
        assert ex.computes == 1 and len(ex.last) == 3
        print("ok", ipywidgets.__version__)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(ROOT)]), MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith("ok 7.7")
