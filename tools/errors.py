"""The small, typed family of errors that eoagent's tools raise.

Every message is one line that says what was wrong and what to do about it; the CLI
prints it as is and the agent loop hands it back to the brain as a tool error.
"""

from __future__ import annotations


class EOError(Exception):
    """Base class: a problem the user (or the model) can fix by changing the input."""


class InputFileError(EOError):
    """A file is missing, unreadable, corrupt or of a kind we cannot open."""


class BandError(EOError):
    """A band a computation needs is absent, or a band mapping is inconsistent."""


class GridMismatchError(EOError):
    """Two scenes that must share a pixel grid (pre/post) do not."""


class ArgumentError(EOError):
    """A tool argument is out of range, unknown, or points somewhere it may not."""


class EmptyResultError(EOError):
    """A computation had nothing to work on (all pixels nodata, empty mask)."""


class NoOverlapError(EmptyResultError):
    """Two inputs that must cover the same ground (a result and a region) do not."""


def one_line(message: str) -> str:
    """Collapse whitespace so a message always prints as a single line."""
    return " ".join(str(message).split())
