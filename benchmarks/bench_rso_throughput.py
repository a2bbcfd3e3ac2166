"""Weight trials per second of RSO on the paper's MNIST network, batch 5000, three evaluation paths:
  full   - (a) three whole-network forward passes per weight (brute force)
  cached - (b) the authors' way: cached layer inputs, one candidate per forward pass
  fast   - ours: three candidates in one batched pass, only the touched channel recomputed, the next
           layer updated by a one-input-channel conv, pools folded into stride-2 convs
Every path runs the same trials (the first --trials scalars of every tensor, from the same weights);
their decisions and final weights must be identical. Per-tensor seconds per trial are measured, and a
cycle's time is estimated as sum(numel * s/trial) over tensors (an extrapolation, labelled so).

    .venv/bin/python benchmarks/bench_rso_throughput.py --data-root DATA_DIR --trials 3
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform

import torch

from evoplat.platform.config import build_config
from evoplat.platform.data import load_dataset
from evoplat.platform.models import build_model
from evoplat.methods.rso.search import RSOSearch


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"nproc={os.cpu_count()}, CPU {cpu}, {platform.platform()}, torch {torch.__version__}"


def make_search(mode, data, args):
    cfg = build_config({"algorithm": "rso", "seed": 72, "data": {"source": "synthetic"},
                        "model": {"name": "rso_mnist", "init_seed": 420},
                        "rso": {"batch_size": args.batch, "mode": mode, "cycles": 50}})
    net = build_model(cfg.model, data.input_shape, data.num_classes)
    return RSOSearch(net, data, cfg.rso, cfg.seed, record_decisions=True)


def run_modes(modes, data, args):
    """Tensor by tensor, the three paths one after the other (interleaved, so that a load change on the
    shared machine hits every path alike)."""
    searches = {m: make_search(m, data, args) for m in modes}
    res = {m: ([], [], 0) for m in modes}
    for ti, spec in enumerate(searches[modes[0]].order):
        for m in modes:
            search = searches[m]
            with torch.no_grad():
                search.prepare_group(0, spec.group)     # cache build, once per group: not timed
            st = search.sweep(0, ti, 0, args.trials)
            per, dec, guard = res[m]
            per.append((spec.name, spec.numel, st.seconds / st.trials))
            res[m] = (per, dec + st.decisions, guard + st.guard_full)
            print(f"{m:6s} {spec.name:22s} {st.seconds / st.trials * 1000:9.1f} ms/trial "
                  f"load {open('/proc/loadavg').read().split()[0]}", flush=True)
    return {m: (*res[m], 0.0, searches[m].params()) for m in modes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--trials", type=int, default=3, help="trials per tensor per path")
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--train-subset", type=int, default=10000, help="images cached (2 batches suffice: the "
                                                                     "cost of a trial does not depend on it)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/rso_throughput.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dcfg = build_config({"data": {"source": "mnist", "val_size": 0, "train_subset": args.train_subset}}).data
    data = load_dataset(dcfg, args.data_root)
    load_before = open("/proc/loadavg").read().strip()
    results = run_modes(("fast", "cached", "full"), data, args)
    load_after = open("/proc/loadavg").read().strip()
    same_dec = results["fast"][1] == results["cached"][1] == results["full"][1]
    same_w = all(torch.equal(results["fast"][4][k], results[m][4][k]) for m in ("cached", "full")
                 for k in results["fast"][4])
    lines = [f"## RSO weight trials/s, MNIST network, batch {args.batch} ({datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC)",
             "", f"- machine: {machine()}; torch threads {args.threads}",
             f"- load average before/after: `{load_before}` / `{load_after}` (machine shared with other engineers)",
             f"- command: `.venv/bin/python benchmarks/bench_rso_throughput.py --data-root {args.data_root} "
             f"--trials {args.trials} --batch {args.batch} --train-subset {args.train_subset} --threads {args.threads}`",
             f"- identical decisions across the three paths: **{same_dec}** "
             f"({len(results['fast'][1])} trials each); identical final weights: **{same_w}**",
             f"- trials re-decided by the full pass (rounding guard): fast {results['fast'][2]}, cached {results['cached'][2]}",
             "", "| tensor | numel | full (a) ms/trial | cached (b) ms/trial | fast ms/trial |", "|---|---|---|---|---|"]
    for i, (name, numel, _) in enumerate(results["fast"][0]):
        row = [f"{results[m][0][i][2] * 1000:.1f}" for m in ("full", "cached", "fast")]
        lines.append(f"| {name} | {numel} | " + " | ".join(row) + " |")
    cyc = {m: sum(n * s for _, n, s in results[m][0]) for m in results}
    total = sum(n for _, n, _ in results["fast"][0])
    lines += ["", f"Whole cycle (its {total:,} trials), **extrapolated** from the per-tensor s/trial above:", "",
              "| path | est. cycle time | trials/s | fast speed-up |", "|---|---|---|---|"]
    for m in ("full", "cached", "fast"):
        lines.append(f"| {m} | {cyc[m] / 60:.1f} min | {total / cyc[m]:.2f} | {cyc[m] / cyc['fast']:.2f}x |")
    lines += ["", f"Targets: fast >= 5x over full (a): {cyc['full'] / cyc['fast']:.2f}x; "
                  f">= 2x over cached (b): {cyc['cached'] / cyc['fast']:.2f}x.", ""]
    text = "\n".join(lines)
    print(text)
    with open(args.out, "a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
