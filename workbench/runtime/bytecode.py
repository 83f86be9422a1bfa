"""Compile an env's bytecode, reusing the .pyc files of a previous build.

Run by the env's own interpreter:
    python -I -m workbench.runtime.bytecode NEW_SITE_PACKAGES [OLD_SITE_PACKAGES ...]

uv links package files from its cache, so a rebuild's sources, and those of another
env holding the same package, are often the very files (same inode, mtime and size)
an earlier build compiled; their .pyc files are valid as they are and are hard-linked
instead of compiled again. Only sources with no
.pyc are compiled, in parallel. Python still checks every .pyc against its source's
mtime and size on import, so a reused file can never be stale.
"""

from __future__ import annotations

import os
import py_compile
import sys
from concurrent.futures import ProcessPoolExecutor

TAG = sys.implementation.cache_tag


def _pyc_name(source_name: str) -> str:
    return f"{source_name[:-3]}.{TAG}.pyc"


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    same_inode = (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)
    return same_inode or (sa.st_size == sb.st_size and int(sa.st_mtime) == int(sb.st_mtime))


def missing_sources(site: str, old_sites: list[str]) -> tuple[list[str], int]:
    """Sources under site with no .pyc, after linking reusable ones from old_sites."""
    missing: list[str] = []
    reused = 0
    for root, dirs, files in os.walk(site):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        cache = os.path.join(root, "__pycache__")
        have = set(os.listdir(cache)) if os.path.isdir(cache) else set()
        rel = os.path.relpath(root, site)
        old_roots = [r for r in (os.path.join(o, rel) for o in old_sites) if os.path.isdir(r)]
        for name in files:
            if not name.endswith(".py") or _pyc_name(name) in have:
                continue
            source = os.path.join(root, name)
            if any(_link_old_pyc(source, old_root, name, cache) for old_root in old_roots):
                reused += 1
            else:
                missing.append(source)
    return missing, reused


def _link_old_pyc(source: str, old_root: str, name: str, cache: str) -> bool:
    old_pyc = os.path.join(old_root, "__pycache__", _pyc_name(name))
    if not os.path.exists(old_pyc) or not _same_file(source, os.path.join(old_root, name)):
        return False
    os.makedirs(cache, exist_ok=True)
    try:
        os.link(old_pyc, os.path.join(cache, _pyc_name(name)))
    except OSError:
        return False
    return True


def _compile(source: str) -> bool:
    try:
        py_compile.compile(source, doraise=True, quiet=2)
    except (py_compile.PyCompileError, OSError, ValueError):
        return False  # e.g. test fixtures with deliberate syntax errors, as pip/uv skip them
    return True


def main(argv: list[str]) -> int:
    site = argv[1]
    old_sites = [old for old in argv[2:] if os.path.isdir(old)]
    missing, reused = missing_sources(site, old_sites)
    compiled = 0
    if missing:
        workers = min(len(missing) // 200 + 1, os.cpu_count() or 1)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                compiled = sum(pool.map(_compile, missing, chunksize=64))
        else:
            compiled = sum(map(_compile, missing))
    print(f"reused {reused} compiled {compiled}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
