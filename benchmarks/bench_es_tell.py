"""The driver's ES update (`tell`) alone on P-ES: milliseconds per update, full rank and low rank r=1.

The update runs on one thread between generations while the workers wait, so its cost is a share of
every generation (issue 14: under 10%). This times `strategy.tell` with random fitness on the driver's
objects only (no pool, no data), `--repeats` times per perturbation kind, after a warm-up.

`--compare DIR` times another checkout of the code (a `git worktree` of an older commit, say) in
alternation with this one, each in a fresh process with that checkout first on PYTHONPATH, so that
both are measured in the same sitting on the same machine. `--set es.strategy=pgpe --set
es.noise=counter` (P-ES's config overrides, as `evoplat run --set` reads them) times another strategy or
noise; `--name` then keeps its results apart from the default's.

`--phases` instead splits one process's updates into their parts (fitness shaping, the noise sum and,
at low rank, the factor rows it draws, the optimizer step, the rest: scaling, weight decay, the gradient
norm) by timing the functions `tell` calls, wrapped in place -> results/es_tell_phases.md.

    python benchmarks/bench_es_tell.py [--repeats 300] [--rounds 3] [--compare /tmp/old] [--set K=V ...]
    python benchmarks/bench_es_tell.py --phases [--repeats 300]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import alternate, checkout_table, git_rev, header, write  # noqa: E402
from _pes import driver_side, gemm_gflops, lowrank_macs, pes_config, uptime  # noqa: E402


# Set per column (perturbation, rank 1) or stated in the table (popsize 256): not for --set.
COLUMN_KEYS = ("es.perturbation", "es.rank", "es.popsize")


def tell_ms(kind: str, repeats: int, overrides=(), setup=None, after=None) -> list[float]:
    """ms of each of `repeats` updates (after 10 warm-up ones) of P-ES's driver objects, on random fitness.
    `setup(strategy, noise)` runs first (to wrap what `tell` calls); `after(ms)` after every update."""
    strategy, noise, state = driver_side(pes_config(kind, 1, chunk=128, overrides=overrides))
    if setup is not None:
        setup(strategy, noise)
    rng = np.random.default_rng(0)
    times = []
    for i in range(repeats + 10):
        pop = strategy.ask(state)
        fitness = rng.normal(size=pop.size)
        t0 = time.perf_counter()
        state, _ = strategy.tell(state, fitness, noise, pop)
        ms = 1e3 * (time.perf_counter() - t0)
        if i >= 10:
            times.append(ms)
        if after is not None:
            after(ms)
    return times


def phase_ms(kind: str, repeats: int) -> dict:
    """Median ms per update of each part of `tell` (OpenAI-ES on P-ES), timed by wrapping the functions it
    calls on this process's objects; parts that a kind does not have are absent."""
    spent: dict = {}
    rows: list = []

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + 1e3 * (time.perf_counter() - t0)
        return wrapper

    def setup(strategy, noise):
        strategy.shaping = timed("fitness shaping", strategy.shaping)
        noise.combine = timed("noise sum", noise.combine)
        if hasattr(noise, "_update_factors"):
            noise._update_factors = timed("factor rows drawn", noise._update_factors)
        module.apply_gradient = timed("optimizer step", real_step)

    def after(ms):
        rows.append({"update": ms, **spent})
        spent.clear()
    from evoplat.platform.strategies import openai_es as module
    real_step = module.apply_gradient
    try:
        tell_ms(kind, repeats, setup=setup, after=after)
    finally:
        module.apply_gradient = real_step
    rows = rows[-repeats:]                # the timed updates, not the warm-up
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    if "factor rows drawn" in med:      # inside the noise sum: what is left of it is the products
        med["noise sum: products"] = med["noise sum"] - med["factor rows drawn"]
    med["rest: scaling, gradient norm, state"] = med["update"] - sum(
        med[k] for k in ("fitness shaping", "noise sum", "optimizer step"))
    return med


def phases(repeats: int) -> None:
    load = uptime()
    peak = gemm_gflops(1)
    by_kind = {kind: phase_ms(kind, repeats) for kind in ("full", "lowrank")}
    macs = lowrank_macs([(128, 784), (10, 128)])[1]
    rate = 2 * macs / (by_kind["lowrank"]["noise sum: products"] / 1e3) / 1e9
    names = ["update", "fitness shaping", "noise sum", "factor rows drawn", "noise sum: products",
             "optimizer step", "rest: scaling, gradient norm, state"]
    lines = [header("The ES update (tell) on P-ES, part by part"),
             f"- OpenAI-ES + adam, table noise, popsize 256 (128 antithetic keys), chunk 128, random fitness; "
             f"{repeats} updates per kind after 10 warm-up in one process, on one thread as in a run; each "
             "cell the median ms (the parts' medians need not add up to the update's exactly)",
             "- the factor rows: drawn from the table here; in a run, the rows of the keys this process "
             "evaluated are kept from its evaluation (RecentFactors) and only the others are drawn",
             f"- load: `{load}`", "", "| part | full rank (ms) | low rank r=1 (ms) |", "|---|---:|---:|"]
    for name in names:
        cells = [f"{by_kind[k][name]:.3f}" if name in by_kind[k] else "-" for k in ("full", "lowrank")]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", f"Low rank's products are {macs / 1e6:.1f} M multiply-adds (sum_k w_k A_k B_k^T per weight, w . e per "
              f"bias): {rate:.0f} GFLOP/s, against a one-thread fp32 GEMM peak (2048^3) of {peak:.0f} GFLOP/s measured "
              "at the start of this run."]
    write("es_tell_phases", "\n".join(lines) + "\n")


def child(repeats: int, overrides: list) -> None:
    import evoplat
    rev = git_rev(Path(evoplat.__file__).resolve().parent)
    print(json.dumps({"commit": rev, **{k: statistics.median(tell_ms(k, repeats, overrides))
                                        for k in ("full", "lowrank")}}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=300, help="timed updates per kind and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each a fresh process per checkout")
    p.add_argument("--compare", default=None, help="another checkout, timed in alternation with this one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of P-ES's config (es_mnist.yaml at popsize 256, minibatch 256)")
    p.add_argument("--name", default=None, help="results file name (benchmarks/results/NAME.md); needed with --set")
    p.add_argument("--phases", action="store_true", help="time the update's parts instead (es_tell_phases.md)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.repeats, args.overrides)
    if args.phases:
        if args.compare or args.overrides:
            sys.exit("bench_es_tell: --phases times this checkout's default configuration alone")
        import torch
        torch.set_num_threads(1)
        return phases(args.repeats)
    fixed = [o for o in args.overrides if o.split("=", 1)[0].strip() in COLUMN_KEYS]
    if fixed:
        sys.exit(f"bench_es_tell: {fixed[0]}: {', '.join(COLUMN_KEYS)} are the table's own columns and rows")
    if args.overrides and not args.name:
        sys.exit("bench_es_tell: give --name with --set, so that es_tell.md keeps the default configuration's results")
    from evoplat.platform.config import ConfigError
    try:
        pes_config(overrides=args.overrides)
    except ConfigError as e:
        sys.exit(str(e))
    what = strategy_line(args.overrides)
    load = uptime()
    sets = [a for o in args.overrides for a in ("--set", o)]
    runs = alternate(__file__, ["--repeats", str(args.repeats), *sets], args.rounds, args.compare)
    lines = [header("The ES update (tell) alone on P-ES: ms per update on the driver"),
             f"- {args.repeats} timed updates per kind after 10 warm-up, random fitness, popsize 256, {what}; "
             f"{args.rounds} rounds, each a fresh process per checkout, checkouts in alternation; "
             "each cell: the median over rounds of the per-round median [min-max]",
             f"- load: `{load}`", "",
             *checkout_table(runs)]
    write(args.name or "es_tell", "\n".join(lines) + "\n")


def strategy_line(overrides: list) -> str:
    """'OpenAI-ES + adam, table noise' for the config the overrides make."""
    es = pes_config(overrides=overrides).es
    names = {"openai_es": "OpenAI-ES", "pgpe": "PGPE", "snes": "SNES", "elitist": "elitist ES"}
    optimizer = f" + {es.optimizer}" if es.optimizer and es.strategy in ("openai_es", "pgpe") else ""
    return f"{names.get(es.strategy, es.strategy)}{optimizer}, {es.noise} noise" + (
        f" (overrides: {', '.join(overrides)})" if overrides else "")


if __name__ == "__main__":
    main()
