"""One run's lifecycle: start → logs → end with a status, the fallback folder, interrupts.

:func:`tracked_run` is the one owner of a run's life. It opens the run, hands the stages a
:class:`Recorder`, and always ends the run: FINISHED unless a stage said otherwise
(:meth:`Recorder.end_as`), FAILED with ``failure_reason`` when an exception escapes,
KILLED on Ctrl-C or SIGTERM (the exception goes on up). When the store fails mid-run,
nothing is raised: the record goes on into the fallback folder, and
:attr:`Recorder.fallback` says where (the outcome carries it; the caller decides what that
means for its exit status).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlplab.interrupts import sigterm_interrupts
from mlplab.tracking.fallback import FallbackSink
from mlplab.tracking.sink import NullSink, Relay, Sink

log = logging.getLogger("mlplab")


@dataclass
class RunSpec:
    """What a run is opened with, and where its record goes if the store fails."""

    params: dict[str, str]
    tags: dict[str, str]
    name: str | None
    uri: str = ""
    experiment: str = ""
    parent_run_id: str | None = None
    fallback_dir: Path | None = None


class Recorder(Relay):
    """What the stages tell the run (every call goes to its sink); the status it ends with."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(sink)
        self.status = "FINISHED"
        self.failure: str | None = None
        self.fallback: Path | None = None
        self.notice = ""

    def end_as(self, status: str, failure: str | None = None) -> None:
        """The status the run ends with (FAILED and KILLED carry a reason)."""
        self.status, self.failure = status, failure
        if failure:
            self.set_tags({"failure_reason": failure[:5000]})


@contextlib.contextmanager
def tracked_run(sink: Sink, spec: RunSpec) -> Iterator[Recorder]:
    """Open the run, yield its :class:`Recorder`, end it with its status whatever happens.

    A store that cannot open the run raises :class:`~mlplab.errors.TrackingError` here,
    before any stage ran (no run is left RUNNING). SIGTERM is an interrupt meanwhile.
    """
    sigterm_interrupts()
    fallback = None
    if spec.fallback_dir is not None and not isinstance(sink, NullSink):
        sink = fallback = FallbackSink(
            sink, spec.fallback_dir, spec.uri, spec.experiment, spec.parent_run_id
        )
    try:
        sink.start(spec.params, spec.tags, spec.name)
    except KeyboardInterrupt:
        if sink.run_id is not None:
            _end(sink, "KILLED")
        raise
    recorder = Recorder(sink)
    try:
        yield recorder
    except KeyboardInterrupt:
        recorder.status = "KILLED"
        if recorder.failure is None:
            with contextlib.suppress(Exception):
                recorder.end_as("KILLED", "interrupted")
        raise
    except BaseException as exc:
        recorder.status = "FAILED"
        with contextlib.suppress(Exception):
            recorder.set_tags({"failure_reason": f"{type(exc).__name__}: {exc}"[:5000]})
        raise
    finally:
        _end(sink, recorder.status)
        if fallback is not None and fallback.active:
            recorder.fallback, recorder.notice = fallback.folder, fallback.notice()


def _end(sink: Sink, status: str) -> None:
    try:
        sink.end(status)
    except Exception as exc:
        log.warning("could not update the tracking store: %s", exc)
