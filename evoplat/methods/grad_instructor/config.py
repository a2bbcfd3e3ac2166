"""Options of the `grad_instructor` trainer (docs/grad_instructor.md, Specification).

Two modes: `train_enn` trains the Evaluation Neural Network (ENN) by RL, each episode training a fresh
target MLP with the guided loss; `deploy` trains one target MLP with a frozen ENN loaded from
`enn_checkpoint` (or, without one, plain backprop: the baseline with the same data order and epochs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from evoplat.platform.config import StrictModel


class GradInstructorConfig(StrictModel):
    mode: Literal["train_enn", "deploy"] = Field(
        "train_enn", description="train_enn: RL training of the ENN over parallel episodes; deploy: train "
                                 "one target with a frozen ENN (enn_checkpoint) or, without one, plain backprop.")
    enn_checkpoint: Optional[str] = Field(
        None, description="ENN artefact (an enn.pt file, or a run directory holding one). deploy: the ENN "
                          "that guides; train_enn: the ENN to start from.")
    # --- the ENN and what it reads -------------------------------------------------------------------
    enn_input: Literal["first_layer", "activations"] = Field(
        "first_layer", description="What the ENN sees: the target's first weight matrix as an image "
                                   "(hidden x inputs), or its first hidden activations on a fixed probe "
                                   "batch (probe x hidden).")
    resize_factor: float = Field(0.15, gt=0, le=1, description="Bilinear resize factor per side of the ENN "
                                                              "input image (paper: 0.15).")
    resize_antialias: bool = Field(True, description="Antialiased bilinear resize (every weight reaches the "
                                                     "ENN); false = plain bilinear sampling (about 9% do).")
    probe_size: int = Field(64, ge=1, description="enn_input=activations: training examples in the probe batch.")
    enn_channels: list[int] = Field([4, 8], min_length=1, description="Channels of the ENN's 3x3 conv layers.")
    enn_seed: int = Field(0, ge=0, description="Seed of the ENN's initial weights.")
    guidance_weight: float = Field(
        100.0, ge=0, description="lambda: target loss = task loss - lambda * ENN score. The score is a mean over "
                                 "the image, so its gradient is small: at 100, an ENN perturbed by pgpe_sigma "
                                 "gives about a third of the cross-entropy gradient's norm on MNIST.")
    # --- the target MLP's training (episodes, deploy and the baselines share it) ----------------------
    epochs: int = Field(2, ge=1, description="Epochs of target training (deploy and every episode).")
    batch_size: int = Field(64, ge=1, description="Target minibatch size.")
    lr: float = Field(0.01, gt=0, description="Target learning rate (eta_theta).")
    optimizer: Literal["sgd", "momentum", "adam"] = Field("sgd", description="Target optimizer.")
    init: Literal["default", "he"] = Field("default", description="Target init: torch's default or He (kaiming "
                                                                  "normal, zero bias).")
    l1: float = Field(0.0, ge=0, description="L1 penalty on the target's weights (the L1 baseline).")
    train_subset: Optional[int] = Field(None, ge=1, description="Episodes only: train targets on this many "
                                                                "training examples (cheaper RL).")
    reward_subset: Optional[int] = Field(None, ge=1, description="Episodes only: reward = accuracy on this "
                                                                 "many validation examples (default all).")
    # --- reinforcement learning of the ENN -------------------------------------------------------------
    rl_rule: Literal["pgpe", "value"] = Field(
        "pgpe", description="pgpe: policy gradient with parameter-based exploration (REINFORCE over Gaussian "
                            "ENN perturbations, antithetic pairs); value: actor-critic, the ENN is a critic "
                            "regressed on episode returns and the guided backprop is the actor.")
    rl_updates: int = Field(20, ge=1, description="RL updates of the ENN (each runs one batch of episodes).")
    episodes_per_update: int = Field(8, ge=1, description="Episodes per update (pgpe: must be even, "
                                                          "antithetic pairs).")
    enn_lr: float = Field(0.05, gt=0, description="Learning rate of the ENN (eta_phi, Adam).")
    pgpe_sigma: float = Field(0.1, gt=0, description="pgpe: std of the Gaussian perturbations of the ENN weights.")
    pgpe_shaping: Literal["pair_diff", "centered_ranks"] = Field(
        "pair_diff", description="pgpe: reward shaping. pair_diff: normalised reward differences within each "
                                 "antithetic pair (pairs share the target's init and data order); "
                                 "centered_ranks: ranks over all episodes.")
    value_snapshots: int = Field(4, ge=1, description="value: weight states per episode (evenly spaced) "
                                                      "regressed on its return.")
    value_steps: int = Field(20, ge=1, description="value: critic gradient steps per update.")
    eval_center: bool = Field(True, description="Run one extra episode with the unperturbed ENN per update "
                                                "(its accuracies are the row's val_acc/test_acc).")
    final_deploy: bool = Field(True, description="train_enn: after the last update, train one target with "
                                                 "the final ENN on the full data and report it.")

    @field_validator("enn_checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value):
        # Checked with the config, so a wrong path fails before Ray or a run directory exist.
        if value is not None:
            p = Path(value).expanduser()
            if not (p.is_file() or (p / "enn.pt").is_file()):
                raise ValueError(f"no ENN artefact at {p} (give an enn.pt file or a run directory holding one)")
        return value

    @model_validator(mode="after")
    def _pairs_need_even(self):
        if self.rl_rule == "pgpe" and self.episodes_per_update % 2:
            raise ValueError("grad_instructor.episodes_per_update must be even with rl_rule=pgpe "
                             f"(got {self.episodes_per_update})")
        return self
