"""The documentation: its Python blocks run, every other block says what runs it or why nothing can here, and the
site builds with `mkdocs build --strict` (a broken link or a missing page fails)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
                               if name.endswith(".md"))
FENCE = re.compile(r"(?:^<!-- (?P<note>[^\n]*?) -->\n)?^```(?P<lang>\w+)\n(?P<code>.*?)^```$", re.M | re.S)


def blocks(page: str):
    """`(language, code, note)` of each fenced block of `page`; the note is the HTML comment on the line before."""
    with open(os.path.join(ROOT, page)) as f:
        return [(m["lang"], m["code"], m["note"]) for m in FENCE.finditer(f.read())]


def runnable(page: str):
    return [code for lang, code, note in blocks(page) if lang == "python" and note is None]


def test_every_block_runs_or_says_why_not():
    for page in PAGES:
        for lang, code, note in blocks(page):
            if lang in ("bibtex", "text", "yaml", "json"):
                continue
            if lang == "python" and note is None:
                continue  # runs below
            assert note and re.match(r"(not run: \S|run by \S)", note), (page, code[:80])
            named = re.match(r"run by (tests/[\w/]+\.py)(?:::(\w+))?", note)
            if named:
                with open(os.path.join(ROOT, named[1])) as f:
                    assert not named[2] or f"def {named[2]}(" in f.read(), (page, note)


# getting-started.md trains the demo model for two iterations (about 20 s): slow, with the other end-to-end runs.
@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.slow) if p.endswith("getting-started.md") else p
                                  for p in PAGES if runnable(p)])
def test_the_python_blocks_of_a_page_run_in_order(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what they write stays in the test's folder
    namespace = {"__name__": "__docs__"}
    for code in runnable(page):
        exec(compile(code, page, "exec"), namespace)


def test_the_pages_that_run_are_the_cpu_ones():
    # The getting-started run and the NFTLoss loop run here; the rest need the Hub or GPUs and say so.
    assert {p for p in PAGES if runnable(p)} == {"docs/getting-started.md", "docs/python-api.md"}


@pytest.mark.slow  # a few seconds, but it imports the package for the API reference
def test_the_site_builds_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("NFTTrainer", "NFTConfig", "NFTLoss", "rewards_to_optimality", "WeightedRewards"):
        assert name in api, name
    assert "Turn rewards into the optimality probability" in api  # docstrings rendered, not just names
