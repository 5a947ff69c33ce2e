"""The entry points' failure policy: exit statuses, one-line messages, what a job prints.

The pipeline returns outcomes and raises user errors; this module decides what they mean
to the person at the terminal, in one place (as lightning-hydra-template's ``task_wrapper``
wraps a thin ``train``). Exit statuses: 0 success; 2 a user error (bad config value, bad
data file, unreachable store), one line on stderr and no traceback; 1 a run that failed
(divergence, failed gradient check, a store that failed mid-run, a failed sweep job); 130
an interrupt (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig

from mlplab.config import (
    OVERRIDES,
    Config,
    choice_error,
    hydra_job_context,
    in_sweep_process,
    unknown_key_hint,
    value_error,
)
from mlplab.errors import Interrupted, JobExit, UserError, say_error
from mlplab.interrupts import sigterm_interrupts
from mlplab.pipeline import RunOutcome, configure, record_refusal, run
from mlplab.project import conf_dir

log = logging.getLogger("mlplab")

EXIT_STATUS = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}


def run_job(cfg: DictConfig) -> RunOutcome | None:
    """Run one Hydra job and report it. A single run exits with its status (:class:`JobExit`);
    in a multirun a failed job is reported and the sweep goes on."""
    overrides, out_dir, multirun = hydra_job_context()
    typed: Config | None = None
    try:
        typed = configure(cfg)
        outcome = run(typed, out_dir, overrides)
    except Interrupted as exc:  # after training: say how the run ended, then exit 130
        if not multirun:
            for done in exc.outcomes:
                report(done, uri=typed.tracking.uri if typed else None)
        raise
    except UserError as exc:
        if not multirun:
            say_error(str(exc))
            raise JobExit(exc.exit_code) from None
        log.error("job %s: %s", " ".join(overrides), exc)
        if typed is not None:
            record_refusal(typed, overrides, str(exc))
        return None
    except Exception:
        if not multirun:
            raise
        log.exception("job %s crashed", " ".join(overrides))
        return None
    report(outcome, brief=multirun, uri=typed.tracking.uri)
    if not multirun:
        code = outcome_status(outcome)
        if code:
            raise JobExit(code)
    elif outcome.status == "KILLED" and in_sweep_process():  # the sweep stops, not just the job
        raise KeyboardInterrupt("the sweep was interrupted")
    return outcome


def outcome_status(outcome: RunOutcome) -> int:
    """A run's exit status; says why on stderr when it is not 0."""
    code = EXIT_STATUS[outcome.status]
    if outcome.fallback is not None:
        say_error(outcome.recorder.notice)
        return max(code, 1)
    if outcome.status == "FAILED":
        say_error(f"run failed: {outcome.failure}")
    elif outcome.status == "KILLED":
        say_error("interrupted")
    return code


def report(outcome: RunOutcome, brief: bool = False, uri: str | None = None) -> None:
    """What the user sees at the end of a run (one line per job in a sweep: ``brief``)."""
    print(outcome.describe(brief, uri), flush=True)


def finish_main(main: Callable[[], Any]) -> int:
    """Call a ``@hydra.main`` function and turn its outcome into an exit status."""
    sigterm_interrupts()
    hint = _unknown_key()
    if hint:  # refused before Hydra's own message (its advice, +key=, would be refused too)
        say_error(hint)
        return 2
    try:
        main()
    except JobExit as exc:
        return int(exc.code or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 1:  # Hydra refused the config (unknown option, wrong type): a user error
            return 2
        return code
    except KeyboardInterrupt:
        say_error("interrupted")
        return 130
    except BrokenPipeError:  # the reader of our output left (`--help | head`): as SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to say
        return 141
    except ValueError as exc:  # Hydra's own refusal of its flags, raised before any job
        if not str(exc).startswith("Only one of --run, --multirun"):
            raise
        say_error(str(exc))
        return 2
    return 0


#: Hydra's flags that choose another config, whose keys this project's schema does not know.
_OTHER_CONFIG = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")


def _unknown_key() -> str | None:
    """The command line's first unknown config key, named with the keys allowed there."""
    if any(arg.split("=")[0] in _OTHER_CONFIG for arg in sys.argv[1:]):
        return None
    conf = conf_dir()
    groups = tuple(p.name for p in conf.iterdir() if p.is_dir()) if conf.is_dir() else ()
    hint = unknown_key_hint(sys.argv[1:], groups) or _prefixed(sys.argv[1:], groups)
    if hint:
        return hint
    items = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    try:
        parsed = OVERRIDES.parse_overrides(items)
    except HydraException:  # a grammar error: Hydra's own message says where
        return None
    return _bad_choice(parsed, items, conf) or _bad_value(parsed, groups)


def _prefixed(args: list[str], groups: tuple[str, ...]) -> str | None:
    """A ``~key``, ``~group`` or ``+key`` of the command line (its key known: checked
    first): every key of the schema is there and read, so a deleted one would run at its
    default while the config shown lacks it, and Hydra refuses to add one in three lines."""
    for arg in args:
        key = arg.lstrip("+~").partition("=")[0]
        if key.startswith("hydra") or not arg.startswith(("~", "+")) or arg.startswith("++"):
            continue
        if arg.startswith("~"):
            if key in groups:
                return f"{arg}: a config group cannot be removed; choose one of its options"
            return f"{arg}: a config key cannot be deleted; set its value instead ({key}=...)"
        if key not in groups:
            return f"{arg}: {key} is in the config already; set it without the + ({arg[1:]})"
    return None


#: The config groups a run does not choose with ``group=option``: how they are used.
_NOT_RUN_GROUPS = {
    "sweep": "a sweep is chosen with --multirun +sweep=<name> (make sweep SWEEP=<name>)",
    "tune": "a study is chosen with pipelines/tune.py tune=<name> (make tune)",
}


def _bad_choice(parsed: list[Override], items: list[str], conf: Path) -> str | None:
    """The command line's first option that its config group lacks (the groups and options
    Hydra finds: conf/, ``hydra.searchpath``, plugins), or a group a run does not choose
    that way."""
    for o in parsed:
        if o.key_or_group in _NOT_RUN_GROUPS and not (o.key_or_group == "sweep" and o.is_add()):
            return f"{o.input_line}: {_NOT_RUN_GROUPS[o.key_or_group]}"
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(conf)))

    def options(group: str) -> list[str]:
        if "." in group:  # a key
            return []
        with warnings.catch_warnings():  # a missing searchpath folder: Hydra warns itself
            warnings.simplefilter("ignore", UserWarning)
            return loader.get_group_options(group, config_name="config", overrides=items)

    bad = choice_error(parsed, options)
    return str(bad) if bad else None


def _bad_value(parsed: list[Override], groups: tuple[str, ...]) -> str | None:
    """The command line's first value its key cannot hold (a type, a choice)."""
    keys = [o for o in parsed if o.key_or_group.split("/")[0] not in groups and o.package is None]
    bad = value_error(keys)
    return str(bad) if bad else None
