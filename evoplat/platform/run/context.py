"""What a trainer is handed: the config, the run directory, the state to resume from, and observers.

Trainers publish one status record (a flat dict) per step through `report`; loggers observe those
records (metrics.parquet, the console, TensorBoard; see loggers.py) instead of being wired into the
training loops. A row may carry tensors under HISTOGRAMS (an ES run's center): they never reach
metrics.parquet or a logger's row, only loggers with a `histogram(step, tensors)` method.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from evoplat.platform.run.loggers import ConsoleLogger  # noqa: F401  (its former home; still importable)
from evoplat.platform.run.rundir import RunDirectory

HISTOGRAMS = "_histograms"


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
        """Seconds of run time, the parts before a resume included."""
        return self.elapsed_before + time.time() - self.started

    def session_time(self) -> float:
        """Seconds since this process started (or resumed) the run."""
        return time.time() - self.started

    def report(self, row: dict) -> None:
        """Record one step: it goes to metrics.parquet and to every logger."""
        row = dict(row, wall_time=self.wall_time())
        tensors = row.pop(HISTOGRAMS, None)
        self.run.log(row)
        for logger in self.loggers:
            logger(row)
            if tensors and hasattr(logger, "histogram"):
                logger.histogram(row.get("step", 0), tensors)

    def checkpoint(self, step: int, state: dict) -> None:
        """Save full state (plus the metrics so far, so a resumed run's table is whole)."""
        state = dict(state, step=step, wall_time=self.wall_time())
        self.run.flush()
        self.run.save_checkpoint(step, state, self.cfg.run.keep_checkpoints)
