"""workbench.runtime.bytecode: a build links the .pyc of sources compiled before (by any
build, through the store, or by an old build of the same project) and compiles only the
rest; a changed source is never given an old .pyc."""

import os
import shutil
import sys
from pathlib import Path

import pytest

from workbench.runtime import bytecode

TAG = sys.implementation.cache_tag


@pytest.fixture
def uv_cache(tmp_path: Path) -> Path:
    """Files as uv's cache holds them: envs hard-link them."""
    cache = tmp_path / "uv-cache"
    (cache / "pkg").mkdir(parents=True)
    (cache / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (cache / "pkg" / "util.py").write_text("def twice(x):\n    return 2 * x\n")
    return cache


def linked_site(tmp_path: Path, name: str, cache: Path) -> Path:
    site = tmp_path / name / "site-packages"
    (site / "pkg").mkdir(parents=True)
    for source in (cache / "pkg").glob("*.py"):
        os.link(source, site / "pkg" / source.name)
    return site


def compile_site(site: Path, store: Path, *old_sites: Path, capsys) -> str:
    assert bytecode.main(["bytecode", "--store", str(store), str(site), *map(str, old_sites)]) == 0
    return capsys.readouterr().out.strip()


def pyc(site: Path, module: str) -> Path:
    return site / "pkg" / "__pycache__" / f"{module}.{TAG}.pyc"


def test_a_new_project_links_what_any_build_compiled(tmp_path, uv_cache, capsys) -> None:
    store = tmp_path / "store"
    first = linked_site(tmp_path, "proj-a", uv_cache)
    (first / "pkg" / "local.py").write_text("X = 1\n")  # private to this env: not stored
    assert compile_site(first, store, capsys=capsys) == "reused 0 compiled 3"
    stored = sorted(p.name for p in store.rglob("*.pyc"))
    assert len(stored) == 2

    second = linked_site(tmp_path, "proj-b", uv_cache)  # no old build to take from
    assert compile_site(second, store, capsys=capsys) == "reused 2 compiled 0"
    assert pyc(second, "util").stat().st_ino == pyc(first, "util").stat().st_ino


def test_an_old_build_of_the_project_gives_its_pyc_for_copied_sources(
    tmp_path, uv_cache, capsys
) -> None:
    old = tmp_path / "old" / "site-packages"
    shutil.copytree(uv_cache, old)  # copied with their mtimes: not shared, not stored
    store = tmp_path / "store"
    assert compile_site(old, store, capsys=capsys) == "reused 0 compiled 2"
    new = tmp_path / "new" / "site-packages"
    shutil.copytree(uv_cache, new)
    assert compile_site(new, store, old, capsys=capsys) == "reused 2 compiled 0"


def test_a_changed_source_is_compiled_again(tmp_path, uv_cache, capsys) -> None:
    store = tmp_path / "store"
    old = linked_site(tmp_path, "old", uv_cache)
    compile_site(old, store, capsys=capsys)
    new = tmp_path / "new" / "site-packages"
    shutil.copytree(uv_cache, new)
    (new / "pkg" / "util.py").write_text("def twice(x):\n    return x + x  # changed\n")
    os.utime(new / "pkg" / "__init__.py", (1, 1))
    assert compile_site(new, store, old, capsys=capsys) == "reused 0 compiled 2"
    assert pyc(new, "util").stat().st_ino != pyc(old, "util").stat().st_ino


def test_sources_that_do_not_compile_are_skipped(tmp_path, capsys) -> None:
    site = tmp_path / "site-packages"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "broken.py").write_text("def (:\n")
    (site / "pkg" / "fine.py").write_text("X = 1\n")
    assert compile_site(site, tmp_path / "store", capsys=capsys) == "reused 0 compiled 1"
