"""Errors the user can act on (exit status 2), and how a command reports one."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Any


class UserError(Exception):
    """A mistake in the user's input: reported as one line, exit status 2, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A config key holds a value that is not allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        value = value.value if isinstance(value, Enum) else value  # a choice, as it is typed
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: expected {allowed}")


class DataError(UserError):
    """The data source (a CSV file, a weight file) cannot be used."""


class TrackingError(UserError):
    """The tracking store cannot be reached or written."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM outside training, raised once every run of a group is closed, with
    the runs' outcomes as they ended (one recorded whole before it came is FINISHED)."""

    def __init__(self, outcomes: list[Any]) -> None:
        super().__init__("interrupted")
        self.outcomes = outcomes


class JobExit(SystemExit):
    """The exit status a command chose (any other ``SystemExit(1)`` is Hydra refusing a config)."""


def say_error(message: str) -> None:
    """Print one user-facing error line on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)
