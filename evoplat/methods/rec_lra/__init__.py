"""Recursive local representation alignment (rec-LRA) (`algorithm: rec_lra`)."""
from evoplat.methods.rec_lra.trainer import RecLRATrainer

__all__ = ["RecLRATrainer"]
