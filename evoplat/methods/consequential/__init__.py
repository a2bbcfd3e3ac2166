"""Consequentialism (NLMS/APA) updates around any torch optimizer (`algorithm: consequential`)."""
from evoplat.methods.consequential.trainer import ConsequentialTrainer

__all__ = ["ConsequentialTrainer"]
