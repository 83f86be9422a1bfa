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

from tests.support.cli import json_data, workbench, write_env
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
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # no probes kept from an earlier run
    proc = workbench("-v", "env", "plan", "alpha", cwd=here, env=cache)
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
    "kernels list": (["kernels", "list"], 0, {"kernels", "pruned", "jupyter_path"}),
    "kernels prune": (["kernels", "prune"], 0, {"kernels", "pruned", "jupyter_path"}),
    "kernels vscode": (["kernels", "vscode"], 0, {"kernels", "jupyter_path", "vscode"}),
    "run": (["run", "notebooks/one.ipynb", "-p", "x", "3"], 0, {"id", "status", "metrics"}),
    "runs": (["runs"], 0, {"id", "notebook", "status", "version"}),
    "runs list": (["runs", "list"], 0, {"id", "notebook", "status", "version"}),
    "runs show": (["runs", "show", "RUN"], 0, {"id", "parameters", "metrics", "version"}),
    "runs compare": (["runs", "compare", "RUN", "RUN"], 0, {"id", "parameters", "metrics"}),
    "test": (["test", "notebooks/one.ipynb"], 0, {"notebook", "ok", "summary", "run"}),
    "up": (["up"], 2, set()),
    "ps": (["ps"], 0, set()),
    "services list": (["services", "list"], 0, set()),
    "down": (["down"], 0, set()),
    "lab": (["lab", "--detach"], 0, {"url"}),
    "tunnel": (["tunnel", "--print"], 2, set()),
    "gpus": (["gpus"], 0, {"gpus", "leases", "note"}),
    "gpus list": (["gpus", "list"], 0, {"gpus", "leases", "note"}),
    "sweep": (["sweep", "notebooks/one.ipynb", "-p", "x", "1,2"], 0, {"sweep", "runs", "status"}),
    "cluster up": (["cluster", "up", "--nodes", "0"], 2, set()),
    "cluster join": (["cluster", "join", "nowhere"], 2, set()),
    "cluster status": (["cluster", "status"], 2, set()),
    "cluster list": (["cluster", "list"], 2, set()),
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


# old form -> the form that replaces it (both answer the same data)
REPLACED = {
    "kernels": (["kernels"], ["kernels", "list"]),
    "kernels --prune": (["kernels", "--prune"], ["kernels", "prune"]),
    "runs": (["runs"], ["runs", "list"]),
    "gpus": (["gpus"], ["gpus", "list"]),
    "cluster status": (["cluster", "status"], ["cluster", "list"]),
}


@pytest.mark.parametrize("old", sorted(REPLACED))
def test_old_form_works_with_a_note_on_stderr(built: Path, old: str) -> None:
    """A replaced form answers as before (its --json too, envelope included) and says on
    stderr, in one line, which form replaces it; the new form prints no such note."""
    old_argv, new_argv = REPLACED[old]
    before = workbench(*old_argv, "--json", cwd=built)
    after = workbench(*new_argv, "--json", cwd=built)
    assert before.returncode == after.returncode, before.stderr + after.stderr
    notes = [line for line in before.stderr.splitlines() if line.startswith("deprecated:")]
    assert notes == [
        f"deprecated: use `workbench {' '.join(new_argv)}` (this form goes in the next release)"
    ]
    assert "deprecated" not in after.stderr
    old_payload, new_payload = json.loads(before.stdout), json.loads(after.stdout)
    assert old_payload.pop("command") == " ".join(w for w in old_argv if w[0] != "-")
    assert new_payload.pop("command") == " ".join(new_argv)
    if "gpus" in old_payload.get("data", {}):  # utilization moves between two calls
        old_payload["data"]["gpus"] = new_payload["data"]["gpus"]
    assert old_payload == new_payload
    # the note is stderr only: the old form's text output is the new form's
    assert workbench(*old_argv, cwd=built).stdout == workbench(*new_argv, cwd=built).stdout


def test_ps_stays_as_the_short_form_of_services_list(built: Path) -> None:
    """`tunnel USER@HOST` runs `ps --json` on servers of any version: no note, same data."""
    ps = workbench("ps", "--json", cwd=built)
    listed = workbench("services", "list", "--json", cwd=built)
    assert ps.stderr == listed.stderr == ""
    assert json_data(ps.stdout) == json_data(listed.stdout) == []


def test_no_names_means_every_one_and_all_says_so(built: Path) -> None:
    """env create/lock/check, up and down take NAME… or none (or --all) for every one."""
    for argv in (["env", "check"], ["env", "check", "--all"], ["env", "check", "tiny"]):
        proc = workbench(*argv, "--json", cwd=built)
        assert proc.returncode == 0, proc.stderr
        assert [c["env"] for c in json_data(proc.stdout)] == ["tiny"]
    both = workbench("env", "check", "tiny", "--all", "--json", cwd=built)
    assert both.returncode == 2
    message = json.loads(both.stdout)["error"]["message"]
    assert message == "give names or --all, not both (named: tiny)"
    assert workbench("down", "--all", cwd=built).returncode == 0
    assert workbench("down", "--all", "chat", cwd=built).returncode == 2
    assert workbench("env", "rm", cwd=built).returncode == 2  # deleting needs names


def test_help_names_the_grammar_and_every_exit_code(tmp_path: Path) -> None:
    top = workbench("--help", cwd=tmp_path)
    assert top.returncode == 0
    assert "130 interrupted (Ctrl-C or SIGTERM" in top.stdout
    assert "`NOUN list` lists" in top.stdout
    up = workbench("up", "--help", cwd=tmp_path).stdout
    assert "[SERVICE ...]" in up and "[engines.NAME] or [apps.NAME]" in up
    assert "rescales it" in up and "(default 300)" in up  # a default read from serving.lab
    assert "mamba, micromamba, conda, uv" in workbench("env", "create", "-h", cwd=tmp_path).stdout


def test_json_is_declared_once() -> None:
    """Every command's --json is the one of grammar.JSON_OPTION."""
    from workbench import grammar

    (shared,) = [a for a in grammar.JSON_OPTION._actions if a.dest == "json"]
    for parser in _json_parsers().values():
        (action,) = [a for a in parser._actions if "--json" in a.option_strings]
        assert action.help == shared.help


def test_every_handler_resolves() -> None:
    """The handlers the grammar names as strings exist (a typo would only show when run)."""
    handlers: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        if parser.get_default("handler"):
            handlers.add(parser.get_default("handler"))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    walk(child)

    walk(cli.parser())
    assert len(handlers) > 25
    for name in sorted(handlers):
        assert callable(cli._handler(name)), name


def test_building_the_parser_imports_no_command_implementation() -> None:
    """`workbench --version`, `--help` and the parser load neither workbench.commands.* nor
    the libraries they use; a command imports its module when it runs."""
    import subprocess
    import sys

    heavy = ["rich", "yaml", "rattler", "jupyter_client", "papermill", "packaging"]
    probe = (
        "import sys; from workbench import cli; cli.parser()\n"
        "print(sorted(m for m in sys.modules if m.startswith('workbench.commands.')\n"
        f"    or m in {heavy!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_ps_with_nothing_running_prints_one_line(tmp_path: Path) -> None:
    (tmp_path / "workbench.toml").write_text('[project]\nname = "quiet"\n')
    proc = workbench("ps", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "nothing running; workbench.toml declares no engines or apps "
        "(`workbench lab` starts JupyterLab)"
    ]


def test_flags_that_messages_name_are_the_grammars() -> None:
    """Errors tell the user to rerun with a flag the implementation names by a constant;
    the grammar spells those flags out (it imports no implementation), so they must agree."""
    from workbench.envs import interpreters
    from workbench.envs.backends import uv
    from workbench.serving import apps, lab

    options: set[str] = set()
    helps: list[str] = []

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            options.update(action.option_strings)
            helps.append(action.help or "")
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    walk(child)

    walk(cli.parser())
    assert {uv.DROP_FLAG, interpreters.NEAREST_FLAG, lab.ALL_KERNELS_FLAG} <= options
    assert any(f"(or set {apps.AUTH_VARIABLE})" in h for h in helps)
