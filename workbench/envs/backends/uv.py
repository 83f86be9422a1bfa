"""The uv backend: a venv from a matching interpreter, resolved and synced by uv.

Conda dependencies become PyPI requirements through condamap; a conda-only package is
never sent to PyPI. The pip: section is passed on in every form pip's requirements files
take (PEP 508, bare VCS and archive URLs, local paths, -e, -r/-c, --hash, index and binary
options). uv runs in the spec's folder, so relative paths mean what they mean to pip
under conda, and the lock keeps them relative; VCS requirements are locked to the commit
uv resolved, so a build from the lock installs the same code after the branch moved on.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from workbench.envs import condamap, interpreters, locks, pipconfig
from workbench.envs.backends.base import Backend, Plan, Progress
from workbench.envs.locks import Lock, this_platform
from workbench.envs.platforms import platform_of
from workbench.envs.requirements import VCS_SCHEMES, PipLine
from workbench.envs.spec import EnvSpec
from workbench.errors import WorkbenchError, excerpt
from workbench.subprocesses import run

ALWAYS = ("ipykernel",)
DROP_FLAG = "--drop-conda-only"
# Requirement-file options uv has no use for: said once, not passed on.
IGNORED = {
    "--prefer-binary": "uv takes the newest version that fits either way",
    "--use-feature": "pip feature flags mean nothing to uv",
    "--always-unzip": "an obsolete pip option",
    "--require-hashes": "the lock hashes every package from an index anyway",
}
# Collapse per-dependency build-string warnings beyond this many into one line.
MAX_BUILD_WARNINGS = 3


@dataclass(frozen=True)
class UvOptions:
    """Choices a user makes on the command line for uv builds."""

    drop_conda_only: bool = False  # build without conda-only packages, each listed
    nearest_python: bool = False  # accept the nearest patch release of python='s minor


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


class UvBackend(Backend):
    name = "uv"

    def __init__(self, options: UvOptions | None = None):
        self.options = options or UvOptions()

    def plan(self, spec: EnvSpec) -> Plan:
        warnings = list(spec.warnings)
        packages, dropped = self._conda_packages(spec, warnings)
        pip_packages, options = _pip(spec, warnings)
        packages += pip_packages
        named = {_name(p) for p in packages}
        packages = list(dict.fromkeys(packages + [p for p in ALWAYS if p not in named]))
        interp = self._interpreter(spec, warnings)
        machine = pipconfig.read().uv_args()
        return Plan(
            env=spec.env,
            backend=self.name,
            python=str(interp.path),
            python_version=str(interp.version),
            packages=packages,
            dropped=dropped,
            pip_options=_dedupe_strategy(options + machine),
            warnings=warnings,
            variables=spec.variables,
        )

    def _conda_packages(
        self, spec: EnvSpec, warnings: list[str]
    ) -> tuple[list[str], list[dict[str, str]]]:
        """PyPI requirements for the conda dependencies, and what was dropped; refuses
        conda-only packages (all named in one line) unless the user drops them."""
        packages: list[str] = []
        dropped: list[dict[str, str]] = []
        conda_only: list[condamap.Mapped] = []
        builds: list[str] = []
        for dep in spec.conda:
            if dep.name == "python":
                continue
            where = f"{spec.path}:{dep.line}"
            mapped = condamap.to_pypi(dep, where, spec.exported_on)
            if mapped.conda_only:
                conda_only.append(mapped)
            if mapped.dropped:
                dropped.append(
                    {"spec": dep.text, "reason": mapped.dropped, "conda_only": mapped.conda_only}
                )
            else:
                packages.append(mapped.requirement)
            if mapped.warning and dep.build and "build string" in mapped.warning:
                builds.append(mapped.warning)
            elif mapped.warning:
                warnings.append(mapped.warning)
        if conda_only and not self.options.drop_conda_only:
            names = ", ".join(f"{m.dep.text} (line {m.dep.line}, {m.dropped})" for m in conda_only)
            raise WorkbenchError(
                f"{spec.path}: {len(conda_only)} conda-only package(s) with no PyPI "
                f"equivalent, which the uv backend cannot install: {names}; install "
                f"micromamba or conda (workbench then builds with it), or pass {DROP_FLAG} "
                "to build without them"
            )
        warnings += _dropped_notes(spec, dropped)
        if len(builds) > MAX_BUILD_WARNINGS:
            builds = [
                f"{spec.path}: {len(builds)} build strings ignored by the uv backend "
                "(it installs PyPI wheels, not conda builds)"
            ]
        warnings += builds
        return packages, dropped

    def _interpreter(self, spec: EnvSpec, warnings: list[str]) -> interpreters.Interpreter:
        python_dep = spec.python
        if python_dep is None or not python_dep.version:
            return interpreters.select(None, "python")
        label = f"{spec.python_source or spec.path}:{python_dep.line}: {python_dep.text}"
        requirement = condamap.pep440(python_dep.version, label)
        interp = interpreters.select(
            requirement or None,
            label,
            accept_nearest=self.options.nearest_python,
            # requires-python: the Pythons a package supports; the tool's own if it is one
            prefer_running=spec.python_source is not None
            and spec.python_source.name == "pyproject.toml",
        )
        if requirement and not requirement.contains(interp.version, prereleases=True):
            warnings.append(f"{label}: using Python {interp.version}, the nearest local patch")
        return interp

    def lock(self, spec: EnvSpec, plan: Plan, prefix: Path | None, progress: Progress) -> Lock:
        progress(f"resolving {len(plan.packages)} requirements with uv")
        with tempfile.TemporaryDirectory(prefix="workbench-") as tmp:
            requirements = Path(tmp) / "requirements.in"
            requirements.write_text("\n".join(plan.packages) + "\n")
            out = run(
                [
                    uv_bin(),
                    "pip",
                    "compile",
                    str(requirements),
                    "--quiet",
                    "--no-header",
                    "--generate-hashes",
                    "--python",
                    plan.python,
                    "--python-platform",
                    "linux" if this_platform().startswith("linux") else "macos",
                    "--no-python-downloads",
                    *plan.pip_options,
                ],
                what=f"resolving env '{plan.env}'",
                cwd=spec.folder,
            )
        body = _portable(out.stdout, requirements, spec)
        return Lock(
            env=plan.env,
            backend=self.name,
            python=plan.python_version,
            platform=this_platform(),
            spec_hash=spec.content_hash(),
            body=body,
        )

    def build(
        self, spec: EnvSpec, plan: Plan, prefix: Path, lock: Lock | None, progress: Progress
    ) -> Lock:
        if lock is None:
            lock = self.lock(spec, plan, None, progress)
        progress(f"creating venv (Python {plan.python_version})")
        run(
            [
                uv_bin(),
                "venv",
                "--quiet",
                "--python",
                plan.python,
                "--no-python-downloads",
                "--prompt",
                plan.env,
                str(prefix),
            ],
            what=f"creating the venv of env '{plan.env}'",
        )
        progress(f"installing {len(lock.packages())} locked packages")
        hashes = ["--require-hashes"] if locks.fully_hashed(lock.body) else []
        with tempfile.TemporaryDirectory(prefix="workbench-") as tmp:
            lock_file = Path(tmp) / "requirements.txt"
            lock_file.write_text(lock.body)
            run(
                [
                    uv_bin(),
                    "pip",
                    "sync",
                    "--quiet",
                    "--python",
                    str(self.python(prefix)),
                    *hashes,
                    *_install_options(plan.pip_options),
                    str(lock_file),
                ],
                what=f"installing env '{plan.env}'",
                cwd=spec.folder,
            )
        return lock

    def installed(self, prefix: Path) -> dict[str, str]:
        """name -> version; a package installed from a VCS or archive URL (or a local
        path) -> the reference its lock line names (see locks.direct_reference)."""
        out = run(
            [
                uv_bin(),
                "pip",
                "list",
                "--quiet",
                "--format",
                "json",
                "--python",
                str(self.python(prefix)),
            ],
            what="listing installed packages",
        )
        found = {canonicalize_name(p["name"]): p["version"] for p in json.loads(out.stdout)}
        return {**found, **_direct_installs(prefix)}


def _dropped_notes(spec: EnvSpec, dropped: list[dict]) -> list[str]:
    """Warnings for dropped conda packages: conda-only ones (dropped on request) each with
    its reason in one line; the others one by one, or counted in one line when many."""
    notes = []
    asked = [d for d in dropped if d["conda_only"]]
    if asked:
        listed = ", ".join(f"{d['spec']} ({d['reason']})" for d in asked)
        notes.append(f"{spec.path}: built without conda-only packages ({DROP_FLAG}): {listed}")
    replaced = [d for d in dropped if not d["conda_only"]]
    if len(replaced) > MAX_BUILD_WARNINGS:
        names = ", ".join(d["spec"].split("=")[0] for d in replaced)
        notes.append(
            f"{spec.path}: {len(replaced)} conda packages dropped that PyPI wheels or the "
            f"interpreter replace: {names} (`workbench env plan` gives each reason)"
        )
    else:
        notes += [f"{spec.path}: '{d['spec']}' dropped: {d['reason']}" for d in replaced]
    return notes


def _pip(spec: EnvSpec, warnings: list[str]) -> tuple[list[str], list[str]]:
    """(requirement lines for uv's input file, uv options) from the pip: section."""
    packages: list[str] = []
    options: list[str] = []
    for line in spec.pip:
        where = line.where(spec.path)
        kind, value = line.kind, line.value
        if kind == "invalid":
            raise WorkbenchError(f"{where}: '{excerpt(line.text.strip())}': {value}")
        if spec.exported_on and platform_of(_name(value) or "") == spec.exported_on:
            warnings.append(
                f"{where}: '{value}' dropped: {spec.exported_on}-only (the spec was exported there)"
            )
        elif kind in ("requirement", "url", "path"):
            packages.append(" ".join((value, *line.options)))
        elif kind == "--editable":
            packages.append(_editable(line, where, warnings))
        elif kind in ("--requirement", "--constraint"):
            # uv takes paths in an included file from the working directory (the spec's
            # folder), as pip does; the file itself is named absolutely.
            packages.append(f"{'-r' if kind == '--requirement' else '-c'} {value}")
        elif kind in ("--index-url", "--extra-index-url", "--find-links"):
            options += [kind, value]
        elif kind == "--no-index":
            options.append(kind)
        elif kind == "--pre":
            options += ["--prerelease", "allow"]
        elif kind == "--trusted-host":
            options += ["--allow-insecure-host", value]
        elif kind in ("--no-binary", "--only-binary"):
            for name in filter(None, value.split(",")):
                options += [kind, name]
        elif kind in IGNORED:
            warnings.append(f"{where}: '{line.text.strip()}' ignored: {IGNORED[kind]}")
    return packages, options


def _editable(line: PipLine, where: str, warnings: list[str]) -> str:
    """-e PATH as is; -e VCS_URL as a regular install (uv edits local folders only)."""
    if not line.value.startswith(VCS_SCHEMES):
        return f"-e {line.value}"
    warnings.append(
        f"{where}: uv installs '{excerpt(line.value)}' as a regular package, not editable "
        "(uv edits local folders only: clone it into the project and use -e PATH to edit it)"
    )
    return line.value


def _portable(body: str, requirements: Path, spec: EnvSpec) -> str:
    """uv's output with the temporary input file named as the spec, and the spec's folder
    left out of comments, so the committed lock reads the same on every checkout."""
    folder = f"{spec.folder}{os.sep}"
    lines = []
    for line in body.splitlines():
        if line.lstrip().startswith("#"):
            line = line.replace(str(requirements), spec.path.name).replace(folder, "")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _direct_installs(prefix: Path) -> dict[str, str]:
    """Packages installed from a URL or local path, by the reference of their lock line,
    read from each distribution's direct_url.json (PEP 610)."""
    found: dict[str, str] = {}
    for record in prefix.glob("lib/python3*/site-packages/*.dist-info/direct_url.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        name = record.parent.name.removesuffix(".dist-info").rpartition("-")[0]
        reference = locks.installed_reference(data)
        if name and reference:
            found[canonicalize_name(name)] = reference
    return found


def _name(requirement: str) -> str | None:
    """The project name of a requirement line, or None for paths, URLs and -r/-e lines."""
    try:
        return canonicalize_name(Requirement(requirement.split(" --")[0]).name)
    except InvalidRequirement:
        return None


def _drop_option(options: list[str], name: str) -> list[str]:
    """options without every `name VALUE` pair."""
    kept: list[str] = []
    args = iter(options)
    for opt in args:
        if opt == name:
            next(args, None)
        else:
            kept.append(opt)
    return kept


def _install_options(options: list[str]) -> list[str]:
    """Options for installing a lock: constraints and the prerelease rule already shaped
    it (and --require-hashes would take constraints' unpinned lines for requirements)."""
    return _drop_option(_drop_option(options, "--constraints"), "--prerelease")


def _dedupe_strategy(options: list[str]) -> list[str]:
    """Keep one --index-strategy, added when any extra index is in play."""
    cleaned = _drop_option(options, "--index-strategy")
    if "--extra-index-url" in cleaned:
        cleaned += ["--index-strategy", "unsafe-best-match"]
    return cleaned
