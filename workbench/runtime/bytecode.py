"""Compile an env's bytecode, reusing .pyc files compiled before for the same sources.

Run by the env's own interpreter:
    python -I -m workbench.runtime.bytecode [--store DIR] NEW_SITE_PACKAGES [OLD_SITE ...]

uv links package files from its cache, so a rebuild's sources, and those of any env
holding the same package, are often the very files (same inode, mtime and size) an
earlier build compiled. Their .pyc files are valid as they are and are hard-linked
instead of compiled again, found in two places:
  the store: DIR/TAG/XX/DEV-INODE-SIZE-MTIME.pyc for every compiled source that is such
    a shared file (link count > 1), so a new project's first build reuses what any
    earlier build compiled;
  old site-packages: the same relative path in another build (sources copied, not
    linked, have no store entry but match by mtime and size).
Only sources found in neither are compiled, in parallel. Python still checks every .pyc
against its source's mtime and size on import, so a reused file can never be stale.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures.thread import ThreadPoolExecutor

TAG = sys.implementation.cache_tag
THREADS = 8  # linking waits on the file system: more threads than cores pay off


def _pyc_name(source_name: str) -> str:
    return f"{source_name[:-3]}.{TAG}.pyc"


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    same_inode = (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
    return same_inode or (a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime))


def store_path(store: str, source: os.stat_result) -> str:
    """Where the store keeps the .pyc of the source file with this stat."""
    key = f"{source.st_dev:x}-{source.st_ino:x}-{source.st_size:x}-{source.st_mtime_ns:x}"
    return os.path.join(store, TAG, f"{source.st_ino & 0xFF:02x}", f"{key}.pyc")


def _link(existing: str, new: str) -> bool:
    try:
        os.link(existing, new)
    except FileExistsError:
        return True
    except OSError:
        return False
    return True


class Reuse:
    """Finds a compiled .pyc for each source of a site-packages folder."""

    def __init__(self, site: str, old_sites: list[str], store: str | None):
        self.site = site
        self.old_sites = old_sites
        self.store = store
        self.reused = 0
        self.missing: list[tuple[str, os.stat_result]] = []

    def scan(self) -> None:
        """Link what can be reused, folder by folder in threads: the work is system calls
        (stat, link) that wait on the file system, not on the interpreter."""
        folders = []
        for root, dirs, files in os.walk(self.site):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            sources = [n for n in files if n.endswith(".py")]
            if sources:
                folders.append((root, sources))
        with ThreadPoolExecutor(THREADS) as pool:
            for reused, missing in pool.map(lambda f: self._scan_dir(*f), folders):
                self.reused += reused
                self.missing += missing

    def _scan_dir(self, root: str, sources: list[str]) -> tuple[int, list]:
        cache = os.path.join(root, "__pycache__")
        have = set(os.listdir(cache)) if os.path.isdir(cache) else set()
        rel = os.path.relpath(root, self.site)
        olds = [os.path.join(old, rel) for old in self.old_sites]
        old_caches = [(old, _listing(os.path.join(old, "__pycache__"))) for old in olds]
        made_cache = bool(have)
        reused = 0
        missing = []
        for name in sources:
            pyc = _pyc_name(name)
            if pyc in have:
                continue
            source = os.path.join(root, name)
            try:
                stat = os.stat(source)
            except OSError:
                continue
            if not made_cache:
                os.makedirs(cache, exist_ok=True)
                made_cache = True
            target = os.path.join(cache, pyc)
            if self._from_store(stat, target) or self._from_old(name, stat, old_caches, target):
                reused += 1
            else:
                missing.append((source, stat))
        return reused, missing

    def _from_store(self, stat: os.stat_result, target: str) -> bool:
        return self.store is not None and _link(store_path(self.store, stat), target)

    def _from_old(self, name: str, stat: os.stat_result, old_caches: list, target: str) -> bool:
        pyc = _pyc_name(name)
        for old_root, listing in old_caches:
            if pyc not in listing:
                continue
            try:
                old_stat = os.stat(os.path.join(old_root, name))
            except OSError:
                continue
            if _same_file(stat, old_stat) and _link(
                os.path.join(old_root, "__pycache__", pyc), target
            ):
                self.keep(target, stat)
                return True
        return False

    def keep(self, pyc: str, source: os.stat_result) -> None:
        """Add pyc to the store when its source is shared with uv's cache (or other envs);
        a file private to this env dies with it, so its .pyc would never be asked for."""
        if self.store is None or source.st_nlink < 2:
            return
        path = store_path(self.store, source)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError:
            return
        _link(pyc, path)


def _listing(folder: str) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _compile(source: str) -> bool:
    import py_compile  # only when there is something to compile: a rebuild seldom has

    # None for a source that does not compile (e.g. a test fixture with a deliberate
    # syntax error): skipped, as pip and uv skip it. doraise, not quiet=, which Python 3.7
    # (binder's runtime.txt still asks for it) does not have.
    try:
        py_compile.compile(source, doraise=True)
    except (OSError, ValueError, py_compile.PyCompileError):
        return False
    return True


def _compile_all(sources: list[str]) -> list[bool]:
    workers = min(len(sources) // 200 + 1, os.cpu_count() or 1)
    if workers < 2:
        return [_compile(s) for s in sources]
    from concurrent.futures.process import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_compile, sources, chunksize=64))


def main(argv: list[str]) -> int:
    args = argv[1:]
    store = None
    if args[:1] == ["--store"]:
        store, args = args[1], args[2:]
    site, old_sites = args[0], [old for old in args[1:] if os.path.isdir(old)]
    reuse = Reuse(site, old_sites, store)
    reuse.scan()
    compiled = 0
    results = _compile_all([source for source, _ in reuse.missing])
    for (source, stat), ok in zip(reuse.missing, results):
        if ok:
            compiled += 1
            folder, name = os.path.split(source)
            reuse.keep(os.path.join(folder, "__pycache__", _pyc_name(name)), stat)
    print(f"reused {reuse.reused} compiled {compiled}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
