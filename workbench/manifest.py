"""workbench.toml: every table and key declared once (SCHEMA: type, default, bounds and a line
of description), read into typed entries and checked the same way in every table.

An unknown table or key, a missing key, a value of the wrong type or out of bounds: each is
refused in one line naming the file and the line, with the closest valid name when there is
one (`workbench.toml:7: [envs.x] unknown key 'gpu'; did you mean 'gpus'?`). [engines.NAME]
takes its settings from the engine's own declaration (workbench.runtime.engine.settings), so
what the manifest accepts the engine accepts. `reference()` gives the schema as rows, for the
docs' reference of every key.
"""

import difflib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from workbench.errors import WorkbenchError, excerpt
from workbench.runtime.engine.settings import SETTINGS, EngineSettings
from workbench.textfiles import read_text

MANIFEST = "workbench.toml"
# A manifest is a few hundred bytes; anything near this is not one, and parsing it would
# take seconds.
MAX_MANIFEST_BYTES = 1 << 20
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DIGITS = re.compile(r"[0-9]+")
# A host name, an address or a Host alias from ~/.ssh/config; never an ssh option (-…).
SSH_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:%-]*")
SPEC_SUFFIXES = (".yml", ".yaml")
# A manifest may also point an env at a requirements file: a pip-only env.
MANIFEST_SPEC_SUFFIXES = (*SPEC_SUFFIXES, ".txt")


# -- the entries a manifest declares --------------------------------------------------------
@dataclass(frozen=True)
class EnvEntry:
    """One model env: its spec file and the GPUs its kernels and apps may see: pinned
    (`gpus = [0, 1]`) or a count leased at each start (`gpus = 1`)."""

    name: str
    spec_path: Path
    gpus: tuple[str, ...] | None = None
    gpu_count: int | None = None

    @property
    def gpu_request(self) -> tuple[str, ...] | None:
        """The GPUs a build checks the env sees: the pinned ones, or as many as the count
        asks (which ones, leases decide at each start)."""
        if self.gpus:
            return self.gpus
        return tuple(str(i) for i in range(self.gpu_count)) if self.gpu_count else None

    @property
    def lock_path(self) -> Path:
        return self.spec_path.with_suffix(".lock")


@dataclass(frozen=True)
class AppEntry:
    """One Gradio app: its file, the env it runs in, its port, and its model or the engine
    it fronts."""

    name: str
    env: str
    file: Path
    port: int
    model: str | None = None  # a path (relative to the project) or a hub id
    engine: str | None = None  # the [engines.NAME] this app streams from


@dataclass(frozen=True)
class EngineEntry:
    """One engine: a model served with an OpenAI-compatible API from its env, and how
    (settings: see workbench.runtime.engine.settings)."""

    name: str
    env: str
    model: str  # a folder (relative to the project), pkg:PACKAGE/folder or hf:HUB_ID
    port: int
    settings: EngineSettings = EngineSettings()


@dataclass(frozen=True)
class LabEntry:
    """How `workbench lab` serves JupyterLab."""

    port: int = 8888
    ssh_host: str | None = None  # the name users give this server in ~/.ssh/config


class Manifest(NamedTuple):
    """What workbench.toml (and envs/NAME.yml) declare, checked."""

    name: str | None  # [project] name; None: the folder's name
    cache_dir: Path | None
    lab: LabEntry
    envs: dict[str, EnvEntry]
    apps: dict[str, AppEntry]
    engines: dict[str, EngineEntry]
    # a notebook file or folder (relative to the root) -> the env its notebooks run in
    notebooks: dict[str, str]


# -- value checks that need nothing but the value ---------------------------------------------
def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _folder(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError('expected a folder, e.g. "/data/workbench-cache"')
    return value


def _port(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError("expected a number 1-65535")
    return value


def _ssh_host(value: object) -> str:
    if not isinstance(value, str) or not SSH_HOST.fullmatch(value):
        raise ValueError(
            "expected a host name or a Host alias from ~/.ssh/config (letters, digits, "
            ". - _ :, not starting with -)"
        )
    return value


def _path(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ValueError("expected a path in the project")
    return value


def _model(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ValueError("expected a folder in the project, pkg:PACKAGE/folder or hf:HUB_ID")
    return value


def _hub_or_path(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a path or hub id")
    return value


def _gpus(value: object) -> tuple[tuple[str, ...] | None, int | None]:
    """(pinned indices, count): a list or "0,1" pins, a number asks for that many."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            return None, value
        raise ValueError("a count of GPUs is at least 1")
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int | str) and DIGITS.fullmatch(str(v).strip()) for v in value)
    ):
        return tuple(str(v).strip() for v in value), None
    raise ValueError('expected GPU indices such as [0, 1] or "0,1", or a count such as 1')


def check_ssh_host(value: object, where: str) -> str:
    """value, checked to be a host name, address or ~/.ssh/config alias (where names the
    field or option in the error)."""
    try:
        return _ssh_host(value)
    except ValueError as exc:
        raise WorkbenchError(f"{where} = {excerpt(repr(value))}: {exc}") from None


# -- the schema -------------------------------------------------------------------------------
class Key(NamedTuple):
    """One key of a table: what the reference shows, and the check of its value (which
    returns the value as the entry holds it, or raises ValueError saying what is valid)."""

    name: str
    type: str
    description: str
    default: object = None  # None: unset unless given
    required: bool = False
    low: float | None = None
    high: float | None = None
    check: Callable[[object], object] | None = None  # None: checked against other tables


class Table(NamedTuple):
    """One table: [name], or [name.NAME] once per name when named."""

    name: str
    description: str
    keys: tuple[Key, ...] = ()
    named: bool = False
    any_key: Key | None = None  # keys the user chooses ([notebooks]), each value checked so

    @property
    def header(self) -> str:
        return f"[{self.name}.NAME]" if self.named else f"[{self.name}]"


def _port_key(default: int, what: str) -> Key:
    return Key("port", "port", what, default, low=1, high=65535, check=_port)


def _engine_setting_keys() -> tuple[Key, ...]:
    keys = []
    for setting in SETTINGS:
        kind = {int: "whole number", float: "number", str: "string"}[setting.kind]
        if setting.choices:
            kind = " | ".join(setting.choices)
        keys.append(
            Key(
                setting.name,
                kind,
                setting.help,
                setting.default,
                low=setting.low,
                check=setting.check,
            )
        )
    return tuple(keys)


SCHEMA: tuple[Table, ...] = (
    Table(
        "project",
        "The project as a whole.",
        (
            Key("name", "string", "the project's name (default: its folder's name)", check=_string),
            Key(
                "cache_dir",
                "folder",
                "package cache shared by builds (WORKBENCH_CACHE_DIR overrides it)",
                check=_folder,
            ),
        ),
    ),
    Table(
        "envs",
        "A model env; envs/NAME.yml are envs without a table too.",
        (
            Key(
                "spec",
                "path",
                "its environment.yml or requirements file (default envs/NAME.yml)",
                check=_path,
            ),
            Key(
                "gpus",
                "GPU indices or count",
                'GPUs pinned ([0, 1] or "0,1") or a count leased at each start (1)',
                low=1,
                check=_gpus,
            ),
        ),
        named=True,
    ),
    Table(
        "engines",
        "A model served with an OpenAI-compatible API from its env.",
        (
            Key("env", "env name", "the env it runs in", required=True),
            Key(
                "model",
                "model reference",
                "a folder in the project, pkg:PACKAGE/folder or hf:HUB_ID",
                required=True,
                check=_model,
            ),
            _port_key(8000, "the port it serves on (the next free one when taken)"),
            *_engine_setting_keys(),
        ),
        named=True,
    ),
    Table(
        "apps",
        "A Gradio app, run in its env.",
        (
            Key("env", "env name", "the env it runs in", required=True),
            Key("file", "path", "the app's Python file", required=True, check=_path),
            _port_key(7860, "the port it serves on (the next free one when taken)"),
            Key("model", "path or hub id", "the model it loads", check=_hub_or_path),
            Key("engine", "engine name", "the [engines.NAME] it streams from"),
        ),
        named=True,
    ),
    Table(
        "lab",
        "JupyterLab, as `workbench lab` serves it.",
        (
            _port_key(LabEntry.port, "the port Lab serves on (the next free one when taken)"),
            Key("ssh_host", "host", "this server's Host in users' ~/.ssh/config", check=_ssh_host),
        ),
    ),
    Table(
        "notebooks",
        "The env a notebook's kernel runs in when its kernelspec names no project kernel.",
        any_key=Key("PATH", "env name", "a notebook or folder (relative to the project) = an env"),
    ),
)
TABLES = {table.name: table for table in SCHEMA}


def reference() -> list[dict[str, object]]:
    """Every key of every table as a row (for the docs' workbench.toml reference)."""
    rows = []
    for table in SCHEMA:
        for key in (*table.keys, *([table.any_key] if table.any_key else [])):
            rows.append(
                {
                    "table": table.header,
                    "key": key.name,
                    "type": key.type,
                    "default": key.default,
                    "required": key.required,
                    "low": key.low,
                    "high": key.high,
                    "description": key.description,
                }
            )
    return rows


# -- reading ----------------------------------------------------------------------------------
def read(root: Path) -> Manifest:
    """root's workbench.toml (when there is one) and envs/NAME.yml, checked."""
    path = root / MANIFEST
    text = read_text(path, MAX_MANIFEST_BYTES, "manifest") if path.is_file() else ""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkbenchError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise WorkbenchError(f"{path}: invalid TOML: nested too deeply") from None
    return _Reader(root, path, text).manifest(data)


class _Reader:
    """Checks a parsed manifest against SCHEMA; its errors name the file and the line."""

    def __init__(self, root: Path, path: Path, text: str):
        self.root, self.path, self.text = root, path, text
        self._index: dict[tuple[str, ...], int] | None = None

    def error(self, keys: tuple[str, ...], message: str) -> WorkbenchError:
        """message, after the file and the line of keys (or of the nearest table above)."""
        if self._index is None:
            self._index = _line_index(self.text)
        for end in range(len(keys), 0, -1):
            if keys[:end] in self._index:
                return WorkbenchError(f"{self.path}:{self._index[keys[:end]]}: {message}")
        return WorkbenchError(f"{self.path}: {message}")

    def manifest(self, data: dict) -> Manifest:
        for name in data:
            if name not in TABLES:
                hint = _hint(name, TABLES) or f" (valid: {', '.join(TABLES)})"
                raise self.error((name,), f"unknown table [{excerpt(name)}]{hint}")
        project = self.values(TABLES["project"], data.get("project", {}), ("project",))
        lab = self.values(TABLES["lab"], data.get("lab", {}), ("lab",))
        cache = project["cache_dir"]
        envs = self.envs(self.named(data, "envs"))
        engines = {
            name: self.engine(name, values, envs)
            for name, values in self.named(data, "engines").items()
        }
        apps = {
            name: self.app(name, values, envs, engines)
            for name, values in self.named(data, "apps").items()
        }
        shared = sorted(engines.keys() & apps.keys())
        if shared:
            raise self.error(
                ("apps", shared[0]),
                f"[engines.{shared[0]}] and [apps.{shared[0]}] share a name; services need "
                "names of their own",
            )
        return Manifest(
            name=project["name"] or None,
            cache_dir=(self.root / Path(cache).expanduser()).resolve() if cache else None,
            lab=LabEntry(lab["port"], lab["ssh_host"]),
            envs=envs,
            apps=apps,
            engines=engines,
            notebooks=self.notebooks(data.get("notebooks", {}), envs),
        )

    def table(self, raw: object, keys: tuple[str, ...]) -> dict:
        if not isinstance(raw, dict):
            dotted = ".".join(excerpt(k) for k in keys)
            raise self.error(keys, f"{dotted} = {excerpt(repr(raw))}: expected a [{dotted}] table")
        return raw

    def values(self, table: Table, raw: object, keys: tuple[str, ...]) -> dict[str, object]:
        """raw checked against table: known keys only, the required ones present, each value
        valid; every key of the table in the result (its default when not given)."""
        raw = self.table(raw, keys)
        label = "[" + ".".join(excerpt(k) for k in keys) + "]"
        known = {key.name: key for key in table.keys}
        for name in raw:
            if name not in known:
                hint = _hint(name, known) or f" (valid: {', '.join(known)})"
                raise self.error((*keys, name), f"{label} unknown key '{excerpt(name)}'{hint}")
        missing = [key.name for key in table.keys if key.required and key.name not in raw]
        if missing:
            raise self.error(keys, f"{label} missing {', '.join(missing)}")
        values = {}
        for key in table.keys:
            if key.name not in raw:
                values[key.name] = key.default
                continue
            value = raw[key.name]
            if key.check is not None:
                try:
                    value = key.check(value)
                except ValueError as exc:
                    raise self.value_error(keys, key.name, raw[key.name], str(exc)) from None
            values[key.name] = value
        return values

    def value_error(
        self, keys: tuple[str, ...], name: str, value: object, message: str
    ) -> WorkbenchError:
        label = "[" + ".".join(excerpt(k) for k in keys) + "]"
        return self.error((*keys, name), f"{label} {name} = {excerpt(repr(value))}: {message}")

    def named(self, data: dict, kind: str) -> dict[str, dict[str, object]]:
        """[kind.NAME] tables: each name valid, each table's keys checked."""
        table = TABLES[kind]
        checked = {}
        for name, raw in self.table(data.get(kind, {}), (kind,)).items():
            if not ENV_NAME.fullmatch(name) or (kind != "envs" and name == "lab"):
                rule = "letters, digits, _ . -" + ("" if kind == "envs" else "; not 'lab'")
                raise self.error(
                    (kind, name), f"[{kind}.{excerpt(name)}] invalid {kind[:-1]} name ({rule})"
                )
            checked[name] = self.values(table, raw, (kind, name))
        return checked

    def reference(
        self, keys: tuple[str, ...], name: str, value: object, known: dict, kind: str
    ) -> None:
        """value names one of known (envs or engines), else an error listing them."""
        if not isinstance(value, str) or value not in known:
            listed = ", ".join(sorted(known)) or "none"
            hint = _hint(str(value), known)
            raise self.value_error(keys, name, value, f"not {kind} (known: {listed}){hint}")

    def inside(self, keys: tuple[str, ...], name: str, value: str) -> Path:
        """root / value, for a path that must name a file inside the project."""
        path = self.root / value
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise self.value_error(
                keys, name, value, f"outside the project ({self.root}); use a path inside it"
            )
        return path

    def envs(self, tables: dict[str, dict[str, object]]) -> dict[str, EnvEntry]:
        envs: dict[str, EnvEntry] = {}
        env_dir = self.root / "envs"
        if env_dir.is_dir():
            for path in sorted(env_dir.iterdir()):
                # hidden files are no envs (a build's temporary spec copy is one)
                if (
                    path.suffix in SPEC_SUFFIXES
                    and not path.name.startswith(".")
                    and path.is_file()
                ):
                    envs[path.stem] = EnvEntry(path.stem, path)
        for name, values in tables.items():
            keys = ("envs", name)
            spec = values["spec"]
            spec_path = self.inside(keys, "spec", spec) if spec else env_dir / f"{name}.yml"
            if name not in envs and not spec_path.is_file():
                shown = excerpt(str(spec_path))
                raise self.error(keys, f"[envs.{name}] spec file {shown} does not exist")
            if spec_path.suffix not in MANIFEST_SPEC_SUFFIXES:
                raise self.value_error(
                    keys,
                    "spec",
                    spec,
                    "expected an environment.yml (.yml, .yaml) or a requirements file (.txt)",
                )
            # envs/NAME.yml found above, named otherwise here: one env, the manifest's name.
            for other in [n for n, e in envs.items() if e.spec_path == spec_path and n != name]:
                del envs[other]
            envs[name] = EnvEntry(name, spec_path, *(values["gpus"] or (None, None)))
        self.check_env_names(envs)
        return envs

    def check_env_names(self, envs: dict[str, EnvEntry]) -> None:
        """Env names become kernel names, which Jupyter lists in lower case: each must be a
        valid name, and no two may differ only in case."""
        seen: dict[str, str] = {}
        for name, entry in envs.items():
            if not ENV_NAME.fullmatch(name):
                raise WorkbenchError(
                    f"{entry.spec_path}: env name '{excerpt(name)}' is not valid (use letters, "
                    "digits, _ . -); rename the file"
                )
            other = seen.setdefault(name.lower(), name)
            if other != name:
                raise self.error(
                    ("envs", name),
                    f"envs '{other}' and '{name}' differ only in case; Jupyter lists kernel "
                    "names in lower case, so rename one",
                )

    def engine(self, name: str, values: dict[str, object], envs: dict) -> EngineEntry:
        keys = ("engines", name)
        self.reference(keys, "env", values["env"], envs, "an env")
        if values["handler"]:
            self.handler(keys, values["handler"], values["task"])
        settings = EngineSettings(**{s.name: values[s.name] for s in SETTINGS})
        return EngineEntry(name, values["env"], values["model"], values["port"], settings)

    def handler(self, keys: tuple[str, ...], handler: str, task: str) -> None:
        """A handler is the engine's model: a file of the project, and no task beside it."""
        if task != "auto":
            raise self.value_error(
                keys, "task", task, "an engine with a handler has no task; remove one of them"
            )
        file = self.inside(keys, "handler", handler.rpartition(":")[0])
        if not file.is_file():
            raise self.value_error(
                keys, "handler", handler, f"{file.relative_to(self.root)} does not exist"
            )

    def app(self, name: str, values: dict[str, object], envs: dict, engines: dict) -> AppEntry:
        keys = ("apps", name)
        self.reference(keys, "env", values["env"], envs, "an env")
        if values["engine"] is not None:
            self.reference(keys, "engine", values["engine"], engines, "an [engines.NAME]")
        file = self.inside(keys, "file", values["file"])
        return AppEntry(
            name, values["env"], file, values["port"], values["model"], values["engine"]
        )

    def notebooks(self, raw: object, envs: dict) -> dict[str, str]:
        """[notebooks] "path" = "env": paths inside the project, envs that exist."""
        assigned: dict[str, str] = {}
        for key, env in self.table(raw, ("notebooks",)).items():
            shown = f"[notebooks] {excerpt(repr(key))} = {excerpt(repr(env))}"
            if not isinstance(env, str) or env not in envs:
                listed = ", ".join(sorted(envs)) or "none"
                hint = _hint(str(env), envs)
                raise self.error(("notebooks", key), f"{shown}: not an env (known: {listed}){hint}")
            try:
                path = self.root / _path(key)
            except ValueError as exc:
                raise self.error(("notebooks", key), f"{shown}: {exc}") from None
            if not path.resolve().is_relative_to(self.root.resolve()):
                raise self.error(
                    ("notebooks", key),
                    f"{shown}: outside the project ({self.root}); use a path inside it",
                )
            assigned[path.resolve().relative_to(self.root.resolve()).as_posix()] = env
        return assigned


def _hint(name: str, known) -> str:
    """The closest known name, or one the name starts (ssh -> ssh_host), as a suggestion."""
    close = difflib.get_close_matches(name, list(known), n=1)
    close = close or [k for k in known if name and k.startswith(name)][:1]
    return f"; did you mean '{close[0]}'?" if close else ""


# -- lines --------------------------------------------------------------------------------------
# tomllib gives no positions: a key's line is found in the text, under its table's header.
_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY_LINE = rf"\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*="  # compiled when an error needs a line


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """(table, ..., key) -> the line that sets it, for every header and key in text."""
    index: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("["):
            path = _path_of(line.strip())
            if path is not None:
                table = path
                _note(index, table, number)
            continue
        match = re.match(_KEY_LINE, line)
        if match:
            path = _path_of(match[1] + " = 0")
            if path:
                _note(index, table + path, number)
    return index


def _note(index: dict[tuple[str, ...], int], path: tuple[str, ...], number: int) -> None:
    """path is set on line number, and so are the tables it implies ([a.b] makes a)."""
    for end in range(1, len(path) + 1):
        index.setdefault(path[:end], number)


def _path_of(toml: str) -> tuple[str, ...] | None:
    """The keys a one-line TOML document names, outermost first ([a."b"] -> ("a", "b"))."""
    try:
        data: object = tomllib.loads(toml)
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(data, dict) and len(data) == 1:
        ((key, data),) = data.items()
        path.append(key)
        if isinstance(data, list):  # [[array]]: its last table
            data = data[-1] if data else {}
    return tuple(path)
