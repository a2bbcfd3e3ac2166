"""Options of the `consequential` trainer: backprop with an optional consequentialism (APA) wrapper."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from evoplat.platform.config import StrictModel


class ConsequentialConfig(StrictModel):
    optimizer: Literal["sgd", "momentum", "nag", "rmsprop", "adam"] = Field(
        "sgd", description="Base optimizer the update is fed to: sgd, momentum (SGD+momentum), nag "
                           "(Nesterov), rmsprop, adam.")
    lr: float = Field(0.05, gt=0, description="Learning rate of the base optimizer.")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum/nag: momentum coefficient.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay of the base optimizer (applied by it, "
                                                       "after the gradient is normalised).")
    epochs: int = Field(10, ge=1, description="Training epochs.")
    batch_size: int = Field(128, ge=1, description="Minibatch size (the APA batch).")
    augment: bool = Field(False, description="CIFAR-style random crop and flip of the training images.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Learning-rate schedule over the run: constant or cosine to zero (per step).")
    enabled: bool = Field(True, description="Wrap the base optimizer with the consequentialism update; false "
                                            "trains with the plain base optimizer (the baseline).")
    strength: float = Field(0.9, ge=0, le=1, description="Normalisation strength s: 0 is the plain gradient, "
                                                         "1 the exact APA update (ridge eps = tau (1-s)/s).")
    mode: Literal["replace", "emend"] = Field(
        "replace", description="replace: reading (A), the APA direction replaces the gradient fed to the base "
                               "optimizer; emend: reading (B, speculative), the base optimizer's step is "
                               "corrected so each sample's output moves only by its own error.")
    damping: float = Field(1e-3, ge=0, description="Extra ridge, relative to the Gram matrix's mean eigenvalue, "
                                                   "that keeps the Gram solve stable when inputs are rank "
                                                   "deficient.")
    rescale: bool = Field(True, description="Scale the APA direction so learning rates stay comparable with "
                                            "the plain gradient (false: raw APA, lr 1 = fit the batch).")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cap on minibatches per epoch (quick runs).")
