"""The one run loop: every method's training runs here, from `evoplat.run`, `evoplat run` and Tune.

    trainer.setup(); resume from the last checkpoint if there is one, else trainer.begin()
    until the method's budget, run.max_steps, run.max_wall_s or the target metric says stop:
        row = trainer.step(); evaluate when due; track best-so-far; report to loggers;
        checkpoint when due (and at the last step), with the trained network beside it (model.pt)
    trainer.finish() after a complete run; pools shut down whatever happens

Checkpoints hold {"algorithm", **trainer.state_dict(), "best", "step", "wall_time"}, so a resumed
run continues bit for bit and its metrics table is cut back to the checkpoint's step. Their tensors are
saved on the CPU: a run trained on a GPU resumes (or is inspected) on a machine without one.
"""
from __future__ import annotations

import math
from typing import Optional

from evoplat.platform.device import cpu_state
from evoplat.platform.registry import METHODS
from evoplat.platform.run.context import RunContext
from evoplat.platform.run.trainer import Trainer

BEST_KEYS = ("best_val_acc", "test_acc_at_best_val", "best_test_acc")


class BestSoFar:
    """Best validation accuracy (and the test accuracy measured with it) and best test accuracy."""

    def __init__(self, state: Optional[dict] = None):
        self.values: dict = dict(state or {})

    def update(self, row: dict) -> None:
        val, test = row.get("val_acc"), row.get("test_acc")
        if _number(val) and val > self.values.get("best_val_acc", -math.inf):
            self.values["best_val_acc"] = val
            if _number(test):
                self.values["test_acc_at_best_val"] = test
        if _number(test):
            self.values["best_test_acc"] = max(test, self.values.get("best_test_acc", -math.inf))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def eval_every(cfg, trainer_cls) -> int:
    return cfg.run.eval_every or trainer_cls.default_eval_every


def stop_reason(cfg, steps: int, budget: int, elapsed: float, row: dict) -> Optional[str]:
    if steps >= budget:
        return "complete"
    if cfg.run.max_steps is not None and steps >= cfg.run.max_steps:
        return "max_steps"
    if cfg.run.max_wall_s is not None and elapsed >= cfg.run.max_wall_s:
        return "max_wall_s"
    metric = cfg.run.target_metric
    if metric and _number(row.get(metric)):
        hit = row[metric] >= cfg.run.target_value if cfg.run.target_mode == "max" else \
            row[metric] <= cfg.run.target_value
        if hit:
            return "target"
    return None


def horizon(cfg, step: int, every: int, budget: int) -> int:
    """The first step from `step` on after which the loop needs the trainer's state: an evaluation, a
    checkpoint, the budget or run.max_steps."""
    due = lambda k: -(-step // k) * k  # noqa: E731  (the first multiple of k at or after step)
    return min(due(every), due(cfg.run.checkpoint_every), budget, cfg.run.max_steps or budget)


def _last_row(rows) -> dict:
    return rows[-1] if isinstance(rows, list) else rows


def run_loop(ctx: RunContext, trainer_cls: Optional[type] = None) -> dict:
    """Run (or continue) the configured method in `ctx`; returns the summary (also written by callers)."""
    cfg = ctx.cfg
    trainer_cls = trainer_cls or METHODS.get(cfg.algorithm)
    pools: list = []

    def open_pool(factory):
        from evoplat.platform.runtime.pool import make_pool
        pool = make_pool(factory, cfg.runtime)
        pools.append(pool)      # registered before waiting: a pool that fails to start is shut down too
        pool.wait_ready()
        return pool

    trainer: Trainer = trainer_cls(cfg, ctx.data_root, ctx.run.path, open_pool)
    budget = trainer_cls.budget(cfg)
    every = eval_every(cfg, trainer_cls)
    best = BestSoFar()
    try:
        trainer.setup()
        if ctx.resume_state:
            trainer.load_state_dict(ctx.resume_state)
            trainer.steps_done = int(ctx.resume_state["step"])
            best = BestSoFar(ctx.resume_state.get("best") or _legacy_best(ctx.resume_state))
        else:
            trainer.begin()
        for logger in ctx.loggers:
            getattr(logger, "start", lambda *a: None)(trainer.steps_done, budget, trainer.unit)
        last: dict = dict(ctx.run.rows[-1]) if ctx.run.rows else {}   # a resumed complete run keeps its numbers
        reason = stop_reason(cfg, trainer.steps_done, budget, 0.0, {})   # every invocation makes a step
        while reason is None:
            step = trainer.steps_done + 1
            trainer.evaluating = step % every == 0 or step == budget
            trainer.horizon = horizon(cfg, step, every, budget)
            trainer.next_horizon = horizon(cfg, trainer.horizon + 1, every, budget) \
                if trainer.horizon < min(budget, cfg.run.max_steps or budget) else 0
            rows = trainer.step()
            trainer.steps_done = step
            reason = stop_reason(cfg, step, budget, ctx.session_time(), _last_row(rows))
            if not isinstance(rows, list):
                if trainer.evaluating or reason:
                    rows.update(trainer.evaluate())
                best.update(rows)
                # a target reached by the evaluation just made also ends the run
                reason = reason or stop_reason(cfg, step, budget, ctx.session_time(), rows)
                rows.update(best.values)
            for row in rows if isinstance(rows, list) else [rows]:
                ctx.report(dict(row, phase=row.get("phase", trainer.unit), step=step,
                                final=reason is not None))
            last = _last_row(rows)
            if step % cfg.run.checkpoint_every == 0 or reason is not None:
                trainer.save_artifacts()
                ctx.checkpoint(step, cpu_state({"algorithm": cfg.algorithm, **trainer.state_dict(),
                                                "best": dict(best.values)}))
                network = trainer.network()
                if network is not None:             # model.pt: the weights of the checkpoint just written
                    ctx.run.save_network(*network, step=step)
        extra = trainer.finish() if reason == "complete" else None
        if extra:
            ctx.report(dict(extra, phase=extra.get("phase", "final"), step=trainer.steps_done + 1, final=True))
            last = {**last, **extra}
        keys = ("test_acc", "val_acc", "train_loss", "train_acc", "test_return")
        summary = {k: last[k] for k in keys if k in last}
        summary.update(best.values)
        summary.update(trainer.summary())
        summary.update(steps=trainer.steps_done, budget=budget, unit=trainer.unit, stopped=reason)
        return summary
    finally:
        for logger in ctx.loggers:
            getattr(logger, "close", lambda: None)()
        for pool in pools:
            pool.shutdown()


def _legacy_best(state: dict) -> dict:
    """Checkpoints written before the loop kept best-so-far values at the top level."""
    return {k: state[k] for k in BEST_KEYS if k in state}
