"""The pip part of a conda env: what pip installed there, locked so pip reinstalls it exactly.

conda, mamba and micromamba install a spec's `pip:` section by running the env's own pip,
and their listings of it cannot be trusted (micromamba 1.5 and 2.0.0–2.0.2 list no pip
packages, 2.0.3 and later only those pip was asked for by name). So the env's pip is asked
(`pip inspect`, or `pip list` where pip predates 22.2), and a distribution is pip's when no
conda package owns its metadata folder (conda-meta/*.json list every file they own).

Each package is locked as pip can reinstall it: `name==version --hash=sha256:…` (the hash of
the file pip picks for that pin from the same indexes, from `pip install --dry-run
--report`), an archive URL with its hash, a VCS URL at the commit in its direct_url.json, or
an editable or local folder relative to the spec's folder. The spec's index options come
along. `--locked` installs hashed lines with `--require-hashes` and the rest (VCS checkouts,
folders, editables: pip cannot hash those) in a second call, both `--no-deps`, from the
spec's folder as the tools ran pip when they built the env.
"""

import json
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from workbench.envs.backends.base import Progress
from workbench.envs.locks import PipPart, pip_requirement
from workbench.envs.requirements import PipLine
from workbench.envs.spec import EnvSpec
from workbench.errors import WorkbenchError
from workbench.project import MANIFEST
from workbench.subprocesses import run

PIP_OPTIONS = {
    "--index-url",
    "--extra-index-url",
    "--find-links",
    "--trusted-host",
    "--no-index",
    "--only-binary",
    "--no-binary",
    "--prefer-binary",
    "--pre",
}
QUIET = ["--disable-pip-version-check", "--no-input"]
PIP_TIMEOUT = 3600  # large CUDA wheels over a slow link


@dataclass(frozen=True)
class PipDist:
    """A distribution in the env that pip (not conda) installed."""

    name: str
    version: str
    direct_url: dict | None  # direct_url.json: URL installs, VCS checkouts, folders


def installed(python: Path, prefix: Path) -> list[PipDist]:
    """The distributions in prefix that no conda package owns, as the env's pip reports them
    (not those of the user's site-packages, which pip lists outside a venv too)."""
    owned = conda_owned(prefix)
    found = []
    for location, dist in _pip_dists(python):
        relative = _relative(location, prefix)
        if relative is not None and relative not in owned:
            found.append(dist)
    return found


def conda_owned(prefix: Path) -> set[str]:
    """Metadata folders (dist-info, egg-info) of conda packages, relative to prefix."""
    owned: set[str] = set()
    for record in (prefix / "conda-meta").glob("*.json"):
        try:
            files = json.loads(record.read_text()).get("files", [])
        except (OSError, ValueError, AttributeError):
            continue
        for path in files if isinstance(files, list) else []:
            for marker in (".dist-info", ".egg-info"):
                head, found, _ = str(path).partition(marker)
                if found:
                    owned.add(head + marker)
    return owned


def _relative(location: str, prefix: Path) -> str | None:
    """location relative to prefix; None when it lies elsewhere."""
    if not location:
        return None
    try:
        return Path(location).resolve().relative_to(prefix.resolve()).as_posix()
    except ValueError:
        return None


def _pip_dists(python: Path) -> list[tuple[str, PipDist]]:
    """(metadata location, dist) for every distribution in the env's own site-packages."""
    try:
        out = _pip(python, "inspect", "--local").stdout
    except WorkbenchError as exc:
        if "No module named pip" in exc.message:
            return []  # no pip, so nothing pip installed
        return _pip_list(python)
    report = json.loads(out)
    return [
        (
            item["metadata_location"],
            PipDist(item["metadata"]["name"], item["metadata"]["version"], item.get("direct_url")),
        )
        for item in report.get("installed", [])
    ]


def _pip_list(python: Path) -> list[tuple[str, PipDist]]:
    """What pip before 22.2 (no `inspect`) can say: name, version and where it lies."""
    listed = json.loads(_pip(python, "list", "--local", "--format=json", "--verbose").stdout)
    found = []
    for item in listed:
        metadata = _metadata_dir(Path(item.get("location", "")), item["name"], item["version"])
        direct_url = None
        if metadata is not None and (metadata / "direct_url.json").is_file():
            direct_url = json.loads((metadata / "direct_url.json").read_text())
        location = str(metadata) if metadata else ""
        found.append((location, PipDist(item["name"], item["version"], direct_url)))
    return found


def _metadata_dir(site: Path, name: str, version: str) -> Path | None:
    wanted = canonicalize_name(name)
    for candidate in site.glob("*.dist-info"):
        stem_name, _, stem_version = candidate.stem.partition("-")
        if canonicalize_name(stem_name) == wanted and stem_version == version:
            return candidate
    return None


def _pip(
    python: Path, *args: str, cwd: Path | None = None, **kwargs
) -> subprocess.CompletedProcess[str]:
    return run(
        [python, "-m", "pip", *args, *QUIET],
        what=f"pip {args[0]} in {python.parent.parent}",
        cwd=cwd,
        **kwargs,
    )


def index_options(spec: EnvSpec) -> list[str]:
    """The spec's pip index options (also those in its -r files, in reading order), as
    requirements-file lines whose relative paths are taken from the spec's folder."""
    by_file: dict[Path, list[PipLine]] = {}
    for line in spec.included:
        by_file.setdefault(line.source, []).append(line)

    def options(lines: list[PipLine], top: bool) -> list[str]:
        found: list[str] = []
        for line in lines:
            if line.kind == "--requirement":
                found += options(by_file.get(Path(line.value), []), top=False)
            elif line.kind not in PIP_OPTIONS:
                continue
            elif top:
                found.append(line.text.strip())
            elif line.kind == "--find-links" and "://" not in line.value:
                local = os.path.relpath(
                    (line.source.parent / line.value).resolve(), spec.path.parent
                )
                found.append(f"--find-links {shlex.quote(local)}")
            else:
                found.append(shlex.join([line.kind, line.value]) if line.value else line.kind)
        return found

    return list(dict.fromkeys(options(list(spec.pip), top=True)))


def lock(python: Path, spec: EnvSpec, dists: list[PipDist], progress: Progress) -> PipPart:
    """The pip part of a lock for dists, installed in the env whose interpreter is python."""
    if not dists:
        return PipPart()
    options = index_options(spec)
    spec_dir = spec.path.parent
    by_index = [d for d in dists if not d.direct_url]
    hashes = _index_hashes(python, spec_dir, options, by_index, progress)
    lines = []
    for dist in sorted(dists, key=lambda d: canonicalize_name(d.name)):
        if dist.direct_url:
            line = _direct_line(dist, spec_dir)
        else:
            digest = hashes.get(canonicalize_name(dist.name))
            line = f"{dist.name}=={dist.version}" + (f" --hash=sha256:{digest}" if digest else "")
        lines.append(pip_requirement(dist.name, dist.version, line))
    return PipPart(tuple(options), tuple(lines))


def _direct_line(dist: PipDist, spec_dir: Path) -> str:
    """How pip reinstalls a direct-URL install: the VCS commit, the archive (hashed), the
    folder (editable or not)."""
    info = dist.direct_url or {}
    url = info.get("url", "")
    subdirectory = f"#subdirectory={info['subdirectory']}" if info.get("subdirectory") else ""
    if "vcs_info" in info:
        vcs = info["vcs_info"]
        return f"{dist.name} @ {vcs['vcs']}+{url}@{vcs['commit_id']}{subdirectory}"
    if "dir_info" in info:
        path = _project_path(url, spec_dir)
        where = path or url
        return (
            f"-e {where}" if info["dir_info"].get("editable") else (path or f"{dist.name} @ {url}")
        )
    archive = info.get("archive_info", {})
    digest = archive.get("hashes", {}).get("sha256")
    if digest is None and str(archive.get("hash", "")).startswith("sha256="):
        digest = archive["hash"].split("=", 1)[1]
    path = _project_path(url, spec_dir)
    line = path if path and not subdirectory else f"{dist.name} @ {url}{subdirectory}"
    return line + (f" --hash=sha256:{digest}" if digest else "")


def _project_path(url: str, spec_dir: Path) -> str | None:
    """A file: URL inside the project as a path relative to the spec's folder (a lock is
    committed and checked out elsewhere), else None."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    path = Path(unquote(parts.path))
    root = _project_root(spec_dir)
    if not path.resolve().is_relative_to(root):
        return None
    relative = os.path.relpath(path, spec_dir)
    return relative if relative.startswith("..") else f"./{relative}"


def _project_root(spec_dir: Path) -> Path:
    folder = spec_dir.resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / MANIFEST).is_file():
            return candidate
    return folder.parent if folder.name == "envs" else folder


def _index_hashes(
    python: Path, spec_dir: Path, options: list[str], dists: list[PipDist], progress: Progress
) -> dict[str, str]:
    """name -> sha256 of the file pip picks for each `name==version` from the spec's indexes,
    from a dry run (PEP 658 metadata where the index has it, so large wheels are not fetched)."""
    if not dists:
        return {}
    progress(f"asking pip for the hashes of {len(dists)} pip packages")
    with tempfile.TemporaryDirectory(prefix="workbench-pip-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        pins = [f"{d.name}=={d.version}" for d in dists]
        requirements.write_text("\n".join([*options, *pins]) + "\n")
        report = Path(tmp) / "report.json"
        proc = _pip(
            python,
            "install",
            "--dry-run",
            "--no-deps",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "-r",
            str(requirements),
            cwd=spec_dir,
            check=False,
            timeout=PIP_TIMEOUT,
        )
        if proc.returncode != 0 or not report.is_file():
            progress("pip could not hash the pip packages; they are locked by version only")
            return {}
        found = {}
        for item in json.loads(report.read_text()).get("install", []):
            archive = item.get("download_info", {}).get("archive_info", {})
            digest = archive.get("hashes", {}).get("sha256")
            if digest:
                found[canonicalize_name(item["metadata"]["name"])] = digest
        return found


def install(python: Path, spec_dir: Path, part: PipPart, env: str) -> None:
    """Install a locked pip part: hashed lines with --require-hashes, then the rest."""
    hashed = [line for line in part.requirements if "--hash=" in line]
    rest = [line for line in part.requirements if "--hash=" not in line]
    with tempfile.TemporaryDirectory(prefix="workbench-pip-") as tmp:
        for name, group, extra in (("hashed", hashed, ["--require-hashes"]), ("rest", rest, [])):
            if not group:
                continue
            requirements = Path(tmp) / f"{name}.txt"
            requirements.write_text("\n".join([*part.options, *group]) + "\n")
            run(
                [python, "-m", "pip", "install", "--no-deps", *QUIET, *extra, "-r", requirements],
                what=f"pip installing the locked pip part of env '{env}'",
                cwd=spec_dir,
                timeout=PIP_TIMEOUT,
            )
