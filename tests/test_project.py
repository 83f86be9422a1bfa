"""The manifest (workbench.toml): wrong types, bad paths and garbage, each named in one line."""

from pathlib import Path

import pytest

from tests.conftest import write_env
from workbench import project as projects
from workbench.errors import WorkbenchError


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("project = 5\n", "workbench.toml: project = 5: expected a [project] table"),
        ("envs = []\n", "envs = []: expected a [envs] table"),
        ("apps = 'x'\n", "apps = 'x': expected a [apps] table"),
        ("[project]\nname = [1]\n", "[project] name = [1]: expected a string"),
        ("[lab]\nport = 'x'\n", "[lab]: port = 'x': expected a number 1-65535"),
        ("[lab]\nport = 99999\n", "[lab]: port = 99999: expected a number 1-65535"),
        ("[envs.a]\nspec = 5\n", "[envs.a]: spec = 5: expected a path in the project"),
        ("[envs.a]\nspec = '/etc/hostname'\n", "spec = '/etc/hostname': outside the project"),
        ("[envs.a]\nspec = '../x.yml'\n", "spec = '../x.yml': outside the project"),
        ('[envs."a\\n"]\n', "[envs.a\\n]: invalid env name"),
        ("[envs.a]\ngpus = '\u00b2'\n", "gpus = '\u00b2': expected GPU indices"),
        ("[apps.x]\nenv = ['a']\nfile = 'x.py'\n", "env = ['a'] is not an env"),
        ("[apps.x]\nenv = 'a'\nfile = 3\n", "[apps.x]: file = 3: expected a path in the project"),
        ("[apps.x]\nenv = 'a'\nfile = '/etc/passwd'\n", "file = '/etc/passwd': outside"),
        ("x = " + "[" * 5000, "invalid TOML: nested too deeply"),
        ("[engines.e]\nenv = 'a'\n", "[engines.e]: missing model"),
        ("[engines.e]\nenv = 'b'\nmodel = 'm'\n", "env = 'b' is not an env (known: a)"),
        ("[engines.e]\nenv = 'a'\nmodel = ''\n", "model = '': expected a folder"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\nworkrs = 2\n", "unknown key 'workrs' (did"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\nworkers = -1\n", "workers = -1: expected a"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\nmax_batch = 1.5\n", "max_batch = 1.5: expect"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\ntask = 'chat'\n", "task = 'chat': expected"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\ntimeout = nan\n", "timeout = nan: expected"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\nport = 0\n", "port = 0: expected a number"),
        ("[engines.lab]\nenv = 'a'\nmodel = 'm'\n", "invalid engine name"),
        (
            "[engines.e]\nenv = 'a'\nmodel = 'm'\n"
            "[apps.x]\nenv = 'a'\nfile = 'x.py'\nengine = 'f'\n",
            "engine = 'f' is not an [engines.NAME] (known: e)",
        ),
        (
            "[engines.x]\nenv = 'a'\nmodel = 'm'\n[apps.x]\nenv = 'a'\nfile = 'x.py'\n",
            "share a name",
        ),
    ],
)
def test_bad_manifest_fields_are_named(tmp_path: Path, manifest: str, expected: str) -> None:
    """Found by fuzzing: these raised AttributeError, TypeError, ValueError or RecursionError
    (or passed, and crashed `env list` later) instead of naming the field."""
    write_env(tmp_path, "a", "dependencies: [python=3.11]\n")
    (tmp_path / "workbench.toml").write_text(manifest)
    with pytest.raises(WorkbenchError) as err:
        projects.load(tmp_path)
    assert expected in err.value.message and "workbench.toml" in err.value.message
    assert "\n" not in err.value.message


def test_undecodable_or_huge_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "workbench.toml"
    manifest.write_bytes(b"[project]\nname = '\xff'\n")
    with pytest.raises(WorkbenchError, match=r"workbench.toml:2: not UTF-8 \(byte 0xff\)"):
        projects.load(tmp_path)
    manifest.write_bytes(b"#" * (projects.MAX_MANIFEST_BYTES + 1))
    with pytest.raises(WorkbenchError, match="a manifest over 1024 KiB is refused"):
        projects.load(tmp_path)


def test_paths_inside_the_project_are_kept(tmp_path: Path) -> None:
    write_env(tmp_path, "a", "dependencies: [python=3.11]\n")
    (tmp_path / "workbench.toml").write_text(
        "[envs.b]\nspec = 'envs/a.yml'\ngpus = '0,1'\n"
        "[apps.x]\nenv = 'b'\nfile = 'apps/x.py'\nport = 7000\n[lab]\nport = 8000\n"
    )
    project = projects.load(tmp_path)
    assert project.envs["b"].spec_path == tmp_path / "envs" / "a.yml"
    assert project.envs["b"].gpus == ("0", "1")
    assert project.apps["x"].file == tmp_path / "apps" / "x.py"
    assert project.lab_port == 8000


def test_engines_and_their_apps(tmp_path: Path) -> None:
    write_env(tmp_path, "a", "dependencies: [python=3.11]\n")
    (tmp_path / "workbench.toml").write_text(
        "[engines.gpt]\nenv = 'a'\nmodel = 'models/gpt'\nport = 8100\nworkers = 2\n"
        "max_requests = 500\ntimeout = 30\n"
        "[apps.chat]\nenv = 'a'\nfile = 'chat.py'\nengine = 'gpt'\n"
    )
    project = projects.load(tmp_path)
    engine = project.engine("gpt")
    assert (engine.env, engine.model, engine.port, engine.workers) == ("a", "models/gpt", 8100, 2)
    assert (engine.max_requests, engine.timeout, engine.max_batch) == (500, 30.0, 32)
    assert project.apps["chat"].engine == "gpt"
    assert project.service("gpt") is engine and project.service("chat") is project.apps["chat"]
    with pytest.raises(WorkbenchError, match="did you mean 'gpt'"):
        project.service("gtp")
    assert project.api_keys_path == tmp_path / ".workbench" / "api_keys"
