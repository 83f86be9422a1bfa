"""The GPU truth check: does torch inside the env see the GPUs the manifest pins?"""

import json
import shutil
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


def check(python: list[str], gpus: tuple[str, ...]) -> GpuCheck:
    """Ask torch inside the env (python: the command that runs its interpreter)."""
    if not machine_has_gpu():
        return GpuCheck(ok=True, skipped=True, message="no GPU here, check skipped")
    try:
        proc = run(
            [*python, "-c", PROBE],
            what="the GPU check (torch inside the env)",
            env={"CUDA_VISIBLE_DEVICES": ",".join(gpus)},
            timeout=300,
        )
    except WorkbenchError as exc:
        return GpuCheck(ok=False, skipped=False, message=exc.message)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    wanted = len(gpus)
    if not found["available"] or found["count"] != wanted:
        return GpuCheck(
            ok=False,
            skipped=False,
            message=(
                f"GPU check failed: torch {found['torch']} (CUDA {found['cuda']}) sees "
                f"{found['count']} GPU(s) with CUDA_VISIBLE_DEVICES={','.join(gpus)}, "
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
