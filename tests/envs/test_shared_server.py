"""One server, several people: a second `env create` of the same env waits for the first
(saying who holds it) and then finds the env built; builds share a group-writable package
cache configured in the manifest ([project] cache_dir) or WORKBENCH_CACHE_DIR."""

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

from tests.support.cli import json_data, workbench, write_env
from tests.support.projects import make_package

# A local package whose build takes a few seconds: the first create holds the lock that
# long, whatever the machine's load.
SLOW_SETUP = "import time\nfrom setuptools import setup\ntime.sleep(4)\nsetup()\n"


def test_second_create_waits_for_the_first_then_finds_the_env_built(project: Path) -> None:
    make_package(project / "slowpkg", "slowpkg", "1.0.0", setup_py=SLOW_SETUP)
    write_env(project, "shared", "dependencies:\n  - python=3.11\n  - pip:\n    - ../slowpkg\n")
    command = [sys.executable, "-m", "workbench", "env", "create", "shared", "--json"]
    first = subprocess.Popen(
        command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lock_file = project / ".workbench" / "builds" / ".shared.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        try:
            holder = json.loads(lock_file.read_text())
        except (OSError, ValueError):
            holder = {}
        if holder.get("pid") == first.pid:
            break
        time.sleep(0.05)
    assert first.poll() is None, "the first build ended before the second could start"
    second = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=600)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert json_data(out)[0]["status"] == "built"
    assert json_data(second.stdout)[0]["status"] == "unchanged"
    user = holder["user"]
    assert f"waiting for pid {first.pid} ({user}@" in second.stderr
    assert "which is building env 'shared'" in second.stderr
    assert "being built by another" not in second.stderr  # it used to fail here
    assert len(list((project / ".workbench" / "builds").glob("shared-*"))) == 1


def _group_writable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IWGRP)


def test_cache_dir_is_shared_and_group_writable(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "team-cache"
    (project / "workbench.toml").write_text(
        f'[project]\nname = "testproj"\ncache_dir = "{cache}"\n'
    )
    write_env(project, "a", "dependencies:\n  - python=3.11\n  - six==1.16.0\n")
    proc = workbench("env", "create", "a", cwd=project)
    assert proc.returncode == 0, proc.stderr
    uv_cache = cache / "uv"
    assert (uv_cache / "CACHEDIR.TAG").is_file(), "uv did not use the configured cache"
    assert (cache / "conda-pkgs").is_dir()
    for folder in (cache, uv_cache, cache / "conda-pkgs"):
        mode = folder.stat().st_mode
        assert mode & stat.S_IWGRP and mode & stat.S_ISGID, (folder, oct(mode))
    cached = [p for p in uv_cache.rglob("*") if p.is_file() and "six" in str(p)]
    assert cached and all(_group_writable(p) for p in cached[:20])

    # WORKBENCH_CACHE_DIR wins over the manifest.
    elsewhere = tmp_path / "other-cache"
    write_env(project, "b", "dependencies:\n  - python=3.11\n  - six==1.16.0\n")
    proc = workbench("env", "create", "b", cwd=project, env={"WORKBENCH_CACHE_DIR": str(elsewhere)})
    assert proc.returncode == 0, proc.stderr
    assert (elsewhere / "uv" / "CACHEDIR.TAG").is_file()


def test_bad_cache_dir_is_one_line(project: Path) -> None:
    (project / "workbench.toml").write_text('[project]\nname = "p"\ncache_dir = 3\n')
    proc = workbench("env", "list", cwd=project)
    assert proc.returncode == 2
    assert "[project] cache_dir = 3: expected a folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
