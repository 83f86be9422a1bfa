"""Conda environment.yml specs: parsed, validated and hashed.

The format is conda's, unchanged: `name`, `channels`, `dependencies` (conda match
specs and a `pip:` list of requirements-file lines), `variables` and `prefix`.
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from workbench.envs import interpreters
from workbench.envs.platforms import foreign_export
from workbench.envs.requirements import CONTROL, PipLine, PipReader, requirements_lines
from workbench.errors import WorkbenchError, excerpt
from workbench.project import MANIFEST
from workbench.textfiles import read_text

KNOWN_KEYS = {"name", "channels", "dependencies", "variables", "prefix"}
# An environment.yml is a few KB; parsing YAML in pure Python takes seconds per MB.
MAX_SPEC_BYTES = 256 * 1024
# Values in the document, counting every use of an alias: bounds recursive anchors and
# "billion laughs" documents, far above what MAX_SPEC_BYTES of plain YAML can hold.
MAX_VALUES = 500_000
# An environment variable's name, as execve() accepts it.
VARIABLE = re.compile(r"[^=\x00]+")


@dataclass(frozen=True)
class CondaDep:
    """One conda match spec, as written and as parsed by rattler.

    problem is set when rattler cannot read the text: conda decides about it (the spec goes
    to conda unchanged), the uv backend refuses it."""

    text: str
    name: str
    version: str | None  # conda version spec, e.g. "3.11.*", ">=1,<2", "==2.0.1"
    build: str | None
    channel: str | None
    line: int
    problem: str | None = None


@dataclass(frozen=True)
class EnvSpec:
    path: Path
    name: str
    channels: tuple[str, ...]
    conda: tuple[CondaDep, ...]
    pip: tuple[PipLine, ...]
    variables: dict[str, str]
    warnings: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict, compare=False)
    env: str = ""  # the project's name for this env (defaults to the file's stem)
    included: tuple[PipLine, ...] = ()  # lines of the files -r includes, for checks
    included_files: tuple[Path, ...] = ()  # -r and -c files, in the order they are read
    exported_on: str | None = None  # "Windows"/"macOS": an export made on another platform
    requirements_file: bool = False  # a requirements*.txt: a pip-only env
    python_source: Path | None = None  # where a pip-only env's python= comes from

    @property
    def python(self) -> CondaDep | None:
        return next((d for d in self.conda if d.name == "python"), None)

    @property
    def folder(self) -> Path:
        """Where pip and uv run: relative paths in the spec are taken from here."""
        return self.path.parent

    def content_hash(self) -> str:
        """sha256 of what the spec asks for, including -r/-c files it pulls in."""
        canonical = json.dumps(_json_keys(self.raw), sort_keys=True, default=str)
        digest = hashlib.sha256(canonical.encode())
        for path in self.included_files:
            digest.update(path.read_bytes())
        return digest.hexdigest()


def load(path: Path, env: str | None = None, root: Path | None = None) -> EnvSpec:
    """Parse and validate an environment.yml (or a requirements*.txt, a pip-only env);
    every problem names the file and line.

    Only what workbench needs is read; what conda or pip decide about (a match spec rattler
    cannot read, a pip line pip would refuse) is kept with the reason, for the backend to
    judge. Local paths must stay inside the project (root, else the folder with
    workbench.toml above the spec), for every backend."""
    root = root or _project_root(path)
    if path.suffix == ".txt":
        return _load_requirements(path, env, root)
    text = read_text(path, MAX_SPEC_BYTES, "spec file")
    node, data = _parse(text, path)
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path}: expected a mapping with a 'dependencies' list")
    lines = _LineIndex(node)

    warnings = [
        f"{path}:{lines.of(key)}: unknown key '{key}' ignored (conda knows: "
        f"{', '.join(sorted(KNOWN_KEYS))})"
        for key in data
        if key not in KNOWN_KEYS
    ]
    if "prefix" in data:
        warnings.append(
            f"{path}:{lines.of('prefix')}: 'prefix' ignored; workbench keeps envs under .workbench/"
        )
    name = data.get("name") or path.stem
    if not isinstance(name, str):
        raise WorkbenchError(
            f"{path}:{lines.of('name')}: name must be a string, not {excerpt(repr(name))}"
        )
    channels = data.get("channels") or []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise WorkbenchError(f"{path}:{lines.of('channels')}: channels must be a list of names")

    deps = data.get("dependencies")
    if deps is None:
        deps = []
    if not isinstance(deps, list):
        raise WorkbenchError(
            f"{path}:{lines.of('dependencies')}: dependencies must be a list, not {_kind(deps)}"
        )
    conda: list[CondaDep] = []
    entries: list[tuple[str, int]] = []
    for i, item in enumerate(deps):
        line = lines.of("dependencies", i)
        if isinstance(item, dict):
            pip_items = _pip_section(item, f"{path}:{line}")
            for j, pip_item in enumerate(pip_items):
                pip_line = lines.of("dependencies", i, "pip", j)
                text = _line_text(pip_item, f"{path}:{pip_line}", "pip line", "'requests>=2'")
                entries.append((text, pip_line))
        else:
            text = _line_text(item, f"{path}:{line}", "dependency", "'numpy>=1.26'")
            conda.append(_parse_conda(text, line))
    reader = PipReader(root, path.parent)
    pip = reader.read(entries, path)

    variables = data.get("variables") or {}
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in variables.items()
    ):
        raise WorkbenchError(
            f"{path}:{lines.of('variables')}: variables must map names to plain values"
        )
    for key, value in variables.items():
        if not VARIABLE.fullmatch(key) or "\0" in str(value):
            raise WorkbenchError(
                f"{path}:{lines.of('variables', key)}: variable '{excerpt(key)}' cannot be set "
                "in an environment (names have no '=' and no NUL; values no NUL)"
            )
    exported_on, export_note = foreign_export(path, data.get("prefix"), conda)
    if export_note:
        warnings.append(export_note)
    warnings += _notes(path, conda, pip, reader.included)
    return EnvSpec(
        path=path,
        name=name,
        channels=tuple(channels),
        conda=tuple(conda),
        pip=tuple(pip),
        variables={k: str(v) for k, v in variables.items()},
        warnings=tuple(warnings),
        raw=data,
        env=env or path.stem,
        included=tuple(reader.included),
        included_files=tuple(reader.files),
        exported_on=exported_on,
    )


def _load_requirements(path: Path, env: str | None, root: Path) -> EnvSpec:
    """A requirements file as a pip-only env: its lines are the pip: section."""
    entries = requirements_lines(path)
    reader = PipReader(root, path.parent)
    pip = reader.read(entries, path)
    # runtime.txt, .python-version or requires-python: the python= the file cannot hold
    request = interpreters.requested(path.parent, root)
    python = (_parse_conda(request.text, request.line),) if request else ()
    return EnvSpec(
        path=path,
        name=path.stem,
        channels=(),
        conda=python,
        pip=tuple(pip),
        variables={},
        warnings=tuple(_notes(path, [], pip, reader.included)),
        raw={
            "requirements": [line.text for line in pip],
            **({"python": request.text} if request else {}),
        },
        env=env or path.stem,
        included=tuple(reader.included),
        included_files=tuple(reader.files),
        requirements_file=True,
        python_source=request.source if request else None,
    )


def _notes(
    path: Path, conda: list[CondaDep], pip: list[PipLine], included: list[PipLine]
) -> list[str]:
    """Warnings for what the spec passes on unread: conda or pip will decide about it."""
    notes = [
        f"{path}:{dep.line}: '{excerpt(dep.text)}' is not a match spec workbench can read "
        f"({dep.problem}); it goes to conda unchanged"
        for dep in conda
        if dep.problem
    ]
    notes += [
        f"{line.where(path)}: pip will likely refuse '{excerpt(line.text)}': {line.value}"
        for line in (*pip, *included)
        if line.kind == "invalid"
    ]
    return notes


def _parse(text: str, path: Path) -> tuple[yaml.Node | None, object]:
    """The YAML node tree (for line numbers) and the data, parsed once."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses NUL and other controls here
        root = loader.get_single_node()
        _check_size(root, path)
        return root, loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else text.count("\n", 0, getattr(exc, "position", 0)) + 1
        where = f"{path}:{line}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WorkbenchError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise WorkbenchError(f"{path}: invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_size(root: yaml.Node | None, path: Path) -> None:
    """Refuse documents whose aliases expand without bound (a recursive anchor, or anchors
    of anchors), before anything walks or hashes the expanded data."""
    todo = [root] if root is not None else []
    count = 0
    while todo:
        node = todo.pop()
        count += 1
        if count > MAX_VALUES:
            raise WorkbenchError(
                f"{path}: more than {MAX_VALUES} values once YAML aliases (*name) are "
                "expanded; an environment.yml needs no recursive or nested aliases"
            )
        if isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            todo.extend(item for pair in node.value for item in pair)


def _json_keys(value: object) -> object:
    """value with every mapping key as JSON writes it ("1", "true", "null"), so that keys
    of mixed types (conda ignores such unknown keys) still sort; str keys are unchanged."""
    if isinstance(value, dict):
        return {
            key if isinstance(key, str) else json.dumps(key, default=str): _json_keys(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_json_keys(item) for item in value]
    return value


def _project_root(spec_path: Path) -> Path:
    """The project a spec belongs to: the nearest folder at or above it with workbench.toml,
    else the folder holding envs/, else the spec's own folder."""
    folder = spec_path.parent.resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / MANIFEST).is_file():
            return candidate
    return folder.parent if folder.name == "envs" else folder


def _line_text(item: object, where: str, what: str, example: str) -> str:
    """A dependency or pip entry as text: a string (or number, as conda reads `- 5`)
    on one line."""
    if isinstance(item, dict) and len(item) == 1 and None in item.values():
        (key,) = item
        raise WorkbenchError(
            f"{where}: YAML reads {what} '{excerpt(key)}:' as a mapping because it ends with "
            f"':'; quote it: - \"{excerpt(key)}:\""
        )
    if not isinstance(item, str | int | float) or isinstance(item, bool):
        raise WorkbenchError(
            f"{where}: {what} {excerpt(repr(item))} is not a package spec "
            f"(expected text such as {example})"
        )
    text = str(item)
    bad = CONTROL.search(text.strip())
    if bad:
        raise WorkbenchError(
            f"{where}: {what} '{excerpt(text)}' contains control character "
            f"U+{ord(bad.group()):04X}; write one requirement per line"
        )
    return text


def _kind(value: object) -> str:
    return type(value).__name__


def _pip_section(item: dict, where: str) -> list:
    if set(item) != {"pip"}:
        keys = ", ".join(map(str, item))
        raise WorkbenchError(f"{where}: unexpected mapping ({keys}); only a 'pip:' list is allowed")
    pip_items = item["pip"] or []
    if not isinstance(pip_items, list):
        raise WorkbenchError(f"{where}: 'pip:' must be a list of requirement lines")
    return pip_items


def _parse_conda(text: str, line: int) -> CondaDep:
    """A dependency as rattler reads it (leniently, as conda does); what it cannot read is
    kept with the reason, name taken from the text."""
    from rattler import MatchSpec  # imported here: only parsing needs it

    try:
        spec = MatchSpec(text)
    except Exception as exc:  # rattler raises its own exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        bare = text.strip().rpartition("::")[2]
        name = re.match(r"[A-Za-z0-9_.+-]*", bare).group().lower() or bare
        return CondaDep(text, name, None, None, None, line, problem=excerpt(reason, 200))
    version = spec.version if spec.version not in (None, "*") else None
    channel = spec.channel.name if spec.channel is not None else None
    return CondaDep(text, spec.name.normalized, version, spec.build, channel, line)


class _LineIndex:
    """1-based line numbers of keys and list items, from PyYAML's node tree."""

    def __init__(self, root: yaml.Node | None):
        self.root = root

    def of(self, *path: str | int) -> int:
        node = self.root
        line = 1
        for step in path:
            if node is None:
                break
            line = node.start_mark.line + 1
            node = self._child(node, step)
        return node.start_mark.line + 1 if node is not None else line

    @staticmethod
    def _child(node: yaml.Node, step: str | int) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == step:
                    return value
        if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            return node.value[step]
        return None
