"""`workbench env plan`, `--help` and usage errors, through the real CLI (nothing is built)."""

from pathlib import Path

from tests.conftest import json_data, workbench, write_env


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
    assert f"-e {project / 'envs' / 'localpkg'}" in plan["packages"]
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


def test_no_matching_interpreter_is_one_line_exit_2(project: Path) -> None:
    write_env(project, "old", "dependencies: [python=3.8.5]\n")
    proc = workbench("env", "plan", "old", cwd=project)
    assert proc.returncode == 2
    assert "old.yml:1: python=3.8.5: no local interpreter matches; found " in proc.stderr
    assert "3.11" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


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
    assert top.returncode == 0 and "env create --all" in top.stdout
    create = workbench("env", "create", "--help", cwd=project)
    assert create.returncode == 0 and "--locked" in create.stdout
    assert workbench("env", "frobnicate", cwd=project).returncode == 2
    assert workbench("env", "create", cwd=project).returncode == 2  # no names, no --all


def test_outside_a_project(tmp_path: Path) -> None:
    proc = workbench("env", "list", cwd=tmp_path)
    assert proc.returncode == 2 and "no workbench.toml" in proc.stderr


def test_manifest_error_keeps_brackets(project: Path) -> None:
    (project / "workbench.toml").write_text('[project]\nname = "p"\n[envs.ghost]\n')
    proc = workbench("env", "list", cwd=project)
    assert proc.returncode == 2
    assert "workbench.toml: [envs.ghost]: spec file" in proc.stderr


def test_control_characters_in_a_spec_stay_on_one_line(project: Path) -> None:
    """A newline or terminal escape from the spec is shown escaped, never acted on."""
    write_env(project, "a", 'dependencies: [python=3.11]\n"x\\ny\\e[2J": 1\n')
    proc = workbench("env", "plan", "a", cwd=project)
    assert proc.returncode == 0
    assert "warning: " in proc.stderr and "unknown key 'x\\ny\\x1b[2J' ignored" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "\x1b" not in proc.stderr
