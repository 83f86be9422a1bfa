"""`workbench up/ps/down/logs/serve` with a tiny Gradio app under the real supervisor and runner."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import json_data, workbench
from tests.support.processes import free_port, start_interruptible


@pytest.fixture(scope="module")
def app_project(gradio_project: Path) -> Path:
    yield gradio_project
    workbench("down", cwd=gradio_project)


def ps(root: Path) -> dict:
    return {s["name"]: s for s in json_data(workbench("ps", "--json", cwd=root).stdout)}


def test_up_ps_restart_logs_down(app_project: Path) -> None:
    from gradio_client import Client

    up = workbench("up", "echo", cwd=app_project)
    assert up.returncode == 0, up.stderr
    assert "echo healthy at http://127.0.0.1:" in up.stderr and "ssh -N -L" in up.stdout
    service = ps(app_project)["echo"]
    assert service["health"] == "healthy" and service["restarts"] == 0
    assert service["env"] == "ui" and service["uptime"] is not None
    url = service["url"]
    assert Client(url, verbose=False).predict("hi", api_name="/echo") == "HI"

    # A crashed (SIGKILLed) app comes back under the supervisor, and ps counts the restart.
    os.kill(service["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = ps(app_project).get("echo", {})
        if now.get("restarts") == 1 and now.get("health") == "healthy":
            break
        time.sleep(0.2)
    assert now["restarts"] == 1 and now["health"] == "healthy" and now["pid"] != service["pid"]
    assert Client(url, verbose=False).predict("again", api_name="/echo") == "AGAIN"

    logs = workbench("logs", "echo", "-n", "500", cwd=app_project)
    assert logs.returncode == 0 and logs.stdout.strip()

    assert (
        workbench("up", "echo", cwd=app_project).stderr.strip().startswith("echo: already running")
    )
    assert workbench("down", "echo", cwd=app_project).returncode == 0
    assert "echo" not in ps(app_project)
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "healthz", timeout=2)


def test_port_in_use_takes_the_next_free_one(app_project: Path) -> None:
    import socket

    manifest_port = int(
        next(
            line
            for line in (app_project / "workbench.toml").read_text().splitlines()
            if line.startswith("port")
        ).split("=")[1]
    )
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", manifest_port))
        blocker.listen()
        up = workbench("up", "echo", cwd=app_project)
        try:
            assert up.returncode == 0, up.stderr
            assert f"port {manifest_port} is in use, using " in up.stderr
            assert ps(app_project)["echo"]["port"] != manifest_port
        finally:
            workbench("down", "echo", cwd=app_project)


def test_app_that_fails_to_import_is_reported_at_once(app_project: Path) -> None:
    started = time.monotonic()
    up = workbench("up", "broken", cwd=app_project)
    assert up.returncode == 2, up.stderr
    assert "broken failed to start" in up.stderr and "no model here" in up.stderr
    assert time.monotonic() - started < 60
    assert "broken" not in ps(app_project)


def test_serve_in_the_foreground(app_project: Path) -> None:
    port = free_port()
    proc = start_interruptible(
        [sys.executable, "-m", "workbench", "serve", "echo", "--port", str(port)],
        cwd=app_project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        healthy = False
        while time.monotonic() < deadline and not healthy:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    healthy = r.status == 200
            except OSError:
                time.sleep(0.2)
        assert healthy
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_public_bind_with_auth_requires_login(app_project: Path) -> None:
    from gradio_client import Client

    up = workbench("up", "echo", "--host", "0.0.0.0", "--auth", "ada:s3cret-pass", cwd=app_project)
    try:
        assert up.returncode == 0, up.stderr
        service = ps(app_project)["echo"]
        url = f"http://127.0.0.1:{service['port']}/"
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises several types here
            Client(url, verbose=False).predict("hi", api_name="/echo")
        authed = Client(url, auth=("ada", "s3cret-pass"), verbose=False)
        assert authed.predict("hi", api_name="/echo") == "HI"
        shown = workbench("ps", "--json", cwd=app_project).stdout
        log = (app_project / ".workbench/logs/echo.log").read_text()
        assert "s3cret-pass" not in shown and "s3cret-pass" not in log
    finally:
        workbench("down", "echo", cwd=app_project)
