"""Evolution strategies on the worker pool (`algorithm: es`)."""
from evoplat.methods.es.config import ESConfig
from evoplat.methods.es.trainer import ESTrainer

__all__ = ["ESConfig", "ESTrainer"]
