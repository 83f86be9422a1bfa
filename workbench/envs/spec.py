"""Conda environment.yml specs: parsed, validated and hashed.

The format is conda's, unchanged: `name`, `channels`, `dependencies` (conda match
specs and a `pip:` list of requirements-file lines), `variables` and `prefix`.
"""

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

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
# Characters that would split one requirement line into several (or hide in one).
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")

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
# Options whose value may be a local path (or a file: URL) rather than a name or host.
PIP_LOCATION_OPTIONS = {*PIP_PATH_OPTIONS, "--find-links", "--index-url", "--extra-index-url"}


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
        canonical = json.dumps(_json_keys(self.raw), sort_keys=True, default=str)
        digest = hashlib.sha256(canonical.encode())
        for line in self.pip:
            if line.kind in ("--requirement", "--constraint"):
                digest.update(Path(line.value).read_bytes())
        return digest.hexdigest()


def load(path: Path) -> EnvSpec:
    """Parse and validate an environment.yml; every problem names the file and line."""
    text = read_text(path, MAX_SPEC_BYTES, "spec file")
    root, data = _parse(text, path)
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
    pip: list[PipLine] = []
    project_root = _project_root(path)
    for i, item in enumerate(deps):
        line = lines.of("dependencies", i)
        if isinstance(item, dict):
            pip_items = _pip_section(item, f"{path}:{line}")
            for j, pip_item in enumerate(pip_items):
                pip_line = lines.of("dependencies", i, "pip", j)
                text = _line_text(pip_item, f"{path}:{pip_line}", "pip line", "'requests>=2'")
                pip.extend(_parse_pip(text, path, pip_line, project_root))
        else:
            text = _line_text(item, f"{path}:{line}", "dependency", "'numpy>=1.26'")
            conda.append(_parse_conda(text, f"{path}:{line}", line))

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


def _parse_conda(text: str, where: str, line: int) -> CondaDep:
    from rattler import MatchSpec  # imported here: only parsing needs it

    try:
        spec = MatchSpec(text)
    except Exception as exc:  # rattler raises its own exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(
            f"{where}: '{excerpt(text)}' is not a valid conda match spec: {excerpt(reason, 300)}"
        ) from None
    version = spec.version if spec.version not in (None, "*") else None
    channel = spec.channel.name if spec.channel is not None else None
    return CondaDep(text, spec.name.normalized, version, spec.build, channel, line)


def _parse_pip(text: str, spec_path: Path, line: int, root: Path) -> list[PipLine]:
    """One pip: entry, which may hold an option and its value, or a requirement.

    Local paths (-r, -c, -e, -f, file: URLs, ./pkg) must stay inside the project root:
    a spec is committed and shared, so it may not pull in files from elsewhere on the
    machine (a machine-wide wheel folder or index belongs in pip.conf, which is honoured).
    """
    from packaging.requirements import InvalidRequirement, Requirement

    where = f"{spec_path}:{line}"
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return []
    if stripped.startswith("-"):
        try:
            words = shlex.split(stripped, comments=True)
        except ValueError as exc:
            raise WorkbenchError(
                f"{where}: cannot parse pip line '{excerpt(text)}': {exc}"
            ) from None
        option, _, inline = words[0].partition("=")
        values = [inline] if inline else words[1:]
        if option in PIP_FLAG_OPTIONS and not values:
            return [PipLine(text, option, "", line)]
        if option not in PIP_VALUE_OPTIONS:
            known = ", ".join(sorted({*PIP_VALUE_OPTIONS.values(), *PIP_FLAG_OPTIONS}))
            raise WorkbenchError(
                f"{where}: unsupported pip option '{excerpt(option)}' (supported: {known})"
            )
        if len(values) != 1:
            raise WorkbenchError(f"{where}: pip option '{excerpt(option)}' takes exactly one value")
        kind = PIP_VALUE_OPTIONS[option]
        value = values[0]
        if _is_url(value):
            _check_file_url(value, spec_path, root, where, text)
        elif kind in PIP_LOCATION_OPTIONS:
            resolved = _local(value, spec_path.parent, root, where, text)
            if kind in PIP_PATH_OPTIONS:
                value = str(resolved)
            if kind in ("--requirement", "--constraint") and not resolved.is_file():
                raise WorkbenchError(
                    f"{where}: '{excerpt(text)}': {resolved} is not an existing file"
                )
        return [PipLine(text, kind, value, line)]
    if stripped.startswith((".", "/", "~")):
        resolved = _local(stripped, spec_path.parent, root, where, text)
        return [PipLine(text, "requirement", str(resolved), line)]
    try:
        requirement = Requirement(stripped)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise WorkbenchError(
            f"{where}: '{excerpt(text)}' is not a valid pip requirement: {excerpt(reason, 300)}"
        ) from None
    if requirement.url:
        _check_file_url(requirement.url, spec_path, root, where, text)
    return [PipLine(text, "requirement", stripped, line)]


def _is_url(value: str) -> bool:
    return "://" in value or value.startswith(("git+", "hg+", "svn+", "bzr+"))


def _check_file_url(url: str, spec_path: Path, root: Path, where: str, text: str) -> None:
    """A file: URL (also git+file:) is a local path, held to the same rule as one."""
    parts = urlsplit(url)
    if parts.scheme == "file" or parts.scheme.endswith("+file"):
        _local(unquote(parts.path), spec_path.parent, root, where, text)


def _local(value: str, base: Path, root: Path, where: str, text: str) -> Path:
    """value (relative to base) resolved, if it lies inside the project root; else a
    one-line error naming the line, the path and the rule."""
    if value.startswith("~"):
        reason = "'~' is not expanded in a spec"
    else:
        try:
            resolved = (base / value).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, symlink loop
            raise WorkbenchError(f"{where}: '{excerpt(text)}': not a usable path: {exc}") from None
        if resolved.is_relative_to(root):
            return resolved
        reason = f"{resolved} is outside the project ({root})"
    raise WorkbenchError(
        f"{where}: '{excerpt(text)}': {reason}; local paths in a spec must stay inside the "
        "project (a machine-wide wheel folder or index belongs in pip.conf)"
    )


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
