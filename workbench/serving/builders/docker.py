"""docker with BuildKit: secrets, named build contexts and cache mounts need it (docker 23+
uses it by default; DOCKER_BUILDKIT=1 asks older ones). The daemon must answer `docker info`.
"""

from workbench.serving.builders.base import Builder, BuildRequest


class DockerBuilder(Builder):
    name = "docker"

    def build_argv(self, request: BuildRequest) -> list[str]:
        args = [self.exe, "build", "--progress=plain", "--network", "host"]
        args += ["--iidfile", str(request.iidfile), "--tag", request.tag]
        args += ["--file", str(request.containerfile)]
        for secret, path in request.secrets.items():
            args += ["--secret", f"id={secret},src={path}"]
        for name, path in request.contexts.items():
            args += ["--build-context", f"{name}={path}"]
        return [*args, str(request.context)]

    def env(self) -> dict[str, str]:
        return {"DOCKER_BUILDKIT": "1"}
