"""The classroom clock: each teaching notebook executed at its DEFAULTS, timed cell by cell.

    python benchmarks/time_notebooks.py                       # every notebook
    python benchmarks/time_notebooks.py --notebooks 03 04     # some of them (a prefix of the file name)
    python benchmarks/time_notebooks.py --out benchmarks/results/notebook_times

Each notebook runs in a fresh Jupyter kernel through papermill with no parameter changed (only a
fresh temporary ``out_dir`` for notebooks that cache runs, so no run is skipped), in a temporary working
folder.  Papermill records each cell's start and end time; from them this script reports

* the total time (first cell's start to last cell's end; the kernel's start-up is not in it),
* the time to the first figure: the end of the first cell with an ``image/png`` display output
  (a figure drawn inside a cell counts at that cell's end, so the real time can only be shorter),
* the slowest cell.

Beside them: the machine's float32 matmul rate (1024^3, this process's torch threads) and the load
average before and after each notebook (``/proc/loadavg``), because other processes on a shared
machine slow every number here.  Writes ``<out>.json`` and ``<out>.md``.  Timings are reported, never
asserted; the class limits (120 s in all, 20 s to the first figure) are flagged in the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
LIMIT_TOTAL, LIMIT_FIRST_FIGURE = 120.0, 20.0
#: Parameters that point at a cache folder: set to a fresh temporary folder so that every run is trained.
CACHE_PARAMETERS = ("out_dir",)


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return [float(v) for v in os.getloadavg()]


def matmul_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """Best-of float32 matmul rate, GFLOP/s: the yardstick for comparing machines and hours."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best, reps, t_end = float("inf"), 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end or reps < 5:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2 * n ** 3 / best / 1e9


def _when(s: str) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def cell_times(nb) -> list[dict]:
    """Per code cell: index, start and end (seconds after the first cell started), and whether it shows a figure."""
    rows = []
    for i, c in enumerate(nb.cells):
        meta = c.get("metadata", {}).get("papermill", {})
        if c.cell_type != "code" or not meta.get("start_time") or not meta.get("end_time"):
            continue
        image = any(o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})
                    for o in c.get("outputs", []))
        rows.append({"cell": i, "start": _when(meta["start_time"]), "end": _when(meta["end_time"]), "figure": image,
                     "first_line": c.source.splitlines()[0][:80] if c.source else ""})
    if rows:
        t0 = rows[0]["start"]
        for r in rows:
            r["start"], r["end"] = round(r["start"] - t0, 3), round(r["end"] - t0, 3)
            r["seconds"] = round(r["end"] - r["start"], 3)
    return rows


def time_notebook(path: Path, timeout: int, keep: Path | None = None) -> dict:
    import nbformat
    import papermill as pm

    with tempfile.TemporaryDirectory() as tmp:
        params_src = next((c.source for c in nbformat.read(path, as_version=4).cells
                           if "parameters" in c.metadata.get("tags", [])), "")
        params = {p: str(Path(tmp, p)) for p in CACHE_PARAMETERS if f"\n{p} = " in f"\n{params_src}"}
        out = Path(tmp, path.name)
        before, t0 = loadavg(), time.perf_counter()
        error = None
        try:
            pm.execute_notebook(str(path), str(out), parameters=params, kernel_name="python3", cwd=tmp,
                                progress_bar=False, execution_timeout=timeout)
        except Exception as exc:  # a failing notebook is reported, and the others still run
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        wall = time.perf_counter() - t0
        cells = cell_times(nbformat.read(out, as_version=4)) if out.exists() else []
        if keep is not None and out.exists():  # the executed notebook, outputs and all (e.g. to read the exercises)
            keep.mkdir(parents=True, exist_ok=True)
            (keep / path.name).write_bytes(out.read_bytes())
    figures = [c for c in cells if c["figure"]]
    slowest = max(cells, key=lambda c: c["seconds"]) if cells else None
    return {"notebook": path.name, "parameters_changed": sorted(params), "error": error,
            "total_s": cells[-1]["end"] if cells else None, "wall_with_kernel_start_s": round(wall, 2),
            "first_figure_s": figures[0]["end"] if figures else None,
            "first_figure_cell": figures[0]["cell"] if figures else None,
            "slowest_cell": slowest, "cells_over_5s": [c for c in cells if c["seconds"] > 5],
            "loadavg_before": before, "loadavg_after": loadavg(), "cells": cells}


def markdown(report: dict) -> str:
    def s(v):
        return "—" if v is None else f"{v:.1f}"

    lines = [f"# Notebook clock: each notebook at its defaults ({report['date']})", "",
             f"Machine: {report['machine']}, {report['cpus']} CPUs, torch threads {report['torch_threads']}, "
             f"float32 matmul {report['matmul_gflops_before']:.1f} GFLOP/s before and "
             f"{report['matmul_gflops_after']:.1f} after (1024^3). Produced by `python benchmarks/time_notebooks.py`.",
             "", "A figure drawn inside a cell counts at that cell's end. Load average = 1/5/15-minute averages from "
             "/proc/loadavg before each notebook: above the core count, other processes were running and every "
             "time here is longer than on a quiet machine.", "",
             f"| notebook | total s | first figure s | slowest cell (s) | cells > 5 s | load before | "
             f"within {LIMIT_TOTAL:.0f} s / {LIMIT_FIRST_FIGURE:.0f} s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["notebooks"]:
        ok_total = r["total_s"] is not None and r["total_s"] <= LIMIT_TOTAL
        ok_fig = r["first_figure_s"] is not None and r["first_figure_s"] <= LIMIT_FIRST_FIGURE
        slow = "—" if r["slowest_cell"] is None else f"{r['slowest_cell']['cell']} ({r['slowest_cell']['seconds']:.1f})"
        verdict = "error: " + r["error"] if r["error"] else (
            ("yes" if ok_total else "**no**") + " / " + ("yes" if ok_fig else ("no figure" if r["first_figure_s"]
                                                                               is None else "**no**")))
        lines.append(f"| {r['notebook']} | {s(r['total_s'])} | {s(r['first_figure_s'])} | "
                     f"{slow} | "
                     f"{', '.join(str(c['cell']) for c in r['cells_over_5s']) or '—'} | "
                     f"{' / '.join(f'{v:.2f}' for v in r['loadavg_before'])} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebooks", nargs="*", default=None, help="file-name prefixes (e.g. 03 04); default: all")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "notebook_times",
                    help="output path without extension: writes .json and .md")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run")
    ap.add_argument("--keep", type=Path, default=None, help="save the executed notebooks in this folder")
    args = ap.parse_args(argv)
    import torch

    paths = sorted(NB_DIR.glob("*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if any(p.name.startswith(x) for x in args.notebooks)]
    report = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.processor()
              or platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "python": sys.version.split()[0],
              "torch": torch.__version__, "limits_s": {"total": LIMIT_TOTAL, "first_figure": LIMIT_FIRST_FIGURE},
              "matmul_gflops_before": matmul_gflops(), "notebooks": []}
    for p in paths:
        r = time_notebook(p, args.timeout, args.keep)
        report["notebooks"].append(r)
        print(f"{p.name}: total {r['total_s']} s, first figure {r['first_figure_s']} s, load {r['loadavg_before']}"
              + (f", ERROR {r['error']}" if r["error"] else ""), flush=True)
    report["matmul_gflops_after"] = matmul_gflops()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 1 if any(r["error"] for r in report["notebooks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
