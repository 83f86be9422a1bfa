"""The interface every image builder implements: the recipe (workbench.serving.images) says
what to build; a builder says how its command line is asked, as env backends hide conda/uv.

A build streams its output into a log file and reports its steps; a failure is one
WorkbenchError ending with the build's last lines. Builders that also run containers
(podman, docker) share one command set for it; buildah only builds.
"""

import json
import re
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.subprocesses import last_lines, run, spawn

Progress = Callable[[str], None]
# "STEP 3/9: COPY ..." and "[2/2] STEP 3/9: ..." (podman, buildah); "#7 [env 2/4] RUN ..."
# (BuildKit's plain progress)
STEP_LINE = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: |^#\d+ \[[^\]]+ \d+/\d+\] ")


@dataclass(frozen=True)
class BuildRequest:
    """One build: the Containerfile and its context, what reaches RUN steps only (secret
    files by id, host folders as named build contexts), and where results go."""

    containerfile: Path
    context: Path
    tag: str
    iidfile: Path
    log: Path
    secrets: dict[str, Path] = field(default_factory=dict)
    contexts: dict[str, Path] = field(default_factory=dict)

    def options(self) -> list[str]:
        """The build options every builder spells the same way (docker, podman, buildah)."""
        args = ["--iidfile", str(self.iidfile), "--tag", self.tag]
        args += ["--file", str(self.containerfile)]
        for secret, path in self.secrets.items():
            args += ["--secret", f"id={secret},src={path}"]
        for name, path in self.contexts.items():
            args += ["--build-context", f"{name}={path}"]
        return args


@dataclass(frozen=True)
class ImageFacts:
    id: str
    size: int  # bytes, unpacked
    labels: dict[str, str]


class Builder(ABC):
    """Builds images with one tool's command line (and runs containers, where it can)."""

    name: str
    runs_containers = True

    @property
    def exe(self) -> str:
        found = shutil.which(self.name)
        if not found:
            raise WorkbenchError(f"builder '{self.name}' is not installed (not on PATH)")
        return found

    def problem(self) -> str | None:
        """Why this builder cannot build here (not installed, no daemon), or None."""
        if not shutil.which(self.name):
            return "not installed"
        probe = self._run("info", what=f"{self.name} info", check=False, timeout=60)
        if probe.returncode != 0:
            return last_lines(probe.stderr or probe.stdout, 1) or f"exit {probe.returncode}"
        return None

    @abstractmethod
    def build_argv(self, request: BuildRequest) -> list[str]:
        """The command line that builds request."""

    def build(self, request: BuildRequest, progress: Progress) -> str:
        """Build; the image ID. The whole output goes to request.log, steps to progress."""
        argv = self.build_argv(request)
        request.iidfile.unlink(missing_ok=True)
        request.log.parent.mkdir(parents=True, exist_ok=True)
        with request.log.open("w") as log:
            proc = spawn(
                argv,
                what=f"{self.name} build",
                env=self.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            try:
                for line in proc.stdout:
                    log.write(line)
                    if STEP_LINE.match(line):
                        progress(line.strip()[:160])
            except BaseException:  # Ctrl-C: the build stops with us
                proc.terminate()
                proc.wait(30)
                raise
            proc.wait()
        if proc.returncode != 0:
            tail = last_lines(request.log.read_text(errors="replace"), 6)
            raise WorkbenchError(
                f"{self.name} build failed (exit {proc.returncode}; log {request.log}): {tail}",
                CHECK_FAILED,
            )
        return request.iidfile.read_text().strip().removeprefix("sha256:")

    def env(self) -> dict[str, str]:
        """Variables every command of this tool gets on top of the caller's environment."""
        return {}

    def inspect(self, ref: str) -> ImageFacts:
        out = self._cli("image", "inspect", ref, what=f"inspecting {ref}")
        data = json.loads(out)[0]
        labels = (data.get("Config") or {}).get("Labels") or data.get("Labels") or {}
        return ImageFacts(data["Id"].removeprefix("sha256:"), int(data.get("Size") or 0), labels)

    def save(self, ref: str, archive: Path) -> None:
        """Write the image as a docker-archive tarball (what SBOM tools read)."""
        self._cli("save", "--output", str(archive), ref, what=f"saving {ref}", timeout=1800)

    def image_id(self, ref: str) -> str | None:
        """The ID of the image ref names, or None when there is none."""
        found = self._cli("image", "inspect", "--format", "{{.Id}}", ref, what=ref, check=False)
        return found.removeprefix("sha256:") or None

    def remove_if_untagged(self, image: str) -> None:
        """Remove image if no tag names it any more and no container uses it."""
        found = self._cli("image", "inspect", image, what=f"inspecting {image}", check=False)
        if found and not json.loads(found)[0].get("RepoTags"):
            self._run("rmi", image, what=f"removing {image}", check=False)

    # --- containers (podman and docker share these) -------------------------------------

    def run_detached(self, image: str, name: str, env: dict[str, str], volumes: list[str]) -> str:
        """Start image as container name on the host network; its ID."""
        args = ["run", "--detach", "--name", name, "--network", "host"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        for volume in volumes:
            args += ["--volume", volume]
        return self._cli(*args, image, what=f"starting {name}")

    def remove_container(self, name: str) -> None:
        """Remove container name, running or not; nothing when there is none."""
        self._cli("rm", "--force", name, what=f"removing {name}", check=False)

    def container_state(self, name: str) -> dict:
        """The container's State object (Status, Running, ExitCode, Health…); {} if gone."""
        found = self._cli("container", "inspect", name, what=f"inspecting {name}", check=False)
        return (json.loads(found or "[{}]")[0] or {}).get("State") or {}

    def exec_ok(self, name: str, argv: list[str]) -> bool:
        """Whether argv exits 0 inside running container name."""
        proc = self._run("exec", name, *argv, what=f"exec in {name}", check=False, timeout=60)
        return proc.returncode == 0

    def logs(self, name: str, lines: int = 20) -> str:
        proc = self._run("logs", "--tail", str(lines), name, what=f"logs of {name}", check=False)
        return proc.stdout + proc.stderr

    def _run(
        self, *args: str, what: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([self.exe, *args], what=what, timeout=timeout, env=self.env(), check=check)

    def _cli(self, *args: str, what: str, timeout: float = 300, check: bool = True) -> str:
        """The tool's stdout; with check=False, "" when it fails."""
        proc = self._run(*args, what=what, timeout=timeout, check=check)
        return proc.stdout.strip() if proc.returncode == 0 else ""
