"""The GPU truth check: does torch inside the env see the GPUs the manifest pins?

It starts python exactly as the env's kernel does (the kernelspec's launcher and env:
for conda envs activated, so activate.d scripts set what the kernel will see). Without a
GPU on this machine it is skipped, and the result says what was not verified.
"""

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.subprocesses import run

PROBE = (
    "import json, torch; print(json.dumps({'available': torch.cuda.is_available(), "
    "'count': torch.cuda.device_count(), 'torch': torch.__version__, "
    "'cuda': torch.version.cuda}))"
)


@dataclass(frozen=True)
class GpuCheck:
    ok: bool
    skipped: bool
    message: str
    details: dict | None = None


def machine_has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def check(
    python: list[str], gpus: tuple[str, ...], env: Mapping[str, str] | None = None
) -> GpuCheck:
    """Ask torch inside the env: python is the command that starts the env's interpreter
    (as the kernel does), env what the kernelspec adds to the environment."""
    visible = ",".join(gpus)
    if not machine_has_gpu():
        return GpuCheck(
            ok=True,
            skipped=True,
            message=(
                "no GPU here, check skipped: not verified that torch in this env sees "
                f"{len(gpus)} GPU(s) with CUDA_VISIBLE_DEVICES={visible}, nor that its CUDA "
                "build runs on the GPU servers' driver; run `workbench env create --force` "
                "on a GPU server to check"
            ),
        )
    try:
        proc = run(
            [*python, "-c", PROBE],
            what="the GPU check (torch inside the env, started as its kernel starts)",
            env={**(env or {}), "CUDA_VISIBLE_DEVICES": visible},
            timeout=300,
        )
    except WorkbenchError as exc:
        return GpuCheck(ok=False, skipped=False, message=exc.message)
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return GpuCheck(
            ok=False,
            skipped=False,
            message=f"GPU check failed: torch printed no result ({proc.stdout.strip()[-200:]})",
        )
    wanted = len(gpus)
    if not found["available"] or found["count"] != wanted:
        return GpuCheck(
            ok=False,
            skipped=False,
            message=(
                f"GPU check failed: torch {found['torch']} (CUDA {found['cuda']}) sees "
                f"{found['count']} GPU(s) with CUDA_VISIBLE_DEVICES={visible}, "
                f"expected {wanted}"
            ),
            details=found,
        )
    return GpuCheck(
        ok=True,
        skipped=False,
        message=f"GPU check passed: torch {found['torch']} sees {found['count']} GPU(s)",
        details=found,
    )
