"""SIGTERM as Ctrl-C: the one handler every entry point and worker installs.

A scheduler (Kubernetes, SLURM, ``kill``) stops a job with SIGTERM; turned into
``KeyboardInterrupt``, it takes the path Ctrl-C takes, and the run ends KILLED with what
it has. ``once=True`` ignores further SIGTERMs while the first is being handled (a worker
closing its trial).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any


def _raise(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _raise_once(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_interrupts(once: bool = False) -> None:
    """Make SIGTERM raise ``KeyboardInterrupt`` in this process (main thread only).

    A handler installed before (an entry point's, a worker's ``once``) is left in place.
    """
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _raise_once if once else _raise)
