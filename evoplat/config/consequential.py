"""Options of the `consequential` trainer."""
from __future__ import annotations

from pydantic import Field  # noqa: F401

from .base import StrictModel


class ConsequentialConfig(StrictModel):
    pass
