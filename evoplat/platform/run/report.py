"""`evoplat report RUN_DIR`: a printed summary and PNG learning curves next to the metrics."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

CURVES = [("fitness", ("fitness_mean", "fitness_max")), ("loss", ("train_loss", "val_loss", "test_loss")),
          ("accuracy", ("val_acc", "test_acc", "best_test_acc", "train_acc"))]


def report(run_dir: str) -> list[Path]:
    run = Path(run_dir)
    metrics = run / "metrics.parquet"
    if not metrics.is_file():
        raise FileNotFoundError(f"report error: no metrics.parquet in {run}")
    table = pq.read_table(metrics).to_pandas()
    step = "step" if "step" in table else table.columns[0]
    print(f"run: {run}  rows: {len(table)}  last {step}: {table[step].iloc[-1]}")
    for col in ("test_acc", "val_acc", "best_test_acc", "train_loss", "wall_time"):
        if col in table and table[col].notna().any():
            s = table[col].dropna()
            best = "" if col == "wall_time" else f"  best={s.max() if 'acc' in col else s.min():.4f}"
            print(f"  {col:14s} last={s.iloc[-1]:.4f}{best}")
    if (run / "summary.json").is_file():
        print("  summary:", json.loads((run / "summary.json").read_text()))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    for name, cols in CURVES:
        present = [c for c in cols if c in table and table[c].notna().any()]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in present:
            s = table[[step, c]].dropna()
            ax.plot(s[step], s[c], label=c)
        ax.set_xlabel(step)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = run / f"{name}.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
        print(f"  wrote {out}")
    if (run / "enn.pt").is_file():   # a Grad-Instructor run: Grad-CAM of its ENN
        from evoplat.methods.grad_instructor.cam import save_gradcam_png
        png = save_gradcam_png(run / "enn.pt")   # None when the artefact holds no example image
        if png is not None:
            written.append(png)
            print(f"  wrote {png}")
    return written
