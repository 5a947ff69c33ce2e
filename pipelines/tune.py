"""Hyperparameter search with Optuna (resumable, parallel), every trial an MLflow child run.

    python pipelines/tune.py                              # conf/tune/default.yaml
    python pipelines/tune.py tune.n_trials=40 tune.n_jobs=2
    python pipelines/tune.py tune=<name> data=sine model=mlp   # another study; run overrides
    make tune ARGS="tune.n_trials=40"

Arguments: ``tune=<name>`` picks ``conf/tune/<name>.yaml``; ``tune.<key>=<value>`` sets a
study setting (study_name, storage, n_trials, n_jobs, metric, direction, sampler, ...);
every other ``key=value`` is a Hydra override applied to every trial, as with
``make run``. Run the same command again after Ctrl-C to resume the study; raise
``tune.n_trials`` to extend it. See src/mlplab/tune/.

Exit status: 0 done, 1 no trial completed or a worker crashed, 2 a user error, 130
interrupted (the study resumes where it stopped).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from mlplab.errors import UserError, say_error
from mlplab.interrupts import sigterm_interrupts

if TYPE_CHECKING:
    from mlplab.tune import StudyOutcome


def split_args(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """(study config name, ``tune.*`` settings as a dotlist, run overrides)."""
    name, settings, run = "default", [], []
    for arg in argv:
        if arg.startswith("tune="):
            name = arg.partition("=")[2]
        elif arg.startswith("tune."):
            settings.append(arg[len("tune.") :])
        else:
            run.append(arg)
    return name, settings, run


def print_outcome(outcome: StudyOutcome) -> int:
    """The study's end on the terminal: the best trial and how to run it alone; exit status."""
    best = outcome.best
    parent = f", MLflow parent run {outcome.parent_run_id} {outcome.status}"
    print(
        f"\nstudy {outcome.study_name!r}: {outcome.n_trials} trials"
        + (parent if outcome.parent_run_id else "")
    )
    if best is None:
        print("no trial completed")
        return 1
    print(
        f"best: trial {best.number}, {best.metric} = {best.value:.6g}"
        + (f" (run {best.run_id})" if best.run_id else "")
    )
    print(f"  best parameters: {' '.join(best.overrides)}")
    print(f'  run it alone: make run ARGS="{" ".join(outcome.run_alone)}"')
    return 0 if outcome.status == "FINISHED" else 1


def main(argv: list[str] | None = None) -> int:
    """Run or resume the study; print the best parameters. Returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    # Imported here, the one place Optuna is loaded (mlplab.tune imports it at its top),
    # with Hydra's compose API and the pipeline: about 2 s that --help must not wait for.
    from mlplab.tune import load_settings, run_study

    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(message)s")
    sigterm_interrupts()
    name, dotlist, run_overrides = split_args(args)
    try:
        settings = load_settings(name, dotlist)
        outcome = run_study(settings, run_overrides)
    except UserError as exc:
        say_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        say_error("interrupted: run the same command again to resume the study")
        return 130
    return print_outcome(outcome)


if __name__ == "__main__":
    sys.exit(main())
