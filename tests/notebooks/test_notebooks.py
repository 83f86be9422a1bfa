"""`workbench run`, `runs`, `test`, the pytest plugin and the papermill engine, on real
kernels of a tiny env built once for the module."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.support.cli import json_data, workbench, write_env
from tests.support.processes import start_interruptible
from tests.support.projects import notebook
from workbench.errors import WorkbenchError
from workbench.notebooks import parameters

TINY = "dependencies:\n  - python=3.11\n  - six==1.16.0\n"


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("nbproj")
    (root / "workbench.toml").write_text('[project]\nname = "nbproj"\n')
    write_env(root, "tiny", TINY)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(
        [
            "git",
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ],
        cwd=root,
        check=True,
    )
    proc = workbench("env", "create", "tiny", cwd=root)
    assert proc.returncode == 0, proc.stderr
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(root / ".workbench" / "jupyter")
    yield root
    # later modules (the demo kernels) must find the kernels they were given
    if previous is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = previous


def run_json(proj: Path, *args: str) -> tuple[int, dict]:
    proc = workbench("run", *args, "--json", cwd=proj)
    return proc.returncode, json_data(proc.stdout)


def test_run_writes_complete_record_and_output(proj: Path) -> None:
    nb = notebook(
        proj / "notebooks/ok.ipynb",
        "from workbench import record\nimport six\n"
        "record('score', x * 2)\nprint(six.__version__, x)",
        params="x = 1\nname = 'a'",
    )
    code, record = run_json(proj, str(nb), "-p", "x", "21")
    assert code == 0 and record["status"] == "ok"
    assert record["parameters"] == {"x": 21} and record["metrics"] == {"score": 42.0}
    assert record["env"] == "tiny" and record["kernel"] == "wb-tiny"
    assert record["spec_hash"] and record["lock_hash"]
    assert len(record["git_commit"]) == 40 and record["git_dirty"] is False
    assert record["seconds"] > 0 and record["ended"] >= record["started"]
    saved = json.loads((proj / "runs" / record["id"] / "record.json").read_text())
    assert saved == record
    out = nbformat.read(proj / record["output"], as_version=4)
    assert out.cells[-1].outputs[-1]["text"] == "1.16.0 21\n"


def test_output_names_the_kernel_that_ran(proj: Path) -> None:
    """papermill copies the input's kernelspec into the output (nteract/papermill#856)."""
    nb = notebook(proj / "notebooks/foreign.ipynb", "print(x)", kernel="python3")
    code, record = run_json(proj, str(nb), "--env", "tiny")
    assert code == 0
    out = nbformat.read(proj / record["output"], as_version=4)
    assert out.metadata.kernelspec.name == "wb-tiny"


def test_failing_cell_is_named_with_line_and_traceback(proj: Path) -> None:
    nb = notebook(
        proj / "notebooks/fail.ipynb", "y = 1", "z = 2\nraise ValueError('broken on purpose')"
    )
    proc = workbench("run", str(nb), cwd=proj)
    assert proc.returncode == 1
    # the one summary `workbench run` and `workbench test` both print: the cell as Jupyter
    # names it (the traceback says `Cell In[3], line 2` too; In[1] is the parameters
    # cell papermill adds) and its first line
    summary = 'failed at Cell In[3], line 2 "z = 2": ValueError: broken on purpose'
    assert summary in proc.stderr and "Cell In[3], line 2\n" in proc.stderr
    assert "Traceback" in proc.stderr
    assert "without encryption" not in proc.stderr, "ipykernel's TCP warning is not for users"
    record = json.loads(sorted((proj / "runs").glob("*fail*/record.json"))[-1].read_text())
    assert record["status"] == "failed" and record["error"]["cell"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "nope", "1"], "unknown parameter 'nope' (valid: x (int, default 1)"),
        (["-p", "x", "one"], "parameter x='one': expected int"),
        (["--preset", "fast"], "no preset 'fast'"),
    ],
)
def test_bad_parameters_refused_before_any_kernel(
    proj: Path, args: list[str], message: str
) -> None:
    nb = notebook(proj / "notebooks/params.ipynb", "print(x)")
    before = set((proj / "runs").glob("*")) if (proj / "runs").exists() else set()
    started = time.monotonic()
    proc = workbench("run", str(nb), *args, cwd=proj)
    assert proc.returncode == 2 and message in proc.stderr
    assert time.monotonic() - started < 5
    after = set((proj / "runs").glob("*")) if (proj / "runs").exists() else set()
    assert after == before  # nothing started, nothing recorded


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("list", "[!!binary eCJdOyBvcGVuKCJQV05FRCIsICJ3IikgIw==]"),  # bytes: pasted unescaped
        ("list", "[!!set {a: null}]"),
        ("list", "[2020-01-01]"),
        ("list", '["\\ud800"]'),  # a lone surrogate: no notebook can hold it
        ("list", "&a [*a]"),
        ("list", "[" * 5000),
        ("dict", "{1: a}"),
        ("NoneType", "0x" + "f" * 5000),  # more digits than str() writes
        ("NoneType", "x" * 200_000),
        ("int", "\udcff"),  # undecodable bytes on the command line
    ],
)
def test_values_papermill_cannot_write_as_literals_are_refused(kind: str, value: str) -> None:
    """Found by fuzzing: `-p items '[!!binary …]'` ran code in the kernel (papermill pastes
    str() of bytes and sets between quotes, unescaped); dates and sets failed as "kernel
    could not start", deep nesting raised RecursionError. Each is now one line, exit 2."""
    declared = {"p": parameters.Parameter("p", kind, "None", "")}
    with pytest.raises(WorkbenchError) as err:
        parameters.coerce(Path("nb.ipynb"), declared, {"p": value})
    assert err.value.message.startswith("nb.ipynb: parameter p=")
    assert f"expected {kind}" in err.value.message and len(err.value.message) < 500


def test_plain_values_keep_their_types() -> None:
    declared = {
        n: parameters.Parameter(n, t, "None", "") for n, t in [("a", "list"), ("b", "NoneType")]
    }
    raw = {"a": '[1, "x", {"k": [null, 1.5, .nan]}]', "b": "{a: [1, 2]}"}
    values = parameters.coerce(Path("nb.ipynb"), declared, raw)
    assert values["a"][:2] == [1, "x"] and values["b"] == {"a": [1, 2]}


def test_missing_notebook_missing_kernel_and_unbuilt_env(proj: Path) -> None:
    assert "no such notebook" in workbench("run", "nope.ipynb", cwd=proj).stderr
    nb = notebook(proj / "notebooks/nokernel.ipynb", "print(1)", kernel="")
    proc = workbench("run", str(nb), cwd=proj)
    assert proc.returncode == 2 and "names no kernel; pass --env NAME" in proc.stderr
    write_env(proj, "later", TINY)
    try:
        nb = notebook(proj / "notebooks/later.ipynb", "print(1)", kernel="wb-later")
        proc = workbench("run", str(nb), cwd=proj)
        assert proc.returncode == 2
        assert "env 'later' is not built; run `workbench env create later`" in proc.stderr
    finally:
        (proj / "envs/later.yml").unlink()
        (proj / "notebooks/later.ipynb").unlink()


def test_killed_kernel_fails_fast_with_partial_output(proj: Path) -> None:
    nb = notebook(
        proj / "notebooks/kill.ipynb",
        "print('before')",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        "print('never')",
    )
    started = time.monotonic()
    code, record = run_json(proj, str(nb))
    assert code == 1 and time.monotonic() - started < 30
    assert record["status"] == "failed" and record["error"]["ename"] == "DeadKernelError"
    out = nbformat.read(proj / record["output"], as_version=4)
    assert any(o.get("text") == "before\n" for c in out.cells for o in c.get("outputs", []))


def test_timeout_keeps_partial_output(proj: Path) -> None:
    nb = notebook(proj / "notebooks/slow.ipynb", "print('started')", "import time\ntime.sleep(120)")
    started = time.monotonic()
    code, record = run_json(proj, str(nb), "--timeout", "5")
    assert code == 1 and time.monotonic() - started < 40
    assert record["status"] == "timeout" and "5 s" in record["error"]["evalue"]
    out = nbformat.read(proj / record["output"], as_version=4)
    assert any(o.get("text") == "started\n" for c in out.cells for o in c.get("outputs", []))


def test_ctrl_c_keeps_record_and_partial_output(proj: Path) -> None:
    nb = notebook(
        proj / "notebooks/interrupt.ipynb",
        "print('started', flush=True)",
        "import time\ntime.sleep(120)",
    )
    proc = start_interruptible(
        [sys.executable, "-m", "workbench", "run", str(nb)],
        cwd=proj,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    record_path = None
    while time.monotonic() < deadline and record_path is None:
        for path in (proj / "runs").glob("*interrupt*/interrupt.ipynb"):
            if "started" in path.read_text():
                record_path = path.parent / "record.json"
        time.sleep(0.2)
    assert record_path is not None, "the run never reached its second cell"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    record = json.loads(record_path.read_text())
    assert record["status"] == "interrupted" and record["ended"]


def test_runs_list_show_compare_and_plot(proj: Path, tmp_path: Path) -> None:
    nb = notebook(
        proj / "notebooks/sweep.ipynb", "from workbench import record\nrecord('loss', 10 / x)"
    )
    ids = [run_json(proj, str(nb), "-p", "x", str(x))[1]["id"] for x in (1, 2, 5)]
    listed = json_data(workbench("runs", "--json", cwd=proj).stdout)
    assert set(ids) <= {r["id"] for r in listed}
    shown = json_data(workbench("runs", "show", ids[1], "--json", cwd=proj).stdout)
    assert shown["metrics"] == {"loss": 5.0}
    plot = tmp_path / "loss.png"
    proc = workbench("runs", "compare", *ids, "--plot", str(plot), cwd=proj)
    assert proc.returncode == 0, proc.stderr
    assert "loss" in proc.stdout and "param x" in proc.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert workbench("runs", "show", "no-such-run", cwd=proj).returncode == 2


def test_workbench_test_parallel_with_junit_and_baselines(proj: Path, tmp_path: Path) -> None:
    suite = proj / "suite"
    good = notebook(
        suite / "good.ipynb",
        "from workbench import record\nrecord('acc', x / 10)",
        params="x = 1",
        smoke={"x": 9},
    )
    regress = notebook(
        suite / "regress.ipynb",
        "from workbench import record\nrecord('acc', x / 10)",
        params="x = 1",
        smoke={"x": 2},
    )
    (suite / "regress.baselines.toml").write_text('[smoke]\nacc = ">= 0.5"\n')
    (suite / "good.baselines.toml").write_text('[smoke]\nacc = ">= 0.5"\n')
    broken = notebook(suite / "broken.ipynb", "1 / 0")
    junit = tmp_path / "junit.xml"
    proc = workbench(
        "test", str(good), str(regress), str(broken), "-n", "2", "--junit", str(junit), cwd=proj
    )
    assert proc.returncode == 1
    assert "regressed: acc = 0.2 (expected >= 0.5)" in proc.stderr
    assert 'failed at Cell In[2], line 1 "1 / 0": ZeroDivisionError' in proc.stderr
    assert "1 passed, 2 failed" in proc.stderr
    # each failure once: its path on one line, the traceback under it, never repeated
    assert proc.stderr.count("broken.ipynb") == 1 and proc.stderr.count("ZeroDivisionError:") == 2
    line = next(x for x in proc.stderr.splitlines() if "broken.ipynb" in x)
    assert line.count("(") == line.count(")")
    xml = junit.read_text()
    assert xml.count("<testcase") == 3 and xml.count("<failure") == 2


def test_nbval_checks_stored_outputs_with_sanitizer(proj: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "wb-tiny", "display_name": "t", "language": "python"}
    stable = nbformat.v4.new_code_cell("print(sum(i * i for i in range(10)))")
    stable.outputs = [nbformat.v4.new_output("stream", name="stdout", text="285\n")]
    volatile = nbformat.v4.new_code_cell("import time; print(f'took {time.time() % 7:.3f} s')")
    volatile.outputs = [nbformat.v4.new_output("stream", name="stdout", text="took 1.234 s\n")]
    stable.execution_count, volatile.execution_count = 1, 2
    nb.cells = [stable, volatile]
    path = proj / "stored" / "stored.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    (proj / "notebooks").mkdir(exist_ok=True)
    (proj / "notebooks/nbval_sanitize.cfg").write_text(
        "[timings]\nregex: took \\d+\\.\\d+ s\nreplace: took T s\n"
    )
    proc = workbench("test", str(path), "--nbval", cwd=proj)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stable.outputs[0]["text"] = "286\n"
    nbformat.write(nb, path)
    assert workbench("test", str(path), "--nbval", cwd=proj).returncode == 1


def test_pytest_collects_notebooks_only_when_asked(proj: Path, tmp_path: Path) -> None:
    """The plugin loads in every pytest run where workbench is installed: it collects
    notebooks only with --workbench-notebooks (as nbval waits for --nbval)."""
    suite = proj / "pytest-suite"
    notebook(suite / "alpha.ipynb", "print(x)")
    notebook(suite / "beta.ipynb", "assert x == 2, 'x must be 2'")
    junit = tmp_path / "pytest.xml"
    base = [sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider"]

    def pytest(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*base, *extra, "--rootdir", str(proj)],
            cwd=proj,
            capture_output=True,
            text=True,
            env=os.environ,
            timeout=300,
        )

    unasked = pytest()
    assert unasked.returncode == 5 and "no tests ran" in unasked.stdout, unasked.stdout
    proc = pytest("--workbench-notebooks", "--workbench-timeout", "120", "--junitxml", str(junit))
    assert proc.returncode == 1
    assert "1 passed" in proc.stdout and "1 failed" in proc.stdout
    assert "x must be 2" in proc.stdout
    assert junit.read_text().count("<testcase") == 2
    only = pytest("--workbench-notebooks", "-k", "alpha")
    assert only.returncode == 0 and "1 passed, 1 deselected" in only.stdout


def test_papermill_engine_writes_a_run_record(proj: Path, tmp_path: Path) -> None:
    nb = notebook(
        proj / "notebooks/engine.ipynb", "from workbench import record\nrecord('twice', 2 * x)"
    )
    out = tmp_path / "engine-out.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            "--engine",
            "workbench",
            str(nb),
            str(out),
            "-k",
            "wb-tiny",
            "-p",
            "x",
            "4",
        ],
        cwd=proj,
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(p.read_text()) for p in (proj / "runs").glob("*engine*/record.json")]
    assert [(r["status"], r["parameters"], r["metrics"], r["output"]) for r in records] == [
        ("ok", {"x": 4}, {"twice": 8.0}, str(out))
    ]


def test_papermill_engine_keeps_no_secret_and_records_a_failed_cell(
    proj: Path, tmp_path: Path
) -> None:
    """Stock papermill with the workbench engine goes through the same run lifecycle as
    `workbench run`: the key reaches the kernel, but neither the output notebook (at the
    end and in the copies saved after each cell) nor the record holds it; a failing cell
    makes a failed record that names it."""
    nb = notebook(
        proj / "notebooks/keyed.ipynb",
        "import time\nprint(len(api_key))\ntime.sleep(1)",
        "raise ValueError('after the key')",
    )
    out = tmp_path / "keyed-out.ipynb"
    key = "sk-" + "9" * 40
    cmd = [sys.executable, "-m", "papermill", "--engine", "workbench", str(nb), str(out)]
    run = subprocess.Popen(
        [*cmd, "-k", "wb-tiny", "-p", "x", "1", "-p", "api_key", key],
        cwd=proj,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    seen: list[str] = []
    while run.poll() is None:
        if out.is_file():
            seen.append(out.read_text())
        time.sleep(0.05)
    _, stderr = run.communicate()
    assert run.returncode == 1 and "after the key" in stderr
    final = out.read_text()
    assert key not in final and all(key not in text for text in seen) and len(seen) > 3
    assert "<redacted>" in final and '"43\\n"' in final  # the kernel had the real key
    (record,) = [json.loads(p.read_text()) for p in (proj / "runs").glob("*keyed*/record.json")]
    assert key not in json.dumps(record)
    assert record["status"] == "failed" and record["error"]["ename"] == "ValueError"
    assert record["error"]["cell"] == 3 and record["version"] == 1


def test_notebook_runs_after_the_notebooks_it_needs(proj: Path) -> None:
    suite = proj / "needs-suite"
    notebook(
        suite / "a_train.ipynb",
        "import time, pathlib\ntime.sleep(2)\npathlib.Path('model.txt').write_text(str(x))",
        params="x = 7",
    )
    user = notebook(
        suite / "b_eval.ipynb",
        "import pathlib\nassert pathlib.Path('model.txt').read_text() == '7'",
    )
    nb = nbformat.read(user, as_version=4)
    nb.metadata["workbench"] = {"needs": ["a_train.ipynb"]}
    nbformat.write(nb, user)
    (suite / "model.txt").unlink(missing_ok=True)
    # b_eval is given first and two run at once: it must still wait for a_train.
    proc = workbench("test", str(user), str(suite / "a_train.ipynb"), "-n", "2", cwd=proj)
    assert proc.returncode == 0, proc.stderr

    notebook(suite / "a_train.ipynb", "raise RuntimeError('training broke')")
    proc = workbench("test", str(user), str(suite / "a_train.ipynb"), "-n", "2", cwd=proj)
    assert proc.returncode == 1
    assert "skipped: needs a_train.ipynb, which failed" in proc.stderr


def test_kernel_that_cannot_start_is_one_line_exit_2(proj: Path) -> None:
    write_env(proj, "broken", TINY)
    try:
        assert workbench("env", "create", "broken", cwd=proj).returncode == 0
        site = next((proj / ".workbench/envs/broken").resolve().glob("lib/python3*/site-packages"))
        (site / "ipykernel_launcher.py").unlink()  # the env can no longer start a kernel
        nb = notebook(proj / "notebooks/broken.ipynb", "print(1)", kernel="wb-broken")
        started = time.monotonic()
        proc = workbench("run", str(nb), cwd=proj)
        assert proc.returncode == 2 and time.monotonic() - started < 90
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "kernel wb-broken could not start" in errors[0]
        assert "workbench env create broken --force" in errors[0]
    finally:
        workbench("env", "rm", "broken", cwd=proj)
        (proj / "envs/broken.yml").unlink()
