"""Conda environment.yml specs: parsed, validated and hashed.

The format is conda's, unchanged: `name`, `channels`, `dependencies` (conda match
specs and a `pip:` list of requirements-file lines), `variables` and `prefix`.
"""

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from workbench.errors import WorkbenchError

KNOWN_KEYS = {"name", "channels", "dependencies", "variables", "prefix"}

# pip options that take a value, as pip spells them in a requirements file.
PIP_VALUE_OPTIONS = {
    "-i": "--index-url",
    "--index-url": "--index-url",
    "--extra-index-url": "--extra-index-url",
    "-f": "--find-links",
    "--find-links": "--find-links",
    "--no-binary": "--no-binary",
    "--only-binary": "--only-binary",
    "--trusted-host": "--trusted-host",
    "-r": "--requirement",
    "--requirement": "--requirement",
    "-c": "--constraint",
    "--constraint": "--constraint",
    "-e": "--editable",
    "--editable": "--editable",
}
PIP_FLAG_OPTIONS = {"--pre", "--no-index", "--prefer-binary"}
PIP_PATH_OPTIONS = {"--requirement", "--constraint", "--editable"}


@dataclass(frozen=True)
class CondaDep:
    """One conda match spec, as written and as parsed by rattler."""

    text: str
    name: str
    version: str | None  # conda version spec, e.g. "3.11.*", ">=1,<2", "==2.0.1"
    build: str | None
    channel: str | None
    line: int


@dataclass(frozen=True)
class PipLine:
    """One line of the `pip:` section.

    kind is "requirement" (PEP 508 or a URL/path), an option name such as
    "--index-url", or "--requirement"/"--constraint"/"--editable" whose value is a path
    or URL; relative paths are resolved against the spec's folder.
    """

    text: str
    kind: str
    value: str
    line: int


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

    @property
    def python(self) -> CondaDep | None:
        return next((d for d in self.conda if d.name == "python"), None)

    def content_hash(self) -> str:
        """sha256 of what the spec asks for, including -r/-c files it pulls in."""
        digest = hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode())
        for line in self.pip:
            if line.kind in ("--requirement", "--constraint"):
                digest.update(Path(line.value).read_bytes())
        return digest.hexdigest()


def load(path: Path) -> EnvSpec:
    """Parse and validate an environment.yml; every problem names the file and line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise WorkbenchError(f"{path}: no such spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"{path}: cannot read spec: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WorkbenchError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise WorkbenchError(f"{path}: invalid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path}: expected a mapping with a 'dependencies' list")
    lines = _LineIndex(root)

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
        raise WorkbenchError(f"{path}:{lines.of('name')}: name must be a string, not {name!r}")
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
    pip: list[PipLine] = []
    for i, item in enumerate(deps):
        line = lines.of("dependencies", i)
        if isinstance(item, dict):
            pip_items = _pip_section(item, f"{path}:{line}")
            for j, pip_item in enumerate(pip_items):
                pip_line = lines.of("dependencies", i, "pip", j)
                pip.extend(_parse_pip(str(pip_item), path, pip_line))
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            conda.append(_parse_conda(str(item), f"{path}:{line}", line))
        else:
            raise WorkbenchError(f"{path}:{line}: dependency {item!r} is not a package spec")

    variables = data.get("variables") or {}
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in variables.items()
    ):
        raise WorkbenchError(
            f"{path}:{lines.of('variables')}: variables must map names to plain values"
        )
    return EnvSpec(
        path=path,
        name=name,
        channels=tuple(channels),
        conda=tuple(conda),
        pip=tuple(pip),
        variables={k: str(v) for k, v in variables.items()},
        warnings=tuple(warnings),
        raw=data,
    )


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


def _parse_conda(text: str, where: str, line: int) -> CondaDep:
    from rattler import MatchSpec  # imported here: only parsing needs it

    try:
        spec = MatchSpec(text)
    except Exception as exc:  # rattler raises its own exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(
            f"{where}: '{text}' is not a valid conda match spec: {reason}"
        ) from None
    version = spec.version if spec.version not in (None, "*") else None
    channel = spec.channel.name if spec.channel is not None else None
    return CondaDep(text, spec.name.normalized, version, spec.build, channel, line)


def _parse_pip(text: str, spec_path: Path, line: int) -> list[PipLine]:
    """One pip: entry, which may hold an option and its value, or a requirement."""
    from packaging.requirements import InvalidRequirement, Requirement

    where = f"{spec_path}:{line}"
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return []
    if stripped.startswith("-"):
        try:
            words = shlex.split(stripped, comments=True)
        except ValueError as exc:
            raise WorkbenchError(f"{where}: cannot parse pip line '{text}': {exc}") from None
        option, _, inline = words[0].partition("=")
        values = [inline] if inline else words[1:]
        if option in PIP_FLAG_OPTIONS and not values:
            return [PipLine(text, option, "", line)]
        if option not in PIP_VALUE_OPTIONS:
            known = ", ".join(sorted({*PIP_VALUE_OPTIONS.values(), *PIP_FLAG_OPTIONS}))
            raise WorkbenchError(f"{where}: unsupported pip option '{option}' (supported: {known})")
        if len(values) != 1:
            raise WorkbenchError(f"{where}: pip option '{option}' takes exactly one value")
        kind = PIP_VALUE_OPTIONS[option]
        value = values[0]
        if kind in PIP_PATH_OPTIONS and not _is_url(value):
            value = str((spec_path.parent / value).resolve())
            if kind != "--editable" and not Path(value).is_file():
                raise WorkbenchError(f"{where}: '{text}': file {value} does not exist")
        return [PipLine(text, kind, value, line)]
    if stripped.startswith((".", "/", "~")):
        return [PipLine(text, "requirement", str((spec_path.parent / stripped).resolve()), line)]
    try:
        Requirement(stripped)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise WorkbenchError(
            f"{where}: '{text}' is not a valid pip requirement: {reason}"
        ) from None
    return [PipLine(text, "requirement", stripped, line)]


def _is_url(value: str) -> bool:
    return "://" in value or value.startswith(("git+", "hg+", "svn+", "bzr+"))


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
