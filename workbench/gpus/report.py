"""What `workbench gpus` shows: each GPU with its memory and utilization, the leases on
it, the processes nvidia-smi sees there that no lease accounts for, and how long each
kernel that holds a GPU has been idle (asked of the Jupyter server that runs it)."""

import datetime
import json
import pwd
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from workbench import processes
from workbench.gpus import inventory, leases
from workbench.gpus.inventory import Gpu, GpuProcess
from workbench.gpus.leases import Lease


@dataclass
class Unleased:
    """A process computing on a GPU that no lease holder started."""

    pid: int
    used_memory: int | None
    user: str | None
    command: str


@dataclass
class GpuRow:
    gpu: Gpu
    holders: list[Lease] = field(default_factory=list)
    unleased: list[Unleased] = field(default_factory=list)


@dataclass
class Report:
    rows: list[GpuRow]
    leases: list[Lease]  # every live lease, also those on GPUs nvidia-smi does not list
    idle: dict[str, float | None]  # lease id -> seconds its kernel has been idle (0: busy)
    note: str | None

    def to_json(self) -> dict:
        def lease(item: Lease) -> dict:
            return {**item.to_json(), "idle_s": self.idle.get(item.id)}

        return {
            "note": self.note,
            "gpus": [
                {
                    **row.gpu.to_json(),
                    "holders": [lease(h) for h in row.holders],
                    "unleased": [u.__dict__ for u in row.unleased],
                }
                for row in self.rows
            ],
            "leases": [lease(item) for item in self.leases],
        }


def _under(pid: int, holders: set[int]) -> bool:
    """Whether pid is a holder or runs below one (a DataLoader worker of a kernel)."""
    seen = 0
    while pid and pid > 1 and seen < 64:
        if pid in holders:
            return True
        pid, seen = processes.parent(pid) or 0, seen + 1
    return False


def _unleased(process: GpuProcess) -> Unleased:
    try:
        user = pwd.getpwuid(Path(f"/proc/{process.pid}").stat().st_uid).pw_name
    except (OSError, KeyError):
        user = None
    try:
        raw = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        command = raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        command = ""
    return Unleased(process.pid, process.used_memory, user, command)


def _servers() -> dict[int, dict]:
    """This user's running Jupyter servers by pid (from their runtime files)."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return {}
    return {info["pid"]: info for info in list_running_servers() if "pid" in info}


def _idle(lease: Lease, servers: dict[int, dict]) -> float | None:
    """Seconds since the kernel's last activity (0 while it is busy), or None where no
    Jupyter server of this user runs it (papermill, nbval, another user's Lab)."""
    server = servers.get(lease.launcher_pid or 0)
    if server is None or not lease.kernel_id:
        return None
    request = urllib.request.Request(
        f"{server['url'].rstrip('/')}/api/kernels/{lease.kernel_id}",
        headers={"Authorization": f"token {server.get('token', '')}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as reply:
            kernel = json.loads(reply.read())
        if kernel.get("execution_state") == "busy":
            return 0.0
        last = datetime.datetime.fromisoformat(kernel["last_activity"].replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return max(0.0, round(time.time() - last.timestamp(), 1))


def build() -> Report:
    found = inventory.read()
    live = leases.live()
    by_gpu = leases.held(live)
    holder_pids = {lease.pid for lease in live}
    rows = []
    for gpu in found.gpus:
        row = GpuRow(gpu, by_gpu.get(gpu.index, []))
        for process in found.processes:
            if process.gpu_uuid == gpu.uuid and not _under(process.pid, holder_pids):
                row.unleased.append(_unleased(process))
        rows.append(row)
    idle: dict[str, float | None] = {}
    kernels = [lease for lease in live if lease.kernel_id]
    if kernels:
        servers = _servers()
        for lease in kernels:
            idle[lease.id] = _idle(lease, servers)
    return Report(rows, live, idle, found.note)
