"""`benchmarks/gpu_suite.sh` runs where a GPU is lent, rarely: its logic is kept runnable here on tiny models."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_gpu_suite_runs_the_parts_named_and_tables_each(tmp_path):
    """`PARTS` runs only the named parts (here the SD3.5-Medium and Qwen-Image rows, on tiny stand-ins on the CPU),
    and `summary.md` holds each one's exit status and its images/s.

    Slow: two benchmark processes (about 40 s); no fast test covers it, as no benchmark runs in the fast set.
    """
    env = {**os.environ, "SMOKE": "--tiny --device cpu", "PARTS": "sd35m_eager qwenimage_eager"}
    done = subprocess.run(["bash", "benchmarks/gpu_suite.sh", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text()
    sections = re.findall(r"^## (\w+): (.*)$", summary, flags=re.M)
    assert [name for name, _ in sections] == ["sd35m_eager", "qwenimage_eager"], summary
    assert all(status.startswith("exit 0 ") for _, status in sections), summary
    speeds = [float(x) for x in re.findall(r"images/s per GPU: ([\d.]+)", summary)]
    assert len(speeds) == 2 and all(speed > 0 for speed in speeds), summary
    assert (tmp_path / "qwenimage_eager.log").read_text().count("tiny stand-in for the Qwen-Image transformer") == 1
