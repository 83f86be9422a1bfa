"""GPU inventory and machine-wide leases: real kernels started by jupyter_client and by a
real JupyterLab, real `workbench run`, real processes racing for GPUs.

This machine has no GPU, so nvidia-smi is FAKED (the only fake here): a script on PATH
(tests/fakes/gpu/nvidia-smi) that answers workbench's two queries from files each test
writes. Leases live in a private folder ($WORKBENCH_LEASE_DIR) per module.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from tests.support.cli import json_data, workbench, write_env
from tests.support.paths import FAKES
from tests.support.processes import free_port

FAKE_SMI = FAKES / "gpu"
TINY = "dependencies:\n  - python=3.11\n"
TWO_GPUS = [(0, "GPU-aaaa", 81559, 30000), (1, "GPU-bbbb", 81559, 10)]
PROBE = "import os; print('DEVICES', os.environ.get('CUDA_VISIBLE_DEVICES'))"


@dataclass
class FakeGpus:
    """The files the FAKE nvidia-smi answers from."""

    folder: Path
    leases: Path

    def set(self, gpus: list[tuple], apps: list[tuple] = ()) -> None:
        """gpus: (index, uuid, memory.total, memory.used); apps: (pid, uuid, used MiB)."""
        rows = [f"{i}, {uuid}, Fake H100, {total}, {used}, 7" for i, uuid, total, used in gpus]
        (self.folder / "gpus.csv").write_text("".join(r + "\n" for r in rows))
        (self.folder / "apps.csv").write_text("".join(f"{p}, {u}, {m}\n" for p, u, m in apps))

    def held(self) -> dict[int, list[dict]]:
        """GPU index -> holders, as `workbench gpus --json` reports them."""
        proc = workbench("gpus", "--json", cwd=self.folder)
        assert proc.returncode == 0, proc.stderr
        return {g["index"]: g["holders"] for g in json_data(proc.stdout)["gpus"]}


@pytest.fixture(scope="module")
def gpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGpus]:
    """This machine as a two-GPU server for the module's tests: the FAKE nvidia-smi first
    on PATH (for this process and every process it starts) and a private lease folder."""
    folder = tmp_path_factory.mktemp("fake-smi")
    fake = FakeGpus(folder, folder / "leases")
    added = {
        "PATH": f"{FAKE_SMI}{os.pathsep}{os.environ['PATH']}",
        "FAKE_NVIDIA_SMI_DIR": str(folder),
        "WORKBENCH_LEASE_DIR": str(fake.leases),
    }
    saved = {name: os.environ.get(name) for name in added}
    os.environ.update(added)
    fake.set(TWO_GPUS)
    yield fake
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def two_free_gpus(request: pytest.FixtureRequest) -> None:
    if "gpus" in request.fixturenames:
        request.getfixturevalue("gpus").set(TWO_GPUS)


@pytest.fixture(scope="module")
def proj(gpus: FakeGpus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Env "counted" asks for one GPU (`gpus = 1`), env "pinned" pins GPU 1."""
    root = tmp_path_factory.mktemp("gpuproj")
    write_env(root, "counted", TINY)
    write_env(root, "pinned", TINY)
    (root / "workbench.toml").write_text(
        '[project]\nname = "gpuproj"\n[envs.counted]\ngpus = 1\n'
        "[envs.pinned]\ngpus = [1]\n"
        f"[lab]\nport = {free_port()}\n"
    )
    # built without the fake on PATH: a build on a GPU machine asks torch if it sees them
    plain_path = os.environ["PATH"].replace(f"{FAKE_SMI}{os.pathsep}", "")
    for env in ("counted", "pinned"):
        proc = workbench("env", "create", env, cwd=root, env={"PATH": plain_path})
        assert proc.returncode == 0, proc.stderr
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(root / ".workbench" / "jupyter")
    yield root
    workbench("down", cwd=root)
    os.environ.pop("JUPYTER_PATH") if saved is None else os.environ.update(JUPYTER_PATH=saved)


def _devices(kc) -> str:
    """CUDA_VISIBLE_DEVICES as the kernel behind client kc sees it."""
    seen: list[str] = []

    def collect(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            seen.append(msg["content"]["text"])

    kc.execute_interactive(PROBE, timeout=60, output_hook=collect)
    return "".join(seen).split("DEVICES", 1)[1].strip()


def test_inventory_from_fake_nvidia_smi_and_plain_words_without_it(
    gpus: FakeGpus, tmp_path: Path
) -> None:
    """Two GPUs and a process from the FAKE nvidia-smi; none without nvidia-smi on PATH."""
    from workbench.gpus import inventory

    gpus.set(TWO_GPUS, apps=[(4242, "GPU-bbbb", 500)])
    found = inventory.read()
    assert [(g.index, g.uuid, g.memory_free, g.utilization) for g in found.gpus] == [
        (0, "GPU-aaaa", 51559, 7),
        (1, "GPU-bbbb", 81549, 7),
    ]
    assert [(p.pid, p.gpu_uuid, p.used_memory) for p in found.processes] == [
        (4242, "GPU-bbbb", 500)
    ]
    bare = {**os.environ, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "gpus", "--json"],
        cwd=tmp_path,
        env=bare,
        capture_output=True,
        text=True,
    )
    data = json_data(proc.stdout)
    assert data["gpus"] == [] and data["note"] == "no GPUs here: nvidia-smi is not on PATH"
    human = subprocess.run(
        [sys.executable, "-m", "workbench", "gpus"], cwd=tmp_path, env=bare, capture_output=True
    )
    assert b"no GPUs here: nvidia-smi is not on PATH" in human.stderr


RACER = """
import sys, time
from workbench.gpus import inventory, leases
inv = inventory.read()
start = float(sys.argv[1])
time.sleep(max(0, start - time.time()))
try:
    lease = leases.acquire(1, leases.Holder("run", "racer"), inv)
except leases.NoFreeGpu as exc:
    print("REFUSED", exc.message, flush=True)
    sys.exit(1)
print("GOT", lease.gpus[0], flush=True)
time.sleep(30)
"""


def test_concurrent_starts_never_share_a_gpu(gpus: FakeGpus) -> None:
    """Eight processes ask for one GPU each at the same instant, on four (FAKE nvidia-smi)
    GPUs: four get distinct GPUs, four are refused with a line naming the holders."""
    gpus.set([(i, f"GPU-{i}", 81559, 0) for i in range(4)])
    at = str(time.time() + 2.0)
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, at], stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    try:
        answers = [proc.stdout.readline().strip() for proc in racers]
        got = sorted(int(a.split()[1]) for a in answers if a.startswith("GOT"))
        refused = [a for a in answers if a.startswith("REFUSED")]
        assert got == [0, 1, 2, 3], answers
        assert len(refused) == 4
        assert "no free GPU for run racer (needs 1, 0 of 4 free)" in refused[0]
        assert "GPU 3 held by run racer (" in refused[0]
        assert {h[0]["pid"] for h in gpus.held().values()} == {
            p.pid for p in racers if p.poll() is None
        }
    finally:
        for proc in racers:
            proc.kill()
            proc.wait()
    assert all(not holders for holders in gpus.held().values()), "dead holders were not freed"


def test_jupyter_client_kernels_get_distinct_leases_freed_on_shutdown_and_sigkill(
    proj: Path, gpus: FakeGpus
) -> None:
    """Kernels of a `gpus = 1` env started by plain jupyter_client get their GPU through
    the kernel provisioner, most free memory first (FAKE nvidia-smi says GPU 0 is busier);
    a third is refused naming both holders; shutdown frees one lease, SIGKILL the other."""
    from jupyter_client.manager import start_new_kernel

    first = start_new_kernel(kernel_name="wb-counted", startup_timeout=120)
    second = start_new_kernel(kernel_name="wb-counted", startup_timeout=120)
    try:
        assert (_devices(first[1]), _devices(second[1])) == ("1", "0")
        held = gpus.held()
        assert {held[0][0]["pid"], held[1][0]["pid"]} == {
            first[0].provisioner.pid,
            second[0].provisioner.pid,
        }
        assert held[1][0]["kind"] == "kernel" and held[1][0]["name"] == "wb-counted"
        assert held[1][0]["project"] == str(proj) and held[1][0]["exclusive"] is True
        with pytest.raises(Exception, match="no free GPU for kernel wb-counted") as refused:
            start_new_kernel(kernel_name="wb-counted", startup_timeout=120)
        assert "GPU 0 held by kernel wb-counted" in str(refused.value)
        assert "GPU 1 held by kernel wb-counted" in str(refused.value)

        first[1].stop_channels()
        first[0].shutdown_kernel()
        assert gpus.held()[1] == [] and len(gpus.held()[0]) == 1

        os.kill(second[0].provisioner.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while gpus.held()[0] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gpus.held()[0] == [], "the lease of a SIGKILLed kernel was not freed"
    finally:
        for km, kc in (first, second):
            kc.stop_channels()
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    assert not list(gpus.leases.glob("*.json")), "leases were left behind"


def test_pin_is_honoured_recorded_shared_and_avoided_by_counts(proj: Path, gpus: FakeGpus) -> None:
    """`gpus = [1]` pins as before (even on a GPU held by someone else: said in the log),
    the pin shows in `workbench gpus`, and a counted start then takes the other GPU even
    though the pinned one has more free memory."""
    from jupyter_client.manager import start_new_kernel

    pinned = start_new_kernel(kernel_name="wb-pinned", startup_timeout=120)
    counted = start_new_kernel(kernel_name="wb-counted", startup_timeout=120)
    try:
        assert _devices(pinned[1]) == "1" and _devices(counted[1]) == "0"
        held = gpus.held()
        assert [h["exclusive"] for h in held[1]] == [False]
        assert [h["name"] for h in held[0]] == ["wb-counted"]
    finally:
        for km, kc in (pinned, counted):
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def _notebook(path: Path, kernel: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    first = nbformat.v4.new_code_cell("x = 1")
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, *(nbformat.v4.new_code_cell(c) for c in cells)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


HOLD = """
import sys, time
from workbench.gpus import inventory, leases
lease = leases.acquire(2, leases.Holder("app", "colleague", "/home/alice/other"), inventory.read())
print("HELD", flush=True)
time.sleep(float(sys.argv[1]))
"""


def test_run_fails_fast_naming_holders_or_waits_for_a_free_gpu(proj: Path, gpus: FakeGpus) -> None:
    """`workbench run` of a `gpus = 1` env leases for the run and records the GPU; with
    every (FAKE nvidia-smi) GPU held elsewhere it fails at once naming the holder, and
    with --wait it starts once the holder lets go."""
    nb = _notebook(proj / "notebooks" / "probe.ipynb", "wb-counted", PROBE)
    proc = workbench("run", str(nb), "--json", cwd=proj)
    assert proc.returncode == 0, proc.stderr
    record = json_data(proc.stdout)
    assert record["gpus"] == ["1"]
    output = nbformat.read(proj / record["output"], as_version=4)
    assert output.cells[-1].outputs[0]["text"] == "DEVICES 1\n"

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, "300"], stdout=subprocess.PIPE, text=True
    )
    waiting = None
    try:
        assert holder.stdout.readline().strip() == "HELD"
        began = time.monotonic()
        refused = workbench("run", str(nb), cwd=proj)
        assert refused.returncode == 1 and time.monotonic() - began < 30
        assert "no free GPU for run " in refused.stderr
        assert "held by app colleague (" in refused.stderr and "project other" in refused.stderr
        assert "Traceback" not in refused.stderr
        waiting = subprocess.Popen(
            [sys.executable, "-m", "workbench", "run", str(nb), "--wait", "120", "--json"],
            cwd=proj,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in waiting.stderr:
            if line.startswith("waiting for a GPU: no free GPU for run"):
                break
        holder.kill()  # the colleague lets go: the waiting run starts
        out, _ = waiting.communicate(timeout=120)
        assert waiting.returncode == 0
        assert json_data(out)["status"] == "ok"
    finally:
        for proc in (holder, waiting):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_workbench_gpus_shows_processes_without_a_lease(proj: Path, gpus: FakeGpus) -> None:
    """A process the FAKE nvidia-smi reports on GPU 0 that no lease holder started is shown
    as such; the kernel holding GPU 1 (and a child process of it) are not."""
    from jupyter_client.manager import start_new_kernel

    stray = subprocess.Popen(["sleep", "60"])
    km, kc = start_new_kernel(kernel_name="wb-counted", startup_timeout=120)
    child = subprocess.Popen(["sleep", "60"])  # stands in for a kernel's worker below
    try:
        kernel_pid = km.provisioner.pid
        gpus.set(TWO_GPUS, apps=[(stray.pid, "GPU-aaaa", 900), (kernel_pid, "GPU-bbbb", 700)])
        data = json_data(workbench("gpus", "--json", cwd=proj).stdout)
        zero, one = data["gpus"]
        assert [u["pid"] for u in zero["unleased"]] == [stray.pid]
        assert zero["unleased"][0]["command"] == "sleep 60"
        assert one["unleased"] == [] and one["holders"][0]["pid"] == kernel_pid
        human = workbench("gpus", cwd=proj)
        assert f"no lease: pid {stray.pid}" in human.stdout
        assert "kernel wb-counted (" in human.stdout
    finally:
        for proc in (stray, child):
            proc.kill()
            proc.wait()
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _lab_api(url: str, path: str, method: str = "GET", body: dict | None = None) -> object:
    base, token = url.split("/lab?token=")
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        text = reply.read()
    return json.loads(text) if text else None


def test_lab_kernels_get_distinct_leases_show_idle_time_and_cull_idle_frees_them(
    proj: Path, gpus: FakeGpus
) -> None:
    """A real JupyterLab (`workbench lab --detach --cull-idle 6s`) starts two kernels of the
    `gpus = 1` env over its REST API: distinct (FAKE nvidia-smi) GPUs, holders named with
    the kernel and idle time; after 6 s idle Lab culls both and their GPUs are free."""
    proc = workbench("lab", "--detach", "--cull-idle", "6s", "--json", cwd=proj)
    assert proc.returncode == 0, proc.stderr
    url = json_data(proc.stdout)["url"]
    try:
        ids = [
            _lab_api(url, "/api/kernels", "POST", {"name": "wb-counted"})["id"] for _ in range(2)
        ]
        held = gpus.held()
        assert sorted(h[0]["kernel_id"] for h in held.values()) == sorted(ids)
        assert all(h[0]["idle_s"] is not None for h in held.values()), held
        deadline = time.monotonic() + 60
        while any(gpus.held().values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(gpus.held().values()), "culled kernels kept their GPUs"
        assert _lab_api(url, "/api/kernels") == []
    finally:
        workbench("down", "lab", cwd=proj)


def test_lab_refuses_a_bad_cull_duration(proj: Path) -> None:
    proc = workbench("lab", "--cull-idle", "soon", cwd=proj)
    assert proc.returncode == 2
    assert "--cull-idle 'soon': expected a duration such as 90s, 30m or 2h" in proc.stderr


def test_manifest_gpu_count_and_pins(tmp_path: Path) -> None:
    from workbench import project as projects
    from workbench.errors import WorkbenchError

    write_env(tmp_path, "a", TINY)
    write_env(tmp_path, "b", TINY)
    (tmp_path / "workbench.toml").write_text(
        textwrap.dedent(
            """
            [envs.a]
            gpus = 2
            [envs.b]
            gpus = [0, 3]
            """
        )
    )
    loaded = projects.load(tmp_path)
    assert (loaded.envs["a"].gpus, loaded.envs["a"].gpu_count) == (None, 2)
    assert (loaded.envs["b"].gpus, loaded.envs["b"].gpu_count) == (("0", "3"), None)
    assert loaded.envs["a"].gpu_request == ("0", "1") and loaded.envs["b"].gpu_request == ("0", "3")
    (tmp_path / "workbench.toml").write_text("[envs.a]\ngpus = 0\n")
    with pytest.raises(WorkbenchError, match="gpus = 0: a count of GPUs is at least 1"):
        projects.load(tmp_path)


def test_app_lease_lives_with_its_supervisor(gradio_project: Path, gpus: FakeGpus) -> None:
    """`workbench up` of an app whose env asks for one GPU (FAKE nvidia-smi): the lease is
    held by the app's supervisor (it outlives restarts), the app sees the GPU, `down`
    frees it; with every GPU held elsewhere `up` fails at once naming the holder."""
    manifest = gradio_project / "workbench.toml"
    saved = manifest.read_text()
    manifest.write_text(saved + "[envs.ui]\ngpus = 1\n")
    try:
        up = workbench("up", "echo", "--json", cwd=gradio_project)
        assert up.returncode == 0, up.stderr
        echo = next(s for s in json_data(up.stdout) if s["name"] == "echo")
        (holder,) = gpus.held()[1]
        assert (holder["kind"], holder["name"]) == ("app", "echo")
        assert holder["pid"] == echo["supervisor_pid"]
        environ = Path(f"/proc/{echo['pid']}/environ").read_bytes().split(b"\0")
        assert b"CUDA_VISIBLE_DEVICES=1" in environ
        assert workbench("down", "echo", cwd=gradio_project).returncode == 0
        assert not any(gpus.held().values())

        colleague = subprocess.Popen(
            [sys.executable, "-c", HOLD, "300"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert colleague.stdout.readline().strip() == "HELD"
            refused = workbench("up", "echo", cwd=gradio_project)
            assert refused.returncode == 1
            assert "no free GPU for app echo (needs 1, 0 of 2 free)" in refused.stderr
            assert "held by app colleague" in refused.stderr
        finally:
            colleague.kill()
            colleague.wait()
    finally:
        manifest.write_text(saved)
        workbench("down", cwd=gradio_project)
