"""Hybrid BP/ES vs backprop only vs the control (paired seeds), and the ES phase's wall-time cost with
1 vs 2 workers.

    # 1. paired runs (one process per arm can run side by side; each run writes one JSON)
    python benchmarks/bench_hybrid.py compare --arm hybrid   --seeds 0 1 2 3 4 --data-root DATA
    python benchmarks/bench_hybrid.py compare --arm baseline --seeds 0 1 2 3 4 --data-root DATA
    python benchmarks/bench_hybrid.py compare --arm control  --seeds 0 1 2 3 4 --data-root DATA
    # 2. ES-phase scaling: the same phase with 1 and 2 workers
    python benchmarks/bench_hybrid.py scaling --data-root DATA
    # 3. statistics, plot, benchmarks/results/hybrid.md
    python benchmarks/bench_hybrid.py summarize

Runs in-process (through evoplat.run); every number in the report comes from
the JSON files these commands write under benchmarks/results/hybrid_runs/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "results" / "hybrid_runs"
CONFIG = HERE.parent / "experiments" / "hybrid_cpu.yaml"
# control: the ES phases' schedule, subset, validation examples and budget, spent on gradient descent
ARMS = {"hybrid": ["hybrid.es_enabled=true"], "baseline": ["hybrid.es_enabled=false"],
        "control": ["hybrid.es_enabled=true", "hybrid.phase_kind=backprop"]}
# paired differences reported when both arms ran the same seeds: (minuend, subtrahend)
PAIRS = (("hybrid", "baseline"), ("control", "baseline"), ("hybrid", "control"))


def run_once(overrides: list[str], data_root: str) -> dict:
    import evoplat

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = evoplat.run(CONFIG, run_dir=Path(tmp) / "run", overrides=overrides, data_root=data_root)
        wall = time.perf_counter() - t0
        rows = [{k: v for k, v in r.items() if v == v} for r in result.metrics.to_dict("records")]
    return {"overrides": overrides, "summary": result.summary, "rows": rows, "wall_s": wall}


def machine() -> dict:
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "load_avg": os.getloadavg()}


def cmd_compare(args) -> None:
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        over = [f"seed={seed}", *ARMS[args.arm], *args.set]
        out = run_once(over, args.data_root)
        out.update(arm=args.arm, seed=seed, machine=machine(), command=" ".join(sys.argv),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        (runs / f"compare_{args.arm}_seed{seed}.json").write_text(json.dumps(out, indent=1, default=float))
        print(f"{args.arm} seed {seed}: test_acc={out['summary']['test_acc']:.4f} wall={out['wall_s']:.0f}s",
              flush=True)


def cmd_scaling(args) -> None:
    """One ES phase over the last 3 layers (no feature cache: every member is a full forward pass)."""
    RUNS.mkdir(parents=True, exist_ok=True)
    for workers in args.workers:
        over = ["hybrid.epochs=1", "hybrid.es_every=1", "hybrid.subset=last_k", "hybrid.last_k=3",
                f"hybrid.es_generations={args.generations}", f"hybrid.es_popsize={args.popsize}",
                f"hybrid.fitness_examples={args.examples}", "hybrid.max_steps_per_epoch=20",
                f"runtime.num_workers={workers}", "runtime.chunk_size=4", "run.eval_every=1000", *args.set]
        out = run_once(over, args.data_root)
        row = out["rows"][-1]
        out.update(workers=workers, machine=machine(), command=" ".join(sys.argv),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        (RUNS / f"scaling_w{workers}.json").write_text(json.dumps(out, indent=1, default=float))
        print(f"workers={workers}: es_s={row['es_s']:.1f} es_eval_s={row['es_eval_s']:.1f}", flush=True)


# Two-sided 95% Student t quantiles by degrees of freedom (no scipy in the environment).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 29: 2.045}


def paired_stats(diff) -> dict:
    """Mean paired difference with a two-sided 95% t interval."""
    import numpy as np
    d = np.asarray(diff, dtype=float)
    n, mean = len(d), float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    t = T975.get(n - 1, 1.96)
    half = t * sd / np.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half, "t": mean / (sd / np.sqrt(n))}


def load_arms(runs: Path) -> dict:
    """{arm: {seed: run JSON}} for every arm (empty when not run)."""
    by = {arm: {} for arm in ARMS}
    for f in sorted(runs.glob("compare_*.json")):
        d = json.loads(f.read_text())
        by[d["arm"]][d["seed"]] = d
    return by


def paired_differences(by: dict) -> dict:
    """{(a, b): (seeds, stats of a - b in pp)} for each pair of PAIRS that shares seeds."""
    import numpy as np
    out = {}
    for a, b in PAIRS:
        seeds = sorted(set(by[a]) & set(by[b]))
        if seeds:
            diff = [100 * (by[a][s]["summary"]["test_acc"] - by[b][s]["summary"]["test_acc"]) for s in seeds]
            out[(a, b)] = (seeds, paired_stats(np.array(diff)))
    return out


def summarize(runs: Path, results: Path, plot_name: str = "hybrid_vs_backprop.png",
              title: str = "VGG16 x1/8 on CIFAR-10 (CPU preset)") -> None:
    """Statistics and plot from the JSON files; prints the Markdown tables for hybrid.md."""
    import numpy as np
    by = load_arms(runs)
    seeds = sorted(set(by["hybrid"]) & set(by["baseline"]))
    acc = {arm: np.array([by[arm][s]["summary"]["test_acc"] for s in seeds]) for arm in ("baseline", "hybrid")}
    diff = acc["hybrid"] - acc["baseline"]
    st = paired_stats(100 * diff)
    print("| seed | backprop only | hybrid | difference (pp) | hybrid: last ES phase's own effect (pp) |")
    print("|---|---|---|---|---|")
    for i, s in enumerate(seeds):
        last = by["hybrid"][s]["rows"][-1]
        own = 100 * (last["test_acc"] - last["pre_es_test_acc"]) if "pre_es_test_acc" in last else float("nan")
        print(f"| {s} | {100 * acc['baseline'][i]:.2f} | {100 * acc['hybrid'][i]:.2f} | {100 * diff[i]:+.2f} "
              f"| {own:+.2f} |")
    for arm in ("baseline", "hybrid"):
        print(f"{arm}: mean {100 * acc[arm].mean():.2f} % std {100 * acc[arm].std(ddof=1):.2f} pp (n={len(seeds)})")
    print(f"paired difference: {st['mean']:+.2f} pp, 95% CI [{st['lo']:+.2f}, {st['hi']:+.2f}], t={st['t']:.2f} (df={st['n'] - 1})")
    pairs = paired_differences(by)
    if by["control"]:
        ctl = np.array([by["control"][s]["summary"]["test_acc"] for s in sorted(by["control"])])
        print(f"control: mean {100 * ctl.mean():.2f} % std {100 * ctl.std(ddof=1):.2f} pp (n={len(ctl)})")
        for (a, b), (ps, p) in pairs.items():
            print(f"paired difference {a} - {b}: {p['mean']:+.2f} pp, 95% CI [{p['lo']:+.2f}, {p['hi']:+.2f}], "
                  f"t={p['t']:.2f} (df={p['n'] - 1}, seeds {ps})")
    es_s = [r["es_s"] for s in seeds for r in by["hybrid"][s]["rows"] if r.get("es_ran")]
    bp_s = [r["bp_s"] for s in seeds for r in by["hybrid"][s]["rows"]]
    walls = {arm: [by[arm][s]["wall_s"] for s in seeds] for arm in ("baseline", "hybrid")}
    print(f"ES phase: mean {np.mean(es_s):.1f} s (n={len(es_s)}); BP epoch: mean {np.mean(bp_s):.1f} s; "
          f"run wall: baseline {np.mean(walls['baseline']):.0f} s, hybrid {np.mean(walls['hybrid']):.0f} s")
    ctl_s = [r["es_s"] for d in by["control"].values() for r in d["rows"] if r.get("es_ran")]
    if ctl_s:
        print(f"control phase: mean {np.mean(ctl_s):.1f} s (n={len(ctl_s)})")
    for f in sorted(runs.glob("scaling_w*.json")):
        d = json.loads(f.read_text())
        r = d["rows"][-1]
        print(f"scaling workers={d['workers']}: es_s={r['es_s']:.1f} es_eval_s={r['es_eval_s']:.1f} "
              f"dims={r['es_dims']} load_avg={d['machine']['load_avg']}")
    plot(by, pairs, results / plot_name, title)


LABELS = {"baseline": "backprop only", "control": "control (BP on val)", "hybrid": "hybrid BP+ES"}


def plot(by: dict, pairs: dict, out: Path, title: str) -> None:
    """Left: test accuracy per seed across the arms that ran; right: each paired difference."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    arms = [arm for arm in ("baseline", "control", "hybrid") if by[arm]]
    seeds = sorted(set.intersection(*(set(by[arm]) for arm in arms)))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for s in seeds:
        a.plot(range(len(arms)), [100 * by[arm][s]["summary"]["test_acc"] for arm in arms], "o-", color="gray",
               alpha=0.7)
    a.set_xticks(range(len(arms)), [LABELS[arm] for arm in arms])
    a.set_ylabel("test accuracy (%)")
    a.set_title("paired by seed")
    for x, ((m, n), (ps, st)) in enumerate(pairs.items()):
        b.errorbar([x], [st["mean"]], yerr=[[st["mean"] - st["lo"]], [st["hi"] - st["mean"]]], fmt="o", capsize=6,
                   color="tab:blue", label="mean, 95% CI" if x == 0 else None)
        d = [100 * (by[m][s]["summary"]["test_acc"] - by[n][s]["summary"]["test_acc"]) for s in ps]
        b.scatter(np.zeros(len(d)) + x + 0.1, d, color="gray", label="seeds" if x == 0 else None)
    b.axhline(0.61, color="tab:red", ls="--", label="paper: +0.61 pp")
    b.axhline(0, color="black", lw=0.5)
    names = [f"{m} - {n}" for m, n in pairs]
    b.set_xticks(range(len(names)) if len(names) > 1 else [], names if len(names) > 1 else [])
    b.set_ylabel("hybrid - backprop (pp)" if len(names) == 1 else "paired difference (pp)")
    b.legend(fontsize=8)
    fig.suptitle(f"Hybrid BP/ES vs backprop, {title}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")



if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--arm", choices=list(ARMS), required=True)
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    s = sub.add_parser("scaling")
    s.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    s.add_argument("--generations", type=int, default=3)
    s.add_argument("--popsize", type=int, default=8)
    s.add_argument("--examples", type=int, default=1000)
    for q in (c, s):
        q.add_argument("--data-root", default="/work/shared/data/cifar10.npz")
        q.add_argument("--set", action="append", default=[], help="extra config override KEY=VALUE")
    m = sub.add_parser("summarize")
    m.add_argument("--plot", default="hybrid_vs_backprop.png", help="plot file name under results/")
    m.add_argument("--title", default="VGG16 x1/8 on CIFAR-10 (CPU preset)")
    for q in (c, m):
        q.add_argument("--runs", default=str(RUNS), help="folder of the run JSON files (one per arm and seed)")
    a = p.parse_args()
    if a.cmd == "summarize":
        summarize(Path(a.runs), HERE / "results", a.plot, a.title)
    else:
        {"compare": cmd_compare, "scaling": cmd_scaling}[a.cmd](a)
