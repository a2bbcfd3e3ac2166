"""One trainer per method. Each module exposes `train(ctx: RunContext) -> dict` (the final summary)."""
from __future__ import annotations

import importlib

TRAINERS = {
    "es": "evoplat.trainers.es",
    "rso": "evoplat.trainers.rso",
    "hybrid": "evoplat.trainers.hybrid",
    "rec_lra": "evoplat.trainers.rec_lra",
    "consequential": "evoplat.trainers.consequential",
    "grad_instructor": "evoplat.trainers.grad_instructor",
}


def get_trainer(algorithm: str):
    return importlib.import_module(TRAINERS[algorithm])
