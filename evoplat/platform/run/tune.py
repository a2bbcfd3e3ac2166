"""Ray Tune over any method: one generic trainable runs the method's Trainer in the one run loop.

- Every step the trainer reports becomes one `tune.report`, carrying a checkpoint of the trainer's full
  state (the trial forces `run.checkpoint_every: 1`), so ASHA, PBT's exploit, a retried trial and a
  resumed experiment all restart from exactly the state the trainer saved (given back as
  `ctx.resume_state`). ASHA's max_t is the method's own step budget (`Trainer.budget`).
- Each trial reserves a placement group: one bundle for its own process plus one per ES worker of
  `runtime`. The trial's pool actors are created without a scheduling strategy of their own, so Tune
  captures them into that group: concurrent trials never oversubscribe the cluster.
- The sweep (search space, scheduler, samples) comes from the config's `tune:` section; an empty
  search space means the method's default one. See docs/tune.md.
"""
from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from evoplat.platform.config import ConfigError, ExperimentConfig, TuneConfig, build_config, load_config, set_dotted
from evoplat.platform.registry import METHODS
from evoplat.platform.run.context import RunContext
from evoplat.platform.run.loop import run_loop
from evoplat.platform.run.rundir import RunDirectory, load_checkpoint

STATE_FILE = "state.pt"
NOT_RESTORED = {"restored_step": -1, "restored_fingerprint": ""}


# -- configuration ----------------------------------------------------------------------------------
def tune_section(cfg: ExperimentConfig) -> TuneConfig:
    """The sweep's settings: `tune:`, with the method's default search space if none is given."""
    if cfg.tune.search_space:
        return cfg.tune
    return cfg.tune.model_copy(update={"search_space": dict(METHODS.get(cfg.algorithm).default_search_space)})


def trial_config(base_raw: dict, trial: dict) -> ExperimentConfig:
    """The base config with the trial's sampled values (dotted keys) and the settings Tune needs."""
    raw = copy.deepcopy(base_raw)
    for key, value in trial.items():
        if not key.startswith("_"):
            set_dotted(raw, key, value)
    set_dotted(raw, "run.checkpoint_every", 1)       # every report carries a checkpoint
    set_dotted(raw, "run.eval_every", 1)             # and the validation metric the scheduler ranks by
    cfg = build_config(raw)
    if not tune_section(cfg).trial_gpus and cfg.run.device == "auto":
        # Ray hides no GPU from a process that reserved none: 'auto' would put every concurrent trial
        # on the same GPU, uncounted. A trial uses a GPU only when tune.trial_gpus reserves it one.
        set_dotted(raw, "run.device", "cpu")
        cfg = build_config(raw)
    return cfg


def search_space(space: dict, for_pbt: bool = False) -> dict:
    """Tune domains from `{key: {sampler: args}}`; PBT takes plain lists for categorical mutations."""
    from ray import tune
    out = {}
    for key, spec in space.items():
        (kind, args), = spec.items()
        if kind in ("choice", "grid"):
            out[key] = list(args) if for_pbt else (tune.grid_search(list(args)) if kind == "grid"
                                                   else tune.choice(list(args)))
        elif kind == "uniform":
            out[key] = tune.uniform(*args)
        elif kind == "loguniform":
            out[key] = tune.loguniform(*args)
        else:
            out[key] = tune.randint(*args)
    return out


def trial_resources(cfg: ExperimentConfig, tcfg: TuneConfig):
    """One bundle for the trial process, one per ES worker (none with backend 'local')."""
    from ray import tune
    bundles = [{"CPU": tcfg.trial_cpus, **({"GPU": tcfg.trial_gpus} if tcfg.trial_gpus else {})}]
    if cfg.runtime.backend == "ray":
        worker = {"CPU": cfg.runtime.cpus_per_worker}
        if cfg.runtime.gpus_per_worker:
            worker["GPU"] = cfg.runtime.gpus_per_worker
        bundles += [dict(worker) for _ in range(cfg.runtime.num_workers)]
    return tune.PlacementGroupFactory(bundles, strategy="PACK")


def run_length(cfg: ExperimentConfig) -> int:
    """Steps of a complete trial: the method's budget (epochs, generations, sweeps, RL updates)."""
    return METHODS.get(cfg.algorithm).budget(cfg)


# -- inside a trial ---------------------------------------------------------------------------------
def fingerprint(state: Any) -> str:
    """A hash of a checkpoint's content (wall time excluded), to check that a restore is exact."""
    h = hashlib.sha1()

    def feed(x, key=""):
        if key == "wall_time":
            return
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                feed(x[k], str(k))
        elif isinstance(x, (list, tuple)):
            for v in x:
                feed(v)
        elif isinstance(x, torch.Tensor):
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(x).encode())
    feed(state)
    return h.hexdigest()[:16]


class TuneReporter:
    """Logger + checkpoint sink: one `tune.report(metrics, checkpoint)` per step.

    A trainer calls `ctx.report(row)` and then `ctx.checkpoint(step, state)`; the row is held until the
    checkpoint of the same step arrives (or the next row, or the end), then reported together.
    Metrics a trainer measures only every few steps (val_acc...) are carried forward, so the
    scheduler's metric is in every report.
    """

    def __init__(self, metric: str):
        self.metric, self.pending, self.last = metric, None, {}

    def __call__(self, row: dict) -> None:
        if self.pending is not None:
            self._send(None)
        self.pending = row

    def checkpoint(self, step: int, state: dict) -> None:
        self._send(state)

    def close(self) -> None:
        if self.pending is not None:
            self._send(None)

    def _send(self, state: Optional[dict]) -> None:
        from ray import tune
        row = dict(self.pending or {})
        self.pending = None
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.last[k] = v
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float, str, bool)) or v is None}
        for k in ("val_acc", "test_acc", self.metric):
            if k not in metrics and k in self.last:
                metrics[k] = self.last[k]
        metrics["ckpt_fingerprint"] = fingerprint(state) if state is not None else ""
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


class TuneRunContext(RunContext):
    """A RunContext whose checkpoints go to Tune (and still to the trial's own run directory).

    Every row names the checkpoint the trial continued from (`restored_step`, `restored_fingerprint`;
    -1 and "" for a trial that never restored), in the trial's own metrics.parquet as well as in Tune's
    results: Tune copies its older result file over the newer one when it restarts a trial, so only the
    run directory, cut back to the restored step, holds every row a trial reported."""

    reporter: Optional[TuneReporter] = None
    restored: dict = NOT_RESTORED

    def report(self, row: dict) -> None:
        super().report(dict(row, **self.restored))

    def checkpoint(self, step: int, state: dict) -> None:
        state = dict(state, step=step, wall_time=self.wall_time())
        self.run.flush()
        self.reporter.checkpoint(step, state)


def _trial_run_dir(cfg: ExperimentConfig, step: Optional[int]) -> RunDirectory:
    from ray import tune
    from evoplat.platform.config import to_yaml
    path = Path(tune.get_context().get_trial_dir()) / "run"
    if (path / "config.yaml").is_file():
        run = RunDirectory.open_existing(path)
        run.truncate("step", step if step is not None else -1)
        return run
    return RunDirectory.create(path, to_yaml(cfg), overwrite=True)


def tune_trainable(config: dict, base_raw: dict, data_root: Optional[str] = None, trainer=None,
                   loggers: tuple = ()) -> None:
    """The function trainable: build the trial's config, restore Tune's checkpoint, run the loop.

    `trainer`: a method class not registered in the trial's process (a user's); `loggers`: factories
    called with the trial's sampled values, each returning a logger for that trial's rows."""
    from ray import tune
    if trainer is not None and trainer.name not in METHODS:
        METHODS.register(trainer.name, trainer)
    cfg = trial_config(base_raw, config)
    tcfg = tune_section(cfg)
    torch.set_num_threads(cfg.run.torch_threads or max(1, int(tcfg.trial_cpus)))
    state, restored = None, None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_checkpoint(Path(d) / STATE_FILE)
        if state.get("algorithm") != cfg.algorithm:
            raise ValueError(f"checkpoint is for '{state.get('algorithm')}', trial runs '{cfg.algorithm}'")
        restored = {"restored_step": int(state["step"]), "restored_fingerprint": fingerprint(state)}
    reporter = TuneReporter(tcfg.metric)
    run = _trial_run_dir(cfg, int(state["step"]) if state else None)
    ctx = TuneRunContext(cfg, run, data_root, state, [reporter, *(make(config) for make in loggers)],
                         elapsed_before=float(state.get("wall_time", 0.0)) if state else 0.0)
    ctx.reporter = reporter
    ctx.restored = restored or NOT_RESTORED
    summary = run_loop(ctx)
    reporter.close()
    run.flush()
    run.write_summary(summary)


# -- the driver side: Python API and CLI ------------------------------------------------------------
def _scheduler(cfg: ExperimentConfig, tcfg: TuneConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
    if tcfg.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=run_length(cfg),
                             grace_period=tcfg.grace_period, reduction_factor=tcfg.reduction_factor)
    if tcfg.scheduler == "pbt":
        return PopulationBasedTraining(time_attr="training_iteration",
                                       perturbation_interval=tcfg.perturbation_interval,
                                       quantile_fraction=tcfg.quantile_fraction, synch=tcfg.pbt_synch,
                                       hyperparam_mutations=search_space(tcfg.search_space, for_pbt=True))
    return FIFOScheduler()


def make_trainable(cfg: ExperimentConfig, base_raw: dict, data_root: Optional[str], loggers: tuple = ()):
    """The trainable with its parameters bound and its placement group declared."""
    from ray import tune
    trainer = METHODS.get(cfg.algorithm)
    own = None if trainer.__module__.startswith("evoplat.") else trainer
    bound = tune.with_parameters(tune_trainable, base_raw=base_raw, data_root=data_root, trainer=own,
                                 loggers=tuple(loggers))
    return tune.with_resources(bound, trial_resources(cfg, tune_section(cfg)))


def build_tuner(base_raw: dict, storage: str, data_root: Optional[str] = None, name: Optional[str] = None,
                resume: bool = False, extra_space: Optional[dict] = None, loggers: tuple = ()):
    """A Tuner for the experiment `base_raw` (a config mapping), or the restored one when `resume`."""
    from ray import tune
    cfg = build_config(base_raw)
    tcfg = tune_section(cfg)
    name = name or cfg.name or cfg.algorithm
    storage = str(Path(storage).expanduser().resolve())
    trainable = make_trainable(cfg, base_raw, data_root, loggers)
    path = os.path.join(storage, name)
    if resume:
        if not tune.Tuner.can_restore(path):
            # A ConfigError is printed by the CLI as one line (exit code 2), like other bad input.
            raise ConfigError(f"resume error: no Tune experiment to resume in {path}")
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    # Initial values are sampled from the space; PBT then perturbs the same keys (its mutations).
    space = dict(search_space(tcfg.search_space), **(extra_space or {}))
    return tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(metric=tcfg.metric, mode=tcfg.mode, scheduler=_scheduler(cfg, tcfg),
                                    num_samples=tcfg.num_samples,
                                    max_concurrent_trials=tcfg.max_concurrent_trials),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=tcfg.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=tcfg.keep_checkpoints)))


def results_table(grid) -> "Any":
    """One row per trial: its last reported metrics and its config (columns config/<key>).

    Built from the results Tune holds in memory, not from its result files (`grid.get_dataframe()`):
    a restarted trial's file can lose its newer rows, a trial restarted before its first rows reached
    storage every row, and such a trial would be missing from the table."""
    import pandas as pd
    df = pd.DataFrame([{**{k: v for k, v in (r.metrics or {}).items() if k != "config"},
                        **{f"config/{k}": v for k, v in (r.config or {}).items()}} for r in grid])
    for col in df.columns:  # Parquet needs one type per column
        if df[col].dtype == object:
            df[col] = df[col].map(lambda v: None if v is None else str(v))
    return df


def run_tune(config: str | dict, overrides: list[str] = (), data_root: Optional[str] = None,
             storage: str = "runs/tune", resume: bool = False, extra_space: Optional[dict] = None,
             verbose: bool = True, loggers: tuple = ()) -> dict:
    """Run (or resume) a sweep. Returns {"grid", "table", "best_config", "best_metrics", "path"};
    the table is also written to <storage>/<name>/results.parquet. `loggers`: factories called in each
    trial with its sampled values, each returning a logger for that trial's rows."""
    import yaml

    from evoplat.platform.config import to_yaml
    from evoplat.platform.data import check_available
    from evoplat.platform.runtime.cluster import connect
    if isinstance(config, dict):
        base_raw = config
    else:
        cfg0 = load_config(config, list(overrides))
        base_raw = yaml.safe_load(to_yaml(cfg0))
    cfg = build_config(base_raw)
    if cfg.run.device == "cuda" and not tune_section(cfg).trial_gpus:
        raise ConfigError("config error: run.device = 'cuda' in a sweep needs tune.trial_gpus > 0 (a GPU "
                          "reserved for each trial), or run.device auto/cpu")
    source = cfg.data.source
    check_available(cfg.data, data_root)
    if cfg.data.source != source:       # data.fallback was taken: every trial must load the same data
        base_raw = {**base_raw, "data": cfg.data.model_dump()}
    data_root = str(Path(data_root).resolve()) if data_root else None  # trials run in their own folders
    if resume and not (Path(storage).expanduser().resolve() / (cfg.name or cfg.algorithm)).is_dir():
        raise ConfigError(f"resume error: no Tune experiment '{cfg.name or cfg.algorithm}' in {storage}")
    connect(cfg.runtime.address, cfg.runtime.local_num_cpus)
    tuner = build_tuner(base_raw, storage, data_root, resume=resume, extra_space=extra_space, loggers=loggers)
    grid = tuner.fit()
    tcfg = tune_section(cfg)
    table = results_table(grid)
    path = Path(grid.experiment_path)
    table.to_parquet(path / "results.parquet", index=False)
    best_config, best_metrics, best_run = None, None, None
    try:
        best = grid.get_best_result(metric=tcfg.metric, mode=tcfg.mode, scope="last")
        best_config = {k: v for k, v in best.config.items() if not k.startswith("_")}
        best_metrics = {k: best.metrics.get(k) for k in (tcfg.metric, "val_acc", "test_acc", "step")
                        if k in best.metrics}
        best_run = Path(best.path) / "run"           # the trial's own run directory (_trial_run_dir)
    except RuntimeError:  # every trial failed
        pass
    if verbose:
        print(f"tune: {len(table)} trials, {grid.num_errors} errored; results table {path / 'results.parquet'}")
        print(f"tune: best config by {tcfg.metric} ({tcfg.mode}): {best_config}  metrics: {best_metrics}")
        if best_run is not None and (best_run / "model.pt").is_file():
            print(f"tune: best trial's network: evoplat.load_model({str(best_run)!r})")
    return {"grid": grid, "table": table, "best_config": best_config, "best_metrics": best_metrics,
            "best_run_dir": str(best_run) if best_run is not None else None, "path": str(path)}


def run_tune_cli(args) -> int:
    """`evoplat tune CONFIG.yaml [--set k=v] [--data-root D] [--storage S] [--resume]`."""
    out = run_tune(args.config, args.overrides, args.data_root, args.storage or "runs/tune", args.resume)
    return 0 if out["best_config"] is not None else 1
