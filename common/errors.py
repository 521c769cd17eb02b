"""The error a bad setting raises, on either side of the wire, and pydantic's report of one as a line."""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(ValueError):
    """A setting has a value that cannot be run with; the message names the setting."""


def one_line(error: ValidationError) -> str:
    """Pydantic's report of invalid settings as one line: `field: problem; field: problem`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
