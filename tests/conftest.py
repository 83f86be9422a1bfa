"""Shared helpers: run the real CLI in a subprocess, make throwaway projects, drive kernels."""

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent


# Fuzz tests (tests/reliability/) keep no example database (nothing written into the
# checkout) and no per-example deadline (a real CLI call takes tens of milliseconds). They
# draw the same inputs on every run, so CI is reproducible; `--hypothesis-profile=explore`
# draws new ones on each run to hunt for bugs.
_fuzz = {
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
settings.register_profile("workbench", derandomize=True, **_fuzz)
settings.register_profile("explore", **_fuzz)
settings.load_profile("workbench")


def workbench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m workbench ARGS` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def json_data(stdout: str) -> object:
    """The data of a command's --json output, checking the envelope every command prints."""
    payload = json.loads(stdout)
    assert payload["schema"] == 1 and "data" in payload and "command" in payload, payload
    return payload["data"]


def write_env(root: Path, name: str, body: str) -> Path:
    path = root / "envs" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@pytest.fixture(scope="session")
def demo_envs() -> None:
    """The project's own envs (textgen, embed), built from their locks into the repo's
    gitignored .workbench/ (a no-op when they are current), with their kernels visible."""
    os.environ["JUPYTER_PATH"] = str(REPO / ".workbench" / "jupyter")
    proc = workbench("env", "create", "--all", "--locked", cwd=REPO)
    assert proc.returncode == 0, proc.stderr


ECHO_APP = """
import gradio as gr

def echo(text):
    if len(text) > 50:
        raise gr.Error("text longer than 50 characters")
    return text.upper()

with gr.Blocks(title="Echo") as demo:
    box = gr.Textbox(label="text")
    out = gr.Textbox(label="shouted")
    box.submit(echo, box, out, api_name="echo")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gradio_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a tiny Gradio env "ui" (ipykernel included, so kernel wb-ui), built
    once per session: apps echo (shouts its input) and broken (fails on import) on free
    ports, and a free [lab] port. A module that starts services here stops them all."""
    root = tmp_path_factory.mktemp("appproj")
    write_env(root, "ui", "dependencies:\n  - python=3.11\n  - gradio>=6\n")
    (root / "apps").mkdir()
    (root / "apps/echo.py").write_text(ECHO_APP)
    (root / "apps/broken.py").write_text(
        "import gradio as gr\nraise RuntimeError('no model here')\n"
    )
    port = free_port()
    (root / "workbench.toml").write_text(
        f'[project]\nname = "appproj"\n'
        f'[apps.echo]\nenv = "ui"\nfile = "apps/echo.py"\nport = {port}\n'
        f'[apps.broken]\nenv = "ui"\nfile = "apps/broken.py"\nport = {port + 1}\n'
        f"[lab]\nport = {free_port()}\n"
    )
    proc = workbench("env", "create", "ui", cwd=root)
    assert proc.returncode == 0, proc.stderr
    yield root
    workbench("down", cwd=root)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workbench project in a temp dir; user-wide Jupyter dirs point into it too."""
    root = tmp_path / "proj"
    (root / "envs").mkdir(parents=True)
    (root / "workbench.toml").write_text('[project]\nname = "testproj"\n')
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(root / ".workbench" / "jupyter"))
    return root


def run_in_kernel(kernel_name: str, code: str, timeout: float = 120) -> str:
    """Start the named kernel with jupyter_client (as Jupyter does), run code, return stdout."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=timeout)
    chunks: list[str] = []

    def collect(msg: dict) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            chunks.append(msg["content"]["text"])
        if msg["msg_type"] == "error":
            chunks.append("ERROR " + msg["content"]["ename"] + ": " + msg["content"]["evalue"])

    try:
        kc.execute_interactive(code, timeout=timeout, output_hook=collect)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return "".join(chunks)


@dataclass(frozen=True)
class Listener:
    """A socket a process listens on: TCP in LISTEN state, or any bound UDP socket."""

    pid: int
    proto: str  # tcp, tcp6, udp, udp6
    address: str
    port: int


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        found.setdefault(ppid, []).append(int(stat.parent.name))
    return found


def process_tree(*roots: int) -> set[int]:
    """The roots and all their living descendants (from /proc/*/stat)."""
    children = _children()
    seen: set[int] = set()
    todo = [r for r in roots if r and Path(f"/proc/{r}").exists()]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"


def chromium_page(url: str, tmp: Path, screenshot: str, budget_ms: int, timeout: float) -> str:
    """The page after its client-side rendering, as headless Chromium sees it with its own
    empty profile under tmp: a screenshot (tmp/screenshot), and the DOM, returned."""
    env = {
        **os.environ,
        "HOME": str(tmp),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "XDG_CACHE_HOME": str(tmp / "cache"),
    }
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--virtual-time-budget={budget_ms}",
        "--window-size=1280,900",
    ]
    run = {"env": env, "capture_output": True, "timeout": timeout, "check": True}
    subprocess.run([*args, f"--screenshot={tmp / screenshot}", url], **run)
    return subprocess.run([*args, "--dump-dom", url], text=True, **run).stdout


def living(pids: Iterable[int]) -> dict[int, str]:
    """The processes of pids still alive, each with its state and command line (zombies,
    state "Z", are dead: only their parent may reap them)."""
    found = {}
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if state != "Z":
            found[pid] = f"{state} {argv[:150]}"
    return found


def is_loopback_ip(address: str) -> bool:
    """127.0.0.0/8, ::1, or 127.0.0.1 mapped into IPv6 (::ffff:7f00:1)."""
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(ip.ipv4_mapped and ip.ipv4_mapped.is_loopback)


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)  # each 32-bit word in host (little-endian) order
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


def listening_sockets(pids: Iterable[int]) -> list[Listener]:
    """Every listening TCP and bound UDP socket (IPv4 and IPv6) the processes hold, read
    from /proc/PID/fd and /proc/net/{tcp,tcp6,udp,udp6}: nothing is missed for lack of
    a tool or of a process name."""
    table: dict[str, tuple[str, str, int]] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/net") / proto
        lines = path.read_text().splitlines()[1:] if path.exists() else []
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == ("0A" if proto.startswith("tcp") else "07"):  # LISTEN / unconnected
                address, port = local.split(":")
                table[inode] = (proto, _address(address), int(port, 16))
    found = set()
    for pid in set(pids):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue  # gone meanwhile
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in table:
                found.add(Listener(pid, *table[link[8:-1]]))
    return sorted(found, key=lambda s: (s.pid, s.proto, s.port))


def listening_ports(pid: int) -> dict[int, str]:
    """port -> local address of the TCP sockets one process listens on."""
    return {s.port: s.address for s in listening_sockets([pid]) if s.proto.startswith("tcp")}


# Session fixtures for container tests: `podman` (env for podman/buildah) and `base_image`.
from tests.containers import base_image, podman  # noqa: E402, F401


def make_package(folder: Path, name: str, version: str, setup_py: str = "") -> Path:
    """A tiny installable project (setuptools, src layout) whose module has VERSION;
    setup_py, when given, runs at build time (e.g. to make a build slow)."""
    module = folder / "src" / name
    module.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    )
    (module / "__init__.py").write_text(f"VERSION = {version!r}\n")
    if setup_py:
        (folder / "setup.py").write_text(setup_py)
    return folder


def git(repo: Path, *args: str) -> str:
    """Run git in repo (identity and default branch fixed) and return its stdout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
