"""Options of the evolution-strategy trainer (`algorithm: es`)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from evoplat.platform.config import StrictModel
from evoplat.platform.strategies import STRATEGIES


class ESConfig(StrictModel):
    strategy: str = Field(
        "openai_es", description="Registered strategy: openai_es (Salimans et al.), pgpe (symmetric PGPE, as "
                                 "EvoTorch runs it), snes (separable NES), elitist ((1+lambda)-ES), or a "
                                 "user's (platform/registry.py STRATEGIES).")
    generations: int = Field(100, ge=1, description="Generations to run.")
    popsize: int = Field(256, ge=2, description="Members per generation (the elitist ES adds the parent).")
    sigma: float = Field(0.02, gt=0, description="Initial perturbation std.")
    lr: float = Field(0.01, gt=0, description="Learning rate of the optimizer on the ES gradient "
                                              "(openai_es, pgpe: with clipup the step length) or of the "
                                              "center (snes).")
    optimizer: Optional[Literal["adam", "sgd", "clipup"]] = Field(
        None, description="openai_es, pgpe: optimizer of the center on the gradient estimate; unset: the "
                          "strategy's own (adam for openai_es, clipup for pgpe).")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd and clipup: momentum.")
    max_speed: float = Field(0.0, ge=0, description="clipup: largest step of the center (the velocity's "
                                                    "norm); 0 = 2 * lr.")
    weight_decay: float = Field(0.005, ge=0, description="openai_es: L2 coefficient added to the gradient.")
    antithetic: bool = Field(True, description="Mirrored pairs +eps/-eps sharing a noise key.")
    batch_size: int = Field(1000, ge=1, description="Training examples each generation's members see.")
    sigma_lr: float = Field(0.0, ge=0, description="snes: learning rate of log-sigma; 0 picks the NES default "
                                                   "(3 + ln P) / (5 sqrt P). pgpe: learning rate of sigma; "
                                                   "0 picks 0.1.")
    sigma_max_change: float = Field(0.2, ge=0, description="pgpe: largest relative change of each sigma in "
                                                           "a generation; 0 = unbounded.")
    success_rule: bool = Field(False, description="elitist: adapt sigma by the 1/5th success rule.")
    success_factor: float = Field(1.22, gt=1, description="elitist: sigma multiplier of the success rule.")
    noise: Literal["counter", "table"] = Field(
        "table", description="Perturbation source: 'counter' draws each member's Gaussians from a Philox "
                             "stream keyed by (seed, generation, key); 'table' slices a node-local table "
                             "built once from the seed (faster on CPUs).")
    noise_table_size: int = Field(0, ge=0, description="'table' noise: Gaussians in the table (4 bytes "
                                                       "each, one copy per worker); 0 = max(2**24, 8 * P).")
    perturbation: Literal["full", "lowrank"] = Field(
        "full", description="Member noise: 'full' (a Gaussian per parameter) or 'lowrank' (each weight "
                            "matrix, a conv kernel as (out, in*k*k), perturbed by A B^T / sqrt(rank) with "
                            "Gaussian A, B; 1-D parameters full rank). Applies to every strategy; the "
                            "shared low-rank forward needs a scalar sigma (snes and pgpe fall back to "
                            "materialised members).")
    rank: int = Field(1, ge=1, description="lowrank perturbation: rank r of each weight's noise.")
    bn_mode: Literal["batch", "eval"] = Field(
        "batch", description="How batch norm acts while members are evaluated: 'batch' statistics of the "
                             "generation's batch, or 'eval' running statistics.")

    @field_validator("strategy")
    @classmethod
    def _known(cls, v):
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy '{v}' (known: {', '.join(STRATEGIES.names())})")
        return v

    @model_validator(mode="after")
    def _antithetic_needs_even(self):
        if self.strategy == "pgpe" and not self.antithetic:
            raise ValueError("es.antithetic must be true with es.strategy pgpe (it samples in mirrored pairs)")
        if self.antithetic and self.strategy != "elitist" and self.popsize % 2:
            raise ValueError(f"es.popsize must be even when es.antithetic is true (got {self.popsize})")
        return self
