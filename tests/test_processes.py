"""One liveness check (workbench.processes): a pid counts as the recorded process only while
it runs with the recorded start time, so a pid the kernel reused is not taken for a service."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench import processes
from workbench.project import load
from workbench.serving import services
from workbench.serving.state import Kind, ServiceSpec, ServiceState


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen]:
    """A process that runs but is not the one a record names."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_running_pid_is_alive_only_with_its_own_start_time() -> None:
    started = processes.start_time(os.getpid())
    assert isinstance(started, int)
    assert processes.alive(os.getpid())
    assert processes.alive(os.getpid(), started)
    assert not processes.alive(os.getpid(), started + 1)
    assert processes.parent(os.getpid()) == os.getppid()
    assert not processes.alive(None)
    assert not processes.alive(0)


def test_an_exited_child_is_gone_before_and_after_it_is_reaped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while processes.start_time(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes.alive(proc.pid)  # a zombie: exited, not reaped yet
    proc.wait()
    assert not processes.alive(proc.pid)
    assert processes.parent(proc.pid) is None


def _record(root: Path, supervisor: subprocess.Popen, supervisor_start: int | None) -> None:
    project = load(root)
    folder = project.service_dir("demo")
    folder.mkdir(parents=True)
    ServiceSpec(
        name="demo",
        kind=Kind.APP,
        argv=["true"],
        cwd=str(root),
        host="127.0.0.1",
        port=9,
        url="http://127.0.0.1:9/",
        log=str(root / "demo.log"),
    ).write(folder / services.SPEC)
    ServiceState(
        name="demo",
        supervisor_pid=supervisor.pid,
        started=time.time(),
        supervisor_pid_start=supervisor_start,
    ).write(folder / services.STATE)


def test_a_service_whose_pid_was_reused_is_not_running(
    tmp_path: Path, stranger: subprocess.Popen
) -> None:
    started = processes.start_time(stranger.pid)
    _record(tmp_path, stranger, started + 1)
    project = load(tmp_path)
    assert services.running(project, "demo") is None
    assert services.listed(project) == []
    assert services.stop(project, "demo", grace=0.5) is False
    assert stranger.poll() is None  # the stranger was not signalled


def test_a_service_whose_pid_and_start_time_match_is_running(
    tmp_path: Path, stranger: subprocess.Popen
) -> None:
    _record(tmp_path, stranger, processes.start_time(stranger.pid))
    service = services.running(load(tmp_path), "demo")
    assert service is not None and service.supervisor_pid == stranger.pid
