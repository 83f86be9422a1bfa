"""Lock files: an exact, hashed package list per env, committed beside its spec.

A lock is the backend's own format (uv: hashed requirements; conda: an explicit
`@EXPLICIT` list with md5s plus `# pip:` lines) under a header of `# key: value`
comments that records which spec, backend and platform it was made for.
"""

import hashlib
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from workbench.errors import WorkbenchError
from workbench.jsonfiles import write_atomic
from workbench.textfiles import read_text

# A lock of a large env is a few hundred KB (hashes); far above that is not a lock.
MAX_LOCK_BYTES = 16 << 20
HEADER = re.compile(r"^# (env|backend|python|platform|spec-hash): (.+)$")
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
# `name @ URL` (a VCS commit, an archive, a local file), as uv writes direct references.
DIRECT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*@\s*(\S+)")
CONDA_URL = re.compile(r"/([^/]+)-([^-/]+)-([^-/]+)\.(?:conda|tar\.bz2)(?:#.*)?$")


def this_platform() -> str:
    return f"{sys.platform}-{platform.machine()}"


@dataclass(frozen=True)
class Lock:
    env: str
    backend: str
    python: str
    platform: str
    spec_hash: str
    body: str

    @property
    def body_hash(self) -> str:
        return hashlib.sha256(self.body.encode()).hexdigest()

    def text(self) -> str:
        return (
            f"# workbench lock: regenerate with `workbench env lock {self.env}`, do not edit\n"
            f"# env: {self.env}\n# backend: {self.backend}\n# python: {self.python}\n"
            f"# platform: {self.platform}\n# spec-hash: {self.spec_hash}\n"
            f"{self.body.rstrip()}\n"
        )

    def packages(self) -> dict[str, str]:
        """Locked packages, canonical name -> version."""
        return packages_of(self.body)

    def write(self, path: Path) -> None:
        write_atomic(path, self.text())


def read(path: Path) -> Lock:
    if not path.exists():
        raise WorkbenchError(f"{path}: no lock; write one with `workbench env lock`")
    text = read_text(path, MAX_LOCK_BYTES, "lock file")
    fields: dict[str, str] = {}
    body: list[str] = []
    for line in text.splitlines():
        match = HEADER.match(line)
        if match and not body:
            fields[match[1]] = match[2].strip()
        elif body or not line.startswith("# workbench lock"):
            body.append(line)
    missing = {"env", "backend", "spec-hash"} - set(fields)
    if missing:
        raise WorkbenchError(f"{path}: not a workbench lock (missing {', '.join(sorted(missing))})")
    return Lock(
        env=fields["env"],
        backend=fields["backend"],
        python=fields.get("python", ""),
        platform=fields.get("platform", ""),
        spec_hash=fields["spec-hash"],
        body="\n".join(body).strip() + "\n",
    )


def packages_of(body: str) -> dict[str, str]:
    """name -> version for `name==version` lines, conda explicit URLs and `# pip:` lines;
    name -> reference (see direct_reference) for `name @ URL` lines. Lines that name a
    local path only (`./pkg`, `-e ./pkg`) name no package."""
    found: dict[str, str] = {}
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith("# pip: "):
            line = line[len("# pip: ") :]
        match = PINNED.match(line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
            continue
        match = DIRECT.match(line)
        if match and not line.startswith("#"):
            found[canonicalize_name(match[1])] = direct_reference(match[2])
            continue
        match = CONDA_URL.search(line)
        if match and not line.startswith("#"):
            found[canonicalize_name(match[1])] = match[2]
    return found


def direct_reference(url: str) -> str:
    """A direct URL as lock and installed package are compared: fragments other than
    #subdirectory (#egg=, #sha256=) dropped. `git+file:///repo@<commit>` stays whole."""
    base, _, fragment = url.partition("#")
    parts = dict(p.partition("=")[::2] for p in fragment.split("&") if p)
    sub = parts.get("subdirectory")
    return base + (f"#subdirectory={sub}" if sub else "")


def installed_reference(direct_url: dict) -> str | None:
    """The reference of an installed distribution's direct_url.json (PEP 610), in the form
    of its lock line: VCS installs as `git+URL@<commit>`."""
    url = direct_url.get("url")
    if not isinstance(url, str):
        return None
    vcs = direct_url.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs") and vcs.get("commit_id"):
        url = f"{vcs['vcs']}+{url}@{vcs['commit_id']}"
    sub = direct_url.get("subdirectory")
    return direct_reference(url + (f"#subdirectory={sub}" if sub else ""))


def fully_hashed(body: str) -> bool:
    """Whether every requirement of a uv lock carries a hash (VCS, URL and path
    requirements cannot: then hashes are checked where given, not required)."""
    text = re.sub(r"\\\n", " ", body)
    lines = [line.strip() for line in text.splitlines()]
    return all("--hash=" in line for line in lines if line and not line.startswith("#"))


@dataclass(frozen=True)
class Drift:
    added: dict[str, str]  # installed, not in the lock
    removed: dict[str, str]  # in the lock, not installed
    changed: dict[str, tuple[str, str]]  # name -> (locked, installed)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_json(self) -> dict:
        return {
            "added": [{"name": n, "version": v} for n, v in sorted(self.added.items())],
            "removed": [{"name": n, "version": v} for n, v in sorted(self.removed.items())],
            "changed": [
                {"name": n, "locked": a, "installed": b}
                for n, (a, b) in sorted(self.changed.items())
            ],
        }


def diff(locked: dict[str, str], installed: dict[str, str]) -> Drift:
    """What changed from the lock. A package installed from a local path that the lock
    does not name (its line is the path, `./pkg` or `-e ./pkg`) is the project's own code,
    followed by path, not by version: it is not drift."""
    return Drift(
        added={n: v for n, v in installed.items() if n not in locked and not v.startswith("file:")},
        removed={n: v for n, v in locked.items() if n not in installed},
        changed={
            n: (v, installed[n]) for n, v in locked.items() if n in installed and installed[n] != v
        },
    )
