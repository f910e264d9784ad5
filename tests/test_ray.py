"""``--executor ray`` against a real single-node Ray cluster started on 127.0.0.1 (Ray's local mode is gone):
results identical to the local executor, episode by episode, and stored by the driver alone."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from test_cli import invoke
from test_executors import TINY, rows_by_cell

ray = pytest.importorskip("ray", reason="the ray extra (pip install 'mtbench[ray]') is part of the test extra")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A head node with 2 CPUs in its own process group, stopped by that group's id (not by name)."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    binary = Path(sys.executable).with_name("ray")
    binary = binary if binary.exists() else Path(shutil.which("ray") or "ray")
    head = subprocess.Popen(
        [str(binary), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(head.stdout), daemon=True).start()  # never blocks the test
    try:
        deadline = time.monotonic() + 90
        while not any("Ray runtime started" in line for line in lines):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the Ray head did not start:\n" + "".join(lines))
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(head.pid, sig)
                head.wait(wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_gives_results_identical_to_local(tmp_path, ray_head):
    args = ("run", *TINY, "-a", "protonet", "-a", "linear-probe", "--set", "linear-probe.pretrain_steps=5")
    local = invoke(*args, "--results-dir", str(tmp_path / "local"))
    assert local.exit_code == 0, local.output
    on_ray = invoke(*args, "--executor", "ray", "--address", ray_head, "--results-dir", str(tmp_path / "ray"))
    assert on_ray.exit_code == 0, on_ray.output
    expected = rows_by_cell(tmp_path / "local")
    assert len(expected) == 4 and rows_by_cell(tmp_path / "ray") == expected
    run = json.loads(next((tmp_path / "ray" / "smoke").glob("*.json")).read_text())
    assert run["environment"]["executor"] == "ray" and run["environment"]["worker"]["torch_threads"] == 1


def test_no_cluster_is_one_line(tmp_path):
    result = invoke("run", *TINY, "-a", "protonet", "--executor", "ray", "--address", f"127.0.0.1:{free_port()}",
                    "--results-dir", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert "cannot connect to a Ray cluster" in result.stderr
