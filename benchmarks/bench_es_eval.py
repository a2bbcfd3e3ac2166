"""A worker's ES evaluation alone on P-ES: milliseconds to evaluate all 256 members on one thread, full rank
and low rank r=1.

This is what one Ray worker (one CPU) does for its share of a generation, without the pool, the update or
the gather: the forward path (shared-base first layer, per-member later layers, fitness) by itself. Each
round times `ESEvaluator.evaluate(pop, 0, 256)` `--repeats` times after a warm-up, on the same
generation's minibatch, in a fresh process.

`--compare DIR` times another checkout (a `git worktree` of an older commit, say) in alternation with this
one, each in a fresh process with that checkout first on PYTHONPATH: the host's speed drifts by up to a
third within minutes, so a change to the forward path is measured this way, not across two sittings.

    python benchmarks/bench_es_eval.py [--data-root DATA] [--repeats 60] [--rounds 5] [--compare /tmp/old]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import alternate, checkout_table, git_rev, header, write  # noqa: E402
from _pes import driver_side, pes_config, uptime  # noqa: E402


def evaluate_ms(kind: str, data_root: str, repeats: int) -> float:
    import torch
    from evoplat.methods.es.trainer import ESTrainer  # noqa: F401  (registers the method)
    from evoplat.platform.population.evaluator import ESEvaluator
    torch.set_num_threads(1)
    cfg = pes_config(kind, 1, chunk=128, backend="local")
    strategy, _, state = driver_side(cfg)
    evaluator = ESEvaluator(cfg, data_root, "cpu")
    pop = strategy.ask(state)
    times = []
    for i in range(repeats + 5):
        t0 = time.perf_counter()
        evaluator.evaluate(pop, 0, pop.size)
        if i >= 5:
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def child(data_root: str, repeats: int) -> None:
    import evoplat
    rev = git_rev(Path(evoplat.__file__).resolve().parent)
    print(json.dumps({"commit": rev, **{k: evaluate_ms(k, data_root, repeats) for k in ("full", "lowrank")}}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default="/work/shared/data", help="MNIST in torchvision's layout")
    p.add_argument("--repeats", type=int, default=60, help="timed evaluations per kind and round")
    p.add_argument("--rounds", type=int, default=5, help="rounds, each a fresh process per checkout")
    p.add_argument("--compare", default=None, help="another checkout, timed in alternation with this one")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.data_root, args.repeats)
    if not (Path(args.data_root) / "MNIST").is_dir():
        sys.exit(f"bench_es_eval: --data-root {args.data_root}: no MNIST folder there (torchvision's layout)")
    load = uptime()
    runs = alternate(__file__, ["--data-root", args.data_root, "--repeats", str(args.repeats)], args.rounds,
                     args.compare)
    lines = [header("A worker's ES evaluation alone on P-ES: ms to evaluate 256 members on one thread"),
             f"- {args.repeats} timed evaluations per kind after 5 warm-up, OpenAI-ES population, popsize 256, "
             f"minibatch 256, table noise, chunk 128; {args.rounds} rounds, each a fresh process per checkout, "
             "checkouts in alternation; each cell: the median over rounds of the per-round median [min-max]",
             f"- load: `{load}`", "",
             *checkout_table(runs)]
    write("es_eval", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
