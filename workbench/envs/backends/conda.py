"""conda, mamba and micromamba: the spec goes to the solver unchanged.

Locks are `list --explicit --md5` (micromamba: `env export --explicit --md5`) plus
`# pip: name==version` lines for what pip installed; conda skips comment lines when
it reads an explicit file, and workbench installs the pip part itself.
"""

import json
import shutil
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name

from workbench.envs.backends.base import Backend, Plan, Progress
from workbench.envs.locks import Lock, this_platform
from workbench.envs.spec import EnvSpec
from workbench.errors import WorkbenchError
from workbench.subprocesses import run

PIP_PREFIX = "# pip: "


class CondaBackend(Backend):
    def __init__(self, name: str):
        self.name = name

    @property
    def exe(self) -> str:
        found = shutil.which(self.name)
        if not found:
            raise WorkbenchError(f"backend '{self.name}' is not installed (not on PATH)")
        return found

    def plan(self, spec: EnvSpec) -> Plan:
        python = spec.python
        packages = [d.text for d in spec.conda if d.name != "python"]
        if not any(d.name == "ipykernel" for d in spec.conda):
            packages.append("ipykernel")
        pip_lines = [line.text.strip() for line in spec.pip]
        return Plan(
            env=spec.path.stem,
            backend=self.name,
            python=python.text if python else "python",
            python_version=python.version or "any" if python else "solver's choice",
            packages=packages + [f"pip: {p}" for p in pip_lines],
            pip_options=[line.text.strip() for line in spec.pip if line.kind.startswith("-")],
            warnings=list(spec.warnings),
            variables=spec.variables,
        )

    def run_python(self, prefix: Path) -> list[str]:
        """`run --prefix` applies the env's activation scripts (CUDA paths and the like)."""
        return self._cli("run", "--prefix", str(prefix), "python")

    def _cli(self, *args: str) -> list[str]:
        return [self.exe, *args]

    def build(
        self, spec: EnvSpec, plan: Plan, prefix: Path, lock: Lock | None, progress: Progress
    ) -> Lock:
        if lock is None:
            progress(f"solving and installing with {self.name}")
            # `conda env create` never prompts (older conda rejects --yes there); micromamba does.
            verb = ["create", "--yes"] if self.name == "micromamba" else ["env", "create"]
            run(
                self._cli(*verb, "--prefix", str(prefix), "--file", str(spec.path)),
                what=f"{self.name} creating env '{plan.env}'",
            )
            if not any(dep.name == "ipykernel" for dep in spec.conda):
                channels = [arg for ch in spec.channels for arg in ("--channel", ch)]
                run(
                    self._cli("install", "--yes", "--prefix", str(prefix), *channels, "ipykernel"),
                    what=f"{self.name} installing ipykernel into env '{plan.env}'",
                )
        else:
            self._install_lock(plan, prefix, lock, progress)
        return self.export(spec, plan, prefix)

    def _install_lock(self, plan: Plan, prefix: Path, lock: Lock, progress: Progress) -> None:
        progress(f"installing {len(lock.packages())} locked packages with {self.name}")
        pip = [
            line[len(PIP_PREFIX) :]
            for line in lock.body.splitlines()
            if line.startswith(PIP_PREFIX)
        ]
        with tempfile.TemporaryDirectory(prefix="workbench-") as tmp:
            explicit = Path(tmp) / "explicit.txt"
            explicit.write_text(lock.body)
            run(
                self._cli("create", "--yes", "--prefix", str(prefix), "--file", str(explicit)),
                what=f"{self.name} installing the lock of env '{plan.env}'",
            )
            if pip:
                requirements = Path(tmp) / "pip.txt"
                requirements.write_text("\n".join(pip) + "\n")
                run(
                    [
                        str(self.python(prefix)),
                        "-m",
                        "pip",
                        "install",
                        "--no-deps",
                        "-r",
                        str(requirements),
                    ],
                    what=f"pip installing the pip part of env '{plan.env}'",
                )

    def export(self, spec: EnvSpec, plan: Plan, prefix: Path) -> Lock:
        """The lock of what prefix holds now."""
        if self.name == "micromamba":
            args = ("env", "export", "--prefix", str(prefix), "--explicit", "--md5")
        else:
            args = ("list", "--prefix", str(prefix), "--explicit", "--md5")
        explicit = run(self._cli(*args), what=f"{self.name} exporting env '{plan.env}'").stdout
        pip = [f"{PIP_PREFIX}{name}=={version}" for name, version in self._pip_installed(prefix)]
        return Lock(
            env=plan.env,
            backend=self.name,
            python=self._python_version(prefix),
            platform=this_platform(),
            spec_hash=spec.content_hash(),
            body=explicit.rstrip() + "\n" + "\n".join(pip),
        )

    def lock(self, spec: EnvSpec, plan: Plan, prefix: Path | None, progress: Progress) -> Lock:
        if prefix is None:
            raise WorkbenchError(
                f"the {self.name} backend locks a built env: run `workbench env create {plan.env}`"
            )
        return self.export(spec, plan, prefix)

    def _list(self, prefix: Path) -> list[dict]:
        out = run(self._cli("list", "--prefix", str(prefix), "--json"), what="listing packages")
        return json.loads(out.stdout)

    def _pip_installed(self, prefix: Path) -> list[tuple[str, str]]:
        return [(p["name"], p["version"]) for p in self._list(prefix) if p.get("channel") == "pypi"]

    def _python_version(self, prefix: Path) -> str:
        return next((p["version"] for p in self._list(prefix) if p["name"] == "python"), "")

    def installed(self, prefix: Path) -> dict[str, str]:
        return {canonicalize_name(p["name"]): p["version"] for p in self._list(prefix)}
