"""Run ``python <arguments...> <ARGS>``, ARGS split as a shell splits words: how make passes ARGS.

    ARGS="seed=range(0,64) 'model.hidden=[8,8]'" python scripts/with_args.py pipelines/run.py -m

The Makefile exports ARGS unexpanded (``$`` kept) and never pastes it into a shell command line,
so Hydra's ``range(…)``, ``choice(…)``, ``interval(…)``, brackets, quotes and ``${…}`` reach the
entry point exactly as if typed after ``python pipelines/run.py`` in a shell. The entry point
replaces this process (same exit status, same signals).
"""

from __future__ import annotations

import os
import shlex
import sys


def split_args(text: str) -> list[str]:
    """ARGS as a POSIX shell splits it into words (quotes removed; no globbing, no expansion)."""
    return shlex.split(text, comments=False, posix=True)


def main(argv: list[str]) -> int:
    """Replace this process by the interpreter running ``argv`` plus the words of ARGS.

    ARGS itself is not handed on: a make started by the entry point (tests do) must not see it.
    """
    text = os.environ.pop("ARGS", "")
    try:
        words = split_args(text)
    except ValueError as err:
        print(f"ARGS={text!r}: {err}; quote it as you would in a shell", file=sys.stderr)
        return 2
    os.execv(sys.executable, [sys.executable, *argv, *words])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
