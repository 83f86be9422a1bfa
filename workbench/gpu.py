"""The GPU truth check: does torch inside the env see the GPUs the manifest pins?"""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(gpus)}
    proc = subprocess.run(
        [*python, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return GpuCheck(ok=False, skipped=False, message=f"cannot import torch in the env: {last}")
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
