"""The pip part of a conda env (workbench/envs/backends/conda_pip.py): which distributions
are pip's, and the line each is locked as. The real round trip runs in
tests/envs/test_conda_real.py against real conda."""

import json
from pathlib import Path

import pytest

from workbench.envs.backends import conda_pip
from workbench.envs.backends.conda_pip import PipDist
from workbench.envs.spec import load as load_spec

SITE = "lib/python3.11/site-packages"


def test_pip_owns_what_no_conda_package_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "env"
    (prefix / "conda-meta").mkdir(parents=True)
    record = {"name": "six", "files": [f"{SITE}/six.py", f"{SITE}/six-1.17.0.dist-info/RECORD"]}
    (prefix / "conda-meta" / "six-1.17.0-py_0.json").write_text(json.dumps(record))
    (prefix / "conda-meta" / "broken.json").write_text("{not json")
    user_site = tmp_path / "home/.local" / SITE
    dists = [
        (str(prefix / SITE / "six-1.17.0.dist-info"), PipDist("six", "1.17.0", None)),
        (str(prefix / SITE / "idna-3.10.dist-info"), PipDist("idna", "3.10", None)),
        (str(user_site / "rich-13.0.dist-info"), PipDist("rich", "13.0", None)),
    ]
    monkeypatch.setattr(conda_pip, "_pip_dists", lambda python: dists)
    assert conda_pip.conda_owned(prefix) == {f"{SITE}/six-1.17.0.dist-info"}
    assert conda_pip.installed(prefix / "bin/python", prefix) == [dists[1][1]]


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    (tmp_path / "workbench.toml").write_text('[project]\nname = "p"\n')
    (tmp_path / "envs").mkdir()
    return tmp_path / "envs"


@pytest.mark.parametrize(
    ("direct_url", "line"),
    [
        (
            {"url": "https://github.com/o/r", "vcs_info": {"vcs": "git", "commit_id": "abc"}},
            "x @ git+https://github.com/o/r@abc",
        ),
        (
            {
                "url": "https://github.com/o/r",
                "vcs_info": {"vcs": "git", "commit_id": "abc"},
                "subdirectory": "py",
            },
            "x @ git+https://github.com/o/r@abc#subdirectory=py",
        ),
        ({"url": "file://{root}/src", "dir_info": {"editable": True}}, "-e ../src"),
        ({"url": "file://{root}/envs/pkg", "dir_info": {}}, "./pkg"),
        (
            {"url": "file:///elsewhere/src", "dir_info": {"editable": True}},
            "-e file:///elsewhere/src",
        ),
        (
            {"url": "file://{root}/dist/x-1.whl", "archive_info": {"hash": "sha256=ff"}},
            "../dist/x-1.whl --hash=sha256:ff",
        ),
        (
            {"url": "https://h/x-1.whl", "archive_info": {"hashes": {"sha256": "ee"}}},
            "x @ https://h/x-1.whl --hash=sha256:ee",
        ),
    ],
)
def test_direct_url_installs_are_locked_as_pip_reinstalls_them(
    spec_dir: Path, direct_url: dict, line: str
) -> None:
    root = spec_dir.parent
    info = {k: v.format(root=root) if isinstance(v, str) else v for k, v in direct_url.items()}
    assert conda_pip._direct_line(PipDist("x", "1", info), spec_dir) == line


def test_index_options_come_from_the_spec_and_its_requirement_files(spec_dir: Path) -> None:
    (spec_dir / "reqs").mkdir()
    (spec_dir / "reqs/base.txt").write_text(
        "-f ../wheels  # local wheels\n--extra-index-url=https://e/simple\nnumpy==2\n-r more.txt\n"
    )
    (spec_dir / "reqs/more.txt").write_text("--trusted-host e\n")
    (spec_dir / "c.yml").write_text(
        "dependencies:\n  - pip\n  - pip:\n    - -i https://i/simple\n    - -r reqs/base.txt\n"
        "    - torch==2.3\n"
    )
    spec = load_spec(spec_dir / "c.yml")
    assert conda_pip.index_options(spec) == [
        "-i https://i/simple",
        "--find-links wheels",
        "--extra-index-url https://e/simple",
        "--trusted-host e",
    ]
