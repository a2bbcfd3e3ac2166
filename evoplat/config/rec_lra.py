"""Options of the `rec_lra` trainer."""
from __future__ import annotations

from pydantic import Field  # noqa: F401

from .base import StrictModel


class RecLRAConfig(StrictModel):
    pass
