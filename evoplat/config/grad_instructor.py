"""Options of the `grad_instructor` trainer."""
from __future__ import annotations

from pydantic import Field  # noqa: F401

from .base import StrictModel


class GradInstructorConfig(StrictModel):
    pass
