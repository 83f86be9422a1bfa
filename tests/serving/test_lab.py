"""What a person sees: a real JupyterLab from `workbench lab --detach` (its REST API and
headless Chromium on its Launcher, as a new user with an empty home), the server's name in
the ssh line, and the files `workbench kernels --vscode` writes for VS Code."""

import getpass
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.browser import chromium_page
from tests.support.cli import json_data, workbench, write_env
from tests.support.processes import free_port

LOOPBACK = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with one small env (kernel wb-tiny, "Python 3.11 (tiny)"), and an empty
    home and Jupyter data dir for whoever starts Lab there: a new user."""
    base = tmp_path_factory.mktemp("labsee")
    root = base / "proj"
    write_env(root, "tiny", "dependencies:\n  - python=3.11\n")
    (root / "workbench.toml").write_text(
        f'[project]\nname = "labsee"\n[lab]\nport = {free_port()}\n'
    )
    (base / "home").mkdir()
    proc = workbench("env", "create", "tiny", cwd=root, env=_user(base))
    assert proc.returncode == 0, proc.stderr
    yield root
    workbench("down", cwd=root, env=_user(base))


def _user(base: Path) -> dict[str, str]:
    """A new user's environment: nothing of this machine's Jupyter config or kernels."""
    return {
        "JUPYTER_DATA_DIR": str(base / "user-jupyter"),
        "JUPYTER_CONFIG_DIR": str(base / "home" / ".jupyter"),
        "JUPYTER_PATH": "",
        "JUPYTER_CONFIG_PATH": "",
    }


def _lab_env(root: Path) -> dict[str, str]:
    return {**_user(root.parent), "HOME": str(root.parent / "home")}


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def start_lab(root: Path, *options: str) -> tuple[subprocess.CompletedProcess, str, int, str]:
    proc = workbench("lab", "--detach", *options, cwd=root, env=_lab_env(root))
    assert proc.returncode == 0, proc.stderr
    url = re.search(r"(http://127\.0\.0\.1:(\d+)/lab\?token=(\S+))", proc.stderr)
    assert url, proc.stderr
    return proc, url[1], int(url[2]), url[3]


def chromium(url: str, tmp: Path) -> str:
    """The Launcher after Lab's client-side rendering: a screenshot (tmp/lab.png) and the
    DOM, as headless Chromium sees them with its own empty profile."""
    return chromium_page(url, tmp, "lab.png", budget_ms=20000, timeout=180)


def launcher_cards(dom: str) -> list[str]:
    return re.findall(r'class="jp-LauncherCard" title="([^"]*)"', dom)


def test_lab_lists_only_project_kernels_without_news_prompt(lab_home: Path, tmp_path: Path):
    proc, url, port, token = start_lab(lab_home)
    try:
        # It says which kernels Lab lists and how to list the others.
        assert "project's kernels only (wb-tiny)" in proc.stderr
        assert "workbench lab --all-kernels" in proc.stderr
        api = f"http://127.0.0.1:{port}"
        specs = get_json(f"{api}/api/kernelspecs?token={token}")
        assert set(specs["kernelspecs"]) == {"wb-tiny"}
        assert specs["default"] == "wb-tiny"  # what a client gets when it names no kernel

        # The news prompt shows while fetchNews is "none": the default Lab serves is "false".
        notification = "@jupyterlab/apputils-extension:notification"
        schema = get_json(f"{api}/lab/api/settings/{notification}?token={token}")["schema"]
        assert schema["properties"]["fetchNews"]["default"] == "false"
        assert schema["properties"]["checkForUpdates"]["default"] is False

        dom = chromium(url, tmp_path)
        cards = launcher_cards(dom)
        assert cards.count("Python 3.11 (tiny)") == 2  # Notebook and Console
        assert "Python 3 (ipykernel)" not in cards
        assert "Would you like to get notified about official Jupyter news?" not in dom
        assert 'class="jp-toast-message"' not in dom  # no notification at all
        from PIL import Image

        image = Image.open(tmp_path / "lab.png").convert("L")
        low, high = image.getextrema()
        assert image.size == (1280, 900) and high - low > 50  # a rendered page

        # A kernel built while Lab runs is listed at once; nothing went into the home.
        write_env(lab_home, "later", "dependencies:\n  - python=3.11\n")
        built = workbench("env", "create", "later", cwd=lab_home, env=_user(lab_home.parent))
        assert built.returncode == 0, built.stderr
        specs = get_json(f"{api}/api/kernelspecs?token={token}")
        assert set(specs["kernelspecs"]) == {"wb-tiny", "wb-later"}
        home = lab_home.parent / "home"
        assert not [p for p in home.rglob("*") if "labconfig" in p.parts]
        assert (lab_home / ".workbench/jupyter-config/labconfig").is_dir()
    finally:
        assert workbench("down", "lab", cwd=lab_home, env=_user(lab_home.parent)).returncode == 0
        workbench("env", "rm", "later", cwd=lab_home, env=_user(lab_home.parent))
        (lab_home / "envs/later.yml").unlink(missing_ok=True)


def test_lab_all_kernels_lists_python3_too(lab_home: Path) -> None:
    proc, _url, port, token = start_lab(lab_home, "--all-kernels")
    try:
        assert "every Jupyter kernel" in proc.stderr
        specs = get_json(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}")
        assert {"wb-tiny", "python3"} <= set(specs["kernelspecs"])
    finally:
        assert workbench("down", "lab", cwd=lab_home, env=_user(lab_home.parent)).returncode == 0


def _server_names() -> set[str]:
    names = {n for n in (socket.getfqdn(), socket.gethostname()) if n.lower() not in LOOPBACK}
    return names or {"SERVER"}


def test_ssh_line_names_the_server_or_its_alias(lab_home: Path) -> None:
    env = _lab_env(lab_home)
    user = getpass.getuser()
    proc, _url, port, _token = start_lab(lab_home, "--host-alias", "gpu-box")
    manifest = lab_home / "workbench.toml"
    saved = manifest.read_text()
    try:
        forward = f"-L 127.0.0.1:{port}:127.0.0.1:{port}"
        assert proc.stdout.strip().endswith(f"{forward} {user}@gpu-box")

        printed = workbench("tunnel", "--print", cwd=lab_home, env=env).stdout.strip()
        destination = printed.rsplit(" ", 1)[1]
        assert printed.startswith(f"ssh -N {forward}")
        name = destination.split("@", 1)[1]
        assert destination.split("@")[0] == user and name in _server_names()
        assert name.lower() not in LOOPBACK and not name.startswith("127.")

        manifest.write_text(saved + 'ssh_host = "lab-gpu"\n')
        printed = workbench("tunnel", "--print", cwd=lab_home, env=env).stdout.strip()
        assert printed.endswith(f" {user}@lab-gpu")
        again = workbench("tunnel", "--print", "--host-alias", "other", cwd=lab_home, env=env)
        assert again.stdout.strip().endswith(f" {user}@other")  # the option wins
        data = json_data(workbench("tunnel", "--print", "--json", cwd=lab_home, env=env).stdout)
        assert data["ssh"].endswith(f"{user}@lab-gpu")

        bad = workbench("tunnel", "--print", "--host-alias=-oProxyCommand=x", cwd=lab_home)
        assert bad.returncode == 2 and "--host-alias = '-oProxyCommand=x'" in bad.stderr
        manifest.write_text(saved + 'ssh_host = "two words"\n')
        bad = workbench("tunnel", "--print", cwd=lab_home, env=env)
        assert bad.returncode == 2
        assert "[lab] ssh_host = 'two words': expected a host name" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        manifest.write_text(saved)
        assert workbench("down", "lab", cwd=lab_home, env=_user(lab_home.parent)).returncode == 0


@pytest.mark.parametrize(
    ("fqdn", "hostname", "expected"),
    [
        ("localhost", "vm", "vm"),  # /etc/hosts maps the host name to 127.0.0.1
        ("vm.lab.example.org", "vm", "vm.lab.example.org"),
        ("localhost.localdomain", "gpu7", "gpu7"),
        ("127.0.1.1", "localhost", "SERVER"),
        ("ip6-localhost", "localhost", "SERVER"),
    ],
)
def test_server_name_is_never_loopback(monkeypatch, fqdn: str, hostname: str, expected: str):
    """The naming rule for resolver setups this machine lacks (socket answers faked)."""
    from workbench.serving import tunnel

    monkeypatch.setattr(socket, "getfqdn", lambda: fqdn)
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    assert tunnel.server_name() == expected
    assert tunnel.default_destination() == f"{getpass.getuser()}@{expected}"
    assert tunnel.default_destination("alias") == f"{getpass.getuser()}@alias"


def _vscode(root: Path, env: dict | None = None) -> tuple[int, list[dict]]:
    proc = workbench("kernels", "--vscode", "--json", cwd=root, env=env)
    return proc.returncode, json_data(proc.stdout)["vscode"]


def test_kernels_vscode_merges_and_changes_nothing_twice(lab_home: Path, tmp_path: Path):
    root = tmp_path / "proj"
    shutil.copytree(lab_home, root, ignore=shutil.ignore_patterns(".workbench"))
    dotenv = root / ".env"
    dotenv.write_text("SECRET=abc\nexport OTHER='x y'")  # no final newline
    dotenv.chmod(0o600)
    settings = root / ".vscode/settings.json"
    settings.parent.mkdir()
    user_settings = {
        "editor.fontSize": 14,
        "files.watcherExclude": {"**/tmp/**": True},
        "jupyter.kernels.excludePythonEnvironments": ["/opt/other-env"],
    }
    settings.write_text(json.dumps(user_settings, indent=2))

    code, changes = _vscode(root)
    assert code == 0 and [c["status"] for c in changes] == ["updated", "updated"]
    lines = dotenv.read_text().splitlines()
    assert lines[:2] == ["SECRET=abc", "export OTHER='x y'"]
    assert lines[-1] == f"JUPYTER_PATH={root / '.workbench/jupyter'}"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600  # it may hold secrets
    merged = json.loads(settings.read_text())
    assert merged["editor.fontSize"] == 14
    assert merged["files.watcherExclude"] == {"**/tmp/**": True, "**/.workbench/**": True}
    assert merged["jupyter.kernels.excludePythonEnvironments"] == ["/opt/other-env", sys.prefix]

    before = dotenv.read_bytes(), settings.read_bytes()
    code, changes = _vscode(root)
    assert code == 0 and [c["status"] for c in changes] == ["unchanged", "unchanged"]
    assert (dotenv.read_bytes(), settings.read_bytes()) == before


def test_kernels_vscode_never_overwrites_your_keys(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "envs").mkdir(parents=True)
    (root / "workbench.toml").write_text('[project]\nname = "vs"\n')
    dotenv = root / ".env"
    dotenv.write_text("JUPYTER_PATH=/elsewhere\n")
    settings = root / ".vscode/settings.json"
    settings.parent.mkdir()
    settings.write_text('{\n  // mine\n  "editor.fontSize": 14,\n}\n')
    code, changes = _vscode(root)
    assert code == 1 and [c["status"] for c in changes] == ["manual", "manual"]
    assert "JUPYTER_PATH=/elsewhere is yours" in changes[0]["detail"]
    assert "not plain JSON" in changes[1]["detail"]
    assert dotenv.read_text() == "JUPYTER_PATH=/elsewhere\n"
    assert settings.read_text() == '{\n  // mine\n  "editor.fontSize": 14,\n}\n'

    # python.envFile names the env file VS Code reads: JUPYTER_PATH goes there, not to .env.
    settings.write_text(json.dumps({"python.envFile": "${workspaceFolder}/config/dev.env"}))
    (root / "config").mkdir()
    code, changes = _vscode(root)
    assert code == 0 and changes[0]["status"] == "created"
    assert changes[0]["path"] == str(root / "config/dev.env")
    written = (root / "config/dev.env").read_text()
    assert written.endswith(f"JUPYTER_PATH={root / '.workbench/jupyter'}\n")
    assert dotenv.read_text() == "JUPYTER_PATH=/elsewhere\n"
    assert json.loads(settings.read_text())["python.envFile"] == "${workspaceFolder}/config/dev.env"


def test_vscode_env_file_makes_jupyter_find_the_project_kernels(lab_home: Path, tmp_path: Path):
    """The search path VS Code's Jupyter extension builds from the env file (JUPYTER_PATH
    entries, each with kernels/): jupyter_client, in an environment with nothing else, finds
    the project kernel there, and its interpreter exists."""
    root = tmp_path / "proj"
    shutil.copytree(lab_home, root, ignore=shutil.ignore_patterns(".workbench"))
    env = _user(tmp_path)
    assert workbench("env", "create", "tiny", cwd=root, env=env).returncode == 0
    assert _vscode(root, env)[0] == 0
    values = dict(
        line.split("=", 1)
        for line in (root / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    entries = values["JUPYTER_PATH"].split(os.pathsep)
    assert [p for p in entries if (Path(p) / "kernels/wb-tiny/kernel.json").is_file()]

    clean = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    clean.update(HOME=str(tmp_path / "empty-home"), JUPYTER_PATH=values["JUPYTER_PATH"])
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter_client.kernelspecapp", "list", "--json"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    specs = json.loads(listed.stdout)["kernelspecs"]
    assert "wb-tiny" in specs
    assert Path(specs["wb-tiny"]["spec"]["argv"][0]).is_file()
    without = subprocess.run(
        [sys.executable, "-m", "jupyter_client.kernelspecapp", "list", "--json"],
        env={**clean, "JUPYTER_PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "wb-tiny" not in json.loads(without.stdout)["kernelspecs"]
