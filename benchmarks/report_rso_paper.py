"""Report of the RSO paper-configuration runs kept under benchmarks/results/runs/.

The run (experiments/rso_mnist.yaml: the paper's network, batch 5000, all 60,000 training images, sigma
annealed over 50 cycles) is resumed across sessions:

    evoplat run --resume benchmarks/results/runs/rso_mnist_paper --data-root DATA --set run.max_steps=35

The sharded run of the same configuration (2 shards of 64 on 2 workers, a Jacobi-style approximation
of the sequential sweep) lives beside it, for the gap between the two:

    evoplat run experiments/rso_mnist.yaml --data-root DATA --set rso.sharded=true \
        --set runtime.num_workers=2 --set run.max_steps=35 --run-dir benchmarks/results/runs/rso_mnist_paper_sharded
    evoplat run --resume benchmarks/results/runs/rso_mnist_paper_sharded --data-root DATA --set run.max_steps=35

This script reads their metrics and writes results/rso_paper.md: test accuracy after every layer group
and after every finished cycle, beside the paper's figures (98% after 5 cycles, 99.1% after 50), and the
sharded run's accuracy and its gap to the sequential one at every cycle both have finished.

    python benchmarks/report_rso_paper.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, write  # noqa: E402

RUN = Path(__file__).resolve().parent / "results" / "runs" / "rso_mnist_paper"
SHARDED = RUN.with_name("rso_mnist_paper_sharded")
PAPER = {5: "98%", 50: "99.1%"}     # the paper's MNIST figures by cycles done
STEPS_PER_CYCLE = 7                 # fc + 6 conv blocks (BN folded into its block)


def sweeps(run: Path) -> pd.DataFrame:
    m = pd.read_parquet(run / "metrics.parquet")
    return m[m["phase"] == "sweep"].sort_values("step")


def verdict(row) -> str:
    """The 5-cycle result against the paper's 98%, in the words BENCHMARKS.md uses."""
    acc, best = 100 * row["test_acc"], 100 * row["best_test_acc"]
    word = "reproduced" if acc >= 98.0 else f"not reproduced ({98.0 - acc:.2f} points short)"
    return (f"Against the paper: {acc:.2f}% test accuracy after 5 cycles (best seen during the run {best:.2f}%) vs "
            f"98%: **{word}**. The 50-cycle figure (99.1%) was not run: at about 87 minutes per cycle on 2 cores "
            f"it would take about 72 hours.")


def gap_lines() -> list[str]:
    """Sequential vs sharded test accuracy after each cycle both runs have finished."""
    if not (SHARDED / "metrics.parquet").exists():
        return ["", "Sharded run (2 shards of 64 on 2 workers): not started."]
    seq, sh = sweeps(RUN), sweeps(SHARDED)
    done = int(sh["step"].max())
    lines = ["", f"Sharded run (`benchmarks/results/runs/rso_mnist_paper_sharded`: 2 shards of 64 on 2 workers, "
             f"merge guard on; {done} of {5 * STEPS_PER_CYCLE} steps done). Test accuracy after each finished cycle:", "",
             "| cycles done | sequential | sharded | sharded - sequential (points) | merges overruled in the cycle |",
             "|---:|---:|---:|---:|---:|"]
    for c in range(1, done // STEPS_PER_CYCLE + 1):
        step = c * STEPS_PER_CYCLE
        b = sh[sh["step"] == step].iloc[0]
        overruled = int(sh[(sh["step"] > step - STEPS_PER_CYCLE) & (sh["step"] <= step)]["merges_overruled"].sum())
        a = seq[seq["step"] == step]
        left = f"{100 * a.iloc[0]['test_acc']:.2f}%" if len(a) else "(not yet)"
        diff = f"{100 * (b['test_acc'] - a.iloc[0]['test_acc']):+.2f}" if len(a) else ""
        lines.append(f"| {c} | {left} | {100 * b['test_acc']:.2f}% | {diff} | {overruled} |")
    if done % STEPS_PER_CYCLE:
        last = sh.iloc[-1]
        lines.append(f"| (step {done}: cycle {int(last['cycle']) + 1}, {last['layer']}) | | "
                     f"{100 * last['test_acc']:.2f}% | | |")
    return lines


def main() -> None:
    m = sweeps(RUN)
    done = int(m["step"].max())
    lines = [header("RSO, the paper's configuration: 5 cycles on full MNIST at batch 5000, resumed across sessions"),
             f"- run directory: `benchmarks/results/runs/rso_mnist_paper` (committed; `--resume` continues it); "
             f"{done} of {5 * STEPS_PER_CYCLE} steps done (a step is one layer group's sweep)",
             "- wall times are cumulative and include long stretches beside other work (paused or at nice 19): "
             "not a timing; cycle 4 (steps 22-28), on a machine idle but for one 10-minute test run during steps "
             "24-25, took 87 minutes (block1's sweep alone 41), not the 32 minutes once estimated from 8 trials per tensor",
             "- steps 1-5 and 7 reproduce the first cycle of the 2026-11-24 run of the same configuration "
             "(results/rso.md, 3b) to the printed digits; step 6 differs slightly (78.99% vs 79.16% test, 13 vs "
             "14 rounding-guard re-decisions), not investigated",
             "- steps 1-12 ran on a 2-core AMD EPYC host (2026-11-24 and 2026-12-02), steps 13-19 on a 2-core Intel "
             "Xeon host (2026-12-05): block1's sweep at about 55 trials per minute (sampled; an earlier sample of "
             "about 130 on the AMD host was not borne out there later, see the next line), steps 17-19 (block4, block3, block2; machine otherwise idle) in 317, "
             "568 and 1073 s, so a cycle there takes roughly 80-90 minutes",
             "- steps 20-31 ran on a 2-core AMD EPYC host again (2026-12-05, 07:54-10:39 UTC), at about the Intel "
             "host's speed: block1's sweep at about 57 trials per minute (sampled), steps 22-28 in 17, 215, 392, 828, "
             "957, 2435 and 366 s",
             "- steps 32-35 ran on the AMD host (2026-12-05, 10:59-12:36 UTC) beside one 10-minute test run and a "
             "few benchmark minutes (the run paused meanwhile)", "",
             "Test accuracy (all 10,000 test images) after each finished cycle:", "",
             "| cycles done | test acc | best so far | train loss | paper |", "|---:|---:|---:|---:|---|"]
    for c in range(1, done // STEPS_PER_CYCLE + 1):
        row = m[m["step"] == c * STEPS_PER_CYCLE].iloc[0]
        lines.append(f"| {c} | {100 * row['test_acc']:.2f}% | {100 * row['best_test_acc']:.2f}% | "
                     f"{row['train_loss']:.4f} | {PAPER.get(c, '')} |")
    if done < 5 * STEPS_PER_CYCLE:
        lines.append(f"| 5 | (not yet: {5 * STEPS_PER_CYCLE - done} steps to go) | | | 98% |")
    else:
        lines += ["", verdict(m[m["step"] == 5 * STEPS_PER_CYCLE].iloc[0])]
    lines += ["", "Every step:", "",
              "| step | cycle | layer | trials | accepted frac | train loss | test acc | guard_full | wall (s) |",
              "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {int(r['step'])} | {int(r['cycle'])} | {r['layer']} | {int(r['trials'])} | {r['accepted_frac']:.3f} | "
              f"{r['train_loss']:.4f} | {100 * r['test_acc']:.2f}% | {int(r['guard_full'])} | {r['wall_time']:.0f} |"
              for _, r in m.iterrows()]
    lines += gap_lines()
    write("rso_paper", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
