"""Options of the `rec_lra` trainer (recursive local representation alignment, docs/rec_lra.md).

The network comes from the `model` section (`mlp`: hidden, activation; `resnet20`: width) but is built
by rec-LRA itself (rule.py, conv.py: no batch norm, with error-feedback matrices).
Values marked "paper" are those a third-party port attributes to the rec-LRA appendix (unverified; docs/rec_lra.md).
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field

from evoplat.platform.config import StrictModel


class RecLRAConfig(StrictModel):
    mode: Literal["rec_lra", "backprop"] = Field(
        "rec_lra", description="'rec_lra': the backprop-free rule; 'backprop': the same network, data order "
                               "and epochs trained with autograd (the baseline of the comparison).")
    epochs: int = Field(10, ge=1, description="Training epochs.")
    batch_size: int = Field(50, ge=1, description="Minibatch size.")
    optimizer: Literal["sgd", "momentum", "nag", "rmsprop", "adam", "adamw"] = Field(
        "adam", description="Torch optimizer the updates are fed to as .grad.")
    lr: float = Field(1e-3, gt=0, description="Learning rate of the forward weights W (and biases).")
    lr_feedback: Optional[float] = Field(None, gt=0, description="Learning rate of the error-feedback "
                                                                 "matrices E (default: lr).")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="Per-epoch learning-rate schedule (cosine decays to 0 at the last epoch).")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum/nag optimizers: momentum.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay of W (decoupled with adamw).")
    feedback_weight_decay: float = Field(0.0, ge=0, description="Weight decay of E (Kolen-Pollack "
                                                                "alignment of E with W^T needs some).")
    # -- the rule -------------------------------------------------------------------------------
    beta: float = Field(0.1, gt=0, description="Target nudge strength: target = phi(h - beta E s). "
                                               "LRA-E official 0.1; paper (per the port) 0.1205.")
    gamma: float = Field(1.0, gt=0, description="Scale of the E update. LRA-E official 1.0; paper 0.1524.")
    e_rule: Literal["kolen_pollack", "eq6"] = Field(
        "kolen_pollack", description="E update: 'kolen_pollack' dE = gamma z^l s^T (= gamma dW^{l+1}^T for "
                                     "adjacent sources; LRA-E official code) or 'eq6' dE = -gamma d^l s^T "
                                     "(rec-LRA port's Eq. 6).")
    error_units: Literal["l2", "l1l2"] = Field(
        "l2", description="Error units: 'l2' e = z - target; 'l1l2' the convex mixture "
                          "a (z - t) + (1 - a) sign(z - t) (paper appendix, per the port).")
    alpha_skip: float = Field(0.19, ge=0, le=1, description="l1l2: mixture weight at error-skip endpoints "
                                                            "and the output layer (paper 0.19).")
    alpha_adjacent: float = Field(0.24, ge=0, le=1, description="l1l2: mixture weight at adjacent endpoints "
                                                                "(paper 0.24).")
    error_skip: int = Field(2, ge=0, description="m: hidden layer l with l % m == 0 takes its target from the "
                                                 "output error e^L (error skip); others from e^{l+1}. 0 = no "
                                                 "skips (LRA-E). resnet20 always mirrors its blocks (m = 2).")
    forward_skip: int = Field(0, ge=0, description="mlp: n, add z^{l-n} to h^l when l % n == 0 and sizes "
                                                   "match (residual MLP); 0 = none.")
    ball_radius: float = Field(1.0, ge=0, description="Re-project every update tensor into the ball of this "
                                                      "L2 radius (paper: always on; port default 1.0). 0 = off.")
    input_noise: float = Field(0.0, ge=0, description="Std of Gaussian noise added to training inputs "
                                                      "(paper 0.1).")
    # -- initialisation -----------------------------------------------------------------------------
    init: Literal["gaussian", "xavier", "orthogonal", "kaiming"] = Field(
        "xavier", description="mlp: init of W ('gaussian' = N(0, w_init_std^2); the paper's unit Gaussian is "
                              "w_init_std=1). resnet20 convs are always Kaiming (Fixup-scaled branches).")
    w_init_std: float = Field(0.05, gt=0, description="Std of W for init=gaussian (LRA-E official 0.1).")
    e_init: Literal["gaussian", "xavier", "orthogonal", "kaiming"] = Field(
        "gaussian", description="Init of E ('gaussian' = N(0, e_init_std^2)).")
    e_init_std: float = Field(1.0, gt=0, description="Std of E for e_init=gaussian (paper and LRA-E: 1.0).")
    activation: Optional[Literal["tanh", "relu", "lrelu"]] = Field(
        None, description="Hidden activation phi (default: model.activation); lrelu = leaky ReLU 0.1.")
    # -- network / data --------------------------------------------------------------------------
    resnet_blocks: int = Field(3, ge=1, description="resnet20: basic blocks per stage (3 = ResNet-20, "
                                                    "1 = ResNet-8 for small CPUs).")
    augment: bool = Field(False, description="Random crop + horizontal flip (image data) in both modes.")
    # -- population ------------------------------------------------------------------------------
    population: list[Union[int, dict[str, Any]]] = Field(
        [], description="Train several members in parallel on the Ray pool, one epoch per work item. An "
                        "int is a member seed; a dict holds dotted overrides, e.g. {seed: 1, rec_lra.beta: 0.2, "
                        "model.init_seed: 1}. Empty = one run on the driver.")
