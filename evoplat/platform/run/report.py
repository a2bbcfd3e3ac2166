"""`evoplat report RUN_DIR`: a printed summary and PNG learning curves next to the metrics."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pyarrow.parquet as pq
import yaml

CURVES = [("fitness", ("fitness_mean", "fitness_max")), ("loss", ("train_loss", "val_loss", "test_loss")),
          ("accuracy", ("val_acc", "test_acc", "best_test_acc", "train_acc")),
          ("return", ("test_return", "test_return_min"))]


def _table(run: Path):
    metrics = run / "metrics.parquet"
    if not metrics.is_file():
        raise FileNotFoundError(f"report error: no metrics.parquet in {run}")
    return pq.read_table(metrics).to_pandas()


def run_labels(run: Path, table) -> tuple[str, str]:
    """(the unit of a step, the plot title "name (algorithm)") from summary.json/config.yaml/metrics."""
    unit = None
    if (run / "summary.json").is_file():
        unit = json.loads((run / "summary.json").read_text()).get("unit")
    if not unit and "phase" in table:
        # a run still going (no summary yet): the step rows' phase is the trainer's unit
        phases = table["phase"].dropna()
        phases = phases[phases != "final"]
        unit = phases.iloc[0] if len(phases) else None
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    algorithm = cfg.get("algorithm", "?")
    title = f"{cfg['name']} ({algorithm})" if cfg.get("name") else str(algorithm)
    return str(unit or "step"), title


def curve_figures(run_dir, table=None) -> dict:
    """One matplotlib Figure per curve group present in the metrics (not saved; see report())."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    run = Path(run_dir)
    table = _table(run) if table is None else table
    step = "step" if "step" in table else table.columns[0]
    unit, title = run_labels(run, table)
    figures = {}
    for name, cols in CURVES:
        present = [c for c in cols if c in table and table[c].notna().any()]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in present:
            s = table[[step, c]].dropna()
            ax.plot(s[step], s[c], label=c)
        ax.set_xlabel(unit)
        ax.set_ylabel(name)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        figures[name] = fig
    return figures


def _close(fig) -> None:
    import matplotlib.pyplot as plt
    plt.close(fig)


def tensorboard_command(run_dir) -> str:
    """The command that opens a run's TensorBoard event files (written by default; run.tensorboard)."""
    logdir = Path(run_dir) / "tensorboard"
    if not logdir.is_dir():
        raise FileNotFoundError(f"report error: no tensorboard/ in {run_dir} (run.tensorboard was off)")
    return f"tensorboard --logdir {shlex.quote(str(logdir))}"


def report(run_dir: str) -> list[Path]:
    run = Path(run_dir)
    table = _table(run)
    step = "step" if "step" in table else table.columns[0]
    print(f"run: {run}  rows: {len(table)}  last {step}: {table[step].iloc[-1]}")
    for col in ("test_acc", "val_acc", "best_test_acc", "train_loss", "wall_time"):
        if col in table and table[col].notna().any():
            s = table[col].dropna()
            best = "" if col == "wall_time" else f"  best={s.max() if 'acc' in col else s.min():.4f}"
            print(f"  {col:14s} last={s.iloc[-1]:.4f}{best}")
    if (run / "summary.json").is_file():
        print("  summary:", json.loads((run / "summary.json").read_text()))
    if (run / "model.pt").is_file():
        print(f"  trained network: evoplat.load_model({str(run)!r})")
    written = []
    for name, fig in curve_figures(run, table).items():
        out = run / f"{name}.png"
        fig.savefig(out, dpi=100)
        _close(fig)
        written.append(out)
        print(f"  wrote {out}")
    if (run / "enn.pt").is_file():   # a Grad-Instructor run: Grad-CAM of its ENN
        from evoplat.methods.grad_instructor.cam import save_gradcam_png
        png = save_gradcam_png(run / "enn.pt")   # None when the artefact holds no example image
        if png is not None:
            written.append(png)
            print(f"  wrote {png}")
    return written
