"""Machine-wide GPU leases: who holds which GPU, seen by every project and user here.

A lease is one JSON file in the lease folder ($WORKBENCH_LEASE_DIR, default
/var/tmp/workbench-gpu-leases: sticky and world-writable like /tmp, so every user's
workbench adds its own leases and reads everybody's, and nobody removes another's). GPUs
are handed out only under an exclusive flock of the folder's .lock file, so two starts,
in any project or by any user, never get the same GPU. A lease whose holder is gone (its
pid dead, or reused by another process: the pid's start time is recorded) is free, and
whoever sees it first removes it where its permissions allow.

Counted leases (`gpus = 1`) are exclusive. Pins (`gpus = [0]`) are recorded as shared: a
pinned kernel is visible in `workbench gpus` and counted starts avoid its GPUs, but a pin
is honoured even where another lease holds the GPU, as pins always were.
"""

import contextlib
import fcntl
import math
import os
import pwd
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workbench import processes
from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.gpus.inventory import Inventory
from workbench.jsonfiles import StateFile
from workbench.runtime import contract

LOCK_NAME = ".lock"
MAX_LEASE_BYTES = 64 * 1024
POLL_S = 1.0


class NoFreeGpu(WorkbenchError):
    """Fewer GPUs are free than asked for; the message names who holds them."""

    def __init__(self, message: str):
        super().__init__(message, CHECK_FAILED)


@dataclass
class Holder:
    """Who asks for GPUs: a kernel, run, app, engine, sweep slot or cluster node."""

    kind: str
    name: str
    project: str | None = None
    pid: int = field(default_factory=os.getpid)
    kernel_id: str | None = None  # kernels: to ask their Jupyter server how idle they are
    launcher_pid: int | None = None  # kernels: the process that started them


@dataclass
class Lease(StateFile):
    id: str
    gpus: list[int]
    uuids: list[str]
    exclusive: bool
    kind: str
    name: str
    project: str | None
    user: str
    host: str
    pid: int
    pid_start: int | None  # the pid's start time (clock ticks after boot)
    since: float
    kernel_id: str | None = None
    launcher_pid: int | None = None

    def describe(self) -> str:
        """`kernel wb-x (alice, project p, pid 12, 2h10m)`, for messages."""
        project = f", project {Path(self.project).name}" if self.project else ""
        held = _duration(time.time() - self.since)
        return f"{self.kind} {self.name} ({self.user}{project}, pid {self.pid}, {held})"

    def to_json(self) -> dict:
        return {**super().to_json(), "alive": alive(self)}


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def alive(lease: Lease) -> bool:
    """Whether the lease's holder still runs (leases of other hosts count as alive)."""
    if lease.host != socket.gethostname():
        return True
    return processes.alive(lease.pid, lease.pid_start)


def folder() -> Path:
    """The lease folder, created shared (1777) on first use and checked to be a real,
    writable folder (not a link someone planted)."""
    path = contract.LEASE_DIR.get()
    try:
        path.mkdir(parents=True)
        path.chmod(0o1777)
    except FileExistsError:
        pass
    except OSError as exc:
        raise WorkbenchError(
            f"cannot create the GPU lease folder {path}: {exc.strerror}; "
            f"set {contract.LEASE_DIR.name} to a folder every user of this machine can write"
        ) from None
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or not os.access(path, os.W_OK | os.X_OK):
        raise WorkbenchError(
            f"the GPU lease folder {path} is not a folder this user can write; ask its owner "
            f"to `chmod 1777 {path}`, or set {contract.LEASE_DIR.name}"
        )
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive across every process and user of the machine (flock needs only read
    access to the lock file, so a file another user created works too)."""
    fd = os.open(path / LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> Lease | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_LEASE_BYTES:
        return None
    return Lease.read(path)


def live() -> list[Lease]:
    """Every lease whose holder runs, oldest first; dead ones are removed."""
    base = folder()
    found = []
    for path in base.glob("*.json"):
        lease = _read(path)
        if lease is None:
            continue
        if alive(lease):
            found.append(lease)
        else:
            with contextlib.suppress(OSError):  # another user's: the sticky bit says no
                path.unlink()
    return sorted(found, key=lambda lease: lease.since)


def held(leases: list[Lease]) -> dict[int, list[Lease]]:
    """GPU index -> the live leases on it."""
    by_gpu: dict[int, list[Lease]] = {}
    for lease in leases:
        for index in lease.gpus:
            by_gpu.setdefault(index, []).append(lease)
    return by_gpu


def _new(holder: Holder, gpus: list[int], inventory: Inventory, exclusive: bool) -> Lease:
    uuids = [g.uuid for i in gpus if (g := inventory.by_index(i))]
    return Lease(
        id=f"{int(time.time())}-{holder.pid}-{secrets.token_hex(3)}",
        gpus=gpus,
        uuids=uuids,
        exclusive=exclusive,
        kind=holder.kind,
        name=holder.name,
        project=holder.project,
        user=user_name(),
        host=socket.gethostname(),
        pid=holder.pid,
        pid_start=processes.start_time(holder.pid),
        since=time.time(),
        kernel_id=holder.kernel_id,
        launcher_pid=holder.launcher_pid,
    )


def _save(base: Path, lease: Lease) -> None:
    lease.write(base / f"{lease.id}.json", mode=0o644)  # everybody may see who holds what


def _shortage(count: int, holder: Holder, inventory: Inventory, taken: dict) -> str:
    total = len(inventory.gpus)
    who = f"{holder.kind} {holder.name}"
    if count > total:
        return f"{who} needs {count} GPU(s) but this machine has {total}"
    holders = "; ".join(
        f"GPU {index} held by " + ", ".join(lease.describe() for lease in leases)
        for index, leases in sorted(taken.items())
    )
    return (
        f"no free GPU for {who} (needs {count}, {total - len(taken)} of {total} free): "
        f"{holders}; wait for one with --wait, or see `workbench gpus list`"
    )


def acquire(
    count: int,
    holder: Holder,
    inventory: Inventory,
    wait: float | None = None,
    on_wait: Callable[[str], None] = lambda _message: None,
) -> Lease:
    """An exclusive lease on count GPUs no lease holds, most free memory first.

    Without wait, raises NoFreeGpu at once naming the holders; with wait (seconds, may
    be math.inf) polls until GPUs are free, calling on_wait(why) once, then raises.
    """
    base = folder()
    deadline = time.monotonic() + (wait or 0)
    told = False
    while True:
        with _locked(base):
            taken = held(live())
            free = [g for g in inventory.gpus if g.index not in taken]
            if len(free) >= count:
                free.sort(key=lambda g: (-g.memory_free, g.index))
                lease = _new(holder, sorted(g.index for g in free[:count]), inventory, True)
                _save(base, lease)
                return lease
        why = _shortage(count, holder, inventory, taken)
        if count > len(inventory.gpus) or wait is None or time.monotonic() >= deadline:
            raise NoFreeGpu(why)
        if not told:
            on_wait(why)
            told = True
        time.sleep(POLL_S if math.isinf(wait) else min(POLL_S, max(deadline - time.monotonic(), 0)))


def pin(indices: list[int], holder: Holder, inventory: Inventory) -> tuple[Lease, list[Lease]]:
    """Record a pin (shared); returns it and the other leases already on those GPUs."""
    base = folder()
    with _locked(base):
        others = [lease for lease in live() if set(lease.gpus) & set(indices)]
        lease = _new(holder, sorted(indices), inventory, False)
        _save(base, lease)
    return lease, others


def hand_over(lease: Lease, pid: int) -> None:
    """The lease now lives as long as pid (a kernel, a supervisor), not its starter."""
    base = folder()
    with _locked(base):
        lease.pid, lease.pid_start = pid, processes.start_time(pid)
        _save(base, lease)


def release(lease: Lease) -> None:
    with contextlib.suppress(OSError):
        (folder() / f"{lease.id}.json").unlink()
