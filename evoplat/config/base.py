"""Shared configuration sections: data, model, runtime, run bookkeeping.

Every option carries its default and a description; `evoplat run --help-config` prints them all.
Validation happens here and only here, before anything starts (Ray, data loading, the run directory).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key and what is allowed."""


class DataConfig(StrictModel):
    source: Literal["mnist", "cifar10", "npz", "synthetic"] = Field(
        "synthetic", description="Dataset source: torchvision MNIST/CIFAR-10, an .npz array file, or generated data.")
    root: Optional[str] = Field(
        None, description="Folder holding the dataset (mnist/cifar10) or the .npz file path. "
                          "Default: --data-root, else $EVOPLAT_DATA, else ~/.cache/evoplat/data.")
    download: bool = Field(False, description="Allow torchvision to download a missing dataset.")
    val_size: int = Field(5000, ge=0, description="Examples held out of the training split for validation "
                                                   "(used for selection; the test split never is).")
    split_seed: int = Field(0, ge=0, description="Seed of the train/validation split.")
    train_subset: Optional[int] = Field(None, ge=1, description="Use only this many training examples.")
    test_subset: Optional[int] = Field(None, ge=1, description="Use only this many test examples.")
    # synthetic source only
    synthetic_shape: list[int] = Field([1, 8, 8], description="Synthetic input shape (C, H, W) or (D,).")
    synthetic_classes: int = Field(4, ge=2, description="Synthetic number of classes.")
    synthetic_train: int = Field(512, ge=8, description="Synthetic training examples (before the val split).")
    synthetic_test: int = Field(256, ge=8, description="Synthetic test examples.")


class ModelConfig(StrictModel):
    name: Literal["mlp", "rso_mnist", "rso_cifar10", "vgg16", "resnet20"] = Field(
        "mlp", description="Architecture from the model zoo.")
    hidden: list[int] = Field([128], description="mlp: hidden layer widths.")
    activation: Literal["relu", "tanh"] = Field("relu", description="mlp: hidden activation.")
    width: float = Field(1.0, gt=0, description="vgg16/resnet20: channel width multiplier (1.0 = paper size).")
    batch_norm: bool = Field(True, description="vgg16: use batch norm.")
    init_seed: int = Field(0, ge=0, description="Seed of the weight initialisation.")


class RuntimeConfig(StrictModel):
    backend: Literal["ray", "local"] = Field(
        "ray", description="'ray': evaluate on Ray actors (local instance or cluster); "
                           "'local': in the driver process, no Ray (debugging).")
    address: Optional[str] = Field(
        None, description="Ray address to connect to ('auto', ray://...). Default: $RAY_ADDRESS, "
                          "else start a local instance in-process.")
    num_workers: int = Field(2, ge=1, description="Worker actors, each holding one model replica.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker (also its torch threads).")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker; > 0 places the replica on a GPU.")
    chunk_size: int = Field(32, ge=1, description="Members evaluated per batched call; fixed so results do "
                                                  "not depend on the number of workers.")
    task_timeout_s: float = Field(600.0, gt=0, description="A work item not done within this many seconds "
                                                           "is reassigned and its worker replaced.")
    max_task_retries: int = Field(3, ge=0, description="Times a lost or timed-out work item is retried.")
    local_num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of a local Ray instance started "
                                                                  "in-process (default: all).")
    spread_nodes: bool = Field(True, description="Place workers with the SPREAD strategy across nodes.")


class RunConfig(StrictModel):
    checkpoint_every: int = Field(10, ge=1, description="Checkpoint every N generations/epochs.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk (oldest removed).")
    eval_every: int = Field(10, ge=1, description="Measure validation and test accuracy every N steps.")
    eval_batch_size: int = Field(2000, ge=1, description="Batch size of accuracy evaluation.")
    log_every: int = Field(1, ge=1, description="Print a progress line every N steps.")
    torch_threads: Optional[int] = Field(None, ge=1, description="Torch threads of the driver (default: torch's).")
