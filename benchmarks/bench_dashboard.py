"""How much of an auto-train the dashboard spends plotting (notebook 03's auto-train, in a real kernel).

    python benchmarks/bench_dashboard.py [--epochs 15] [--methods none magnitude bayes-magnitude]
    python benchmarks/bench_dashboard.py --dataset mnist --data-dir ../shared/data --epochs 3

Runs the dashboard inside a Jupyter kernel (papermill), so figures are rendered as a student's
would be, in two ways: *sequential* (click Train, wait, click again: notebook 03's loop) and
*queued* (click Train once per method, then wait).  Prints, for each, the wall time, the number of
redraws, their seconds and their share of the auto-train; ``--out`` writes the same as JSON.
Timings are reported, never asserted (they depend on the machine and its load).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

CELL = '''
import json, time
import bayesprune as bp
base = bp.RunConfig(dataset=DATASET, epochs=EPOCHS, sparsity=0.9, regrow=True, device="cpu", **EXTRA)
# warm-up: the first optimizer, the first figure and the fonts cost seconds once per kernel, whatever the widget does
warm = bp.widgets.Dashboard(base.replace(epochs=1, method="none"))
warm.train()
out = {}
for mode in ("sequential", "queued"):
    dash = bp.widgets.Dashboard(base)
    t0 = time.perf_counter()
    for method in METHODS:
        dash.form.set(method=method)
        dash.button.click()
        if mode == "sequential":
            dash.raise_if_failed()
    dash.raise_if_failed()
    wall = time.perf_counter() - t0
    out[mode] = {"wall_s": wall, "draws": dash.draws, "draw_s": dash.draw_seconds,
                 "share_of_auto_train": dash.draw_seconds / wall}
print("RESULT", json.dumps(out))
'''


def main() -> None:
    import nbformat
    import papermill as pm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--methods", nargs="+", default=["none", "magnitude", "bayes-magnitude"])
    ap.add_argument("--out", type=Path, default=None, help="write the numbers to this JSON file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nb = nbformat.v4.new_notebook()
        extra = {k: v for k, v in (("data_dir", args.data_dir), ("train_size", args.train_size)) if v is not None}
        nb.cells = [nbformat.v4.new_code_cell(CELL.replace("EPOCHS", str(args.epochs)).replace("DATASET", repr(args.dataset))
                                              .replace("METHODS", repr(args.methods)).replace("EXTRA", repr(extra)))]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        src, dst = Path(tmp, "bench.ipynb"), Path(tmp, "out.ipynb")
        nbformat.write(nb, src)
        pm.execute_notebook(str(src), str(dst), kernel_name="python3", progress_bar=False, cwd=tmp)
        text = "".join(o.get("text", "") for o in nbformat.read(dst, as_version=4).cells[0].outputs)
    result = json.loads(text.split("RESULT", 1)[1])
    for mode, r in result.items():
        print(f"{mode:10s}: {r['wall_s']:6.1f}s auto-train, {r['draws']} redraws, {r['draw_s']:.1f}s = "
              f"{r['share_of_auto_train']:.1%} plotting")
    if args.out:
        args.out.write_text(json.dumps({"dataset": args.dataset, "epochs": args.epochs, "methods": args.methods, **result},
                                       indent=1))


if __name__ == "__main__":
    main()
