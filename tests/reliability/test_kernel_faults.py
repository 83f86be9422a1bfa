"""A kernel SIGKILLed from outside while `workbench run` executes a cell (the OOM killer, a
colleague's `kill -9`): the run fails fast and keeps its partial notebook and record.

The other faults of the issue have tests in the main suite, run on every `make test`:
a build killed half-way
(tests/envs/test_envs.py::test_interrupted_builds_leave_previous_env_working) and sshd
restarted under a tunnel (tests/serving/test_serving.py, the real-sshd tunnel test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from tests.support import report
from tests.support.cli import json_data, workbench, write_env


def test_kernel_sigkilled_mid_run_fails_within_10s(project: Path) -> None:
    write_env(project, "tiny", "dependencies:\n  - python=3.11\n")
    built = workbench("env", "create", "tiny", cwd=project)
    assert built.returncode == 0, built.stderr
    marker = project / "runs" / "kernel.pid"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "wb-tiny", "display_name": "tiny", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("print('before')"),
        nbformat.v4.new_code_cell(
            f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)"
        ),
        nbformat.v4.new_code_cell("print('never')"),
    ]
    (project / "notebooks").mkdir()
    nbformat.write(nb, project / "notebooks" / "long.ipynb")
    marker.parent.mkdir(exist_ok=True)

    run = subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", "notebooks/long.ipynb", "--json"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (marker.is_file() and marker.read_text()):
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
            time.sleep(0.1)
        os.kill(int(marker.read_text()), signal.SIGKILL)
        killed = time.monotonic()
        stdout, _ = run.communicate(timeout=60)
        failed_s = time.monotonic() - killed
    finally:
        if run.poll() is None:
            run.kill()
    record = json_data(stdout)
    report.record("kernel_sigkill", failed_after_s=round(failed_s, 2), status=record["status"])
    assert failed_s <= 10, f"the run noticed the dead kernel only after {failed_s:.1f} s"
    assert run.returncode == 1 and record["status"] == "failed"
    assert record["error"]["ename"] == "DeadKernelError"
    out = nbformat.read(project / record["output"], as_version=4)
    texts = [o.get("text") for c in out.cells for o in c.get("outputs", [])]
    assert "before\n" in texts and "never\n" not in texts
