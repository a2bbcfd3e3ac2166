"""Backprop epochs with ES phases (`algorithm: hybrid`)."""
from evoplat.methods.hybrid.trainer import HybridTrainer

__all__ = ["HybridTrainer"]
