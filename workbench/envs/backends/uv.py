"""The uv backend: a venv from a local interpreter, resolved and synced by uv."""

import json
import tempfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from workbench.envs import condamap, interpreters, pipconfig
from workbench.envs.backends.base import Backend, Plan, Progress
from workbench.envs.locks import Lock, this_platform
from workbench.envs.spec import EnvSpec
from workbench.subprocesses import run

ALWAYS = ("ipykernel",)


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


class UvBackend(Backend):
    name = "uv"

    def plan(self, spec: EnvSpec) -> Plan:
        warnings = list(spec.warnings)
        python_dep = spec.python
        requirement = None
        label = "python"
        if python_dep is not None:
            label = f"{spec.path}:{python_dep.line}: {python_dep.text}"
            requirement = condamap.pep440(python_dep.version, label) if python_dep.version else None
        interp = interpreters.select(requirement or None, label)

        packages: list[str] = []
        dropped: list[dict[str, str]] = []
        for dep in spec.conda:
            if dep.name == "python":
                continue
            mapped = condamap.to_pypi(dep, f"{spec.path}:{dep.line}")
            if mapped.dropped:
                dropped.append({"spec": dep.text, "reason": mapped.dropped})
                warnings.append(f"{spec.path}:{dep.line}: '{dep.text}' dropped: {mapped.dropped}")
            else:
                packages.append(mapped.requirement)
            if mapped.warning:
                warnings.append(mapped.warning)
        options: list[str] = []
        for line in spec.pip:
            if line.kind == "requirement":
                packages.append(line.value)
            elif line.kind == "--editable":
                packages.append(f"-e {line.value}")
            elif line.kind in ("--requirement", "--constraint"):
                packages.append(f"{line.kind} {line.value}")
            elif line.kind == "--trusted-host":
                warnings.append(f"{spec.path}:{line.line}: '{line.text}' ignored by uv")
            else:
                options += [line.kind, line.value] if line.value else [line.kind]
        named = {_name(p) for p in packages}
        packages += [p for p in ALWAYS if p not in named]
        machine = pipconfig.read().uv_args()
        return Plan(
            env=spec.path.stem,
            backend=self.name,
            python=str(interp.path),
            python_version=str(interp.version),
            packages=packages,
            dropped=dropped,
            pip_options=_dedupe_strategy(options + machine),
            warnings=warnings,
            variables=spec.variables,
        )

    def lock(self, spec: EnvSpec, plan: Plan, prefix: Path | None, progress: Progress) -> Lock:
        progress(f"resolving {len(plan.packages)} requirements with uv")
        with tempfile.TemporaryDirectory(prefix="workbench-") as tmp:
            (Path(tmp) / "requirements.in").write_text("\n".join(plan.packages) + "\n")
            out = run(
                [
                    uv_bin(),
                    "pip",
                    "compile",
                    "requirements.in",
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
                cwd=Path(tmp),
            )
        body = out.stdout.replace("-r requirements.in", f"{spec.path.name}")
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
                    "--require-hashes",
                    *_without_constraints(plan.pip_options),
                    str(lock_file),
                ],
                what=f"installing env '{plan.env}'",
            )
        return lock

    def installed(self, prefix: Path) -> dict[str, str]:
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
        return {canonicalize_name(p["name"]): p["version"] for p in json.loads(out.stdout)}


def _name(requirement: str) -> str | None:
    """The project name of a requirement line, or None for paths, URLs and -r/-e lines."""
    try:
        return canonicalize_name(Requirement(requirement).name)
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


def _without_constraints(options: list[str]) -> list[str]:
    """Install options for a lock: constraints already shaped it, and --require-hashes
    would take their unpinned lines for requirements."""
    return _drop_option(options, "--constraints")


def _dedupe_strategy(options: list[str]) -> list[str]:
    """Keep one --index-strategy, added when any extra index is in play."""
    cleaned = _drop_option(options, "--index-strategy")
    if "--extra-index-url" in cleaned:
        cleaned += ["--index-strategy", "unsafe-best-match"]
    return cleaned
