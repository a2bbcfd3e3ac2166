"""The public Python API: `evoplat.run(config) -> RunResult`, usable from a script or a notebook.

    import evoplat
    result = evoplat.run("experiments/es_mnist.yaml", overrides={"es.generations": 20})
    result = evoplat.run({"algorithm": "es", "model": {"target": MyNet}, "data": {"target": my_data}})
    result.summary["test_acc"], result.metrics  # summary.json and metrics.parquet (a DataFrame)

Everything that can be checked (the config, the dataset's presence, the run directory, a checkpoint)
is checked before any work starts. A run that fails before its first step leaves nothing behind: a new
run directory is removed, and one it was to replace (`overwrite=True`) is put back.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from evoplat.platform.config import ConfigError, ExperimentConfig, load_config, to_yaml
from evoplat.platform.data import check_available
from evoplat.platform.device import driver_device
from evoplat.platform.registry import METHODS
from evoplat.platform.run.context import RunContext
from evoplat.platform.run.loop import run_loop
from evoplat.platform.run.rundir import RunDirectory, RunDirError
from evoplat.platform.run.trainer import Trainer
from evoplat.platform.runtime.cluster import check_address


class ResumeError(RunDirError):
    """A run directory that cannot be continued (no checkpoint, another method)."""


class UsageError(ValueError):
    """A call or command line that cannot be carried out as given."""


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    config: ExperimentConfig

    @property
    def metrics(self):
        """metrics.parquet as a pandas DataFrame (one row per step)."""
        import pandas as pd
        return pd.read_parquet(self.run_dir / "metrics.parquet")

    def model(self):
        """The trained network (`load_model`, with this run's own config: its callables included)."""
        return load_model(self.run_dir, self.config)


def load_model(run_dir, config: Any = None):
    """The network a run trained, as a torch module on the CPU in eval mode, with the weights of the run's
    last checkpoint (model.pt, written beside every checkpoint by es, rso, hybrid, consequential and
    single rec_lra runs). The module is rebuilt from `config` (anything `evoplat.run` takes), by default the
    run's config.yaml, where a target given as a Python callable cannot be rebuilt: pass the config.
    Not a run directory: RunDirError; no model.pt or a damaged one: CheckpointError; a config.yaml that
    cannot be rebuilt here: ConfigError."""
    if not (Path(run_dir) / "config.yaml").is_file():
        raise RunDirError(f"model error: {run_dir} is not a run directory (no config.yaml)")
    run = RunDirectory(run_dir)
    if config is None:
        try:
            cfg = load_config(run.path / "config.yaml")
        except ConfigError as err:
            raise ConfigError(f"{err} (in {run.path / 'config.yaml'}: pass load_model(run_dir, config) "
                              "with the run's own config)") from None
    else:
        cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    saved = run.load_network()
    # a Trainer passed to run(trainer=...) is registered only in that process: the base class's builder
    method = METHODS.get(cfg.algorithm) if cfg.algorithm in METHODS else Trainer
    net = method.build_network(cfg, saved["input_shape"], saved["num_outputs"])
    net.load_state_dict(saved["state_dict"])
    return net.eval()


def default_run_dir(name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


@dataclass
class PreparedRun:
    cfg: ExperimentConfig
    run: RunDirectory
    state: Optional[dict]
    created: bool                        # this call made the directory (remove it if nothing ran)
    replaced: Optional[Path] = None      # an older directory moved aside by overwrite


def prepare(config: Any = None, run_dir=None, resume=None, overrides: Sequence | dict = (),
            data_root: Optional[str] = None, overwrite: bool = False) -> PreparedRun:
    """Validate everything and open the run directory; no training work, no Ray."""
    if resume is not None:
        run = RunDirectory.open_existing(resume)
        cfg = load_config(config if config is not None else run.path / "config.yaml", overrides)
        state = run.load_latest()
        if state is None:
            raise ResumeError(f"resume error: {run.path} has no checkpoint to resume from")
        if state.get("algorithm") != cfg.algorithm:
            raise ResumeError(f"resume error: checkpoint in {run.path} is for '{state.get('algorithm')}', "
                              f"config says '{cfg.algorithm}'")
        check_address(cfg.runtime)
        driver_device(cfg.run.device)          # run.device: cuda on a machine without one
        check_available(cfg.data, data_root, fallback=False)   # the checkpoint was trained on this data
        run.truncate("step", int(state["step"]))
        return PreparedRun(cfg, run, state, created=False)
    if config is None:
        raise UsageError("usage error: give a config (a YAML path, a mapping or an ExperimentConfig) or resume=")
    cfg = load_config(config, overrides)
    check_address(cfg.runtime)
    driver_device(cfg.run.device)
    check_available(cfg.data, data_root)
    path = Path(run_dir) if run_dir is not None else default_run_dir(cfg.name or cfg.algorithm)
    RunDirectory.check_new(path, overwrite)
    replaced = None
    if path.is_dir() and any(path.iterdir()):
        replaced = path.with_name(f".{path.name}.replaced-{os.getpid()}")
        path.rename(replaced)
    run = RunDirectory.create(path, to_yaml(cfg))
    return PreparedRun(cfg, run, None, created=True, replaced=replaced)


class _FirstStep:
    """A logger that notes whether any step has been reported."""

    def __init__(self):
        self.seen = False

    def __call__(self, row: dict) -> None:
        self.seen = True


def execute(prepared: PreparedRun, loggers: Optional[list[Callable]] = None, data_root: Optional[str] = None,
            trainer: Optional[type] = None) -> RunResult:
    """Run a prepared run to its end (or stopping rule); writes summary.json."""
    import torch
    cfg, run, state = prepared.cfg, prepared.run, prepared.state
    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    first = _FirstStep()
    loggers = list(loggers or [])
    if cfg.run.tensorboard:
        from evoplat.platform.run.loggers import TensorBoardLogger
        loggers.append(TensorBoardLogger(run.path / "tensorboard", cfg.run.tensorboard_histograms))
    ctx = RunContext(cfg, run, data_root, state, [first, *loggers],
                     elapsed_before=float(state.get("wall_time", 0.0)) if state else 0.0)
    try:
        summary = run_loop(ctx, trainer)
    except BaseException:
        if prepared.created and not first.seen:
            shutil.rmtree(run.path, ignore_errors=True)
            if prepared.replaced is not None:
                prepared.replaced.rename(run.path)
        raise
    if prepared.replaced is not None:
        shutil.rmtree(prepared.replaced, ignore_errors=True)
    run.flush()
    run.write_summary(summary)
    return RunResult(run.path, summary, cfg)


def run(config: Any = None, run_dir=None, resume=None, loggers: Optional[list[Callable]] = None, *,
        overrides: Sequence | dict = (), data_root: Optional[str] = None, overwrite: bool = False,
        trainer: Optional[type] = None) -> RunResult:
    """Train one experiment and return its run directory, summary and config.

    config: a YAML path, a mapping (sections as in YAML; callables allowed for `target`s) or an
        ExperimentConfig; with `resume`, the run directory's own config.yaml by default.
    run_dir: where to write (default runs/<name>-<timestamp>); never replaced unless `overwrite`.
    resume: a run directory to continue from its last checkpoint.
    loggers: callables receiving each metrics row (a dict); objects may also have start(step, budget,
        unit) and close().
    overrides: dotted keys, as `{"es.popsize": 512}` or ["es.popsize=512"].
    trainer: a Trainer class to use instead of the registered method (it is registered under its name).
    """
    if trainer is not None:
        METHODS.register(getattr(trainer, "name", None) or trainer.__name__, trainer)
    prepared = prepare(config, run_dir, resume, overrides, data_root, overwrite)
    return execute(prepared, loggers, data_root, trainer)
