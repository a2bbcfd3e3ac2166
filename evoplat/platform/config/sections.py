"""Shared configuration sections: data, model, fitness, runtime, run bookkeeping, Tune sweeps.

Every option carries its default and a description; `evoplat options` prints them all. Validation
happens here and only here, before anything starts (Ray, data loading, the run directory). Names of
models, datasets and fitness functions are checked against their registries (platform/registry.py).
"""
from __future__ import annotations

import inspect
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evoplat.platform.registry import DATASETS, FITNESS, MODELS, Registry, RegistryError, resolve_target


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key and what is allowed."""


def _registered(registry: Registry, name: str) -> str:
    if name not in registry:
        raise ValueError(f"unknown {registry.kind} '{name}' (known: {', '.join(registry.names())}; "
                         f"or give target: 'package.module:callable')")
    return name


def _unknown_option(builder, kwargs: dict, leading: int) -> Optional[str]:
    """Why `builder` cannot take `kwargs` (the first key it has no parameter for, and the ones it has), or
    None: it takes them all, takes **kwargs, or has no signature to read. Its first `leading` parameters
    are the ones the platform passes itself (input shape, cfg, ...), never options."""
    try:
        params = list(inspect.signature(builder).parameters.values())[leading:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    bad = [k for k in kwargs if k not in names]
    if not bad:
        return None
    return (f"kwargs.{bad[0]}: not an option of {getattr(builder, '__name__', builder)} "
            f"({'its options: ' + ', '.join(names) if names else 'it takes none'})")


def component_options(builder) -> Optional[type]:
    """The options model a component declares (`options`: a StrictModel of its kwargs, each with a
    default and a description), or None: then its signature is all that is known of them."""
    options = getattr(builder, "options", None)
    return options if isinstance(options, type) and issubclass(options, BaseModel) else None


def _invalid_options(builder, options: type, kwargs: dict) -> Optional[str]:
    """Why `kwargs` are not valid `options` of `builder` (one line naming the first bad key), or None."""
    try:
        options(**kwargs)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            return (f"kwargs.{key}: not an option of {getattr(builder, '__name__', builder)} "
                    f"(its options: {', '.join(options.model_fields)})")
        return f"kwargs.{key} = {first['input']!r}: {first['msg'].removeprefix('Value error, ')}"
    return None


class ComponentConfig(StrictModel):
    """A pluggable component: a registered `name`, or a `target` callable (import string or object)."""

    target: Any = Field(None, description="A callable instead of a registered name: an import string "
                                          "'package.module:attribute' (YAML) or the callable itself (Python).")
    kwargs: dict[str, Any] = Field({}, description="Keyword arguments passed to the component's builder "
                                                   "(those of a component that declares them are listed "
                                                   "as <section>.kwargs.<name>, with the name selecting it).")

    @field_validator("target")
    @classmethod
    def _check_target(cls, v):
        if v is not None and not callable(v) and not (isinstance(v, str) and ":" in v):
            raise ValueError("must be an import string 'package.module:attribute' or a callable")
        return v

    def _builder(self, registry: Registry, name: str):
        """The component's builder: the target (None if it cannot be imported here: that error comes
        when it is built), or the registered one."""
        if self.target is None:
            return registry.get(name)
        try:
            return resolve_target(self.target)
        except RegistryError:
            return None

    def _check_kwargs(self, registry: Registry, name: str, leading) -> None:
        """kwargs its options model rejects, or (without one) that the builder has no parameter for: an
        error. `leading(builder)`: how many of the builder's first parameters the platform fills."""
        if not self.kwargs:
            return
        builder = self._builder(registry, name)
        options = component_options(builder)
        if options is not None:
            why = _invalid_options(builder, options, self.kwargs)
        else:
            why = builder is not None and _unknown_option(builder, self.kwargs, leading(builder))
        if why:
            raise ValueError(why)


class DataConfig(ComponentConfig):
    source: str = Field(
        "synthetic", description="Registered dataset: mnist, cifar10 (torchvision), npz (an array file), "
                                 "digits (8x8, ships with scikit-learn), synthetic, or one a user registered. "
                                 "Ignored when `target` is set (a callable returning (x_train, y_train, x_test, "
                                 "y_test[, num_classes])).")
    root: Optional[str] = Field(
        None, description="Folder holding the dataset (mnist/cifar10) or the .npz file path. "
                          "Default: --data-root, else $EVOPLAT_DATA, else ~/.cache/evoplat/data.")
    download: bool = Field(True, description="mnist/cifar10 missing from the data root: download it there "
                                             "first (after checking the free disk; fails within seconds "
                                             "without network). false: a missing dataset is an error.")
    fallback: Optional[str] = Field(None, description="Registered dataset to use instead when the source is "
                                                      "missing and cannot be downloaded (e.g. digits: "
                                                      "scikit-learn's 8x8 digits, shipped with the package); "
                                                      "says so in one line. null: no fallback, an error.")
    val_size: int = Field(5000, ge=0, description="Examples held out of the training split for validation "
                                                   "(used for selection; the test split never is).")
    split_seed: int = Field(0, ge=0, description="Seed of the train/validation split.")
    train_subset: Optional[int] = Field(None, ge=1, description="Use only this many training examples.")
    test_subset: Optional[int] = Field(None, ge=1, description="Use only this many test examples.")
    # synthetic source only
    synthetic_shape: list[int] = Field([1, 8, 8], description="Synthetic input shape (C, H, W) or (D,).")
    synthetic_classes: int = Field(4, ge=2, description="Synthetic number of classes.")
    synthetic_train: int = Field(512, ge=8, description="Synthetic training examples (before the val split).")
    synthetic_test: int = Field(256, ge=8, description="Synthetic test examples.")

    @field_validator("source")
    @classmethod
    def _known(cls, v, info):
        # `target` (declared first) replaces the registered name
        return v if info.data.get("target") is not None else _registered(DATASETS, v)

    @field_validator("fallback")
    @classmethod
    def _known_fallback(cls, v):
        return v if v is None else _registered(DATASETS, v)

    @model_validator(mode="after")
    def _options(self):
        if self.kwargs and self.target is None:
            raise ValueError(f"kwargs.{sorted(self.kwargs)[0]}: the registered source '{self.source}' takes no "
                             "kwargs (data.kwargs go to a data.target loader)")
        self._check_kwargs(DATASETS, self.source, lambda builder: 0)      # a loader(**kwargs)
        return self


class ModelConfig(ComponentConfig):
    name: str = Field("mlp", description="Registered architecture (mlp, vgg16, resnet20, rso_mnist, "
                                         "rso_cifar10, or a user's). Ignored when `target` is set: a callable "
                                         "(input_shape, num_outputs, **kwargs) -> nn.Module.")
    hidden: list[int] = Field([128], description="mlp: hidden layer widths.")
    activation: Literal["relu", "tanh"] = Field("relu", description="mlp: hidden activation.")
    width: float = Field(1.0, gt=0, description="vgg16/resnet20: channel width multiplier (1.0 = paper size).")
    batch_norm: bool = Field(True, description="vgg16: use batch norm.")
    init_seed: int = Field(0, ge=0, description="Seed of the weight initialisation.")

    @field_validator("hidden")
    @classmethod
    def _widths(cls, v):
        if any(w < 1 for w in v):
            raise ValueError(f"every hidden layer needs at least 1 unit (got {v})")
        return v

    @field_validator("name")
    @classmethod
    def _known(cls, v, info):
        # `target` (declared first) replaces the registered name
        return v if info.data.get("target") is not None else _registered(MODELS, v)

    @model_validator(mode="after")
    def _options(self):
        self._check_kwargs(MODELS, self.name, lambda builder: 2)   # builder(input_shape, num_outputs, ...)
        return self


class FitnessConfig(ComponentConfig):
    name: str = Field("neg_loss", description="Registered fitness: neg_loss (negative mean cross-entropy on "
                                              "the generation's minibatch), accuracy, gym (episodes of a "
                                              "gymnasium environment), or a user's. With `target`: a "
                                              "callable (logits [K, B, C], labels [B]) -> fitness [K], or a "
                                              "Fitness class.")

    @field_validator("name")
    @classmethod
    def _known(cls, v, info):
        # `target` (declared first) replaces the registered name
        return v if info.data.get("target") is not None else _registered(FITNESS, v)

    @model_validator(mode="after")
    def _options(self):
        # a task class is built as cls(cfg, data_root, device, **kwargs), a function called as
        # fn(logits, labels, **kwargs)
        self._check_kwargs(FITNESS, self.name, lambda builder: 3 if isinstance(builder, type) else 2)
        return self


class RuntimeConfig(StrictModel):
    backend: Literal["ray", "local"] = Field(
        "ray", description="'ray': evaluate on Ray actors (local instance or cluster); "
                           "'local': in the driver process, no Ray (debugging).")
    address: Optional[str] = Field(
        None, description="Ray address to connect to ('auto', ray://...). Default: $RAY_ADDRESS, "
                          "else start a local instance in-process.")
    num_workers: int = Field(2, ge=1, description="Worker actors, each holding one model replica.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker (also its torch threads).")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker; > 0 places the replica on a GPU.")
    chunk_size: int = Field(32, ge=1, description="Members evaluated per batched call; fixed so results do "
                                                  "not depend on the number of workers.")
    task_timeout_s: float = Field(600.0, gt=0, description="A work item not done within this many seconds "
                                                           "is reassigned and its worker replaced.")
    max_task_retries: int = Field(3, ge=0, description="Times a lost or timed-out work item is retried.")
    local_num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of a local Ray instance started "
                                                                  "in-process (default: the machine's cores, or "
                                                                  "num_workers x cpus_per_worker if more: "
                                                                  "workers then share cores).")
    spread_nodes: bool = Field(True, description="Place workers with the SPREAD strategy across nodes.")
    loop: Literal["auto", "driver", "workers"] = Field(
        "auto", description="Who runs the generations (algorithm es). driver: the driver asks, ships the "
                            "population, gathers fitness and updates, once per generation. workers: every "
                            "worker holds the strategy too and runs many generations per call, trading "
                            "fitness values with its peers directly (shared memory on one node, else a gloo "
                            "group: the workers must reach each other over TCP); same results bit for bit, "
                            "without a call per generation: pays off when generations are short. auto: "
                            "workers when the Ray cluster has one node that can host them (a laptop, one "
                            "machine), else driver, whose pool goes on with the workers left when a node "
                            "is lost; driver with backend local and for methods other than es.")
    shared_memory: bool = Field(True, description="With loop: workers, workers that all run on one node "
                                                  "all-gather through a shared-memory segment (x86 with "
                                                  "/dev/shm; ~0.1-0.2 ms a generation instead of gloo's ~1 ms "
                                                  "on 2 busy cores) and, at low rank, keep the factor rows "
                                                  "where every worker's update reads them; false: always "
                                                  "the gloo group.")
    loop_span_s: float = Field(2.0, gt=0, description="With loop: workers, about how long one call runs "
                                                      "(never past the next evaluation or checkpoint): "
                                                      "longer saves calls, shorter keeps progress lines and "
                                                      "run.max_wall_s prompt.")


class RunConfig(StrictModel):
    checkpoint_every: int = Field(10, ge=1, description="Checkpoint every N steps (generations, epochs, "
                                                        "sweeps, RL updates), and always at the last.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk (oldest removed).")
    eval_every: Optional[int] = Field(None, ge=1, description="Measure validation and test metrics every N "
                                                              "steps and at the last (default: the method's, "
                                                              "10 for ES and RSO, 1 for epoch-based methods).")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many steps in all (counting "
                                                             "those before a resume), before the method's own "
                                                             "budget; resume with a larger value or null.")
    max_wall_s: Optional[float] = Field(None, gt=0, description="Stop (checkpointed, resumable) after this "
                                                                "many seconds of this invocation.")
    target_metric: Optional[str] = Field(None, description="Stop once this reported metric reaches "
                                                           "target_value (e.g. val_acc, test_return).")
    target_value: float = Field(0.0, description="Value of target_metric that ends the run.")
    target_mode: Literal["max", "min"] = Field("max", description="max: stop at >= target_value; min: <=.")
    eval_batch_size: int = Field(2000, ge=1, description="Batch size of accuracy evaluation.")
    log_every: int = Field(1, ge=1, description="Print a progress line every N steps (in a log or a pipe; "
                                                "a terminal shows a progress bar).")
    tensorboard: bool = Field(True, description="Write every metric to TensorBoard event files in "
                                                "RUN_DIR/tensorboard (view: tensorboard --logdir runs/).")
    tensorboard_histograms: bool = Field(False, description="Also write histograms of the ES center θ (and "
                                                            "SNES's per-parameter σ) every step.")
    torch_threads: Optional[int] = Field(None, ge=1, description="Torch threads of the driver (default: torch's).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the driver-side training runs (backprop, rec-LRA, consequential, "
                            "grad-instructor, the hybrid's backprop epochs and control phase): auto = cuda "
                            "when torch sees a CUDA device, else cpu; cuda without one is an error before "
                            "the run starts. ES and RSO ignore it (ES workers: runtime.gpus_per_worker).")


SAMPLERS = ("choice", "grid", "uniform", "loguniform", "randint")


class TuneConfig(StrictModel):
    search_space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Dotted config key -> {sampler: args}; samplers: choice [values], grid [values], "
                    "uniform [lo, hi], loguniform [lo, hi], randint [lo, hi). With scheduler pbt these "
                    "are also the mutations PBT explores. Empty: the method's default space.")
    scheduler: Literal["asha", "pbt", "fifo"] = Field("asha", description="Trial scheduler: ASHA early "
                                                      "stopping, Population Based Training, or none (fifo).")
    metric: str = Field("val_acc", description="Reported metric that ranks trials (never a test metric "
                                               "for selection; test_acc is reported alongside).")
    mode: Literal["max", "min"] = Field("max", description="Whether the metric is maximised or minimised.")
    num_samples: int = Field(4, ge=1, description="Trials sampled from the search space (times each grid).")
    max_concurrent_trials: Optional[int] = Field(None, ge=1, description="Cap on trials running at once "
                                                 "(default: as many as the cluster's resources admit).")
    grace_period: int = Field(2, ge=1, description="asha: steps before a trial may be stopped.")
    reduction_factor: float = Field(2.0, gt=1, description="asha: halving rate.")
    perturbation_interval: int = Field(2, ge=1, description="pbt: steps between exploit/explore decisions.")
    pbt_synch: bool = Field(False, description="pbt: synchronous PBT (every trial reaches each perturbation "
                                               "point before any exploits).")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="pbt: bottom fraction that copies the top.")
    max_failures: int = Field(2, ge=0, description="Times a failed trial is retried from its last checkpoint.")
    trial_cpus: float = Field(1.0, gt=0, description="CPUs of each trial's own process (backprop, driver "
                                                     "loop); its ES workers add runtime.num_workers bundles.")
    trial_gpus: float = Field(0.0, ge=0, description="GPUs reserved for each trial's own process. With 0 a "
                                                     "trial trains on the CPU (run.device auto means cpu in a "
                                                     "trial: concurrent trials must not share an unreserved "
                                                     "GPU); run.device cuda then is a config error.")
    keep_checkpoints: int = Field(4, ge=1, description="Checkpoints kept per trial (PBT needs > 2: a donor's "
                                                       "checkpoint must survive until it is copied).")

    @model_validator(mode="after")
    def _check_space(self):
        for key, spec in self.search_space.items():
            if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
                raise ValueError(f"tune.search_space['{key}'] must be one of {{{', '.join(SAMPLERS)}: ...}}")
        return self


