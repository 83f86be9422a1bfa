"""bench/gpu_check.sh, the check for a real GPU machine, run here where there is none:
nvidia-smi is FAKED (two GPUs) and GPU_CHECK_DEVICE=cpu puts torch on the CPU, so what
this proves is the orchestration (env, two kernels on distinct leases, `workbench gpus`
naming them, generation, leases freed), not CUDA. It has never run on a real GPU here."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import FAKES, REPO

# torch and transformers as the textgen env pins them: the local CPU wheel, warm in uv's
# cache after the demo envs (the check's own spec would fetch a CUDA torch).
CPU_SPEC = """dependencies:
  - python=3.11
  - pytorch::pytorch=2.13.0
  - transformers>=5,<6
"""


def _check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_without_nvidia_smi_it_says_so() -> None:
    proc = _check({"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "no GPU here: nvidia-smi is not on PATH" in proc.stderr


@pytest.mark.slow
def test_every_step_passes_with_fake_nvidia_smi_on_cpu(tmp_path: Path) -> None:
    (tmp_path / "gpus.csv").write_text(
        "0, GPU-a, Fake H200, 143771, 500, 0\n1, GPU-b, Fake H200, 143771, 10, 0\n"
    )
    spec = tmp_path / "cpu.yml"
    spec.write_text(CPU_SPEC)
    proc = _check(
        {
            "PATH": f"{FAKES / 'gpu'}{os.pathsep}{os.environ['PATH']}",
            "FAKE_NVIDIA_SMI_DIR": str(tmp_path),
            "WORKBENCH_LEASE_DIR": str(tmp_path / "leases"),
            "GPU_CHECK_DEVICE": "cpu",
            "GPU_CHECK_SPEC": str(spec),
        }
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "PASS  inventory: 2 GPU(s)" in out
    assert "PASS  kernel 1: CUDA_VISIBLE_DEVICES=1" in out  # most free memory first
    assert "PASS  kernel 2: CUDA_VISIBLE_DEVICES=0 (kernel 1 has 1)" in out
    assert "PASS  workbench gpus names the holders: GPU 0: kernel wb-cuda" in out
    assert "PASS  generation on cpu: 128 tokens" in out
    assert "PASS  leases freed at shutdown (0 left)" in out
    assert "FAIL" not in out
