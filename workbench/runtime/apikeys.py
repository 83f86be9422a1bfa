"""API keys, read one way by the tool, the engine and the apps that front an engine: the
words of WORKBENCH_API_KEYS (comma- or space-separated), then the keys file's lines (one key a
line, `#` comments; mode 0600, refused when other users could read it).

Keys travel by environment or by the file's path, never in argv; an engine removes the
variable once read, so no process it starts inherits it.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import MutableMapping

from workbench.runtime import contract


def check_private(path: Path) -> None:
    """ValueError when users other than its owner may read or write the keys file."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"API keys file {path} is open to other users (mode {mode:04o}); chmod 600 {path}"
        )


def read(
    path: Path | None,
    environ: MutableMapping[str, str] | None = None,
    remove: bool = False,
) -> list[str]:
    """The keys of WORKBENCH_API_KEYS (removed from environ when remove), then the file's."""
    variable = contract.API_KEYS
    keys = list((variable.pop(environ) if remove else variable.get(environ)) or [])
    if path is not None:
        check_private(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return keys
