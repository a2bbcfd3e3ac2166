"""Options of the `hybrid` trainer: backprop epochs with ES phases (docs/hybrid.md)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from evoplat.platform.config import StrictModel

class HybridConfig(StrictModel):
    # -- backprop -----------------------------------------------------------------------------------
    epochs: int = Field(30, ge=1, description="Backprop epochs T.")
    batch_size: int = Field(128, ge=1, description="Backprop minibatch size.")
    optimizer: Literal["sgd", "momentum", "nag", "rmsprop", "adam", "adamw"] = Field(
        "momentum", description="Backprop optimizer (momentum = SGD with momentum).")
    lr: float = Field(0.05, gt=0, description="Backprop learning rate (peak, before the schedule).")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum/nag: momentum coefficient.")
    weight_decay: float = Field(5e-4, ge=0, description="Backprop L2 weight decay.")
    lr_schedule: Literal["constant", "cosine", "step"] = Field(
        "cosine", description="Per-epoch learning-rate schedule: constant, cosine to zero over T, or step.")
    lr_milestones: list[int] = Field([], description="step: epochs after which lr is multiplied by lr_gamma.")
    lr_gamma: float = Field(0.1, gt=0, description="step: lr factor at each milestone.")
    augment: bool = Field(True, description="Standard CIFAR augmentation (random crop with 4-pixel padding, "
                                            "horizontal flip) in backprop epochs.")
    bp_wrapper: Literal["none", "consequential"] = Field(
        "none", description="Wrap the backprop optimizer: 'consequential' uses the consequential method's "
                            "ConsequentialOptimizer (strength below).")
    consequential_strength: float = Field(0.9, ge=0, le=1, description="bp_wrapper=consequential: strength s.")
    max_steps_per_epoch: Optional[int] = Field(None, ge=1, description="Cap on minibatches per epoch (quick runs).")
    # -- ES phases ----------------------------------------------------------------------------------
    es_enabled: bool = Field(True, description="false: no ES phase at all, i.e. the backprop-only baseline "
                                               "(same epochs, data order and seeds, so results pair up).")
    es_every: int = Field(0, ge=0, description="ES period K: an ES phase after every K-th epoch; 0 = only "
                                               "after the last epoch.")
    es_start_epoch: int = Field(1, ge=1, description="No ES phase before this epoch.")
    es_generations: int = Field(10, ge=1, description="Generations G per ES phase.")
    es_popsize: int = Field(10, ge=2, description="Population lambda (children per generation; the elitist "
                                                  "ES also re-evaluates the parent).")
    es_kind: Literal["elitist", "openai_es"] = Field(
        "elitist", description="elitist: (1+lambda)-ES (docs/hybrid.md, Specification); openai_es: antithetic "
                               "ES with Adam.")
    sigma: float = Field(0.01, gt=0, description="Mutation std (absolute), or its multiple of each layer's "
                                                 "weight std when sigma_mode is relative.")
    sigma_mode: Literal["absolute", "relative"] = Field(
        "relative", description="absolute: one sigma for all mutated weights; relative: sigma_l = sigma * "
                                "std(W_l) per parameter tensor, measured at the phase's start.")
    subset: Literal["all", "classifier", "last_k"] = Field(
        "classifier", description="Mutated parameters: all, the classifier only (features cached once per "
                                  "phase), or the last k layers (a BN joins its conv).")
    last_k: int = Field(2, ge=1, description="subset last_k: number of layers mutated.")
    fitness: Literal["neg_loss", "accuracy"] = Field(
        "neg_loss", description="Fitness on the held-out validation split: negative cross-entropy or "
                                "accuracy (the test split is never used).")
    fitness_examples: int = Field(0, ge=0, description="Validation examples used for fitness (first N of "
                                                       "the split); 0 = all of data.val_size.")
    success_rule: bool = Field(False, description="elitist: 1/5th success rule on sigma (kept across phases).")
    success_factor: float = Field(1.22, gt=1, description="elitist: sigma factor of the success rule.")
    es_lr: float = Field(0.05, gt=0, description="openai_es: Adam step size, in units of sigma's scale.")
    # -- the control arm (docs/hybrid.md, "The control arm") ------------------------------------------
    phase_kind: Literal["es", "backprop"] = Field(
        "es", description="What runs at each ES phase's point in the schedule: es (the hybrid), or backprop: "
                          "the control, full-batch gradient descent on cross-entropy over the same subset "
                          "and the same fitness_examples validation examples, with the same budget.")
    control_steps: Optional[int] = Field(
        None, ge=1, description="phase_kind backprop: gradient steps per phase; null = budget-matched, "
                                "round(forward passes of an ES phase / 3), at least 1 (a step ~ 3 forward passes).")
    control_lr: float = Field(
        0.01, gt=0, description="phase_kind backprop: SGD (momentum 0.9, no weight decay) learning rate. "
                                "Fixed rather than the backprop schedule's: a cosine lr is near zero after the "
                                "last epoch, where the ES phase matters most, which would handicap the control.")

    @model_validator(mode="after")
    def _check(self):
        if self.es_kind == "openai_es" and self.es_popsize % 2:
            raise ValueError(f"hybrid.es_popsize must be even with es_kind openai_es (got {self.es_popsize})")
        if self.phase_kind == "backprop" and not self.es_enabled:
            raise ValueError("hybrid.phase_kind backprop replaces ES phases, but es_enabled is false: there is "
                             "no phase to replace (set es_enabled true for the control arm)")
        return self
