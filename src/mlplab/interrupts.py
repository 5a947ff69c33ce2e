"""SIGTERM as Ctrl-C: the one handler every entry point and worker installs.

A scheduler (Kubernetes, SLURM, ``kill``) stops a job with SIGTERM; turned into
``KeyboardInterrupt``, it takes the path Ctrl-C takes, and the run ends KILLED with what
it has. Only the first SIGTERM is taken; later ones are ignored, so that they cannot cut
the closing of the runs short: ``make`` forwards to its command the SIGTERM that ``kill``
sent to the whole process group, which therefore comes twice. :func:`deferred_interrupts`
holds both signals back over a step that must not be cut in two; :class:`BetweenEpochs`
takes them between two epochs of training.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # from now on
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupted_at_start(signum: int, frame: Any) -> None:
    print("error: interrupted", file=sys.stderr, flush=True)
    raise SystemExit(130)


def quiet_start() -> None:
    """Ctrl-C while an entry point imports (a second or two) ends it as it would later: one
    line, exit status 130, no traceback of whichever import it cut. :func:`sigterm_interrupts`
    gives Ctrl-C back to Python (``KeyboardInterrupt``) once the entry point handles it."""
    signal.signal(signal.SIGINT, _interrupted_at_start)


def sigterm_interrupts() -> None:
    """Make the first SIGTERM raise ``KeyboardInterrupt`` in this process (main thread only)
    and ignore the next ones; Ctrl-C raises it too (again, after :func:`quiet_start`).

    A handler installed before (an entry point's) is left in place.
    """
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGINT) is _interrupted_at_start:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _interrupt)


def _install(handler: Any) -> dict[int, Any]:
    """``handler`` for Ctrl-C and SIGTERM; the handlers it replaces."""
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back (in the main thread) until the block is done, then
    raise the first that came: a step that must not be cut in two (a call handed to the
    store and the note that it was) takes the interrupt after it, not inside it. (Blocking
    the signals would not do: another thread, BLAS's, would take them.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = _install(lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        _restore(previous)
        if held:
            signal.raise_signal(held[0])  # to the handler it was meant for


class BetweenEpochs:
    """Ctrl-C and SIGTERM during training, taken between two epochs: :meth:`check` (a
    training monitor, called after each recorded epoch) raises ``KeyboardInterrupt`` once
    one came, so that the weights kept are those of the last whole epoch (``make rerun``
    of the KILLED run gives the same). A second Ctrl-C stops at once (an epoch can be
    long); a second SIGTERM is ignored (``make`` forwards the one ``kill`` sent). Used as
    a context manager around training; a signal that came after the last check is raised
    again at its end, to the handler it was meant for."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.taken = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> BetweenEpochs:
        if threading.current_thread() is threading.main_thread():
            self.previous = _install(self._take)
        return self

    def _take(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = signum
        elif signum == signal.SIGINT and not self.taken:
            self.taken = True  # training ends with it
            raise KeyboardInterrupt(f"signal {signum}")

    def check(self, progress: Any) -> None:
        """Stop training here if a signal came."""
        if self.pending is not None and not self.taken:
            self.taken = True
            raise KeyboardInterrupt(f"signal {self.pending}")

    def __exit__(self, *exc: object) -> None:
        _restore(self.previous)
        if self.pending == signal.SIGTERM and self.previous:  # its copy may still come
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.pending is not None and not self.taken and exc[0] is None:
            signal.raise_signal(self.pending)
