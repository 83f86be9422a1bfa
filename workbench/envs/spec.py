"""Conda environment.yml specs: parsed, validated and hashed.

The format is conda's, unchanged: `name`, `channels`, `dependencies` (conda match
specs and a `pip:` list of requirements-file lines), `variables` and `prefix`.
"""

import hashlib
import json
import re
import shlex
import sys
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

# pip's requirements-file options (`pip help install`, "Requirements File Format"), with
# the long name workbench keys them by. Options that take a value:
PIP_VALUE_OPTIONS = {
    "-i": "--index-url",
    "--index-url": "--index-url",
    "--extra-index-url": "--extra-index-url",
    "-f": "--find-links",
    "--find-links": "--find-links",
    "--no-binary": "--no-binary",
    "--only-binary": "--only-binary",
    "--trusted-host": "--trusted-host",
    "--use-feature": "--use-feature",
    "-r": "--requirement",
    "--requirement": "--requirement",
    "-c": "--constraint",
    "--constraint": "--constraint",
    "-e": "--editable",
    "--editable": "--editable",
}
PIP_FLAG_OPTIONS = {
    "--pre": "--pre",
    "--no-index": "--no-index",
    "--prefer-binary": "--prefer-binary",
    "--require-hashes": "--require-hashes",
    "-Z": "--always-unzip",
    "--always-unzip": "--always-unzip",
}
# Options that follow a requirement on its line and apply to it alone.
PIP_REQUIREMENT_OPTIONS = ("--hash", "--config-settings", "--global-option", "--install-option")
PIP_INCLUDE_OPTIONS = {"--requirement", "--constraint"}
# Options whose value may be a local path (or a file: URL) rather than a name or host.
PIP_LOCATION_OPTIONS = {"--find-links", "--index-url", "--extra-index-url"}
VCS_SCHEMES = ("git+", "hg+", "svn+", "bzr+")
ARCHIVES = (".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar", ".zip")
COMMENT = re.compile(r"(^|\s+)#.*$")
# -r files include others; a chain this deep is a loop or an attack, not a project.
MAX_INCLUDE_DEPTH = 16
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
class PipLine:
    """One logical line of the `pip:` section (continuations joined, comment removed).

    kind is one of
      "requirement"  PEP 508, also `name @ URL`
      "url"          a bare URL: VCS (git+https, git+ssh, git+file, ...), archive or wheel
      "path"         a local directory, wheel or sdist; value as written (pip and uv take it
                     relative to the spec's folder, where workbench runs them)
      "--editable"   value: a path as written, or a VCS URL
      "--requirement", "--constraint": value: the file, resolved
      an option name ("--index-url", "--pre", ...), value "" for flags
      "invalid"      pip would refuse the line; value says why
    options holds per-requirement options (`--hash=sha256:...`). source is the file the
    line was read from (the spec, or a file it includes with -r).
    """

    text: str
    kind: str
    value: str
    line: int
    source: Path | None = None
    options: tuple[str, ...] = ()

    def where(self, default: Path) -> str:
        return f"{self.source or default}:{self.line}"


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
    reader = _PipReader(root, path.parent)
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
    exported_on, export_note = _foreign_export(path, data.get("prefix"), conda)
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


def _requirements_lines(path: Path) -> list[tuple[str, int]]:
    """(line, number) of a requirements file; a control character is refused, naming it."""
    text = read_text(path, MAX_SPEC_BYTES, "requirements file")
    entries = [(line, number) for number, line in enumerate(text.splitlines(), 1)]
    for line, number in entries:
        bad = CONTROL.search(line.strip())
        if bad:
            raise WorkbenchError(
                f"{path}:{number}: contains control character U+{ord(bad.group()):04X}"
            )
    return entries


def _load_requirements(path: Path, env: str | None, root: Path) -> EnvSpec:
    """A requirements file as a pip-only env: its lines are the pip: section."""
    entries = _requirements_lines(path)
    reader = _PipReader(root, path.parent)
    pip = reader.read(entries, path)
    return EnvSpec(
        path=path,
        name=path.stem,
        channels=(),
        conda=(),
        pip=tuple(pip),
        variables={},
        warnings=tuple(_notes(path, [], pip, reader.included)),
        raw={"requirements": [line.text for line in pip]},
        env=env or path.stem,
        included=tuple(reader.included),
        included_files=tuple(reader.files),
        requirements_file=True,
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


class _PipReader:
    """Reads pip: entries, and the files they include with -r/-c, the way pip reads a
    requirements file: continuation lines joined, comments dropped, options and
    per-requirement options recognised.

    Local paths (-r, -c, -e, -f, file: and git+file: URLs, ./pkg, wheels, sdists) must
    stay inside the project root: a spec is committed and shared, so it may not pull in
    files from elsewhere on the machine (a machine-wide wheel folder or index belongs in
    pip.conf, which is honoured). Requirement paths are relative to the spec's folder
    (where conda runs pip, and workbench runs uv); includes to the including file.
    """

    def __init__(self, root: Path, workdir: Path):
        self.root = root
        self.workdir = workdir
        self.included: list[PipLine] = []
        self.files: list[Path] = []

    def read(self, entries: list[tuple[str, int]], source: Path, depth: int = 0) -> list[PipLine]:
        parsed = (self._line(text, number, source, depth) for text, number in _logical(entries))
        return [line for line in parsed if line is not None]

    def _line(self, text: str, number: int, source: Path, depth: int) -> PipLine | None:
        stripped = COMMENT.sub("", text).strip()
        if not stripped:
            return None
        if stripped.startswith("-"):
            return self._option(text, stripped, number, source, depth)
        return self._requirement(text, stripped, number, source)

    def _option(self, text: str, stripped: str, number: int, source: Path, depth: int) -> PipLine:
        where = f"{source}:{number}"

        def invalid(reason: str) -> PipLine:
            return PipLine(text, "invalid", reason, number, source)

        try:
            words = shlex.split(stripped)
        except ValueError as exc:
            return invalid(f"cannot split it into words ({exc})")
        option, equals, inline = words[0].partition("=")
        values = ([inline] if equals else []) + words[1:]
        if option in PIP_FLAG_OPTIONS:
            if values:
                return invalid(f"{option} takes no value")
            return PipLine(text, PIP_FLAG_OPTIONS[option], "", number, source)
        if option not in PIP_VALUE_OPTIONS:
            known = ", ".join(sorted({*PIP_VALUE_OPTIONS.values(), *PIP_FLAG_OPTIONS.values()}))
            return invalid(f"unknown option '{excerpt(option)}' (requirements files take {known})")
        if len(values) != 1:
            return invalid(f"{option} takes exactly one value")
        kind, value = PIP_VALUE_OPTIONS[option], values[0]
        if kind in PIP_INCLUDE_OPTIONS:
            if _is_url(value) and not value.startswith("file:"):
                return invalid(f"{kind} from a URL: download the file into the project")
            path = unquote(urlsplit(value).path) if value.startswith("file:") else value
            resolved = self._local(path, source.parent, where, text)
            if not resolved.is_file():
                raise WorkbenchError(
                    f"{where}: '{excerpt(text)}': {resolved} is not an existing file"
                )
            self._include(resolved, depth, where)
            return PipLine(text, kind, str(resolved), number, source)
        if _is_url(value):
            self._check_file_url(value, where, text)
        elif kind == "--editable":
            self._local(_without_extras(value), self.workdir, where, text)
        elif kind in PIP_LOCATION_OPTIONS:
            self._local(value, source.parent, where, text)
        return PipLine(text, kind, value, number, source)

    def _include(self, path: Path, depth: int, where: str) -> None:
        if depth >= MAX_INCLUDE_DEPTH:
            raise WorkbenchError(
                f"{where}: -r/-c files nest more than {MAX_INCLUDE_DEPTH} deep (a file that "
                "includes itself?)"
            )
        self.files.append(path)
        self.included.extend(self.read(_requirements_lines(path), path, depth + 1))

    def _requirement(self, text: str, stripped: str, number: int, source: Path) -> PipLine:
        """A requirement and the options that apply to it alone (`--hash=...`)."""
        from packaging.requirements import InvalidRequirement, Requirement

        where = f"{source}:{number}"
        words = stripped.split()
        first_option = next((i for i, w in enumerate(words) if w.startswith("-")), len(words))
        requirement = " ".join(words[:first_option])
        options = tuple(words[first_option:])
        unknown = [
            o for o in options if o.startswith("-") and not o.startswith(PIP_REQUIREMENT_OPTIONS)
        ]
        if unknown:
            reason = f"'{excerpt(unknown[0])}' is not an option of a requirement line"
            return PipLine(text, "invalid", reason, number, source)
        target = requirement.split(" ;")[0].strip()
        try:
            parsed: Requirement | None = Requirement(requirement)
            problem = ""
        except InvalidRequirement as exc:
            parsed, problem = None, str(exc).splitlines()[0]
        local_archive = target.endswith(ARCHIVES) and (self.workdir / target).is_file()
        if parsed is not None and not local_archive:
            if parsed.url:
                self._check_file_url(parsed.url, where, text)
            return PipLine(text, "requirement", requirement, number, source, options)
        if _is_url(target):
            self._check_file_url(target, where, text)
            return PipLine(text, "url", requirement, number, source, options)
        if target.startswith((".", "/", "~")) or "/" in target or target.endswith(ARCHIVES):
            self._local(_without_extras(target), self.workdir, where, text)
            return PipLine(text, "path", requirement, number, source, options)
        reason = f"not a requirement pip knows ({excerpt(problem, 200)})"
        return PipLine(text, "invalid", reason, number, source)

    def _check_file_url(self, url: str, where: str, text: str) -> None:
        """A file: URL (also git+file:) is a local path, held to the same rule as one."""
        parts = urlsplit(url)
        if parts.scheme == "file" or parts.scheme.endswith("+file"):
            path = unquote(parts.path)
            if parts.scheme != "file":
                path = path.rpartition("@")[0] or path  # git+file:///repo@ref
            self._local(path, self.workdir, where, text)

    def _local(self, value: str, base: Path, where: str, text: str) -> Path:
        return _local(value, base, self.root, where, text)


def _logical(entries: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Lines as pip reads them: a line ending in a backslash continues on the next one
    (numbered by its first line)."""
    joined: list[tuple[str, int]] = []
    pending: tuple[str, int] | None = None
    for text, number in entries:
        if pending is not None:
            text, number = pending[0] + " " + text.strip(), pending[1]
            pending = None
        if text.rstrip().endswith("\\"):
            pending = (text.rstrip()[:-1].rstrip(), number)
        else:
            joined.append((text, number))
    if pending is not None:
        joined.append(pending)
    return joined


def _without_extras(path: str) -> str:
    """`./pkg[docs,test]` -> `./pkg`."""
    return re.sub(r"\[[^\]]*\]$", "", path.strip())


def _is_url(value: str) -> bool:
    return "://" in value or value.startswith((*VCS_SCHEMES, "file:"))


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


def _foreign_export(
    path: Path, prefix: object, conda: list[CondaDep]
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
