"""podman and buildah: one build engine (buildah's), two command lines.

Images are built in docker format (OCI image configs have no HEALTHCHECK), with every
intermediate layer cached (buildah alone caches nothing without --layers), on the host
network, pulling the base only when it is missing (a digest never changes). Both read
CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF from the
environment, so a machine that needs its own settings (see the README) sets those.
"""

import json
import re
from pathlib import Path

from workbench.serving.builders.base import Builder, BuildRequest, ImageFacts

UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def _build_options(request: BuildRequest) -> list[str]:
    return ["--format", "docker", "--layers", "--network", "host", *request.options()]


class PodmanBuilder(Builder):
    name = "podman"

    def build_argv(self, request: BuildRequest) -> list[str]:
        # `--pull=missing` as one word: `--pull missing` reads "missing" as the context
        return [self.exe, "build", "--pull=missing", *_build_options(request), str(request.context)]

    def env(self) -> dict[str, str]:
        # Without systemd, podman cannot schedule the HEALTHCHECK timer and logs an error for
        # every container; `podman healthcheck run NAME` still checks on demand.
        return {} if Path("/run/systemd/system").is_dir() else {"DISABLE_HC_SYSTEMD": "true"}


class BuildahBuilder(Builder):
    name = "buildah"
    runs_containers = False

    def build_argv(self, request: BuildRequest) -> list[str]:
        # buildah 1.28 reads --pull=false as "pull only when missing"
        return [self.exe, "bud", "--pull=false", *_build_options(request), str(request.context)]

    def inspect(self, ref: str) -> ImageFacts:
        data = json.loads(self._cli("inspect", "--type", "image", ref, what=f"inspecting {ref}"))
        config = (data.get("Docker") or data.get("OCIv1") or {}).get("config") or {}
        listed = json.loads(self._cli("images", "--json", ref, what=f"listing {ref}"))
        labels = config.get("Labels") or {}
        return ImageFacts(data["FromImageID"], _bytes(listed[0]["size"]), labels)

    def image_id(self, ref: str) -> str | None:
        found = self._cli("images", "--json", ref, what=f"listing {ref}", check=False)
        listed = json.loads(found) if found else []
        return listed[0]["id"] if listed else None

    def remove_if_untagged(self, image: str) -> None:
        found = self._cli("images", "--json", image, what=f"listing {image}", check=False)
        if found and not json.loads(found)[0].get("names"):
            self._run("rmi", image, what=f"removing {image}", check=False)

    def save(self, ref: str, archive: Path) -> None:
        self._cli("push", ref, f"docker-archive:{archive}", what=f"saving {ref}", timeout=1800)


def _bytes(size: str) -> int:
    """buildah's "1.2 GB" as bytes (it lists no exact size)."""
    match = re.fullmatch(r"([0-9.]+)\s*([KMGT]?B)", size.strip(), re.I)
    return int(float(match[1]) * UNITS[match[2].upper()]) if match else 0
