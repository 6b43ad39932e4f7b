"""The one exception type users see (its message is the single line the CLI prints), and what keeps secrets out
of every printed line."""

from __future__ import annotations

import re


class NasError(ValueError):
    """Bad input or an impossible request, explained in one line (no traceback at the CLI)."""


class TrainingDiverged(NasError):
    """The loss became NaN or infinite: this model failed, but a search over many models can go on."""


# user:password@ in any URL (postgresql://, mysql://, redis://, ...) and password=... query parameters
_URL_SECRET = re.compile(r"(\b[A-Za-z][\w+.-]*://)([^:/@\s'\"]*):([^@\s'\"]+)@")
_QUERY_SECRET = re.compile(r"(?i)\b(password|passwd|pwd|secret|token)=([^&\s'\"]+)")


def redact(text: str) -> str:
    """``text`` with every secret in a URL replaced by ``***`` (``postgresql://user:***@host/db``): the form of
    every line the command prints."""
    return _QUERY_SECRET.sub(r"\1=***", _URL_SECRET.sub(r"\1\2:***@", text))
