"""ipywidgets controls built from :class:`RunConfig`, and the training dashboard.

Only core widgets (ipywidgets 7.7+ and 8.x).  Choices and bounds come from the
config's own validation tables (:data:`CHOICES`, :data:`BOUNDS`), so a student
cannot pick a value that ``RunConfig`` would reject.  The Train button and the
headless path call the same method, :meth:`Dashboard.train`, so papermill
exercises the real callback with ``button.click()``.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import Any, Optional, Sequence

from .config import BOUNDS, CHOICES, RunConfig, config_fields, field_type, fields_where

#: The dashboard's controls: the fields whose metadata says ``widget=True``.
DEFAULT_FIELDS = tuple(fields_where(widget=True))


def available_devices() -> list[str]:
    """Device choices that RunConfig would accept on this machine."""
    import torch

    from .config import _mps_available

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if _mps_available():
        out.append("mps")
    return out


def control_for(name: str, value: Any):
    """One widget for one RunConfig field, derived from its type, choices, bounds and ``ui`` range."""
    import ipywidgets as w

    meta = next(f.metadata for f in config_fields() if f.name == name)
    style = {"description_width": "110px"}
    layout = w.Layout(width="340px")
    common = dict(description=name.replace("_", " "), style=style, layout=layout)
    kind = field_type(name)
    if name == "device":
        return w.Dropdown(options=available_devices(), value=value, **common)
    if name in CHOICES:
        return w.Dropdown(options=list(CHOICES[name]), value=value, **common)
    if kind is bool:
        return w.Checkbox(value=value, indent=False, **common)
    lo, hi, _, hi_inc = BOUNDS[name]
    ui_lo, ui_hi = meta.get("ui", (lo, hi))
    if kind is float and lo is not None and hi is not None:  # a bounded fraction, e.g. sparsity in [0, 1)
        top = hi if hi_inc else hi - 0.01  # the slider stops one step short of an open bound
        return w.FloatSlider(value=value, min=lo, max=top, step=0.01, readout_format=".2f", **common)
    if kind is float:  # (0, inf) or [0, inf): a log slider over the ui range, strictly positive
        return w.FloatLogSlider(value=max(value, ui_lo), base=10, min=math.log10(ui_lo), max=math.log10(ui_hi),
                                step=0.001, readout_format=".3g", **common)
    if kind is int:
        return w.IntSlider(value=value, min=int(ui_lo), max=int(ui_hi), **common)
    raise ValueError(f"no widget for RunConfig field {name!r}")


class ConfigControls:
    """A group of widgets that reads back as a validated RunConfig."""

    def __init__(self, base: RunConfig, fields: Sequence[str] = DEFAULT_FIELDS):
        self.base = base
        self.controls = {name: control_for(name, getattr(base, name)) for name in fields}

    def config(self) -> RunConfig:
        values = {name: c.value for name, c in self.controls.items()}
        for name in values:
            if field_type(name) is int and values[name] is not None:
                values[name] = int(values[name])
        if "prune_start_epoch" not in values and values.get("epochs", 1) < self.base.prune_start_epoch:
            values["prune_start_epoch"] = 1
        return self.base.replace(**values)

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            self.controls[name].value = value

    def box(self):
        import ipywidgets as w

        items = list(self.controls.values())
        half = math.ceil(len(items) / 2)
        return w.HBox([w.VBox(items[:half]), w.VBox(items[half:])])


def _label(cfg: RunConfig) -> str:
    extra = "" if cfg.method == "none" else f" {cfg.sparsity:.0%}"
    return f"{cfg.method}{extra} (s{cfg.seed})"


class Dashboard:
    """Controls, a Train button, a progress bar and live curves; runs can be overlaid.

    ``train()`` is what the button calls.  Errors are shown in the dashboard
    (and kept in ``last_error``), never swallowed; ``raise_if_failed()`` turns
    them into an exception for headless runs.
    """

    def __init__(self, base: Optional[RunConfig] = None, fields: Sequence[str] = DEFAULT_FIELDS,
                 progress_bar: bool = False, redraw_every: float = 1.0):
        import ipywidgets as w

        self.base = base or RunConfig()
        self.form = ConfigControls(self.base, fields)
        self.button = w.Button(description="Train", button_style="primary", icon="play")
        self.overlay = w.Checkbox(value=True, description="overlay previous runs", indent=False)
        self.clear_button = w.Button(description="Clear runs", icon="trash")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="epochs", bar_style="info")
        self.status = w.HTML("Pick settings and press <b>Train</b>.")
        self.status.add_class("bayesprune-status")  # a stable handle for browser tests
        self.plot = w.Output()
        self.errors = w.Output()
        self.runs: dict[str, Any] = {}
        self.results: dict[str, Any] = {}
        self.last_error: Optional[BaseException] = None
        self.last_result = None
        self._tqdm = progress_bar
        self.redraw_every = redraw_every  # seconds between live redraws; the last epoch always draws
        self.draw_seconds = 0.0
        self.draws = 0
        self.button.on_click(lambda _b: self.train())
        self.clear_button.on_click(lambda _b: self.clear())

    # ---------------------------------------------------------------- layout
    def widget(self):
        import ipywidgets as w

        return w.VBox([self.form.box(), w.HBox([self.button, self.clear_button, self.overlay]),
                       w.HBox([self.progress, self.status]), self.plot, self.errors])

    def _ipython_display_(self):  # pragma: no cover - used by Jupyter
        from IPython.display import display

        display(self.widget())

    # ---------------------------------------------------------------- actions
    def clear(self) -> None:
        self.runs.clear()
        self.results.clear()
        self.plot.clear_output()

    def _draw(self, current: dict[str, Any], cfg: RunConfig) -> None:
        import matplotlib.pyplot as plt
        import pandas as pd
        from IPython.display import display

        from .plots import plot_curves

        t0 = time.perf_counter()

        runs = dict(self.runs) if self.overlay.value else {}
        runs.update(current)
        fig = plot_curves({k: pd.DataFrame(v) if isinstance(v, list) else v for k, v in runs.items()},
                          title=f"{cfg.dataset} / {cfg.model}", beta=cfg.beta if cfg.is_bayesian else None)
        with self.plot:
            self.plot.clear_output(wait=True)
            display(fig)
        plt.close(fig)
        self.draw_seconds += time.perf_counter() - t0
        self.draws += 1

    def train(self):
        """Validate the controls, train with live curves, and return the RunResult (None on error)."""
        from .training import train

        self.last_error = None
        self.errors.clear_output()
        self.button.disabled = True
        try:
            cfg = self.form.config()
            label = _label(cfg)
            rows: list[dict[str, Any]] = []
            last_draw = [-math.inf]
            self.progress.max, self.progress.value, self.progress.bar_style = cfg.epochs, 0, "info"
            self.status.value = f"training <b>{label}</b> on {cfg.dataset} / {cfg.model} …"

            def on_epoch(row: dict[str, Any]) -> None:
                rows.append(row)
                self.progress.value = row["epoch"]
                self.status.value = (f"<b>{label}</b>: epoch {row['epoch']}/{cfg.epochs} · test acc "
                                     f"{row['test_acc']:.4f} · sparsity {row['sparsity']:.3f}")
                now = time.perf_counter()
                if row["epoch"] == cfg.epochs or now - last_draw[0] >= self.redraw_every:
                    self._draw({label: rows}, cfg)
                    last_draw[0] = time.perf_counter()

            result = train(cfg, callbacks=[on_epoch], progress=self._tqdm)
            self.runs[label] = result.history
            self.results[label] = result
            self.last_result = result
            self.progress.bar_style = "success"
            self.status.value = (f"<b>{label}</b> done: final test accuracy <b>{result.test_accuracy:.4f}</b> at "
                                 f"sparsity <b>{result.final_sparsity:.3f}</b> in {result.seconds:.1f}s")
            return result
        except Exception as exc:  # shown to the student, kept for raise_if_failed()
            self.last_error = exc
            self.progress.bar_style = "danger"
            self.status.value = f"<span style='color:#b00'><b>error:</b> {type(exc).__name__}: {exc}</span>"
            with self.errors:
                print("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            return None
        finally:
            self.button.disabled = False

    def raise_if_failed(self) -> None:
        if self.last_error is not None:
            raise RuntimeError(f"the last training run failed: {self.last_error}") from self.last_error
