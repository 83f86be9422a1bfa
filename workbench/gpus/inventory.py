"""What GPUs this machine has and which processes use them, from nvidia-smi's two CSV
queries. No nvidia-smi (or one that cannot reach a driver) means no GPUs, and the
inventory says why in one line."""

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

GPU_QUERY = [
    "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu",
    "--format=csv,noheader,nounits",
]
APPS_QUERY = [
    "--query-compute-apps=pid,gpu_uuid,used_memory",
    "--format=csv,noheader,nounits",
]
TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_total: int | None  # MiB; None where nvidia-smi says [N/A]
    memory_used: int | None
    utilization: int | None  # percent

    @property
    def memory_free(self) -> int:
        if self.memory_total is None:
            return 0
        return self.memory_total - (self.memory_used or 0)

    def to_json(self) -> dict:
        return {**asdict(self), "memory_free": self.memory_free}


@dataclass(frozen=True)
class GpuProcess:
    """A process nvidia-smi sees computing on a GPU."""

    pid: int
    gpu_uuid: str
    used_memory: int | None  # MiB


@dataclass
class Inventory:
    gpus: list[Gpu] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)
    note: str | None = None  # why there are no GPUs, said plainly

    def by_index(self, index: int) -> Gpu | None:
        return next((g for g in self.gpus if g.index == index), None)


def _number(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def _rows(text: str, width: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == width:
            rows.append(cells)
    return rows


def _query(smi: str, args: list[str]) -> tuple[str | None, str]:
    """(stdout, "") or (None, why it failed)."""
    try:
        proc = subprocess.run(
            [smi, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-smi failed: {exc}"
    if proc.returncode != 0:
        said = (proc.stdout + proc.stderr).strip().splitlines()
        return None, f"nvidia-smi failed ({said[0] if said else f'exit {proc.returncode}'})"
    return proc.stdout, ""


def read() -> Inventory:
    """The GPUs nvidia-smi reports, and the processes computing on them."""
    smi = shutil.which("nvidia-smi", path=os.environ.get("PATH"))
    if smi is None:
        return Inventory(note="no GPUs here: nvidia-smi is not on PATH")
    text, why = _query(smi, GPU_QUERY)
    if text is None:
        return Inventory(note=f"no GPUs here: {why}")
    gpus = []
    for index, uuid, name, total, used, util in _rows(text, 6):
        if _number(index) is not None:
            gpus.append(Gpu(int(index), uuid, name, _number(total), _number(used), _number(util)))
    if not gpus:
        return Inventory(note="no GPUs here: nvidia-smi lists none")
    processes = []
    text, _ = _query(smi, APPS_QUERY)
    for pid, uuid, memory in _rows(text or "", 3):
        if _number(pid) is not None:
            processes.append(GpuProcess(int(pid), uuid, _number(memory)))
    return Inventory(sorted(gpus, key=lambda g: g.index), processes)
