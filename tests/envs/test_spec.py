"""Parsing conda environment.yml files: the full syntax is accepted, bad input named precisely."""

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from tests.support.cli import write_env
from tests.support.paths import SPECS
from workbench.envs import spec as specs
from workbench.errors import WorkbenchError

FULL = """
name: full
channels:
  - pytorch
  - nvidia
  - conda-forge
prefix: /opt/conda/envs/full
dependencies:
  - python=3.11
  - pytorch::pytorch=2.13.0=*cpu*
  - conda-forge::numpy>=1.26,<3
  - scipy==1.14.1
  - cudatoolkit=11.8
  - pytorch-cuda=12.1
  - _openmp_mutex
  - pip
  - pip:
      - --extra-index-url https://example.invalid/simple
      - --find-links ./wheels
      - -r requirements-extra.txt
      - -e ./localpkg
      - requests[socks]>=2.31; python_version >= "3.8"
variables:
  HF_HOME: /data/hf
  OMP_NUM_THREADS: 2
"""


def test_full_conda_syntax_parses(tmp_path: Path) -> None:
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "requirements-extra.txt").write_text("idna\n")
    spec = specs.load(write_env(tmp_path, "full", FULL))
    names = [d.name for d in spec.conda]
    assert names == [
        "python",
        "pytorch",
        "numpy",
        "scipy",
        "cudatoolkit",
        "pytorch-cuda",
        "_openmp_mutex",
        "pip",
    ]
    torch = spec.conda[1]
    assert (torch.channel, torch.version, torch.build) == ("pytorch", "==2.13.0", "*cpu*")
    kinds = [(line.kind, line.value) for line in spec.pip]
    assert kinds[0] == ("--extra-index-url", "https://example.invalid/simple")
    assert kinds[1] == ("--find-links", "./wheels")
    assert kinds[2] == ("--requirement", str(tmp_path / "envs" / "requirements-extra.txt"))
    assert kinds[3] == ("--editable", "./localpkg")  # as written: uv runs in the spec's folder
    assert kinds[4][0] == "requirement"
    assert spec.variables == {"HF_HOME": "/data/hf", "OMP_NUM_THREADS": "2"}
    assert any("'prefix' ignored" in w for w in spec.warnings)


def test_hash_follows_content_and_included_files(tmp_path: Path) -> None:
    (tmp_path / "envs").mkdir()
    extra = tmp_path / "envs" / "requirements-extra.txt"
    extra.write_text("idna\n")
    path = write_env(tmp_path, "full", FULL)
    first = specs.load(path).content_hash()
    assert specs.load(path).content_hash() == first
    extra.write_text("idna==3.7\n")
    assert specs.load(path).content_hash() != first


def test_unknown_key_warns_like_conda(tmp_path: Path) -> None:
    spec = specs.load(write_env(tmp_path, "a", "name: a\nfoo: 1\ndependencies: [python=3.11]\n"))
    assert any("unknown key 'foo'" in w and "a.yml:2" in w for w in spec.warnings)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("name: a\ndependencies:\n  - python=3.11\n   - bad: [\n", "a.yml:4: invalid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("dependencies: numpy\n", "dependencies must be a list, not str"),
        ("dependencies:\n  - pip:\n    - -r missing.txt\n", "file"),
        (
            "dependencies:\n  - pip:\n    - --only-binary=:all:\n",
            "a.yml:3: YAML reads pip line '--only-binary=:all:' as a mapping",
        ),
        ("dependencies:\n  - conda: [x]\n", "only a 'pip:' list is allowed"),
        ("dependencies: []\nvariables: [1, 2]\n", "variables must map names"),
    ],
)
def test_bad_specs_give_one_line_naming_file_and_line(
    tmp_path: Path, body: str, expected: str
) -> None:
    with pytest.raises(WorkbenchError) as err:
        specs.load(write_env(tmp_path, "a", body))
    assert expected in err.value.message
    assert "\n" not in err.value.message
    assert err.value.exit_code == 2


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="no such spec file"):
        specs.load(tmp_path / "nope.yml")


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("-r ../../outside.txt", "outside.txt is outside the project"),
        ("-r /etc/passwd", "/etc/passwd is outside the project"),
        ("-c /etc/passwd", "/etc/passwd is outside the project"),
        ("-e ../..", "is outside the project"),
        ("-e ~/.ssh", "'~' is not expanded"),
        ("--find-links /opt/wheels", "/opt/wheels is outside the project"),
        ("-i ../../simple", "simple is outside the project"),
        ("-f file:///etc/shadow", "/etc/shadow is outside the project"),
        ("--index-url file:///%2e%2e/etc", "/etc is outside the project"),
        ("-e git+file:///srv/repo#egg=x", "/srv/repo is outside the project"),
        ("pkg @ file:///etc/passwd", "/etc/passwd is outside the project"),
        ("./../../..", "is outside the project"),
        ("~/pkg", "'~' is not expanded"),
    ],
)
def test_local_paths_outside_the_project_are_refused(tmp_path: Path, line: str, shown: str) -> None:
    """A committed spec may not pull files from elsewhere on the machine (found by fuzzing:
    `-r /etc/passwd` was read and hashed, `-f file:///…` passed to uv)."""
    (tmp_path / "outside.txt").write_text("six\n")
    project = tmp_path / "proj"
    path = write_env(project, "a", f"dependencies:\n  - pip:\n    - {line!r}\n")
    with pytest.raises(WorkbenchError) as err:
        specs.load(path)
    assert err.value.message.startswith(f"{path}:3: '{line}': ")
    assert shown in err.value.message and "pip.conf" in err.value.message


def test_local_paths_inside_the_project_are_kept(tmp_path: Path) -> None:
    """The same forms inside the project (also via workbench.toml above envs/) still work."""
    (tmp_path / "workbench.toml").write_text("")
    (tmp_path / "req.txt").write_text("six\n")
    (tmp_path / "wheels").mkdir()
    lines = ["-r ../req.txt", "-e ..", "-f ../wheels", f"-f file://{tmp_path}/wheels", "./pkg"]
    body = "dependencies:\n  - pip:\n" + "".join(f"    - {line!r}\n" for line in lines)
    spec = specs.load(write_env(tmp_path, "a", body))
    assert [p.kind for p in spec.pip] == [
        "--requirement",
        "--editable",
        "--find-links",
        "--find-links",
        "path",
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('dependencies:\n  - pip:\n    - "-r a\\0b"\n', "a.yml:3: pip line '-r a\\x00b' contains"),
        ('dependencies:\n  - pip:\n    - "numpy\\n-r x"\n', "control character U+000A"),
        ('dependencies:\n  - "\\e[31mred"\n', "a.yml:2: dependency '\\x1b[31mred' contains"),
        ("dependencies:\n  - pip:\n    - null\n", "a.yml:3: pip line None is not a package spec"),
        ("dependencies:\n  - null\n", "dependency None is not a package spec"),
        ("name: x\n\0", "a.yml:2: invalid YAML: unacceptable character #x0000"),
        ("a: &a [*a]\n", "values once YAML aliases (*name) are expanded"),
        ("variables: {'A=B': 1}\n", "variable 'A=B' cannot be set"),
    ],
)
def test_hostile_specs_give_one_line(tmp_path: Path, body: str, expected: str) -> None:
    """Found by fuzzing: NUL raised ValueError, a null pip entry became the package "None",
    newlines split one requirement into two, recursive aliases never finished hashing."""
    with pytest.raises(WorkbenchError) as err:
        specs.load(write_env(tmp_path, "a", body))
    assert expected in err.value.message
    assert err.value.message.isprintable()


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    body = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
    )
    with pytest.raises(WorkbenchError, match="YAML aliases"):
        specs.load(write_env(tmp_path, "a", body))


def test_huge_binary_and_fifo_specs_are_refused(tmp_path: Path) -> None:
    """Size, encoding and file type are checked before parsing; a FIFO would block."""
    envs = tmp_path / "envs"
    envs.mkdir()
    (envs / "big.yml").write_bytes(b"# x\n" * (specs.MAX_SPEC_BYTES // 4 + 1))
    (envs / "bin.yml").write_bytes(b"name: x\n\xff\xfe")
    os.mkfifo(envs / "fifo.yml")
    for name, message in [
        ("big", "a spec file over 256 KiB is refused"),
        ("bin", "bin.yml:2: not UTF-8 (byte 0xff)"),
        ("fifo", "not a regular file"),
    ]:
        with pytest.raises(WorkbenchError, match=re.escape(message)):
            specs.load(envs / f"{name}.yml")


def test_keys_of_mixed_types_still_hash(tmp_path: Path) -> None:
    """conda ignores unknown keys such as `1:`; sorting them beside str keys crashed hashing.
    Specs with str keys only hash as before, so committed locks stay fresh."""
    spec = specs.load(write_env(tmp_path, "a", "1: x\nnull: y\ndependencies: [python=3.11]\n"))
    assert len(spec.content_hash()) == 64
    plain = specs.load(write_env(tmp_path, "b", "dependencies: [python=3.11]\n"))
    expected = json.dumps(plain.raw, sort_keys=True, default=str)
    assert plain.content_hash() == hashlib.sha256(expected.encode()).hexdigest()


EVERY_FORM = r"""
dependencies:
  - python=3.11
  - pip:
    - git+https://github.com/NVIDIA/dllogger.git
    - git+ssh://git@github.com/example-lab/private-envs.git@main#egg=private-envs
    - git+file://{root}/vendor/gitpkg@v1#egg=gitpkg&subdirectory=python
    - https://example.org/archive/refs/heads/master.zip
    - https://example.org/wheels/pkg-1.0-py3-none-any.whl
    - frontend @ https://example.org/frontend/archive/v0.2.tar.gz
    - submodules/simple-knn
    - ./third_party/tiny-cuda-nn/bindings/torch
    - wheelhouse/mypkg-0.1.0-py3-none-any.whl
    - wheelhouse/helper-2.0.tar.gz
    - -e .
    - -e ".[docs,test]"
    - -e git+https://github.com/example-lab/cocoapi.git@8c9bcc3#egg=pycocotools
    - -r requirements/base.txt
    - -c requirements/constraints.txt
    - --pre
    - -f ./wheelhouse
    - --index-url https://pypi.internal.example.com/simple
    - --extra-index-url https://download.pytorch.org/whl/cu118
    - --trusted-host pypi.internal.example.com
    - --no-binary praat-parselmouth
    - "--only-binary=:all:"
    - "requests==2.31.0 \\"
    - "    --hash=sha256:58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f"
    - six  # an inline comment
    - "# a comment line"
    - torch==2.0.1+cu118; sys_platform == "linux"
"""


def test_every_requirements_file_form_is_read(tmp_path: Path) -> None:
    """What pip's requirements files take is read, never refused (a bare VCS URL, a
    vendored folder and a continuation line were refused as 'not a valid pip requirement')."""
    (tmp_path / "workbench.toml").write_text("")
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "base.txt").write_text("pydantic>=2\n-r more.txt\n")
    (tmp_path / "requirements" / "more.txt").write_text("uvicorn[standard] \\\n  >=0.20\n")
    (tmp_path / "requirements" / "constraints.txt").write_text("pydantic<3\n")
    path = tmp_path / "environment.yml"
    path.write_text(EVERY_FORM.replace("{root}", str(tmp_path)))
    spec = specs.load(path)
    got = [(line.kind, line.value) for line in spec.pip]
    assert got == [
        ("url", "git+https://github.com/NVIDIA/dllogger.git"),
        ("url", "git+ssh://git@github.com/example-lab/private-envs.git@main#egg=private-envs"),
        ("url", f"git+file://{tmp_path}/vendor/gitpkg@v1#egg=gitpkg&subdirectory=python"),
        ("url", "https://example.org/archive/refs/heads/master.zip"),
        ("url", "https://example.org/wheels/pkg-1.0-py3-none-any.whl"),
        ("requirement", "frontend @ https://example.org/frontend/archive/v0.2.tar.gz"),
        ("path", "submodules/simple-knn"),
        ("path", "./third_party/tiny-cuda-nn/bindings/torch"),
        ("path", "wheelhouse/mypkg-0.1.0-py3-none-any.whl"),
        ("path", "wheelhouse/helper-2.0.tar.gz"),
        ("--editable", "."),
        ("--editable", ".[docs,test]"),
        ("--editable", "git+https://github.com/example-lab/cocoapi.git@8c9bcc3#egg=pycocotools"),
        ("--requirement", str(tmp_path / "requirements" / "base.txt")),
        ("--constraint", str(tmp_path / "requirements" / "constraints.txt")),
        ("--pre", ""),
        ("--find-links", "./wheelhouse"),
        ("--index-url", "https://pypi.internal.example.com/simple"),
        ("--extra-index-url", "https://download.pytorch.org/whl/cu118"),
        ("--trusted-host", "pypi.internal.example.com"),
        ("--no-binary", "praat-parselmouth"),
        ("--only-binary", ":all:"),
        ("requirement", "requests==2.31.0"),
        ("requirement", "six"),
        ("requirement", 'torch==2.0.1+cu118; sys_platform == "linux"'),
    ]
    hashed = next(line for line in spec.pip if line.value == "requests==2.31.0")
    assert hashed.options == (
        "--hash=sha256:58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f",
    )
    assert hashed.line == 27  # a continued line is numbered by its first line
    # -r files are read too (for their paths and the hash), nested ones included.
    assert [p.name for p in spec.included_files] == ["base.txt", "more.txt", "constraints.txt"]
    assert [(line.kind, line.value, line.source.name) for line in spec.included] == [
        ("requirement", "uvicorn[standard] >=0.20", "more.txt"),
        ("requirement", "pydantic>=2", "base.txt"),
        ("--requirement", str(tmp_path / "requirements" / "more.txt"), "base.txt"),
        ("requirement", "pydantic<3", "constraints.txt"),
    ]
    assert spec.warnings == ()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("'requests >>= 2'", "not a requirement pip knows"),
        ("--frobnicate x", "unknown option '--frobnicate'"),
        ("--no-index extra", "--no-index takes no value"),
        ("'six --no-deps'", "'--no-deps' is not an option of a requirement line"),
    ],
)
def test_lines_pip_would_refuse_are_kept_with_the_reason(
    tmp_path: Path, line: str, reason: str
) -> None:
    """Parsing never refuses a pip line: conda hands the section to pip unchanged, so pip
    decides (a warning says it will likely refuse it); the uv backend refuses it at plan."""
    spec = specs.load(write_env(tmp_path, "a", f"dependencies:\n  - pip:\n    - {line}\n"))
    (pip_line,) = spec.pip
    assert pip_line.kind == "invalid" and reason in pip_line.value
    assert any(w.startswith(f"{spec.path}:3: pip will likely refuse") for w in spec.warnings)


def test_match_specs_rattler_cannot_read_go_to_conda(tmp_path: Path) -> None:
    spec = specs.load(write_env(tmp_path, "a", "dependencies:\n  - numpy\n  - 'numpy >=>= 1'\n"))
    bad = spec.conda[1]
    assert bad.name == "numpy" and bad.problem
    assert any("a.yml:3: 'numpy >=>= 1' is not a match spec" in w for w in spec.warnings)


def test_include_loops_and_outside_paths_in_included_files(tmp_path: Path) -> None:
    (tmp_path / "workbench.toml").write_text("")
    envs = tmp_path / "envs"
    envs.mkdir()
    (envs / "loop.txt").write_text("-r loop.txt\n")
    with pytest.raises(WorkbenchError, match=r"loop.txt:1: -r/-c files nest more than 16"):
        specs.load(write_env(tmp_path, "a", "dependencies:\n  - pip:\n    - -r loop.txt\n"))
    (envs / "sneaky.txt").write_text("six\n-e /etc\n")
    with pytest.raises(WorkbenchError) as err:
        specs.load(write_env(tmp_path, "b", "dependencies:\n  - pip:\n    - -r sneaky.txt\n"))
    assert err.value.message.startswith(f"{envs / 'sneaky.txt'}:2: '-e /etc': /etc is outside")


def test_a_requirements_file_is_a_pip_only_env(tmp_path: Path) -> None:
    (tmp_path / "workbench.toml").write_text("")
    path = tmp_path / "requirements-dev.txt"
    path.write_text("-r requirements.txt\npytest>=8  # tests\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    spec = specs.load(path, "dev")
    assert spec.requirements_file and spec.env == "dev" and spec.conda == ()
    assert [line.kind for line in spec.pip] == ["--requirement", "requirement"]
    before = spec.content_hash()
    (tmp_path / "requirements.txt").write_text("numpy<2\n")
    assert specs.load(path, "dev").content_hash() != before


@pytest.mark.parametrize(
    ("spec_file", "platform", "evidence"),
    [
        ("09_win64_export.yml", "Windows", "prefix C:\\Users\\ana\\miniconda3\\envs\\thesis"),
        ("10_osx_arm_export.yml", "macOS", "macOS-only packages appnope, libcxx"),
    ],
)
def test_exports_from_another_platform_are_named(
    spec_file: str, platform: str, evidence: str
) -> None:
    spec = specs.load(SPECS / spec_file)
    assert spec.exported_on == platform
    (note,) = [w for w in spec.warnings if "conda env export" in w]
    assert f"made on {platform} (" in note and evidence in note
    assert "exact build strings" in note and "workbench env import NAME --from" in note


def test_a_linux_export_is_not_foreign() -> None:
    spec = specs.load(SPECS / "11_linux_full_export.yml")
    assert spec.exported_on is None
    assert not any("conda env export" in w for w in spec.warnings)
