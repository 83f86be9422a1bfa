"""One launch description per service (workbench.serving.launch): what an image's launcher
reads is the Launch the tool builds, and the launcher starts it as described (its argv,
environment and working folder, the ports filled in)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import project as projects
from workbench.runtime import launcher
from workbench.serving import launch
from workbench.serving.state import Kind


@pytest.fixture
def stack(tmp_path: Path) -> projects.Project:
    """Engine gpt and app chat, which fronts it, in env tiny (with a variable)."""
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs/tiny.yml").write_text(
        "dependencies:\n  - python=3.11\nvariables:\n  GREETING: hello\n"
    )
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps/chat.py").write_text("import gradio\n")
    (tmp_path / "workbench.toml").write_text(
        '[project]\nname = "p"\n'
        '[engines.gpt]\nenv = "tiny"\nmodel = "models/gpt"\nport = 8100\n'
        '[apps.chat]\nenv = "tiny"\nfile = "apps/chat.py"\nport = 7860\nengine = "gpt"\n'
    )
    return projects.load(tmp_path)


def image_site(project: projects.Project) -> launch.InImage:
    return launch.InImage(
        project, "/opt/env/bin/python", "/app", "/tmp/workbench/services", "/models/gpt", "abc"
    )


def test_an_app_and_its_engine_in_an_image_as_the_launcher_reads_them(
    stack: projects.Project,
) -> None:
    site = image_site(stack)
    engine = launch.engine(stack, stack.engine("gpt"), site, "127.0.0.1", 8100)
    app = launch.app(stack, stack.app("chat"), site, "127.0.0.1", 7860)
    assert (engine.kind, app.kind) == (Kind.ENGINE, Kind.APP)
    assert app.argv[:3] == ["/opt/env/bin/python", "-m", "workbench.runtime.app_runner"]
    assert app.argv[app.argv.index("--app") + 1] == "/app/apps/chat.py"
    assert app.argv[app.argv.index("--state-dir") + 1] == "/tmp/workbench/services/chat"
    assert engine.argv[engine.argv.index("--model") + 1] == "/models/gpt"
    for described in (engine, app):  # the same environment, built once for both
        assert described.cwd == "/app"
        common = {"GREETING": "hello", "WORKBENCH_ENV": "tiny", "PYTHONUNBUFFERED": "1"}
        assert common.items() <= described.env.items(), described.name
    assert engine.env["WORKBENCH_LOCK_HASH"] == "abc"
    assert "WORKBENCH_MODEL" not in app.env  # the engine holds the model
    assert (engine.public_needs, app.public_needs) == (
        ("WORKBENCH_API_KEYS",),
        ("WORKBENCH_APP_AUTH",),
    )

    entries = [engine.to_json(), app.to_json()]
    path = stack.root / "services.json"
    path.write_text(json.dumps({"version": 1, "services": entries}))
    moved = {launcher.port_variable("gpt"): "9100", "WORKBENCH_HOST": "127.0.0.1"}
    read = {s.name: s for s in launcher.load(str(path), moved)}
    assert read["chat"].env["WORKBENCH_ENGINE_URL"] == "http://127.0.0.1:9100/v1"
    assert read["gpt"].argv[read["gpt"].argv.index("--port") + 1] == "9100"
    assert read["chat"].argv[read["chat"].argv.index("--port") + 1] == "7860"
    assert (read["chat"].cwd, read["chat"].health_url) == ("/app", "http://127.0.0.1:7860/healthz")


def test_the_launcher_starts_a_service_in_its_folder_with_its_environment(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    code = "import os; open('seen', 'w').write(os.getcwd() + ' ' + os.environ['GREETING'])"
    described = launch.Launch(
        "probe", Kind.APP, [sys.executable, "-c", code], {"GREETING": "hello"}, str(folder),
        "{host}", 1,
    )  # fmt: skip
    services = tmp_path / "services.json"
    services.write_text(json.dumps({"version": 1, "services": [described.to_json()]}))
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.runtime.launcher", "--services", str(services)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (folder / "seen").read_text() == f"{folder} hello"
