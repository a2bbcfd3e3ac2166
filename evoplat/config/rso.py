"""Options of the `rso` trainer."""
from __future__ import annotations

from pydantic import Field  # noqa: F401

from .base import StrictModel


class RSOConfig(StrictModel):
    pass
