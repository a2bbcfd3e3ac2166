"""Grad-Instructor: an RL-trained evaluation network guiding backprop (`algorithm: grad_instructor`)."""
from evoplat.methods.grad_instructor.trainer import GradInstructorTrainer

__all__ = ["GradInstructorTrainer"]
