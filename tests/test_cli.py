"""The command contract: --project in either position, and the JSON every command prints.

Every parser that takes --json must have a case below (the test walks the argument parser
to find them), so a new command cannot ship without its JSON being checked.
"""

import argparse
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from tests.conftest import json_data, workbench, write_env
from workbench import cli

TINY = "dependencies:\n  - python=3.11\n"


def _two_projects(tmp_path: Path) -> tuple[Path, Path]:
    """Projects `here` (env alpha) and `other` (envs alpha and beta), each with a fake
    complete-looking build folder of alpha."""
    roots = []
    for name, envs in (("here", ["alpha"]), ("other", ["alpha", "beta"])):
        root = tmp_path / name
        for env in envs:
            write_env(root, env, TINY)
        (root / "workbench.toml").write_text(f'[project]\nname = "{name}"\n')
        (root / ".workbench/builds/alpha-000000000000-abcdef").mkdir(parents=True)
        roots.append(root)
    return roots[0], roots[1]


@pytest.mark.parametrize("position", ["before", "after"])
def test_project_option_before_or_after_the_command(tmp_path: Path, position: str) -> None:
    """`workbench --project OTHER env list` (the form --help shows) acted on the project of
    the current directory: the command's own --project reset it to its default."""
    here, other = _two_projects(tmp_path)
    option = ["--project", str(other)]
    argv = (
        [*option, "env", "list", "--json"]
        if position == "before"
        else ["env", "list", *option, "--json"]
    )
    listed = workbench(*argv, cwd=here)
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json_data(listed.stdout)] == ["alpha", "beta"]

    argv = (
        [*option, "env", "rm", "alpha"] if position == "before" else ["env", "rm", "alpha", *option]
    )
    removed = workbench(*argv, cwd=here)
    assert removed.returncode == 0, removed.stderr
    build = Path(".workbench/builds/alpha-000000000000-abcdef")
    assert not (other / build).exists()
    assert (here / build).is_dir(), "rm removed the wrong project's env"


def test_verbose_before_the_command_is_kept(tmp_path: Path) -> None:
    here, _ = _two_projects(tmp_path)
    proc = workbench("-v", "env", "plan", "alpha", cwd=here)
    assert proc.returncode == 0 and "$ " in proc.stderr  # the interpreter probes are logged


def _json_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command whose parser takes --json, by its command line."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, [*words, name])
            elif "--json" in action.option_strings:
                found[" ".join(words)] = parser

    walk(cli.parser(), [])
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a built and locked env (tiny), a notebook and a recorded run of it."""
    root = tmp_path_factory.mktemp("contract")
    write_env(root, "tiny", TINY)
    (root / "workbench.toml").write_text('[project]\nname = "contract"\n')
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("from workbench import record\nrecord('x', x)")]
    nb.metadata["kernelspec"] = {"name": "wb-tiny", "display_name": "tiny", "language": "python"}
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks" / "one.ipynb")
    for argv in (
        ["env", "create", "tiny"],
        ["env", "lock", "tiny"],
        ["run", "notebooks/one.ipynb"],
    ):
        proc = workbench(*argv, cwd=root)
        assert proc.returncode == 0, proc.stderr
    return root


# command -> (argv, expected exit code, keys every item (list) or the object (dict) has)
CASES: dict[str, tuple[list[str], int, set[str]]] = {
    "env list": (["env", "list"], 0, {"name", "built", "lock", "kernel", "record"}),
    "env plan": (["env", "plan", "tiny"], 0, {"backend", "python", "packages", "dropped"}),
    "env create": (["env", "create", "tiny"], 0, {"env", "status", "prefix", "kernel"}),
    "env lock": (["env", "lock", "tiny"], 0, {"env", "path", "packages", "spec_hash"}),
    "env check": (["env", "check", "tiny"], 0, {"env", "drift", "added", "removed"}),
    "env rm": (["env", "rm", "nothing-here"], 2, set()),
    "env export": (["env", "export", "tiny"], 0, {"env", "source", "pinned", "yaml"}),
    "env import": (["env", "import", "copy", "--from", "no-such-conda-env"], 2, set()),
    "init": (["init", "--dry-run"], 0, {"envs", "notebooks", "unassigned", "changed"}),
    "kernels": (["kernels"], 0, {"kernels", "pruned", "jupyter_path"}),
    "run": (["run", "notebooks/one.ipynb", "-p", "x", "3"], 0, {"id", "status", "metrics"}),
    "runs": (["runs"], 0, {"id", "notebook", "status", "version"}),
    "runs show": (["runs", "show", "RUN"], 0, {"id", "parameters", "metrics", "version"}),
    "runs compare": (["runs", "compare", "RUN", "RUN"], 0, {"id", "parameters", "metrics"}),
    "test": (["test", "notebooks/one.ipynb"], 0, {"notebook", "ok", "summary", "run"}),
    "up": (["up"], 2, set()),
    "ps": (["ps"], 0, set()),
    "down": (["down"], 0, set()),
    "lab": (["lab", "--detach"], 0, {"url"}),
    "tunnel": (["tunnel", "--print"], 2, set()),
    "gpus": (["gpus"], 0, {"gpus", "leases", "note"}),
    "sweep": (["sweep", "notebooks/one.ipynb", "-p", "x", "1,2"], 0, {"sweep", "runs", "status"}),
    "cluster up": (["cluster", "up", "--nodes", "0"], 2, set()),
    "cluster join": (["cluster", "join", "nowhere"], 2, set()),
    "cluster status": (["cluster", "status"], 2, set()),
    "cluster down": (["cluster", "down"], 0, set()),
    "image": (["image", "nothing-here"], 2, set()),
}


def test_every_json_command_has_a_contract_case() -> None:
    assert set(_json_parsers()) == set(CASES)


@pytest.mark.parametrize("command", sorted(CASES))
def test_json_envelope(built: Path, command: str) -> None:
    """One object: schema version, the command, its exit code, and data (or an error with
    a one-line message) — also when the command fails."""
    argv, code, keys = CASES[command]
    run_id = sorted(p.name for p in (built / "runs").iterdir())[0]
    argv = [run_id if word == "RUN" else word for word in argv]
    try:
        proc = workbench(*argv, "--json", cwd=built)
    finally:
        if command == "lab":
            workbench("down", cwd=built)
    assert proc.returncode == code, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["schema"] == 1 and payload["command"] == command
    assert payload["exit_code"] == code
    if code == 2:
        message = payload["error"]["message"]
        assert message and "\n" not in message and message in proc.stderr
        return
    data = payload["data"]
    for item in data if isinstance(data, list) else [data]:
        assert keys <= set(item), f"{command}: {sorted(keys - set(item))} missing"


def test_state_files_from_a_newer_workbench_still_read(built: Path) -> None:
    """workbench-env.json and record.json carry a version; a key this version does not
    know (written by a newer one) leaves the env built and the run listed."""
    prefix = Path(json_data(workbench("env", "list", "--json", cwd=built).stdout)[0]["prefix"])
    env_record = prefix / "workbench-env.json"
    saved = env_record.read_text()
    data = json.loads(saved)
    assert data["version"] == 1
    env_record.write_text(json.dumps({**data, "version": 2, "added_later": {"x": 1}}))
    try:
        (row,) = json_data(workbench("env", "list", "--json", cwd=built).stdout)
        assert row["built"] is True
        again = workbench("env", "create", "tiny", "--json", cwd=built)
        assert json_data(again.stdout)[0]["status"] == "unchanged"
    finally:
        env_record.write_text(saved)
    workbench("run", "notebooks/one.ipynb", cwd=built)
    record_path = sorted((built / "runs").glob("*/record.json"))[-1]
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "version": 9, "gpu": {"uuid": "GPU-1"}}))
    listed = json_data(workbench("runs", "--json", cwd=built).stdout)
    assert record["id"] in [r["id"] for r in listed]


def test_tunnel_reads_ps_of_this_and_older_versions(tmp_path: Path) -> None:
    """`tunnel USER@HOST` parses the remote `ps --json`: the envelope, or the bare list an
    older workbench printed; an error envelope becomes one line naming the server."""
    from workbench import results
    from workbench.errors import WorkbenchError

    services = [{"name": "chat", "port": 7860}]
    new = json.dumps({"schema": 1, "command": "ps", "exit_code": 0, "data": services})
    assert results.data_of(new) == services == results.data_of(json.dumps(services))
    failed = json.dumps({"schema": 1, "command": "ps", "exit_code": 2, "error": {"message": "x"}})
    with pytest.raises(WorkbenchError, match="server: x"):
        results.data_of(failed, "server")
    assert shutil.which("ssh") is None or True  # the real ssh path is tested in test_serving


@pytest.mark.parametrize("module", ["workbench.serving.tunnel", "workbench.serving.supervisor"])
def test_laptop_and_supervisor_side_import_light(module: str) -> None:
    """`tunnel` on the laptop and the supervisor read the state files without the envs
    side (yaml, rattler, the backends) or Jupyter."""
    import subprocess
    import sys

    heavy = ["yaml", "rattler", "workbench.envs", "jupyter_client", "papermill", "rich"]
    probe = f"import sys, {module}; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
