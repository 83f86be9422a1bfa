"""Keeps one service (an engine, a Gradio app or JupyterLab) running:
`python -m workbench.serving.supervisor DIR`.

DIR/service.json says what to run; DIR/state.json says how it goes (pids, restarts,
status), rewritten atomically on every change. A crashed child is restarted at once,
then with growing backoff if it keeps failing quickly; exit code 2 (bad app, missing
model) or five quick failures in a row stop the restarts and leave status "failed".
SIGTERM stops the child (SIGTERM, then SIGKILL after a grace period) and removes
state.json. The child gets SIGTERM if the supervisor itself dies.

Apps and engines get a warm spare (service.json "standby": true): once the child is healthy,
a second one starts with --standby, imports what the app imports (an engine: loads its model
in a zygote of its own) and waits. When the child crashes, the spare is told to go and binds
the same port: back in about a second instead of the whole import floor; a new spare starts
once that one is healthy.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from workbench.errors import USAGE
from workbench.processes import start_time
from workbench.serving import net
from workbench.serving.state import Health, ServiceSpec, ServiceState, ServiceStatus
from workbench.subprocesses import die_with_parent, spawn

QUICK_FAILURE_S = 10.0  # a child that exits sooner than this failed to start
MAX_QUICK_FAILURES = 5
STOP_GRACE_S = 10.0
SPARE_AFTER_S = 120.0  # start the spare after this long even if the child never got healthy


class Supervisor:
    def __init__(self, folder: Path, service: ServiceSpec):
        self.folder, self.service = folder, service
        self.state = ServiceState(
            name=service.name,
            supervisor_pid=os.getpid(),
            started=time.time(),
            supervisor_pid_start=start_time(os.getpid()),
        )
        self.child: subprocess.Popen | None = None
        self.spare: subprocess.Popen | None = None
        self.stopping = False
        self.stop_at = 0.0  # when SIGTERM came (monotonic)

    def save(self) -> None:
        self.state.write(self.folder / "state.json")

    def stop(self, _signum: int, _frame: object) -> None:
        if not self.stopping:
            self.stopping, self.stop_at = True, time.monotonic()
        if self.child and self.child.poll() is None:
            self.child.terminate()

    def spawn(self, standby: bool) -> subprocess.Popen:
        with open(self.service.log, "ab", buffering=0) as log:
            return spawn(
                self.service.argv + (["--standby"] if standby else []),
                what=f"starting {self.service.name}",
                cwd=self.service.cwd,
                env=self.service.env,
                stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def start_child(self) -> None:
        """Promote the spare if one is waiting, else start a fresh child."""
        spare, self.spare = self.spare, None
        self.child = self._promote(spare) or self.spawn(standby=False)
        self.state.pid, self.state.last_start = self.child.pid, time.time()
        self.state.pid_start = start_time(self.child.pid)
        self.state.status, self.state.standby_pid = ServiceStatus.RUNNING, None
        self.state.standby_pid_start = None
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
            if (
                self.service.standby
                and self.spare is None
                and not self.stopping
                and self._healthy()
            ):
                self.spare = self.spawn(standby=True)
                self.state.standby_pid = self.spare.pid
                self.state.standby_pid_start = start_time(self.spare.pid)
                self.save()

    def _healthy(self) -> bool:
        if time.time() - self.state.last_start > SPARE_AFTER_S:
            return True
        url = net.health_url(self.service.kind, self.service.port)
        return net.probe(url, timeout=0.5) == Health.HEALTHY

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        quick_failures = 0
        while not self.stopping:
            self.start_child()
            code = self.wait_child()
            if self.stopping:
                break
            lived = time.time() - self.state.last_start
            quick_failures = quick_failures + 1 if lived < QUICK_FAILURE_S else 0
            self.state.last_exit, self.state.pid, self.state.pid_start = code, None, None
            if code == USAGE or quick_failures >= MAX_QUICK_FAILURES:
                self.state.status = ServiceStatus.FAILED
                self.save()
                self._kill(self.spare)
                return 1
            self.state.restarts += 1
            self.state.status = ServiceStatus.RESTARTING
            self.save()
            deadline = time.time() + net.backoff(quick_failures)
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


def main(folder: Path) -> int:
    service = ServiceSpec.read(folder / "service.json")
    if service is None:
        sys.stderr.write(f"workbench supervisor: no readable service.json in {folder}\n")
        return USAGE
    return Supervisor(folder, service).run()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
