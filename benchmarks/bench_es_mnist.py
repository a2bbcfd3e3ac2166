"""ES on full MNIST with an MLP of ~100k parameters, popsize >= 200: test accuracy, wall time, curve.

Target (issue 2): test accuracy >= 90%.
    python benchmarks/bench_es_mnist.py --data-root DATA_DIR [--set es.generations=300 ...]
        [--config experiments/es_mnist_pgpe.yaml --name es_mnist_pgpe]     (results/<name>.md)
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, header, write  # noqa: E402

from evoplat.cli import main as evoplat_main  # noqa: E402


def run(args) -> None:
    run_dir = Path(args.run_dir)
    argv = ["run", args.config, "--data-root", args.data_root, "--run-dir", str(run_dir), "--overwrite"]
    for s in args.set:
        argv += ["--set", s]
    assert evoplat_main(argv) == 0
    evoplat_main(["report", str(run_dir)])
    t = pq.read_table(run_dir / "metrics.parquet").to_pandas()
    ev = t.dropna(subset=["test_acc"])
    final = ev.iloc[-1]
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(run_dir / "accuracy.png", RESULTS / f"{args.name}_accuracy.png")
    lines = [header(f"ES on MNIST, MLP 784-128-10 (101,770 parameters), {final_strategy(run_dir)}"),
             f"- config: `{args.config}` with overrides {args.set or 'none'}; popsize {int(final['popsize'])}",
             f"- **final test accuracy {100 * final['test_acc']:.2f}%** (target >= 90%: "
             f"{'met' if final['test_acc'] >= 0.90 else 'NOT met'}), validation {100 * final['val_acc']:.2f}%",
             f"- wall time {final['wall_time']:.0f} s for {int(final['generation'])} generations "
             f"({final['wall_time'] / final['generation']:.2f} s/generation, mean "
             f"{t['evals_per_s'].mean():.0f} member evaluations/s)", "",
             "| generation | train loss | val acc | test acc | wall time (s) |", "|---:|---:|---:|---:|---:|"]
    for _, r in ev.iterrows():
        lines.append(f"| {int(r['generation'])} | {r['train_loss']:.4f} | {100 * r['val_acc']:.2f}% | "
                     f"{100 * r['test_acc']:.2f}% | {r['wall_time']:.0f} |")
    lines.append(f"\n![learning curve]({args.name}_accuracy.png)\n")
    write(args.name, "\n".join(lines))


def final_strategy(run_dir: Path) -> str:
    import yaml
    return yaml.safe_load((run_dir / "config.yaml").read_text())["es"]["strategy"]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--config", default="experiments/es_mnist.yaml")
    p.add_argument("--run-dir", default="runs/bench_es_mnist")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--name", default="es_mnist", help="results file name (results/<name>.md)")
    run(p.parse_args())
