"""The family matrix: every text-to-image/video and image-conditioned flow pipeline class of diffusers, built tiny
and trained 2 iterations offline. CI runs it (slow) and fails when a class that passed stops passing; the README's
supported-pipelines table is the matrix's own output."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "family_matrix.md")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import family_matrix  # noqa: E402


def test_the_readme_table_is_the_committed_matrix():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    block = family_matrix.readme_block(*family_matrix.parse_results(RESULTS))
    assert block in readme, "rerun: python benchmarks/family_matrix.py --out benchmarks/results/family_matrix.md " \
                            "--readme README.md"
    plain, conditioned = family_matrix.parse_results(RESULTS)
    assert len(plain) >= 42 and len(conditioned) >= 60
    assert all(row["reason"] for row in plain + conditioned if row["result"] == "fail")  # every failure says why


@pytest.mark.slow
def test_every_class_that_passed_in_the_committed_matrix_still_passes(tmp_path):
    out = tmp_path / "matrix.md"
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "family_matrix.py"), "--out", str(out)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    before = family_matrix.parse_results(RESULTS)
    after = family_matrix.parse_results(str(out))
    for old_rows, new_rows in zip(before, after):
        now = {row["pipeline"]: row for row in new_rows}
        stopped = {row["pipeline"]: now.get(row["pipeline"], {}).get("reason", "no longer a candidate")
                   for row in old_rows if row["result"] == "pass" and now.get(row["pipeline"], {}).get("result") != "pass"}
        assert not stopped, f"classes that passed and no longer do: {stopped}"
