"""The ENN artefact (enn.pt) and Grad-CAM of the ENN over the weight image.

enn.pt holds what is needed to reuse an ENN elsewhere (its weights, architecture and input pipeline)
plus one example input: the full-resolution image of a target trained with it, for Grad-CAM.
Grad-CAM (Selvaraju et al. 2017): weights alpha_c = spatial mean of d score / d A_c over the last conv
layer's activations A; map = ReLU(sum_c alpha_c A_c), upsampled to the full weight image, so it shows
which weights (hidden unit x input pixel) the ENN bases its score on.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from evoplat.methods.grad_instructor.enn import ENN, Resize

ARTEFACT = "enn.pt"
FORMAT = "evoplat-enn-v1"


def save_enn_artefact(path: str | os.PathLike, enn: ENN, gcfg, example_image: Optional[torch.Tensor] = None,
                      extra: Optional[dict] = None) -> Path:
    path = Path(path)
    # CPU tensors: the artefact is reused on machines with or without a GPU
    state = {"format": FORMAT, "enn_state": {k: v.detach().cpu().clone() for k, v in enn.state_dict().items()},
             "enn_channels": list(gcfg.enn_channels), "enn_input": gcfg.enn_input,
             "resize_factor": gcfg.resize_factor, "resize_antialias": gcfg.resize_antialias,
             "probe_size": gcfg.probe_size, "guidance_weight": gcfg.guidance_weight, **(extra or {})}
    if example_image is not None:
        state["example_image"] = example_image.detach().cpu().clone()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def resolve_artefact(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    return p / ARTEFACT if p.is_dir() else p


def load_enn_artefact(path: str | os.PathLike) -> tuple[ENN, dict]:
    """The ENN and its metadata; a missing or foreign file is a clear ValueError/FileNotFoundError."""
    p = resolve_artefact(path)
    if not p.is_file():
        raise FileNotFoundError(f"ENN checkpoint error: no ENN artefact at {p}")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"ENN checkpoint error: {p} is not an evoplat ENN artefact")
    enn = ENN(state["enn_channels"])
    enn.load_state_dict(state["enn_state"])
    return enn, state


def grad_cam(enn: ENN, image: torch.Tensor, resize: Resize, signed: bool = False) -> tuple[torch.Tensor, float]:
    """Grad-CAM of `enn` for a full-resolution [1, 1, H, W] image: an [H, W] map and the score.

    Standard (signed=False): ReLU(sum_c alpha_c A_c) scaled to [0, 1]. It is all zero when every region
    lowers the score (an ENN that penalises what it sees); signed=True keeps both signs, scaled to
    [-1, 1], so that case stays visible."""
    small = resize(image.detach())
    # Detached leaf: the map needs d score / d A only, and works for a frozen ENN as well.
    feats = enn.features(small).detach().requires_grad_(True)
    score = enn.score_from_features(feats).sum()
    grads = torch.autograd.grad(score, feats)[0]                  # [1, C, h, w]
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cam = (alpha * feats).sum(dim=1, keepdim=True).detach()
    cam = cam if signed else F.relu(cam)
    cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.abs().max())
    return (cam / peak if peak > 0 else cam), float(score.detach())


def save_gradcam_png(artefact: str | os.PathLike, out: Optional[str | os.PathLike] = None) -> Optional[Path]:
    """Write gradcam.png next to enn.pt: the weight image, the Grad-CAM map, the signed map and, for a first
    layer over a square input, the signed map averaged over hidden units as an input-pixel picture.
    None when the artefact holds no example image."""
    enn, meta = load_enn_artefact(artefact)
    image = meta.get("example_image")
    if image is None:
        return None
    resize = Resize(meta["resize_factor"], meta["resize_antialias"])
    cam, score = grad_cam(enn, image, resize)
    signed, _ = grad_cam(enn, image, resize, signed=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    width = image.shape[-1]
    side = int(math.isqrt(width))
    pixel_panel = meta["enn_input"] == "first_layer" and side * side == width
    fig, axes = plt.subplots(1, 4 if pixel_panel else 3, figsize=(17 if pixel_panel else 13, 3.6))
    lim0 = float(image.abs().max()) or 1.0          # symmetric: white is zero, red positive, blue negative
    axes[0].imshow(image[0, 0].numpy(), aspect="auto", cmap="coolwarm", vmin=-lim0, vmax=lim0)
    axes[0].set_title(f"ENN input ({meta['enn_input']}, full res.)")
    axes[1].imshow(cam.numpy(), aspect="auto", cmap="inferno", vmin=0, vmax=1)
    axes[1].set_title(f"Grad-CAM (score {score:.3g})")
    axes[2].imshow(signed.numpy(), aspect="auto", cmap="coolwarm", vmin=-1, vmax=1)
    axes[2].set_title("signed Grad-CAM (red raises the score)")
    if pixel_panel:
        pix = signed.mean(0).view(side, side)
        lim = float(pix.abs().max()) or 1.0
        axes[3].imshow(pix.numpy(), cmap="coolwarm", vmin=-lim, vmax=lim)
        axes[3].set_title("signed map per input pixel (mean over units)")
    for ax in axes:
        ax.set_xlabel("input index" if meta["enn_input"] == "first_layer" else "hidden unit")
    fig.tight_layout()
    out = Path(out) if out else resolve_artefact(artefact).with_name("gradcam.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
