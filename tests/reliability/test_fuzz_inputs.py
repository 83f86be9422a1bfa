"""Hostile input, fuzzed with hypothesis: env specs, the manifest, notebook parameters and
the tensors and bodies a predict engine's routes parse.

Every case must end in exit 0, or exit 2 with one `error:` line that names the file (and
the line, field or value) and says what would be valid: no traceback, no hang, nothing
written outside the project. Most examples drive the CLI in this process
(`workbench.cli.main`, milliseconds a call); a few run it in a subprocess, as a user would.
"""

from __future__ import annotations

import ast
import base64
import functools
import io
import json
import math
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import nbformat
import pytest
import yaml
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from tests.support.cli import json_data, workbench, write_env
from tests.support.paths import REPO
from workbench import cli
from workbench.envs import interpreters
from workbench.runtime.engine import api
from workbench.runtime.engine import inference_protocol as oip
from workbench.runtime.engine.predict_routes import MAX_INPUTS, Infer, InferBody, Predict

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

SECRET = "s3cr3t-0f-the-machine"  # in a file outside the project: must never be echoed
CALL_LIMIT_S = 30  # one CLI call that takes longer than this is a hang
STATE = (".workbench", "runs")  # what commands may write inside the project
# The sandbox's XDG_CACHE_HOME, under tmp_path, and the tool's own cache in it (what it
# learnt of local Pythons): the one place outside the project commands may write.
CACHE_HOME = "home/xdg_cache_home"
TOOL_CACHE = f"{CACHE_HOME}/workbench"


class Hang(BaseException):
    """A CLI call outlived CALL_LIMIT_S (BaseException: nothing in the CLI swallows it)."""


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error: ")]


@contextmanager
def _bounded(seconds: float) -> Iterator[None]:
    def expire(_signum: int, _frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(*argv: str) -> Outcome:
    """`workbench ARGV` in this process, output captured; any exception but exit fails."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), _bounded(CALL_LIMIT_S):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: usage errors
            code = exc.code
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_one_line_or_ok(result: Outcome, names: str, allowed: tuple[str, ...] = ()) -> None:
    """Exit 0, or exit 2 with exactly one short `error:` line that contains names; every
    other stderr line is a warning that names it too, or one of the allowed prefixes."""
    assert "Traceback" not in result.err and SECRET not in result.out + result.err
    assert result.code in (0, 2), result
    for line in result.err.splitlines():
        if line.startswith("warning: "):
            assert names in line, line
        elif not line.startswith("error: "):
            assert line.startswith(allowed), result.err
    if result.code == 2:
        assert len(result.errors) == 1, result.err
        assert names in result.errors[0] and len(result.errors[0]) < 1000, result.errors
    else:
        assert not result.errors, result.err


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root: (size, mtime) of files and links, (0, 0) for folders."""
    found = {}
    for folder, dirs, files in os.walk(root):
        found.update({str(Path(folder, name).relative_to(root)): (0, 0) for name in dirs})
        for name in files:
            info = Path(folder, name).lstat()
            found[str(Path(folder, name).relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


@dataclass
class Sandbox:
    """A project in tmp_path, with HOME, XDG dirs and the temp dir in tmp_path too, and a
    secret file beside the project; `written()` lists what changed outside project state
    and the tool's cache."""

    root: Path
    top: Path
    before: dict[str, tuple[int, int]] = field(default_factory=dict)

    def mark(self) -> None:
        self.before = snapshot(self.top)

    def written(self) -> list[str]:
        after = snapshot(self.top)
        state = tuple(f"{self.root.name}/{part}" for part in STATE)
        cache = (TOOL_CACHE, CACHE_HOME)  # CACHE_HOME: the folder made to hold it
        return [
            path
            for path, stat in after.items()
            if self.before.get(path) != stat
            and not path.startswith(state)
            and not (path in cache or path.startswith(f"{TOOL_CACHE}/"))
        ]


@pytest.fixture
def sandbox(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    for name in ("home/.ipython", "tmp", "outside"):  # IPython makes ~/.ipython on first use
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "outside" / "secret.txt").write_text(SECRET + "\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "home" / var.lower()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / CACHE_HOME))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    # Finding local Pythons probes each one in a subprocess (~0.3 s): once per test is enough.
    monkeypatch.setattr(interpreters, "discover", functools.cache(interpreters.discover))
    monkeypatch.chdir(project)
    return Sandbox(project, tmp_path)


# --- env specs -----------------------------------------------------------------------

OUTSIDE_TARGETS = [
    "/etc/passwd",
    "/etc/shadow",
    "/root/.ssh/id_rsa",
    "/dev/zero",
    "/",
    "../../outside/secret.txt",
    "../../../../../../../../etc/passwd",
    "./../../outside",
    "link/secret.txt",  # a symlink in envs/ that points outside the project
    "~/.ssh/id_rsa",
    "~root/.bashrc",
]
PIP_OPTIONS = ["-r", "-c", "-e", "-f", "-i", "--find-links", "--extra-index-url", "--requirement"]
HOSTILE_PIP = [
    "-r ../../../etc/passwd",
    "-r /etc/passwd",
    "-e ~/.ssh/id_rsa",
    "-f file:///etc/shadow",
    "-e git+file:///etc/x#egg=x",
    "--index-url ../../../etc/passwd",
    "--index-url file:///%2e%2e/etc/passwd",
    "--index-url https://user:hunter2@example.invalid/simple",
    "--extra-index-url https://:@[::1]:99999/simple",
    "-f file:///%00",
    "pkg @ file:///etc/passwd",
    "pkg @ https://user:pw@example.invalid/pkg.whl",
    "-r",
    "-r a b",
    '-r "unclosed',
    "-r=",
    "--trusted-host",
    "--no-index extra",
    "-",
    "--",
    "-e .",
    "./localpkg",
    "/",
    "~",
    "requests[socks]>=2.31; python_version >= '3.8'",
    "requests >>= 2",
    "a\x00b",
    "-r a\nb",
    "numpy\n-r /etc/passwd",
    "\x1b[31mred",
    "x" * 5000,
    "#" + "x" * 200,
]
HOSTILE_CONDA = [
    "python=3.11",
    "python>=3.99",
    "python=3.11|3.12",
    "pytorch::pytorch=2.3=*cpu*",
    "numpy>=1.26,<3",
    "cudatoolkit=11.8",
    "-r x",
    "numpy[version='>=1']",
    "a\nb",
    "",
    " ",
    "::",
    "=1",
    "*",
    "\u2028",
    "x" * 5000,
]
KEYS = st.sampled_from(
    ["name", "channels", "dependencies", "variables", "prefix", "pip"]
) | st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(HOSTILE_PIP + HOSTILE_CONDA)
)
yaml_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS | st.integers() | st.none(), children, max_size=4)
    ),
    max_leaves=20,
)
pip_lines = (
    st.sampled_from(HOSTILE_PIP)
    | st.builds(
        lambda o, t: f"{o} {t}", st.sampled_from(PIP_OPTIONS), st.sampled_from(OUTSIDE_TARGETS)
    )
    | st.text(max_size=40)
    | yaml_values
)
dependencies = st.lists(
    st.sampled_from(HOSTILE_CONDA)
    | st.text(max_size=20)
    | st.fixed_dictionaries({"pip": st.lists(pip_lines, max_size=4)})
    | yaml_values,
    max_size=6,
)
specs = st.fixed_dictionaries(
    {},
    optional={
        "name": yaml_values,
        "channels": st.lists(st.text(max_size=10), max_size=3) | yaml_values,
        "dependencies": dependencies | yaml_values,
        "variables": st.dictionaries(st.text(max_size=10), scalars, max_size=3) | yaml_values,
        "prefix": yaml_values,
    },
) | st.dictionaries(KEYS, yaml_values, max_size=5)
LOCK = "# env: x\n# backend: uv\n# python: 3.11\n# platform: \n# spec-hash: 0\nsix==1.16.0\n"


def check_spec(sandbox: Sandbox, body: str | bytes) -> Outcome:
    """Write envs/x.yml (and a lock, so that `env list` hashes the spec), plan and list it."""
    path = sandbox.root / "envs" / "x.yml"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    (sandbox.root / "envs" / "x.lock").write_text(LOCK)
    sandbox.mark()
    plan = run_cli("env", "plan", "x")
    assert_one_line_or_ok(plan, "x.yml")
    event(f"plan exit {plan.code}")
    listed = run_cli("env", "list", "--json")
    assert listed.code == 0 and "Traceback" not in listed.err, listed
    (row,) = json_data(listed.out)
    assert row["lock"] in ("fresh", "stale", "invalid")
    assert sandbox.written() == []
    return plan


@settings(max_examples=200)
@given(spec=specs, flow=st.booleans())
def test_random_yaml_specs(sandbox: Sandbox, spec: dict, flow: bool) -> None:
    """Random YAML documents shaped like (and unlike) environment.yml: wrong types,
    unknown keys, hostile dependency and pip lines, control characters."""
    check_spec(sandbox, yaml.safe_dump(spec, default_flow_style=flow, allow_unicode=flow))


HOSTILE_DOCUMENTS = [
    "a: &a [*a]\ndependencies: []\n",
    "x: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    + "".join(f"x{i}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(7)),
    "1: x\ntrue: y\nnull: z\n2020-01-01: d\ndependencies: []\n",
    "x: !!python/object/apply:os.system ['touch pwned']\n",
    "x: !!binary aGk=\ny: !!set {a, b}\nz: 2020-01-01\n",
    "dependencies: !!set {a, b}\n",
    "\t",
    "\x00",
    "---\na: 1\n---\nb: 2\n",
    "\ufeffdependencies: [python=3.11]\n",
    "dependencies:\r\n  - python=3.11\r\n",
    "dependencies: [python=3.11]\rname: x\r",
    "variables: {'A=B': 1, 'C': '\\0'}\n",
    "{" * 300 + "}" * 300,
]


@settings(max_examples=150)
@given(
    body=st.text(max_size=300)
    | st.binary(max_size=300)
    | st.sampled_from(HOSTILE_DOCUMENTS)
    | st.builds(
        lambda text, at, junk: text[:at] + junk + text[at:],
        st.just("name: x\ndependencies:\n  - python=3.11\n  - pip:\n    - requests\n"),
        st.integers(0, 60),
        st.text(max_size=5),
    )
)
@example(body="[" * 10_000)
def test_raw_text_and_bytes(sandbox: Sandbox, body: str | bytes) -> None:
    """Arbitrary text and bytes (NUL, invalid UTF-8, tabs, CR, BOM, aliases, tags), and a
    valid spec with junk spliced in."""
    check_spec(sandbox, body)


def file_url(path: str) -> str:
    """path as a file: URL, with its .. segments %-encoded (the decoder must see them)."""
    return "file://" + quote(path).replace("/..", "/%2e%2e")


@settings(max_examples=120)
@given(
    form=st.sampled_from([*PIP_OPTIONS, "--editable=", "bare", "-f URL", "pkg @ URL"]),
    target=st.sampled_from(OUTSIDE_TARGETS)
    | st.builds(
        lambda ups, rest: "../" * ups + rest,
        st.integers(0, 5),
        st.sampled_from(["outside", "outside/secret.txt", "envs/req.txt", "req.txt", "etc"]),
    ),
)
def test_local_paths_outside_the_project_are_refused(
    sandbox: Sandbox, form: str, target: str
) -> None:
    """-r/-c/-e/-f/--index-url values, file: URLs and bare paths that resolve outside the
    project (.., absolute, ~, %-encoded, through a symlink) are refused naming file:line
    and the path; the same forms inside the project are not."""
    envs = sandbox.root / "envs"
    (envs / "req.txt").write_text("six\n")
    if not (envs / "link").is_symlink():
        (envs / "link").symlink_to(sandbox.top / "outside")
    absolute = target if target.startswith("/") else f"{envs}/{target}"
    line = {
        "bare": target if target.startswith(("/", "~", ".")) else f"./{target}",
        "--editable=": f"--editable={target}",
        "-f URL": f"-f {file_url(absolute)}",
        "pkg @ URL": f"pkg @ {file_url(absolute)}",
    }.get(form, f"{form} {target}")
    result = check_spec(sandbox, f"dependencies:\n  - pip:\n    - {json.dumps(line)}\n")
    if target.startswith("~"):
        outside = "URL" not in form  # a URL of envs/~/...: a folder named ~
    else:
        resolved = Path(os.path.realpath(envs / target))
        outside = not resolved.is_relative_to(sandbox.root.resolve())
    refused = result.code == 2 and (
        "outside the project" in result.err or "'~' is not expanded" in result.err
    )
    assert refused == outside, (line, result)
    if outside:
        assert "x.yml:3:" in result.errors[0] and "pip.conf" in result.errors[0]


# --- the manifest --------------------------------------------------------------------


def _toml_float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)


toml_scalars = (
    st.integers(-(2**63), 2**63 - 1).map(str)
    | st.floats().map(_toml_float)
    | st.booleans().map(lambda b: str(b).lower())
    | st.text(max_size=20).map(lambda s: json.dumps(s, ensure_ascii=False))
    | st.sampled_from(
        [
            '"a"',
            '"envs/a.yml"',
            '"app.py"',
            '"../../outside/secret.txt"',
            '"/etc/passwd"',
            '"envs/../../outside/secret.txt"',
            '""',
            '"0,1"',
            "0",
            "65535",
            "65536",
            "-1",
            "1979-05-27",
            "07:32:00",
            "1979-05-27T07:32:00Z",
        ]
    )
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: (
        st.lists(children, max_size=3).map(lambda xs: f"[{', '.join(xs)}]")
        | st.dictionaries(st.sampled_from(["a", "port", "x"]), children, max_size=2).map(
            lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"
        )
    ),
    max_leaves=6,
)
table_names = st.sampled_from(["a", "chat", "lab", "b-1", "../x", "a b", "a\n", ""]) | st.text(
    max_size=6
)


def _table(header: str, fields: dict[str, str]) -> str:
    return f"[{header}]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())


def _fields(*keys: str) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from([*keys, "unknown"]), toml_values, max_size=len(keys))


manifests = st.builds(
    lambda top, tables: "".join(f"{k} = {v}\n" for k, v in top.items()) + "".join(tables),
    st.dictionaries(
        st.sampled_from(["project", "envs", "apps", "engines", "lab"]), toml_values, max_size=1
    ),
    st.lists(
        _fields("name").map(lambda f: _table("project", f))
        | _fields("port", "host", "ssh_host").map(lambda f: _table("lab", f))
        | st.builds(
            lambda n, f: _table(f"envs.{json.dumps(n)}", f), table_names, _fields("spec", "gpus")
        )
        | st.builds(
            lambda n, f: _table(f"apps.{json.dumps(n)}", f),
            table_names,
            _fields("env", "file", "port", "model", "engine"),
        )
        | st.builds(
            lambda n, f: _table(f"engines.{json.dumps(n)}", f),
            table_names,
            _fields("env", "model", "port", "workers", "max_batch", "timeout", "task"),
        ),
        max_size=4,
    ),
)


@settings(max_examples=200)
@given(manifest=manifests | st.text(max_size=200))
@example(manifest="[lab]\nport = 99999\n")
@example(manifest='[envs.a]\nspec = "/etc/hostname"\n')
@example(manifest="x = " + "[" * 5000)
@example(manifest='[engines.e]\nenv = "a"\nmodel = "m"\nworkers = 1e400\n')
@example(
    manifest='[engines.e]\nenv = "a"\nmodel = "m"\n[apps.x]\nenv = "a"\nfile = "x.py"\nengine = 1\n'
)
def test_random_manifests(sandbox: Sandbox, manifest: str) -> None:
    """workbench.toml with random tables, wrong types, out-of-range ports, paths outside
    the project, bad names and garbage: `env list` and `kernels` answer or name the file."""
    write_env(sandbox.root, "a", "dependencies: [python=3.11]\n")
    (sandbox.root / "workbench.toml").write_text(manifest)
    sandbox.mark()
    for argv in (["env", "list", "--json"], ["kernels", "list", "--json"]):
        result = run_cli(*argv)
        assert_one_line_or_ok(result, "workbench.toml")
        event(f"{argv[0]} exit {result.code}")
        if result.code == 0:
            json_data(result.out)
    assert sandbox.written() == []


# --- notebook parameters -------------------------------------------------------------

PARAMETERS = {
    "steps": "3",
    "lr": "0.1",
    "flag": "True",
    "label": '"x"',
    "items": "[1, 2]",
    "opts": '{"a": 1}',
    "anything": "None",
}
HOSTILE_VALUES = [
    '"); import os; os.system("touch PWNED") #',
    "x\"]; open('PWNED', 'w') #",
    "'''",
    '"""',
    "\\",
    '\\"',
    "\n__import__('os').system('touch PWNED')\n",
    "!!python/object/apply:os.system ['touch PWNED']",
    '[!!set {\'x"]; open("PWNED", "w") #\': null}]',
    "[!!binary eCJdOyBvcGVuKCJQV05FRCIsICJ3IikgIw==]",
    "[2020-01-01]",
    "{1: a, b: c}",
    "&a [*a]",
    "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a],"
    " &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c],"
    " [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]]",
    "[" * 5000,
    "0x" + "f" * 5000,
    "1" * 5000,
    "1_000",
    "nan",
    "-inf",
    "1e999",
    "[.nan, -.inf]",
    "yes",
    "~",
    "null",
    "{a: [1, {b: null}]}",
    '{"a": [1, {"b": null}]}',
    "a\udcffb",  # undecodable argv bytes arrive as lone surrogates
    "-5",
    "--help",
]


@pytest.fixture
def nb_sandbox(sandbox: Sandbox) -> Path:
    """A notebook whose parameters cell declares int, float, bool, str, list, dict and
    None parameters, in an env that looks built but has no kernel: a valid run gets as far
    as papermill (which writes the injected parameters) and stops there, exit 2."""
    root = sandbox.root
    write_env(root, "nb", "dependencies: [python=3.11]\n")
    build = root / ".workbench" / "builds" / "nb-0"
    build.mkdir(parents=True)
    record = {
        "env": "nb",
        "backend": "uv",
        "build_id": "0",
        "spec_hash": "0",
        "lock_hash": "0",
        "from_lock": False,
        "python": "python3",
        "python_version": "3.11.0",
        "packages": 0,
        "created": 0.0,
        "seconds": 0.0,
    }
    (build / "workbench-env.json").write_text(json.dumps(record))
    (root / ".workbench" / "envs").mkdir()
    (root / ".workbench" / "envs" / "nb").symlink_to("../builds/nb-0")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "wb-nb", "display_name": "nb", "language": "python"}
    cell = nbformat.v4.new_code_cell("".join(f"{k} = {v}\n" for k, v in PARAMETERS.items()))
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(label)")]
    nbformat.write(nb, root / "nb.ipynb")
    return root / "nb.ipynb"


def injected(output: Path) -> dict[str, object]:
    """The values papermill wrote into the output notebook, which must be literals only."""
    nb = json.loads(output.read_text())
    (cell,) = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    values = {}
    for statement in ast.parse("".join(cell["source"])).body:
        assert isinstance(statement, ast.Assign), ast.unparse(statement)
        (target,) = statement.targets
        assert isinstance(target, ast.Name), ast.unparse(statement)
        values[target.id] = _literal(statement.value)
    return values


def _literal(node: ast.expr) -> object:
    if isinstance(node, ast.List):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {
            ast.literal_eval(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)
        }
    if isinstance(node, ast.Call):  # papermill's spelling of non-finite floats, nothing else
        assert ast.unparse(node) in ("float('nan')", "float('inf')", "float('-inf')"), node
        return float(node.args[0].value)
    return ast.literal_eval(node)  # raises for anything that is not a literal


declared = st.sampled_from(list(PARAMETERS))
parameter_names = (
    declared
    | declared
    | declared
    | st.text(max_size=8)
    | st.sampled_from(["__import__('os')", "a b", "steps ", "", "label\n", "x" * 10_000])
)
parameter_values = (
    st.sampled_from(HOSTILE_VALUES)
    | st.sampled_from("x1[9").map(lambda c: c * 1_000_000)  # 1 MB (in-process: no argv limit)
    | st.text(max_size=40)
    | st.integers().map(str)
    | st.floats().map(str)
    | st.sampled_from(["true", "False", "on", "0", "1"])
    | yaml_values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip())
)


well_typed = {
    "steps": st.integers().map(str),
    "lr": st.floats().map(str),
    "flag": st.sampled_from(["true", "False", "on", "0", "1", "yes"]),
    "label": parameter_values,
    "items": st.lists(st.integers() | st.floats() | st.text(max_size=5), max_size=3).map(
        json.dumps
    ),
    "opts": st.dictionaries(st.text(max_size=5), yaml_values, max_size=3).map(json.dumps),
    "anything": parameter_values,
}
parameters = st.sampled_from(list(PARAMETERS)).flatmap(
    lambda name: st.tuples(st.just(name), well_typed[name])
) | st.tuples(parameter_names, parameter_values)


@settings(max_examples=200)
@given(params=st.lists(parameters, min_size=1, max_size=3, unique_by=lambda p: p[0]))
@example(params=[("steps", "1"), ("steps", "2")])
def test_random_parameters(sandbox: Sandbox, nb_sandbox: Path, params: list) -> None:
    """Unknown names, wrong types, huge strings and code-shaped values: refused before any
    kernel starts (one line naming the notebook and parameter), or injected as literals
    that equal what was given (str) or what the run record says (other types)."""
    argv = [arg for name, value in params for arg in ("-p", name, value)]
    sandbox.mark()
    result = run_cli("run", str(nb_sandbox), *argv)
    assert result.code == 2 and "Traceback" not in result.err, result
    if result.err.splitlines()[-1].startswith("workbench run: error: argument"):
        event("argparse usage error")
        return  # a value starting with '-' reads as an option
    assert_one_line_or_ok(result, "", allowed=("running ",))
    (message,) = result.errors
    assert sandbox.written() == []
    if "nb.ipynb: " in message:
        assert re.search("unknown parameter|expected|given twice", message), message
        event("refused before the kernel")
        return
    event("injected as literals")
    assert "kernel wb-nb could not start (NoSuchKernel" in message, message
    run_id = re.search(r"run record: runs/([^/]+)/", message)[1]
    record = json.loads((sandbox.root / "runs" / run_id / "record.json").read_text())
    values = injected(sandbox.root / "runs" / run_id / "nb.ipynb")
    assert set(values) == {name for name, _ in params}
    for name, value in params:
        expected = value if name == "label" else record["parameters"][name]
        assert json.dumps(values[name], sort_keys=True) == json.dumps(expected, sort_keys=True)


# --- end to end, in subprocesses -----------------------------------------------------

BILLION_LAUGHS = HOSTILE_DOCUMENTS[1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"dependencies:\n" + b"  - numpy\n" * 2_000_000, "a spec file over 256 KiB is refused"),
        (b"[" * 10_000, "invalid YAML: nested too deeply"),
        (bytes(range(256)) * 64, "not UTF-8"),
        (BILLION_LAUGHS.encode(), "YAML aliases"),
        (b"dependencies:\n  - pip:\n    - -r ../../outside/secret.txt\n", "outside"),
    ],
    ids=["20MB", "deep", "binary", "aliases", "traversal"],
)
def test_hostile_spec_end_to_end(project: Path, tmp_path: Path, body: bytes, message: str) -> None:
    """The real CLI on a 20 MB spec, 10,000 levels of nesting, binary bytes, exponential
    aliases and a -r outside the project: exit 2, one line naming the file, in seconds."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text(SECRET)
    (project / "envs" / "x.yml").write_bytes(body)
    started = time.monotonic()
    proc = workbench("env", "plan", "x", cwd=project)
    seconds = time.monotonic() - started
    assert proc.returncode == 2 and seconds < 20
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "x.yml" in proc.stderr and message in proc.stderr and SECRET not in proc.stderr


def test_fifo_spec_does_not_hang(project: Path) -> None:
    """A spec that is a FIFO (reading it would block forever) is refused at once."""
    os.mkfifo(project / "envs" / "x.yml")
    proc = workbench("env", "plan", "envs/x.yml", cwd=project)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_bad_parameter_bytes_end_to_end(project: Path, nb_sandbox: Path) -> None:
    """Undecodable bytes and a 100 KB value on the real command line: one line, exit 2."""
    for value in (b"\xff\xfe", b"[" * 100_000, b"x\xc3(" * 30_000):
        proc = workbench(
            "run",
            str(nb_sandbox),
            "-p",
            "steps",
            value.decode(errors="surrogateescape"),
            cwd=project,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert "nb.ipynb: parameter steps=" in error and len(error) < 1000


TEXTGEN = (REPO / ".workbench" / "envs" / "textgen").resolve()


@pytest.mark.skipif(
    not (TEXTGEN / "bin" / "python").exists(), reason="needs the repo's textgen env (make demo)"
)
def test_code_shaped_values_stay_strings_in_a_real_kernel(project: Path, tmp_path: Path) -> None:
    """In a real kernel (the repo's textgen env), values built to break out of papermill's
    quoting arrive as exactly the strings given and run nothing; YAML that papermill would
    paste unescaped (!!binary) is refused before the kernel starts."""
    pwned = tmp_path / "pwned"
    touch = f"open({str(pwned)!r}, 'w')"
    payloads = [f'"); {touch} #', f'\\"); {touch} #', f"'''\n{touch}\n'''", f"\n{touch}\n"]
    write_env(project, "textgen", "dependencies: [python=3.11]\n")
    (project / ".workbench" / "envs").mkdir(parents=True)
    (project / ".workbench" / "envs" / "textgen").symlink_to(TEXTGEN)
    kernel = project / ".workbench" / "jupyter" / "kernels" / "wb-textgen"
    kernel.mkdir(parents=True)
    argv = [str(TEXTGEN / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "textgen", "language": "python"}
    (kernel / "kernel.json").write_text(json.dumps(spec))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "wb-textgen", "display_name": "t", "language": "python"}
    cell = nbformat.v4.new_code_cell("a = 'x'\nb = 'x'\nc = 'x'\nd = 'x'\nitems = []\n")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("import json; print(json.dumps([a, b, c, d]))")]
    nbformat.write(nb, project / "nb.ipynb")

    binary = base64.b64encode(f'x"]; {touch} #'.encode()).decode()
    refused = workbench("run", "nb.ipynb", "-p", "items", f"[!!binary {binary}]", cwd=project)
    assert refused.returncode == 2 and "parameter items=" in refused.stderr

    params = [
        arg for name, value in zip("abcd", payloads, strict=True) for arg in ("-p", name, value)
    ]
    proc = workbench("run", "nb.ipynb", *params, "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    output = json.loads((project / json_data(proc.stdout)["output"]).read_text())
    printed = "".join(output["cells"][-1]["outputs"][0]["text"])
    assert json.loads(printed) == payloads
    assert not pwned.exists()


# --- inference tensors (the predict engine's /v2 and /predict routes, in this process) ------
# The routes' parsing as the engine runs it, on an engine's description: the digits handler's
# declared inputs, or an image pipeline. Every body ends in a Job of at most MAX_INPUTS inputs
# or a one-line 400 (413) that names the input; nothing else escapes.

DIGITS_ENGINE = SimpleNamespace(
    name="digits",
    args=SimpleNamespace(task="predict"),
    pool=SimpleNamespace(
        ready=True,
        info={"inputs": [{"name": "image", "datatype": "FP32", "shape": [8, 8]}], "outputs": []},
    ),
)
IMAGES_ENGINE = SimpleNamespace(
    name="images", args=SimpleNamespace(task="image-classification"), pool=DIGITS_ENGINE.pool
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=70,
)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["image", "x"]) | st.text(max_size=60),
        "datatype": st.sampled_from(list(oip.DATATYPES)) | json_values,
        "shape": st.lists(st.integers(-2, 10), max_size=4) | json_values,
        "data": json_values,
    },
    optional={
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-4, 400)})
        | json_values
    },
)
infer_bodies = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=4) | json_values},
    optional={
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=3)
        | json_values,
        "parameters": st.dictionaries(st.text(max_size=8), scalars, max_size=3) | json_values,
        "id": json_values,
    },
)
media_values = (
    st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
    | st.binary(max_size=60).map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode())
    | st.sampled_from(["https://example.com/x.png", "http://10.0.0.1/", "data:,x", "====", ""])
    | json_values
)


def assert_job_or_one_line_error(parse) -> None:
    try:
        job = parse()
    except api.ApiError as exc:
        event(f"refused {exc.status}")
        assert exc.status in (400, 413), exc.message
        assert exc.message and "\n" not in exc.message and len(exc.message) < 400, exc.message
        return
    event("accepted")
    assert isinstance(job.payload, list) and 0 < len(job.payload) <= MAX_INPUTS


@settings(max_examples=400)
@given(
    body=infer_bodies | json_values,
    binary=st.binary(max_size=400),
    header=st.none() | st.just("exact") | st.text(max_size=6),
    images=st.booleans(),
)
@example(
    body={"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "data": [0] * 64}]},
    binary=b"",
    header=None,
    images=False,
)
@example(
    body={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["!!"]}]},
    binary=b"",
    header=None,
    images=True,
)
def test_random_infer_requests(body, binary: bytes, header, images: bool) -> None:
    head = json.dumps(body).encode()
    length = str(len(head)) if header == "exact" else header
    raw = head + binary if length is not None else head
    engine = IMAGES_ENGINE if images else DIGITS_ENGINE
    assert_job_or_one_line_error(lambda: Infer().parse(engine, InferBody(raw, length)))


@settings(max_examples=300)
@given(
    body=st.fixed_dictionaries(
        {"inputs": media_values | st.lists(media_values, max_size=5)},
        optional={"parameters": st.dictionaries(st.text(max_size=8), scalars) | json_values},
    )
    | st.fixed_dictionaries({"instances": st.lists(media_values, max_size=5) | json_values})
    | json_values,
    images=st.booleans(),
)
@example(body={"instances": [0] * 10_000}, images=False)
@example(body={"inputs": ["https://example.com/cat.png"]}, images=True)
def test_random_predict_bodies(body, images: bool) -> None:
    engine = IMAGES_ENGINE if images else DIGITS_ENGINE
    assert_job_or_one_line_error(lambda: Predict().parse(engine, body))
