"""Errors the user can act on (exit status 2) and training outcomes (exit status 1)."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A mistake in the user's input: reported as one line, exit status 2, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A config key holds a value that is not allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: expected {allowed}")


class DataError(UserError):
    """The data source (a CSV file, a weight file) cannot be used."""


class TrackingError(UserError):
    """The tracking store cannot be reached or written."""


class RunFailed(Exception):
    """A run that started and failed (divergence, failed gradient check): exit status 1."""

    exit_code = 1


class StoreFailed(RunFailed):
    """The tracking store failed during a run; its record went to a local fallback folder.

    ``outcome`` is the run's :class:`~mlplab.pipeline.RunOutcome` (training itself ended).
    """

    def __init__(self, message: str, outcome: Any = None) -> None:
        super().__init__(message)
        self.outcome = outcome
