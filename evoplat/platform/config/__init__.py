"""Typed, validated configuration: shared sections (sections.py) and the experiment root (experiment.py)."""
from evoplat.platform.config.experiment import (ExperimentConfig, apply_overrides, build_config, config_class,
                                                describe_options, load_config, parse_value, read_yaml,
                                                set_dotted, to_plain, to_yaml)
from evoplat.platform.config.sections import (ComponentConfig, ConfigError, DataConfig, FitnessConfig,
                                              ModelConfig, RunConfig, RuntimeConfig, StrictModel, TuneConfig)

__all__ = ["ExperimentConfig", "apply_overrides", "build_config", "config_class", "describe_options",
           "load_config", "parse_value", "read_yaml", "set_dotted", "to_plain", "to_yaml", "ComponentConfig",
           "ConfigError", "DataConfig", "FitnessConfig", "ModelConfig", "RunConfig", "RuntimeConfig",
           "StrictModel", "TuneConfig"]
