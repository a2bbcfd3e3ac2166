"""The ES trainer (`algorithm: es`): a strategy over the worker pool, driven generation by generation."""
from __future__ import annotations

import functools

import torch

from ..core.data import load_dataset, minibatch_indices
from ..core.es_eval import ESEvaluator
from ..core.models import build_model
from ..core.noise import make_noise
from ..core.population import ParamLayout, accuracy, recalibrate_batch_norm
from ..core.strategies import StrategyState, build_strategy
from ..runtime.es_loop import ESGeneration
from ..runtime.pool import make_pool
from .context import RunContext


def evaluate_center(model, layout, center, data, cfg, generation) -> dict:
    """Validation/test accuracy and train loss of the center weights, on the driver's replica."""
    layout.load_into(model, center)
    idx = minibatch_indices(len(data.x_train), cfg.es.batch_size, cfg.seed, generation)
    recalibrate_batch_norm(model, data.x_train[idx])
    model.eval()
    bs = cfg.run.eval_batch_size
    _, train_loss = accuracy(model, data.x_train[idx], data.y_train[idx], bs)
    out = {"train_loss": train_loss}
    if len(data.x_val):
        out["val_acc"], out["val_loss"] = accuracy(model, data.x_val, data.y_val, bs)
    out["test_acc"], out["test_loss"] = accuracy(model, data.x_test, data.y_test, bs)
    return out


def train(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    data = load_dataset(cfg.data, ctx.data_root)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    layout = ParamLayout(model)
    strategy = build_strategy(cfg.es, layout.size, layout.flatten(model))
    noise = make_noise(cfg.es.noise, cfg.seed, layout.size, cfg.es.noise_table_size)
    if ctx.resume_state:
        state = StrategyState.from_dict(ctx.resume_state["strategy"])
    else:
        state = strategy.init(layout.flatten(model))

    pool = make_pool(functools.partial(ESEvaluator, cfg, ctx.data_root), cfg.runtime)
    try:
        pool.wait_ready()
        loop = ESGeneration(pool, strategy, noise, cfg.runtime.chunk_size)
        last = {}
        while state.generation < cfg.es.generations:
            state, info, _ = loop.step(state)
            g = state.generation
            row = {"phase": "generation", "step": g, "generation": g, **info,
                   "retries": pool.stats.retries, "timeouts": pool.stats.timeouts}
            final = g == cfg.es.generations
            if g % cfg.run.eval_every == 0 or final:
                row.update(evaluate_center(model, layout, state.center, data, cfg, g - 1))
                last = row
            ctx.report(dict(row, final=final))
            if g % cfg.run.checkpoint_every == 0 or final:
                ctx.checkpoint(g, {"algorithm": "es", "strategy": state.to_dict()})
    finally:
        pool.shutdown()
    return {"generations": state.generation, "test_acc": last.get("test_acc"), "val_acc": last.get("val_acc"),
            "train_loss": last.get("train_loss"), "num_params": layout.size}
