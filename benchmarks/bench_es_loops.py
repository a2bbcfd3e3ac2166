"""What `runtime.loop: auto` (the default) gives a user against the driver loop: the presets as
`evoplat run` runs them, each run a fresh process with its own local Ray instance, the two settings
taking turns.

For each preset (default: experiments/es_mnist.yaml, the demo, and es_mnist_lowrank.yaml) and round,
one run with `runtime.loop=driver` and one with `runtime.loop=auto`: generations/s between the first
evaluation step and the last generation (the run's own wall clock, start-up excluded), the process's
wall time, which loop ran (summary.json), the final test metric (test_acc, or test_return for a gym
task), and whether the two runs' final centers are bitwise equal. The fp32 GEMM peak (2 threads) is measured before and after.
Writes benchmarks/results/es_loops.md.

    python benchmarks/bench_es_loops.py --data-root DIR [--rounds 3] [--generations 100]
        [--presets es_mnist es_mnist_lowrank es_mnist_pgpe es_cartpole]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import git_rev, header, median_range, write  # noqa: E402
from _pes import gemm_gflops, uptime  # noqa: E402

from evoplat.platform.run.rundir import load_checkpoint  # noqa: E402
from evoplat.platform.strategies import StrategyState  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOOPS = ("driver", "auto")


def one_run(preset: str, loop: str, generations: int, data_root: str, run_dir: Path) -> dict:
    argv = [sys.executable, "-m", "evoplat", "run", str(ROOT / "experiments" / f"{preset}.yaml"),
            "--data-root", data_root, "--run-dir", str(run_dir), "--set", f"es.generations={generations}",
            "--set", f"runtime.loop={loop}"]
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        sys.exit(f"bench_es_loops.py: {preset} with runtime.loop={loop} failed: {lines[-1]}")
    wall = time.monotonic() - t0
    summary = json.loads((run_dir / "summary.json").read_text())
    metric = "test_acc" if "test_acc" in summary else "test_return"
    rows = pq.read_table(run_dir / "metrics.parquet").to_pandas()
    first = rows.dropna(subset=[metric]).iloc[0]          # the first evaluation step: start-up is behind
    last = rows.iloc[-1]
    ckpt = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    center = StrategyState.from_dict(load_checkpoint(ckpt)["strategy"]).center
    return {"loop": summary["loop"], "metric": metric, "test": summary[metric], "wall_s": wall,
            "generations": int(last["generation"]),
            "gen_s": (last["generation"] - first["generation"]) / (last["wall_time"] - first["wall_time"]),
            "center": center}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--generations", type=int, default=100, help="es.generations of every run, past each "
                    "preset's first evaluation step (es_mnist: 25); a preset with a target may stop earlier")
    ap.add_argument("--presets", nargs="+", default=["es_mnist", "es_mnist_lowrank"])
    args = ap.parse_args()
    missing = [p for p in args.presets if not (ROOT / "experiments" / f"{p}.yaml").is_file()]
    if missing:
        sys.exit(f"bench_es_loops.py: no preset experiments/{missing[0]}.yaml")
    load, peak0 = uptime(), gemm_gflops(2)
    runs = {(p, lp): [] for p in args.presets for lp in LOOPS}
    with tempfile.TemporaryDirectory(prefix="evoplat-loops-") as tmp:
        for r in range(args.rounds):
            for preset in args.presets:
                for loop in LOOPS:
                    res = one_run(preset, loop, args.generations, args.data_root, Path(tmp) / f"{preset}-{loop}-{r}")
                    runs[preset, loop].append(res)
                    print(preset, loop, {k: v for k, v in res.items() if k != "center"}, flush=True)
    peak1 = gemm_gflops(2)
    lines = [header("`runtime.loop: auto` (the default) against the driver loop, presets as `evoplat run` runs them"),
             f"- commit {git_rev()}; load before: `{load}`; fp32 GEMM peak (2 threads) {peak0:.0f} GFLOP/s before, "
             f"{peak1:.0f} after",
             f"- {args.rounds} rounds, {args.generations} generations a run, settings in turn (driver, auto) per "
             f"preset; each run a fresh `python -m evoplat run` process starting its own local Ray instance", "",
             "| preset | runtime.loop | loop that ran | generations/s, median [range] | process wall s | "
             "generations | test metric | vs driver | center = driver's |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for preset in args.presets:
        base = statistics.median(r["gen_s"] for r in runs[preset, "driver"])
        for loop in LOOPS:
            rs = runs[preset, loop]
            tests = ", ".join(sorted({f"{100 * r['test']:.2f}%" if r["metric"] == "test_acc" else
                                      f"return {r['test']:.1f}" for r in rs}))
            gens = ", ".join(sorted({str(r["generations"]) for r in rs}))
            same = all(torch.equal(a["center"], b["center"]) for a, b in zip(rs, runs[preset, "driver"]))
            lines.append(f"| {preset} | {loop} | {', '.join(sorted({r['loop'] for r in rs}))} | "
                         f"{median_range(r['gen_s'] for r in rs)} | {median_range((r['wall_s'] for r in rs), '{:.1f}')} | "
                         f"{gens} | {tests} | "
                         f"{statistics.median(r['gen_s'] for r in rs) / base:.2f}x | {'yes' if same else 'NO'} |")
    lines += ["", "generations/s: (last generation - first evaluation step) / the run's wall clock between them, the "
              "driver's evaluations and checkpoints included (with the workers' loop the next span runs meanwhile); "
              "process wall s: the whole `evoplat run`, Ray's start and the data included."]
    write("es_loops", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
