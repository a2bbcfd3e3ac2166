"""evoplat: population and evolutionary training of PyTorch networks on Ray.

    import evoplat
    result = evoplat.run("experiments/es_mnist.yaml")            # or a dict, or an ExperimentConfig
    net = result.model()                                         # or evoplat.load_model(run_dir)

Plug-in points (platform/registry.py): MODELS, DATASETS, FITNESS, STRATEGIES, METHODS; a method is a
`Trainer` subclass registered with `register_method`.
"""
__version__ = "0.2.0"

from evoplat import methods as _methods  # noqa: F401  (registers the built-in methods)
from evoplat.api import RunResult, load_model, run
from evoplat.platform.config import ConfigError, ExperimentConfig, build_config, load_config
from evoplat.platform.registry import DATASETS, FITNESS, METHODS, MODELS, STRATEGIES, resolve_target
from evoplat.platform.run.trainer import Trainer, register_method

__all__ = ["run", "load_model", "RunResult", "ExperimentConfig", "ConfigError", "build_config", "load_config",
           "Trainer", "register_method", "MODELS", "DATASETS", "FITNESS", "STRATEGIES", "METHODS", "resolve_target"]
