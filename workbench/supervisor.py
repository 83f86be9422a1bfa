"""Keeps one service (a Gradio app or JupyterLab) running: `python -m workbench.supervisor DIR`.

DIR/service.json says what to run; DIR/state.json says how it goes (pids, restarts,
status), rewritten atomically on every change. A crashed child is restarted at once,
then with growing backoff if it keeps failing quickly; exit code 2 (bad app, missing
model) or five quick failures in a row stop the restarts and leave status "failed".
SIGTERM stops the child (SIGTERM, then SIGKILL after a grace period) and removes
state.json. The child gets SIGTERM if the supervisor itself dies.
"""

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

QUICK_FAILURE_S = 10.0  # a child that exits sooner than this failed to start
MAX_QUICK_FAILURES = 5
MAX_BACKOFF_S = 10.0
STOP_GRACE_S = 10.0
USAGE_EXIT = 2


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(self, folder: Path):
        self.folder = folder
        self.service = json.loads((folder / "service.json").read_text())
        self.state = {
            "name": self.service["name"],
            "supervisor_pid": os.getpid(),
            "pid": None,
            "status": "starting",
            "restarts": 0,
            "started": time.time(),
            "last_start": None,
            "last_exit": None,
        }
        self.child: subprocess.Popen | None = None
        self.stopping = False

    def save(self) -> None:
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.folder / "state.json")

    def stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True
        if self.child and self.child.poll() is None:
            self.child.terminate()

    def start_child(self) -> None:
        log = open(self.service["log"], "ab", buffering=0)  # noqa: SIM115 - owned by the child
        self.child = subprocess.Popen(
            self.service["argv"],
            cwd=self.service.get("cwd"),
            env={**os.environ, **self.service.get("env", {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.state.update(pid=self.child.pid, last_start=time.time(), status="running")
        self.save()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        quick_failures = 0
        while not self.stopping:
            self.start_child()
            code = self.child.wait()
            if self.stopping:
                break
            lived = time.time() - self.state["last_start"]
            quick_failures = quick_failures + 1 if lived < QUICK_FAILURE_S else 0
            self.state.update(last_exit=code, pid=None)
            if code == USAGE_EXIT or quick_failures >= MAX_QUICK_FAILURES:
                self.state["status"] = "failed"
                self.save()
                return 1
            self.state["restarts"] += 1
            self.state["status"] = "restarting"
            self.save()
            delay = 0.0 if quick_failures == 0 else min(MAX_BACKOFF_S, 0.5 * 2**quick_failures)
            deadline = time.time() + delay
            while time.time() < deadline and not self.stopping:
                time.sleep(0.1)
        self._terminate()
        (self.folder / "state.json").unlink(missing_ok=True)
        return 0

    def _terminate(self) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        self.child.terminate()
        try:
            self.child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()


if __name__ == "__main__":
    sys.exit(Supervisor(Path(sys.argv[1])).run())
