"""conda, mamba and micromamba: the spec goes to the solver in one transaction.

A build hands the tool a copy of the spec written beside it (so relative pip paths still
resolve) that adds ipykernel when the spec lacks it and leaves `nodefaults` out where the
tool would look it up as a channel; the tool solves, installs and runs the spec's pip
section once. Locks are the tool's @EXPLICIT list (conda: `list --explicit --md5`;
micromamba and mamba 2: `env export --explicit --md5`) plus the pip part
(workbench/envs/backends/conda_pip.py). Builds are never registered in
~/.conda/environments.txt, carry the spec's variables in conda-meta/state (so activation
sets them, also after a locked rebuild), and are started activated (condatools.ACTIVATE).
"""

import contextlib
import functools
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from workbench.envs import gpu_check
from workbench.envs.backends import conda_pip, condatools
from workbench.envs.backends.base import Backend, Plan, Progress
from workbench.envs.locks import Lock, PipPart, this_platform
from workbench.envs.spec import EnvSpec
from workbench.errors import WorkbenchError
from workbench.jsonfiles import write_atomic
from workbench.subprocesses import run

# The conda packages that carry the CUDA version an env is built for.
CUDA_PINS = ("cuda-version", "pytorch-cuda", "cudatoolkit", "cuda-runtime", "cuda")
DEFAULT_CUDA = "12.0"
ENVIRONMENTS_TXT = Path("~/.conda/environments.txt")
NO_REGISTRATION = {"CONDA_REGISTER_ENVS": "false"}  # conda's setting; see `unregister`


class CondaBackend(Backend):
    def __init__(self, name: str):
        self.name = name

    @functools.cached_property
    def tool(self) -> condatools.CondaTool:
        return condatools.find(self.name)

    def plan(self, spec: EnvSpec) -> Plan:
        python = spec.python
        packages = [d.text for d in spec.conda if d.name != "python"]
        if not has_ipykernel(spec):
            packages.append("ipykernel")
        pip_lines = [line.text.strip() for line in spec.pip]
        return Plan(
            env=spec.env,
            backend=self.name,
            python=python.text if python else "python",
            python_version=python.version or "any" if python else "solver's choice",
            packages=packages + [f"pip: {p}" for p in pip_lines],
            pip_options=[line.text.strip() for line in spec.pip if line.kind.startswith("-")],
            warnings=list(spec.warnings),
            variables=spec.variables,
        )

    def run_python(self, prefix: Path) -> list[str]:
        """The env's python, started activated (activate.d scripts, PATH, CONDA_PREFIX)."""
        return self.tool.launcher(prefix)

    def build(
        self, spec: EnvSpec, plan: Plan, prefix: Path, lock: Lock | None, progress: Progress
    ) -> Lock:
        try:
            if lock is None:
                progress(f"solving and installing with {self.name}")
                with solver_spec(spec, self.tool) as spec_file:
                    run(
                        self.tool.create_from_spec(prefix, spec_file, spec.channels),
                        what=f"{self.name} creating env '{plan.env}'",
                        cwd=spec.path.parent,
                        env=self._solver_env(spec, plan),
                    )
            else:
                self._install_lock(spec, plan, prefix, lock, progress)
        finally:
            unregister(prefix)
        write_variables(prefix, spec.variables)
        return self.export(spec, plan, prefix, progress)

    def _solver_env(self, spec: EnvSpec, plan: Plan) -> dict[str, str]:
        """Never register builds in ~/.conda/environments.txt (conda; micromamba has no
        setting, see `unregister`); on a machine without a GPU, solve for the CUDA the
        manifest's GPUs need (CONDA_OVERRIDE_CUDA, unless set already)."""
        env = dict(NO_REGISTRATION)
        if (
            plan.gpus
            and "CONDA_OVERRIDE_CUDA" not in os.environ
            and not gpu_check.machine_has_gpu()
        ):
            env["CONDA_OVERRIDE_CUDA"] = cuda_override(spec)
            plan.warnings.append(
                f"no GPU here: solved for CUDA {env['CONDA_OVERRIDE_CUDA']} "
                "(CONDA_OVERRIDE_CUDA; set it to your GPU servers' driver version to choose)"
            )
        return env

    def _install_lock(
        self,
        spec: EnvSpec,
        plan: Plan,
        prefix: Path,
        lock: Lock,
        progress: Progress,
    ) -> None:
        progress(f"installing {len(lock.packages())} locked packages with {self.name}")
        pip = PipPart.of(lock.body)
        if pip.legacy:
            plan.warnings.append(
                f"the lock of env '{plan.env}' keeps only names and versions of its pip "
                "packages (no index options, URLs, commits or hashes); rewrite it with "
                f"`workbench env lock {plan.env}`"
            )
        with tempfile.TemporaryDirectory(prefix="workbench-") as tmp:
            explicit = Path(tmp) / "explicit.txt"
            explicit.write_text(explicit_part(lock.body))
            run(
                self.tool.create_from_explicit(prefix, explicit),
                what=f"{self.name} installing the lock of env '{plan.env}'",
                env=NO_REGISTRATION,
            )
        if pip.requirements:
            progress(f"installing {len(pip.requirements)} locked pip packages")
            conda_pip.install(self.python(prefix), spec.path.parent, pip, plan.env)

    def export(
        self, spec: EnvSpec, plan: Plan, prefix: Path, progress: Progress = lambda _m: None
    ) -> Lock:
        """The lock of what prefix holds now."""
        explicit = run(
            self.tool.export_explicit(prefix), what=f"{self.name} exporting env '{plan.env}'"
        ).stdout
        python = self.python(prefix)
        pip = conda_pip.lock(python, spec, conda_pip.installed(python, prefix), progress)
        return Lock(
            env=plan.env,
            backend=self.name,
            python=self._python_version(prefix),
            platform=this_platform(),
            spec_hash=spec.content_hash(),
            body="\n".join([normalize_explicit(explicit).rstrip(), *pip.lines()]) + "\n",
        )

    def lock(self, spec: EnvSpec, plan: Plan, prefix: Path | None, progress: Progress) -> Lock:
        if prefix is None:
            raise WorkbenchError(
                f"the {self.name} backend locks a built env: run `workbench env create {plan.env}`"
            )
        return self.export(spec, plan, prefix, progress)

    def _conda_packages(self, prefix: Path) -> list[dict]:
        out = run(self.tool.list_json(prefix), what=f"{self.name} listing packages").stdout
        return [p for p in listed_packages(out) if not is_pip_entry(p)]

    def _python_version(self, prefix: Path) -> str:
        return next(
            (p["version"] for p in self._conda_packages(prefix) if p["name"] == "python"), ""
        )

    def installed(self, prefix: Path) -> dict[str, str]:
        """conda's packages from the tool, then what pip installed, from the env's pip."""
        found = {canonicalize_name(p["name"]): p["version"] for p in self._conda_packages(prefix)}
        for dist in conda_pip.installed(self.python(prefix), prefix):
            found[canonicalize_name(dist.name)] = dist.version
        return found


def has_ipykernel(spec: EnvSpec) -> bool:
    """Whether the spec installs ipykernel, as a conda package or in its pip section."""
    if any(dep.name == "ipykernel" for dep in spec.conda):
        return True
    for line in spec.pip:
        if line.kind != "requirement":
            continue
        try:
            if canonicalize_name(Requirement(line.value).name) == "ipykernel":
                return True
        except InvalidRequirement:
            continue  # a path or URL: its name is not known before it is built
    return False


@contextlib.contextmanager
def solver_spec(spec: EnvSpec, tool: condatools.CondaTool) -> Iterator[Path]:
    """The spec the tool reads: spec itself, or a temporary copy beside it (relative pip
    paths resolve from the same folder) with ipykernel added and `nodefaults` left out
    where the tool would take it for a channel."""
    data = dict(spec.raw)
    changed = False
    if not has_ipykernel(spec):
        dependencies = list(data.get("dependencies") or [])
        first_pip = next((i for i, d in enumerate(dependencies) if isinstance(d, dict)), None)
        dependencies.insert(len(dependencies) if first_pip is None else first_pip, "ipykernel")
        data["dependencies"] = dependencies
        changed = True
    if "nodefaults" in spec.channels and tool.drops_nodefaults():
        data["channels"] = [c for c in spec.channels if c != "nodefaults"]
        changed = True
    if not changed:
        yield spec.path
        return
    copy = spec.path.with_name(f".{spec.path.stem}.workbench-{secrets.token_hex(4)}.yml")
    copy.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    try:
        yield copy
    finally:
        copy.unlink(missing_ok=True)


def cuda_override(spec: EnvSpec) -> str:
    """The CUDA version to solve for: the spec's CUDA pin (major.minor), else DEFAULT_CUDA."""
    for dep in spec.conda:
        if dep.name in CUDA_PINS and dep.version:
            match = re.search(r"(\d+)(?:\.(\d+))?", dep.version)
            if match:
                return f"{match[1]}.{match[2] or 0}"
    return DEFAULT_CUDA


def explicit_part(body: str) -> str:
    """The conda packages of a lock body as an explicit file: no pip lines."""
    lines = [line for line in body.splitlines() if not line.startswith("# pip")]
    return "\n".join(lines) + "\n"


def normalize_explicit(text: str) -> str:
    """An explicit list as conda and micromamba read it: with the @EXPLICIT line that
    `mamba list --explicit` (2.0.6+) leaves out, and without the bare `#` lines it prints
    for pip packages (which have no URL)."""
    lines = [line for line in text.splitlines() if line.strip() and line.strip() != "#"]
    if "@EXPLICIT" not in lines:
        head = [line for line in lines if line.startswith("#")]
        lines = [*head, "@EXPLICIT", *(line for line in lines if not line.startswith("#"))]
    return "\n".join(lines) + "\n"


def listed_packages(out: str) -> list[dict]:
    """The packages of `list --json`: a list (conda, micromamba up to 2.8), or an object
    whose "packages" holds it (mamba after 2.8)."""
    data = json.loads(out)
    if isinstance(data, dict):
        data = data.get("packages", [])
    if not isinstance(data, list):
        raise WorkbenchError(f"unexpected `list --json` output: {out[:200]}")
    return [p for p in data if isinstance(p, dict) and "name" in p and "version" in p]


def is_pip_entry(package: dict) -> bool:
    """A pip package as conda (channel pypi, platform pypi) or micromamba (channel pypi,
    build pypi_0) list them."""
    return package.get("channel") == "pypi" or str(package.get("build_string", "")).startswith(
        "pypi"
    )


def write_variables(prefix: Path, variables: dict[str, str]) -> None:
    """The spec's variables into conda-meta/state, where conda, mamba and micromamba read
    them on activation and `run` (a locked rebuild from an explicit file has none)."""
    state_file = prefix / "conda-meta" / "state"
    if not variables or not state_file.parent.is_dir():
        return
    try:
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict):
        state = {}
    env_vars = state.get("env_vars") if isinstance(state.get("env_vars"), dict) else {}
    state["env_vars"] = {**env_vars, **variables}
    write_atomic(state_file, json.dumps(state, indent=2) + "\n")


def unregister(prefix: Path) -> None:
    """Take prefix out of ~/.conda/environments.txt: micromamba and mamba 2 register every
    env they create and have no setting against it (nb_conda_kernels would list a kernel per
    build)."""
    listing = ENVIRONMENTS_TXT.expanduser()
    try:
        lines = listing.read_text().splitlines()
    except OSError:
        return
    wanted = {str(prefix), str(prefix.resolve()) if prefix.exists() else str(prefix)}
    kept = [line for line in lines if line.strip() not in wanted]
    if kept != lines:
        write_atomic(listing, "".join(f"{line}\n" for line in kept))
