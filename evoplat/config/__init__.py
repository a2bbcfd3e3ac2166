"""Typed experiment configuration: one root model, loading from YAML, dotted `--set` overrides.

All validation errors become a single `ConfigError` line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import Field, ValidationError

from .base import ConfigError, DataConfig, ModelConfig, RunConfig, RuntimeConfig, StrictModel
from .consequential import ConsequentialConfig
from .es import ESConfig
from .grad_instructor import GradInstructorConfig
from .hybrid import HybridConfig
from .rec_lra import RecLRAConfig
from .rso import RSOConfig

ALGORITHMS = ("es", "rso", "hybrid", "rec_lra", "consequential", "grad_instructor")


class ExperimentConfig(StrictModel):
    algorithm: Literal["es", "rso", "hybrid", "rec_lra", "consequential", "grad_instructor"] = Field(
        "es", description="Training method.")
    name: Optional[str] = Field(None, description="Experiment name (default: the config file's stem).")
    seed: int = Field(0, ge=0, description="Run seed: noise keys, minibatch order, everything random.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    es: ESConfig = Field(default_factory=ESConfig)
    rso: RSOConfig = Field(default_factory=RSOConfig)
    hybrid: HybridConfig = Field(default_factory=HybridConfig)
    rec_lra: RecLRAConfig = Field(default_factory=RecLRAConfig)
    consequential: ConsequentialConfig = Field(default_factory=ConsequentialConfig)
    grad_instructor: GradInstructorConfig = Field(default_factory=GradInstructorConfig)


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"config error: unknown key '{key}'"
    if "input" in first and first["type"] not in ("missing",):
        return f"config error: {key} = {first['input']!r}: {msg}"
    return f"config error: {key}: {msg}"


def parse_value(text: str) -> Any:
    """A `--set` value is read as YAML, so `3`, `1e-3`, `true`, `[64, 64]` and `null` get their types."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings to a nested dict (returns a new dict)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"config error: --set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config error: '{key}': '{p}' is not a section")
            node = child
        node[parts[-1]] = parse_value(value)
    return out


def build_config(raw: dict) -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError("config error: the config file must hold a mapping of sections")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> ExperimentConfig:
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config error: no config file at {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config error: {p} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config error: {p} must hold a mapping of sections")
        raw.setdefault("name", p.stem)
    return build_config(apply_overrides(raw, list(overrides)))


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def describe_options(model: type[StrictModel] = ExperimentConfig, prefix: str = "") -> list[str]:
    """One line per option: dotted key, default, description (for `--help-config` and the docs)."""
    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        key = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, StrictModel):
            lines.extend(describe_options(ann, key + "."))
            continue
        default = field.default if field.default_factory is None else field.default_factory()
        lines.append(f"{key} = {default!r}  # {field.description or ''}")
    return lines


__all__ = [
    "ALGORITHMS", "ConfigError", "ExperimentConfig", "DataConfig", "ModelConfig", "RuntimeConfig",
    "RunConfig", "ESConfig", "load_config", "build_config", "apply_overrides", "to_yaml", "describe_options",
]
