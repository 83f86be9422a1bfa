"""Build stamps: a no-op `env create NAME` answered without the envs stack.

After every `env create` that leaves an env in use (built, reactivated or unchanged),
.workbench/stamps/NAME.json keeps what the unchanged-decision saw (the world: manifest,
spec, the files it includes, lock, the envs/ listing, the active build's record, the
kernelspec, the runtime links, the variables and tools that pick the default backend),
the --json data of the unchanged result, and the line the console shows for it, once
per kind of console (a terminal or not, and the variables rich reads).

The next `env create NAME`, with no flag that changes the decision, looks at the world
again before importing anything else: when every observation is the same it answers
what the full path would; anything different (or no stamp) takes the full path, which
writes a fresh stamp. The stamp lists what to observe, so the check here knows nothing
of specs or backends. Only the standard library is imported here: it runs before the
parser's chosen command module is.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

import workbench
from workbench.results import Result

VERSION = 1
MANIFEST = "workbench.toml"  # workbench.manifest.MANIFEST (not imported: it loads tomllib)
ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# What rich reads to decide how a line is shown (colour, width), beside isatty.
CONSOLE_VARIABLES = (
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "COLUMNS",
    "LINES",
    "JUPYTER_COLUMNS",
    "JUPYTER_LINES",
)
# `env create` options that change what it decides: given any, the full path runs.
DECIDING_FLAGS = ("all", "locked", "force", "user", "backend", "drop_conda_only", "nearest_python")


def path(root: Path, env: str) -> Path:
    return root / ".workbench" / "stamps" / f"{env}.json"


def observe(
    files: Iterable[Path] = (),
    folders: Iterable[Path] = (),
    links: Iterable[Path] = (),
    variables: Iterable[str] = (),
    tools: Iterable[str] = (),
) -> dict:
    """The world as the stamp keeps it: files by content hash, folders by their listing
    (hidden names left out, as the manifest leaves them), links by where they lead,
    variables by value, tools by where PATH finds them (None: absent)."""
    return {
        "files": {str(p): _digest(p) for p in files},
        "folders": {str(p): _listing(p) for p in folders},
        "links": {str(p): os.path.realpath(p) if os.path.islink(p) else None for p in links},
        "variables": {name: os.environ.get(name) for name in variables},
        "tools": {name: shutil.which(name) for name in tools},
    }


def _digest(file: Path) -> str | None:
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest()
    except OSError:
        return None


def _listing(folder: Path) -> list[str] | None:
    try:
        return sorted(name for name in os.listdir(folder) if not name.startswith("."))
    except OSError:
        return None


def holds(world: dict) -> bool:
    """Whether observing again gives world."""
    try:
        again = observe(
            world["files"], world["folders"], world["links"], world["variables"], world["tools"]
        )
    except (KeyError, TypeError):
        return False
    return again == world


def _context(root: Path) -> dict:
    """What every stamp also depends on: this workbench, its interpreter, the machine
    (a lock is made for one platform) and the project's place."""
    return {
        "workbench": workbench.__version__,
        "package": os.path.realpath(os.path.dirname(workbench.__file__)),
        "python": sys.executable,
        "platform": f"{sys.platform}-{os.uname().machine}",
        "root": str(root),
    }


def console_kind() -> str:
    """Which rendering of a line this process's stderr gets."""
    stream = sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    kind = [tty, getattr(stream, "encoding", None), *map(os.environ.get, CONSOLE_VARIABLES)]
    return json.dumps(kind)


def write(root: Path, env: str, world: dict, result: dict, shown: str) -> None:
    """Keep world and the unchanged result of env (shown: its console lines, for this
    kind of console); renderings for other consoles stay while the rest is the same."""
    from workbench.jsonfiles import write_atomic  # the writer, on the full path only

    file = path(root, env)
    stamp = {"version": VERSION, **_context(root), "world": world, "result": result}
    old = _read(file)
    kept = old.get("shown") if old and _same(old, stamp) else None
    stamp["shown"] = {**(kept if isinstance(kept, dict) else {}), console_kind(): shown}
    file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(file, json.dumps(stamp, indent=1) + "\n")


def remove(root: Path, env: str) -> None:
    path(root, env).unlink(missing_ok=True)


def _same(old: dict, new: dict) -> bool:
    return {k: v for k, v in old.items() if k != "shown"} == new


def _read(file: Path) -> dict | None:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unchanged(args: argparse.Namespace) -> Result | None:
    """`env create NAME…`'s result when each env's stamp still holds (nothing to do);
    None when any does not, or when a flag or no name asks for the full path."""
    if not args.names or any(getattr(args, flag, None) for flag in DECIDING_FLAGS):
        return None
    root = _root(args.project or Path.cwd())
    if root is None:
        return None
    kind = console_kind()
    data, shown = [], []
    for env in args.names:
        stamp = _read(path(root, env)) if ENV_NAME.fullmatch(env) else None
        if stamp is None or stamp.get("version") != VERSION:
            return None
        if any(stamp.get(key) != value for key, value in _context(root).items()):
            return None
        renderings, world = stamp.get("shown"), stamp.get("world")
        lines = renderings.get(kind) if isinstance(renderings, dict) else None
        if not (isinstance(lines, str) or args.json) or not isinstance(world, dict):
            return None
        if not _inside(world, root) or not holds(world):
            return None
        data.append(stamp.get("result"))
        shown.append(lines or "")
    text = "".join(shown)

    def show() -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    return Result(data, show)


def _inside(world: dict, root: Path) -> bool:
    """Whether the stamp looks at files of the project only (nothing has checked it yet)."""
    top = os.path.join(root, "")
    kinds = ("files", "folders", "links")
    return all(isinstance(world.get(k), dict) for k in kinds) and all(
        name.startswith(top) for kind in kinds for name in world[kind]
    )


def _root(start: Path) -> Path | None:
    """The project root as workbench.project.find_root finds it, or None."""
    start = Path(os.path.realpath(start))
    for candidate in (start, *start.parents):
        if (candidate / MANIFEST).is_file():
            return candidate
    return start if (start / "envs").is_dir() else None
