"""The one exception type users see: its message is the single line the CLI prints."""

from __future__ import annotations


class NasError(ValueError):
    """Bad input or an impossible request, explained in one line (no traceback at the CLI)."""


class TrainingDiverged(NasError):
    """The loss became NaN or infinite: this model failed, but a search over many models can go on."""
