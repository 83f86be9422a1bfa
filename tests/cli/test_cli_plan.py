"""`workbench env plan`, `--help` and usage errors, through the real CLI (nothing is built)."""

from pathlib import Path

from tests.support.cli import json_data, workbench, write_env
from tests.support.paths import SPECS


def test_plan_json_maps_drops_and_keeps_pip_options(project: Path) -> None:
    write_env(
        project,
        "gpu",
        """
        channels: [pytorch, nvidia, conda-forge]
        dependencies:
          - python=3.11
          - pytorch::pytorch=2.13.0=*cuda*
          - pytorch-cuda=12.1
          - cudatoolkit=11.8
          - transformers>=5,<6
          - pip:
              - --extra-index-url https://download.example.invalid/whl
              - -e ./localpkg
              - idna==3.10
        variables:
          HF_HOME: /data/hf
        """,
    )
    proc = workbench("env", "plan", "gpu", "--backend", "uv", "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    plan = json_data(proc.stdout)
    assert {"backend", "python", "packages", "dropped", "pip_options"} <= set(plan)
    assert plan["backend"] == "uv" and plan["python"].startswith("3.11.")
    # name=version=build is an exact version in conda
    assert "torch==2.13.0" in plan["packages"] and "transformers<6,>=5" in plan["packages"]
    assert "-e ./localpkg" in plan["packages"]  # as written: uv runs in the spec's folder
    assert "ipykernel" in plan["packages"]
    assert [d["spec"] for d in plan["dropped"]] == ["pytorch-cuda=12.1", "cudatoolkit=11.8"]
    assert all(d["reason"] for d in plan["dropped"])
    opts = plan["pip_options"]
    assert opts[opts.index("--extra-index-url") + 1] == "https://download.example.invalid/whl"
    assert opts[-2:] == ["--index-strategy", "unsafe-best-match"]
    assert any("build string '*cuda*'" in w for w in plan["warnings"])


def test_plan_takes_a_spec_file_outside_any_project(tmp_path: Path) -> None:
    spec = write_env(tmp_path, "loose", "dependencies: [python=3.11, numpy]\n")
    proc = workbench("env", "plan", str(spec), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json_data(proc.stdout)["packages"] == ["numpy", "ipykernel"]


def test_plan_honours_machine_pip_config(project: Path, tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /srv/wheels\nextra-index-url = file:///srv/simple\n")
    write_env(project, "a", "dependencies: [python=3.11]\n")
    env = {"PIP_CONFIG_FILE": str(conf), "PIP_FIND_LINKS": "", "XDG_CONFIG_DIRS": str(tmp_path)}
    proc = workbench("env", "plan", "a", "--json", cwd=project, env=env)
    opts = json_data(proc.stdout)["pip_options"]
    assert opts[opts.index("--find-links") :][:2] == ["--find-links", "/srv/wheels"]
    assert "file:///srv/simple" in opts


def test_no_matching_interpreter_offline_names_the_nearest_and_the_flag(project: Path) -> None:
    """python=3.8.5 with only 3.8.18 here: uv tries to download 3.8.5 (it cannot: no
    internet but the package index), then one line names the wanted version, the nearest
    local one and the flag; with the flag, 3.8.18 is taken and said so."""
    write_env(project, "old", "dependencies: [python=3.8.5]\n")
    proc = workbench("env", "plan", "old", cwd=project)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "old.yml:1: python=3.8.5: no local interpreter matches and uv could not " in line
    assert "uv python install 3.8.5:" in line  # what uv said, in the same line
    assert "nearest local: 3.8.18; pass --nearest-python to build with 3.8.18" in line

    near = workbench("env", "plan", "old", "--nearest-python", "--json", cwd=project)
    assert near.returncode == 0, near.stderr
    plan = json_data(near.stdout)
    assert plan["python"] == "3.8.18"
    assert any("using Python 3.8.18, the nearest local patch" in w for w in plan["warnings"])


def test_no_download_when_uv_knows_no_such_release(project: Path) -> None:
    write_env(project, "future", "dependencies: [python>=3.99]\n")
    proc = workbench("env", "plan", "future", cwd=project)
    assert proc.returncode == 2
    assert "uv knows no Python release matching >=3.99" in proc.stderr
    assert "install a matching Python" in proc.stderr


def test_unknown_env_suggests_closest(project: Path) -> None:
    write_env(project, "textgen", "dependencies: [python=3.11]\n")
    proc = workbench("env", "create", "textgne", cwd=project)
    assert proc.returncode == 2
    assert "unknown env 'textgne'" in proc.stderr and "did you mean 'textgen'?" in proc.stderr


def test_malformed_yaml_names_file_and_line(project: Path) -> None:
    write_env(project, "bad", "dependencies:\n  - numpy\n  - [unclosed\n")
    proc = workbench("env", "create", "bad", cwd=project)
    assert proc.returncode == 2
    assert "bad.yml:" in proc.stderr and "invalid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_explains_and_usage_errors_exit_2(project: Path) -> None:
    top = workbench("--help", cwd=project)
    assert top.returncode == 0 and "workbench env create " in top.stdout
    create = workbench("env", "create", "--help", cwd=project)
    assert create.returncode == 0 and "--locked" in create.stdout
    assert workbench("env", "frobnicate", cwd=project).returncode == 2
    assert workbench("env", "create", "x", "--all", cwd=project).returncode == 2  # not both


def test_outside_a_project(tmp_path: Path) -> None:
    proc = workbench("env", "list", cwd=tmp_path)
    assert proc.returncode == 2 and "no workbench.toml" in proc.stderr


def test_manifest_error_keeps_brackets(project: Path) -> None:
    (project / "workbench.toml").write_text('[project]\nname = "p"\n[envs.ghost]\n')
    proc = workbench("env", "list", cwd=project)
    assert proc.returncode == 2
    assert "workbench.toml:3: [envs.ghost] spec file" in proc.stderr


def test_control_characters_in_a_spec_stay_on_one_line(project: Path) -> None:
    """A newline or terminal escape from the spec is shown escaped, never acted on."""
    write_env(project, "a", 'dependencies: [python=3.11]\n"x\\ny\\e[2J": 1\n')
    proc = workbench("env", "plan", "a", cwd=project)
    assert proc.returncode == 0
    assert "warning: " in proc.stderr and "unknown key 'x\\ny\\x1b[2J' ignored" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "\x1b" not in proc.stderr


def test_r_packages_are_refused_in_one_line_naming_each(tmp_path: Path) -> None:
    spec = SPECS / "04_r_packages.yml"
    proc = workbench("env", "plan", str(spec), "--backend", "uv", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"{spec}: 6 conda-only package(s) with no PyPI equivalent" in line
    for named in (
        "r-base=4.2 (line 10, R package)",
        "r-ashr =2.2_63 (line 14, R package)",
        "bioconductor-deseq2 (line 15, R package)",
    ):
        assert named in line
    assert "install micromamba or conda" in line and "--drop-conda-only" in line
    assert "PEP 440" not in line


def test_drop_conda_only_builds_without_them_listing_each(tmp_path: Path) -> None:
    spec = SPECS / "06_cuda_compilers.yml"
    refused = workbench("env", "plan", str(spec), "--backend", "uv", cwd=tmp_path)
    assert refused.returncode == 2
    for named in ("cuda=12.1 (line 8, CUDA toolkit)", "c-compiler (line 10, compiler)"):
        assert named in refused.stderr
    proc = workbench(
        "env", "plan", str(spec), "--backend", "uv", "--drop-conda-only", "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    plan = json_data(proc.stdout)
    dropped = {d["spec"]: d for d in plan["dropped"]}
    assert {s for s, d in dropped.items() if d["conda_only"]} == {
        "cuda=12.1",
        "c-compiler",
        "cxx-compiler",
    }
    assert not dropped["cudnn"]["conda_only"] and not dropped["llvm-openmp"]["conda_only"]
    assert {"torch==2.1.0.*", "triton", "cmake>=3.24", "ninja"} <= set(plan["packages"])
    assert not any(p.startswith(("cuda", "c-compiler")) for p in plan["packages"])
    (note,) = [w for w in plan["warnings"] if "--drop-conda-only" in w]
    assert "cuda=12.1 (CUDA toolkit)" in note and "cxx-compiler (compiler)" in note


def test_windows_export_is_named_and_plans_without_its_platform_packages(
    tmp_path: Path,
) -> None:
    spec = SPECS / "09_win64_export.yml"
    proc = workbench(
        "env", "plan", str(spec), "--backend", "uv", "--drop-conda-only", "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    plan = json_data(proc.stdout)
    assert any("made on Windows" in w for w in plan["warnings"])
    assert not {"vc", "ucrt", "vs2015-runtime", "win-inet-pton", "pywin32==306"} & {
        p.split("=")[0] for p in plan["packages"]
    }
    assert "numpy==1.25.2" in plan["packages"] and "matplotlib==3.7.2" in plan["packages"]
    assert plan["python"] == "3.9.18"
    conda = workbench("env", "plan", str(spec), "--backend", "conda", cwd=tmp_path)
    assert conda.returncode == 0 and "made on Windows" in conda.stderr


def test_conda_backend_takes_what_uv_refuses(tmp_path: Path) -> None:
    """The conda family gets the spec unchanged: R packages, compilers, lines pip would
    refuse (a warning says so) and conda's `|` all plan; uv refuses each in one line."""
    write_env(
        tmp_path,
        "mixed",
        """
        dependencies:
          - python=3.11
          - r-base
          - pandas=1.3|1.4
          - pip:
            - 'requests >>= 2'
        """,
    )
    spec = tmp_path / "envs" / "mixed.yml"
    conda = workbench("env", "plan", str(spec), "--backend", "conda", "--json", cwd=tmp_path)
    assert conda.returncode == 0, conda.stderr
    plan = json_data(conda.stdout)
    assert "r-base" in plan["packages"]
    assert any("pip will likely refuse 'requests >>= 2'" in w for w in plan["warnings"])
    uv = workbench("env", "plan", str(spec), "--backend", "uv", "--drop-conda-only", cwd=tmp_path)
    assert uv.returncode == 2
    assert "mixed.yml:4: 'pandas=1.3|1.4'" in uv.stderr and "'|' (or)" in uv.stderr
