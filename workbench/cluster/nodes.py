"""`workbench cluster up|down|status|join`: Ray nodes on this machine, started under our
control and stopped by PID (never `ray stop`, which kills every Ray on the machine).

Each node is one `ray start --block` process in a session of its own; everything Ray
starts for the node (GCS, raylet, dashboard, agents, workers) runs below it, so stopping
the node is SIGTERM to that process, then SIGKILL to whatever of its tree is left. Every
server binds 127.0.0.1 (workbench.cluster.loopback), on ports picked free here, including
the two Ray otherwise fixes (44217, 44227), so clusters of several projects coexist. On a
machine with GPUs each node leases its GPUs like any kernel (workbench gpus shows them);
without GPUs, --gpus-per-node gives nodes GPUs to schedule with, and says so.

.workbench/cluster/cluster.json says what runs; a lost node is noticed after a few missed
health checks (every 0.5 s), much sooner than with Ray's defaults.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench import processes
from workbench.cluster import loopback, require_ray
from workbench.errors import WorkbenchError
from workbench.gpus import inventory, leases
from workbench.gpus.leases import Holder
from workbench.jsonfiles import StateFile
from workbench.project import Project
from workbench.runtime import contract
from workbench.serving import net
from workbench.subprocesses import spawn

HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "0",
}
NODE_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
)
START_TIMEOUT_S = 300.0
STOP_GRACE_S = 20.0


@dataclass
class Node:
    role: str  # "head" or "worker"
    pid: int  # the `ray start --block` process
    cpus: int
    gpus: int
    devices: list[str] | None  # this machine's GPUs leased for it; None: none, or fake ones
    lease: dict | None
    log: str
    node_manager_port: int
    pid_start: int | None = None  # workbench.processes.start_time of pid

    @property
    def alive(self) -> bool:
        return processes.alive(self.pid, self.pid_start)


@dataclass
class ClusterState(StateFile):
    address: str  # host:port of the GCS, what drivers and `cluster join` connect to
    dashboard_port: int | None  # None: the head is on another machine (we joined it)
    temp_dir: str
    host: str
    started: float
    up_seconds: float | None = None
    nodes: list = field(default_factory=list)  # Node as dicts

    def node_list(self) -> list[Node]:
        return [Node(**n) for n in self.nodes]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _node_ports(host: str) -> tuple[list[str], int]:
    args: list[str] = []
    ports = {flag: _free_port(host) for flag in NODE_PORT_FLAGS}
    for flag, port in ports.items():
        args += [flag, str(port)]
    # workers bind ports the kernel picks, not Ray's fixed 10002-19999 range
    args += ["--min-worker-port", "0", "--max-worker-port", "0"]
    return args, ports["--node-manager-port"]


def temp_dir(project: Project) -> Path:
    """Short (Unix socket paths are limited to 107 bytes) and this project's own."""
    digest = hashlib.sha1(str(project.root).encode()).hexdigest()[:8]
    return Path("/tmp") / f"wb-ray-{digest}"


def _environ(host: str) -> dict[str, str]:
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "DASHBOARD_METRIC_PORT": str(_free_port(host)),
        "AUTOSCALER_METRIC_PORT": str(_free_port(host)),
        **HEALTH_CHECKS,
    }
    if loopback.is_loopback(host):
        env[loopback.VARIABLE] = "0"
    return env


def read_state(project: Project) -> ClusterState | None:
    return ClusterState.read(project.cluster_state_path)


def _save(project: Project, state: ClusterState) -> None:
    project.cluster_state_path.parent.mkdir(parents=True, exist_ok=True)
    state.write(project.cluster_state_path)


def _tree(roots: list[int]) -> list[int]:
    """The roots and their living descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
        except ValueError:
            continue
        children.setdefault(processes.parent(pid), []).append(pid)
    found, todo = [], [r for r in roots if processes.alive(r)]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def memory_mb(pids: list[int]) -> int:
    """Proportional set size of the processes (shared pages split among their users)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total // 1024


def dashboard_nodes(port: int) -> list[dict] | None:
    """The nodes the dashboard lists (None while it does not answer)."""
    try:
        url = f"http://127.0.0.1:{port}/api/v0/nodes?limit=1000"
        request = urllib.request.Request(url, headers=_ray_auth_header())
        with urllib.request.urlopen(request, timeout=3) as reply:
            data = json.loads(reply.read())
        return list(data["data"]["result"]["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ray_auth_header() -> dict[str, str]:
    """Ray's token, where Ray would find one (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, else
    ~/.ray/auth_token): Ray turns token auth on when that file exists, and its dashboard then
    answers 401 to a request without it. No token, no header."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
        try:
            token = Path(path).read_text().strip()
        except OSError:
            return {}
    return {"Authorization": f"Bearer {token}"} if token else {}


def _log_tail(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no log)"
    meaningful = [line for line in lines if line and not line.startswith("-")]
    return " | ".join(meaningful[-3:]) or "(empty log)"


def _start_node(
    project: Project,
    role: str,
    index: int,
    ray_args: list[str],
    env: dict[str, str],
    via_loopback: bool,
) -> subprocess.Popen:
    log = project.logs_dir / f"cluster-{role}-{index}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    module = "workbench.cluster.loopback" if via_loopback else "ray.scripts.scripts"
    with open(log, "wb") as out:
        return spawn(
            [sys.executable, "-m", module, "start", "--block", *ray_args],
            what=f"starting the Ray {role}",
            cwd=project.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command; stopped by `cluster down`
        )


def _wait(
    proc: subprocess.Popen, log: Path, ready, what: str, timeout: float = START_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise WorkbenchError(f"{what} exited ({proc.returncode}): {_log_tail(log)}", 1)
        if ready():
            return
        time.sleep(0.3)
    raise WorkbenchError(f"{what} was not up after {timeout:g} s: {_log_tail(log)}", 1)


def _gpus_for_nodes(
    project: Project, count: int, per_node: int | None
) -> tuple[list[leases.Lease | None], int, str | None]:
    """Leases on this machine's GPUs per node, the GPUs each node gets, and a note."""
    found = inventory.read()
    if not found.gpus:
        given = per_node or 0
        note = (
            f"{found.note}: each node schedules {given} GPU(s) that do not exist" if given else None
        )
        return [None] * count, given, note
    if per_node is None:
        free = len(found.gpus) - len(leases.held(leases.live()))
        per_node = free // count
    if per_node == 0:
        return [None] * count, 0, None
    taken: list[leases.Lease | None] = []
    try:
        for index in range(count):
            holder = Holder("cluster", f"node {index}", str(project.root))
            taken.append(leases.acquire(per_node, holder, found))
    except BaseException:
        for lease in taken:
            leases.release(lease)
        raise
    return taken, per_node, None


def up(
    project: Project,
    nodes: int,
    gpus_per_node: int | None,
    cpus_per_node: int | None,
    object_store_mb: int | None,
    on_progress,
) -> tuple[ClusterState, str | None]:
    """Start a head and nodes-1 workers on this machine; returns the state and a note."""
    require_ray()
    current = read_state(project)
    if current is not None and any(n.alive for n in current.node_list()):
        raise WorkbenchError(
            f"a cluster of this project runs at {current.address}; `workbench cluster down` first"
        )
    if nodes < 1:
        raise WorkbenchError(f"--nodes {nodes}: at least 1 (the head)")
    host = "127.0.0.1"
    cpus = cpus_per_node or max(1, (os.cpu_count() or 1) // nodes)
    node_leases, gpus, note = _gpus_for_nodes(project, nodes, gpus_per_node)
    tmp = temp_dir(project)
    env = {**_environ(host), contract.CLUSTER_CACHE.name: str(cache_dir())}
    gcs, dashboard = _free_port(host), _free_port(host)
    began = time.monotonic()
    state = ClusterState(f"{host}:{gcs}", dashboard, str(tmp), host, time.time())
    started: list[subprocess.Popen] = []
    try:
        for index in range(nodes):
            role = "head" if index == 0 else "worker"
            ports, node_manager = _node_ports(host)
            args = [
                "--node-ip-address", host,
                "--num-cpus", str(cpus),
                "--num-gpus", str(gpus),
                "--temp-dir", str(tmp),
                "--disable-usage-stats",
                *ports,
            ]  # fmt: skip
            if object_store_mb:
                args += ["--object-store-memory", str(object_store_mb * 1024 * 1024)]
            if role == "head":
                args += [
                    "--head",
                    "--port", str(gcs),
                    "--dashboard-host", host,
                    "--dashboard-port", str(dashboard),
                    "--ray-client-server-port", str(_free_port(host)),
                ]  # fmt: skip
            else:
                args += ["--address", state.address]
            lease = node_leases[index]
            node_env = dict(env)
            if lease is not None:
                node_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in lease.gpus)
            on_progress(f"starting the {role}" + (f" {index}" if index else ""))
            proc = _start_node(project, role, index, args, node_env, role == "worker")
            started.append(proc)
            log = project.logs_dir / f"cluster-{role}-{index}.log"
            _wait(proc, log, lambda n=index + 1: _alive_nodes(dashboard) >= n, f"the Ray {role}")
            if lease is not None:
                leases.hand_over(lease, proc.pid)
            state.nodes.append(
                asdict(
                    Node(
                        role,
                        proc.pid,
                        cpus,
                        gpus,
                        [str(i) for i in lease.gpus] if lease else None,
                        lease.to_json() if lease else None,
                        str(log),
                        node_manager,
                        processes.start_time(proc.pid),
                    )
                )
            )
            _save(project, state)
    except BaseException:
        _stop_pids([p.pid for p in reversed(started)])
        for lease in node_leases:
            if lease is not None:
                leases.release(lease)
        shutil.rmtree(tmp, ignore_errors=True)
        project.cluster_state_path.unlink(missing_ok=True)
        raise
    state.up_seconds = round(time.monotonic() - began, 1)
    _save(project, state)
    return state, note


def _alive_nodes(dashboard: int) -> int:
    listed = dashboard_nodes(dashboard) or []
    return sum(n.get("state") == "ALIVE" for n in listed)


def join(
    project: Project, head: str, gpus: int | None, cpus: int | None, on_progress
) -> ClusterState:
    """Add a node on this machine to the cluster whose head is at `head` (host:port)."""
    require_ray()
    if head.count(":") != 1 or not head.rsplit(":", 1)[1].isdigit():
        raise WorkbenchError(f"cluster join {head}: expected the head's HOST:PORT")
    host = "127.0.0.1" if loopback.is_loopback(head) else None
    state = read_state(project)
    if state is None or state.address != head or not any(n.alive for n in state.node_list()):
        state = ClusterState(head, None, str(temp_dir(project)), host or "", time.time())
    ports, node_manager = _node_ports(host or "0.0.0.0")
    node_leases, per_node, _ = _gpus_for_nodes(project, 1, gpus)
    args = ["--address", head, "--num-gpus", str(per_node), *ports]
    if host:
        args += ["--node-ip-address", host, "--temp-dir", state.temp_dir]
    if cpus:
        args += ["--num-cpus", str(cpus)]
    env = {
        **_environ(host or ""),
        contract.CLUSTER_CACHE.name: str(cache_dir()),
    }
    lease = node_leases[0]
    if lease is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in lease.gpus)
    index = len(state.nodes)
    on_progress(f"joining {head}")
    proc = _start_node(project, "worker", index, args, env, host is not None)
    log = project.logs_dir / f"cluster-worker-{index}.log"
    try:
        _wait(
            proc, log, lambda: "Ray runtime started" in log.read_text(errors="replace"), "the node"
        )
    except BaseException:
        _stop_pids([proc.pid])
        if lease is not None:
            leases.release(lease)
        raise
    if lease is not None:
        leases.hand_over(lease, proc.pid)
    node = Node(
        "worker",
        proc.pid,
        cpus or 0,
        per_node,
        [str(i) for i in lease.gpus] if lease else None,
        lease.to_json() if lease else None,
        str(log),
        node_manager,
        processes.start_time(proc.pid),
    )
    state.nodes.append(asdict(node))
    _save(project, state)
    return state


def _members(leaders: list[int]) -> set[int]:
    """Everything a node started: its process tree, and whatever of its session (each
    node has one of its own) lost its parent and left the tree."""
    found = set(_tree(leaders))
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.getsid(int(entry.name)) in leaders:
                found.add(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _stop_pids(pids: list[int]) -> None:
    """SIGTERM each `ray start --block` (it stops what it started), then SIGKILL whatever
    of its tree or session is left, until nothing is."""
    for pid in pids:
        if processes.alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(processes.alive(p) for p in _members(pids)):
        time.sleep(0.2)
    for _ in range(5):
        left = [p for p in _members(pids) if processes.alive(p)]
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def down(project: Project) -> list[dict]:
    """Stop this project's nodes (workers first), free their GPUs; returns them."""
    state = read_state(project)
    if state is None:
        return []
    nodes = state.node_list()
    _stop_pids([n.pid for n in sorted(nodes, key=lambda n: n.role == "head")])
    for node in nodes:
        if node.lease:
            lease = leases.Lease.from_json(node.lease)
            if lease is not None:
                leases.release(lease)
    if state.dashboard_port is not None:  # the head was ours: so is its temp dir
        shutil.rmtree(state.temp_dir, ignore_errors=True)
    project.cluster_state_path.unlink(missing_ok=True)
    return [asdict(n) for n in nodes]


def status(project: Project) -> dict:
    """What runs: address, dashboard, nodes (ours and those the dashboard lists), memory."""
    state = read_state(project)
    if state is None:
        raise WorkbenchError("no cluster here: start one with `workbench cluster up`")
    ours = state.node_list()
    listed = dashboard_nodes(state.dashboard_port) if state.dashboard_port else None
    pids = _tree([n.pid for n in ours])
    return {
        "address": state.address,
        "dashboard": dashboard_url(state),
        "up_seconds": state.up_seconds,
        "started": state.started,
        "nodes": [{**asdict(n), "alive": n.alive} for n in ours],
        "cluster_nodes": [
            {
                "node_id": n.get("node_id"),
                "ip": n.get("node_ip"),
                "state": n.get("state"),
                "resources": n.get("resources_total"),
            }
            for n in listed or []
        ],
        "processes": len(pids),
        "memory_mb": memory_mb(pids),
    }


def dashboard_url(state: ClusterState) -> str | None:
    return f"http://127.0.0.1:{state.dashboard_port}/" if state.dashboard_port else None


def running_dashboard(project: Project) -> int | None:
    """The port of this project's Ray dashboard when its head runs (for `tunnel`)."""
    state = read_state(project)
    if state is None or state.dashboard_port is None:
        return None
    head = next((n for n in state.node_list() if n.role == "head"), None)
    if head is None or not head.alive:
        return None
    return state.dashboard_port if not net.port_is_free(state.dashboard_port) else None


def cache_dir() -> Path:
    """Where a node keeps projects (by commit) and their envs: WORKBENCH_CLUSTER_CACHE, else
    under the user's cache folder."""
    given = contract.CLUSTER_CACHE.get()
    if given is not None:
        return given
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "workbench" / "cluster"
