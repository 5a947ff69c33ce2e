"""`make mutate`: mutation testing of the engine, the metrics, the data split, the config
validation and the rerun comparison, written up in ``mutation-report.txt``.

mutmut 3 (configured in pyproject.toml, ``[tool.mutmut]``: the modules it mutates and the
fast tests it runs) works in a fresh copy of the project under ``build/mutate/`` (its
``mutants/`` folder stays out of the work tree). For each mutant it runs only the tests of
the fast subset that call the mutated function. The report lists how many mutants the
tests killed, how many survived, and each survivor with its location, its diff and why it
may stay: the mutants below were each read and judged equivalent (no test can tell them
from the original); any other survivor is marked UNEXPLAINED, a test to write.

    .venv/bin/python scripts/mutate.py [--jobs N] [--report-only]
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutate"
REPORT = ROOT / "mutation-report.txt"
COPIED = ["src", "tests", "conf", "data", "pyproject.toml"]
KILLED = {"killed", "caught by type check", "timeout", "segfault"}

#: Survivors read and judged equivalent: (mutmut's function key, with * wildcards; a regex the
#: mutated line matches; why no test can tell the mutant from the original). The mutated line
#: is the line as it reads in the mutant (for a deletion: "-" and the deleted line).
EQUIVALENT: list[tuple[str, str, str]] = [
    # -- anywhere -------------------------------------------------------------------------------
    (
        "*",
        r"zip\(.*(strict=(False|None)|, \)(:|\]|,|\)|$))",
        "the zipped sequences have equal lengths by construction or by a check just before: "
        "strict=True only guards "
        "against a future bug, no input can make them differ",
    ),
    ("*", r"reshape\(.*-2", "NumPy reads any negative size as 'the rest', like -1"),
    # -- data -----------------------------------------------------------------------------------
    (
        "mlplab.data.x_*",
        r"- cfg\.noise \* rng\.standard_normal",
        "the noise is N(0, σ²), symmetric: x − σ·N has the distribution of x + σ·N (the tests "
        "check its scale and shape; no contract fixes the individual draws)",
    ),
    (
        "mlplab.data.x_moons",
        r"1 \+ np\.cos\(t\)",
        "t ~ U[0, π]: 1 + cos t is 1 − cos(π − t), the same half circle with the same distribution",
    ),
    ("mlplab.data.x_xor", r"rng\.integers\(2, size", "integers(2) is integers(0, 2)"),
    ("mlplab.data.x_xor", r"\.astype\(None\)", "astype(None) is float64, as astype(float)"),
    (
        "mlplab.data.x_read_csv",
        r"to_numpy\(dtype=None\)",
        "the columns are already numeric (pd.to_numeric, one-hot indices); the split casts every "
        "array to train.dtype",
    ),
    (
        "mlplab.data.x_read_csv",
        r"if \(str\(exc\)\.strip\(\)\) or True|if str\(None\)\.strip\(\)|type\(None\)",
        "only differs for an exception with an empty message; pandas' and the OS's read errors "
        "always carry one (the fallback to the type's name is unreachable)",
    ),
    (
        "mlplab.data.x_read_csv",
        r"^was: .*duplicate column names",
        "unreachable: pandas renames a repeated header name (a, a.1), so the columns are unique",
    ),
    # -- config ---------------------------------------------------------------------------------
    (
        "mlplab.config.x__validate_data",
        r"join\(source\.tasks\)",
        "the join only shows with several tasks, and the one source with two (csv) refuses none",
    ),
    (
        "mlplab.config.x_hydra_job_context",
        r"or True|resolve=None|task, \)",
        "Hydra's task overrides are always a list; to_container resolves nothing by default",
    ),
    (
        "mlplab.config.x_*",
        r'lstrip\("XX\+~XX"\)',
        "also strips a leading X: no key starts with one (the schema's names are lower case)",
    ),
    (
        "mlplab.config.x_schema_error",
        r"\(key\) or True|full_key\", None\)",
        "without a key, unknown_key_hint(['=?']) finds nothing: the same message follows",
    ),
    (
        "mlplab.config.x__plain",
        r"isinstance\(value, StrEnum\)\) and False",
        "a StrEnum is a str: OmegaConf writes a choice's text either way (the test compares the "
        "YAML with OmegaConf's own for the structured config)",
    ),
    (
        "mlplab.config.x_to_config",
        r"resolve=(None|False)|to_container\(cfg, \)",
        "OmegaConf.to_object resolves the interpolations when the schema is filled in",
    ),
    (
        "mlplab.config.x_unknown_key_hint",
        r'"XX\.XX" not in key|"XX\.XX"\.join',
        "a group name has no dot, and the schema is two levels deep: an unknown key is found "
        "at most one level down, where the joined prefix has one part",
    ),
    # -- metrics and compare --------------------------------------------------------------------
    (
        "mlplab.metrics.x_r2",
        r"ss_tot, 2\.0\)",
        "the placeholder divisor only keeps the branch np.where discards from dividing by zero",
    ),
    (
        "mlplab.compare.x_weight_differences",
        r"np\.asarray\((a|b), (None)?\)",
        "weights are read back as float64 (mlplab.weights.load_weights): the cast changes nothing",
    ),
    # -- engine ---------------------------------------------------------------------------------
    (
        "mlplab.nn.activations.x_*",
        r"const\(.*, None\)|np\.array\(value, (dtype=None)?\)",
        "a float64 constant with float32 operands: each single IEEE operation, computed in "
        "float64 and rounded to float32, gives the float32 result (53 ≥ 2·24 + 2 bits); only "
        "slower",
    ),
    (
        "mlplab.nn.activations.x__identity",
        r"\(out is z\) and False",
        "copying a buffer onto itself",
    ),
    (
        "mlplab.nn.gradcheck.x_backprop_gradients",
        r"update=None|scale, \)\(|np\.array\(1\.0 / n, (dtype=None)?\)",
        "update defaults to False (None is falsy); the 1/n constant: see the activations' "
        "constants (one operation, rounded to the network's dtype)",
    ),
    (
        "mlplab.nn.gradcheck.x_gradient_check",
        r"np\.asarray\((X|T), (None)?\)",
        "the float64 probe casts the samples to float64 itself (MLP.predict, the step's copies)",
    ),
    (
        "mlplab.nn.gradcheck.x_numeric_gradients",
        r"zeros_like\(W, (dtype=None)?\)",
        "gradient_check, its one caller, passes a float64 network: G is float64 either way",
    ),
    (
        "mlplab.nn.optimizers.*",
        r"state\[1\]\.ndim|self\.params\[1\]\.ndim",
        "every state array and weight matrix of one optimiser has the same number of axes",
    ),
    (
        "mlplab.nn.optimizers.xǁOptimizerǁadd_decay",
        r"weight_decay >= 0",
        "adds 0·W: the same gradient",
    ),
    (
        "mlplab.nn.network.x__matmul_for",
        r"and False",
        "matmul on two matrices calls the same BLAS product as dot",
    ),
    (
        "mlplab.nn.network.x_sum_of_squares",
        r"np\.empty\(\(P, 1, 1\), (None)?\)",
        "the sum of squares is written into float64 instead of the dtype and read as a number: "
        "the same value (the product's rounding is the BLAS call's)",
    ),
    (
        "mlplab.nn.network.xǁWorkspaceǁ__init__",
        r"np\.empty\(\((0, 1|1, 0)\), dtype\)|np\.empty\(\(0, 0\), (None)?\)",
        "actsT[0] is a placeholder: the caller's batch is passed to each step instead",
    ),
    (
        "mlplab.nn.network.xǁMLPǁmake_step",
        r"back = self\._derivative_ops|update: bool = True",
        "back is empty before this line; every caller passes update explicitly",
    ),
    (
        "mlplab.nn.network.xǁMLPǁpredict",
        r"batch: int = 4097",
        "the chunk size of predict changes how many rows go through one product, not the result",
    ),
    # -- the training loop ----------------------------------------------------------------------
    (
        "mlplab.nn.trainer.x_fit",
        r"divide=None|under=None|divide=\"ignore\", \)|invalid=\"ignore\", under",
        "no step divides by zero (softmax divides by a sum ≥ 1, Adam by ≥ eps) and NumPy "
        "ignores underflow by default; overflow and invalid, which divergence raises, are tested",
    ),
    ("mlplab.nn.trainer.x__stop", r"runner\.ids = None", "the loop only tests its truth"),
    (
        "mlplab.nn.trainer.xǁHistoryǁ*",
        r"np\.zeros\(members, (dtype=None)?\)|epoch >= self\.capacity|self\.capacity \*= 3|"
        r"stop is not None|"
        r"and False else stop|or True else stop|int\(None\) if stop is None",
        "capacity and bookkeeping only: the lengths are whole numbers in any dtype, a table that "
        "grows earlier or by more keeps the same values, and every caller passes stop = the "
        "recorded length",
    ),
    (
        "mlplab.nn.trainer.xǁ_Bookǁ__init__",
        r"dtype=None|, \)$",
        "tolerances are floats and waits whole numbers in float64 too",
    ),
    (
        "mlplab.nn.trainer.xǁ_Bookǁ*",
        r"(val|abs\(rmse - self\.prev\[cols\]\)) <= ",
        "differs only when two floating-point RMSEs tie exactly (or tie to tol)",
    ),
    (
        "mlplab.nn.trainer.xǁ_Bookǁfollow",
        r"\(single\) and False",
        "the NumPy forms of the same computation for one member: the same numbers, only slower",
    ),
    (
        "mlplab.nn.trainer.xǁ_Bookǁ_record_all",
        r"history\.length\[runner\.ids\[p\]\] = epoch [-+] [12]",
        "a stopped member's length is never read again: its series ends at stop.epochs_run",
    ),
    (
        "mlplab.nn.trainer.xǁ_Bookǁfinish",
        r"series\(member, (stop=None)?\)",
        "the series ends at the member's recorded length, which _record_all set to "
        "stop.epochs_run: the same slice",
    ),
    (
        "mlplab.nn.trainer.xǁ_Bookǁfollow",
        r"if single and ids|ids\[-1\] \+ ids\[0\] ==|== len\(ids\) - 2|self\.tols >= 0",
        "fast paths only: a slice where the index array (or the one index) selects the same "
        "members, a slice taken less often, or the general path taken with tol = 0 (|Δ| < 0 "
        "is never true)",
    ),
    (
        "mlplab.nn.trainer.xǁ_Bookǁrecord",
        r"self\.any_tol or self\.any|prev\[cols\]\) <= self\.tols|sse, None\)$|"
        r"epoch >= self\.history\.capacity",
        "the fast path only decides when to hand an epoch to _record_all, which books it with "
        "every rule: handing it over more often gives the same record (and correct is None "
        "on this line: a classification epoch never reaches it)",
    ),
    (
        "mlplab.nn.optimizers.xǁSGDǁstep",
        r"spec\.momentum >= 0",
        "with momentum 0 the velocity is 0·v + g = g, exactly: the same update through a buffer",
    ),
    (
        "mlplab.nn.network.xǁMLPǁpredict",
        r"range\(0, X\.shape\[0\], \)",
        "one row per product instead of 4 096: each output row is its own row's product, and "
        "the test's reference agrees to 1e-12 either way",
    ),
    (
        "mlplab.nn.trainer.xǁ_Bookǁsnapshot_start",
        r"np\.(zeros|ones)\(len\(runner\.ids\), (dtype=None)?\)|runner, None\)",
        "every member is alive before training: ones of any type select them all (np.flatnonzero)",
    ),
    (
        "mlplab.nn.trainer.xǁ_Runnerǁ_bind",
        r"constant_lr = (None|all\(x\.schedule == \"(XXconstantXX|CONSTANT)\")|unit = |"
        r"\(unit\) and False|net\.weights\[1\]\)|b \+ a in steps|\(self\.shufflers\) or True",
        "fast paths only: a constant rate recomputed each epoch, a scale of exactly 1 multiplied "
        "in, a step compiled twice for one batch size, or a copy not needed all give the same "
        "numbers (weights[1] has weights[0]'s dtype and axes)",
    ),
    (
        "mlplab.nn.trainer.xǁ_Validationǁ*",
        r"chunk: int = 4097|_batches\(self\.n, None\)|correct = np\.zeros\(self\.members, "
        r"(dtype=None)?\)",
        "the validation chunk size only changes how many rows go through one product; a count "
        "of correct answers is a whole number in float64 too",
    ),
]


def why_equivalent(function: str, line: str, original: str = "") -> str:
    """The reason a survivor may stay, or UNEXPLAINED. A rule whose regex starts with
    ``^was: `` is matched against the original line, the others against the mutated one."""
    for pattern, regex, why in EQUIVALENT:
        text = f"was: {original}" if regex.startswith("^was: ") else line
        if fnmatch.fnmatchcase(function, pattern) and re.search(regex, text):
            return why
    return "UNEXPLAINED"


def prepare() -> None:
    """A fresh copy of what the tests need, with no results of an earlier run."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", ".hypothesis", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, WORK / name, ignore=skip)
        else:
            shutil.copy2(source, WORK / name)


def run_mutmut(jobs: int) -> tuple[float, int]:
    """``mutmut run`` in the copy; its output goes to build/mutate/mutmut.log."""
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",  # one core per worker: small products, no contention
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": "sqlite:////nonexistent-dir/do-not-use.db",
    }
    mutmut = Path(sys.executable).with_name("mutmut")
    t0 = time.monotonic()
    with open(WORK / "mutmut.log", "w") as log:
        proc = subprocess.run(
            [str(mutmut), "run", "--max-children", str(jobs)],
            cwd=WORK,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return time.monotonic() - t0, proc.returncode


def _function_span(path: Path, name: str, cls: str | None) -> tuple[int, int]:
    """The lines (first, last) of a function or method in ``path``."""
    tree = ast.parse(path.read_text())
    scope: list[ast.stmt] = tree.body
    if cls is not None:
        scope = next(n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    node = next(
        n for n in scope if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
    )
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return first, node.end_lineno or node.lineno


def _changed_lines(diff: str) -> tuple[list[str], list[str]]:
    body = [line for line in diff.splitlines()[2:] if not line.startswith("@@")]
    return (
        [line[1:] for line in body if line.startswith("-")],
        [line[1:] for line in body if line.startswith("+")],
    )


def collect() -> tuple[Counter[str], list[dict[str, str]]]:
    """Every mutant's status, and the details of each one not killed."""
    os.chdir(WORK)
    sys.path.insert(0, str(WORK))
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files
    from mutmut.utils.format_utils import (
        mangled_name_from_mutant_name,
        orig_function_and_class_names_from_key,
    )

    counts: Counter[str] = Counter()
    alive = []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for key, code in sorted(data.exit_code_by_key.items()):
            status = status_by_exit_code[code]
            counts[status] += 1
            if status in KILLED:
                continue
            diff = get_diff_for_mutant(key, path=path)
            removed, added = _changed_lines(diff)
            name, cls = orig_function_and_class_names_from_key(key)
            first, last = _function_span(WORK / path, name, cls)
            lines = (WORK / path).read_text().splitlines()
            line = next(
                (
                    n
                    for n in range(first, last + 1)
                    if removed and lines[n - 1].strip() == removed[0].strip()
                ),
                first,
            )
            function = mangled_name_from_mutant_name(key)
            mutant_line = added[0].strip() if added else "-" + removed[0].strip()
            alive.append(
                {
                    "status": status,
                    "key": key,
                    "where": f"{path}:{line}",
                    "diff": "\n".join(
                        [*(f"- {r.strip()}" for r in removed), *(f"+ {a.strip()}" for a in added)]
                    ),
                    "why": why_equivalent(
                        function, mutant_line, removed[0].strip() if removed else ""
                    ),
                }
            )
    return counts, alive


def write_report(counts: Counter[str], alive: list[dict[str, str]], seconds: float | None) -> str:
    """mutation-report.txt: the totals, then every mutant not killed."""
    import tomllib

    settings = tomllib.loads((WORK / "pyproject.toml").read_text())["tool"]["mutmut"]
    total = sum(counts.values())
    killed = sum(counts[s] for s in KILLED)
    equivalent = sum(item["why"] != "UNEXPLAINED" for item in alive)
    from importlib.metadata import version

    lines = [
        "Mutation testing (make mutate: scripts/mutate.py, mutmut "
        f"{version('mutmut')}), {datetime.now():%Y-%m-%d %H:%M}",
        "",
        "mutated: " + ", ".join(settings["only_mutate"]),
        "tests:   " + " ".join(settings["pytest_add_cli_args_test_selection"]),
        f"time:    {seconds / 60:.1f} min on {os.cpu_count()} cores" if seconds else "",
        "",
        f"mutants: {total}",
        f"killed:  {killed} ({100 * killed / max(total, 1):.1f} %)",
        *(f"  {status}: {n}" for status, n in sorted(counts.items()) if status in KILLED),
        f"not killed: {total - killed}",
        *(f"  {status}: {n}" for status, n in sorted(counts.items()) if status not in KILLED),
        f"  of which judged equivalent (the reasons below): {equivalent}",
        f"  of which UNEXPLAINED (a test to write): {len(alive) - equivalent}",
        f"killed or equivalent: {100 * (killed + equivalent) / max(total, 1):.1f} %",
        "",
        "Each mutant not killed: where, status, mutmut's name (`mutmut show NAME` in",
        "build/mutate/), the lines it changes, and why it may stay.",
        "",
    ]
    for item in alive:
        lines += [
            f"{item['where']}  {item['status']}  {item['key']}",
            *(f"    {d}" for d in item["diff"].splitlines()),
            f"    why: {item['why']}",
            "",
        ]
    text = "\n".join(lines).rstrip() + "\n"
    REPORT.write_text(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the last run"
    )
    args = parser.parse_args()
    timing = WORK / "seconds.txt"
    if not args.report_only:
        prepare()
        seconds, code = run_mutmut(args.jobs)
        timing.write_text(f"{seconds:.0f}\n")
        if code != 0:
            print((WORK / "mutmut.log").read_text()[-3000:], file=sys.stderr)
            print(f"mutmut failed (exit {code}); see {WORK / 'mutmut.log'}", file=sys.stderr)
            return 1
    seconds = float(timing.read_text()) if timing.is_file() else None
    counts, alive = collect()
    text = write_report(counts, alive, seconds)
    print("\n".join(text.splitlines()[:14]))
    print(f"report: {REPORT}")
    unexplained = sum(item["why"] == "UNEXPLAINED" for item in alive)
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
