"""Options of the `rso` trainer. Defaults are the authors' (their train.py; docs/rso.md, Specification)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from evoplat.platform.config import StrictModel


class RSOConfig(StrictModel):
    cycles: int = Field(50, ge=1, description="Cycles C (the code's --epochs): every parameter is visited "
                                              "once per cycle. Paper: 50 on MNIST, 500 on CIFAR-10.")
    batch_size: int = Field(5000, ge=1, description="Training examples each weight trial is evaluated on "
                                                    "(--sample_batch).")
    batches_per_layer: Optional[int] = Field(
        None, ge=1, description="Distinct batches a layer group cycles through in one cycle (trial t uses "
                                "batch t mod count). null: all that fit (n // batch_size), as the authors' "
                                "iterator does; smaller values bound the activation cache's memory.")
    trials_per_tensor: Optional[int] = Field(
        None, ge=1, description="Visit only the first N scalars of each tensor per cycle (null: all, the "
                                "paper). For smoke tests and budgeted runs.")
    anneal_floor: float = Field(0.1, ge=0, le=1, description="alpha (--anneal): sigma is annealed linearly "
                                                             "from sigma_d to sigma_d*(alpha+(1-alpha)/C).")
    weight_decay: float = Field(1e-4, ge=0, lt=1, description="w <- w*(1-wd) before each trial of w.")
    sample_scale: float = Field(1.0, gt=0, description="Multiplier of the He std sigma_d of conv/FC layers.")
    bn_sigma: float = Field(0.167, gt=0, description="Perturbation std of BN gamma and beta.")
    reverse_order: bool = Field(True, description="Visit blocks last to first (reverse_opt; FC always first).")
    mode: Literal["fast", "cached", "full"] = Field(
        "fast", description="Trial evaluation: 'fast' (3 candidates in one batched pass from the layer, "
                            "only the touched channel recomputed), 'cached' (authors': cached inputs, one "
                            "candidate per pass), 'full' (3 whole-network passes). Same decisions.")
    tie_tol: float = Field(2e-7, ge=0, description="fast/cached: a decision whose loss margin is below this "
                                                  "times the batch size is re-decided by full passes, so "
                                                  "decisions equal brute force despite rounding (measured "
                                                  "error: at most 1.5e-8 per image at batch 5000).")
    eval_bn_images: int = Field(2000, ge=1, description="Training images whose BN statistics are used for "
                                                        "test evaluation (the authors reset them each time).")
    sharded: bool = Field(False, description="Sharded RSO on the worker pool (a Jacobi-style approximation "
                                             "of the sequential sweep); false: sequential in the driver.")
    shards: Optional[int] = Field(None, ge=1, description="sharded: shards per round (default "
                                                          "runtime.num_workers). 1 equals sequential RSO.")
    shard_size: int = Field(64, ge=1, description="sharded: consecutive scalars per shard per round; every "
                                                  "shard starts from the round's common base weights.")
    merge_guard: bool = Field(True, description="sharded: check the merged round on a batch against the "
                                                "base and each shard alone, and keep the lowest loss.")
