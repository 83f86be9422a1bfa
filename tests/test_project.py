"""The manifest (workbench.toml): wrong types, bad paths and garbage, each named in one line."""

import json
from pathlib import Path

import pytest

from tests.support.cli import workbench, write_env
from workbench import manifest as manifests
from workbench import project as projects
from workbench.errors import WorkbenchError


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("project = 5\n", "workbench.toml:1: project = 5: expected a [project] table"),
        ("envs = []\n", "toml:1: envs = []: expected a [envs] table"),
        ("apps = 'x'\n", "toml:1: apps = 'x': expected a [apps] table"),
        ("[project]\nname = [1]\n", "toml:2: [project] name = [1]: expected a string"),
        ("[lab]\nport = 'x'\n", "toml:2: [lab] port = 'x': expected a number 1-65535"),
        ("[lab]\nport = 99999\n", "[lab] port = 99999: expected a number 1-65535"),
        ("[envs.a]\nspec = 5\n", "toml:2: [envs.a] spec = 5: expected a path in the project"),
        ("[envs.a]\nspec = '/etc/hostname'\n", "spec = '/etc/hostname': outside the project"),
        ("[envs.a]\nspec = '../x.yml'\n", "spec = '../x.yml': outside the project"),
        ('[envs."a\\n"]\n', "toml:1: [envs.a\\n] invalid env name"),
        ("[envs.a]\ngpus = '\u00b2'\n", "gpus = '\u00b2': expected GPU indices"),
        ("[envs.a]\ngpus = 0\n", "toml:2: [envs.a] gpus = 0: a count of GPUs is at least 1"),
        (
            "[envs.a]\n\n# GPUs\ngpu = 1\n",
            "toml:4: [envs.a] unknown key 'gpu'; did you mean 'gpus'?",
        ),
        ("[project]\nnmae = 'x'\n", "toml:2: [project] unknown key 'nmae'; did you mean 'name'?"),
        (
            "[lab]\nport = 1\nssh = 'h'\n",
            "toml:3: [lab] unknown key 'ssh'; did you mean 'ssh_host'?",
        ),
        ("[lab]\nzzz = 1\n", "[lab] unknown key 'zzz' (valid: port, ssh_host)"),
        ("[apps.x]\nenv = 'a'\nfile = 'x.py'\nprot = 1\n", "toml:4: [apps.x] unknown key 'prot'"),
        ("[envs]\na = {gpu = 1}\n", "toml:2: [envs.a] unknown key 'gpu'"),
        ("lab.prot = 1\n", "toml:1: [lab] unknown key 'prot'; did you mean 'port'?"),
        ("[engine.x]\nenv = 'a'\n", "toml:1: unknown table [engine]; did you mean 'engines'?"),
        ("[apps.x]\nenv = ['a']\nfile = 'x.py'\n", "toml:2: [apps.x] env = ['a']: not an env"),
        ("[apps.x]\nenv = 'a'\nfile = 3\n", "toml:3: [apps.x] file = 3: expected a path in the"),
        ("[apps.x]\nenv = 'a'\nfile = '/etc/passwd'\n", "file = '/etc/passwd': outside"),
        ("x = " + "[" * 5000, "invalid TOML: nested too deeply"),
        ("[engines.e]\nenv = 'a'\n", "toml:1: [engines.e] missing model"),
        ("[engines.e]\nenv = 'b'\nmodel = 'm'\n", "env = 'b': not an env (known: a)"),
        ("[engines.e]\nenv = 'a'\nmodel = ''\n", "toml:3: [engines.e] model = '': expected a"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\nworkrs = 2\n", "unknown key 'workrs'; did"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\nworkers = -1\n", "workers = -1: expected a"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\nmax_batch = 1.5\n", "max_batch = 1.5: expect"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\nmax_queue = 0\n", "max_queue = 0: expected a"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\ntask = 'chat'\n", "task = 'chat': expected"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\ntimeout = nan\n", "timeout = nan: expected"),
        ("[engines.e]\nenv = 'a'\nmodel = 'm'\nport = 0\n", "port = 0: expected a number"),
        ("[engines.lab]\nenv = 'a'\nmodel = 'm'\n", "toml:1: [engines.lab] invalid engine name"),
        ("[notebooks]\n'nb' = 'b'\n", "toml:2: [notebooks] 'nb' = 'b': not an env (known: a)"),
        (
            "[engines.e]\nenv = 'a'\nmodel = 'm'\n"
            "[apps.x]\nenv = 'a'\nfile = 'x.py'\nengine = 'f'\n",
            "toml:7: [apps.x] engine = 'f': not an [engines.NAME] (known: e)",
        ),
        (
            "[engines.x]\nenv = 'a'\nmodel = 'm'\n[apps.x]\nenv = 'a'\nfile = 'x.py'\n",
            "toml:4: [engines.x] and [apps.x] share a name",
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
    manifest.write_bytes(b"#" * (manifests.MAX_MANIFEST_BYTES + 1))
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
    assert (engine.env, engine.model, engine.port) == ("a", "models/gpt", 8100)
    settings = engine.settings
    assert (settings.workers, settings.max_requests, settings.timeout) == (2, 500, 30.0)
    assert settings.max_batch == 32 and isinstance(settings.timeout, float)
    assert project.apps["chat"].engine == "gpt"
    assert project.service("gpt") is engine and project.service("chat") is project.apps["chat"]
    with pytest.raises(WorkbenchError, match="did you mean 'gpt'"):
        project.service("gtp")
    assert project.api_keys_path == tmp_path / ".workbench" / "api_keys"


# A valid value for every key of the schema, as TOML (engine settings: their defaults).
EXAMPLES = {
    ("[project]", "name"): '"demo"',
    ("[project]", "cache_dir"): '"cache"',
    ("[envs.NAME]", "spec"): '"envs/a.yml"',
    ("[envs.NAME]", "gpus"): "[0, 1]",
    ("[engines.NAME]", "env"): '"b"',
    ("[engines.NAME]", "model"): '"models/gpt"',
    ("[engines.NAME]", "port"): "8100",
    ("[apps.NAME]", "env"): '"b"',
    ("[apps.NAME]", "file"): '"chat.py"',
    ("[apps.NAME]", "port"): "7000",
    ("[apps.NAME]", "model"): '"models/gpt"',
    ("[apps.NAME]", "engine"): '"gpt"',
    ("[lab]", "port"): "8000",
    ("[lab]", "ssh_host"): '"gpu-box"',
    ("[notebooks]", "PATH"): '"b"',
}


def _every_key() -> str:
    """A manifest that sets every key the schema declares."""
    rows = manifests.reference()
    examples = dict(EXAMPLES)
    for row in rows:
        if (row["table"], row["key"]) not in examples:
            examples[row["table"], row["key"]] = json.dumps(row["default"])
    assert {(r["table"], r["key"]) for r in rows} == set(examples)  # no example for nothing
    names = {
        "[envs.NAME]": "[envs.b]",
        "[engines.NAME]": "[engines.gpt]",
        "[apps.NAME]": "[apps.chat]",
    }
    text = ""
    for table in dict.fromkeys(r["table"] for r in rows):
        text += f"{names.get(table, table)}\n"
        for (where, key), value in examples.items():
            if where == table:
                shown = '"notebooks/x.ipynb"' if key == "PATH" else key
                text += f"{shown} = {value}\n"
    return text


def test_every_key_of_the_schema_is_accepted_and_no_other(tmp_path: Path) -> None:
    """The schema is the whole truth: load() takes every key it declares (in rows a docs
    generator can render), and refuses one it does not in any table, naming file and line."""
    rows = manifests.reference()
    assert all(row["description"] and row["type"] for row in rows)
    engine_rows = {r["key"]: r for r in rows if r["table"] == "[engines.NAME]"}
    assert engine_rows["max_queue"]["default"] == 64 and engine_rows["max_queue"]["low"] == 1
    write_env(tmp_path, "a", "dependencies: [python=3.11]\n")
    manifest = tmp_path / "workbench.toml"
    text = _every_key()
    manifest.write_text(text)
    project = projects.load(tmp_path)
    assert (project.name, project.lab.ssh_host, project.lab_port) == ("demo", "gpu-box", 8000)
    assert project.envs["b"].gpus == ("0", "1") and project.notebooks == {"notebooks/x.ipynb": "b"}
    assert project.apps["chat"].engine == "gpt" and project.engine("gpt").port == 8100
    lines = text.splitlines()
    for header in dict.fromkeys(line for line in lines if line.startswith("[")):
        at = lines.index(header) + 2  # the line after the header
        bad = lines[: at - 1] + ["colour = 1"] + lines[at - 1 :]
        manifest.write_text("\n".join(bad) + "\n")
        with pytest.raises(WorkbenchError) as err:
            projects.load(tmp_path)
        if header == "[notebooks]":  # its keys are paths: this one names no env
            assert f"workbench.toml:{at}: [notebooks] 'colour' = 1: not an env" in err.value.message
        else:
            assert f"workbench.toml:{at}: {header} unknown key 'colour'" in err.value.message
    manifest.write_text(text + "[labs]\nport = 1\n")
    with pytest.raises(
        WorkbenchError, match=r"toml:\d+: unknown table \[labs\]; did you mean 'lab'"
    ):
        projects.load(tmp_path)


def test_the_shipped_manifest_loads() -> None:
    project = projects.load(Path(__file__).resolve().parents[1])
    assert {"tinygpt", "minilm"} <= project.engines.keys() and project.lab_port == 8888


def test_a_misspelt_key_stops_the_command_at_its_line(tmp_path: Path) -> None:
    """`gpu = 1` for `gpus` once left the env without a GPU, silently."""
    write_env(tmp_path, "x", "dependencies: [python=3.11]\n")
    (tmp_path / "workbench.toml").write_text(
        '[project]\nname = "p"\n\n# the GPUs\n\n[envs.x]\ngpu = 1\n'
    )
    proc = workbench("env", "list", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        "workbench.toml:7: [envs.x] unknown key 'gpu'; did you mean 'gpus'?"
    )
