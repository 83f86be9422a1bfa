"""Image builders by name, and the one to use: --builder, else the first that works here
(podman, docker, buildah). Adding one touches one module and this registry."""

from workbench.errors import WorkbenchError
from workbench.serving.builders.base import Builder, BuildRequest, ImageFacts, Progress

NAMES = ("podman", "docker", "buildah")


def get(name: str) -> Builder:
    if name == "podman":
        from workbench.serving.builders.podman import PodmanBuilder

        return PodmanBuilder()
    if name == "buildah":
        from workbench.serving.builders.podman import BuildahBuilder

        return BuildahBuilder()
    if name == "docker":
        from workbench.serving.builders.docker import DockerBuilder

        return DockerBuilder()
    raise WorkbenchError(f"unknown builder '{name}' (choose from {', '.join(NAMES)})")


def pick(name: str | None) -> Builder:
    """The named builder if it works here, else the first of NAMES that does."""
    if name:
        builder = get(name)
        problem = builder.problem()
        if problem:
            raise WorkbenchError(f"builder '{name}' cannot build here: {problem}")
        return builder
    problems = {}
    for candidate in NAMES:
        builder = get(candidate)
        problems[candidate] = builder.problem()
        if problems[candidate] is None:
            return builder
    tried = "; ".join(f"{n}: {p}" for n, p in problems.items())
    raise WorkbenchError(
        f"no image builder works here ({tried}); install podman (or buildah, or docker)"
    )


def runner(builder: Builder) -> Builder:
    """The builder itself where it runs containers; for buildah, podman (same storage)."""
    if builder.runs_containers:
        return builder
    podman = get("podman")
    if podman.problem():
        raise WorkbenchError("buildah builds but does not run containers; --run needs podman")
    return podman


__all__ = ["Builder", "BuildRequest", "ImageFacts", "Progress", "NAMES", "get", "pick", "runner"]
