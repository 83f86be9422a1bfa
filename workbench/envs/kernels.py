"""Jupyter kernelspecs for project envs, so stock Jupyter tools can start them.

Kernel names are what jupyter_client lists: it lowercases the folder names of kernelspecs
and the names it is asked for. So env TextGen has kernel wb-textgen, and kernel_name and
env_of are the one mapping between the two.

A kernel starts its env's interpreter through the backend's launcher (`kernel_argv`):
the interpreter itself for uv envs; for conda envs the interpreter running
workbench.runtime.activate, which activates the env (activate.d scripts, PATH,
CONDA_PREFIX, as in a terminal) and execs python, so the kernel keeps the pid Jupyter
sends interrupts to. The GPU check starts python the same way (`python_command`).
"""

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench.gpus import assign
from workbench.jsonfiles import write_atomic
from workbench.project import Project
from workbench.runtime import contract

PREFIX = "wb-"
LAUNCHER_ARGS = ("-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}")
# Given to the kernels workbench starts itself (run, test, sweep): without it ipykernel
# warns on every start that its TCP sockets are unencrypted, which says nothing to a user
# whose kernels listen on 127.0.0.1 only and are signed with a per-kernel key.
QUIET_KERNEL_ARGS = ("--IPKernelApp.log_level=ERROR",)


@dataclass(frozen=True)
class KernelSpec:
    name: str
    path: Path  # the kernelspec folder
    display_name: str
    env: str
    python: str
    scope: str  # "project" or "user"
    project_root: str | None = None  # the project that registered it
    argv: tuple[str, ...] = ()

    @property
    def env_exists(self) -> bool:
        return Path(self.python).exists()

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "env": self.env,
            "python": self.python,
            "scope": self.scope,
            "path": str(self.path),
            "env_exists": self.env_exists,
        }


def user_kernels_dir() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "kernels"


def kernel_name(project: Project, env: str, user: bool = False) -> str:
    """wb-NAME in the project; wb-PROJECT-NAME user-wide, so two projects never clash;
    in lower case, as Jupyter lists it."""
    name = f"{PREFIX}{_slug(project.name)}-{env}" if user else f"{PREFIX}{env}"
    return name.lower()


def env_of(project: Project, kernel: str) -> str | None:
    """The project env whose project-scoped kernel is named kernel (in any case), or None."""
    wanted = kernel.lower()
    return next((env for env in project.envs if kernel_name(project, env) == wanted), None)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-").lower()


def kernel_argv(launcher: Sequence[str]) -> list[str]:
    """The kernelspec argv: launcher (the command that starts the env's python) and
    ipykernel's arguments."""
    return [*launcher, *LAUNCHER_ARGS]


def python_command(spec: KernelSpec) -> tuple[list[str], dict[str, str]]:
    """How the kernel starts python: its argv without ipykernel's arguments, and the
    environment its kernelspec adds."""
    data = json.loads((spec.path / "kernel.json").read_text())
    argv = list(data["argv"])
    if tuple(argv[-len(LAUNCHER_ARGS) :]) == LAUNCHER_ARGS:
        argv = argv[: -len(LAUNCHER_ARGS)]
    return argv, dict(data.get("env", {}))


def register(
    project: Project,
    env: str,
    python: Path,
    python_version: str,
    variables: dict[str, str],
    gpus: tuple[str, ...] | None,
    metadata: dict,
    user: bool = False,
    launcher: Sequence[str] | None = None,
    gpu_count: int | None = None,
) -> KernelSpec:
    """Write (or overwrite) the env's kernelspec and return it; launcher starts python
    (default: python itself). An env that asks for GPUs (pinned or a count) gets the
    workbench-gpus provisioner, which sets CUDA_VISIBLE_DEVICES at each launch
    (workbench.gpus.provisioner)."""
    name = kernel_name(project, env, user)
    base = user_kernels_dir() if user else project.kernels_dir
    folder = base / name
    folder.mkdir(parents=True, exist_ok=True)
    minor = ".".join(python_version.split(".")[:2])
    display = f"Python {minor} ({env}, {project.name})" if user else f"Python {minor} ({env})"
    kernel_env = {**variables, contract.ENV.name: env, contract.PROJECT.name: str(project.root)}
    argv = kernel_argv(launcher or [str(python)])
    spec = {
        "argv": argv,
        "display_name": display,
        "language": "python",
        "interrupt_mode": "signal",
        "env": kernel_env,
        "metadata": {
            "debugger": True,
            "workbench": {
                **metadata,
                "env": env,
                "project_root": str(project.root),
                "python": str(python),
            },
        },
    }
    if gpus or gpu_count:
        spec["metadata"]["kernel_provisioner"] = assign.provisioner_metadata(gpus, gpu_count)
    write_atomic(folder / "kernel.json", json.dumps(spec, indent=1) + "\n")
    scope = "user" if user else "project"
    return KernelSpec(
        name, folder, display, env, str(python), scope, str(project.root), tuple(argv)
    )


def _read(folder: Path, scope: str) -> KernelSpec | None:
    try:
        spec = json.loads((folder / "kernel.json").read_text())
        meta = spec["metadata"]["workbench"]
        return KernelSpec(
            folder.name.lower(),
            folder,
            spec["display_name"],
            meta["env"],
            meta.get("python", spec["argv"][0]),
            scope,
            meta.get("project_root"),
            tuple(spec["argv"]),
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def listed(project: Project) -> list[KernelSpec]:
    """The project's kernelspecs: project-scoped ones and its user-wide ones."""
    found: list[KernelSpec] = []
    for base, scope in ((project.kernels_dir, "project"), (user_kernels_dir(), "user")):
        if not base.is_dir():
            continue
        for folder in sorted(base.iterdir()):
            spec = _read(folder, scope) if folder.name.startswith(PREFIX) else None
            if spec and (scope == "project" or spec.project_root == str(project.root)):
                found.append(spec)
    return found


def remove(spec: KernelSpec) -> None:
    shutil.rmtree(spec.path, ignore_errors=True)


def prune(project: Project) -> list[KernelSpec]:
    """Remove the project's kernelspecs whose env or interpreter is gone."""
    gone = [k for k in listed(project) if k.env not in project.envs or not k.env_exists]
    for spec in gone:
        remove(spec)
    return gone
