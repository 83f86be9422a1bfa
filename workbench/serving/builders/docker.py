"""docker with BuildKit: secrets, named build contexts and cache mounts need it (docker 23+
uses it by default; DOCKER_BUILDKIT=1 asks older ones). The daemon must answer `docker info`.
"""

from workbench.serving.builders.base import Builder, BuildRequest


class DockerBuilder(Builder):
    name = "docker"

    def build_argv(self, request: BuildRequest) -> list[str]:
        args = [self.exe, "build", "--progress=plain", "--network", "host", *request.options()]
        return [*args, str(request.context)]

    def env(self) -> dict[str, str]:
        return {"DOCKER_BUILDKIT": "1"}
