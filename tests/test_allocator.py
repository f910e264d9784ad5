"""Freed memory is kept in the process (mtbench/allocator.py): far fewer page faults, the mode is recorded,
``MTBENCH_MALLOC=system`` opts out and any other value is a one-line error."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import mtbench.allocator as allocator
from mtbench.errors import MtbenchError

# A grouped stride-2 convolution backward (conv4-maml's second layer, 4 tasks of 25 images) 20 times: the
# minor page faults it causes after one warm-up step, in a fresh process.
FAULTS = """
import resource, torch
from mtbench.allocator import keep_freed_memory
torch.set_num_threads(1)
mode = keep_freed_memory()
x, w, go = torch.randn(25, 256, 14, 14), torch.randn(256, 64, 3, 3), torch.randn(25, 256, 7, 7)
step = lambda: torch.ops.aten.convolution_backward(go, x, w, None, [2, 2], [1, 1], [1, 1], False, [0, 0], 4,
                                                   [True, True, False])
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(mode, "|", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(malloc: str) -> tuple[str, int]:
    env = {**os.environ, "MTBENCH_MALLOC": malloc, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
    mode, _, count = out.stdout.strip().rpartition("|")
    return mode.strip(), int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keeping_freed_memory_removes_the_page_faults_of_every_step():
    system_mode, system = faults("system")
    keep_mode, keep = faults("keep")
    assert system_mode == "system" and keep_mode.startswith("keep freed memory (mmap threshold 32 MB")
    # measured on the 2-core CPU: 80,238 faults with glibc's defaults, 307 with the settings
    assert system > 8000 and keep * 20 < system, (system, keep)


def test_the_mode_is_set_once_and_a_bad_value_is_a_user_error(monkeypatch):
    monkeypatch.setattr(allocator, "_mode", None)
    monkeypatch.setenv("MTBENCH_MALLOC", "jemalloc")
    with pytest.raises(MtbenchError, match="MTBENCH_MALLOC must be 'keep' or 'system'"):
        allocator.keep_freed_memory()
    assert allocator.allocator_mode() == "system"
    monkeypatch.setenv("MTBENCH_MALLOC", "system")
    assert allocator.keep_freed_memory() == "system"
    monkeypatch.setenv("MTBENCH_MALLOC", "keep")
    assert allocator.keep_freed_memory() == "system"  # once per process: the first choice stays


def test_a_bad_malloc_setting_stops_the_run_before_any_work(tmp_path):
    env = {**os.environ, "MTBENCH_MALLOC": "tcmalloc"}
    out = subprocess.run([sys.executable, "-m", "mtbench.cli", "run", "--suite", "smoke", "--quiet", "-a", "protonet",
                          "--results-dir", str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "MTBENCH_MALLOC must be 'keep' or 'system'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not list(tmp_path.rglob("*.json"))


def test_each_result_records_the_mode_it_ran_under(tmp_path):
    from test_cli import invoke
    result = invoke("run", "--suite", "smoke", "--episodes", "3", "--quiet", "-a", "protonet", "--set",
                    "protonet.episodes=5", "--protocol", "5w1s", "--results-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    run = json.loads(next((tmp_path / "smoke").glob("*.json")).read_text())
    assert run["environment"]["worker"]["malloc"] == allocator.allocator_mode() != ""
