"""Lock files: an exact, hashed package list per env, committed beside its spec.

A lock is the backend's own format (uv: hashed requirements; conda: an explicit
`@EXPLICIT` list with md5s plus a pip part) under a header of `# key: value` comments
that records which spec, backend and platform it was made for.

The pip part of a conda lock is a requirements file, each line behind `# pip: ` (conda
and micromamba skip comment lines in an explicit file), after the marker `# pip-lock: 2`:
the spec's index options (`--index-url`, `--extra-index-url`, `--find-links`, …), then
one line per package as pip reinstalls it exactly: `name==version --hash=sha256:…`, a
direct URL (with its hash), `name @ git+URL@COMMIT`, or a path (`-e ../pkg`) relative to
the spec's folder. Lines that do not pin a version end in a pip comment `# name==version`.
Locks written before the marker (`# pip: name==version` only) still read and install the
same way as before; `workbench env lock` rewrites them in the new form.
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
PIP_PREFIX = "# pip: "
PIP_FORMAT = "# pip-lock: 2"
# The version of a pip line that does not pin one (a URL, a VCS commit, a path).
PIP_ANNOTATION = re.compile(r"\s#\s*([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*$")


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
        if line.startswith(PIP_PREFIX):
            line = line[len(PIP_PREFIX) :]
            match = PIP_ANNOTATION.search(line)
            if match:
                found[canonicalize_name(match[1])] = match[2]
                continue
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
class PipPart:
    """The pip part of a conda lock: index options and one requirement line per package."""

    options: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    legacy: bool = False  # written before `# pip-lock: 2`: `name==version` lines only

    def lines(self) -> list[str]:
        if not self.requirements:
            return []
        return [
            PIP_FORMAT,
            *(f"{PIP_PREFIX}{line}" for line in (*self.options, *self.requirements)),
        ]

    @classmethod
    def of(cls, body: str) -> "PipPart":
        lines = body.splitlines()
        pip = [line[len(PIP_PREFIX) :].strip() for line in lines if line.startswith(PIP_PREFIX)]
        options = tuple(line for line in pip if _is_option(line))
        requirements = tuple(line for line in pip if not _is_option(line))
        return cls(options, requirements, legacy=bool(pip) and PIP_FORMAT not in lines)


def _is_option(line: str) -> bool:
    """An index option line; `-e PATH` is a requirement."""
    return line.startswith("-") and not line.startswith(("-e ", "--editable"))


def pip_requirement(name: str, version: str, line: str) -> str:
    """line, ending in `# name==version` when it does not pin the version itself."""
    match = PINNED.match(line)
    if match and canonicalize_name(match[1]) == canonicalize_name(name) and match[2] == version:
        return line
    return f"{line}  # {name}=={version}"


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
