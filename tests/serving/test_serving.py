"""JupyterLab, the ssh tunnel (through a real sshd on 127.0.0.1) and the secure-bind rule."""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import json_data, workbench, write_env
from tests.support.processes import listening_ports, start_interruptible

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


class Sshd:
    """A real OpenSSH server on 127.0.0.1 with its own host key, config and client key."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
                check=True,
            )
        shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
        (folder / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
            f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin yes\n"
            "AllowTcpForwarding yes\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_interruptible(
            [SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")], stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def client_args(self) -> list[str]:
        return [
            "-p",
            str(self.port),
            "-i",
            str(self.folder / "client_key"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]


@pytest.fixture
def lab_project(project: Path) -> Path:
    write_env(project, "tiny", "dependencies:\n  - python=3.11\n")
    assert workbench("env", "create", "tiny", cwd=project).returncode == 0
    (project / "workbench.toml").write_text(
        f'[project]\nname = "labproj"\n[lab]\nport = {free_port()}\n'
    )
    yield project
    workbench("down", cwd=project)


def test_lab_lists_project_kernels_needs_token_binds_loopback(lab_project: Path) -> None:
    proc = workbench("lab", "--detach", cwd=lab_project)
    assert proc.returncode == 0, proc.stderr
    url = re.search(r"(http://127\.0\.0\.1:(\d+)/lab\?token=(\S+))", proc.stderr)
    assert url, proc.stderr
    port, token = int(url[2]), url[3]
    assert "ssh -N -L" in proc.stdout

    status, body = get(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}")
    assert status == 200 and "wb-tiny" in json.loads(body)["kernelspecs"]
    assert get(f"http://127.0.0.1:{port}/api/kernelspecs")[0] == 403  # the token is required

    ps = json_data(workbench("ps", "--json", cwd=lab_project).stdout)
    assert [(s["name"], s["health"]) for s in ps] == [("lab", "healthy")]
    assert token not in json.dumps(ps)  # no credentials in ps
    assert set(listening_ports(ps[0]["pid"]).values()) == {"127.0.0.1"}

    assert workbench("down", "lab", cwd=lab_project).returncode == 0
    assert json_data(workbench("ps", "--json", cwd=lab_project).stdout) == []


def test_tunnel_print_and_laptop_tunnel_through_real_sshd(
    lab_project: Path, tmp_path: Path
) -> None:
    proc = workbench("lab", "--detach", cwd=lab_project)
    assert proc.returncode == 0, proc.stderr
    token = re.search(r"token=(\S+)", proc.stderr)[1]
    lab_port = json_data(workbench("ps", "--json", cwd=lab_project).stdout)[0]["port"]

    printed = workbench("tunnel", "--print", "me@gpu-server", cwd=lab_project).stdout.strip()
    assert printed == f"ssh -N -L 127.0.0.1:{lab_port}:127.0.0.1:{lab_port} me@gpu-server"

    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    remote = f"{sys.executable} -m workbench"
    laptop = start_interruptible(
        [
            sys.executable,
            "-m",
            "workbench",
            "tunnel",
            "root@127.0.0.1",
            "--project",
            str(lab_project),
            "--remote-workbench",
            remote,
            "-p",
            str(sshd.port),
            "-i",
            str(sshd.folder / "client_key"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = laptop.stdout.readline()
        match = re.match(r"lab: http://127\.0\.0\.1:(\d+)/ \(remote port (\d+)\)", line)
        assert match, line  # the lab's own port is taken here, so a free one is used
        local = int(match[1])
        assert int(match[2]) == lab_port and local != lab_port
        wait_port(local)
        status, body = get(f"http://127.0.0.1:{local}/api/kernelspecs?token={token}")
        assert status == 200 and "wb-tiny" in json.loads(body)["kernelspecs"]

        # sshd restarts: the tunnel notices and comes back by itself.
        sshd.stop()
        sshd.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, _ = get(f"http://127.0.0.1:{local}/api/kernelspecs?token={token}")
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200
    finally:
        laptop.send_signal(2)
        assert laptop.wait(timeout=20) == 0
        sshd.stop()


def test_public_bind_refused_without_auth(project: Path) -> None:
    write_env(project, "tiny", "dependencies:\n  - python=3.11\n")
    (project / "workbench.toml").write_text(
        '[project]\nname = "p"\n[apps.demo]\nenv = "tiny"\nfile = "app.py"\nport = 7999\n'
    )
    for args in (["up", "--host", "0.0.0.0"], ["serve", "demo", "--host", "0.0.0.0"]):
        proc = workbench(*args, cwd=project, env={"WORKBENCH_AUTH": ""})
        assert proc.returncode == 2
        assert "without a password" in proc.stderr and "--auth USER:PASS" in proc.stderr
    bad = workbench("up", "--host", "0.0.0.0", "--auth", "nopassword", cwd=project)
    assert bad.returncode == 2 and "USER:PASS" in bad.stderr


def test_unknown_app_and_unbuilt_env_are_one_line_errors(project: Path) -> None:
    write_env(project, "tiny", "dependencies:\n  - python=3.11\n")
    (project / "app.py").write_text("import gradio as gr\ndemo = gr.Blocks()\n")
    (project / "workbench.toml").write_text(
        '[project]\nname = "p"\n[apps.demo]\nenv = "tiny"\nfile = "app.py"\nport = 7999\n'
    )
    unknown = workbench("up", "dmeo", cwd=project)
    assert unknown.returncode == 2 and "did you mean 'demo'?" in unknown.stderr
    unbuilt = workbench("up", "demo", cwd=project)
    assert unbuilt.returncode == 2
    assert "env 'tiny' is not built; run `workbench env create tiny`" in unbuilt.stderr
    assert "Traceback" not in unbuilt.stderr + unknown.stderr


TRAIN_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "metadata": {"tags": ["parameters"]},
            "source": ["steps = 10\n", 'out_dir = "../models/gpt"\n'],
            "outputs": [],
            "execution_count": None,
        }
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def _engine_project(project: Path) -> None:
    write_env(project, "tiny", "dependencies:\n  - python=3.11\n")
    (project / "notebooks").mkdir()
    (project / "notebooks/train.ipynb").write_text(json.dumps(TRAIN_NOTEBOOK))
    (project / "workbench.toml").write_text(
        '[project]\nname = "p"\n[engines.gpt]\nenv = "tiny"\nmodel = "models/gpt"\nport = 8999\n'
    )


def test_an_engine_without_its_model_names_the_notebook_that_writes_it(project: Path) -> None:
    _engine_project(project)
    up = workbench("up", "gpt", cwd=project)
    assert up.returncode == 2
    assert up.stderr.strip() == (
        "error: engine 'gpt': model models/gpt not found: run notebooks/train.ipynb first "
        "(workbench run notebooks/train.ipynb)"
    )


def test_engines_bind_elsewhere_only_with_keys_kept_private(project: Path) -> None:
    _engine_project(project)
    (project / "models/gpt").mkdir(parents=True)
    (project / "models/gpt/config.json").write_text("{}")
    proc = workbench("up", "--host", "0.0.0.0", cwd=project, env={"WORKBENCH_API_KEYS": ""})
    assert proc.returncode == 2 and "without API keys" in proc.stderr
    keys = project / ".workbench/api_keys"
    keys.parent.mkdir()
    keys.write_text("sk-one\n")
    keys.chmod(0o644)
    proc = workbench("up", "gpt", cwd=project, env={"WORKBENCH_API_KEYS": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: API keys file {keys} is open to other users (mode 0644); chmod 600 {keys}"
    )
    keys.chmod(0o600)
    proc = workbench("up", "gpt", "--host", "0.0.0.0", cwd=project)
    assert proc.returncode == 2 and "env 'tiny' is not built" in proc.stderr  # past the bind
