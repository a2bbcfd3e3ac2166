"""Grad-Instructor core: the ENN, its input image, guided backprop. This is our reading of the abstract
(docs/grad_instructor.md, Specification).

The Evaluation Neural Network (ENN) is a small CNN reading the target MLP's first weight matrix (or its
hidden activations on a probe batch) as a one-channel image, bilinearly shrunk by 0.15 per side. The
target is trained on  task loss - lambda * ENN(image(theta)),  the ENN frozen: its gradient flows through
the ENN and the resize into theta. Pure torch; the RL of the ENN lives in rl.py.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from evoplat.platform.backprop import make_torch_optimizer, train_epoch
from evoplat.platform.models import build_model
from evoplat.platform.population.forward import accuracy


# --- the resize, as two matrices ------------------------------------------------------------------------
def resize_matrix(n_in: int, factor: float, antialias: bool) -> torch.Tensor:
    """[n_out, n_in] matrix of 1-D bilinear resizing with torch's conventions (half-pixel centres,
    scale = 1/factor as F.interpolate uses when given `scale_factor`). Bilinear resizing is separable,
    so an image resizes as  A_h @ X @ A_w^T: two small matmuls, cheap to back-propagate through."""
    n_out = int(math.floor(n_in * factor))
    if n_out < 1:
        raise ValueError(f"resize of {n_in} pixels by {factor} leaves none")
    scale = 1.0 / factor
    out = torch.zeros(n_out, n_in, dtype=torch.float64)
    if antialias and scale > 1.0:
        # PIL-style triangle filter widened by the scale (what torch does with antialias=True).
        support = scale
        for i in range(n_out):
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), n_in)
            j = torch.arange(lo, hi, dtype=torch.float64)
            w = (1.0 - ((j - center + 0.5) / scale).abs()).clamp(min=0.0)
            out[i, lo:hi] = w / w.sum()
        return out.float()
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        out[i, i0] += 1.0 - frac
        out[i, i1] += frac
    return out.float()


class Resize(nn.Module):
    """Bilinear resize of [..., H, W] images by `factor` per side (matrices cached per input size)."""

    def __init__(self, factor: float = 0.15, antialias: bool = True):
        super().__init__()
        self.factor, self.antialias = factor, antialias
        self._cache: dict = {}

    def matrices(self, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (h, w, str(device))
        if key not in self._cache:
            self._cache[key] = (resize_matrix(h, self.factor, self.antialias).to(device),
                                resize_matrix(w, self.factor, self.antialias).to(device))
        return self._cache[key]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        a_h, a_w = self.matrices(img.shape[-2], img.shape[-1], img.device)
        lead = img.shape[:-2]
        flat = img.reshape(-1, *img.shape[-2:])
        if flat.shape[0] == 1:      # the usual single image: plain 2-D matmuls (bmm is slower on CPU)
            return (a_h @ flat[0] @ a_w.T).reshape(*lead, a_h.shape[0], a_w.shape[0])
        return (a_h @ flat @ a_w.T).reshape(*lead, a_h.shape[0], a_w.shape[0])


# --- what the ENN reads ---------------------------------------------------------------------------------
def first_linear(model: nn.Module) -> nn.Linear:
    return next(m for m in model.modules() if isinstance(m, nn.Linear))


def target_image(model: nn.Module, source: str, probe: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The full-resolution [1, 1, H, W] image of the target that the ENN reads (differentiable in theta).

    Weights are scaled by sqrt(fan_in), so a freshly initialised layer has entries of order one
    whatever its width; the scale is fixed (not data-dependent), so the ENN still sees weight growth.
    """
    layer = first_linear(model)
    if source == "first_layer":
        img = layer.weight * math.sqrt(layer.in_features)
    elif source == "activations":
        if probe is None:
            raise ValueError("enn_input=activations needs a probe batch")
        img = F.relu(layer(probe.flatten(1)))            # [probe, hidden]
    else:
        raise ValueError(f"unknown enn_input '{source}'")
    return img.unsqueeze(0).unsqueeze(0)


class ENN(nn.Module):
    """Small CNN: 3x3 convs keeping the resolution (so Grad-CAM maps are as fine as the input), global
    mean pooling, a linear head giving one score. The head starts at zero: an untrained ENN exerts no
    guidance, so RL starts from plain backprop."""

    def __init__(self, channels: list[int] = (4, 8)):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()]
            c_in = c
        self.features = nn.Sequential(*layers)   # Grad-CAM's target: the last ReLU's output
        self.head = nn.Linear(c_in, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def score_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats.mean(dim=(2, 3))).squeeze(-1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.score_from_features(self.features(img))


def build_enn(channels, seed: int) -> ENN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ENN(list(channels))


class Instructor:
    """A frozen ENN with its input pipeline: `score(model)` is differentiable in the model's weights."""

    def __init__(self, enn: ENN, source: str, factor: float, antialias: bool, probe=None):
        self.enn = enn.eval().requires_grad_(False)   # frozen: gradients reach theta, never phi
        self.source, self.probe = source, probe
        self.resize = Resize(factor, antialias)

    def to(self, device) -> "Instructor":
        """Move the ENN and the probe batch to the target's device (in place)."""
        self.enn = self.enn.to(device)
        self.probe = None if self.probe is None else self.probe.to(device)
        return self

    def image(self, model: nn.Module) -> torch.Tensor:
        if self.source == "first_layer":    # resize, then scale: same result, 40x fewer multiplications
            layer = first_linear(model)
            return self.resize(layer.weight[None, None]) * math.sqrt(layer.in_features)
        return self.resize(target_image(model, self.source, self.probe))

    def score(self, model: nn.Module) -> torch.Tensor:
        return self.enn(self.image(model)).squeeze()


def guided_extra_loss(instructor: Optional[Instructor], weight: float, l1: float = 0.0):
    """The term added to the task loss: -lambda * ENN score (+ an optional L1 penalty on the weights)."""
    if (instructor is None or weight == 0.0) and l1 == 0.0:
        return None

    def extra(model: nn.Module) -> torch.Tensor:
        total = torch.zeros((), device=first_linear(model).weight.device)
        if instructor is not None and weight:
            total = total - weight * instructor.score(model)
        if l1:
            total = total + l1 * sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.Linear))
        return total
    return extra


# --- one target network trained with the guided loss -----------------------------------------------------
def he_init_(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


class TargetTraining:
    """Trains one fresh target MLP, epoch by epoch, with or without an instructor.

    Its seed fixes the init and the (seed, epoch) minibatch order, so runs that differ only in the
    guidance see identical data: their accuracy differences are paired."""

    def __init__(self, gcfg, model_cfg, data, seed: int, instructor: Optional[Instructor] = None,
                 x_train=None, y_train=None):
        self.gcfg, self.data, self.seed, self.instructor = gcfg, data, seed, instructor
        self.x_train = data.x_train if x_train is None else x_train
        self.y_train = data.y_train if y_train is None else y_train
        self.model = build_model(model_cfg.model_copy(update={"init_seed": seed}), data.input_shape,
                                 data.num_classes)
        if gcfg.init == "he":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                he_init_(self.model)
        # drawn on the CPU above, so the initial weights do not depend on where the data lives
        self.model.to(self.x_train.device)
        if instructor is not None:
            instructor.to(self.x_train.device)
        self.optimizer = make_torch_optimizer(gcfg.optimizer, self.model.parameters(), gcfg.lr)
        self.extra = guided_extra_loss(instructor, gcfg.guidance_weight, gcfg.l1)
        self.epoch = 0

    def run_epoch(self) -> dict:
        stats = train_epoch(self.model, self.optimizer, self.x_train, self.y_train, self.gcfg.batch_size,
                            self.seed, self.epoch, extra_loss=self.extra)
        self.epoch += 1
        if self.instructor is not None:
            stats["enn_score"], stats["enn_grad_norm"] = self.guidance_strength()
        return stats

    def guidance_strength(self) -> tuple[float, float]:
        """ENN score and the norm of lambda * its gradient in theta (the abstract's 'gradient magnitudes
        adjusted by training stage' made measurable)."""
        params = [p for p in self.model.parameters()]
        score = self.instructor.score(self.model)
        grads = torch.autograd.grad(score, params, allow_unused=True)
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
        return float(score.detach()), self.gcfg.guidance_weight * norm

    def evaluate(self, splits=("train", "val", "test"), subset: Optional[int] = None,
                 batch_size: int = 2000) -> dict:
        self.model.eval()
        out = {}
        for name in splits:
            x, y = (self.x_train, self.y_train) if name == "train" else self.data.split(name)
            if subset:
                x, y = x[:subset], y[:subset]
            if len(x):
                out[f"{name}_acc"], out[f"{name}_loss"] = accuracy(self.model, x, y, batch_size)
        return out
