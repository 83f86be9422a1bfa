"""`workbench sweep` on real kernels of a tiny env: grids, warm slots that leak no state,
failures and Ctrl-C, `runs compare --sweep`, and slots on leased GPUs (nvidia-smi is
FAKED there: this machine has no GPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.support.cli import json_data, workbench, write_env
from tests.support.cluster import NO_RAY
from tests.support.paths import FAKES
from tests.support.processes import process_tree, start_interruptible
from tests.support.projects import notebook
from workbench.errors import WorkbenchError
from workbench.notebooks import sweep

# Every run first checks that nothing an earlier run did is visible, then does all of it:
# a variable, an import under another name, a change to a module of the project, the
# working directory, sys.path, an environment variable and the warnings filters.
LEAK_CHECK = """
import os, sys, warnings
from workbench import record
seen = [n for n in ("leaked", "jsonlib") if n in globals()]
seen += ["cwd"] if os.getcwd() != notebook_dir else []
seen += ["path"] if "/nonexistent/leak" in sys.path else []
seen += ["environ"] if "WB_LEAK" in os.environ else []
seen += ["warnings"] if any("wb-leak" in str(f[1]) for f in warnings.filters) else []
import helper_mod
helper_mod.counter += 1
record("leaks", len(seen))
record("counter", helper_mod.counter)
record("pid", os.getpid())
print("seen", seen)
"""
LEAK_MAKE = """
leaked = x
import json as jsonlib
os.makedirs("elsewhere", exist_ok=True)
os.chdir("elsewhere")
sys.path.append("/nonexistent/leak")
os.environ["WB_LEAK"] = "1"
warnings.filterwarnings("error", message="wb-leak")
record("score", x * 10)
"""


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweepproj")
    (root / "workbench.toml").write_text('[project]\nname = "sweepproj"\n')
    write_env(root, "tiny", "dependencies:\n  - python=3.11\n")
    proc = workbench("env", "create", "tiny", cwd=root)
    assert proc.returncode == 0, proc.stderr
    notebooks = root / "notebooks"
    notebooks.mkdir()
    (notebooks / "helper_mod.py").write_text("counter = 0\n")
    notebook(
        notebooks / "leak.ipynb",
        LEAK_CHECK,
        LEAK_MAKE,
        params=f"x = 1\nnotebook_dir = {str(notebooks)!r}",
    )
    notebook(
        notebooks / "divide.ipynb",
        "from workbench import record\nrecord('inverse', 1 / x)",
        params="x = 1.0",
    )
    notebook(
        notebooks / "slow.ipynb",
        "import time\nprint('started', flush=True)\ntime.sleep(seconds)",
        params="seconds = 1.0",
    )
    return root


def _sweep(proj: Path, *args: str) -> tuple[int, dict, str]:
    proc = workbench("sweep", *args, "--json", cwd=proj)
    data = json_data(proc.stdout) if proc.returncode != 2 else {}
    return proc.returncode, data, proc.stderr


def test_eight_runs_two_warm_slots_leak_no_state(proj: Path) -> None:
    """8 runs, --jobs 2: two kernels, each reused for the runs after its first, and no run
    sees a variable, import, module change, working directory, sys.path entry,
    environment variable or warnings filter of an earlier one."""
    code, data, stderr = _sweep(
        proj, "notebooks/leak.ipynb", "-p", "x", "1,2,3,4,5,6,7,8", "--jobs", "2"
    )
    assert code == 0, stderr
    runs = data["runs"]
    assert [r["status"] for r in runs] == ["ok"] * 8
    assert [r["metrics"]["score"] for r in runs] == [10.0 * x for x in range(1, 9)]
    assert all(r["metrics"]["leaks"] == 0 and r["metrics"]["counter"] == 1 for r in runs), runs
    assert len({r["metrics"]["pid"] for r in runs}) == 2, "two slots, each one kernel"
    assert sum(r["warm"] for r in runs) == 6
    for run in runs:
        record = json.loads((proj / "runs" / run["id"] / "record.json").read_text())
        assert record["sweep"] == data["sweep"] and record["parameters"]["x"] in range(1, 9)
        output = nbformat.read(proj / record["output"], as_version=4)
        counts = [c.execution_count for c in output.cells if c.cell_type == "code"]
        assert counts == list(range(1, len(counts) + 1)), "execution counts restart at 1"
    saved = json.loads((proj / "runs" / data["sweep"] / "sweep.json").read_text())
    assert saved["status"] == "done" and saved["runs"] == [r["id"] for r in runs]
    assert saved["parameters"] == {"x": [str(x) for x in range(1, 9)]}


def test_failed_run_does_not_stop_the_others(proj: Path) -> None:
    """x = 0 fails its cell; the runs before and after it (in the same warm kernel)
    complete, the failure is recorded with its cell, and the sweep exits 1."""
    code, data, _ = _sweep(proj, "notebooks/divide.ipynb", "-p", "x", "2,0,4", "--jobs", "1")
    assert code == 1
    assert [r["status"] for r in data["runs"]] == ["ok", "failed", "ok"]
    assert data["runs"][2]["warm"] is True
    failed = json.loads((proj / "runs" / data["runs"][1]["id"] / "record.json").read_text())
    assert failed["error"]["ename"] == "ZeroDivisionError" and failed["error"]["cell"] == 2


def test_grid_zip_and_bad_input_are_checked_before_any_run(proj: Path) -> None:
    before = set((proj / "runs").iterdir()) if (proj / "runs").exists() else set()
    for args, message in [
        (["-p", "y", "1,2"], "unknown parameter 'y'"),
        (["-p", "x", "1,abc"], "parameter x='abc': expected float"),
        (["-p", "x", "1,,2"], "-p x '1,,2': an empty value"),
        (["-p", "x", "1", "--zip", "-p", "x", "2"], "parameter given twice: x"),
        ([], "a sweep needs at least one -p NAME VALUE1,VALUE2"),
    ]:
        code, _, stderr = _sweep(proj, "notebooks/divide.ipynb", *args)
        assert code == 2 and message in stderr, (args, stderr)
    after = set((proj / "runs").iterdir()) if (proj / "runs").exists() else set()
    assert after == before, "a refused sweep started runs"

    assert sweep.split_values("1e-3,3e-4") == ["1e-3", "3e-4"]
    assert sweep.split_values("[1,2],[3],'a,b'") == ["[1,2]", "[3]", "'a,b'"]
    assert sweep.grid([("a", ["1", "2"]), ("b", ["x", "y"])], zipped=False) == [
        {"a": "1", "b": "x"},
        {"a": "1", "b": "y"},
        {"a": "2", "b": "x"},
        {"a": "2", "b": "y"},
    ]
    assert sweep.grid([("a", ["1", "2"]), ("b", ["x", "y"])], zipped=True) == [
        {"a": "1", "b": "x"},
        {"a": "2", "b": "y"},
    ]
    with pytest.raises(WorkbenchError, match="--zip needs as many values.*a has 2, b has 1"):
        sweep.grid([("a", ["1", "2"]), ("b", ["x"])], zipped=True)


def test_runs_compare_sweep_tabulates_and_plots(proj: Path, tmp_path: Path) -> None:
    code, data, _ = _sweep(proj, "notebooks/divide.ipynb", "-p", "x", "1,2,4,8")
    assert code == 0
    plot = tmp_path / "inverse.png"
    proc = workbench(
        "runs",
        "compare",
        "--sweep",
        data["sweep"],
        "--plot",
        str(plot),
        "--metric",
        "inverse",
        "--json",
        cwd=proj,
    )
    assert proc.returncode == 0, proc.stderr
    table = json_data(proc.stdout)
    assert table["parameters"] == ["x"]
    assert sorted((r["parameters"]["x"], r["metrics"]["inverse"]) for r in table["runs"]) == [
        (1.0, 1.0),
        (2.0, 0.5),
        (4.0, 0.25),
        (8.0, 0.125),
    ]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    human = workbench("runs", "compare", "--sweep", data["sweep"], cwd=proj)
    assert "inverse" in human.stdout and data["runs"][0]["id"] in human.stdout
    missing = workbench("runs", "compare", "--sweep", "sweep-nope", cwd=proj)
    assert missing.returncode == 2 and "no sweep 'sweep-nope'" in missing.stderr


def test_ctrl_c_stops_cleanly_and_keeps_records(proj: Path) -> None:
    """Ctrl-C while two runs sleep: both are recorded as interrupted with their partial
    notebooks, the other four never start, and no worker or kernel is left behind."""
    proc = start_interruptible(
        [
            sys.executable,
            "-m",
            "workbench",
            "sweep",
            "notebooks/slow.ipynb",
            "-p",
            "seconds",
            "60,61,62,63,64,65",
            "--jobs",
            "2",
            "--json",
        ],
        cwd=proj,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    started: list[Path] = []
    while time.monotonic() < deadline and len(started) < 2:
        started = [
            p for p in (proj / "runs").glob("*slow*/slow.ipynb") if "started" in p.read_text()
        ]
        time.sleep(0.2)
    assert len(started) == 2, "two runs never got going"
    tree = process_tree(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    data = json_data(out)
    assert data["status"] == "interrupted"
    statuses = sorted(r["status"] for r in data["runs"])
    assert statuses == ["interrupted", "interrupted", "not run", "not run", "not run", "not run"]
    for path in started:
        record = json.loads((path.parent / "record.json").read_text())
        assert record["status"] == "interrupted" and record["ended"]
        assert "started" in path.read_text(), "the partial output notebook was lost"
    time.sleep(1)
    left = {pid for pid in tree if Path(f"/proc/{pid}").exists()}
    assert not left, f"processes left behind: {left}"


def test_timeout_in_a_slot_restarts_its_kernel(proj: Path) -> None:
    code, data, _ = _sweep(
        proj, "notebooks/slow.ipynb", "-p", "seconds", "30,0.1", "--jobs", "1", "--timeout", "3"
    )
    assert code == 1
    assert [r["status"] for r in data["runs"]] == ["timeout", "ok"]
    assert data["runs"][1]["warm"] is False, "a timed-out kernel must not be reused"


FAKE_SMI = FAKES / "gpu"


def test_gpu_slots_lease_distinct_gpus_and_free_them(proj: Path, tmp_path: Path) -> None:
    """--gpus-per-run 1 on a server with two (FAKE nvidia-smi) GPUs: two slots, each on
    its own leased GPU, which the kernel sees; the leases end with the sweep."""
    (tmp_path / "gpus.csv").write_text("0, GPU-a, Fake, 81559, 0, 0\n1, GPU-b, Fake, 81559, 0, 0\n")
    env = {
        "PATH": f"{FAKE_SMI}{os.pathsep}{os.environ['PATH']}",
        "FAKE_NVIDIA_SMI_DIR": str(tmp_path),
        "WORKBENCH_LEASE_DIR": str(tmp_path / "leases"),
    }
    notebook(
        proj / "notebooks" / "devices.ipynb",
        "import os\nfrom workbench import record\n"
        "record('device', int(os.environ['CUDA_VISIBLE_DEVICES']))\nrecord('pid', os.getpid())",
    )
    proc = workbench(
        "sweep",
        "notebooks/devices.ipynb",
        "-p",
        "x",
        "1,2,3,4",
        "--gpus-per-run",
        "1",
        "--json",
        cwd=proj,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    data = json_data(proc.stdout)
    assert data["jobs"] == 2
    by_kernel = {}
    for run in data["runs"]:
        by_kernel.setdefault(run["metrics"]["pid"], set()).add(run["metrics"]["device"])
        assert run["gpus"] == [str(int(run["metrics"]["device"]))]
    assert sorted(by_kernel.values(), key=sorted) == [{0.0}, {1.0}]
    assert not list((tmp_path / "leases").glob("*.json")), "the sweep kept its leases"
    refused = workbench(
        "sweep",
        "notebooks/devices.ipynb",
        "-p",
        "x",
        "1",
        "--gpus-per-run",
        "1",
        cwd=proj,
        env={"PATH": "/usr/bin:/bin:" + os.path.dirname(sys.executable)},
    )
    assert refused.returncode == 2
    assert "--gpus-per-run 1: no GPUs here: nvidia-smi is not on PATH" in refused.stderr


def test_the_single_server_side_needs_no_ray(proj: Path) -> None:
    """With Ray impossible to import, a local sweep and `workbench gpus` work, and
    --cluster and `cluster up` say in one line what to install."""

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", NO_RAY, *args], cwd=proj, capture_output=True, text=True
        )

    assert cli("sweep", "notebooks/divide.ipynb", "-p", "x", "1,2", "--json").returncode == 0
    assert cli("gpus", "--json").returncode == 0
    for args in (
        ["sweep", "notebooks/divide.ipynb", "-p", "x", "1", "--cluster", "127.0.0.1:6379"],
        ["cluster", "up"],
    ):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "a Ray cluster needs Ray, which is not installed here: pip install" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_warm_kernel_keeps_modules_a_library_made_without_a_file(proj: Path) -> None:
    """An extension module registers submodules that have no file of their own (torch's
    extension makes torch._C._dynamo): they belong to the library. Unloading them broke the
    next run of a warm kernel ("No module named 'torch._C._dynamo'; 'torch._C' is not a
    package"), as it breaks this stand-in library installed in the env."""
    (site,) = (proj / ".workbench/envs/tiny").resolve().glob("lib/python3*/site-packages")
    library = site / "fileless_ext.py"
    library.write_text(
        "import sys, types\nsys.modules[__name__ + '._core'] = types.ModuleType('_core')\n"
    )
    try:
        notebook(proj / "notebooks" / "ext.ipynb", "import fileless_ext._core")
        code, data, stderr = _sweep(proj, "notebooks/ext.ipynb", "-p", "x", "1,2,3", "--jobs", "1")
    finally:
        library.unlink()
    assert code == 0, stderr
    assert [r["status"] for r in data["runs"]] == ["ok"] * 3, data["runs"]
    assert sum(r["warm"] for r in data["runs"]) == 2
