"""Which platform a conda package or an exported spec belongs to: an export made on
Windows or macOS names builds and packages that do not exist for Linux."""

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.errors import excerpt

if TYPE_CHECKING:
    from workbench.envs.spec import CondaDep

# Packages built for one platform only: in an export they tell where it was made.
PLATFORM_PACKAGES = {
    "Windows": {
        "vc",
        "vc14_runtime",
        "vs2015_runtime",
        "ucrt",
        "win_inet_pton",
        "wincertstore",
        "pywin32",
        "pywin32-ctypes",
        "pywinpty",
        "winpty",
    },
    "macOS": {"libcxx", "libcxxabi", "appnope", "cctools", "ld64", "tapi"},
}
PLATFORM_PREFIXES = {"Windows": ("m2w64-", "msys2-"), "macOS": ("pyobjc-",)}
PLATFORM_SUFFIXES = {"Windows": ("_win-64", "_win-32"), "macOS": ("_osx-64", "_osx-arm64")}


def platform_of(name: str) -> str | None:
    """The platform ("Windows", "macOS") a conda package exists for alone, if any."""
    for platform, names in PLATFORM_PACKAGES.items():
        if (
            name in names
            or name.startswith(PLATFORM_PREFIXES[platform])
            or name.endswith(PLATFORM_SUFFIXES[platform])
        ):
            return platform
    return None


def host_platform() -> str:
    return {"linux": "Linux", "darwin": "macOS", "win32": "Windows"}.get(sys.platform, sys.platform)


def foreign_export(
    path: Path, prefix: object, conda: "list[CondaDep]"
) -> tuple[str | None, str | None]:
    """(platform, one-line note) when the spec is an export made on another platform:
    its prefix (C:\\..., /Users/...) or packages that exist for one platform only say so."""
    signals: dict[str, list[str]] = {}
    if isinstance(prefix, str):
        if re.match(r"^[A-Za-z]:[\\/]", prefix) or "\\" in prefix:
            signals.setdefault("Windows", []).append(f"prefix {prefix}")
        elif prefix.startswith("/Users/"):
            signals.setdefault("macOS", []).append(f"prefix {prefix}")
    only: dict[str, list[str]] = {}
    for dep in conda:
        platform = platform_of(dep.name)
        if platform:
            only.setdefault(platform, []).append(dep.name)
    for platform, names in only.items():
        signals.setdefault(platform, []).append(f"{platform}-only packages {', '.join(names)}")
    host = host_platform()
    foreign = next((p for p in signals if p != host), None)
    if foreign is None:
        return None, None
    builds = sum(1 for dep in conda if dep.build)
    if builds:
        signals[foreign].append(f"{builds} exact build strings")
    evidence = excerpt("; ".join(signals[foreign]), 300)
    note = (
        f"{path}: a `conda env export` made on {foreign} ({evidence}):"
        f" its builds and {foreign}-only packages do not exist for {host}; "
        f"`workbench env import NAME --from {path}` writes a portable spec"
    )
    return foreign, note
