"""What a trainer is handed: the config, the run directory, the state to resume from, and observers.

Trainers publish one status record (a flat dict) per step through `report`; loggers observe those
records (metrics.parquet, the console) instead of being wired into the training loops.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from evoplat.platform.run.rundir import RunDirectory


class ConsoleLogger:
    """Prints a compact progress line every `every` steps."""

    KEYS = ("fitness_mean", "fitness_max", "train_loss", "val_acc", "test_acc", "evals_per_s", "accepted_frac")

    def __init__(self, every: int = 1, stream=None):
        self.every, self.stream = every, stream or sys.stdout

    def __call__(self, row: dict) -> None:
        step = row.get("step", 0)
        if step % self.every and not row.get("final"):
            return
        parts = [f"[{row.get('phase', 'step')} {step}]"]
        for k in self.KEYS:
            v = row.get(k)
            if isinstance(v, float):
                parts.append(f"{k}={v:.4g}")
        parts.append(f"t={row.get('wall_time', 0.0):.1f}s")
        print(" ".join(parts), file=self.stream, flush=True)


@dataclass
class RunContext:
    cfg: object                                   # ExperimentConfig
    run: RunDirectory
    data_root: Optional[str] = None
    resume_state: Optional[dict] = None
    loggers: list[Callable[[dict], None]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    elapsed_before: float = 0.0                   # wall time of the run before a resume

    def wall_time(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def report(self, row: dict) -> None:
        """Record one step: it goes to metrics.parquet and to every logger."""
        row = dict(row, wall_time=self.wall_time())
        self.run.log(row)
        for logger in self.loggers:
            logger(row)

    def checkpoint(self, step: int, state: dict) -> None:
        """Save full state (plus the metrics so far, so a resumed run's table is whole)."""
        state = dict(state, step=step, wall_time=self.wall_time())
        self.run.flush()
        self.run.save_checkpoint(step, state, self.cfg.run.keep_checkpoints)
