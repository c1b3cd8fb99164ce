#!/usr/bin/env python
"""Do the tests catch a wrong algorithm? Apply one-line bugs to a copy of the package, one at a time, and run the
tests that should catch each.

    python benchmarks/mutation_check.py                       # every mutant; exits 1 if one survives
    python benchmarks/mutation_check.py --only loss grpo      # mutants whose name contains a word
    python benchmarks/mutation_check.py --group survivors     # one group of benchmarks/mutants.py
    python benchmarks/mutation_check.py --out benchmarks/results/mutation_check.md

Each mutant replaces exactly one occurrence of a line fragment (a fragment that is missing or ambiguous is an error,
so a refactor cannot turn a mutant into a silent no-op). The unmutated copy must pass every listed test first. A
mutant is caught when its tests fail (pytest exit status 1); any other status (a collection error, a crash) is
reported as an error, never as caught. The mutants live in `benchmarks/mutants.py`.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from mutants import GROUPS, MUTANTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPIED = ("diffusers_nft", "tests", "examples", "model_cards", "pytest.ini", "README.md", "setup.py")


def copy_project(dest: str) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for name in COPIED:
        source = os.path.join(ROOT, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(dest, name), ignore=ignore)
        elif os.path.exists(source):
            shutil.copy2(source, os.path.join(dest, name))


def environment(copy: str) -> dict:
    """The copy's package first on the path, whatever is installed."""
    env = dict(os.environ, PYTHONPATH=copy + os.pathsep + os.environ.get("PYTHONPATH", ""))
    found = subprocess.run([sys.executable, "-c", "import diffusers_nft; print(diffusers_nft.__file__)"], cwd=copy,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not found.startswith(copy):
        raise SystemExit(f"The copy's tests would import {found}, not the copy in {copy}: uninstall that package.")
    return env


def run_tests(copy: str, env: dict, tests) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--runslow", *tests]
    return subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)


def apply(copy: str, mutant) -> str:
    """Write the mutant into the copy; return the file's original text."""
    path = os.path.join(copy, "diffusers_nft", mutant.file)
    with open(path) as f:
        text = f.read()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"Mutant {mutant.name!r}: {mutant.old!r} occurs {count} times in {mutant.file}; "
                         "update benchmarks/mutants.py to the code.")
    with open(path, "w") as f:
        f.write(text.replace(mutant.old, mutant.new))
    return text


def check(copy: str, env: dict, mutant) -> tuple:
    path = os.path.join(copy, "diffusers_nft", mutant.file)
    original, start = apply(copy, mutant), time.time()
    try:
        done = run_tests(copy, env, mutant.tests)
    finally:
        with open(path, "w") as f:
            f.write(original)
    verdict = {0: "SURVIVED", 1: "caught"}.get(done.returncode, f"error (pytest exit {done.returncode})")
    if verdict.startswith("error"):
        print(done.stdout[-2000:] + done.stderr[-2000:], file=sys.stderr)
    return verdict, time.time() - start


def table(rows) -> str:
    lines = ["| mutant | file | the bug | caught by | result | s |", "| --- | --- | --- | --- | --- | ---: |"]
    for mutant, verdict, seconds in rows:
        tests = "<br>".join(t.replace("tests/", "") for t in mutant.tests)
        lines.append(f"| `{mutant.name}` | `{mutant.file}` | {mutant.why} | {tests} | {verdict} | {seconds:.0f} |")
    caught = sum(verdict == "caught" for _, verdict, _ in rows)
    lines.append(f"\n{caught} of {len(rows)} mutants caught.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="Run the mutants whose name contains one of these.")
    parser.add_argument("--group", choices=sorted(GROUPS), default=None, help="Run one group of mutants only.")
    parser.add_argument("--out", default=None, help="Also write the table to this markdown file.")
    args = parser.parse_args(argv)
    listed = GROUPS[args.group] if args.group else MUTANTS
    mutants = [m for m in listed if not args.only or any(word in m.name for word in args.only)]
    with tempfile.TemporaryDirectory(prefix="nft-mutants-") as copy:
        copy_project(copy)
        env = environment(copy)
        tests = sorted({t for m in mutants for t in m.tests})
        print(f"{len(mutants)} mutants; first the unmutated copy on the {len(tests)} tests they name", flush=True)
        baseline = run_tests(copy, env, tests)
        if baseline.returncode != 0:
            print(baseline.stdout[-4000:], file=sys.stderr)
            raise SystemExit("The unmutated code fails the listed tests: fix them before checking mutants.")
        rows = []
        for number, mutant in enumerate(mutants, 1):
            verdict, seconds = check(copy, env, mutant)
            print(f"[{number}/{len(mutants)}] {mutant.name}: {verdict} ({seconds:.0f} s)", flush=True)
            rows.append((mutant, verdict, seconds))
    report = table(rows)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Mutation check\n\n`python benchmarks/mutation_check.py`\n\n" + report + "\n")
        print(f"wrote {args.out}")
    return 0 if all(verdict == "caught" for _, verdict, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
