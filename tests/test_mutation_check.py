"""The mutation check (`benchmarks/mutation_check.py`) runs in CI: every one-line bug of the core maths and safety
code listed in `benchmarks/mutants.py` must make the tests it names fail."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS)
from mutants import GROUPS, MUTANTS  # noqa: E402


def test_every_mutant_changes_one_place_and_names_tests_that_exist():
    # Checked in the fast set, so that a refactor that moves a mutated line fails here, not after the slow run.
    assert len({m.name for m in MUTANTS}) == len(MUTANTS) == sum(len(group) for group in GROUPS.values())
    for mutant in MUTANTS:
        with open(os.path.join(ROOT, "diffusers_nft", mutant.file)) as f:
            assert f.read().count(mutant.old) == 1, mutant.name
        assert mutant.old != mutant.new and mutant.tests, mutant.name
        for test in mutant.tests:
            path, _, function = test.partition("::")
            with open(os.path.join(ROOT, path)) as f:
                source = f.read()
            assert not function or re.search(rf"^def {re.escape(function)}\(", source, re.M), (mutant.name, test)


@pytest.mark.slow
def test_every_listed_mutant_is_caught(tmp_path):
    out = tmp_path / "mutation_check.md"
    done = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "mutation_check.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=3600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"{len(MUTANTS)} of {len(MUTANTS)} mutants caught." in out.read_text()
