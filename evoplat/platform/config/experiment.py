"""The experiment config: shared sections plus the one section of the chosen method (a tagged union).

`algorithm` is the tag: `build_config` validates the mapping with the config class of that method, a
subclass of `ExperimentConfig` with one extra field named after the method (`cfg.es`, `cfg.rso`, ...).
A run's config.yaml therefore holds only its own method's options, and a section of another method is
an error. Methods come from the METHODS registry (each method package registers itself), so the root
config never imports a method. All validation errors become a single `ConfigError` line.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import Field, ValidationError, create_model

from evoplat.platform.config.sections import (ConfigError, DataConfig, FitnessConfig, ModelConfig, RunConfig,
                                              RuntimeConfig, StrictModel, TuneConfig, component_options)
from evoplat.platform.registry import DATASETS, FITNESS, METHODS, MODELS, RegistryError, target_name


class ExperimentConfig(StrictModel):
    algorithm: str = Field("es", description="Training method: a registered method's name (es, rso, hybrid, "
                                             "rec_lra, consequential, grad_instructor, or a user's).")
    name: Optional[str] = Field(None, description="Experiment name (default: the config file's stem).")
    seed: int = Field(0, ge=0, description="Run seed: noise keys, minibatch order, everything random.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    fitness: FitnessConfig = Field(default_factory=FitnessConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)

    @property
    def method(self) -> StrictModel:
        """The chosen method's own section (`cfg.es` for algorithm es, ...)."""
        return getattr(self, self.algorithm)

    def __reduce__(self):
        # Rebuilt from plain data in whatever process unpickles it (a Ray worker), with components that
        # the driver registered outside evoplat (a notebook, a script) carried along as callables.
        raw = self.model_dump(mode="python")
        for section, registry, key in (("model", MODELS, "name"), ("data", DATASETS, "source"),
                                       ("fitness", FITNESS, "name")):
            part = raw[section]
            obj = registry._items.get(part[key])
            if part.get("target") is None and obj is not None and not _builtin(obj):
                part["target"] = obj
        trainer = METHODS.get(self.algorithm)
        return (_rebuild, (raw, None if _builtin(trainer) else trainer))


def _builtin(obj: Any) -> bool:
    return str(getattr(obj, "__module__", "")).startswith("evoplat.")


def _rebuild(raw: dict, trainer=None) -> "ExperimentConfig":
    if trainer is not None and raw["algorithm"] not in METHODS:
        METHODS.register(raw["algorithm"], trainer)
    return build_config(raw)


_CLASSES: dict = {}


def config_class(algorithm: str) -> type[ExperimentConfig]:
    """ExperimentConfig with the method's section as a field named after the method."""
    trainer = METHODS.get(algorithm)
    section = trainer.config_class
    key = (algorithm, section)
    if key not in _CLASSES:
        field = (section, Field(default_factory=section, description=f"Options of the {algorithm} method."))
        _CLASSES[key] = create_model(f"{section.__name__}Experiment", __base__=ExperimentConfig,
                                     __module__=__name__, **{algorithm: field})
    return _CLASSES[key]


def _format_error(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    key = prefix + (".".join(str(p) for p in first["loc"]) or "<root>")
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"config error: unknown key '{key}'"
    if msg.startswith("kwargs."):         # a component's option, named in full: model.kwargs.foo
        return f"config error: {key}.{msg}"
    if "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        return f"config error: {key} = {first['input']!r}: {msg}"
    return f"config error: {key}: {msg}"


def parse_value(text: str) -> Any:
    """A `--set` value is read as YAML, so `3`, `1e-3`, `true`, `[64, 64]` and `null` get their types."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """raw['a']['b']['c'] = value for key 'a.b.c', creating sections as needed."""
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config error: '{key}': '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply `a.b.c=value` strings (or a {dotted key: value} mapping) to a nested dict (a new one)."""
    out = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else overrides
    for item in items:
        if isinstance(item, tuple):
            key, value = item
        else:
            if "=" not in item:
                raise ConfigError(f"config error: --set expects key=value, got '{item}'")
            key, text = item.split("=", 1)
            value = parse_value(text)
        set_dotted(out, key, value)
    return out


def build_config(raw: Any) -> ExperimentConfig:
    """Validate a mapping (or return a config object as is) into the method's experiment config."""
    if isinstance(raw, ExperimentConfig):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError("config error: the config must be a mapping of sections")
    algorithm = raw.get("algorithm", "es")
    if not isinstance(algorithm, str) or algorithm not in METHODS:
        raise ConfigError(f"config error: algorithm = {algorithm!r}: unknown method "
                          f"(known: {', '.join(METHODS.names())})")
    others = [k for k in raw if k != algorithm and k in METHODS]
    if others:
        raise ConfigError(f"config error: section '{others[0]}' belongs to algorithm {others[0]}, "
                          f"but algorithm is {algorithm}")
    try:
        cfg = config_class(algorithm).model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    except RegistryError as err:
        raise ConfigError(f"config error: {err}") from None
    if cfg.runtime.loop == "workers" and not METHODS.get(algorithm).supports_worker_loop:
        raise ConfigError(f"config error: runtime.loop = 'workers': algorithm {algorithm} runs its steps "
                          f"on the driver (workers can run the loop for: "
                          f"{', '.join(n for n in METHODS.names() if METHODS.get(n).supports_worker_loop)})")
    return cfg


def read_yaml(path: str | os.PathLike) -> dict:
    """A config file's mapping; every way a file can be unreadable is one ConfigError line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config error: no config file at {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config error: {p} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"config error: cannot read {p}: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config error: {p} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: {p} must hold a mapping of sections")
    return raw


def migrate_legacy(raw: dict) -> dict:
    """A config.yaml written before the tagged union (evoplat 0.1) held every method's section, the sweep
    under `hybrid.tune` and the ES fitness as `es.fitness`: keep what the run used, so it can resume."""
    algorithm = raw.get("algorithm", "es")
    if sum(1 for k in raw if k in METHODS) < 2:
        return raw
    out = {k: v for k, v in raw.items() if k not in METHODS or k == algorithm}
    hybrid_tune = (raw.get("hybrid") or {}).get("tune")
    if hybrid_tune is not None and "tune" not in out:
        out["tune"] = hybrid_tune
    if isinstance(out.get("hybrid"), dict):
        out["hybrid"] = {k: v for k, v in out["hybrid"].items() if k != "tune"}
    if isinstance(out.get("es"), dict) and "fitness" in out["es"]:
        es = dict(out["es"])
        out.setdefault("fitness", {"name": es.pop("fitness")})
        out["es"] = es
    return out


def load_config(source: Any = None, overrides=()) -> ExperimentConfig:
    """A config from a YAML path, a mapping or a config object, with dotted overrides applied."""
    if isinstance(source, ExperimentConfig):
        if not overrides:
            return source
        source = source.model_dump(mode="python")
    if source is None:
        raw: dict = {}
    elif isinstance(source, dict):
        raw = source
    else:
        raw = migrate_legacy(read_yaml(source))
        raw.setdefault("name", Path(source).stem)
    return build_config(apply_overrides(raw, overrides))


def to_plain(cfg: ExperimentConfig) -> dict:
    """The config as plain data (callable targets written as import strings where they have one)."""
    raw = cfg.model_dump(mode="python")
    for section in ("model", "data", "fitness"):
        raw[section]["target"] = target_name(raw[section].get("target"))
    return yaml.safe_load(yaml.safe_dump(raw, sort_keys=False))


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_plain(cfg), sort_keys=False)


def describe_options(algorithms=None) -> list[str]:
    """One line per option: dotted key, default, description (`evoplat options`, the docs); then the
    kwargs of every registered component that declares an options model (`fitness.kwargs.env` of the
    gym fitness, say), each marked with the name that selects it."""
    lines = _describe(ExperimentConfig)
    for name in algorithms or METHODS.names():
        lines += _describe(METHODS.get(name).config_class, name + ".")
    for section, registry in (("model", MODELS), ("fitness", FITNESS)):   # registered data sources take none
        for name in registry.names():
            options = component_options(registry.get(name))
            if options is not None:
                lines += [line.replace("  # ", f"  # ({section}.name: {name}) ", 1)
                          for line in _describe(options, f"{section}.kwargs.")]
    return lines


def _describe(model: type[StrictModel], prefix: str = "") -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        key = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, StrictModel):
            lines.extend(_describe(ann, key + "."))
            continue
        default = field.default if field.default_factory is None else field.default_factory()
        lines.append(f"{key} = {default!r}  # {field.description or ''}")
    return lines
