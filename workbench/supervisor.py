"""Keeps one service (a Gradio app or JupyterLab) running: `python -m workbench.supervisor DIR`.

DIR/service.json says what to run; DIR/state.json says how it goes (pids, restarts,
status), rewritten atomically on every change. A crashed child is restarted at once,
then with growing backoff if it keeps failing quickly; exit code 2 (bad app, missing
model) or five quick failures in a row stop the restarts and leave status "failed".
SIGTERM stops the child (SIGTERM, then SIGKILL after a grace period) and removes
state.json. The child gets SIGTERM if the supervisor itself dies.

Apps get a warm spare (service.json "standby": true): once the child is healthy, a second
runner starts with --standby, imports what the app imports and waits. When the child
crashes, the spare is told to go and binds the same port: back in about a second instead of
the whole import floor; a new spare starts once that one is healthy.
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

from workbench import serving

QUICK_FAILURE_S = 10.0  # a child that exits sooner than this failed to start
MAX_QUICK_FAILURES = 5
MAX_BACKOFF_S = 10.0
STOP_GRACE_S = 10.0
USAGE_EXIT = 2
SPARE_AFTER_S = 120.0  # start the spare after this long even if the child never got healthy


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
            "standby_pid": None,
        }
        self.child: subprocess.Popen | None = None
        self.spare: subprocess.Popen | None = None
        self.standby = bool(self.service.get("standby"))
        self.stopping = False
        self.stop_at = 0.0  # when SIGTERM came (monotonic)

    def save(self) -> None:
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.folder / "state.json")

    def stop(self, _signum: int, _frame: object) -> None:
        if not self.stopping:
            self.stopping, self.stop_at = True, time.monotonic()
        if self.child and self.child.poll() is None:
            self.child.terminate()

    def spawn(self, standby: bool) -> subprocess.Popen:
        log = open(self.service["log"], "ab", buffering=0)  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            self.service["argv"] + (["--standby"] if standby else []),
            cwd=self.service.get("cwd"),
            env={**os.environ, **self.service.get("env", {})},
            stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return proc

    def start_child(self) -> None:
        """Promote the spare if one is waiting, else start a fresh child."""
        spare, self.spare = self.spare, None
        self.child = self._promote(spare) or self.spawn(standby=False)
        self.state.update(
            pid=self.child.pid, last_start=time.time(), status="running", standby_pid=None
        )
        self.save()

    def _promote(self, spare: subprocess.Popen | None) -> subprocess.Popen | None:
        if spare is None or spare.poll() is not None:
            return None
        try:
            spare.stdin.write(b"go\n")
            spare.stdin.close()
        except OSError:  # it died just now
            self._kill(spare)
            return None
        return spare

    def wait_child(self) -> int:
        """Wait for the child to exit; meanwhile start the spare once the child is healthy."""
        while True:
            try:
                return self.child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if self.stopping and time.monotonic() - self.stop_at > STOP_GRACE_S:
                self.child.kill()  # it ignored SIGTERM (Lab does, early in its start)
            if self.standby and self.spare is None and not self.stopping and self._healthy():
                self.spare = self.spawn(standby=True)
                self.state["standby_pid"] = self.spare.pid
                self.save()

    def _healthy(self) -> bool:
        if time.time() - self.state["last_start"] > SPARE_AFTER_S:
            return True
        url = serving.health_url(self.service["kind"], self.service["port"])
        return serving.probe(url, timeout=0.5) == "healthy"

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        quick_failures = 0
        while not self.stopping:
            self.start_child()
            code = self.wait_child()
            if self.stopping:
                break
            lived = time.time() - self.state["last_start"]
            quick_failures = quick_failures + 1 if lived < QUICK_FAILURE_S else 0
            self.state.update(last_exit=code, pid=None)
            if code == USAGE_EXIT or quick_failures >= MAX_QUICK_FAILURES:
                self.state["status"] = "failed"
                self.save()
                self._kill(self.spare)
                return 1
            self.state["restarts"] += 1
            self.state["status"] = "restarting"
            self.save()
            delay = 0.0 if quick_failures == 0 else min(MAX_BACKOFF_S, 0.5 * 2**quick_failures)
            deadline = time.time() + delay
            while time.time() < deadline and not self.stopping:
                time.sleep(0.1)
        self._kill(self.spare)
        self._terminate()
        (self.folder / "state.json").unlink(missing_ok=True)
        return 0

    @staticmethod
    def _kill(proc: subprocess.Popen | None) -> None:
        """A spare has served nobody: stop it at once."""
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

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
