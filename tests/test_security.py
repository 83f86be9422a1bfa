"""Security sweep: everything a project starts, started the way a researcher starts it,
checked together against the serving checklist.

A module fixture takes the session's tiny Gradio project (conftest's gradio_project: env
"ui" with ipykernel, app "echo"), adds an engine "tiny" (a random GPT-2 in the textgen env
copied from the repo's lock) and starts at once `workbench up echo tiny` (login from
WORKBENCH_AUTH, API keys from WORKBENCH_API_KEYS), `workbench lab --detach` and `workbench
run` of a notebook that holds its kernel open (a secret-named parameter, HF_TOKEN in the
environment), then a kernel and a terminal through Lab's REST API. While all of it runs it
snapshots every process in those trees (supervisors, app, engine, Lab, kernels, their
children): cmdlines and every listening TCP/UDP socket from /proc. Then it lets the run
finish; the tests read the snapshot and probe the live servers. Teardown stops everything
by PID and fails if a process of the snapshot outlives it.
"""

import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import nbformat
import pytest

from tests.support.cli import json_data, workbench
from tests.support.paths import REPO
from tests.support.processes import Listener, free_port, listening_sockets, process_tree
from tests.support.projects import build_tiny_gpt
from workbench.notebooks import records

AUTH = "ada:" + secrets.token_urlsafe(16)  # the app's login, given as WORKBENCH_AUTH
API_KEY = "sk-" + secrets.token_urlsafe(16)  # a notebook parameter: `-p api_key ...`
HF_TOKEN = "hf_" + secrets.token_urlsafe(16)  # in the researcher's environment
SSH_KEY = "SWEEP-PRIVATE-KEY-" + secrets.token_hex(8)  # in the fake ~/.ssh/id_rsa
ENGINE_KEY = "sk-engine-" + secrets.token_urlsafe(16)  # WORKBENCH_API_KEYS of the engine
LOOPBACK = {"127.0.0.1", "::1"}
START_TIMEOUT = 240


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# The kernel proves it got the real values (redaction is for records only), says it is
# up, and stays up until the fixture has taken its snapshot.
HOLD = f"""
import hashlib, os, pathlib, time
assert hashlib.sha256(api_key.encode()).hexdigest() == "{_digest(API_KEY)}"
assert hashlib.sha256(os.environ["HF_TOKEN"].encode()).hexdigest() == "{_digest(HF_TOKEN)}"
pathlib.Path("kernel-ready").write_text(str(os.getpid()))
deadline = time.monotonic() + {START_TIMEOUT}
while not pathlib.Path("release").exists() and time.monotonic() < deadline:
    time.sleep(0.1)
"""


def request(
    port: int,
    path: str,
    method: str = "GET",
    headers: dict | None = None,
    body: bytes | None = None,
) -> tuple[int, dict, str]:
    """One raw HTTP request (the path is sent as given, `..` and all)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(
            method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})}
        )
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read().decode("utf-8", "replace")
    finally:
        conn.close()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Stack:
    root: Path
    home: Path  # HOME of everything started, with a fake ~/.ssh/id_rsa
    app_port: int
    engine_port: int
    lab_port: int
    lab_token: str
    roots: dict[str, int]  # what started each tree: echo and lab supervisors, the run CLI
    up: subprocess.CompletedProcess
    run: subprocess.CompletedProcess | None = None
    cmdlines: dict[int, str] = field(default_factory=dict)  # every process seen
    listeners: list[Listener] = field(default_factory=list)
    kernels: list[int] = field(default_factory=list)  # ipykernel pids (run's and Lab's)

    def lab(self, path: str, method: str = "GET", token: bool = True, **kw):
        headers = {"Authorization": f"token {self.lab_token}"} if token else {}
        return request(self.lab_port, path, method, {**headers, **kw.pop("headers", {})}, **kw)


def snapshot(stack: Stack) -> None:
    """Every process in the trees, with its cmdline, and every socket they listen on."""
    pids = process_tree(*stack.roots.values())
    stack.cmdlines.update({pid: cmdline(pid) for pid in pids})
    stack.listeners = listening_sockets(pids)
    stack.kernels = sorted(p for p in pids if "ipykernel_launcher" in stack.cmdlines[p])


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _start_lab_kernel_and_terminal(stack: Stack) -> None:
    status, _, body = stack.lab("/api/kernels", "POST", body=b'{"name": "wb-ui"}')
    assert status == 201, body
    status, _, body = stack.lab("/api/terminals", "POST", body=b"{}")
    assert status == 200, body

    def lab_kernel_listens() -> bool:
        snapshot(stack)
        ports = {}
        for s in stack.listeners:
            ports[s.pid] = ports.get(s.pid, 0) + 1
        return len([k for k in stack.kernels if ports.get(k, 0) >= 5]) == 2

    _wait(lab_kernel_listens, 120, "both kernels to listen on their 5 ports")


def _add_engine(root: Path) -> str:
    """The textgen env (from the repo's lock) and a random GPT-2 served as engine "tiny";
    returns the manifest as it was."""
    for name in ("textgen.yml", "textgen.lock"):
        shutil.copy(REPO / "envs" / name, root / "envs" / name)
    built = workbench("env", "create", "textgen", "--locked", cwd=root)
    assert built.returncode == 0, built.stderr
    build_tiny_gpt(root / "models/tiny", root / ".workbench/envs/textgen/bin/python")
    manifest = (root / "workbench.toml").read_text()
    engine = f'\n[engines.tiny]\nenv = "textgen"\nmodel = "models/tiny"\nport = {free_port()}\n'
    (root / "workbench.toml").write_text(manifest + engine)
    return manifest


def _remove_engine(root: Path, manifest: str) -> None:
    (root / "workbench.toml").write_text(manifest)
    for name in ("textgen.yml", "textgen.lock"):
        (root / "envs" / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def stack(gradio_project: Path, tmp_path_factory: pytest.TempPathFactory):
    root = gradio_project
    manifest = _add_engine(root)
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh/id_rsa").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SSH_KEY}\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "wb-ui", "display_name": "ui", "language": "python"}
    params = nbformat.v4.new_code_cell('api_key = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(HOLD)]
    (root / "notebooks").mkdir(exist_ok=True)
    nbformat.write(nb, root / "notebooks/hold.ipynb")
    for flag in ("kernel-ready", "release"):
        (root / "notebooks" / flag).unlink(missing_ok=True)

    # The researcher's shell: a login for the apps, keys for the engines and a hub token
    # exported, home elsewhere.
    env = {**os.environ, "HOME": str(home), "WORKBENCH_AUTH": AUTH, "HF_TOKEN": HF_TOKEN}
    env["WORKBENCH_API_KEYS"] = ENGINE_KEY
    cli = [sys.executable, "-m", "workbench"]

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*cli, *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    up, lab = start("up", "echo", "tiny"), start("lab", "--detach")
    run = start("run", "notebooks/hold.ipynb", "--env", "ui", "-p", "api_key", API_KEY, "--json")
    stack = None
    try:
        up_out, up_err = up.communicate(timeout=START_TIMEOUT)
        assert up.returncode == 0, up_err.decode()
        lab_out, lab_err = lab.communicate(timeout=START_TIMEOUT)
        assert lab.returncode == 0, lab_err.decode()
        token = re.search(rb"token=(\S+)", lab_err)[1].decode()
        ps = {s["name"]: s for s in json_data(workbench("ps", "--json", cwd=root).stdout)}
        stack = Stack(
            root=root,
            home=home,
            app_port=ps["echo"]["port"],
            engine_port=ps["tiny"]["port"],
            lab_port=ps["lab"]["port"],
            lab_token=token,
            roots={
                "echo": ps["echo"]["supervisor_pid"],
                "tiny": ps["tiny"]["supervisor_pid"],
                "lab": ps["lab"]["supervisor_pid"],
                "run": run.pid,
            },
            up=subprocess.CompletedProcess(up.args, 0, up_out.decode(), up_err.decode()),
        )
        _wait(
            lambda: (root / "notebooks/kernel-ready").exists() or run.poll() is not None,
            START_TIMEOUT,
            "the run's kernel",
        )
        assert run.poll() is None, run.communicate()[1].decode()
        _start_lab_kernel_and_terminal(stack)
        (root / "notebooks/release").touch()
        out, err = run.communicate(timeout=120)
        stack.run = subprocess.CompletedProcess(
            run.args, run.returncode, out.decode(), err.decode()
        )
        assert run.returncode == 0, stack.run.stderr
        yield stack
    finally:
        (root / "notebooks/release").touch()  # the run ends on its own within a moment
        pids = process_tree(*(p.pid for p in (up, lab, run)), *(stack.cmdlines if stack else ()))
        started = {pid: cmdline(pid) for pid in pids}
        for proc in (run, up, lab):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        workbench("down", cwd=root)

        def left() -> list[int]:  # the same process, not a later one that reuses its pid
            return [p for p in process_tree(*started) if started.get(p, cmdline(p)) == cmdline(p)]

        deadline = time.monotonic() + 30
        while left() and time.monotonic() < deadline:
            time.sleep(0.2)
        leftover = left()
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        _remove_engine(root, manifest)
        assert not leftover, f"still running after `workbench down`: {leftover}"


def test_every_listening_socket_of_every_process_tree_is_loopback(stack: Stack) -> None:
    """Supervisors, app, engine (front, zygote, cores), Lab, its kernel and terminal, the
    run's kernel: each socket any of them listens on (TCP, TCP6, UDP, UDP6) is bound to
    127.0.0.1 or ::1, and the sweep saw the app, the engine, Lab and both kernels' five ZMQ
    ports (so it could have failed)."""
    ports = {s.port for s in stack.listeners}
    assert {stack.app_port, stack.engine_port, stack.lab_port} <= ports
    engine = [p for p, line in stack.cmdlines.items() if "workbench.runtime.engine" in line]
    assert len(engine) >= 3  # the front, its zygote and the core it forked
    assert len(stack.kernels) == 2
    for kernel in stack.kernels:
        assert len([s for s in stack.listeners if s.pid == kernel and s.proto == "tcp"]) >= 5
    exposed = [s for s in stack.listeners if s.address not in LOOPBACK]
    assert not exposed, [(s, stack.cmdlines[s.pid][:120]) for s in exposed]
    print(f"\n{len(stack.cmdlines)} processes, {len(stack.listeners)} listening sockets")


def test_no_credential_in_logs_ps_cmdlines_or_run_records(stack: Stack) -> None:
    """The app login, the engine's API key, the Lab token, HF_TOKEN and a secret-named
    parameter never show in .workbench/logs, `ps` (plain and --json), any process's cmdline,
    `up`'s output, the engine's metrics, or runs/ (record.json, the output notebook, `runs
    --json`). The engine wants its key: 401 without it, 200 with it."""
    engine = f"http://127.0.0.1:{stack.engine_port}"
    body = json.dumps({"model": "tiny", "prompt": "a", "max_tokens": 2}).encode()
    json_type = {"Content-Type": "application/json"}
    assert request(stack.engine_port, "/v1/completions", "POST", json_type, body)[0] == 401
    bearer = {"Authorization": f"Bearer {ENGINE_KEY}", **json_type}
    assert request(stack.engine_port, "/v1/completions", "POST", bearer, body)[0] == 200, engine
    # Requests that carry the token in the URL, one of them failing, so Lab logs them.
    assert stack.lab(f"/api/kernels?token={stack.lab_token}", token=False)[0] == 200
    assert stack.lab(f"/api/nothing-here?token={stack.lab_token}", token=False)[0] == 404
    lab_log = stack.root / ".workbench/logs/lab.log"
    _wait(lambda: "/api/nothing-here" in lab_log.read_text(), 10, "Lab to log the 404")
    secrets_ = {
        "app login": AUTH.split(":", 1)[1],
        "engine key": ENGINE_KEY,
        "lab token": stack.lab_token,
        "HF_TOKEN": HF_TOKEN,
        "api_key": API_KEY,
    }
    root = stack.root
    places = {
        str(p.relative_to(root)): p.read_text(errors="replace")
        for p in root.glob("runs/**/*")
        if p.is_file()
    }
    places |= {
        str(p.relative_to(root)): p.read_text(errors="replace")
        for p in (root / ".workbench/logs").rglob("*")
        if p.is_file()  # pool slots log under logs/pool/
    }
    for args in (["ps", "--json"], ["ps"], ["runs", "--json"], ["logs", "lab", "-n", "1000"]):
        places[" ".join(args)] = workbench(*args, cwd=root).stdout
    places["up output"] = stack.up.stdout + stack.up.stderr
    places["engine metrics"] = request(stack.engine_port, "/metrics")[2]
    places["run output"] = stack.run.stdout
    # The run CLI's own argv is what the researcher typed (-p api_key ...): not ours to hide.
    for pid, line in stack.cmdlines.items():
        if pid != stack.roots["run"]:
            places[f"cmdline of {pid} ({line[:60]})"] = line
    assert any(p.startswith("runs/") and p.endswith("record.json") for p in places)
    assert any(p.endswith("hold.ipynb") for p in places)
    leaks = [
        (what, where) for what, s in secrets_.items() for where, text in places.items() if s in text
    ]
    assert not leaks
    record = json_data(stack.run.stdout)
    assert record["status"] == "ok" and record["parameters"] == {"api_key": records.REDACTED}


def test_gradio_file_routes_stay_inside_the_app(stack: Stack) -> None:
    """Logged in, an upload comes back through /gradio_api/file=, but `..`, absolute, `~`,
    encoded paths to /etc/passwd, ~/.ssh, the project and the app's own service.json (its
    login, next to the temp dir) are all refused, and without the login even uploads are."""
    port = stack.app_port
    user, password = AUTH.split(":", 1)
    login = f"username={quote(user)}&password={quote(password)}".encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert request(port, "/login", "POST", form, b"username=ada&password=wrong")[0] == 400
    status, headers, body = request(port, "/login", "POST", form, login)
    assert status == 200, body
    cookie = re.search(r"(access-token-unsecure-[^=]+=[^;]+)", headers["set-cookie"])[1]
    authed = {"Cookie": cookie}

    boundary = "sweep" + secrets.token_hex(8)
    upload = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="probe.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nuploaded-ok\r\n--{boundary}--\r\n"
    ).encode()
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert request(port, "/gradio_api/upload", "POST", multipart, upload)[0] in (401, 403)
    status, _, body = request(port, "/gradio_api/upload", "POST", {**authed, **multipart}, upload)
    assert status == 200, body
    uploaded = json.loads(body)[0]
    _wait(
        lambda: request(port, f"/gradio_api/file={uploaded}", headers=authed)[0] == 200,
        10,
        "upload",
    )
    assert request(port, f"/gradio_api/file={uploaded}", headers=authed)[2] == "uploaded-ok"
    assert request(port, f"/gradio_api/file={uploaded}")[0] in (401, 403)  # not logged in

    state = stack.root / ".workbench/services/echo"
    targets = [
        "/etc/passwd",
        "../../../../../../etc/passwd",
        "~/.ssh/id_rsa",
        f"{stack.home}/.ssh/id_rsa",
        str(stack.root / "workbench.toml"),
        "workbench.toml",
        "apps/echo.py",
        ".workbench/services/echo/service.json",
        str(state / "service.json"),
        str(state / "tmp/../service.json"),
        f"{uploaded}/../../../service.json",
        f"{Path(uploaded).parent}/../../service.json",
    ]
    probes = []
    for target in targets:
        probes += [target, quote(target, safe=""), target.replace("/", "%2F").replace(".", "%2e")]
    markers = ["root:x:0:", "[project]", "gr.Blocks", "PRIVATE KEY", SSH_KEY, password]
    for probe in probes:
        for prefix in ("/gradio_api/file=", "/file="):
            for headers in ({}, authed):
                status, _, body = request(port, prefix + probe, headers=headers)
                where = (prefix + probe, bool(headers), status, body[:200])
                assert status in (400, 401, 403, 404), where
                assert not any(m in body for m in markers), where


def test_foreign_host_header_is_rejected_by_app_and_lab(stack: Stack) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 gets 400 from the app
    and 403 from Lab, even holding the token; the right Host still works."""
    evil = {"Host": f"evil.example:{stack.app_port}"}
    assert request(stack.app_port, "/healthz", headers=evil)[0] == 400
    assert request(stack.app_port, "/", headers=evil)[0] == 400
    assert request(stack.app_port, "/healthz")[0] == 200
    evil = {"Host": f"evil.example:{stack.lab_port}"}
    assert stack.lab("/api/kernels", headers=evil)[0] == 403
    assert stack.lab("/lab", headers=evil)[0] == 403
    assert stack.lab("/api/kernels")[0] == 200


def test_lab_requires_its_token(stack: Stack) -> None:
    """Without the token (or with a wrong one) Lab's API answers 403 and /lab sends the
    browser to the login page; nothing can start a kernel."""
    assert stack.lab("/api/kernels", token=False)[0] == 403
    assert stack.lab("/api/kernels?token=wrong", token=False)[0] == 403
    assert stack.lab("/api/kernels", "POST", token=False, body=b'{"name": "wb-ui"}')[0] == 403
    status, headers, _ = stack.lab("/lab", token=False)
    assert status == 302 and "/login" in headers["Location"]


def test_lab_refuses_to_run_when_a_jupyter_config_drops_the_token(
    project: Path, tmp_path: Path
) -> None:
    """A user's jupyter_server_config.py with an empty token beats JUPYTER_TOKEN and would
    leave Lab open to every local user: `lab --detach` stops it again and says why."""
    home = tmp_path / "home"
    (home / ".jupyter").mkdir(parents=True)
    (home / ".jupyter/jupyter_server_config.py").write_text('c.IdentityProvider.token = ""\n')
    (project / "workbench.toml").write_text(f'[project]\nname = "p"\n[lab]\nport = {free_port()}\n')
    try:
        proc = workbench("lab", "--detach", cwd=project, env={"HOME": str(home)})
        assert proc.returncode == 2, proc.stderr
        assert "answered without its token" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert json_data(workbench("ps", "--json", cwd=project).stdout) == []
    finally:
        workbench("down", cwd=project)


def test_app_state_is_private(stack: Stack) -> None:
    """The app's state and Gradio temp dirs are 0700; the files holding the app login and
    the Lab token are 0600."""
    folders = stack.root / ".workbench/services"
    for folder in (folders / "echo", folders / "echo/tmp"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for secret_file in (folders / "echo/service.json", folders / "lab/token"):
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600, secret_file


def test_public_bind_without_auth_is_refused(stack: Stack) -> None:
    """`up --host 0.0.0.0` with no login (apps) or no API keys (engines) is refused: exit 2
    and a one-line reason."""
    proc = workbench("up", "--host", "0.0.0.0", cwd=stack.root, env={"WORKBENCH_AUTH": ""})
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "without a password" in proc.stderr
    no_keys = {"WORKBENCH_API_KEYS": ""}
    proc = workbench("up", "tiny", "--host", "0.0.0.0", cwd=stack.root, env=no_keys)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "without API keys" in proc.stderr


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("hf_token", True),
        ("api_key", True),
        ("openaiApiKey", True),
        ("db_password", True),
        ("client_secret", True),
        ("auth", True),
        ("token", True),
        ("max_new_tokens", False),
        ("pad_token", False),
        ("token_limit", False),
        ("password_file", False),
        ("tokenizer", False),
        ("keyword", False),
    ],
)
def test_secret_parameter_names(name: str, secret: bool) -> None:
    """Names that hold credentials are recognised; ML names that merely say "token" are not."""
    assert records.is_secret(name) is secret


def test_records_and_output_notebooks_redact_secret_parameters() -> None:
    """Only non-empty string values of secret names are redacted, in the record and in the
    metadata and injected cell papermill writes into the output notebook."""
    params = {"hf_token": "hf_abc", "steps": 3, "auth": "", "max_tokens": "64"}
    assert records.redacted(params) == {**params, "hf_token": records.REDACTED}
    nb = {
        "metadata": {"papermill": {"parameters": dict(params)}},
        "cells": [
            {
                "metadata": {"tags": ["injected-parameters"]},
                "source": [
                    "# Parameters\n",
                    'hf_token = "hf_abc"\n',
                    "steps = 3\n",
                    'max_tokens = "64"\n',
                ],
            },
            {"metadata": {}, "source": 'print("hf_token = hf_abc stays: the notebook wrote it")'},
        ],
    }
    records.redact_notebook(nb)
    assert nb["metadata"]["papermill"]["parameters"]["hf_token"] == records.REDACTED
    injected = "".join(nb["cells"][0]["source"])
    assert "hf_abc" not in injected and "steps = 3\n" in injected and "max_tokens" in injected
    assert "hf_abc" in nb["cells"][1]["source"]
