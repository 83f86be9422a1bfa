"""The project's own notebooks, smoke-run in their real kernels as `workbench test` runs them,
and the stored outputs of hello_env.ipynb checked with nbval."""

import re

import pytest

from tests.support.cli import workbench
from tests.support.paths import REPO

pytestmark = pytest.mark.slow


def test_shipped_notebooks_pass_workbench_test_and_nbval(demo_envs: None, tmp_path) -> None:
    junit = tmp_path / "notebooks.xml"
    proc = workbench("test", "-n", "2", "--nbval", "--junit", str(junit), cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed, 0 failed" in proc.stderr
    for name in (
        "train_tiny_gpt",
        "eval_generation",
        "semantic_search",
        "hello_env",
        "train_digits",
    ):
        assert re.search(rf"✓ notebooks/{name}\.ipynb", proc.stderr)
    assert junit.read_text().count("<testcase") == 5
