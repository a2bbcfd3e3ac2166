"""Observers of a run's metrics rows: plain progress lines, a live progress bar, TensorBoard.

Each is a callable receiving every metrics row (a flat dict); the run loop also calls
`start(step, budget, unit)` before the first step and `close()` when the run ends.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Optional

# the metrics shown on a progress line
KEY_METRICS = ("fitness_mean", "fitness_max", "train_loss", "val_acc", "test_acc", "test_return",
               "evals_per_s", "accepted_frac")


def _floats(row: dict, keys=KEY_METRICS) -> dict:
    return {k: row[k] for k in keys if isinstance(row.get(k), float)}


class ConsoleLogger:
    """Prints a compact progress line every `every` steps (for logs and pipes)."""

    KEYS = KEY_METRICS

    def __init__(self, every: int = 1, stream=None):
        self.every, self.stream = every, stream or sys.stdout

    def __call__(self, row: dict) -> None:
        step = row.get("step", 0)
        if step % self.every and not row.get("final"):
            return
        parts = [f"[{row.get('phase', 'step')} {step}]"]
        parts += [f"{k}={v:.4g}" for k, v in _floats(row, self.KEYS).items()]
        parts.append(f"t={row.get('wall_time', 0.0):.1f}s")
        print(" ".join(parts), file=self.stream, flush=True)


class ProgressBar:
    """A live tqdm bar over the method's budget (rate and ETA in its unit), key metrics as postfix."""

    KEYS = ("fitness_mean", "val_acc", "test_acc", "test_return", "train_loss")   # first 3 present shown

    def __init__(self, stream=None, postfix_keys: int = 3):
        self.stream, self.postfix_keys = stream or sys.stdout, postfix_keys
        self.bar = None
        self.shown: dict = {}

    def start(self, step: int, budget: int, unit: str) -> None:
        from tqdm import tqdm
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        # a pseudo-terminal that reports no width (some CI runners) would get a bar of width 0
        width = {"dynamic_ncols": True} if columns > 0 else {"ncols": 120, "nrows": 20}
        self.bar = tqdm(total=budget, initial=step, unit=f" {unit}", file=self.stream, desc=unit, **width)

    def __call__(self, row: dict) -> None:
        if self.bar is None:
            return
        # the values persist: evaluation metrics arrive only every few steps
        self.shown.update(_floats(row, self.KEYS))
        step = min(int(row.get("step", self.bar.n)), self.bar.total)
        keys = [k for k in self.KEYS if k in self.shown][:self.postfix_keys]
        shown = {k: f"{self.shown[k]:.4g}" for k in keys}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(max(0, step - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def console_logger(cfg, quiet: bool = False, stream=None) -> list:
    """The terminal's logger: a progress bar on a TTY, plain lines in a log or a pipe, nothing if quiet."""
    if quiet:
        return []
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", lambda: False)
    return [ProgressBar(stream)] if isatty() else [ConsoleLogger(cfg.run.log_every, stream)]


# -- TensorBoard ----------------------------------------------------------------------------------
SKIPPED = ("step", "final")
GROUPS = (("fitness", "fitness"), ("acc", "accuracy"), ("loss", "loss"), ("return", "return"),
          ("wall_time", "time"), ("per_s", "time"))


def tensorboard_tag(key: str, member=None) -> str:
    """`test_acc` -> `accuracy/test_acc`; a population member's rows get their own `/member_<i>` curve."""
    group = next((g for part, g in GROUPS if part in key), "metrics")
    return f"{group}/{key}" + (f"/member_{member}" if member is not None else "")


def _scalar(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


class TensorBoardLogger:
    """Writes every finite numeric value of each row as a scalar at the row's step.

    A resumed run continues in the same folder: `purge_step` hides the events written after the
    checkpoint it resumes from, so the curves are not doubled."""

    def __init__(self, log_dir, histograms: bool = False):
        self.log_dir, self.histograms = Path(log_dir), histograms
        self.writer = None

    def start(self, step: int, budget: int, unit: str) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(self.log_dir), purge_step=step + 1 if step > 0 else None)

    def __call__(self, row: dict) -> None:
        if self.writer is None:
            return
        step, member = int(row.get("step", 0)), row.get("member")
        for key, value in row.items():
            v = _scalar(value)
            if v is not None and key not in SKIPPED and key != "member":
                self.writer.add_scalar(tensorboard_tag(key, member), v, step)

    def histogram(self, step: int, tensors: dict) -> None:
        """Distributions a trainer exposes (an ES run's center θ and, with SNES, σ); see RunContext."""
        if self.writer is None or not self.histograms:
            return
        for name, t in tensors.items():
            self.writer.add_histogram(f"params/{name}", t.detach().float().cpu(), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
