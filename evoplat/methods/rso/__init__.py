"""Random search optimization (RSO), sequential and sharded (`algorithm: rso`)."""
from evoplat.methods.rso.trainer import RSOTrainer

__all__ = ["RSOTrainer"]
