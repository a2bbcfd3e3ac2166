"""Problem P-ES (MNIST, MLP 784-128-10, popsize 256, minibatch 256 per generation) for the ES benchmarks:
its config, the driver's objects, pools, and timed loops of generations (driver loop, workers' loop)."""
from __future__ import annotations

import functools
import statistics
import subprocess
import time
from pathlib import Path

import torch
import yaml

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "es_mnist.yaml"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def gemm_gflops(threads: int, n: int = 2048) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    torch.set_num_threads(before)
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# The arithmetic full rank cannot avoid with the shared-base forward: one [256 x 784] x [784 x 128] noise
# product per antithetic key (the rest of a generation is a few percent of it).
FULL_RANK_GFLOP = 128 * 2 * 256 * 784 * 128 / 1e9


def arithmetic_bound(best_full: float, peak: float) -> str:
    """A sentence holding the best full-rank generations/s against what the GEMM peak allows."""
    return (f"Full rank's first-layer noise products are {FULL_RANK_GFLOP:.2f} GFLOP per generation (128 keys x 2 x "
            f"256 x 784 x 128): at the peak above they bound full rank at {peak / FULL_RANK_GFLOP:.1f} generations/s; "
            f"the best full-rank rate here is {100 * best_full * FULL_RANK_GFLOP / peak:.0f}% of that bound.")


def lowrank_macs(shapes: list, popsize: int = 256, batch: int = 256, rank: int = 1) -> tuple[float, float]:
    """Multiply-adds of one low-rank generation of an MLP with weight `shapes` [(out, in), ...], counted the
    way the structured forward (chain.py) and the update (lowrank.py) compute them, antithetic keys:
    (evaluation, update)."""
    keys = popsize // 2
    evaluation, update = 0.0, 0.0
    for i, (out, inn) in enumerate(shapes):
        if i == 0:      # shared input: x W^T once, x B once per key, each member's (x B_k) A_k^T
            evaluation += batch * inn * out + batch * inn * keys * rank + popsize * batch * rank * out
        elif inn > batch:   # per-member input, factors kept: h W^T, (h B) A^T
            evaluation += popsize * batch * (inn * out + inn * rank + rank * out)
        else:           # per-member input, each member's own weight formed and applied
            evaluation += popsize * batch * inn * out
        update += keys * rank * out * inn + keys * out      # sum_k w_k A_k B_k^T, and the bias's w . e
    return evaluation, update


def pes_config(perturbation="full", rank=1, popsize=256, chunk=32, workers=2, backend="ray", loop="driver",
               overrides=()):
    """P-ES's config; `overrides` ('es.strategy=pgpe', ...) as `evoplat run --set` reads them, applied last."""
    from evoplat.platform.config import build_config
    from evoplat.platform.config.experiment import apply_overrides
    raw = yaml.safe_load(CONFIG.read_text())
    raw["es"].update(popsize=popsize, batch_size=256, perturbation=perturbation, rank=rank)
    raw["runtime"].update(backend=backend, num_workers=workers, chunk_size=chunk, cpus_per_worker=1, loop=loop)
    return build_config(apply_overrides(raw, overrides))


def driver_side(cfg) -> tuple:
    """The driver's (strategy, keyed noise, initial state) for P-ES, as the ES trainer builds them."""
    from evoplat.platform.models import build_model
    from evoplat.platform.population.evaluator import make_es_noise
    from evoplat.platform.population.forward import ParamLayout
    from evoplat.platform.strategies import build_strategy
    model = build_model(cfg.model, (1, 28, 28), 10)
    layout = ParamLayout(model)
    strategy = build_strategy(cfg.es)
    return strategy, make_es_noise(cfg, layout), strategy.init(layout.flatten(model))


def time_es(cfg, pool, generations: int, warmup: int = 3) -> dict:
    """Generations/s of `generations` full ES generations (ask, evaluate on the pool, tell)."""
    from evoplat.methods.es.trainer import ESTrainer  # noqa: F401  (registers the method)
    from evoplat.platform.population.generation import ESGeneration
    strategy, noise, state = driver_side(cfg)
    loop = ESGeneration(pool, strategy, noise, cfg.runtime.chunk_size)
    # owned after the first step, as in a run (ESTrainer.step)
    for g in range(warmup):
        state, _, _ = loop.step(state, owned=g > 0)
    infos, t0 = [], time.perf_counter()
    for _ in range(generations):
        state, info, _ = loop.step(state, owned=True)
        infos.append(info)
    return _rates(infos, time.perf_counter() - t0)


def _rates(infos: list, total: float) -> dict:
    """Generations/s over `total` seconds, and the median per-generation timings of the rows."""
    med = lambda k: statistics.median(i[k] for i in infos)  # noqa: E731
    return {"gen_s": len(infos) / total, "s_gen": total / len(infos), "tell_s": med("tell_s"),
            "eval_s": med("eval_s"), "rss_mb": max(i["worker_peak_rss_mb"] for i in infos)}


def time_worker_loop(cfg, pool, generations: int, warmup: int = 3, span: int = 10) -> dict:
    """The same, with the workers running the generations (runtime.loop: workers) in spans of at most
    `span` generations: in a run, the driver needs the state every run.eval_every (10 for ES)."""
    from evoplat.platform.population.worker_loop import ESWorkerLoop
    strategy, noise, state = driver_side(cfg)
    loop = ESWorkerLoop(pool, strategy, noise, cfg.runtime.loop_span_s)
    loop.reset(state)
    for g in range(warmup):
        loop.next_row(warmup - g)
    infos, t0 = [], time.perf_counter()
    for g in range(generations):
        limit = min(span - g % span, generations - g)
        # as in a run: the span after this one (to the next multiple of `span`) is queued at once
        infos.append(loop.next_row(limit, min(span, generations - g - limit)))
    # eval_s here is the evaluation and the all-gather, as the slowest worker sees them
    return _rates(infos, time.perf_counter() - t0)


def local_pool(cfg, data_root, threads: int = 2):
    from evoplat.platform.population.evaluator import ESEvaluator
    from evoplat.platform.runtime.pool import LocalPool
    torch.set_num_threads(threads)
    return LocalPool(functools.partial(ESEvaluator, cfg, data_root, "cpu"))


def ray_pool(cfg, data_root, workers: int):
    from evoplat.platform.population.evaluator import ESEvaluator
    from evoplat.platform.population.worker_loop import ESLoopHost
    from evoplat.platform.runtime.pool import WorkerPool
    host = ESLoopHost if cfg.runtime.loop == "workers" else ESEvaluator
    # the device follows runtime.gpus_per_worker, as in a run
    pool = WorkerPool(functools.partial(host, cfg, data_root), workers, cpus_per_worker=1,
                      gpus_per_worker=cfg.runtime.gpus_per_worker, shared_memory=cfg.runtime.shared_memory)
    pool.wait_ready(timeout=600)
    return pool


def on_ray(cfg, data_root, workers: int, timed, **kwargs) -> dict:
    """`timed(cfg, pool, **kwargs)` on a fresh pool of `workers` Ray workers, shut down after (and a
    second's pause, so the next pool's workers start on idle cores)."""
    pool = ray_pool(cfg, data_root, workers)
    try:
        return timed(cfg, pool, **kwargs)
    finally:
        pool.shutdown()
        time.sleep(1)


def _serve_local(conn, kind: str, chunk: int, data_root: str, threads: int) -> None:
    """A child process's loop: build the in-process pool once, then time `n` generations per request."""
    cfg = pes_config(kind, 1, chunk=chunk, workers=1, backend="local")
    pool = local_pool(cfg, data_root, threads)
    conn.send("ready")
    while (n := conn.recv()) is not None:
        conn.send(time_es(cfg, pool, n))


class LocalRunner:
    """The in-process run (`runtime.backend: local`) in a fresh process without Ray, kept alive so that
    its timings can alternate with another setting's seconds apart: `time(n)` runs n generations there
    (3 warm-up first, as time_es) while the caller waits."""

    def __init__(self, kind: str, chunk: int, data_root: str, threads: int = 2):
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_local, args=(child, kind, chunk, data_root, threads), daemon=True)
        self.proc.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("the in-process runner did not start")

    def time(self, generations: int) -> dict:
        self.conn.send(generations)
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:                 # the child is gone already
            pass
        self.proc.join(timeout=30)
