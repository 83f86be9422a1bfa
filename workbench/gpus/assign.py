"""The GPUs a kernel, run, app or sweep slot gets when it starts, as CUDA_VISIBLE_DEVICES.

In order: GPUs already assigned by whoever started us (a Ray task, a sweep slot: the
WORKBENCH_GPUS_ASSIGNED variable) win over everything; else the manifest's pin
(`gpus = [0, 1]`); else a lease on the manifest's count (`gpus = 1`); else nothing is
changed. A count on a machine without GPUs runs on the CPU and says so.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from workbench.gpus import inventory, leases
from workbench.gpus.leases import Holder, Lease
from workbench.runtime import contract

PROVISIONER = "workbench-gpus"  # the entry point of workbench.gpus.provisioner


def provisioner_metadata(pin: tuple[str, ...] | None, count: int | None) -> dict:
    """A kernelspec's metadata.kernel_provisioner for an env that asks for GPUs."""
    config: dict = {"pin": list(pin)} if pin else {"count": count}
    return {"provisioner_name": PROVISIONER, "config": config}


@dataclass
class Assignment:
    devices: list[str] | None  # CUDA_VISIBLE_DEVICES; None: leave the environment alone
    source: str  # "assigned", "pinned", "leased", "cpu" or "none"
    lease: Lease | None = None
    note: str | None = None  # a warning for people (a pin on a held GPU, no GPU here)

    def environ(self) -> dict[str, str]:
        """What the started process's environment gets: nvidia-smi's order, which
        is the order of the indices leased and pinned."""
        if self.devices is None:
            return {}
        return {
            "CUDA_VISIBLE_DEVICES": ",".join(self.devices),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            contract.GPUS_ASSIGNED.name: ",".join(self.devices),
        }

    def release(self) -> None:
        if self.lease is not None:
            leases.release(self.lease)
            self.lease = None


def wait_from(environ: Mapping[str, str]) -> float | None:
    """WORKBENCH_GPU_WAIT as seconds, or None (fail at once) when unset or unreadable."""
    try:
        return contract.GPU_WAIT.get(environ)
    except ValueError:
        return None


def assign(
    pin: tuple[str, ...] | list[str] | None,
    count: int | None,
    holder: Holder,
    environ: Mapping[str, str] = os.environ,
    wait: float | None = None,
    on_wait: Callable[[str], None] = lambda _message: None,
) -> Assignment:
    """The GPUs for holder; raises leases.NoFreeGpu when a count cannot be met."""
    given = contract.GPUS_ASSIGNED.get(environ)
    if given is not None:
        return Assignment(given, "assigned")
    if not pin and not count:
        return Assignment(None, "none")
    found = inventory.read()
    if pin:
        devices = [str(d) for d in pin]
        if not found.gpus:
            return Assignment(devices, "pinned")
        lease, others = leases.pin([int(d) for d in devices], holder, found)
        note = None
        if any(other.exclusive for other in others):
            taken = "; ".join(o.describe() for o in others if o.exclusive)
            note = f"GPU(s) {','.join(devices)} pinned for {holder.name} are leased by {taken}"
        return Assignment(devices, "pinned", lease, note)
    if not found.gpus:
        note = f"{holder.name} asks for {count} GPU(s), but {found.note}; it runs on the CPU"
        return Assignment(None, "cpu", note=note)
    lease = leases.acquire(count, holder, found, wait, on_wait)
    return Assignment([str(i) for i in lease.gpus], "leased", lease)
